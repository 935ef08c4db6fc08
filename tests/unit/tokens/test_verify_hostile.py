"""Hostile JWTs, Basic credentials and token responses: only the documented exception escapes.

Before: a 4 KB token of nested arrays raised RecursionError in the verifier and in the log's
describer (a 500 per request); exp Infinity/NaN/1e400 raised OverflowError/ValueError and
nbf NaN was accepted; a non-ASCII x5c or Basic credential slipped past its handler.
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from regauth import upstream_auth
from regauth.ops import pki
from regauth.policy.model import Account
from regauth.protocol.auth_header import describe
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.jwt_inspect import decode_unverified
from regauth.tokens.claims import InvalidToken
from regauth.tokens.issue import ACCESS_TYP
from regauth.tokens.issue import REFRESH_TYP
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyring import KeyRing
from regauth.tokens.verify import TokenVerifier
from regauth.tokens.verify import _split
from regauth.upstream_auth import UpstreamAuthError

SERVICE = "registry.test"
ISSUER = "regauth.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


NESTED = b64(b'{"alg":"ES256"}') + "." + b64(b"[" * 1500 + b"]" * 1500) + ".x"
NESTED_HEADER = b64(b'{"a":' * 600 + b"1" + b"}" * 600) + "." + b64(b"{}") + ".x"


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    directory = tmp_path_factory.mktemp("certs")
    pki.init_certs(directory)
    return KeyRing(pki.load_signing_keys(directory))


@pytest.fixture
def verifier(keyring: KeyRing) -> TokenVerifier:
    return TokenVerifier(keyring, SERVICE, ISSUER)


def _sign_raw(keyring: KeyRing, payload: bytes, typ: str = ACCESS_TYP, **header: object) -> str:
    """A correctly signed token whose claims segment is exactly `payload`."""
    signer = keyring.signer
    headers = {"typ": typ, "kid": libtrust_kid(signer.public_key), **header}
    return jwt.api_jws.encode(
        payload, signer.private_key, algorithm=signer.algorithm, headers=headers
    )


def _claims_json(**raw: str) -> bytes:
    """Claims with some values given as raw JSON text (Infinity, 1e400, ...)."""
    now = int(time.time())
    values = {
        "iss": json.dumps(ISSUER),
        "aud": json.dumps(SERVICE),
        "exp": str(now + 300),
        "nbf": str(now - 1),
        "iat": str(now),
        "access": "[]",
        **raw,
    }
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in values.items()) + "}").encode()


def test_the_nested_json_token_is_an_invalid_token(verifier: TokenVerifier) -> None:
    assert len(NESTED) < 4100
    for token in (NESTED, NESTED_HEADER):
        with pytest.raises(InvalidToken, match="nested deeper"):
            _split(token)
        with pytest.raises(InvalidToken, match="nested deeper"):
            verifier.verify_access(token)
        with pytest.raises(InvalidToken, match="nested deeper"):
            verifier.verify_refresh(token, "aud", {})


def test_the_log_describes_the_nested_json_token_as_malformed() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        decode_unverified(NESTED)
    record = describe("Bearer " + NESTED)
    assert record is not None
    assert record["scheme"] == "Bearer"
    assert "nested deeper" in str(record["malformed"])


def test_a_valid_token_still_verifies(keyring: KeyRing, verifier: TokenVerifier) -> None:
    verified = verifier.verify_access(_sign_raw(keyring, _claims_json()))
    assert verified.issuer == ISSUER


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    [
        "Infinity",
        "-Infinity",
        "NaN",
        "1e400",
        "-1e400",
        "1" + "0" * 30,
        "-1",
        "253402300800",
        '"300"',
        "true",
        "null",
        "[1]",
        "{}",
    ],
)
def test_numeric_dates_must_be_finite_numbers_in_range(
    keyring: KeyRing, verifier: TokenVerifier, claim: str, value: str
) -> None:
    token = _sign_raw(keyring, _claims_json(**{claim: value}))
    with pytest.raises(InvalidToken):
        verifier.verify_access(token)


def test_nbf_nan_is_not_accepted(keyring: KeyRing, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify_access(_sign_raw(keyring, _claims_json(nbf="NaN")))


def test_numeric_dates_may_be_fractional(keyring: KeyRing, verifier: TokenVerifier) -> None:
    now = time.time()
    token = _sign_raw(
        keyring, _claims_json(exp=repr(now + 300.5), nbf=repr(now - 0.5), iat=repr(now))
    )
    assert verifier.verify_access(token).expires_at == int(now + 300.5)


def test_duplicate_claim_names_are_refused(keyring: KeyRing, verifier: TokenVerifier) -> None:
    payload = _claims_json()[:-1] + b',"aud":"elsewhere"}'
    with pytest.raises(InvalidToken, match="duplicate"):
        verifier.verify_access(_sign_raw(keyring, payload))


def test_non_ascii_x5c_is_a_malformed_header(keyring: KeyRing, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken, match="malformed x5c"):
        verifier.verify_access(_sign_raw(keyring, _claims_json(), x5c=["é"]))


def test_a_lone_surrogate_in_a_token_is_an_invalid_token(verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify_access("eyJ\ud800.eyJ.x")


def test_a_refresh_token_with_a_non_ascii_fingerprint_is_refused(
    keyring: KeyRing, verifier: TokenVerifier
) -> None:
    account = Account("ci", b"$2b$04$" + b"N" * 53, frozenset(), {})
    audience = "regauth-refresh:" + SERVICE
    now = int(time.time())
    for cfp in ('"é"', "1", "null"):
        payload = (
            f'{{"iss":"{ISSUER}","sub":"ci","aud":"{audience}","exp":{now + 300},"cfp":{cfp}}}'
        ).encode()
        with pytest.raises(InvalidToken, match="password changed"):
            verifier.verify_refresh(
                _sign_raw(keyring, payload, REFRESH_TYP), audience, {"ci": account}
            )


@pytest.mark.parametrize("value", ["é", "Y2k6cHfDqQ==é", "\ud800", "YQ==\x00"])
def test_basic_credentials_outside_ascii_are_a_value_error(value: str) -> None:
    with pytest.raises(ValueError, match="not base64 of UTF-8 text"):
        parse_basic(value)


# -- upstream token responses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"token": "t", "expires_in": 1e400}',
        b'{"token": "t", "expires_in": Infinity}',
        b'{"token": "t", "expires_in": NaN}',
        b'{"token": "t", "expires_in": "soon"}',
        b'{"token": "t", "expires_in": [60]}',
        b'{"token": "t", "token": "u"}',
        b'{"token": "t\\u00e9"}',
        b'{"token": "t\\u0000"}',
        b'{"token": "a b"}',
        b"\xff\xfe",
        b"",
    ],
)
def test_malformed_token_responses_are_upstream_auth_errors(body: bytes) -> None:
    with pytest.raises(UpstreamAuthError):
        upstream_auth.parse_token_response(body)


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        ("null", 60),  # absent: distribution's default
        ("0", 1),  # stated: honoured, at least 1 s
        ("-5", 1),
        ("30", 30),
        ("300", 300),
        ("300.9", 300),
        ('"300"', 300),
        ("1" + "0" * 30, 24 * 3600),
        ("false", 60),
    ],
)
def test_expires_in_is_clamped(expires_in: str, expected: int) -> None:
    body = f'{{"token": "t", "expires_in": {expires_in}}}'.encode()
    assert upstream_auth.parse_token_response(body) == ("t", expected)
