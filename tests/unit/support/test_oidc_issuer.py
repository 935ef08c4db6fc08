"""The local OIDC issuer of the federation tests (tests/support/oidc_issuer.py), checked with
plain clients: its discovery document and JWK Set over verified TLS, tokens pyjwt verifies with
the published keys, the claim shapes of GitHub Actions, GitLab CI and Kubernetes, key rotation,
every hostile JWKS mode, and a stop that leaves no thread and no open port behind."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.support.oidc_issuer import DEFAULT_AUDIENCE
from tests.support.oidc_issuer import HUGE_BYTES
from tests.support.oidc_issuer import OidcIssuer
from tests.support.oidc_issuer import TestCa
from tests.support.oidc_issuer import github_actions
from tests.support.oidc_issuer import gitlab_ci
from tests.support.oidc_issuer import kubernetes

NOW = 1_900_000_000  # fixed: tokens are checked against it, never against the wall clock
NO_TIME_CHECKS = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer(clock=lambda: NOW) as started:
        yield started


def get(
    issuer: OidcIssuer, path: str, port: int | None = None, timeout: float = 5
) -> tuple[int, http.client.HTTPResponse, bytes]:
    """(status, response, body) of a GET over TLS verified against the issuer's CA."""
    context = ssl.create_default_context(cafile=str(issuer.ca_path))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port or issuer.port, context=context, timeout=timeout
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


def fetch_jwks(issuer: OidcIssuer) -> jwt.PyJWKSet:
    status, _, body = get(issuer, "/jwks")
    assert status == 200
    return jwt.PyJWKSet.from_json(body.decode())


def verify(issuer: OidcIssuer, token: str, **options: Any) -> dict[str, Any]:
    """pyjwt's verification with the key the token's kid names in the published JWKS."""
    keys = fetch_jwks(issuer)
    header = jwt.get_unverified_header(token)
    checks: Any = {**NO_TIME_CHECKS, **options}
    return jwt.decode(
        token,
        keys[header["kid"]].key,
        algorithms=["RS256", "ES256"],
        audience=options.pop("audience", DEFAULT_AUDIENCE),
        issuer=issuer.issuer,
        options=checks,
    )


# -- discovery and keys ---------------------------------------------------------------------------


def test_discovery_document_over_tls_verified_by_ca_path(issuer: OidcIssuer) -> None:
    status, response, body = get(issuer, "/.well-known/openid-configuration")
    doc = json.loads(body)
    assert status == 200 and response.getheader("Content-Type") == "application/json"
    assert doc["issuer"] == issuer.issuer == f"https://127.0.0.1:{issuer.port}"
    assert doc["jwks_uri"] == f"https://127.0.0.1:{issuer.port}/jwks"
    assert set(doc["id_token_signing_alg_values_supported"]) == {"RS256", "ES256"}
    assert "public" in doc["subject_types_supported"]
    assert issuer.ca_path.read_bytes() == issuer.ca_pem
    assert issuer.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_the_certificate_is_not_trusted_without_the_test_ca(issuer: OidcIssuer) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", issuer.port, context=ssl.create_default_context(), timeout=5
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/jwks")
    conn.close()


def test_discovery_overrides_and_an_issuer_below_a_path() -> None:
    with OidcIssuer(issuer_path="/realms/ci") as issuer:
        issuer.discovery_overrides["jwks_uri"] = "https://elsewhere.invalid/keys"
        status, _, body = get(issuer, "/realms/ci/.well-known/openid-configuration")
        doc = json.loads(body)
        assert status == 200
        assert doc["issuer"] == f"https://127.0.0.1:{issuer.port}/realms/ci"
        assert doc["jwks_uri"] == "https://elsewhere.invalid/keys"
        assert get(issuer, "/realms/ci/jwks")[0] == 200
        assert get(issuer, "/jwks")[0] == 404


