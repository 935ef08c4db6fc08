"""`regauth policy test POLICY TESTS [--junit FILE]` (`regauth.tools.policy_tests`): the shipped
expectations pass, failures name what was expected, what was decided and by which rule (in the
report and in JUnit XML), and a tests file is read strictly (in process, real files)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from regauth.cli import main
from regauth.tools import policy_tests
from regauth.tools.loading import load_for_decisions

POLICIES = Path(__file__).resolve().parents[3] / "policies"
DEFAULT = POLICIES / "default.yaml"
TESTS = POLICIES / "tests" / "default.yaml"

pytestmark = pytest.mark.usefixtures("no_secrets")


def test_policy_test_passes_the_shipped_expectations(tmp_path: Path, capsys) -> None:
    junit = tmp_path / "junit.xml"
    assert main(["policy", "test", str(DEFAULT), str(TESTS), "--junit", str(junit)]) == 0
    assert "0 failed" in capsys.readouterr().out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) >= 8


def test_policy_test_failures_name_expected_actual_and_rule(tmp_path: Path, capsys) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text("""tests:
  - name: anonymous pushes demo (wrong)
    scope: "repository:demo/app:pull,push"
    granted: [pull, push]
  - name: deciding rule (wrong)
    account: ci
    ip: 10.1.2.3
    scope: "repository:cache/go:pull"
    granted: [pull]
    rule: signed-in accounts may read the build cache
  - name: right
    scope: "repository:public/x:pull"
    granted: [pull]
""")
    junit = tmp_path / "junit.xml"
    assert main(["policy", "test", str(DEFAULT), str(tests), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL anonymous pushes demo (wrong) ({tests}:2)" in out
    assert "expected [pull, push], got [pull]" in out
    assert f"decided by rule 3 ({DEFAULT}:33): anyone may pull" in out
    assert "expected the deciding rule to be the rule 'signed-in accounts may read" in out
    assert f"decided by rule 1 ({DEFAULT}:23)" in out
    assert "1 passed, 2 failed" in out
    root = ET.parse(junit).getroot()
    failures = root.findall(".//failure")
    assert len(failures) == 2 and "got [pull]" in (failures[0].get("message") or "")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "tests:\n  - scope: 'repository:a:pull'\n    granted: [pull]\n    acount: ci\n",
            ":4:5: test 1: unknown key 'acount'",
        ),
        ("tests:\n  - scope: 'repository:A:pull'\n    granted: []\n", ":2:12: test 1: malformed"),
        ("tests:\n  - scope: 'repository:a:pull'\n", "test 1: `granted:` is required"),
        ("tests:\n  - scope: 'repository:a:pull'\n    granted: [pul]\n", "unknown action 'pul'"),
        (
            "tests:\n  - scope: 'repository:a:pull'\n    granted: []\n    ip: nowhere\n",
            "is not an IP address",
        ),
        ("- scope: x\n", "a tests file is a mapping with a `tests:` list"),
        ("tests: [\n", ""),
    ],
)
def test_policy_test_refuses_a_bad_tests_file(
    tmp_path: Path, capsys, text: str, message: str
) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(text)
    assert main(["policy", "test", str(DEFAULT), str(tests)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tests}:") and message in err


def test_policy_test_unknown_account_fails_the_test(tmp_path: Path, capsys) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "tests:\n  - account: mallory\n    scope: 'repository:a:pull'\n    granted: []\n"
    )
    assert main(["policy", "test", str(DEFAULT), str(tests)]) == 1
    assert "account 'mallory' is not in the policy" in capsys.readouterr().out


def test_policy_test_and_diff_refuse_an_invalid_policy(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    assert main(["policy", "test", str(bad), str(TESTS)]) == 2
    assert main(["policy", "diff", str(DEFAULT), str(bad)]) == 2
    assert f"{bad}:1:" in capsys.readouterr().err


def test_run_test_compares_granted_actions_as_a_set_and_the_rule_by_index_or_comment(
    tmp_path: Path,
) -> None:
    policy = load_for_decisions(DEFAULT)
    tests = tmp_path / "t.yaml"
    tests.write_text("""tests:
  - name: by index
    scope: "repository:public/x:pull"
    granted: [pull]
    rule: 3
  - name: by comment, wrong
    scope: "repository:public/x:pull"
    granted: [pull]
    rule: nobody
  - name: default deny
    scope: "repository:secret/x:push"
    granted: []
    rule: default deny
