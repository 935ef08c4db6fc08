"""Exit codes and output of `regauth policy check|test|diff` (in process, real files)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from regauth.cli import main

POLICIES = Path(__file__).resolve().parents[3] / "policies"
DEFAULT = POLICIES / "default.yaml"
STAGING = POLICIES / "example-staging.yaml"
TESTS = POLICIES / "tests" / "default.yaml"
HASH = "$2b$04$" + "a" * 53


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGAUTH_CI_PASSWORD_HASH", "REGAUTH_ALICE_PASSWORD_HASH",
                 "REGAUTH_UPSTREAM_PASSWORD", "REGAUTH_LEGACY_CI_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_check_no_secrets_passes_the_shipped_policies_without_environment(capsys) -> None:
    assert main(["policy", "check", "--no-secrets", str(DEFAULT), str(STAGING)]) == 0
    out, err = capsys.readouterr()
    assert f"{DEFAULT}: ok" in out and "secrets not checked" in out
    assert "note: account 'ci': environment variable REGAUTH_CI_PASSWORD_HASH is not set" in err


def test_check_needs_secrets_without_the_flag(capsys) -> None:
    assert main(["policy", "check", str(DEFAULT)]) == 1
    assert "REGAUTH_CI_PASSWORD_HASH is not set" in capsys.readouterr().err


def test_check_no_secrets_still_validates_present_secrets_and_everything_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("REGAUTH_CI_PASSWORD_HASH", "not-a-bcrypt-hash")
    assert main(["policy", "check", "--no-secrets", str(DEFAULT)]) == 1
    assert "is not a bcrypt hash" in capsys.readouterr().err
    monkeypatch.delenv("REGAUTH_CI_PASSWORD_HASH")
    broken = tmp_path / "broken.yaml"
    broken.write_text(DEFAULT.read_text().replace("actions: [pull, push]\n\n  - comment: CI "
                                                  "publishes", "actions: [pull, pusj]\n\n  - "
                                                  "comment: CI publishes"))
    assert main(["policy", "check", "--no-secrets", str(broken)]) == 1
    assert "unknown action 'pusj'" in capsys.readouterr().err
    missing_file = tmp_path / "file.yaml"
    missing_file.write_text(DEFAULT.read_text().replace(
        "password_hash_env: REGAUTH_CI_PASSWORD_HASH", "password_hash_file: absent.bcrypt"))
    assert main(["policy", "check", "--no-secrets", str(missing_file)]) == 0
    assert "note: account 'ci': cannot read" in capsys.readouterr().err


def test_check_no_secrets_in_a_fresh_clone(tmp_path: Path) -> None:
    """`policy check --no-secrets policies/*.yaml` with no environment at all."""
    clone = tmp_path / "policies"
    shutil.copytree(POLICIES, clone)
    regauth = Path(__import__("sys").executable).with_name("regauth")
    files = sorted(str(p) for p in clone.glob("*.yaml"))
    done = subprocess.run([str(regauth), "policy", "check", "--no-secrets", *files],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok") == len(files)


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


@pytest.mark.parametrize("text, message", [
    ("tests:\n  - scope: 'repository:a:pull'\n    granted: [pull]\n    acount: ci\n",
     ":4:5: test 1: unknown key 'acount'"),
    ("tests:\n  - scope: 'repository:A:pull'\n    granted: []\n", ":2:12: test 1: malformed"),
    ("tests:\n  - scope: 'repository:a:pull'\n", "test 1: `granted:` is required"),
    ("tests:\n  - scope: 'repository:a:pull'\n    granted: [pul]\n", "unknown action 'pul'"),
    ("tests:\n  - scope: 'repository:a:pull'\n    granted: []\n    ip: nowhere\n",
     "is not an IP address"),
    ("- scope: x\n", "a tests file is a mapping with a `tests:` list"),
    ("tests: [\n", ""),
])
def test_policy_test_refuses_a_bad_tests_file(tmp_path: Path, capsys, text: str,
                                              message: str) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(text)
    assert main(["policy", "test", str(DEFAULT), str(tests)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tests}:") and message in err


def test_policy_test_unknown_account_fails_the_test(tmp_path: Path, capsys) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text("tests:\n  - account: mallory\n    scope: 'repository:a:pull'\n"
                     "    granted: []\n")
    assert main(["policy", "test", str(DEFAULT), str(tests)]) == 1
    assert "account 'mallory' is not in the policy" in capsys.readouterr().out


def test_policy_test_and_diff_refuse_an_invalid_policy(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    assert main(["policy", "test", str(bad), str(TESTS)]) == 2
    assert main(["policy", "diff", str(DEFAULT), str(bad)]) == 2
    assert f"{bad}:1:" in capsys.readouterr().err


def test_diff_exit_codes_and_lines(tmp_path: Path, capsys) -> None:
    assert main(["policy", "diff", str(DEFAULT), str(DEFAULT)]) == 0
    assert "0 gained, 0 lost" in capsys.readouterr().out
    narrower = tmp_path / "narrower.yaml"
    narrower.write_text(DEFAULT.read_text().replace('repository: ["public/**", "demo/**"]\n'
                                                    "    actions: [pull]\n",
                                                    'repository: ["public/**"]\n'
                                                    "    actions: [pull]\n"))
    assert main(["policy", "diff", str(DEFAULT), str(narrower)]) == 0  # removals only
    out = capsys.readouterr().out
    assert "- anonymous pull demo/" in out and "0 gained" in out
    assert f"old: rule 3 ({DEFAULT}:33)" in out and "new: default deny" in out
    assert main(["policy", "diff", str(narrower), str(DEFAULT)]) == 1
    assert "+ anonymous pull demo/" in capsys.readouterr().out
    assert main(["policy", "diff", "--json", str(narrower), str(DEFAULT)]) == 1
    import json
    doc = json.loads(capsys.readouterr().out)
    assert doc["gained"] and doc["exact"]
    assert any(c["subject"] == "anonymous" and c["new"]["location"] == f"{DEFAULT}:33"
               for c in doc["changes"])


def test_diff_says_when_a_regex_makes_it_a_sample(tmp_path: Path, capsys) -> None:
    new = tmp_path / "regex.yaml"
    # `\b` reads the same in RE2 and Python, but the automaton library cannot analyse it.
    new.write_text(DEFAULT.read_text() + '\n  - account: ci\n    repository: {regex: '
                                         '"tools\\\\b/x"}\n    actions: [pull]\n')
    assert main(["policy", "diff", str(DEFAULT), str(new)]) in (0, 1)
    out = capsys.readouterr().out
    assert "sample" in out
