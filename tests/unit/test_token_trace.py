"""What the token service did with one request (`regauth.token_trace.TokenTrace`): the record
keeps a stable key order, leaves out what was not reached, and splits into the exchange log's
`token_request` and `token_response` halves without losing or repeating a key."""

from __future__ import annotations

from regauth.policy.model import ScopeDecision
from regauth.protocol.scope import parse_scope
from regauth.token_trace import TokenTrace


def test_a_request_refused_at_once_records_only_what_was_reached():
    trace = TokenTrace("GET", refused="unsupported grant_type")
    assert trace.as_record() == {"method": "GET", "refused": "unsupported grant_type"}
    assert trace.request_record() == {"method": "GET"}
    assert trace.response_record() == {"refused": "unsupported grant_type"}


def test_service_is_recorded_once_read_even_when_none_was_given():
    trace = TokenTrace("GET", grant_type="get")
    assert "service" not in trace.as_record()
    trace.service_given = True
    assert trace.as_record() == {"method": "GET", "grant_type": "get", "service": None}


def test_a_full_trace_in_order_and_split_in_two():
    scope = parse_scope("repository:a/b:pull,push")
    trace = TokenTrace(
        "POST",
        grant_type="password",
        client_id="docker",
        service="svc",
        service_given=True,
        requested=[str(scope)],
        username="ci",
        credential="password",
        failed_login_counted=False,
        account="ci",
        decisions=[ScopeDecision(scope, (), None)],
        decided=True,
        granted=[],
        refresh_token_issued=True,
        expires_in=300,
        issued_at="2026-01-01T00:00:00Z",
        jti="j1",
    )
    record = trace.as_record()
    assert list(record) == [
        "method",
        "grant_type",
        "client_id",
        "service",
        "requested",
        "username",
        "credential",
        "failed_login_counted",
        "account",
        "decisions",
        "granted",
        "refresh_token_issued",
        "expires_in",
        "issued_at",
        "jti",
    ]
    assert record["decisions"] == [
        {
            "scope": "repository:a/b:pull,push",
            "granted": [],
            "outcome": "default deny",
            "rule": "default deny",
        }
    ]
    request, response = trace.request_record(), trace.response_record()
    assert request == {
        "method": "POST",
        "grant_type": "password",
        "service": "svc",
        "client_id": "docker",
        "username": "ci",
        "requested": ["repository:a/b:pull,push"],
    }
    assert set(request) | set(response) == set(record) and not set(request) & set(response)


def test_decided_with_no_scope_records_an_empty_list():
    assert TokenTrace("GET").as_record() == {"method": "GET"}
    assert TokenTrace("GET", decided=True).as_record() == {"method": "GET", "decisions": []}