""")
    by_index, by_comment, deny = (
        policy_tests.run_test(policy, t) for t in policy_tests.load_tests(tests)
    )
    assert by_index.passed and by_index.decision is not None
    assert by_index.decision.rule is not None and by_index.decision.rule.index == 3
    assert by_comment.failures == ("expected the deciding rule to be the rule 'nobody'",)
    assert deny.passed and policy_tests.describe_rule(policy, deny.decision) == "default deny"


def test_a_name_used_twice_and_a_key_beside_tests_are_both_reported(tmp_path: Path) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "tests:\n  - {name: a, scope: 'repository:a:pull', granted: []}\n"
        "  - {name: a, scope: 'repository:b:pull', granted: []}\nextra: 1\n"
    )
    with pytest.raises(policy_tests.TestFileError) as caught:
        policy_tests.load_tests(tests)
    assert caught.value.problems == [
        f"{tests}:4:1: unknown key 'extra' (only `tests:`)",
        f"{tests}:3:5: test 2: the name 'a' is used twice",
    ]


HASH = "$2b$04$" + "a" * 53
IDENTITY_POLICY = f"""version: 1
service: s
accounts:
  ci: {{password_hash: "{HASH}", groups: [ci]}}
  alice: {{password_hash: "{HASH}", groups: [release]}}
rules:
  - comment: release managers push releases
    account: authenticated
    group: release
    repository: "releases/**"
    actions: [pull, push]
  - comment: a build owns builds/ID
    account: any
    repository: "builds/${{build}}"
    actions: [pull, push]
  - comment: ci pushes cache
    account: ci
    repository: "cache/**"
    actions: [pull, push]
"""


def test_cases_name_subjects_groups_and_client_certificates(tmp_path: Path, capsys) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(IDENTITY_POLICY)
    tests = tmp_path / "t.yaml"
    tests.write_text("""tests:
  - name: a release manager pushes releases
    identity: {subject: eve, groups: [release]}
    scope: "repository:releases/1:push"
    granted: [push]
    rule: 1
  - name: a signed-in subject outside the group does not
    identity: {subject: eve}
    scope: "repository:releases/1:push"
    granted: []
  - name: a build certificate owns its repository
    identity: {client_certificate: "regauth:build:b1"}
    scope: "repository:builds/b1:push"
    granted: [push]
  - name: an account certificate is the account
    identity: {client_certificate: "regauth:account:ci"}
    scope: "repository:cache/a:push"
    granted: [push]
  - name: wrong on purpose
    identity: {subject: eve, groups: [release]}
    scope: "repository:cache/a:push"
    granted: [push]
  - name: a certificate for an account the policy lacks
    identity: {client_certificate: "regauth:account:bob"}
    scope: "repository:cache/a:pull"
    granted: []
""")
    assert main(["policy", "test", str(policy), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "4 passed, 2 failed" in out
    assert "  subject eve [group release] asks repository:cache/a:push" in out
    assert "names account 'bob', which the policy does not have" in out
    assert main(["policy", "test", "-v", str(policy), str(tests)]) == 1
    out = capsys.readouterr().out
    assert (
        "ok   a build certificate owns its repository: build b1 asks "
        "repository:builds/b1:push → [push] by rule 2" in out
    )
    assert main(["policy", "test", "--json", str(policy), str(tests)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["passed"], doc["failed"]) == (4, 2)
    first = doc["tests"][0]
    assert first["identity"] == {"subject": "eve", "groups": ["release"], "labels": {}}
    assert first["passed"] and first["decision"]["rule"] == 1
    assert doc["tests"][4]["failures"] == ["expected [push], got []"]
    assert doc["tests"][5]["decision"] is None


def test_identity_and_the_account_shorthand_are_not_mixed(tmp_path: Path, capsys) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(IDENTITY_POLICY)
    tests = tmp_path / "t.yaml"
    tests.write_text("""tests:
  - account: ci
    identity: {subject: eve}
    scope: "repository:a:pull"
    granted: []
  - identity: {subject: eve, claims: {x: 1}}
    scope: "repository:a:pull"
    granted: []
""")
    assert main(["policy", "test", str(policy), str(tests)]) == 2
    err = capsys.readouterr().err
    assert f"{tests}:2:14: test 1: identity and account name two identities" in err
    assert f"{tests}:6:15: test 2: an identity has exactly one of account, subject, " in err
    assert main(["policy", "test", "--json", str(policy), str(tests)]) == 2
