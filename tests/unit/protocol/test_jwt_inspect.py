"""Reading a JWT without verifying it (`regauth.protocol.jwt_inspect`), for logs and mitmweb:
header and claims within strict JSON's bounds, never the signature; finding JWTs in text in
linear time."""

import base64
import json
import time

import pytest

from regauth.protocol.jwt_inspect import MAX_TOKEN_LENGTH
from regauth.protocol.jwt_inspect import decode_unverified
from regauth.protocol.jwt_inspect import find_jwts


def _b64u(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


TOKEN = (
    f"{_b64u({'alg': 'ES256', 'x5c': ['AAAA', 'BBBB']})}.{_b64u({'sub': 'ci'})}."
    "c2lnbmF0dXJlLXNlY3JldA"
)


def test_header_and_claims_but_not_the_signature():
    decoded = decode_unverified(TOKEN)
    assert decoded == {
        "header": {"alg": "ES256", "x5c": "<2 certificate(s)>"},
        "claims": {"sub": "ci"},
        "signature_bytes": 16,
    }
    assert "c2lnbmF0dXJl" not in json.dumps(decoded)


@pytest.mark.parametrize(
    "claims",
    [
        b"[" * 17 + b"]" * 17,  # deeper than strict JSON allows here
        b'{"exp": 1e400}',  # not a finite number
        b'{"sub": "a", "sub": "b"}',  # a member named twice
        b"\xff\xfe",  # not UTF-8
    ],
)
def test_claims_outside_strict_json_are_value_errors(claims):
    token = (
        _b64u({"alg": "ES256"})
        + "."
        + base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
        + ".x"
    )
    with pytest.raises(ValueError, match="undecodable JWT segment"):
        decode_unverified(token)


def test_the_length_bound():
    assert MAX_TOKEN_LENGTH == 16384
    long_claims = _b64u({"pad": "x" * (MAX_TOKEN_LENGTH - 100)})
    with pytest.raises(ValueError, match="too long"):
        decode_unverified(f"{_b64u({'alg': 'ES256'})}.{long_claims}.x")


@pytest.mark.parametrize(
    "token", ["a.b", "a.b.c.d", "!!.!!.x", f"{_b64u([1])}.{_b64u({})}.x", "x" * 20000]
)
def test_decode_unverified_refuses(token):
    with pytest.raises(ValueError):
        decode_unverified(token)


def test_find_jwts():
    text = f"Authorization: Bearer {TOKEN}, other text eyJnot-a-jwt"
    assert find_jwts(text) == [TOKEN]


def test_finding_jwts_is_linear_in_the_text():
    text = "eyJ" * 200_000  # quadratic with a backtracking search (seconds)
    started = time.perf_counter()
    assert find_jwts(text) == []
    assert time.perf_counter() - started < 1.0
