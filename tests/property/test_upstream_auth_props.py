"""Upstream token service replies (upstream_auth.py, inject mode): whatever the upstream's
challenge, realm and token response hold, regauth raises only UpstreamAuthError (the request
is then refused, never forwarded without credentials)."""

from __future__ import annotations

import json
import string

from hypothesis import given
from hypothesis import strategies as st

from regauth.policy.model import UpstreamCredentials
from regauth.protocol.scope import parse_scope
from regauth.protocol.urls import parse_origin
from regauth.upstream_auth import MAX_EXPIRES_IN
from regauth.upstream_auth import MIN_EXPIRES_IN
from regauth.upstream_auth import HttpResult
from regauth.upstream_auth import UpstreamAuth
from regauth.upstream_auth import UpstreamAuthError
from regauth.upstream_auth import check_realm
from regauth.upstream_auth import parse_token_response
from tests.property.strategies import any_text
from tests.property.strategies import json_bytes
from tests.property.strategies import json_scalars
from tests.property.strategies import json_values
from tests.property.strategies import text_from

UPSTREAM = parse_origin("https://registry.example")
URL_CHARS = string.ascii_letters + string.digits + ":/?#[]@!$&'()*+,;=%.-_~"
realms = st.one_of(
    st.sampled_from(
        [
            "https://auth.example/token",
            "http://registry.example/t",
            "https://[::1/x",
            "https://a:99999/t",
            "//x",
            "",
            "https://u:p@a/t",
        ]
    ),
    st.tuples(st.sampled_from(["https://", "http://", "ftp://", ""]), text_from(URL_CHARS, 60)).map(
        "".join
    ),
    any_text,
)
token_bodies = st.one_of(
    json_bytes(),
    st.fixed_dictionaries(
        {},
        optional={
            "token": st.sampled_from(["tok", "a b", "t\r\nX: 1", "é"]) | json_scalars,
            "access_token": st.sampled_from(["tok"]) | json_scalars,
            "expires_in": st.sampled_from([300, "300", 1e300, -1, "soon", True]) | json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
)


@given(token_bodies)
def test_parse_token_response_raises_only_upstream_auth_error(body: bytes) -> None:
    try:
        token, expires_in = parse_token_response(body)
    except UpstreamAuthError:
        return
    assert token and all("!" <= c <= "~" for c in token)
    assert MIN_EXPIRES_IN <= expires_in <= MAX_EXPIRES_IN


@given(realms, st.lists(st.sampled_from(["auth.example", "a"]) | any_text, max_size=2))
def test_check_realm_raises_only_upstream_auth_error(realm: str, hosts: list[str]) -> None:
    try:
        origin = check_realm(realm, UPSTREAM, tuple(hosts))
    except UpstreamAuthError:
        return
    assert origin.scheme in ("http", "https")


challenge_headers = st.one_of(
    st.tuples(
        st.sampled_from(["Bearer ", "Basic ", "bearer ", ""]),
        st.lists(
            st.tuples(st.sampled_from(["realm", "service", "scope"]), realms | any_text).map(
                lambda kv: f'{kv[0]}="{kv[1]}"'
            ),
            max_size=3,
        ).map(",".join),
    ).map("".join),
    any_text,
)


@given(challenge_headers, st.sampled_from([200, 401, 500]), token_bodies)
def test_header_for_raises_only_upstream_auth_error(
    challenge: str, status: int, body: bytes
) -> None:
    def fetch(url: str, headers: dict[str, str]) -> HttpResult:
        if url.endswith("/v2/"):
            return HttpResult(401, {"www-authenticate": challenge}, b"")
        return HttpResult(status, {}, body)

    credentials = UpstreamCredentials("bearer", "robot", "inline", "s3cret")
    auth = UpstreamAuth(credentials, UPSTREAM, fetch)
    try:
        header = auth.header_for((parse_scope("repository:a:pull"),))
    except UpstreamAuthError:
        return
    assert header.startswith("Bearer ") and header.isascii() and header.isprintable()
