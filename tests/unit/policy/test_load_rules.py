"""Reading `accounts:`, `capabilities:` and `rules:` (`regauth.policy.load_rules.RulesReader`),
section by section: account names, bcrypt hashes, groups and labels; capability shapes; rules'
accounts, resources, networks and actions, with every reference checked against what was
declared and anonymous writes kept in capability repositories; each problem at its position.
The loader as a whole is test_load.py; what a rule decides is test_model.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from regauth.policy import yamlpos
from regauth.policy.load_rules import RulesReader

HASH = "$2b$04$" + "N" * 53
ACCOUNTS = f"""\
accounts:
  ci:
    password_hash: "{HASH}"
    groups: [ci, builders]
    labels: {{team: [web, api]}}
  alice:
    password_hash_env: ALICE_HASH
capabilities:
  build-id: "[a-z0-9]{{26}}"
"""


def _reader(tmp_path: Path) -> RulesReader:
    return RulesReader("p.yaml", tmp_path, {"ALICE_HASH": HASH})


def _doc(text: str) -> yamlpos.Map:
    doc = yamlpos.load(text)
    assert isinstance(doc, yamlpos.Map)
    return doc


def _rules(tmp_path: Path, rules: str):
    reader = _reader(tmp_path)
    doc = _doc(ACCOUNTS + "rules:\n" + rules)
    accounts = reader.accounts(doc)
    read = reader.rules(doc, accounts, reader.capabilities(doc))
    return read, [str(p) for p in reader.problems]


def test_accounts_with_their_hashes_groups_and_labels(tmp_path):
    reader = _reader(tmp_path)
    accounts = reader.accounts(_doc(ACCOUNTS))
    assert reader.problems == []
    assert list(accounts) == ["ci", "alice"]
    ci = accounts["ci"]
    assert (ci.password_hash, ci.groups, ci.labels) == (
        HASH.encode(),
        ("ci", "builders"),
        {"team": ("web", "api")},
    )
    assert accounts["alice"].groups == () and accounts["alice"].labels == {}
    assert reader.declared_accounts == {"ci", "alice"}


def test_account_problems(tmp_path):
    reader = _reader(tmp_path)
    accounts = reader.accounts(
        _doc(f"""\
accounts:
  any:
    password_hash: "{HASH}"
  "bad name":
    password_hash: "{HASH}"
  plain:
    password_hash: hunter2
  grouped:
    password_hash: "{HASH}"
    groups: [Dev]
    labels: {{Team: [web], team: [a/b]}}
""")
    )
    assert list(accounts) == ["grouped"]  # a group or label problem keeps the account
    assert [p.split(": ", 1)[0] for p in map(str, reader.problems)] == [
        "p.yaml:2:3",
        "p.yaml:4:3",
        "p.yaml:7:20",
        "p.yaml:10:14",
        "p.yaml:11:14",
        "p.yaml:11:34",
    ]
    messages = [p.message for p in reader.problems]
    assert "'any' is a reserved word" in messages[0]
    assert "must be 1-64 letters" in messages[1]
    assert "is not a bcrypt hash" in messages[2] and "hunter2" not in messages[2]
    assert "group 'Dev'" in messages[3]
    assert "label name 'Team'" in messages[4] and "label value 'a/b'" in messages[5]


def test_capabilities(tmp_path):
    reader = _reader(tmp_path)
    caps = reader.capabilities(
        _doc(
            'capabilities:\n  build-id: "[a-z0-9]{26}"\n'
            '  Weak: "[a-z]{26}"\n  short: "[a-z]{4}"\n  odd: 7\n'
        )
    )
    assert list(caps) == ["build-id"]
    assert caps["build-id"].min_length == 26 and caps["build-id"].bits > 128
    assert [(p.line, p.message.split(":")[0]) for p in reader.problems] == [
        (3, "capability name 'Weak' must be lower-case letters, digits, '_' or '-'"),
        (4, "capability 'short'"),
        (5, "capability 'odd'"),
    ]


def test_rules_with_their_resources_networks_and_actions(tmp_path):
    rules, problems = _rules(
        tmp_path,
        """\
  - comment: CI publishes
    account: ci
    repository: ["public/**", {regex: "re/[a-z]+"}]
    networks: [10.0.0.0/8]
    actions: [push, pull, push]
  - account: [anonymous]
    repository: "builds/{build-id}"
    actions: [pull, push]
  - group: builders
    labels: {team: [web]}
    repository: "teams/${labels.team}/**"
    deny: true
  - account: ci
    type: registry
    actions: ["*"]
