"""Verifying tokens presented to regauth (`TokenVerifier`): its own, and trusted issuers'.

Verification never takes a key from the token: keys come from regauth's own trust store
(selected by `kid`, both libtrust and RFC 7638 forms) or from issuers the policy declares, each
with a fixed algorithm; `jwk`, `jku`, `x5u` and `crit` headers are refused; `x5c` is accepted
only when its leaf is one of the trusted signing certificates. Every input is bounded before
PyJWT parses it (`MAX_TOKEN_LENGTH`, strict JSON with a nesting limit, `MAX_ACCESS_ENTRIES`).
Raises `InvalidToken` (a ValueError) with a reason safe to log, and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

import jwt

from regauth.ops.pki import SigningKey
from regauth.policy.model import Account
from regauth.policy.model import TrustedIssuer
from regauth.protocol import strict_json
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import covers
from regauth.tokens.claims import CLAIM_READERS
from regauth.tokens.claims import ClaimReader
from regauth.tokens.claims import InvalidToken
from regauth.tokens.claims import access_claim
from regauth.tokens.issue import ACCESS_TYP
from regauth.tokens.issue import JOB_TYP
from regauth.tokens.issue import REFRESH_TYP
from regauth.tokens.issue import credential_fingerprint
from regauth.tokens.keyids import VerificationKey
from regauth.tokens.keyring import KeyRing

MAX_TOKEN_LENGTH = 8192


MAX_HEADER_JSON = 4096


MAX_JSON_DEPTH = 8  # the access claim nests 3 levels: claims > access > entry > actions


# NumericDate bounds: the epoch to 9999-12-31T23:59:59Z (what Go's time and JSON agree on).
NUMERIC_DATE_RANGE = (0, 253_402_300_799)


DEFAULT_LEEWAY = 30


_FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "crit")


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class JobClaims:
    """A verified job token: whom it names (`regauth:build:ID`, `regauth:account:NAME`), its id,
    expiry (epoch seconds) and the scopes it may grant at most."""

    subject: str
    jti: str
    exp: int
    access: tuple[ResourceScope, ...]


@dataclass(frozen=True)
class VerifiedToken:
    """An access token that passed every check, and what it grants (`TokenVerifier`)."""

    issuer: str  # its `iss`
    subject: str  # its `sub`: the account it was issued to ("" for anonymous)
    audience: str  # its `aud`, several joined with ","
    jti: str | None  # its id, if it has one
    expires_at: int  # its `exp`, epoch seconds
    grants: tuple[ResourceScope, ...]  # in registry actions (a trusted issuer's mapped)
    source: str  # "regauth" or the trusted issuer's name
    signing_key: str | None = None  # regauth's key that signed it (its file stem)

    def allows(self, required: ResourceScope) -> bool:
        return covers(self.grants, required)


def _split(token: str) -> tuple[dict[str, object], dict[str, object]]:
    """The unverified (header, claims) of a compact JWS; raise InvalidToken, nothing else.

    Both segments must be base64url of a JSON object within strict_json's bounds (nesting
    depth, finite numbers, unique member names): this runs before PyJWT parses them again.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(f"token longer than {MAX_TOKEN_LENGTH} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]) or not parts[2]:
        raise InvalidToken("not a signed compact JWT")
    if any(not set(p) <= _B64URL for p in parts):
        raise InvalidToken("JWT segments are not base64url")
    if len(parts[0]) > MAX_HEADER_JSON * 4 // 3 + 4:
        raise InvalidToken("JWT header too large")
    try:
        header = strict_json.loads(_b64decode(parts[0]), MAX_JSON_DEPTH)
        claims = strict_json.loads(_b64decode(parts[1]), MAX_JSON_DEPTH)
    except ValueError as e:  # binascii.Error and strict_json.JsonError are ValueErrors
        raise InvalidToken(f"undecodable JWT header or claims: {e}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("JWT header and claims must be objects")
    return header, claims


def _b64decode(segment: str) -> bytes:
    if len(segment) % 4 == 1:
        raise binascii.Error("impossible base64url length")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _numeric_date(claims: dict[str, object], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2): absent, or a finite JSON number of seconds within
    NUMERIC_DATE_RANGE. Booleans, strings, NaN, infinities and huge integers are refused."""
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not NUMERIC_DATE_RANGE[0] <= value <= NUMERIC_DATE_RANGE[1]
    ):
        # The range check is also False for NaN, so NaN is refused here.
        raise InvalidToken(
            f"{name} must be a number of seconds between "
            f"{NUMERIC_DATE_RANGE[0]} and {NUMERIC_DATE_RANGE[1]}"
        )
    return value


@dataclass
class TokenVerifier:
    """Checks tokens presented to regauth; caches successes by token hash until their `exp`.

    Each trusted issuer's claim reader is picked once, here (`tokens.claims.CLAIM_READERS`).
    """

    keyring: KeyRing
    service: str
    issuer: str
    trusted: tuple[TrustedIssuer, ...] = ()
    leeway: int = DEFAULT_LEEWAY
    clock: Callable[[], float] = time.time
    cache_size: int = 4096
    _cache: OrderedDict[bytes, VerifiedToken] = field(default_factory=OrderedDict)
    _readers: tuple[tuple[TrustedIssuer, ClaimReader], ...] = field(init=False)

    def __post_init__(self) -> None:
        self._readers = tuple((t, CLAIM_READERS[t.claims]) for t in self.trusted)

    def verify_access(self, token: str) -> VerifiedToken:
        # surrogatepass: injective for every str (a lone surrogate must not raise here).
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at > self.clock():
                self._cache.move_to_end(digest)
                return cached
            del self._cache[digest]
        verified = self._verify_uncached(token)
        # Never serve a cached result past exp (a fresh verification would apply the leeway).
        self._cache[digest] = verified
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return verified

    @property
    def cache_entries(self) -> int:
        return len(self._cache)

    def _verify_uncached(self, token: str) -> VerifiedToken:
        header, unverified = _split(token)
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise InvalidToken(
                    f"JWT header {name!r} is not accepted (keys come only from "
                    "regauth's trust store)"
                )
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidToken("JWT header has no alg")
        iss = unverified.get("iss")
        if iss == self.issuer:
            return self._verify_own(token, header, alg)
        for trusted, reader in self._readers:
            if iss == trusted.issuer:
                return self._verify_trusted(token, header, alg, trusted, reader)
        raise InvalidToken("token issuer is not trusted")

    def _own_key(self, header: dict[str, object]) -> SigningKey:
        kid = header.get("kid")
        key = self.keyring.by_kid.get(kid) if isinstance(kid, str) else None
        x5c = header.get("x5c")
        if x5c is not None:
            if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
                raise InvalidToken("malformed x5c header")
            try:
                leaf = base64.b64decode(x5c[0], validate=True)
            except ValueError:  # binascii.Error, or non-ASCII text
                raise InvalidToken("malformed x5c header") from None
            by_cert = self.keyring.by_der.get(leaf)
            if by_cert is None:
                raise InvalidToken("x5c certificate is not a trusted signing certificate")
            if key is not None and key is not by_cert:
                raise InvalidToken("x5c and kid name different keys")
            key = by_cert
        if key is None:
            raise InvalidToken("unknown key id")
        return key

    def _decode(
        self, token: str, key: VerificationKey, alg: str, allowed: str, audience: str, issuer: str
    ) -> dict[str, object]:
        if alg != allowed:
            raise InvalidToken(f"algorithm {alg} is not accepted for this key (only {allowed})")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[allowed],
                audience=audience,
                issuer=issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as e:
            raise _explain(e) from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: dict[str, object]) -> None:
        """exp and nbf against this verifier's clock (PyJWT would use the wall clock); exp, nbf
        and iat must be NumericDates (exp required). Raise InvalidToken."""
        now = self.clock()
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        _numeric_date(claims, "iat")
        if exp is None:
            raise InvalidToken("exp is required")
        if now > exp + self.leeway:
            raise InvalidToken("token expired")
        if nbf is not None and now < nbf - self.leeway:
            raise InvalidToken("token not valid yet")

    def _verify_own(self, token: str, header: dict[str, object], alg: str) -> VerifiedToken:
        if header.get("typ") != ACCESS_TYP:
            raise InvalidToken("not a regauth access token (typ)")
        key = self._own_key(header)
        claims = self._decode(token, key.public_key, alg, key.algorithm, self.service, self.issuer)
        if not isinstance(claims.get("aud"), str):
            raise InvalidToken("audience must be a single string")
        grants = access_claim(claims.get("access", []))
        return _verified(claims, grants, "regauth", key.name)

    def _verify_trusted(
        self,
        token: str,
        header: dict[str, object],
        alg: str,
        trusted: TrustedIssuer,
        reader: ClaimReader,
    ) -> VerifiedToken:
        kid = header.get("kid")
        candidates = [
            k
            for k, key_kid in zip(trusted.keys, trusted.key_ids, strict=True)
            if key_kid is None or key_kid == kid
        ]
        if not candidates:
            raise InvalidToken("unknown key id for trusted issuer")
        last: InvalidToken | None = None
        for key in candidates:
            try:
                claims = self._decode(
                    token, key, alg, trusted.algorithms[0], trusted.audience, trusted.issuer
                )
                break
            except InvalidToken as e:
                last = e
        else:
            assert last is not None
            raise last
        return _verified(claims, reader(claims, trusted), trusted.issuer)

    def verify_job(self, token: str, job_audience: str) -> JobClaims:
        """A job token's subject, id, expiry and scope cap; InvalidToken for anything else
        (another typ or audience, a key regauth does not hold, expired, malformed claims).
        Revocation is the caller's (`ops.job_tokens`)."""
        header, _ = _split(token)
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise InvalidToken(f"JWT header {name!r} is not accepted")
        if header.get("typ") != JOB_TYP:
            raise InvalidToken("not a regauth job token")
        key = self._own_key(header)
        claims = self._decode(
            token, key.public_key, str(header.get("alg")), key.algorithm, job_audience, self.issuer
        )
        jti, sub, exp = claims.get("jti"), claims.get("sub"), claims.get("exp")
        if not isinstance(jti, str) or not isinstance(sub, str) or not isinstance(exp, int):
            raise InvalidToken("job token claims jti, sub and exp are required")
        return JobClaims(sub, jti, exp, tuple(access_claim(claims.get("access", []))))

    @staticmethod
    def looks_like_job_token(text: str) -> bool:
        """Whether `text` is a JWS whose header says it is a job token (not verified): how the
        token endpoint tells a job token from a password without trying bcrypt on it."""
        if text.count(".") != 2 or len(text) > 16384 or not text.startswith("eyJ"):
            return False
        try:
            header, _ = _split(text)
        except InvalidToken:
            return False
        return header.get("typ") == JOB_TYP

    def verify_refresh(
        self, token: str, refresh_audience: str, accounts: dict[str, Account]
    ) -> Account:
        claims = self.refresh_claims(token, refresh_audience)
        if "fed" in claims:
            raise InvalidToken("the refresh token is for an identity from an ID token")
        return self.refresh_account(claims, accounts)

    def refresh_claims(self, token: str, refresh_audience: str) -> dict[str, object]:
        """The claims of a refresh token regauth signed for `refresh_audience` (signature,
        type, audience, issuer and lifetime checked); InvalidToken otherwise."""
        header, _ = _split(token)
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise InvalidToken(f"JWT header {name!r} is not accepted")
        if header.get("typ") != REFRESH_TYP:
            raise InvalidToken("not a regauth refresh token")
        alg = header.get("alg")
        key = self._own_key(header)
        return self._decode(
            token, key.public_key, str(alg), key.algorithm, refresh_audience, self.issuer
        )

    @staticmethod
    def refresh_account(claims: dict[str, object], accounts: dict[str, Account]) -> Account:
        """The account a verified refresh token names, if its password is still the same."""
        account = accounts.get(str(claims.get("sub", "")))
        if account is None:
            raise InvalidToken("the refresh token's account no longer exists")
        cfp = claims.get("cfp")
        if not isinstance(cfp, str) or not hmac.compare_digest(
            cfp.encode("utf-8", "surrogatepass"), credential_fingerprint(account).encode()
        ):
            raise InvalidToken("the account's password changed since this refresh token was issued")
        return account


_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidAudienceError, "token audience is not this registry"),
    (jwt.InvalidIssuerError, "token issuer mismatch"),
    (jwt.InvalidSignatureError, "signature verification failed"),
    (jwt.MissingRequiredClaimError, "a required claim (exp, iss, aud) is missing"),
)


def _explain(error: Exception) -> InvalidToken:
    for kind, reason in _PYJWT_REASONS:
        if isinstance(error, kind):
            return InvalidToken(reason)
    return InvalidToken(f"invalid token: {type(error).__name__}")


def _verified(
    claims: dict[str, object],
    grants: tuple[ResourceScope, ...],
    source: str,
    signing_key: str | None = None,
) -> VerifiedToken:
    exp = claims.get("exp")
    aud = claims.get("aud")  # PyJWT checked it against the audience: a string or a list of them
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return VerifiedToken(
        issuer=str(claims.get("iss")),
        subject=str(claims.get("sub", "")),
        audience=",".join(map(str, audiences)),
        jti=str(claims["jti"]) if "jti" in claims else None,
        expires_at=int(exp) if isinstance(exp, (int, float)) else 0,
        grants=grants,
        source=source,
        signing_key=signing_key,
    )
