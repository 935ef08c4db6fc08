"""Job tokens at the token endpoint (issue 23): accepted as the password of a login (Basic,
the password grant) and as an identity token (Basic `:TOKEN`, the refresh grant); grants at
most the token's scopes ∩ the policy; refused after expiry or revocation, when its state
cannot be read, with a forged signature, or for another user name; never a refresh token."""

from __future__ import annotations

import base64
import json

import pytest

from regauth.logins.credentials import Authenticator
from regauth.logins.job_tokens import FileJobStore
from regauth.logins.job_tokens import JobStoreUnavailable
from regauth.protocol.scope import parse_scopes
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import FakeClock
from tests.unit.helpers import build_runtime

RULES = """  - comment: a build owns builds/ID
    account: any
    repository: ["builds/${build}", "builds/${build}/**"]
    actions: [pull, push]
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("policy"),
        certs_dir,
        policy_text(password_hashes, extra_rules=RULES),
    )


@pytest.fixture
def store(tmp_path):
    return FileJobStore(tmp_path)


def _job(runtime, subject="regauth:build:b1", scopes=("repository:builds/b1/app:pull,push",),
         lifetime=600):  # fmt: skip
    token, claims = runtime.issuer.issue_job(subject, list(parse_scopes(list(scopes))), lifetime)
    return token, str(claims["jti"])


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(runtime, store, scopes, authorization):
    auth = Authenticator(clock=FakeClock(), job_store=store)
    query = {"service": [SERVICE], "scope": list(scopes)}
    return handle_token_request(
        runtime, auth, TokenRequest("GET", query, None, authorization, "192.0.2.1")
    )


def test_a_job_token_logs_in_its_build_with_at_most_its_scopes(runtime, store):
    token, jti = _job(runtime, scopes=("repository:builds/b1/app:pull",))
    response = _get(
        runtime,
        store,
        ["repository:builds/b1/app:pull,push", "repository:builds/b1/other:pull"],
        _basic("b1", token),
    )
    assert response.status == 200
    body = json.loads(response.body)
    # The policy would grant push and the other repository: the token's cap does not.
    assert body["scope"] == "repository:builds/b1/app:pull"
    assert "refresh_token" not in body
    record = response.record
    assert record["credential"] == "job_token" and record["job_token"] == jti
    assert record["build"] == "b1"
    assert token not in json.dumps(record)


def test_the_policy_at_the_time_of_use_still_decides(runtime, store):
    token, _ = _job(runtime, scopes=("repository:builds/b2/app:pull,push",))
    response = _get(runtime, store, ["repository:builds/b2/app:push"], _basic("b1", token))
    assert response.status == 200
    assert json.loads(response.body)["scope"] == ""  # build b1 does not own builds/b2


@pytest.mark.parametrize("form", ["basic-identity", "password-grant", "refresh-grant"])
def test_every_way_a_client_presents_it(runtime, store, form):
    token, _ = _job(runtime)
    auth = Authenticator(clock=FakeClock(), job_store=store)
    scope = "repository:builds/b1/app:push"
    if form == "basic-identity":
        request = TokenRequest(
            "GET", {"service": [SERVICE], "scope": [scope]}, None, _basic("", token), "192.0.2.1"
        )
    else:
        fields = {"service": [SERVICE], "scope": [scope], "client_id": ["containerd"]}
        if form == "password-grant":
            fields |= {"grant_type": ["password"], "username": ["b1"], "password": [token]}
        else:
            fields |= {"grant_type": ["refresh_token"], "refresh_token": [token]}
        request = TokenRequest("POST", {}, fields, None, "192.0.2.1")
    response = handle_token_request(runtime, auth, request)
    assert response.status == 200, response.body
    assert json.loads(response.body)["scope"] == scope


def test_an_account_job_token(runtime, store):
    token, _ = _job(runtime, "regauth:account:ci", ("repository:cache/x:push",))
    response = _get(runtime, store, ["repository:cache/x:push"], _basic("ci", token))
    assert response.status == 200 and json.loads(response.body)["scope"] == (
        "repository:cache/x:push"
    )
    missing, _ = _job(runtime, "regauth:account:mallory")
    assert _get(runtime, store, [], _basic("mallory", missing)).status == 401


def test_refusals(runtime, store, monkeypatch):
    token, jti = _job(runtime)
    scope = ["repository:builds/b1/app:push"]
    assert _get(runtime, store, scope, _basic("b2", token)).status == 401  # another name
    header, payload, signature = token.split(".")
    forged = ".".join(
        [header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")]
    )
    response = _get(runtime, store, scope, _basic("b1", forged))
    assert response.status == 401 and "signature" in response.body.decode()
    truncated = token[:-10]
    assert _get(runtime, store, scope, _basic("b1", truncated)).status == 401
    store.revoke(jti, 4_000_000_000)
    response = _get(runtime, store, scope, _basic("b1", token))
    assert response.status == 401 and "revoked" in response.body.decode()
    other, _ = _job(runtime)

    def unavailable(jti):
        raise JobStoreUnavailable("down")

    monkeypatch.setattr(store, "is_revoked", unavailable)
    response = _get(runtime, store, scope, _basic("b1", other))
    assert response.status == 401 and "cannot be read" in response.body.decode()


def test_expired(runtime, store, monkeypatch):
    import time

    monkeypatch.setattr(runtime.issuer, "clock", lambda: time.time() - 3600)  # issued an hour ago
    token, _ = _job(runtime, lifetime=60)
    monkeypatch.undo()
    response = _get(runtime, store, ["repository:builds/b1/app:push"], _basic("b1", token))
    assert response.status == 401 and "expired" in response.body.decode()


def test_a_job_token_is_never_an_access_token(runtime):
    token, _ = _job(runtime)
    from regauth.tokens.claims import InvalidToken

    with pytest.raises(InvalidToken):
        runtime.verifier.verify_access(token)
    with pytest.raises(ValueError):
        runtime.issuer.issue_job("regauth:build:b1", [], 25 * 3600)
