"""Authorization headers and Basic credentials (authorization.py): only ValueError escapes
parse_basic; split_authorization, safe_scheme and describe never raise, and what describe
returns is a strict-JSON log record."""

from __future__ import annotations

import base64
import json
import string

from hypothesis import given
from hypothesis import strategies as st

from regauth.protocol.auth_header import describe
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.auth_header import safe_scheme
from regauth.protocol.auth_header import split_authorization
from tests.property.strategies import any_text
from tests.property.strategies import b64url
from tests.property.strategies import json_bytes
from tests.property.strategies import text_from

B64 = string.ascii_letters + string.digits + "+/="
basic_payloads = st.one_of(
    st.tuples(any_text, any_text).map(
        lambda up: f"{up[0]}:{up[1]}".encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=200),
).map(lambda raw: base64.b64encode(raw).decode())
credentials = st.one_of(basic_payloads, text_from(B64 + " \t:"), any_text)
schemes = st.sampled_from(
    ["Basic", "basic", "Bearer", "BEARER", "Digest", "", "Bearer\t", "Negotiate"]
) | text_from(string.ascii_letters + "-", 30)


def _tokens(segments: list[bytes], signature: str) -> str:
    return ".".join([b64url(s) for s in segments] + [signature])


jwt_like = st.one_of(
    st.builds(
        _tokens,
        st.lists(json_bytes(), min_size=0, max_size=4),
        text_from(string.ascii_letters + "-_", 60),
    ),
    text_from(string.ascii_letters + string.digits + "-_.=", 400),
)
headers = st.one_of(
    st.tuples(schemes, st.sampled_from([" ", "  ", "\t", ""]), credentials | jwt_like).map("".join),
    any_text,
)


@given(credentials)
def test_parse_basic_raises_only_value_error(value: str) -> None:
    try:
        username, password = parse_basic(value)
    except ValueError:
        return
    assert ":" not in username
    assert base64.b64decode(value.strip()) == f"{username}:{password}".encode()


@given(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=50).filter(lambda u: ":" not in u),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=50),
)
def test_parse_basic_round_trips(username: str, password: str) -> None:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    assert parse_basic(encoded) == (username, password)
    assert parse_basic(f"  {encoded}\t") == (username, password)


@given(headers)
def test_split_authorization_and_safe_scheme_never_raise(header: str) -> None:
    scheme, credentials_part = split_authorization(header)
    assert safe_scheme(scheme) in (scheme, "<unparsed>")
    assert credentials_part == credentials_part.strip()


@given(st.none() | headers)
def test_describe_never_raises_and_gives_a_strict_json_record(header: str | None) -> None:
    record = describe(header)
    if header:
        assert record is not None
        line = json.dumps(record, allow_nan=False, default=str)
        assert json.loads(line) is not None
