"""The exchange record (ops/exchange_record.py): the JSON it writes, pinned key by key; what it
reads back (equal records, version-1 lines from real runs, foreign lines); the rule labels the
tools render from it.

The format tests compare serialized lines, so a renamed key, a moved one, a changed nesting or
a missing `version` fails them: the log is an operator contract (README "The exchange log and
mitmweb")."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from regauth.front import Kind
from regauth.ops.exchange_log import SECRET_KEYS
from regauth.ops.exchange_log import ExchangeLog
from regauth.ops.exchange_record import ABSENT
from regauth.ops.exchange_record import KINDS
from regauth.ops.exchange_record import VERSION
from regauth.ops.exchange_record import AuthRecord
from regauth.ops.exchange_record import BytesRecord
from regauth.ops.exchange_record import ChallengeRecord
from regauth.ops.exchange_record import DecisionRecord
from regauth.ops.exchange_record import ExchangeRecord
from regauth.ops.exchange_record import JwtRecord
from regauth.ops.exchange_record import RouteRecord
from regauth.ops.exchange_record import ScopeDecisionRecord
from regauth.ops.exchange_record import TokenRequestRecord
from regauth.ops.exchange_record import TokenResponseRecord
from regauth.ops.exchange_record import VerifiedTokenRecord
from regauth.policy.model import describe_rule
from regauth.tools.log_records import parse_lines
from regauth.tools.log_records import read_log

Part = (
    AuthRecord
    | TokenRequestRecord
    | TokenResponseRecord
    | ChallengeRecord
    | DecisionRecord
    | VerifiedTokenRecord
)
T0 = dt.datetime(2026, 12, 7, 15, 15, 39, 318000, tzinfo=dt.UTC)


def line(record: ExchangeRecord) -> str:
    """The record as the exchange log writes it (ExchangeLog.write, without redaction)."""
    return json.dumps(record.to_json(), separators=(",", ":"), allow_nan=False)


def expected(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- the format, pinned ---------------------------------------------------------------------------

REGISTRY = ExchangeRecord(
    time=T0,
    flow="97b994cb",
    conversation="1bbcb9877e599681",
    client="10.20.1.5:43966",
    method="POST",
    path="/v2/demo/app/blobs/uploads/",
    http_version="HTTP/1.1",
    kind="registry",
    status=401,
    answered_by="upstream",
    via="10.0.0.2:35281",
    route=RouteRecord(
        kind="upload-start", repository="demo/app", required=("repository:demo/app:pull,push",)
    ),
    auth=AuthRecord(
        scheme="Bearer",
        jwt=JwtRecord(
            header={"alg": "ES256", "kid": "JQYX", "x5c": "<1 certificate(s)>"},
            claims={"iss": "regauth", "sub": "ci", "jti": "5E9h"},
            signature_bytes=64,
        ),
        checked_by="regauth",
    ),
    decision=DecisionRecord(
        forward=True,
        reason="token grants repository:demo/app:pull,push",
        verified_token=VerifiedTokenRecord(issuer="regauth", subject="ci", source="regauth"),
    ),
    upstream_credentials="injected",
    challenge=(
        ChallengeRecord(
            scheme="Bearer",
            realm="https://regauth/v2/token",
            service="svc",
            error="invalid_token",
            scopes=("repository:demo/app:pull,push",),
        ),
    ),
    upstream_challenge=(
        ChallengeRecord(unparsed=True, error="unexpected text at offset 6"),
        ChallengeRecord(
            scheme="Bearer",
            realm="http://registry/token",
            service="svc",
            error="invalid_token",
            error_description="bad key",
            scopes=(),
        ),
    ),
    upstream_refused_token="JQYX",
    bytes=BytesRecord(request=12, response=218),
    upstream_date="Mon, 07 Dec 2026 15:18:03 GMT",
    upstream_ms=4.22,
    body_discarded=True,
    error="[Errno 104] Connection reset by peer",
)

REGISTRY_JSON = expected(
    {
        "version": 2,
        "time": "2026-12-07T15:15:39.318+00:00",
        "flow": "97b994cb",
        "conversation": "1bbcb9877e599681",
        "client": "10.20.1.5:43966",
        "method": "POST",
        "path": "/v2/demo/app/blobs/uploads/",
        "http_version": "HTTP/1.1",
        "kind": "registry",
        "status": 401,
        "answered_by": "upstream",
        "via": "10.0.0.2:35281",
        "repository": "demo/app",
        "route": "upload-start",
        "required": ["repository:demo/app:pull,push"],
        "auth": {
            "scheme": "Bearer",
            "jwt": {
                "header": {"alg": "ES256", "kid": "JQYX", "x5c": "<1 certificate(s)>"},
                "claims": {"iss": "regauth", "sub": "ci", "jti": "5E9h"},
                "signature_bytes": 64,
            },
            "checked_by": "regauth",
        },
        "decision": {
            "forward": True,
            "reason": "token grants repository:demo/app:pull,push",
            "verified_token": {"issuer": "regauth", "subject": "ci", "source": "regauth"},
        },
        "upstream_credentials": "injected",
        "challenge": {
            "scheme": "Bearer",
            "realm": "https://regauth/v2/token",
            "service": "svc",
            "error": "invalid_token",
            "scopes": ["repository:demo/app:pull,push"],
        },
        "upstream_challenge": [
            {"unparsed": True, "error": "unexpected text at offset 6"},
            {
                "scheme": "Bearer",
                "realm": "http://registry/token",
                "service": "svc",
                "error": "invalid_token",
                "error_description": "bad key",
                "scopes": [],
            },
        ],
        "upstream_refused_token": "JQYX",
        "bytes": {"request": 12, "response": 218},
        "upstream_date": "Mon, 07 Dec 2026 15:18:03 GMT",
        "upstream_ms": 4.22,
        "body_discarded": True,
        "error": "[Errno 104] Connection reset by peer",
    }
)

TOKEN = ExchangeRecord(
    time=T0,
    flow="a66c82e5",
    conversation="b5415b76d7d341ae",
    client="127.0.0.1:57440",
    method="POST",
    path="/v2/token",
    http_version="HTTP/2.0",
    kind="token",
    status=200,
    answered_by="regauth",
    auth=AuthRecord(scheme="Basic", username="ci"),
    token_request=TokenRequestRecord(
        method="POST",
        grant_type="password",
        service="svc",
        client_id="docker",
        username="ci",
        requested=("repository:a:pull,push", "repository:b:pull"),
    ),
    token_response=TokenResponseRecord(
        credential="password",
        failed_login_counted=False,
        rate_limited=None,
        account="ci",
        decisions=(
            ScopeDecisionRecord(
                scope="repository:a:pull,push",
                granted=("pull",),
                outcome="partial",
                rule=2,
                line=16,
                comment="CI reads a",
            ),
            ScopeDecisionRecord(scope="repository:b:pull", granted=(), outcome="default deny"),
        ),
        granted=("repository:a:pull",),
        refresh_token_issued=True,
        expires_in=300,
        issued_at="2026-12-07T15:15:39Z",
        jti="uz-tKjKI",
    ),
    bytes=BytesRecord(request=87, response=2798),
)

TOKEN_JSON = expected(
    {
        "version": 2,
        "time": "2026-12-07T15:15:39.318+00:00",
        "flow": "a66c82e5",
        "conversation": "b5415b76d7d341ae",
        "client": "127.0.0.1:57440",
        "method": "POST",
        "path": "/v2/token",
        "http_version": "HTTP/2.0",
        "kind": "token",
        "status": 200,
        "answered_by": "regauth",
        "auth": {"scheme": "Basic", "username": "ci"},
        "token_request": {
            "method": "POST",
            "grant_type": "password",
            "service": "svc",
            "client_id": "docker",
            "username": "ci",
            "requested": ["repository:a:pull,push", "repository:b:pull"],
        },
        "token_response": {
            "credential": "password",
            "failed_login_counted": False,
            "account": "ci",
            "decisions": [
                {
                    "scope": "repository:a:pull,push",
                    "granted": ["pull"],
                    "outcome": "partial",
                    "rule": 2,
                    "line": 16,
                    "comment": "CI reads a",
                },
                {
                    "scope": "repository:b:pull",
                    "granted": [],
                    "outcome": "default deny",
                    "rule": "default deny",
                },
            ],
            "granted": ["repository:a:pull"],
            "refresh_token_issued": True,
            "expires_in": 300,
            "issued_at": "2026-12-07T15:15:39Z",
            "jti": "uz-tKjKI",
        },
        "bytes": {"request": 87, "response": 2798},
    }
)


def test_the_json_of_a_registry_record_is_pinned() -> None:
    assert line(REGISTRY) == REGISTRY_JSON


def test_the_json_of_a_token_record_is_pinned() -> None:
    assert line(TOKEN) == TOKEN_JSON


def test_a_bare_record_writes_the_keys_the_log_has_always_written() -> None:
    """Nothing known but the request: the always-written keys, as null, and nothing else."""
    assert line(ExchangeRecord(kind="other", method="GET", path="/x")) == expected(
        {
            "version": VERSION,
            "time": None,
            "flow": None,
            "conversation": None,
            "client": None,
            "method": "GET",
            "path": "/x",
            "http_version": None,
            "kind": "other",
            "status": None,
            "answered_by": None,
            "bytes": {"request": None, "response": None},
        }
    )


def test_the_version_is_2_and_comes_first() -> None:
    assert VERSION == 2
    assert next(iter(ExchangeRecord().to_json())) == "version"


@pytest.mark.parametrize(
    ("part", "json_value"),
    [
        # auth, as auth_header.describe writes it: each kind of credential
        (
            AuthRecord(scheme="<unparsed>", length=40, checked_by=None),
            {"scheme": "<unparsed>", "length": 40, "checked_by": None},
        ),
        (
            AuthRecord(scheme="Basic", malformed="not base64"),
            {"scheme": "Basic", "malformed": "not base64"},
        ),
        (
            AuthRecord(
                scheme="Bearer",
                malformed="not a compact JWS",
                token_length=7,
                checked_by="registry",
            ),
            {
                "scheme": "Bearer",
                "malformed": "not a compact JWS",
                "token_length": 7,
                "checked_by": "registry",
            },
        ),
        # a token request refused before regauth read `service`, and one naming none
        (TokenRequestRecord(method="GET"), {"method": "GET"}),
        (
            TokenRequestRecord(method="GET", grant_type="get", service=None),
            {"method": "GET", "grant_type": "get", "service": None},
        ),
        (
            TokenResponseRecord(
                credential="password",
                failed_login_counted=False,
                rate_limited="login queue",
                refused="too many logins",
            ),
            {
                "credential": "password",
                "failed_login_counted": False,
                "rate_limited": "login queue",
                "refused": "too many logins",
            },
        ),
        (
            TokenResponseRecord(account="anonymous", decisions=()),
            {"account": "anonymous", "decisions": []},
        ),
        (ChallengeRecord(unparsed=True), {"unparsed": True}),
        (DecisionRecord(reason="method not allowed"), {"reason": "method not allowed"}),
        (
            VerifiedTokenRecord(issuer="i", subject="", source="regauth"),
            {"issuer": "i", "subject": "", "source": "regauth"},
        ),
    ],
)
def test_the_json_of_each_part_is_pinned(part: Part, json_value: dict[str, object]) -> None:
    assert expected(part.to_json()) == expected(json_value)


def test_several_challenges_are_a_list_one_is_an_object() -> None:
    basic = ChallengeRecord(scheme="Basic", realm="r")
    bearer = ChallengeRecord(scheme="Bearer", realm="https://r/v2/token")
    assert ExchangeRecord(challenge=(basic,)).to_json()["challenge"] == {
        "scheme": "Basic",
        "realm": "r",
    }
    assert ExchangeRecord(challenge=(basic, bearer)).to_json()["challenge"] == [
        {"scheme": "Basic", "realm": "r"},
        {"scheme": "Bearer", "realm": "https://r/v2/token"},
    ]
    assert "challenge" not in ExchangeRecord().to_json()


def test_the_record_kinds_are_the_front_doors() -> None:
    assert KINDS == get_args(Kind)


# -- version 1: lines written before the record was typed, copied from real runs ---------------

V1_REGISTRY = (
    '{"time":"2026-12-07T15:18:03.769+00:00","flow":"f159f69a-a395-4eec-a490-7745b177e799",'
    '"conversation":"b552bb7fd36c6213","client":"127.0.0.1:41354","method":"POST",'
    '"path":"/v2/demo/app/blobs/uploads/","http_version":"HTTP/1.1","kind":"registry",'
    '"status":401,"answered_by":"upstream","repository":"demo/app","route":"upload-start",'
    '"required":["repository:demo/app:pull,push"],"auth":{"scheme":"Bearer","jwt":{"header":'
    '{"alg":"ES256","kid":"JQYX:SF6H:7IKZ:WTMN:NP2F:ZDWM:SG6A:O4TH:YXCV:S5IZ:2JSV:QH2A",'
    '"typ":"registry-access+jwt","x5c":"<1 certificate(s)>"},"claims":{"iss":'
    '"regauth-test-issuer","sub":"ci","aud":"regauth-test","exp":1796656803,"nbf":1796656682,'
    '"iat":1796656683,"jti":"5E9hH6xpKjNSxLWOWY79Hw","access":[{"type":"repository","name":'
    '"demo/app","actions":["pull","push"]}]},"signature_bytes":64},"checked_by":"registry"},'
    '"decision":{"forward":true,"reason":"delegated to the upstream registry"},"challenge":'
    '{"scheme":"Bearer","realm":"https://localhost:56137/v2/token","service":"regauth-test",'
    '"error":"invalid_token","scopes":["repository:demo/app:pull,push"]},"upstream_challenge":'
    '[{"scheme":"Bearer","realm":"https://localhost:56137/v2/token","service":"regauth-test",'
    '"error":"invalid_token","scopes":["repository:demo/app:pull,push"]}],'
    '"upstream_refused_token":"JQYX:SF6H:7IKZ:WTMN:NP2F:ZDWM:SG6A:O4TH:YXCV:S5IZ:2JSV:QH2A",'
    '"bytes":{"request":0,"response":218},"upstream_date":"Mon, 07 Dec 2026 15:18:03 GMT",'
    '"upstream_ms":4.22}'
)

V1_TOKEN = (
    '{"time":"2026-12-07T15:19:20.410+00:00","flow":"db199100-0f9d-45c7-b8fd-2c3f8506f279",'
    '"conversation":"62369201b1db780a","client":"10.20.1.5:40000","method":"GET","path":'
    '"/v2/token?service=regauth-test&scope=repository:releases/app:pull,push","http_version":'
    '"HTTP/1.1","kind":"token","status":200,"answered_by":"regauth","via":"127.0.0.1:35281",'
    '"auth":{"scheme":"Basic","username":"ci"},"token_request":{"method":"GET","grant_type":'
    '"get","service":"regauth-test","username":"ci","requested":'
    '["repository:releases/app:pull,push"]},"token_response":{"credential":"password",'
    '"failed_login_counted":false,"account":"ci","decisions":[{"scope":'
    '"repository:releases/app:pull,push","granted":["pull","push"],"outcome":"granted",'
    '"rule":1,"line":21,"comment":"the office network pushes releases"}],"granted":'
    '["repository:releases/app:pull,push"],"refresh_token_issued":false,"expires_in":120,'
    '"issued_at":"2026-12-07T15:19:20Z","jti":"0_LE_GSFNcel0bkP6RnITg"},"bytes":{"request":0,'
    '"response":2845}}'
)

V1_UNPARSED_UPSTREAM = (
    '{"time":"2026-12-07T15:11:01.337+00:00","flow":"d5ebd941-ed00-4715-a759-5e2e9273b6b2",'
    '"conversation":"4240c7352141180b","client":"127.0.0.1:40832","method":"GET","path":'
    '"/v2/ci/app/manifests/1","http_version":"HTTP/1.1","kind":"registry","status":401,'
    '"answered_by":"upstream","repository":"ci/app","route":"manifest","required":'
    '["repository:ci/app:pull"],"decision":{"forward":true,"reason":'
    '"delegated to the upstream registry"},"challenge":{"scheme":"Bearer","realm":'
    '"https://localhost:49359/v2/token","service":"regauth-test","error":"insufficient_scope",'
    '"scopes":["repository:ci/app:pull"]},"upstream_challenge":[{"unparsed":true,"error":'
    '"unexpected text at offset 6"},{"scheme":"BEARER","realm":"http://127.0.0.1:37885/token",'
    '"service":"upstream","error":"insufficient_scope","scopes":["repository:ci/app:pull"]}],'
    '"bytes":{"request":0,"response":36},"upstream_date":"Mon, 07 Dec 2026 15:11:01 GMT",'
    '"upstream_ms":3.52}'
)


@pytest.mark.parametrize("text", [V1_REGISTRY, V1_TOKEN, V1_UNPARSED_UPSTREAM])
def test_a_version_1_line_reads_and_writes_back_the_same_keys(text: str) -> None:
    record = ExchangeRecord.from_json(json.loads(text))
    assert record.version == 1
    assert line(record) == '{"version":1,' + text[1:]  # every key kept, in its place


def test_a_version_1_registry_line_reads_typed() -> None:
    record = ExchangeRecord.from_json(json.loads(V1_REGISTRY))
    assert record.time == dt.datetime(2026, 12, 7, 15, 18, 3, 769000, tzinfo=dt.UTC)
    assert record.route == RouteRecord(
        kind="upload-start", repository="demo/app", required=("repository:demo/app:pull,push",)
    )
    assert record.auth is not None and record.auth.checked_by == "registry"
    assert record.auth.jwt is not None and record.auth.jwt.claims["sub"] == "ci"
    assert record.decision == DecisionRecord(
        forward=True, reason="delegated to the upstream registry"
    )
    [challenge] = record.challenge
    assert challenge.error == "invalid_token" and challenge.is_bearer
    assert (record.upstream_refused_token or "").startswith("JQYX:")
    assert record.upstream_ms == 4.22 and record.bytes == BytesRecord(request=0, response=218)


def test_a_version_1_token_line_reads_typed() -> None:
    record = ExchangeRecord.from_json(json.loads(V1_TOKEN))
    assert record.via == "127.0.0.1:35281"
    assert record.token_request == TokenRequestRecord(
        method="GET",
        grant_type="get",
        service="regauth-test",
        username="ci",
        requested=("repository:releases/app:pull,push",),
    )
    response = record.token_response
    assert response is not None and response.account == "ci"
    assert response.failed_login_counted is False and response.credential == "password"
    [decision] = response.decisions or ()
    assert decision.rule == 1 and decision.line == 21 and decision.granted == ("pull", "push")


def test_a_line_older_than_checked_by_reads_it_from_the_verified_token() -> None:
    obj = json.loads(V1_REGISTRY)
    del obj["auth"]["checked_by"]
    obj["decision"]["verified_token"] = {"issuer": "i", "subject": "ci", "source": "regauth"}
    [entry] = parse_lines([json.dumps(obj)]).entries
    assert entry.record.auth is not None and entry.record.auth.checked_by is ABSENT
    assert entry.checked_by == "regauth" and entry.account == "ci"
    assert "checked_by" not in entry.record.auth.to_json()


# -- reading is tolerant --------------------------------------------------------------------------


def test_unknown_keys_are_ignored_at_every_level() -> None:
    obj = json.loads(V1_TOKEN)
    obj["from_the_future"] = {"x": 1}
    obj["auth"]["mfa"] = "totp"
    obj["token_response"]["decisions"][0]["weight"] = 3
    assert ExchangeRecord.from_json(obj) == ExchangeRecord.from_json(json.loads(V1_TOKEN))


def test_values_of_the_wrong_type_read_as_absent() -> None:
    record = ExchangeRecord.from_json(
        {
            "version": "2",
            "time": 1700000000,
            "status": "200",
            "kind": 3,
            "client": ["a"],
            "route": 5,
            "repository": "r",
            "auth": "Bearer x",
            "decision": [],
            "challenge": "401",
            "upstream_challenge": {"scheme": "Bearer"},
            "bytes": {"request": "12", "response": True},
            "upstream_ms": "fast",
            "body_discarded": "yes",
            "upstream_credentials": True,
            "token_request": {"method": 1, "requested": "repository:a:pull", "service": 7},
            "token_response": {
                "decisions": [{"rule": "3", "granted": "pull"}, "x"],
                "expires_in": 1.5,
                "failed_login_counted": "no",
            },
        }
    )
    assert record == ExchangeRecord(
        version=1,
        token_request=TokenRequestRecord(service=None),
        token_response=TokenResponseRecord(decisions=(ScopeDecisionRecord(),)),
    )


def test_a_boolean_is_not_a_number() -> None:
    record = ExchangeRecord.from_json(
        {"status": True, "bytes": {"request": False}, "upstream_ms": True}
    )
    assert record.status is None and record.bytes.request is None and record.upstream_ms is None


def test_an_unknown_checked_by_reads_as_nobody() -> None:
    record = ExchangeRecord.from_json({"auth": {"scheme": "Bearer", "checked_by": "me"}})
    assert record.auth == AuthRecord(scheme="Bearer", checked_by=None)


@pytest.mark.parametrize("value", [[], "x", 1, None])
def test_only_a_json_object_is_a_record(value: object) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        ExchangeRecord.from_json(value)


def test_foreign_lines_never_stop_the_reader() -> None:
    read = parse_lines(
        [
            '{"kind": "token", "token_response": {"decisions": "all"}}',
            '{"challenge": [1, {"scheme": 2}], "auth": {"jwt": {"claims": []}}}',
            "[1, 2]",
            "not json",
            "",
        ]
    )
    assert read.skipped == 2 and len(read.entries) == 2
    for entry in read.entries:
        assert entry.names == set() and entry.account is None and entry.claim is None


# -- round trip: what is written reads back equal -------------------------------------------------

_text = st.text(st.characters(exclude_categories=()), max_size=12)
_opt_text = st.none() | _text
_opt_int = st.none() | st.integers()
_opt_bool = st.none() | st.booleans()
_strs = st.lists(_text, max_size=3).map(tuple)
_json_key = _text.filter(lambda k: k.lower() not in SECRET_KEYS)  # ExchangeLog drops those
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_key, inner, max_size=3),
    max_leaves=8,
)
_json_object = st.dictionaries(_json_key, _json, max_size=4)
_challenges = st.lists(
    st.builds(
        ChallengeRecord,
        unparsed=st.booleans(),
        scheme=_opt_text,
        realm=_opt_text,
        service=_opt_text,
        error=_opt_text,
        error_description=_opt_text,
        scopes=st.none() | _strs,
    ),
    max_size=3,
).map(tuple)
_decisions = st.lists(
    st.builds(
        ScopeDecisionRecord,
        scope=_opt_text,
        granted=_strs,
        outcome=_opt_text,
        rule=_opt_int,
        line=_opt_int,
        comment=_opt_text,
    ),
    max_size=3,
).map(tuple)

records = st.builds(
    ExchangeRecord,
    version=st.integers(min_value=1, max_value=9),
    time=st.none()
    | st.datetimes(timezones=st.just(dt.UTC)).map(
        lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)
    ),
    flow=_opt_text,
    conversation=_opt_text,
    client=_opt_text,
    method=_opt_text,
    path=_opt_text,
    http_version=_opt_text,
    kind=st.none() | st.sampled_from(KINDS) | _text,
    status=_opt_int,
    answered_by=st.none() | st.sampled_from(["regauth", "upstream"]),
    via=_opt_text,
    route=st.none() | st.builds(RouteRecord, kind=_text, repository=_opt_text, required=_strs),
    auth=st.none()
    | st.builds(
        AuthRecord,
        scheme=_opt_text,
        length=_opt_int,
        username=_opt_text,
        malformed=_opt_text,
        token_length=_opt_int,
        jwt=st.none()
        | st.builds(JwtRecord, header=_json_object, claims=_json_object, signature_bytes=_opt_int),
        checked_by=st.sampled_from(["regauth", "registry", None, ABSENT]),
    ),
    decision=st.none()
    | st.builds(
        DecisionRecord,
        forward=_opt_bool,
        reason=_opt_text,
        verified_token=st.none()
        | st.builds(VerifiedTokenRecord, issuer=_opt_text, subject=_opt_text, source=_opt_text),
    ),
    upstream_credentials=st.sampled_from([None, "injected"]),
    challenge=_challenges,
    upstream_challenge=_challenges,
    upstream_refused_token=_opt_text,
    token_request=st.none()
    | st.builds(
        TokenRequestRecord,
        method=_opt_text,
        grant_type=_opt_text,
        service=st.just(ABSENT) | _opt_text,
        client_id=_opt_text,
        username=_opt_text,
        requested=st.none() | _strs,
    ),
    token_response=st.none()
    | st.builds(
        TokenResponseRecord,
        credential=_opt_text,
        failed_login_counted=_opt_bool,
        rate_limited=_opt_text,
        account=_opt_text,
        decisions=st.none() | _decisions,
        granted=st.none() | _strs,
        refresh_token_issued=_opt_bool,
        expires_in=_opt_int,
        issued_at=_opt_text,
        jti=_opt_text,
        refused=_opt_text,
    ),
    bytes=st.builds(BytesRecord, request=_opt_int, response=_opt_int),
    upstream_date=_opt_text,
    upstream_ms=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    body_discarded=st.booleans(),
    error=_opt_text,
)


@settings(max_examples=300, deadline=None, database=None)
@given(records)
def test_a_record_written_to_the_log_reads_back_equal(record: ExchangeRecord) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exchange.jsonl"
        log = ExchangeLog(path)
        try:
            assert log.write(record.to_json())
        finally:
            log.close()
        [entry] = read_log(path).entries
    assert entry.record == record
    assert entry.record.to_json() == record.to_json()


# -- rule labels ----------------------------------------------------------------------------------


def test_describe_rule_names_a_rule_by_its_parts() -> None:
    assert describe_rule(3, "line 12", "'comment'") == "rule 3 (line 12) 'comment'"
    assert describe_rule(3, "policy.yaml:12") == "rule 3 (policy.yaml:12)"
    assert describe_rule(3) == "rule 3"
    assert describe_rule(None, "line 12", "x") == "default deny"
    assert (
        describe_rule(None, default="default deny (no rule matched)")
        == "default deny (no rule matched)"
    )


def test_a_decisions_rule_label_quotes_the_comment_it_read() -> None:
    decision = ScopeDecisionRecord(rule=2, line=16, comment="it's CI's")
    assert decision.rule_label() == "rule 2 (line 16) 'it\\'s CI\\'s'"
    assert ScopeDecisionRecord(rule=2).rule_label() == "rule 2"
    assert ScopeDecisionRecord().rule_label() == "default deny"
    assert ScopeDecisionRecord().rule_label("nothing matched") == "nothing matched"
