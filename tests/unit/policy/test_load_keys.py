"""Trusted issuers' public keys from files (`regauth.policy.load_keys.public_keys`): a PEM public
key or certificate, or a JWK Set with each key's `kid`; every key must fit the issuer's one
algorithm; unreadable data or no key is a ValueError naming the reason. The loader's reporting
of these at a position is test_load_upstreams.py."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from regauth.ops import pki
from regauth.policy.load_keys import public_keys

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _jwks(*entries: tuple[object, str | None]) -> bytes:
    keys = []
    for key, kid in entries:
        jwk = json.loads(
            jwt.algorithms.get_default_algorithms()[
                "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
            ].to_jwk(key.public_key())
        )  # type: ignore[attr-defined]
        if kid is not None:
            jwk["kid"] = kid
        keys.append(jwk)
    return json.dumps({"keys": keys}).encode()


def test_a_pem_public_key_or_certificate():
    [(key, kid)] = public_keys(_pem(EC_KEY), "public_key_file", "ES256")
    assert kid is None and key.public_numbers() == EC_KEY.public_key().public_numbers()
    certificate = pki.create_signing_cert(EC_KEY, "issuer").public_bytes(serialization.Encoding.PEM)
    [(from_cert, _)] = public_keys(certificate, "public_key_file", "ES256")
    assert from_cert.public_numbers() == EC_KEY.public_key().public_numbers()
    [(rsa_key, _)] = public_keys(_pem(RSA_KEY), "public_key_file", "RS256")
    assert isinstance(rsa_key, rsa.RSAPublicKey)


def test_a_jwks_keeps_each_keys_kid():
    other = ec.generate_private_key(ec.SECP256R1())
    found = public_keys(_jwks((EC_KEY, "k1"), (other, None)), "jwks_file", "ES256")
    assert [kid for _, kid in found] == ["k1", None]
    assert found[0][0].public_numbers() == EC_KEY.public_key().public_numbers()


@pytest.mark.parametrize(
    ("data", "form", "algorithm", "message"),
    [
        (_pem(RSA_KEY), "public_key_file", "ES256", "a key does not fit ES256"),
        (_pem(EC_KEY), "public_key_file", "RS256", "a key does not fit RS256"),
        (_jwks((EC_KEY, "a"), (RSA_KEY, "b")), "jwks_file", "ES256", "a key does not fit ES256"),
        (b'{"keys": []}', "jwks_file", "ES256", "no keys"),
        (b"{}", "jwks_file", "RS256", "no keys"),
        (
            b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
            "public_key_file",
            "ES256",
            "cannot read keys",
        ),
        (b"not json", "jwks_file", "ES256", "cannot read keys"),
        (b"[1, 2]", "jwks_file", "ES256", "cannot read keys"),
    ],
)
def test_what_cannot_be_used_is_a_value_error(data, form, algorithm, message):
    with pytest.raises(ValueError, match=message):
        public_keys(data, form, algorithm)


def test_a_jwk_without_its_members_is_a_value_error():
    with pytest.raises(ValueError, match="cannot read keys"):
        public_keys(b'{"keys": [{"kty": "EC"}]}', "jwks_file", "ES256")
