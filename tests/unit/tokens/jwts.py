"""Building and taking apart regauth's JWTs for the token tests (tokens/test_issue.py,
test_verify.py): an issuer and a verifier for the test service, tokens signed by hand with
chosen headers and claims, and a token's decoded segments."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from collections.abc import Iterable

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from regauth.policy.model import TokenSettings
from regauth.policy.model import TrustedIssuer
from regauth.tokens.issue import ACCESS_TYP
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyring import KeyRing
from regauth.tokens.verify import TokenVerifier

SERVICE = "registry.test"
ISSUER = "regauth.test"


def issuer(
    keyring: KeyRing, clock: Callable[[], float] = time.time, **settings: object
) -> TokenIssuer:
    return TokenIssuer(
        keyring,
        TokenSettings(**settings),
        SERVICE,  # type: ignore[arg-type]
        ISSUER,
        clock=clock,
    )


def verifier(
    keyring: KeyRing, trusted: Iterable[TrustedIssuer] = (), **kwargs: object
) -> TokenVerifier:
    return TokenVerifier(keyring, SERVICE, ISSUER, tuple(trusted), **kwargs)  # type: ignore[arg-type]


def segments(token: str) -> tuple[dict, dict, str]:
    """A compact JWS's header and claims (decoded JSON) and its signature (as sent)."""
    header, claims, signature = token.split(".")

    def decode(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    return decode(header), decode(claims), signature


def b64json(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def claims(**overrides: object) -> dict[str, object]:
    """Valid access-token claims for the test service, with `overrides`."""
    now = int(time.time())
    result: dict[str, object] = {
        "iss": ISSUER,
        "sub": "ci",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": "j1",
        "access": [{"type": "repository", "name": "a", "actions": ["pull", "push"]}],
    }
    result.update(overrides)
    return result


def signed(keyring: KeyRing, payload: dict[str, object], **header: object) -> str:
    """`payload` signed with the key ring's signer; `header` entries override (None: drop)."""
    signer = keyring.signer
    assert signer.private_key is not None
    headers: dict[str, object] = {
        "typ": ACCESS_TYP,
        "kid": libtrust_kid(signer.public_key),
        "x5c": [b64der(signer.certificate)],
    }
    headers.update(header)
    headers = {k: v for k, v in headers.items() if v is not None}
    return jwt.encode(
        payload,
        signer.private_key,  # type: ignore[arg-type]
        algorithm=signer.algorithm,
        headers=headers,
    )
