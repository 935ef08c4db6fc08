"""Issuing registry tokens (`TokenIssuer`): access tokens and refresh tokens.

Issued access tokens follow distribution's jwt.md: header `alg`, `typ`, `kid`, `x5c`; claims
`iss`, `sub`, `aud` (a string: registry 2.8 refuses arrays), `exp`, `nbf`, `iat`, `jti`, `access`.
The header `typ` is regauth's own (`registry-access+jwt`, RFC 8725 explicit typing), so other
services can refuse these tokens even when they share a key. Refresh tokens carry their own
`typ` and audience and are bound to the account's password hash (`credential_fingerprint`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from regauth.policy.model import Account
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import TokenSettings
from regauth.protocol.scope import ResourceScope
from regauth.tokens.keyids import key_id
from regauth.tokens.keyring import KeyRing

ACCESS_TYP = "registry-access+jwt"


REFRESH_TYP = "registry-refresh+jwt"
# A job token (`regauth token issue`): a login credential for one build or account, never an
# access token (its own typ and audience), capped to the scopes it was issued for.
JOB_TYP = "regauth-job+jwt"
MAX_JOB_LIFETIME = 24 * 3600  # seconds


@dataclass(frozen=True)
class IssuedToken:
    """An access token regauth signed, with what the answer and the log need of it."""

    token: str  # the compact JWS
    jti: str  # its id
    issued_at: int  # epoch seconds
    expires_in: int  # seconds
    claims: dict[str, object]  # as signed


def credential_fingerprint(account: Account) -> str:
    """Binds a refresh token to the password it was obtained with: a new hash voids it."""
    return hashlib.sha256(b"regauth-refresh\0" + account.password_hash).hexdigest()[:32]


@dataclass
class TokenIssuer:
    """Signs regauth's access and refresh tokens with the keyring's signer.

    Built once per policy load (`runtime.build_runtime`); raises ValueError if the signing key
    is not of the policy's `token.algorithm`.
    """

    keyring: KeyRing
    settings: TokenSettings  # lifetimes, algorithm, the `kid` format
    service: str  # the tokens' `aud`
    issuer: str  # the tokens' `iss`
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.keyring.signer.algorithm != self.settings.algorithm:
            raise ValueError(
                f"the policy asks for {self.settings.algorithm} tokens but signing key "
                f"{self.keyring.signer.name!r} is a {self.keyring.signer.algorithm} key "
                f"(rotate with `regauth certs rotate --algorithm {self.settings.algorithm}`)"
            )
        signer = self.keyring.signer
        # The same for every token this issuer signs: computed once per policy load.
        self._signer_headers = {
            "kid": key_id(signer.public_key, self.settings.kid_format),
            "x5c": [base64.b64encode(signer.certificate_der()).decode()],
        }

    def _headers(self, typ: str) -> dict[str, object]:
        return {"typ": typ, **self._signer_headers}

    def _sign(self, claims: dict[str, object], typ: str) -> str:
        signer = self.keyring.signer
        private_key = signer.private_key
        assert private_key is not None  # KeyRing picks its signer among keys with a private key
        return jwt.encode(
            claims, private_key, algorithm=signer.algorithm, headers=self._headers(typ)
        )

    def issue_access(self, subject: str, access: list[ResourceScope]) -> IssuedToken:
        now = int(self.clock())
        jti = secrets.token_urlsafe(16)
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.settings.lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": jti,
            "access": [s.as_claim() for s in access],
        }
        return IssuedToken(self._sign(claims, ACCESS_TYP), jti, now, self.settings.lifetime, claims)

    def issue_refresh(self, account: Account) -> str:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": account.name,
            "aud": self.refresh_audience,
            "exp": now + self.settings.refresh_lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "cfp": credential_fingerprint(account),
        }
        return self._sign(claims, REFRESH_TYP)

    def issue_refresh_federated(self, identity: FederatedIdentity, issuer_url: str) -> str | None:
        """A refresh token for an identity from an ID token, living no longer than that ID
        token (None when it has under a second left): the identity's issuer, subject, groups
        and claims travel in `fed`, signed, so a refresh needs no ID token and no key set."""
        now = int(self.clock())
        exp = min(now + self.settings.refresh_lifetime, int(identity.expires_at))
        if exp <= now:
            return None
        claims = {
            "iss": self.issuer,
            "sub": identity.subject,
            "aud": self.refresh_audience,
            "exp": exp,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "fed": {
                "iss": identity.issuer,
                "url": issuer_url,
                "groups": list(identity.groups),
                "claims": identity.claims,
            },
        }
        return self._sign(claims, REFRESH_TYP)

    def issue_job(
        self, subject_uri: str, scopes: list[ResourceScope], lifetime: int
    ) -> tuple[str, dict[str, object]]:
        """A job token for `subject_uri` (`regauth:build:ID`, `regauth:account:NAME`) that grants
        at most `scopes` for `lifetime` seconds (1 to MAX_JOB_LIFETIME): the token and its
        claims. ValueError for a lifetime out of range."""
        if not 0 < lifetime <= MAX_JOB_LIFETIME:
            raise ValueError(f"a job token lives 1 s to {MAX_JOB_LIFETIME // 3600} h")
        now = int(self.clock())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject_uri,
            "aud": self.job_audience,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [s.as_claim() for s in scopes],
        }
        return self._sign(claims, JOB_TYP), claims

    @property
    def job_audience(self) -> str:
        # Neither the registry's service nor the refresh audience: a job token is a login.
        return f"regauth-job:{self.service}"

    @property
    def refresh_audience(self) -> str:
        # Not the registry's service: a refresh token must never pass as an access token.
        return f"regauth-refresh:{self.service}"
