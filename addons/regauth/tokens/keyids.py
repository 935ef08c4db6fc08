"""Key identifiers registries use to find a token's signing key, and JWK export.

- libtrust key ID: what distribution 2.x expects in `kid` (SHA-256 of the DER
  SubjectPublicKeyInfo, first 240 bits, base32, groups of four joined by ':').
- RFC 7638 JWK thumbprint: what distribution 3.x derives for rootcertbundle keys.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
# What verifies a trusted issuer's tokens: an HS256 shared secret, or an ES256/RS256 public key.
VerificationKey = bytes | PublicKey

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def libtrust_kid(public_key: PublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i : i + 4] for i in range(0, len(s), 4))


def _b64u_int(value: int, length: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).rstrip(b"=").decode()


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The required members of the public JWK (RFC 7517/7518), in RFC 7638 order."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(public_key.curve.name)
        if curve is None:
            raise ValueError(f"unsupported curve {public_key.curve.name}")
        numbers = public_key.public_numbers()
        size = (public_key.curve.key_size + 7) // 8
        return {
            "crv": curve,
            "kty": "EC",
            "x": _b64u_int(numbers.x, size),
            "y": _b64u_int(numbers.y, size),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        rsa_numbers = public_key.public_numbers()
        e, n = rsa_numbers.e, rsa_numbers.n
        return {
            "e": _b64u_int(e, (e.bit_length() + 7) // 8),
            "kty": "RSA",
            "n": _b64u_int(n, (n.bit_length() + 7) // 8),
        }
    raise ValueError("unsupported key type")


def rfc7638_thumbprint(public_key: PublicKey) -> str:
    canonical = json.dumps(public_jwk(public_key), separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


KID_FORMATS = {"libtrust": libtrust_kid, "rfc7638": rfc7638_thumbprint}


def key_id(public_key: PublicKey, kid_format: str) -> str:
    try:
        return KID_FORMATS[kid_format](public_key)
    except KeyError:
        raise ValueError(f"unknown kid format {kid_format!r}") from None