def test_jwks_parses_with_pyjwt_one_rs256_and_one_es256_key(issuer: OidcIssuer) -> None:
    keys = fetch_jwks(issuer)
    assert sorted(k.algorithm_name for k in keys.keys) == ["ES256", "RS256"]
    assert sorted(str(k.key_id) for k in keys.keys) == sorted(issuer.kids)
    status, _, body = get(issuer, "/jwks")
    for jwk in json.loads(body)["keys"]:
        assert jwk["use"] == "sig" and jwk["kid"]
        assert "d" not in jwk and "p" not in jwk  # public halves only


# -- minting -----------------------------------------------------------------------------------


def test_a_minted_token_verifies_with_the_jwks_key(issuer: OidcIssuer) -> None:
    token = issuer.mint({"sub": "s", "aud": DEFAULT_AUDIENCE}, lifetime=120)
    claims = verify(issuer, token)
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": issuer.current_kid,
    }
    assert claims["iss"] == issuer.issuer
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (NOW, NOW, NOW + 120)
    assert len(claims["jti"]) == 32
    assert claims["jti"] != verify(issuer, issuer.mint({"aud": DEFAULT_AUDIENCE}))["jti"]


def test_es256_tokens_and_time_claims_that_verify_against_the_real_clock(
    issuer: OidcIssuer,
) -> None:
    token = issuer.mint({"aud": DEFAULT_AUDIENCE}, alg="ES256", now=time.time())
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    # With every time check on: now= overrides the issuer's fixed clock.
    verify(issuer, token, verify_exp=True, verify_nbf=True, verify_iat=True)


def test_claims_override_the_defaults_and_none_leaves_one_out(issuer: OidcIssuer) -> None:
    token = issuer.mint({"aud": DEFAULT_AUDIENCE, "exp": None, "iss": "https://other"})
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "exp" not in claims and claims["iss"] == "https://other"


def test_headers_are_added_or_removed(issuer: OidcIssuer) -> None:
    token = issuer.mint({}, headers={"kid": None, "jku": "https://evil.invalid/jwks"})
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "typ": "JWT",
        "jku": "https://evil.invalid/jwks",
    }


def test_alg_none_gives_an_empty_signature(issuer: OidcIssuer) -> None:
    token = issuer.mint({"aud": DEFAULT_AUDIENCE}, alg="none")
    assert token.endswith(".")
    assert jwt.get_unverified_header(token)["alg"] == "none"


def test_hs256_signed_with_the_public_key_pem(issuer: OidcIssuer) -> None:
    secret = issuer.key().public_pem()
    token = issuer.mint({"aud": DEFAULT_AUDIENCE}, alg="HS256", key=secret, kid=issuer.current_kid)
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    assert jwt.get_unverified_header(token)["kid"] == issuer.current_kid


def test_a_payload_given_as_bytes_is_used_verbatim(issuer: OidcIssuer) -> None:
    nested = b'{"a":' * 500 + b"1" + b"}" * 500
    token = issuer.mint(nested)
    payload = token.split(".")[1]
    assert base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) == nested


def test_mint_refuses_what_it_cannot_sign(issuer: OidcIssuer) -> None:
    with pytest.raises(ValueError):
        issuer.mint({}, alg="HS256")  # no secret
    with pytest.raises(ValueError):
        issuer.mint({}, key=issuer.private_key())  # no alg for a foreign key


def test_a_second_issuer_is_independent_and_its_key_fails_at_the_first(
    issuer: OidcIssuer,
) -> None:
    with OidcIssuer(clock=lambda: NOW) as other:
        assert other.port != issuer.port and other.ca_pem != issuer.ca_pem
        assert set(other.kids).isdisjoint(issuer.kids)
        forged = issuer.mint(
            {"aud": DEFAULT_AUDIENCE},
            key=other.private_key(),
            alg="RS256",
            kid=issuer.current_kid,
        )
        with pytest.raises(jwt.InvalidSignatureError):
            verify(issuer, forged)
        verify(other, other.mint({"aud": DEFAULT_AUDIENCE}))
        # Each one's CA verifies only its own certificate.
        with pytest.raises(ssl.SSLCertVerificationError):
            get(issuer, "/jwks", port=other.port)


