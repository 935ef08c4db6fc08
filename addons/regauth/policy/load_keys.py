"""Trusted issuers' public keys, read from the files a policy names (README "trusted_issuers").

`public_key_file` holds one PEM public key or certificate; `jwks_file` a JWK Set whose entries
are selected by `kid`. Every key must fit the issuer's one algorithm (ES256: an EC key, RS256:
an RSA key); a file that holds none, or a key of another kind, is refused. The files are read
whole (at most `MAX_KEY_FILE_BYTES`) by the loader, which reports problems at their position.
"""

from __future__ import annotations

import json

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from regauth.tokens.keyids import PublicKey

MAX_KEY_FILE_BYTES = 1024 * 1024  # a trusted issuer's PEM key or JWKS


def public_keys(data: bytes, form: str, algorithm: str) -> list[tuple[PublicKey, str | None]]:
    """The (key, kid) pairs in `data`, a `public_key_file` (PEM: `kid` None) or a `jwks_file`
    (`form`), for `algorithm` (`ES256` or `RS256`). Raises ValueError naming what is wrong:
    unreadable, no keys, or a key that does not fit the algorithm."""
    expected = ec.EllipticCurvePublicKey if algorithm == "ES256" else rsa.RSAPublicKey
    found: list[tuple[object, str | None]] = []
    public: object  # any key type the file holds: checked against `expected` below
    try:
        if form == "public_key_file":
            if b"BEGIN CERTIFICATE" in data:
                public = x509.load_pem_x509_certificate(data).public_key()
            else:
                public = serialization.load_pem_public_key(data)
            found.append((public, None))
        else:
            for entry in json.loads(data).get("keys", []):
                public = jwt.PyJWK(entry).key
                found.append((public, entry.get("kid")))
    except (ValueError, TypeError, AttributeError, jwt.PyJWTError) as e:
        raise ValueError(f"cannot read keys: {e}") from None
    out: list[tuple[PublicKey, str | None]] = []
    for public, kid in found:
        if not isinstance(public, expected):
            raise ValueError(f"a key does not fit {algorithm}")
        out.append((public, kid))
    if not out:
        raise ValueError("no keys")
    return out
