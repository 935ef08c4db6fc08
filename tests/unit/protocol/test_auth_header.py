"""Authorization headers (`regauth.protocol.auth_header`): Basic credentials, the scheme
split, and what the log keeps of each (never a secret). Reading a JWT unverified is
test_jwt_inspect.py."""

import base64
import json

import pytest

from regauth.protocol.auth_header import describe
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.auth_header import split_authorization


def _b64u(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


TOKEN = (
    f"{_b64u({'alg': 'ES256', 'x5c': ['AAAA', 'BBBB']})}.{_b64u({'sub': 'ci'})}."
    "c2lnbmF0dXJlLXNlY3JldA"
)


def test_parse_basic():
    assert parse_basic(base64.b64encode(b"ci:pa:ss").decode()) == ("ci", "pa:ss")
    assert parse_basic(base64.b64encode("ü:é".encode()).decode()) == ("ü", "é")
    with pytest.raises(ValueError):
        parse_basic("!!!")
    with pytest.raises(ValueError, match="separator"):
        parse_basic(base64.b64encode(b"nocolon").decode())
    with pytest.raises(ValueError):
        parse_basic(base64.b64encode(b"\xff:\xfe").decode())


def test_split_authorization():
    assert split_authorization("Bearer  abc ") == ("Bearer", "abc")
    assert split_authorization("Basic") == ("Basic", "")


def test_describe_basic_keeps_only_the_username():
    record = describe("Basic " + base64.b64encode(b"ci:hunter2").decode())
    assert record == {"scheme": "Basic", "username": "ci"}
    assert "hunter2" not in json.dumps(record)


def test_describe_bearer_keeps_header_and_claims_but_not_the_signature():
    record = describe("Bearer " + TOKEN)
    assert record["scheme"] == "Bearer"
    assert record["jwt"]["header"] == {"alg": "ES256", "x5c": "<2 certificate(s)>"}
    assert record["jwt"]["claims"] == {"sub": "ci"}
    assert record["jwt"]["signature_bytes"] > 0
    assert "c2lnbmF0dXJl" not in json.dumps(record)


def test_describe_malformed_values():
    assert describe(None) is None
    assert describe("") is None
    assert describe("Basic ???")["malformed"]
    record = describe("Bearer opaque-token-value")
    assert record["token_length"] == len("opaque-token-value")
    assert "opaque-token-value" not in json.dumps(record)
    assert describe("Digest x") == {"scheme": "Digest"}


@pytest.mark.parametrize(
    "header",
    ["ghp_SECRETtokenvalue123", "Basic\tY2k6c2VjcmV0", "a-very-long-scheme-name-that-is-a-token x"],
)
def test_a_credential_without_a_recognisable_scheme_is_never_logged(header):
    record = describe(header)
    assert record == {"scheme": "<unparsed>", "length": len(header)} or record["scheme"] == "Basic"
    assert "SECRET" not in json.dumps(record) and "c2VjcmV0" not in json.dumps(record)