def test_issuers_can_share_one_ca(tmp_path: Any) -> None:
    ca = TestCa(tmp_path / "ca")
    with OidcIssuer(tmp_path / "a", ca=ca) as a, OidcIssuer(tmp_path / "b", ca=ca) as b:
        assert a.ca_path == b.ca_path == ca.path
        assert get(a, "/jwks")[0] == get(b, "/jwks")[0] == 200


# -- claim shapes --------------------------------------------------------------------------------


def test_github_actions_claims(issuer: OidcIssuer) -> None:
    claims = verify(issuer, issuer.mint(github_actions()))
    assert claims["sub"] == "repo:acme/app:ref:refs/heads/main"
    assert claims["aud"] == DEFAULT_AUDIENCE
    assert claims["repository"] == "acme/app" and claims["repository_owner"] == "acme"
    assert (claims["ref"], claims["ref_type"]) == ("refs/heads/main", "branch")
    assert claims["job_workflow_ref"] == "acme/app/.github/workflows/ci.yml@refs/heads/main"
    assert claims["runner_environment"] == "github-hosted"
    for name in ("repository_id", "repository_owner_id", "run_id", "actor_id"):
        assert claims[name].isdigit()
    assert len(claims["sha"]) == 40
    for name in ("workflow", "actor", "event_name"):
        assert claims[name]
    assert "environment" not in claims


def test_github_actions_sub_formats_and_overrides() -> None:
    assert github_actions(environment="prod")["sub"] == "repo:acme/app:environment:prod"
    assert github_actions(event_name="pull_request")["sub"] == "repo:acme/app:pull_request"
    tag = github_actions("acme/lib", "refs/tags/v1.2")
    assert (tag["sub"], tag["ref_type"]) == ("repo:acme/lib:ref:refs/tags/v1.2", "tag")
    assert github_actions("a/x")["repository_id"] != github_actions("a/y")["repository_id"]
    changed = github_actions(audience="aud-x", actor="mallory", run_id=None)
    assert changed["aud"] == "aud-x" and changed["actor"] == "mallory"
    assert "run_id" not in changed


def test_gitlab_ci_claims(issuer: OidcIssuer) -> None:
    claims = verify(issuer, issuer.mint(gitlab_ci()))
    assert claims["sub"] == "project_path:platform/app:ref_type:branch:ref:main"
    assert claims["namespace_path"] == "platform" and claims["project_path"] == "platform/app"
    assert (claims["ref"], claims["ref_type"], claims["ref_protected"]) == (
        "main",
        "branch",
        "true",
    )
    assert claims["pipeline_source"] == "push" and claims["user_login"] == "alice"
    assert claims["ref_path"] == "refs/heads/main"
    tag = gitlab_ci("platform/sub/lib", "v2", ref_type="tag", ref_protected=False)
    assert tag["sub"] == "project_path:platform/sub/lib:ref_type:tag:ref:v2"
    assert (tag["namespace_path"], tag["ref_protected"]) == ("platform/sub", "false")


def test_kubernetes_claims(issuer: OidcIssuer) -> None:
    claims = verify(issuer, issuer.mint(kubernetes()))
    assert claims["sub"] == "system:serviceaccount:ci:builder"
    assert claims["aud"] == [DEFAULT_AUDIENCE]
    nested = claims["kubernetes.io"]
    assert nested["namespace"] == "ci"
    assert nested["serviceaccount"]["name"] == "builder" and nested["serviceaccount"]["uid"]
    assert nested["pod"]["name"] and nested["pod"]["uid"]


# -- rotation ------------------------------------------------------------------------------------


def test_rotate_publishes_a_new_current_key_and_retire_withdraws_the_old(
    issuer: OidcIssuer,
) -> None:
    old = issuer.current_kid
    old_token = issuer.mint({"aud": DEFAULT_AUDIENCE})
    new = issuer.rotate()
    assert issuer.current_kid == new != old
    assert new in [k.key_id for k in fetch_jwks(issuer).keys]
    new_token = issuer.mint({"aud": DEFAULT_AUDIENCE})
    assert jwt.get_unverified_header(new_token)["kid"] == new
    verify(issuer, new_token)
    verify(issuer, old_token)  # both published during the overlap
    issuer.retire(old)
    assert old not in [k.key_id for k in fetch_jwks(issuer).keys]
    with pytest.raises(KeyError):
        verify(issuer, old_token)
    with pytest.raises(ValueError):
        issuer.retire(new)  # the current key stays until another replaces it


