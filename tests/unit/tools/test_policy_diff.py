"""`regauth policy diff OLD NEW` (`regauth.tools.policy_diff`): against brute force (generated
policy pairs, every (subject, name, address, action) decided under both files with
Policy.decide), and the command's exit codes and lines on the shipped policy."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from regauth.cli import main
from regauth.policy.load import load_policy_text
from regauth.policy.model import Policy
from regauth.policy.reader import PolicyError
from regauth.protocol.scope import ResourceScope
from regauth.tools.policy_diff import REPOSITORY_ACTIONS
from regauth.tools.policy_diff import diff_policies
from regauth.tools.policy_diff import rule_changes
from regauth.tools.witnesses import SYMBOLIC_ACCOUNT
from regauth.tools.witnesses import subjects

HASH = "$2b$04$" + "a" * 53
DEFAULT = Path(__file__).resolve().parents[3] / "policies" / "default.yaml"
CAP_ID = "a" * 26
SEGMENTS = ["a", "b", "a-b", "web", CAP_ID, SYMBOLIC_ACCOUNT]
UNIVERSE = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(SEGMENTS, repeat=n)]
ADDRESSES = ["10.0.0.1", "10.20.1.5", "192.0.2.1", "fd00::1"]
GLOB_SEGMENTS = [
    "a",
    "b",
    "*",
    "**",
    "a-*",
    "*-b",
    "${account}",
    "${group}",
    "${labels.team}",
    "{cap}",
]
REGEXES = ["a(-b)?", "(a|b)/.*", "[a-z]+/web"]


def _account(name: str, groups: list[str], team: list[str]) -> str:
    text = f'  {name}:\n    password_hash: "{HASH}"\n'
    if groups:
        text += f"    groups: [{', '.join(groups)}]\n"
    if team:
        text += f"    labels: {{team: [{', '.join(team)}]}}\n"
    return text


@st.composite
def rules(draw: st.DrawFn) -> str:
    account = draw(st.sampled_from(["anonymous", "authenticated", "any", "ci", "alice"]))
    group = draw(st.sampled_from([None, None, "ci", "dev"]))
    team = draw(st.sampled_from([None, None, "web"]))
    signed_in_only = account not in ("anonymous", "any") or group or team
    deny = draw(st.booleans()) if draw(st.booleans()) else False
    actions = draw(
        st.lists(
            st.sampled_from(["pull", "push", "delete", "*"] if signed_in_only else ["pull"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    repos = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.integers(0, 9)) == 0:
            repos.append(f'{{regex: "{draw(st.sampled_from(REGEXES))}"}}')
        else:
            segments = draw(st.lists(st.sampled_from(GLOB_SEGMENTS), min_size=1, max_size=3))
            if "{cap}" in segments and not signed_in_only:
                segments = ["b", "{cap}"]
            repos.append(f'"{"/".join(segments)}"')
    network = draw(st.sampled_from([None, None, "10.0.0.0/8", "10.20.0.0/16", "fd00::/8"]))
    text = f"  - account: {account}\n    repository: [{', '.join(repos)}]\n"
    if group:
        text += f"    group: {group}\n"
    if team:
        text += f"    labels: {{team: {team}}}\n"
    if network:
        text += f'    networks: ["{network}"]\n'
    if deny:
        text += "    deny: true\n"
    else:
        text += f"    actions: [{', '.join(repr(a) if a == '*' else a for a in actions)}]\n"
    return text


@st.composite
def policies(draw: st.DrawFn) -> str:
    accounts = _account("ci", draw(st.sampled_from([["ci"], ["ci", "dev"], []])), ["web"])
    if draw(st.booleans()):
        accounts += _account(
            "alice",
            draw(st.sampled_from([["dev"], []])),
            draw(st.sampled_from([["web"], ["a"], []])),
        )
    catalog = (
        "  - account: ci\n    type: registry\n    name: catalog\n    actions: ['*']\n"
        if draw(st.booleans())
        else ""
    )
    body = "".join(draw(st.lists(rules(), min_size=1, max_size=5)))
    return (
        'version: 1\nservice: s\ncapabilities:\n  cap: "[a-z0-9]{26}"\naccounts:\n'
        + accounts
        + "rules:\n"
        + catalog
        + body
    )


def _load(text: str, name: str) -> Policy:
    try:
        return load_policy_text(text, name, Path("/nonexistent"), {})
    except PolicyError:
        assume(False)
        raise


def _brute_force(old: Policy, new: Policy) -> set[tuple[str, str, str, object, object]]:
    found = set()
    for subject in subjects(old, new):
        for name, address, action in itertools.product(UNIVERSE, ADDRESSES, REPOSITORY_ACTIONS):
            scope = ResourceScope("repository", name, (action,))
            before = old.decide(subject.old, scope, address) if subject.old else None
            after = new.decide(subject.new, scope, address) if subject.new else None
            had = before is not None and action in before.granted
            has = after is not None and action in after.granted
            if had != has:
                found.add(("+" if has else "-", subject.name, action, _rule(before), _rule(after)))
    return found


def _rule(decision: object) -> object:
    if decision is None:
        return "no account"
    rule = decision.rule  # type: ignore[attr-defined]
    return None if rule is None else rule.index


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(policies(), policies())
def test_diff_matches_brute_force(old_text: str, new_text: str) -> None:
    old, new = _load(old_text, "old.yaml"), _load(new_text, "new.yaml")
    result = diff_policies(old, new)
    reported = {
        (
            c.sign,
            c.subject,
            c.action,
            c.old.index
            if c.old.index
            else ("no account" if c.old.text.startswith("no such") else None),
            c.new.index
            if c.new.index
            else ("no account" if c.new.text.startswith("no such") else None),
        )
        for c in result.changes
    }
    # Complete: every change brute force finds in its universe is reported.
    for key in _brute_force(old, new):
        sign, subject, action, before, after = key
        assert key in reported or (
            subject.startswith("authenticated[")
            and (sign, "authenticated", action, before, after) in reported
        ), f"missed {key}\n{old_text}\n---\n{new_text}"
    # Sound: every reported change holds on its own witness.
    by_name = {s.name: s for s in subjects(old, new)}
    for change in result.changes:
        subject = by_name[change.subject]
        name = change.names[0].replace("${account}", SYMBOLIC_ACCOUNT)
        scope = (
            ResourceScope("registry", "catalog", ("*",))
            if name == "registry:catalog"
            else ResourceScope("repository", name, (change.action,))
        )
        before = old.decide(subject.old, scope, change.address) if subject.old else None
        after = new.decide(subject.new, scope, change.address) if subject.new else None
        had = before is not None and (change.action in before.granted or "*" in before.granted)
        has = after is not None and (change.action in after.granted or "*" in after.granted)
        assert (had, has) == ((False, True) if change.sign == "+" else (True, False))
    assert result.exact
    assert result.gained == any(c.sign == "+" for c in result.changes)


def test_identical_policies_have_no_changes() -> None:
    text = Path("policies/example-staging.yaml").read_text()
    policy = load_policy_text(text, "p.yaml", Path("policies"), {}, secret_notes=[])
    result = diff_policies(policy, policy)
    assert result.changes == [] and result.exact and not result.gained


@pytest.mark.usefixtures("no_secrets")
def test_diff_exit_codes_and_lines(tmp_path: Path, capsys) -> None:
    assert main(["policy", "diff", str(DEFAULT), str(DEFAULT)]) == 0
    assert "0 gained, 0 lost" in capsys.readouterr().out
    narrower = tmp_path / "narrower.yaml"
    narrower.write_text(
        DEFAULT.read_text().replace(
            'repository: ["public/**", "demo/**"]\n    actions: [pull]\n',
            'repository: ["public/**"]\n    actions: [pull]\n',
        )
    )
    assert main(["policy", "diff", str(DEFAULT), str(narrower)]) == 0  # removals only
    out = capsys.readouterr().out
    assert f"- 3 lost: rule 3 ({DEFAULT}:33) 'anyone may pull" in out and "0 gained" in out
    assert "→ default deny [pattern demo/**] (anonymous, authenticated" in out
    assert main(["policy", "diff", "-v", str(narrower), str(DEFAULT)]) == 1
    out = capsys.readouterr().out
    assert "+ 3 gained: default deny → rule 3" in out and "    + anonymous pull demo/" in out
    assert main(["policy", "diff", "--json", str(narrower), str(DEFAULT)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["gained"] and doc["exact"]
    assert any(
        c["subject"] == "anonymous" and c["new"]["location"] == f"{DEFAULT}:33"
        for c in doc["changes"]
    )


@pytest.mark.usefixtures("no_secrets")
def test_diff_says_when_a_regex_makes_it_a_sample(tmp_path: Path, capsys) -> None:
    new = tmp_path / "regex.yaml"
    # `\b` reads the same in RE2 and Python, but the automaton library cannot analyse it.
    new.write_text(
        DEFAULT.read_text()
        + "\n  - account: ci\n"
        + '    repository: {regex: "tools\\\\b/x"}\n'
        + "    actions: [pull]\n"
    )
    assert main(["policy", "diff", str(DEFAULT), str(new)]) in (0, 1)
    out = capsys.readouterr().out
    assert "sample" in out


STAGING = Path(__file__).resolve().parents[3] / "policies" / "example-staging.yaml"


def test_a_one_pattern_edit_is_one_line_with_counts(tmp_path: Path, capsys) -> None:
    """Rule 11 of the staging example loses `apps/**` for `apps/*`: one rule change, with how
    many (subject, action, name) witnesses it changes; `-v` lists them; `--json` groups them."""
    edited = tmp_path / "edited.yaml"
    text = STAGING.read_text()
    old = 'repository: ["apps/**", "releases/**", "internal/**"]'
    assert text.count(old) == 1
    edited.write_text(text.replace(old, 'repository: ["apps/*", "releases/**", "internal/**"]'))
    assert main(["policy", "diff", str(STAGING), str(edited)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"- 4 lost: rule 11 ({STAGING}:149) 'signed-in accounts read apps, releases and "
        "internal images' → default deny [pattern apps/**] (alice, authenticated, bob, dave: "
        "pull)",
        lines[1],
    ]
    assert lines[1].startswith("0 gained, 4 lost in 1 rule changes (")
    assert main(["policy", "diff", "-v", str(STAGING), str(edited)]) == 0
    verbose = capsys.readouterr().out.splitlines()
    assert verbose[0] == lines[0]
    assert "    - alice pull apps/a/a [pattern apps/**]" in verbose
    assert len(verbose) == 2 + 2 * 4  # each change: its line and its rules' line
    assert main(["policy", "diff", "--json", str(STAGING), str(edited)]) == 0
    doc = json.loads(capsys.readouterr().out)
    (group,) = doc["rule_changes"]
    assert group["change"] == "lost" and group["count"] == 4
    assert group["patterns"] == ["apps/**"] and group["actions"] == ["pull"]
    assert group["old"]["location"] == f"{STAGING}:149" and group["new"]["rule"] is None
    assert sorted(group["changes"]) == list(range(len(doc["changes"])))


def test_rule_changes_group_every_change_once() -> None:
    text = STAGING.read_text()
    old = load_policy_text(text, "old.yaml", Path("policies"), {}, secret_notes=[])
    new_text = text.replace('repository: "public/**"', 'repository: "pub/**"').replace(
        'repository: "cache/**"\n    actions: [pull]',
        'repository: "cache/**"\n    actions: [pull, push]',
    )
    new = load_policy_text(new_text, "new.yaml", Path("policies"), {}, secret_notes=[])
    result = diff_policies(old, new)
    groups = rule_changes(result.changes)
    assert sorted(id(c) for g in groups for c in g.changes) == sorted(id(c) for c in result.changes)
    for group in groups:
        assert {(c.sign, c.old, c.new, tuple(sorted(c.patterns))) for c in group.changes} == {
            (group.sign, group.old, group.new, group.patterns)
        }
    assert [g.sign for g in groups] == sorted((g.sign for g in groups), key=lambda s: s != "+")
    assert sum(g.count for g in groups) == sum(len(c.names) for c in result.changes)
    assert any(g.sign == "+" for g in groups) and any(g.sign == "-" for g in groups)
