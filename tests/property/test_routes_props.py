"""Registry routes (routes.py): match_route, check_canonical, parse_query and check_body_type
raise only RouteError, with a 4xx status; what match_route accepts is canonical and needs at
least the access distribution would require for the method."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from regauth.protocol.routes import RouteError
from regauth.protocol.routes import check_body_type
from regauth.protocol.routes import check_canonical
from regauth.protocol.routes import match_route
from regauth.protocol.routes import parse_query
from tests.property.strategies import any_text
from tests.property.strategies import text_from

DIGEST = "sha256:" + "a" * 64
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "CONNECT", ""]
segment = st.one_of(
    st.sampled_from(
        [
            "v2",
            "manifests",
            "blobs",
            "uploads",
            "tags",
            "list",
            "referrers",
            "_catalog",
            "latest",
            DIGEST,
            "sha256:AB",
            "a",
            "public",
            "app",
            ".",
            "..",
            "",
            "%2e",
            "%2F",
            "a\\b",
            "é",
            "\x00",
        ]
    ),
    text_from(string.ascii_lowercase + string.digits + "._-:%", 20),
)
paths = st.one_of(
    st.lists(segment, max_size=8).map(lambda s: "/v2/" + "/".join(s)),
    st.lists(segment, max_size=8).map("/".join),
    text_from(string.printable, 300),
    any_text,
)
query_pairs = st.tuples(
    st.sampled_from(["mount", "from", "digest", "n", "last", "scope", "service", ""])
    | text_from(string.ascii_letters + "%=&;+", 10),
    st.sampled_from([DIGEST, "public/app", "%ff", "%", "a+b", "é", ""])
    | text_from(string.ascii_letters + "%=&;+/:", 40),
)
queries = st.one_of(
    st.lists(query_pairs, max_size=70).map(lambda ps: "&".join(f"{k}={v}" for k, v in ps)),
    text_from("%=&;+ab", 300),
    any_text,
)


@given(st.sampled_from(METHODS) | any_text, paths, st.none() | queries)
def test_match_route_raises_only_route_error(method: str, path: str, query: str | None) -> None:
    target = path if query is None else f"{path}?{query}"
    try:
        route = match_route(method, target)
    except RouteError as e:
        assert 400 <= e.status < 500 and e.code and e.message
        return
    check_canonical(route.path)
    if route.repository is not None:
        assert route.required and route.required[0].name == route.repository


@given(paths)
def test_check_canonical_raises_only_route_error(path: str) -> None:
    try:
        check_canonical(path)
    except RouteError as e:
        assert 400 <= e.status < 500
        return
    assert "%" not in path and "\\" not in path and path.isascii()


@given(queries)
def test_parse_query_raises_only_route_error(query: str) -> None:
    try:
        params = parse_query(query)
    except RouteError as e:
        assert 400 <= e.status < 500
        return
    assert all(isinstance(v, list) and v for v in params.values())


@given(
    st.sampled_from(METHODS),
    st.lists(
        st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "APPLICATION/X-WWW-FORM-URLENCODED",
                "application/octet-stream",
                "application/x-www-form-urlencoded\u0130",
            ]
        )
        | any_text,
        max_size=3,
    ),
)
def test_check_body_type_raises_only_route_error(method: str, content_types: list[str]) -> None:
    try:
        check_body_type(method, content_types)
    except RouteError as e:
        assert e.status in (400, 415)
