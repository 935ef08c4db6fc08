"""`regauth policy explain` near misses (`regauth.tools.explain`): a denial names the nearest
rules and the first condition each failed, the breakdown of a rule's conditions agrees with
`Policy.decide` on every (identity, scope, address) of the shipped staging example, and the
command's output and exit codes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from regauth.cli import main
from regauth.policy.load import load_policy_text
from regauth.policy.model import Identity
from regauth.protocol.scope import parse_scopes
from regauth.tools import EXIT_INPUT
from regauth.tools import EXIT_OK
from regauth.tools.explain import MAX_CLOSEST
from regauth.tools.explain import conditions
from regauth.tools.explain import explain
from regauth.tools.loading import load_for_decisions

HASH = "$2b$04$" + "a" * 53
POLICY = f"""version: 1
service: s
accounts:
  ci: {{password_hash: "{HASH}", groups: [ci]}}
  alice: {{password_hash: "{HASH}", groups: [dev], labels: {{team: [web]}}}}
rules:
  - comment: ci writes demo
    account: ci
    repository: "demo/*"
    actions: [pull, push]
  - comment: dev pushes dev
    account: authenticated
    group: dev
    repository: "dev/**"
    actions: [pull, push]
  - comment: nobody writes frozen
    account: any
    repository: "frozen/**"
    deny: true
  - comment: the office pushes tools
    account: alice
    repository: ["tools/*", "frozen/x"]
    networks: ["10.20.0.0/16"]
    actions: [push]
  - comment: web team reads web
    account: authenticated
    labels: {{team: [ops]}}
    repository: "web/**"
    actions: [pull]
"""
STAGING = Path(__file__).resolve().parents[3] / "policies" / "example-staging.yaml"


@pytest.fixture
def policy(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    return load_policy_text(POLICY, str(path), tmp_path, {}, secret_notes=[])


def _explain(policy, account: str | None, scope: str, ip: str | None = None):
    identity = Identity(policy.accounts[account] if account else None)
    return explain(policy, identity, parse_scopes([scope])[0], ip)


def test_a_denial_names_the_rule_that_fails_on_the_repository_only(policy) -> None:
    result = _explain(policy, "ci", "repository:demo2/x:push")
    assert result.decision.outcome == "default deny"
    assert result.nearness == "one condition"
    assert [n.rule.index for n in result.near] == [1]
    assert result.near[0].summary() == (
        "account matches; repository 'demo/*' does not match 'demo2/x'"
    )


@pytest.mark.parametrize(
    ("account", "scope", "ip", "rule", "summary"),
    [
        ("alice", "repository:demo/x:pull", None, 1, "account: ci does not match 'alice'"),
        (
            "ci",
            "repository:dev/x:push",
            None,
            2,
            "account matches; group: dev does not match the groups of 'ci' [ci]",
        ),
        (
            "alice",
            "repository:tools/x:push",
            "10.1.1.1",
            4,
            "account matches; repository matches; networks 10.20.0.0/16 do not contain 10.1.1.1",
        ),
        (
            "alice",
            "repository:tools/x:push",
            None,
            4,
            "account matches; repository matches; "
            "networks 10.20.0.0/16 need a client address (--ip)",
        ),
        (
            "alice",
            "repository:web/x:pull",
            None,
            5,
            "account matches; labels.team: ops does not match the labels of 'alice' [web]",
        ),
        # A rule that matches but comes after an explicit deny never gets to decide.
        (
            "alice",
            "repository:frozen/x:push",
            "10.20.1.1",
            4,
            "account matches; repository matches; network matches; "
            "matches, but rule 3 decides first",
        ),
    ],
)
def test_the_first_failed_condition_of_each_kind(policy, account, scope, ip, rule, summary):
    result = _explain(policy, account, scope, ip)
    assert result.decision.outcome != "granted"
    near = {n.rule.index: n for n in result.near}
    assert near[rule].summary() == summary


def test_without_a_rule_failing_on_one_condition_the_closest_are_shown(policy) -> None:
    result = _explain(policy, None, "repository:zzz:push")
    assert result.nearness == "closest"
    assert len(result.near) == MAX_CLOSEST
    counts = [len(n.failed) for n in result.near]
    assert counts == sorted(counts) and counts[0] >= 2
    assert result.near[0].summary().endswith("more failing)")


def test_a_grant_has_no_near_misses_and_a_partial_grant_has(policy) -> None:
    assert _explain(policy, "ci", "repository:demo/x:pull,push").near == ()
    partial = _explain(policy, "alice", "repository:dev/x:pull,push,delete")
    assert partial.decision.outcome == "partial"
    assert partial.nearness in ("none", "closest")  # nothing grants delete there
    assert all("delete" in n.rule.actions or "*" in n.rule.actions for n in partial.near)


def test_conditions_agree_with_the_decision_on_the_staging_example() -> None:
    """For every rule, identity, scope and address: all conditions hold exactly when the
    rule matches (`matches_identity`, `matches_resource`, `matches_network`)."""
    policy = load_for_decisions(STAGING)
    identities = [Identity(None), Identity(None, build="b1")] + [
        Identity(a) for a in policy.accounts.values()
    ]
    names = ["apps/shop", "teams/web/site", "teams/payments/x", "users/alice/x", "cache/go"]
    names += ["internal/a", "public/a", "releases/1", "builds/b1", "builds/" + "a" * 26, "zz"]
    scopes = [s for n in names for s in parse_scopes([f"repository:{n}:pull,push"])]
    scopes += parse_scopes(["registry:catalog:*"])
    checked = 0
    for rule, identity, scope, ip in itertools.product(
        policy.rules, identities, scopes, [None, "10.20.1.5", "192.0.2.1"]
    ):
        matches = (
            rule.matches_identity(identity)
            and rule.matches_resource(scope, identity)
            and rule.matches_network(ip)
        )
        held = all(c.holds for c in conditions(rule, identity, scope, ip))
        assert held == matches, (rule.index, identity.name, str(scope), ip)
        checked += 1
    assert checked > 1000


def test_the_command_prints_near_misses_and_json(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    argv = ["policy", "explain", str(path), "--account", "ci"]
    assert main([*argv, "repository:demo2/x:push", "repository:demo/a:pull"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "repository:demo2/x:push: default deny [-] by default deny"
    assert out[1] == "  nearest rules (each fails on one condition):"
    assert out[2] == (
        "    rule 1 (line 7) 'ci writes demo': account matches; "
        "repository 'demo/*' does not match 'demo2/x'"
    )
    assert out[3].startswith("repository:demo/a:pull: granted [pull] by rule 1")
    assert len(out) == 4
    assert main([*argv, "--json", "repository:demo2/x:push"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    (scope,) = doc["scopes"]
    assert scope["outcome"] == "default deny" and scope["nearest"] == "one condition"
    assert scope["near_misses"][0]["rule"] == 1
    assert scope["near_misses"][0]["first_failed"] == (
        "repository 'demo/*' does not match 'demo2/x'"
    )
    assert main([*argv, "repository:A:push"]) == EXIT_INPUT


def test_rules_about_the_repository_asked_come_first(policy) -> None:
    """Both rule 2 (wrong repository) and rule 4 (wrong address) fail on one condition; the
    rule about tools/x, which missed on the address, is the nearer one."""
    result = _explain(policy, "alice", "repository:tools/x:push", "10.1.1.1")
    assert [n.rule.index for n in result.near] == [4, 2]