""",
    )
    assert problems == []
    publish, builds, denied, catalog = rules
    assert (publish.index, publish.line, publish.comment, publish.accounts) == (
        1,
        1 + ACCOUNTS.count("\n") + 1,
        "CI publishes",
        ("ci",),
    )
    assert [p.source for p in publish.repositories] == ["public/**", "re/[a-z]+"]
    assert [p.is_regex for p in publish.repositories] == [False, True]
    assert [str(n) for n in publish.networks] == ["10.0.0.0/8"]
    assert publish.actions == ("push", "pull")  # duplicates dropped, order kept
    assert builds.repositories[0].capabilities == ("build-id",)
    assert denied.accounts == ("any",) and denied.denies and denied.groups == ("builders",)
    assert denied.labels == {"team": ("web",)}
    assert catalog.resource_type == "registry" and catalog.repositories == ()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "account: mallory\n    repository: a\n    actions: [pull]",
            "rule 1: unknown account 'mallory'",
        ),
        ("group: admins\n    repository: a\n    actions: [pull]", "rule 1: no account is in group"),
        (
            "labels: {floor: [3]}\n    repository: a\n    actions: [pull]",
            "rule 1: no account has label 'floor'",
        ),
        (
            'repository: "x/${labels.floor}"\n    actions: [pull]',
            "rule 1: ${labels.floor} names a label no account has",
        ),
        (
            "repository: a\n    networks: [10.0.0.1/8]\n    actions: [pull]",
            "rule 1: invalid network '10.0.0.1/8'",
        ),
        ("repository: a\n    actions: [pul]", "rule 1: unknown action 'pul'"),
        ("repository: a", "rule 1 needs `actions:`"),
        (
            "repository: a\n    deny: true\n    actions: [pull]",
            "rule 1: a deny rule has no actions",
        ),
        ("actions: [pull]", "rule 1 needs `repository:`"),
        ("name: catalog\n    actions: [pull]", "rule 1: repository rules use `repository:`"),
        (
            "type: registry\n    name: tags\n    account: ci\n    actions: [pull]",
            "rule 1: the only registry resource is 'catalog'",
        ),
        ("type: registry\n    actions: ['*']", "rule 1: the catalog lists every repository"),
        ("repository: [a, 7]\n    actions: [pull]", "rule 1: repository must be a glob string"),
        ("repository: []\n    actions: [pull]", "rule 1: empty repository list"),
        ("repository: 'A/b'\n    actions: [pull]", "rule 1: bad repository pattern"),
        (
            "account: anonymous\n    repository: public/**\n    actions: [push]",
            "rule 1: grants push to anonymous outside a capability repository",
        ),
    ],
)
def test_rule_problems(tmp_path, rule, message):
    _, problems = _rules(tmp_path, f"  - {rule}\n")
    assert problems and message in problems[0], problems


def test_a_policy_without_rules_says_everything_would_be_denied(tmp_path):
    reader = _reader(tmp_path)
    assert reader.rules(_doc("version: 1\n"), {}, {}) == []
    assert reader.rules(_doc("rules: {}\n"), {}, {}) == []
    assert [p.message for p in reader.problems] == [
        "the policy has no `rules:`; everything would be denied (write `rules: []` if that is "
        "intended)",
        "rules must be a list",
    ]
