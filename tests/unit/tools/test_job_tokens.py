"""regauth.tools.job_tokens: `regauth token issue|list|revoke` with the file store."""

from __future__ import annotations

import json

from regauth.cli import main
from regauth.ops import pki
from tests.support.policies import policy_text


def _setup(tmp_path, password_hashes):
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(password_hashes))
    return certs, policy


def test_issue_list_revoke(tmp_path, password_hashes, capsys):
    certs, policy = _setup(tmp_path, password_hashes)
    base = ["--dir", str(certs)]
    issue = ["token", "issue", *base, "--policy", str(policy), "--build", "b1"]
    assert main([*issue, "--scope", "repository:builds/b1:push", "--ttl", "10m", "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["username"] == "b1" and issued["subject"] == "regauth:build:b1"
    assert issued["token"].count(".") == 2
    assert main(["token", "list", *base, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["jti"] == issued["jti"] and "token" not in listed
    assert main(["token", "revoke", *base, issued["jti"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", *base, "nope"]) == 2
    # The token itself is never written anywhere regauth keeps.
    for path in certs.rglob("*"):
        if path.is_file():
            assert issued["token"].encode() not in path.read_bytes(), path


def test_bad_input_is_exit_2(tmp_path, password_hashes, capsys):
    certs, policy = _setup(tmp_path, password_hashes)
    issue = ["token", "issue", "--dir", str(certs), "--policy", str(policy)]
    for extra in (
        ["--build", "../x", "--scope", "repository:a:pull"],
        ["--build", "b", "--scope", "repository:A:pull"],
        ["--build", "b", "--scope", "repository:a:pull", "--ttl", "25h"],
        ["--account", "mallory", "--scope", "repository:a:pull"],
    ):
        assert main([*issue, *extra]) == 2, extra
    assert "mallory" in capsys.readouterr().err
