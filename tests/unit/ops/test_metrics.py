"""Metric labels and counts, decided without I/O (`regauth.ops.metrics`); readiness is
test_health.py."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from regauth.gate import GateDecision
from regauth.ops.metrics import Metrics
from regauth.ops.metrics import gate_outcome
from regauth.ops.metrics import scope_labels
from regauth.ops.metrics import token_labels
from regauth.protocol.errors import Answer


@pytest.mark.parametrize(
    "status, record, has_credentials, expected",
    [
        (200, {"grant_type": "get"}, False, ("anonymous", "issued")),
        (200, {"grant_type": "get", "credential": "password"}, True, ("password", "issued")),
        (200, {"grant_type": "password", "credential": "password"}, True, ("password", "issued")),
        (
            200,
            {"grant_type": "get", "credential": "refresh_token (basic)"},
            True,
            ("refresh_token", "issued"),
        ),
        (
            401,
            {"grant_type": "get", "credential": "password"},
            True,
            ("password", "invalid_credentials"),
        ),
        (
            401,
            {"grant_type": "get", "credential": "refresh_token (basic)"},
            True,
            ("refresh_token", "invalid_grant"),
        ),
        (
            400,
            {"grant_type": "refresh_token", "credential": "refresh_token"},
            False,
            ("refresh_token", "invalid_grant"),
        ),
        (400, {"grant_type": "refresh_token"}, False, ("refresh_token", "invalid_request")),
        (
            429,
            {"grant_type": "get", "credential": "password", "rate_limited": "network"},
            True,
            ("password", "rate_limited"),
        ),
        (401, {"grant_type": "get"}, True, ("unknown", "invalid_client")),
        (400, {"grant_type": "get"}, False, ("anonymous", "invalid_request")),
        (405, {}, False, ("anonymous", "invalid_request")),
        (411, {}, True, ("unknown", "invalid_request")),
    ],
)
def test_token_labels(status, record, has_credentials, expected):
    assert token_labels(status, record, has_credentials) == expected


@pytest.mark.parametrize(
    "decision, expected",
    [
        ({"rule": 3, "outcome": "granted"}, ("3", "granted")),
        ({"rule": 1, "outcome": "partial"}, ("1", "partial")),
        ({"rule": 2, "outcome": "denied"}, ("2", "denied")),
        ({"rule": "default deny", "outcome": "default deny"}, ("default", "denied")),
    ],
)
def test_scope_labels(decision, expected):
    assert scope_labels(decision) == expected


def _refusal(status: int, challenge: str | None = None) -> GateDecision:
    headers = {"WWW-Authenticate": challenge} if challenge else {}
    return GateDecision(False, "r", None, None, Answer(status, headers, b""))


@pytest.mark.parametrize(
    "gate, after, expected",
    [
        (GateDecision(True, "ok"), False, "forwarded"),
        (GateDecision(True, "ok"), True, "refused"),
        (None, False, "refused"),
        (_refusal(401, 'Bearer realm="r",service="s"'), False, "challenged"),
        (_refusal(401, 'Bearer realm="r",error="invalid_token"'), False, "invalid_token"),
        (_refusal(401, 'Bearer realm="r",error="insufficient_scope"'), False, "insufficient_scope"),
        (_refusal(400), False, "refused"),
        (_refusal(404), False, "refused"),
    ],
)
def test_gate_outcome(gate, after, expected):
    assert gate_outcome(gate, after) == expected


def _samples(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_a_token_record_counts_its_scopes_failures_and_limits():
    metrics = Metrics()
    record = {
        "grant_type": "get",
        "credential": "password",
        "failed_login_counted": True,
        "decisions": [{"rule": 2, "outcome": "granted"}, {"rule": "default deny"}],
    }
    metrics.token_answered(401, record, True)
    metrics.token_answered(429, {"credential": "password", "rate_limited": "account"}, True)
    samples = _samples(metrics)
    assert samples[("regauth_login_failures_total", frozenset())] == 1
    assert samples[("regauth_rate_limited_total", frozenset())] == 1
    assert (
        samples[
            ("regauth_scope_decisions_total", frozenset({"rule": "2", "result": "granted"}.items()))
        ]
        == 1
    )
    assert (
        samples[
            (
                "regauth_scope_decisions_total",
                frozenset({"rule": "default", "result": "denied"}.items()),
            )
        ]
        == 1
    )


def test_unknown_routes_are_counted_as_none():
    metrics = Metrics()
    metrics.gate_answered("not-a-route", "refused")
    metrics.upstream_answered(None, -1.0)  # a clock step never gives a negative duration
    samples = _samples(metrics)
    assert (
        samples[
            (
                "regauth_gate_requests_total",
                frozenset({"route": "none", "outcome": "refused"}.items()),
            )
        ]
        == 1
    )
    assert (
        samples[
            ("regauth_upstream_request_duration_seconds_sum", frozenset({"route": "none"}.items()))
        ]
        == 0
    )


def test_two_metric_sets_do_not_share_counts():
    first, second = Metrics(), Metrics()
    first.gate_answered("base", "forwarded")
    assert (
        "regauth_gate_requests_total",
        frozenset({"route": "base", "outcome": "forwarded"}.items()),
    ) not in _samples(second)
