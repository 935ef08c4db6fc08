import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from regauth.tokens.keyids import key_id
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import public_jwk
from regauth.tokens.keyids import rfc7638_thumbprint

# distribution docs/spec/auth/jwt.md example key (protocol.md section 2.3)
SPEC_X = "m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q"
SPEC_Y = "dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc"
SPEC_LIBTRUST = "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
SPEC_THUMBPRINT = "8qjioA3ZA7ti2JIE7c-U8smBFuZolQZvhSHDPU3hhB8"

# RFC 7638 section 3.1 example RSA key
RFC_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qv"
    "zqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6W"
    "eZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC_E = "AQAB"
RFC_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
RFC_LIBTRUST = "VUZD:EDHW:YWLN:RBFQ:KOA3:UVZ2:XKG5:2V2J:WTPI:6SRD:U6PZ:VCO5"


def _int(b64u):
    return int.from_bytes(base64.urlsafe_b64decode(b64u + "=" * (-len(b64u) % 4)), "big")


@pytest.fixture(scope="module")
def spec_ec_key():
    return ec.EllipticCurvePublicNumbers(_int(SPEC_X), _int(SPEC_Y), ec.SECP256R1()).public_key()


@pytest.fixture(scope="module")
def rfc_rsa_key():
    return rsa.RSAPublicNumbers(_int(RFC_E), _int(RFC_N)).public_key()


def test_libtrust_kid_of_the_spec_key(spec_ec_key):
    assert libtrust_kid(spec_ec_key) == SPEC_LIBTRUST


def test_rfc7638_thumbprint_of_the_spec_key(spec_ec_key):
    assert rfc7638_thumbprint(spec_ec_key) == SPEC_THUMBPRINT


def test_rfc7638_thumbprint_of_the_rfc_example(rfc_rsa_key):
    assert rfc7638_thumbprint(rfc_rsa_key) == RFC_THUMBPRINT


def test_libtrust_kid_of_the_rfc_example(rfc_rsa_key):
    assert libtrust_kid(rfc_rsa_key) == RFC_LIBTRUST


def test_public_jwk_members(spec_ec_key, rfc_rsa_key):
    assert public_jwk(spec_ec_key) == {"crv": "P-256", "kty": "EC", "x": SPEC_X, "y": SPEC_Y}
    assert public_jwk(rfc_rsa_key) == {"e": RFC_E, "kty": "RSA", "n": RFC_N}


def test_key_id_dispatch(spec_ec_key):
    assert key_id(spec_ec_key, "libtrust") == SPEC_LIBTRUST
    assert key_id(spec_ec_key, "rfc7638") == SPEC_THUMBPRINT
    with pytest.raises(ValueError, match="unknown kid format"):
        key_id(spec_ec_key, "x5t")


def test_libtrust_kid_shape():
    kid = libtrust_kid(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert re.fullmatch(r"[A-Z2-7]{4}(?::[A-Z2-7]{4}){11}", kid)


def test_ec_coordinates_are_left_padded_to_the_curve_size():
    # RFC 7518 requires full-length coordinates: take the first (deterministic) private scalar
    # whose public x has a leading zero byte, and check the JWK still carries 32 bytes.
    key = next(
        k
        for k in (ec.derive_private_key(i, ec.SECP256R1()).public_key() for i in range(1, 100000))
        if k.public_numbers().x.bit_length() <= 248
    )
    x = public_jwk(key)["x"]
    assert len(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))) == 32


def test_unsupported_curve_is_refused():
    key = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(ValueError, match="unsupported curve"):
        public_jwk(key)