def test_rotate_to_es256_and_mint_by_kid(issuer: OidcIssuer) -> None:
    first_rs = issuer.current_kid
    es = issuer.rotate("ES256", kid="es-2")
    assert es == "es-2" and jwt.get_unverified_header(issuer.mint({}))["alg"] == "ES256"
    by_kid = issuer.mint({"aud": DEFAULT_AUDIENCE}, kid=first_rs)
    assert jwt.get_unverified_header(by_kid) == {"alg": "RS256", "typ": "JWT", "kid": first_rs}
    verify(issuer, by_kid)


# -- hostile modes -------------------------------------------------------------------------------


def test_unknown_mode_is_refused(issuer: OidcIssuer) -> None:
    with pytest.raises(ValueError):
        issuer.jwks_mode = "slow"  # type: ignore[assignment]


def test_hang_accepts_and_never_answers(issuer: OidcIssuer) -> None:
    issuer.jwks_mode = "hang"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        get(issuer, "/jwks", timeout=0.5)
    assert time.monotonic() - started < 3
    assert issuer.requests["/jwks"] == 1  # the request was read, then left unanswered
    assert get(issuer, "/.well-known/openid-configuration")[0] == 200  # only the JWKS hangs


def test_trickle_sends_a_valid_jwks_too_slowly_for_a_whole_fetch_deadline(
    issuer: OidcIssuer,
) -> None:
    issuer.trickle_interval = 0.1
    issuer.jwks_mode = "trickle"
    context = ssl.create_default_context(cafile=str(issuer.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", issuer.port, context=context, timeout=1)
    try:
        conn.request("GET", "/jwks")
        response = conn.getresponse()
        length = int(response.getheader("Content-Length") or 0)
        started = time.monotonic()
        received = response.read(5)  # each byte well within the 1 s read timeout
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    assert response.status == 200 and length == len(json.dumps(issuer.jwks()))
    assert received == b'{"key' and 0.4 <= elapsed < 3, elapsed


def test_redirect_points_to_another_port_that_counts_who_followed(issuer: OidcIssuer) -> None:
    issuer.jwks_mode = "redirect"
    status, response, _ = get(issuer, "/jwks")
    location = response.getheader("Location")
    assert status == 302 and location == issuer.redirect_url
    port = int(location.split(":")[2].split("/")[0])
    assert port != issuer.port
    assert issuer.redirected["/jwks"] == 0
    status, _, body = get(issuer, "/jwks", port=port)
    assert status == 200 and json.loads(body) == issuer.jwks()  # a follower would succeed
    assert issuer.redirected["/jwks"] == 1


def test_garbage_is_200_and_not_json(issuer: OidcIssuer) -> None:
    issuer.jwks_mode = "garbage"
    status, response, body = get(issuer, "/jwks")
    assert status == 200 and response.getheader("Content-Type") == "application/json"
    with pytest.raises(ValueError):
        json.loads(body)


def test_error_is_500(issuer: OidcIssuer) -> None:
    issuer.jwks_mode = "error"
    assert get(issuer, "/jwks")[0] == 500


def test_huge_streams_50_mib_without_holding_them(issuer: OidcIssuer) -> None:
    issuer.jwks_mode = "huge"
    context = ssl.create_default_context(cafile=str(issuer.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", issuer.port, context=context, timeout=10)
    tracemalloc.start()
    try:
        conn.request("GET", "/jwks")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") is None
        first = response.read(64 * 1024)
        total = len(first)
        while chunk := response.read(64 * 1024):
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        conn.close()
    assert first.startswith(b'{"keys":[{"kty"')
    assert total == HUGE_BYTES == 50 * 1024 * 1024
    assert peak < 8 * 1024 * 1024  # bytes allocated at once, server and client together


def test_huge_can_declare_its_length_and_a_client_may_hang_up(issuer: OidcIssuer) -> None:
    issuer.jwks_mode = "huge"
    issuer.huge_content_length = True
    context = ssl.create_default_context(cafile=str(issuer.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", issuer.port, context=context, timeout=5)
    conn.request("GET", "/jwks")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == str(50 * 1024 * 1024)
    response.read(1000)
    conn.close()  # mid-body: the server's thread must not mind
    issuer.jwks_mode = "ok"
    assert get(issuer, "/jwks")[0] == 200


def test_down_refuses_connections_and_comes_back_on_the_same_port(issuer: OidcIssuer) -> None:
    port = issuer.port
    issuer.jwks_mode = "down"
    with pytest.raises(ConnectionRefusedError):
        get(issuer, "/jwks", timeout=2)
    with pytest.raises(ConnectionRefusedError):
        get(issuer, "/.well-known/openid-configuration", timeout=2)
    issuer.jwks_mode = "ok"
    assert issuer.port == port
    assert get(issuer, "/jwks")[0] == 200


def test_requests_are_counted_per_path(issuer: OidcIssuer) -> None:
    for _ in range(3):
        get(issuer, "/jwks")
    get(issuer, "/.well-known/openid-configuration")
    get(issuer, "/nothing")
    issuer.jwks_mode = "error"
    get(issuer, "/jwks")
    assert issuer.requests == {
        "/jwks": 4,
        "/.well-known/openid-configuration": 1,
        "/nothing": 1,
    }


# -- stopping ------------------------------------------------------------------------------------


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stop_in_hang_mode_ends_every_thread_and_closes_every_port() -> None:
    before = set(threading.enumerate())
    issuer = OidcIssuer().start()
    issuer.jwks_mode = "redirect"
    redirect_port = int(issuer.redirect_url.split(":")[2].split("/")[0])
    issuer.jwks_mode = "hang"
    blocked: list[BaseException] = []

    def client() -> None:
        try:
            get(issuer, "/jwks", timeout=30)
        except BaseException as e:  # noqa: B036 - whatever ends it, the test wants to know
            blocked.append(e)

    waiting = threading.Thread(target=client)
    waiting.start()
    deadline = time.monotonic() + 5
    while issuer.requests["/jwks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert issuer.requests["/jwks"] == 1 and waiting.is_alive()
    # A connection that never even says hello must not hold stop() either.
    silent = socket.create_connection(("127.0.0.1", issuer.port))
    while issuer.open_connections < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert issuer.open_connections == 2
    started = time.monotonic()
    issuer.stop()
    stopped_in = time.monotonic() - started
    waiting.join(5)
    silent.close()
    assert stopped_in < 2, stopped_in
    assert not waiting.is_alive() and blocked  # the client was cut, not answered
    assert set(threading.enumerate()) - before == set()  # no thread of its own left
    assert refused(issuer.port) and refused(redirect_port)
    assert not issuer.directory.exists()  # its own temporary directory is gone
    issuer.stop()  # idempotent


def test_stop_while_down_and_with_a_huge_answer_in_flight() -> None:
    before = set(threading.enumerate())
    with OidcIssuer() as issuer:
        issuer.jwks_mode = "huge"
        context = ssl.create_default_context(cafile=str(issuer.ca_path))
        conn = http.client.HTTPSConnection("127.0.0.1", issuer.port, context=context, timeout=5)
        conn.request("GET", "/jwks")
        # Kept referenced: a dropped response closes the client's socket.
        response = conn.getresponse()
        response.read(10)
        issuer.jwks_mode = "down"
        time.sleep(0.5)  # time to fill the socket buffers: the server now blocks in a write
        started = time.monotonic()
    stopped_in = time.monotonic() - started
    response.close()
    conn.close()
    assert stopped_in < 2, stopped_in  # the blocked write was cut, not left to time out
    assert set(threading.enumerate()) - before == set()  # no thread of its own left
    assert refused(issuer.port)
