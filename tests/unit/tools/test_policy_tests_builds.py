"""The policy tools understand build identities from client certificates (issue 23):
`policy explain --build`, `build:` in tests files, `${build}` in `policy diff`, and `replay` of
token requests a build's certificate decided."""

from __future__ import annotations

import json

from regauth.cli import main
from regauth.policy.load import load_policy_text
from regauth.tools.log_records import parse_lines
from regauth.tools.replay import replay

HASH = "$2b$04$" + "a" * 53
BASE = f"""version: 1
service: s
accounts:
  ci: {{password_hash: "{HASH}"}}
rules:
  - comment: anyone pulls public
    account: any
    repository: "public/**"
    actions: [pull]
"""
BUILDS = """  - comment: a build owns builds/ID
    account: any
    repository: ["builds/${build}", "builds/${build}/**"]
    actions: [pull, push]
"""


def test_explain_as_a_build(tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(BASE + BUILDS)
    argv = ["policy", "explain", str(policy), "--build", "b1"]
    assert main([*argv, "repository:builds/b1/x:push", "repository:builds/b2:push"]) == 0
    first, second = [
        line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")
    ]
    assert first.startswith("repository:builds/b1/x:push: granted [push] by rule 2")
    assert second.startswith("repository:builds/b2:push: default deny")
    assert main([*argv[:3], "repository:builds/b1:push"]) == 0  # anonymous: nothing
    assert "default deny" in capsys.readouterr().out
    assert main([*argv[:4], "../x", "repository:a:pull"]) == 2
    assert main([*argv, "--account", "ci", "repository:a:pull"]) == 2


def test_tests_files_take_a_build(tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(BASE + BUILDS)
    tests = tmp_path / "t.yaml"
    tests.write_text(
        """tests:
  - build: b1
    scope: "repository:builds/b1/app:push"
    granted: [push]
  - build: b1
    scope: "repository:builds/b2/app:push"
    granted: [push]
"""
    )
    assert main(["policy", "test", str(policy), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "1 passed, 1 failed" in out
    assert "build b1 asks repository:builds/b2/app:push" in out
    tests.write_text('tests:\n  - build: "../x"\n    scope: "repository:a:pull"\n    granted: []\n')
    assert main(["policy", "test", str(policy), str(tests)]) == 2
    assert "t.yaml:2:" in capsys.readouterr().err


def test_diff_names_what_a_build_certificate_gains(tmp_path, capsys):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(BASE)
    new.write_text(BASE + BUILDS)
    assert main(["policy", "diff", str(old), str(new)]) == 1
    assert "(build certificate: pull, push)" in capsys.readouterr().out
    assert main(["policy", "diff", "-v", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "    + build certificate push builds/${build}" in out
    assert main(["policy", "diff", str(new), str(old)]) == 0  # removals alone exit 0


def test_replay_decides_a_builds_token_request_as_that_build():
    record = {
        "version": 2,
        "kind": "token",
        "status": 200,
        "client": "192.0.2.1:5000",
        "token_request": {"method": "GET", "requested": ["repository:builds/b1/app:push"]},
        "token_response": {
            "credential": "client_certificate",
            "account": "anonymous",
            "build": "b1",
            "certificate_serial": "ab",
            "decisions": [
                {
                    "scope": "repository:builds/b1/app:push",
                    "granted": ["push"],
                    "outcome": "granted",
                    "rule": 2,
                    "line": 10,
                }
            ],
        },
    }
    entries = parse_lines([json.dumps(record)]).entries
    same = replay(entries, load_policy_text(BASE + BUILDS, "new.yaml"))
    assert same.requests == 1 and same.unchanged == 1 and not same.any_changed, same
    without = replay(entries, load_policy_text(BASE, "new.yaml"))
    assert without.any_changed and without.unchanged == 0
