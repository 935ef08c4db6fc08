"""The token size contract (issue 25, item 1): every token the token endpoint issues is one
its own gate accepts. For random scope sets up to the cap (names up to 255 characters, up to
32 repositories, every action), a request either gets a token that the gate accepts for each
granted scope, or a 400 `invalid_scope` saying the token would be too large: never a token the
gate refuses as oversized (which made clients loop on challenges)."""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regauth import gate
from regauth.logins.credentials import Authenticator
from regauth.protocol.auth_header import MAX_AUTHORIZATION_LENGTH
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import build_runtime

EVERYTHING = """  - comment: ci may do anything anywhere (the largest grants a token can carry)
    account: ci
    repository: "**"
    actions: ["*"]
"""
SEGMENT = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=60)
NAME = st.lists(SEGMENT, min_size=1, max_size=6).map("/".join).filter(lambda n: len(n) <= 255)
ACTIONS = st.sampled_from(["pull", "push", "pull,push", "pull,push,delete", "*"])


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, certs_dir: Path, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("size"),
        certs_dir,
        policy_text(password_hashes, extra_rules=EVERYTHING),
    )


BASIC = "Basic " + base64.b64encode(f"ci:{PASSWORDS['ci']}".encode()).decode()


@given(scopes=st.lists(st.tuples(NAME, ACTIONS), min_size=1, max_size=32, unique_by=lambda s: s[0]))
def test_every_issued_token_passes_the_gate(runtime, scopes) -> None:
    requested = [f"repository:{name}:{actions}" for name, actions in scopes]
    authenticator = Authenticator()
    response = handle_token_request(
        runtime,
        authenticator,
        TokenRequest("GET", {"service": [SERVICE], "scope": requested}, None, BASIC, "10.0.0.1"),
    )
    if response.status == 400:
        body = json.loads(response.body)
        assert (
            body["error"] == "invalid_scope" and "ask for fewer scopes" in body["error_description"]
        )
        return
    assert response.status == 200, response.body
    token = json.loads(response.body)["token"]
    assert len("Bearer " + token) <= MAX_AUTHORIZATION_LENGTH
    for granted in json.loads(response.body)["scope"].split(" ")[:8]:
        _, name, actions = granted.split(":")
        have = set(actions.split(","))
        if actions != "*" and "pull" not in have:
            continue  # every route needs pull (distribution: push alone opens nothing)
        method = "PUT" if "push" in have or actions == "*" else "GET"
        decision = gate.decide(
            runtime, method, f"/v2/{name}/manifests/1", f"Bearer {token}", "https://r/v2/token"
        )
        assert decision.forward, (granted, decision.reason)


def test_the_reported_case_is_refused_with_a_clear_error_not_an_unusable_token(runtime) -> None:
    # 32 repositories with 154-character names, as containerd and BuildKit send them.
    names = [f"team-{i:02d}/" + "a" * 146 for i in range(32)]
    requested = [f"repository:{n}:pull,push" for n in names]
    response = handle_token_request(
        runtime,
        Authenticator(),
        TokenRequest("GET", {"service": [SERVICE], "scope": requested}, None, BASIC, "10.0.0.1"),
    )
    assert response.status == 400, len(response.body)
    assert (
        "an Authorization header carries at most 8192"
        in json.loads(response.body)["error_description"]
    )
    assert "token" not in json.loads(response.body)
    # Half of them fit: the client can ask in two requests.
    half = handle_token_request(
        runtime,
        Authenticator(),
        TokenRequest(
            "GET", {"service": [SERVICE], "scope": requested[:16]}, None, BASIC, "10.0.0.1"
        ),
    )
    assert half.status == 200
