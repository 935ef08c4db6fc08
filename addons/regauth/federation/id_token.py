"""Verification of an OIDC ID token presented at the token endpoint, against one configured
issuer (OpenID Connect Core 1.0 §3.1.3.7; RFC 7519 §7.2; RFC 8725 §3.1, §3.2).

Fail closed, in this order, each refusal an `IdTokenRefused` with a `reason` from `REASONS`:
1. size (`MAX_ID_TOKEN_BYTES`) and shape: three base64url segments, header and claims JSON
   objects nested at most `MAX_DEPTH` levels (strict_json: no duplicate names, no NaN);
2. `iss` exactly a configured issuer's (`issuer_for` picks the entry by the unverified `iss`:
   the key that must verify it is then that issuer's, and only that issuer's);
3. `alg` in the issuer's allow-list (never `none`, never HMAC: the loader refuses them);
4. a key of that issuer's JWKS for the header's `kid` (an unknown kid refetches the set, at
   most once per interval: `jwks.JwksCache`);
5. the signature, `aud` containing the configured audience, `exp`/`nbf`/`iat` with the
   configured leeway (pyjwt), and `iat` no older than `max_token_age`;
6. the subject template's claims present.
No URL is ever taken from a token.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from collections.abc import Sequence
from typing import Literal
from typing import Protocol

import jwt

from regauth.federation.claim_rules import TemplateError
from regauth.federation.claim_rules import claim_texts
from regauth.federation.claim_rules import render_subject
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import FederatedIssuer
from regauth.protocol import strict_json

MAX_ID_TOKEN_BYTES = 8 * 1024
MAX_DEPTH = 8
MAX_GROUPS = 64

RefusalReason = Literal[
    "malformed",
    "too-large",
    "issuer-not-configured",
    "algorithm-not-allowed",
    "unknown-kid",
    "bad-signature",
    "wrong-audience",
    "expired",
    "not-yet-valid",
    "too-old",
    "missing-claim",
    "keys-unavailable",
]


class IdTokenRefused(ValueError):
    """An ID token that is not a credential here; `reason` is one of RefusalReason, the message
    is safe to log and to show to the client (it never quotes the token)."""

    def __init__(self, reason: RefusalReason, message: str, issuer: str | None = None) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason
        self.issuer = issuer


class KeyFinder(Protocol):
    """What verification needs of an issuer's key set (`jwks.JwksCache`)."""

    def find(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None: ...


class IssuerKeys(Protocol):
    """Where each federated issuer's key set is found (`federation.jwks.IssuerKeySets`)."""

    def finder(self, issuer: FederatedIssuer) -> KeyFinder | None: ...


def _segment(text: str) -> object:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise IdTokenRefused("malformed", "the ID token is not base64url") from None
    try:
        return strict_json.loads(raw, MAX_DEPTH)
    except strict_json.JsonError as e:
        raise IdTokenRefused("malformed", f"the ID token is not JSON ({e})") from None


def peek(token: str) -> tuple[dict[str, object], dict[str, object]] | None:
    """(header, claims) of a string shaped like a signed JWT, unverified; None when it is not
    one (then it is an ordinary password). Raises IdTokenRefused for a JWT over the size or
    nesting bounds."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]) or not token.startswith("eyJ"):
        return None
    if len(token) > MAX_ID_TOKEN_BYTES:
        raise IdTokenRefused("too-large", f"the ID token is larger than {MAX_ID_TOKEN_BYTES} B")
    header, claims = _segment(parts[0]), _segment(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def issuer_for(claims: dict[str, object], issuers: Sequence[FederatedIssuer]) -> FederatedIssuer:
    """The configured issuer whose `issuer` is exactly the token's `iss`."""
    iss = claims.get("iss")
    for entry in issuers:
        if iss == entry.issuer:
            return entry
    shown = repr(iss)[:120] if isinstance(iss, str) else "no iss"
    raise IdTokenRefused(
        "issuer-not-configured", f"ID token issuer {shown} is not under federated_issuers"
    )


def verify_id_token(
    token: str,
    issuer: FederatedIssuer,
    keys: KeyFinder,
    now: Callable[[], float],
) -> FederatedIdentity:
    """Verify `token` as an ID token of `issuer` (see the module docstring); return whom it
    names. Raises IdTokenRefused; `keys.find` may fetch (blocking)."""
    peeked = peek(token)
    if peeked is None:
        raise IdTokenRefused("malformed", "not a signed JWT", issuer.name)
    header, unverified = peeked
    if unverified.get("iss") != issuer.issuer:
        raise IdTokenRefused("issuer-not-configured", "wrong issuer", issuer.name)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in issuer.algorithms:
        shown = repr(alg)[:40]
        raise IdTokenRefused(
            "algorithm-not-allowed",
            f"alg {shown} is not allowed for {issuer.name} ({', '.join(issuer.algorithms)})",
            issuer.name,
        )
    typ = header.get("typ")
    if isinstance(typ, str) and typ.lower().removeprefix("application/") == "at+jwt":
        # An OAuth access token of the same issuer (RFC 9068) is not an ID token (RFC 8725 §3.11).
        raise IdTokenRefused(
            "malformed", "an access token (typ at+jwt), not an ID token", issuer.name
        )
    for name in ("exp", "iat", "nbf"):
        value = unverified.get(name)
        if name in unverified and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise IdTokenRefused("malformed", f"the ID token's {name} is not a number", issuer.name)
    aud = unverified.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and unverified.get("azp") != issuer.audience:
        # OIDC Core 3.1.3.7 (3-5): several audiences, and this registry is not the party the
        # token was issued to.
        raise IdTokenRefused(
            "wrong-audience",
            f"the ID token has several audiences and its azp is not {issuer.audience!r}",
            issuer.name,
        )
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise IdTokenRefused("malformed", "the ID token's kid is not a short string", issuer.name)
    key = keys.find(kid, alg)
    if key is None:
        raise IdTokenRefused(
            "unknown-kid",
            f"no key {str(kid)[:64]!r} for {alg} in {issuer.name}'s key set (after a refetch)",
            issuer.name,
        )
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=issuer.audience,
            issuer=issuer.issuer,
            leeway=issuer.leeway,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.InvalidAudienceError:
        raise IdTokenRefused(
            "wrong-audience", f"the ID token's aud lacks {issuer.audience!r}", issuer.name
        ) from None
    except jwt.ExpiredSignatureError:
        raise IdTokenRefused("expired", "the ID token has expired", issuer.name) from None
    except jwt.ImmatureSignatureError:
        raise IdTokenRefused(
            "not-yet-valid", "the ID token is not valid yet (nbf or iat)", issuer.name
        ) from None
    except jwt.InvalidSignatureError:
        raise IdTokenRefused(
            "bad-signature", "the ID token's signature is wrong", issuer.name
        ) from None
    except jwt.PyJWTError as e:
        # pyjwt's messages may quote the token's header (unsigned text): repr() escapes it.
        text = repr(str(e))[:200]
        raise IdTokenRefused(
            "malformed", f"the ID token is invalid ({text})", issuer.name
        ) from None
    iat = claims.get("iat")
    if isinstance(iat, int | float) and now() - iat > issuer.max_token_age + issuer.leeway:
        raise IdTokenRefused(
            "too-old",
            f"the ID token was issued more than {issuer.max_token_age} s ago",
            issuer.name,
        )
    return identity_from_claims(issuer, claims)


def identity_from_claims(issuer: FederatedIssuer, claims: dict[str, object]) -> FederatedIdentity:
    """Whom verified (or, for the policy tools, given) claims name under `issuer`'s subject
    template and groups claim. Raises IdTokenRefused("missing-claim") when the template needs
    a claim that is absent."""
    try:
        subject = render_subject(issuer.subject, claims)
    except TemplateError as e:
        raise IdTokenRefused("missing-claim", str(e), issuer.name) from None
    groups: tuple[str, ...] = ()
    if issuer.groups_claim:
        groups = tuple(claim_texts(claims, issuer.groups_claim)[:MAX_GROUPS])
    exp = claims.get("exp")
    expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else 0.0
    return FederatedIdentity(issuer.name, subject, groups, dict(claims), expires)
