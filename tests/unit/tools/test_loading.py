"""Loading policies for the tools (`regauth.tools.loading`): absent secrets never stop a tool
that only decides, a present but wrong one and everything else still do, and a rule is named
by `file:line`."""

from __future__ import annotations

import pytest

from regauth.tools.loading import PolicyError
from regauth.tools.loading import load_for_decisions
from regauth.tools.loading import rule_location

POLICY = """version: 1
service: s
accounts:
  ci:
    password_hash_env: CI_HASH_NOT_SET
upstreams:
  - url: "*"
    credentials: {username: bot, password_file: nowhere.txt}
rules:
  - account: ci
    repository: "cache/**"
    actions: [pull]
"""


def test_absent_secrets_are_tolerated(tmp_path, monkeypatch):
    monkeypatch.delenv("CI_HASH_NOT_SET", raising=False)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    policy = load_for_decisions(path)
    assert list(policy.accounts) == ["ci"] and len(policy.rules) == 1
    assert rule_location(policy, 1) == f"{path}:10"
    assert rule_location(policy, None) == "default deny"


def test_a_present_secret_and_everything_else_are_still_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_HASH_NOT_SET", "not-bcrypt")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with pytest.raises(PolicyError, match="is not a bcrypt hash"):
        load_for_decisions(path)
    monkeypatch.delenv("CI_HASH_NOT_SET")
    path.write_text(POLICY.replace("[pull]", "[pul]"))
    with pytest.raises(PolicyError, match="unknown action 'pul'") as caught:
        load_for_decisions(path)
    assert str(caught.value.problems[0]).startswith(f"{path}:12:")
