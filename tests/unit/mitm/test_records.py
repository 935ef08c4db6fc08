"""The writer of the exchange record (mitm/records.py): each part it builds from the deciders'
objects writes exactly what those objects render for themselves, so the log and the other
readers of those renderings (`token_service.TokenResponse.record` for metrics, `GateDecision.
record`, `Challenge.as_record`, `auth_header.describe`) cannot drift apart. The whole record,
flow by flow, is checked in test_recorder.py."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from regauth.front import Forward
from regauth.front import Respond
from regauth.gate import GateDecision
from regauth.mitm.flow_state import FlowState
from regauth.mitm.records import _decision
from regauth.mitm.records import _sent_challenges
from regauth.mitm.records import _token_request
from regauth.mitm.records import _token_response
from regauth.ops.exchange_record import AuthRecord
from regauth.ops.exchange_record import ChallengeRecord
from regauth.policy.model import Rule
from regauth.policy.model import ScopeDecision
from regauth.protocol.auth_header import describe
from regauth.protocol.challenge import parse_challenges
from regauth.protocol.errors import Answer
from regauth.protocol.rewrite import rewrite_challenges
from regauth.protocol.scope import parse_scope
from regauth.token_trace import TokenTrace
from regauth.tokens.verify import VerifiedToken


def same_json(a: object, b: object) -> bool:
    """Equal as the log writes them: values and key order."""
    return json.dumps(a) == json.dumps(b)


def _rule(index: int, comment: str, actions: tuple[str, ...]) -> Rule:
    return Rule(
        index=index,
        line=index * 4,
        comment=comment,
        accounts=("any",),
        groups=(),
        labels={},
        resource_type="repository",
        repositories=(),
        networks=(),
        actions=actions,
    )


_scope_decisions = st.sampled_from(
    [
        ScopeDecision(
            parse_scope("repository:a:pull,push"), ("pull",), _rule(2, "reads", ("pull",))
        ),
        ScopeDecision(parse_scope("repository:a:pull"), ("pull",), _rule(1, "", ("pull", "push"))),
        ScopeDecision(parse_scope("repository:b:push"), (), _rule(3, "no pushing", ())),
        ScopeDecision(parse_scope("repository:c:pull"), (), None),
    ]
)
_opt_text = st.none() | st.text(max_size=8)
traces = st.builds(
    TokenTrace,
    method=st.sampled_from(["GET", "POST"]),
    grant_type=st.sampled_from([None, "get", "password", "refresh_token"]),
    client_id=_opt_text,
    service=_opt_text,
    service_given=st.booleans(),
    requested=st.none() | st.lists(st.text(max_size=8), max_size=2),
    username=_opt_text,
    credential=st.sampled_from([None, "password", "refresh_token", "refresh_token (basic)"]),
    failed_login_counted=st.none() | st.booleans(),
    rate_limited=_opt_text,
    account=_opt_text,
    decisions=st.lists(_scope_decisions, max_size=3),
    decided=st.booleans(),
    granted=st.none() | st.lists(st.text(max_size=8), max_size=2),
    refresh_token_issued=st.none() | st.booleans(),
    expires_in=st.none() | st.integers(0, 86400),
    issued_at=_opt_text,
    jti=_opt_text,
    refused=_opt_text,
)


@settings(max_examples=200, deadline=None, database=None)
@given(traces)
def test_the_token_parts_write_what_the_token_trace_renders(trace: TokenTrace) -> None:
    assert same_json(_token_request(trace).to_json(), trace.request_record())
    assert same_json(_token_response(trace).to_json(), trace.response_record())


_header = (
    base64.urlsafe_b64encode(json.dumps({"alg": "ES256", "kid": "K", "x5c": ["a", "b"]}).encode())
    .rstrip(b"=")
    .decode()
)
_claims = (
    base64.urlsafe_b64encode(json.dumps({"sub": "ci", "jti": "j", "nested": {"a": [1]}}).encode())
    .rstrip(b"=")
    .decode()
)


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"ci:secret").decode(),
        "Basic !!!",
        f"Bearer {_header}.{_claims}.c2ln",
        "Bearer not-a-jwt",
        "Digest x",
        "(weird) header",
    ],
)
def test_the_auth_part_writes_what_describe_logged(header: str) -> None:
    logged = describe(header)
    assert logged is not None
    assert same_json(AuthRecord.from_json(logged).to_json(), logged)


@pytest.mark.parametrize(
    "value",
    [
        'Bearer realm="https://r/v2/token",service="svc",scope="repository:a:pull push"',
        'Bearer realm="r",error="insufficient_scope",error_description="x",scope=""',
        'Basic realm="registry", Bearer realm="r"',
        "Negotiate abc==",
    ],
)
def test_the_challenge_parts_write_what_the_challenge_renders(value: str) -> None:
    assert [c.to_json() for c in _sent_challenges([value])] == [
        c.as_record() for c in parse_challenges(value)
    ]
    _, upstream = rewrite_challenges([value, "Bearer ,,="], "https://regauth/v2/token", "svc")
    assert upstream[-1]["unparsed"] is True  # with the parse error as `error`
    for record in upstream:
        assert same_json(ChallengeRecord.from_json(record).to_json(), record)


def test_a_challenge_that_does_not_parse_is_written_unparsed() -> None:
    assert [c.to_json() for c in _sent_challenges(["Bearer ,,="])] == [{"unparsed": True}]


_TOKEN = VerifiedToken(
    issuer="i", subject="ci", audience="svc", jti="j", expires_at=0, grants=(), source="regauth"
)
_ANSWER = Answer(400)


_VERIFIED = {"issuer": "i", "subject": "ci", "source": "regauth"}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            FlowState(
                0.0,
                decision=Forward("registry", GateDecision(True, "token grants x", None, _TOKEN)),
            ),
            {"forward": True, "reason": "token grants x", "verified_token": _VERIFIED},
        ),
        (
            FlowState(
                0.0,
                decision=Forward("registry", GateDecision(True, "delegated")),
                reason_override="upstream refused regauth's credentials",
            ),
            {"forward": False, "reason": "upstream refused regauth's credentials"},
        ),
        # Answered locally, whatever the gate alone would have said (a framing refusal).
        (
            FlowState(
                0.0,
                decision=Respond(
                    _ANSWER,
                    "registry",
                    "framing",
                    gate=GateDecision(True, "token grants x", None, _TOKEN),
                ),
            ),
            {"forward": False, "reason": "framing", "verified_token": _VERIFIED},
        ),
        (
            FlowState(
                0.0,
                decision=Respond(
                    _ANSWER, "registry", "no token", gate=GateDecision(False, "no token")
                ),
            ),
            {"forward": False, "reason": "no token"},
        ),
    ],
)
def test_the_decision_part_writes_what_the_gate_decided(
    state: FlowState, expected: dict[str, object]
) -> None:
    written = _decision(state)
    assert written is not None
    assert written.to_json() == expected


def test_a_request_no_gate_decided_is_written_with_its_reason_only() -> None:
    state = FlowState(0.0, decision=Respond(Answer(405), "token", "method not allowed"))
    written = _decision(state)
    assert written is not None and written.to_json() == {"reason": "method not allowed"}
    assert _decision(FlowState(0.0)) is None
