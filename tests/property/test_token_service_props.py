"""Token requests (token_service.py): whatever GET query, POST form and Authorization a client
sends, handle_token_request answers (200, or a 4xx with an OAuth error), never raises, and the
body, headers and log record are well formed.

Queries are also fed as raw strings through routes.parse_query, as the adapter does.
"""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regauth.logins.credentials import Authenticator
from regauth.protocol.routes import RouteError
from regauth.protocol.routes import parse_query
from regauth.runtime import Runtime
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from tests.property.strategies import any_text
from tests.property.strategies import b64url
from tests.property.strategies import nested_json
from tests.property.strategies import text_from
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import BUILD_ID
from tests.unit.helpers import build_runtime

KEYS = [
    "service",
    "scope",
    "account",
    "client_id",
    "offline_token",
    "grant_type",
    "refresh_token",
    "username",
    "password",
    "access_type",
]
SCOPES = [
    "repository:public/app:pull",
    "repository:demo/x:pull,push",
    "registry:catalog:*",
    f"repository:builds/{BUILD_ID}:push",
    "repository:Bad:pull",
    "repository:a:pull " * 40,
]
values = st.one_of(
    st.sampled_from(
        [
            SERVICE,
            "other",
            "",
            "password",
            "refresh_token",
            "true",
            "offline",
            "ci",
            PASSWORDS["ci"],
            *SCOPES,
        ]
    ),
    nested_json().map(lambda j: f"{b64url(b'{"alg":"ES256"}')}.{b64url(j)}.x"),
    text_from(string.ascii_letters + ":/,* ", 60),
    any_text,
)
params = st.dictionaries(
    st.sampled_from(KEYS) | any_text, st.lists(values, min_size=1, max_size=3), max_size=6
)
authorizations = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(list(PASSWORDS) + ["nobody", ""]),
        st.sampled_from([*PASSWORDS.values(), "wrong"]) | any_text,
    ).map(
        lambda up: (
            "Basic "
            + base64.b64encode(f"{up[0]}:{up[1]}".encode("utf-8", "surrogatepass")).decode()
        )
    ),
    st.tuples(
        st.sampled_from(["Basic ", "Bearer ", "basic ", ""]),
        text_from(string.ascii_letters + "=+/.", 80) | any_text,
    ).map("".join),
)
requests = st.builds(
    TokenRequest,
    method=st.sampled_from(["GET", "POST", "PUT", "get"]),
    query=params,
    form=st.none() | params,
    authorization=authorizations,
    client_ip=st.sampled_from(["192.0.2.10", "10.0.0.1", "", "::1"]),
)


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory, certs_dir: Path, password_hashes: dict[str, str]
) -> Runtime:
    return build_runtime(tmp_path_factory.mktemp("policy"), certs_dir, policy_text(password_hashes))


@pytest.fixture(scope="module")
def authenticator() -> Authenticator:
    return Authenticator()


def _check(
    response_status: int, body: bytes, headers: dict[str, str], record: dict[str, object]
) -> None:
    assert response_status == 200 or response_status in (400, 401, 405, 429), response_status
    parsed = json.loads(body, parse_constant=lambda c: pytest.fail(c))
    if response_status == 200:
        assert parsed["token"] == parsed["access_token"]
    else:
        assert parsed["error"] in (
            "invalid_request",
            "invalid_grant",
            "invalid_scope",
            "invalid_client",
            "unsupported_grant_type",
            "slow_down",
        )
    for name, value in headers.items():
        assert value.isprintable() and value.isascii(), (name, value)
    json.dumps(record, allow_nan=False)


@given(requests)
def test_handle_token_request_answers_every_request(
    runtime: Runtime, authenticator: Authenticator, request: TokenRequest
) -> None:
    response = handle_token_request(runtime, authenticator, request)
    _check(response.status, response.body, response.headers, response.record)


raw_queries = st.lists(
    st.tuples(st.sampled_from(KEYS) | text_from("%=&+;ab", 8), values | text_from("%+=&", 20)),
    max_size=8,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)) | text_from("%=&;+ab", 200)


@given(raw_queries, authorizations)
def test_raw_token_queries_get_a_route_error_or_an_answer(
    runtime: Runtime, authenticator: Authenticator, query: str, authorization: str | None
) -> None:
    try:
        parsed = parse_query(query)
    except RouteError as e:
        assert 400 <= e.status < 500
        return
    response = handle_token_request(
        runtime, authenticator, TokenRequest("GET", parsed, None, authorization, "::1")
    )
    _check(response.status, response.body, response.headers, response.record)
