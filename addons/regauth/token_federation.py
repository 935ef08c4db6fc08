"""OIDC ID tokens as credentials at the token endpoint (issue 24; README "Workload identity
federation"). Where an ID token is accepted, when the policy has `federated_issuers:`:

- as the password of Basic (GET `/v2/token`, what `docker login -u ANY -p ID_TOKEN` and every
  client after it send), whatever the user name (it is recorded, not checked);
- as the password of the POST password grant (containerd, BuildKit, docker engine);
- as the `subject_token` of RFC 8693 token exchange (`grant_type=urn:ietf:params:oauth:
  grant-type:token-exchange`, `subject_token_type` `…:id_token` or `…:jwt`).

The answer is regauth's own short-lived registry token for the identity the ID token names
(`Identity.federated`); an ID token itself is never a Bearer on `/v2/…` (the gate accepts only
tokens for the policy's service from regauth or trusted issuers). Sans-IO apart from what the
key finder does (a JWKS fetch, blocking: such requests go through the login queue).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from regauth.federation.claim_rules import claim_texts
from regauth.federation.claim_rules import template_claims
from regauth.federation.id_token import IdTokenRefused
from regauth.federation.id_token import IssuerKeys
from regauth.federation.id_token import issuer_for
from regauth.federation.id_token import peek
from regauth.federation.id_token import verify_id_token
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import Identity
from regauth.policy.model import ScopeDecision
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.auth_header import split_authorization
from regauth.protocol.errors import Code
from regauth.runtime import Runtime
from regauth.token_request import TokenError
from regauth.token_request import TokenRequest
from regauth.token_request import basic_challenge
from regauth.token_request import first_param
from regauth.token_trace import TokenTrace
from regauth.tokens.claims import InvalidToken

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPES = (
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
)
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def _looks_like_jwt(text: str) -> bool:
    return text.startswith("eyJ") and text.count(".") == 2


def id_token_credential(
    runtime: Runtime, request: TokenRequest, params: dict[str, list[str]], grant_type: str | None
) -> tuple[str, str] | None:
    """(user name, ID token) when the request presents an ID token, None otherwise (then it
    is a password, a refresh token or anonymous). Only when the policy has federated issuers:
    then a JWT where a password goes is an ID token (a job token was recognized before).
    Raises TokenError for a token-exchange request that is not well-formed."""
    if grant_type == TOKEN_EXCHANGE:
        token = first_param(params, "subject_token")
        kind = first_param(params, "subject_token_type")
        if first_param(params, "actor_token") is not None:
            raise TokenError(
                400, Code.UNSUPPORTED, "invalid_request", "actor_token is not supported"
            )
        wanted = first_param(params, "requested_token_type")
        if wanted is not None and wanted != ACCESS_TOKEN_TYPE:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                f"requested_token_type must be {ACCESS_TOKEN_TYPE}",
            )
        for target in ("audience", "resource"):
            value = first_param(params, target)
            if value is not None and value != runtime.policy.service:
                raise TokenError(
                    400,
                    Code.DENIED,
                    "invalid_target",
                    f"this token service issues tokens for {runtime.policy.service!r} only",
                )
        if not token or kind not in ID_TOKEN_TYPES:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                "token exchange needs subject_token and subject_token_type "
                f"{ID_TOKEN_TYPES[0]} or {ID_TOKEN_TYPES[1]}",
            )
        if not runtime.policy.federated_issuers:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "unsupported_grant_type",
                "this policy has no federated_issuers: token exchange is not offered",
            )
        return "", token
    if not runtime.policy.federated_issuers:
        return None
    if grant_type == "password":
        password = first_param(params, "password")
        if password and _looks_like_jwt(password):
            return first_param(params, "username") or "", password
        return None
    if grant_type is not None or not request.authorization:
        return None
    scheme, credentials = split_authorization(request.authorization)
    if scheme.lower() != "basic":
        return None
    try:
        username, password = parse_basic(credentials)
    except ValueError:
        return None
    # An empty user name is a refresh token (`:TOKEN`): regauth's own, never an ID token.
    return (username, password) if username and _looks_like_jwt(password) else None


def federated_identity(
    runtime: Runtime,
    keys: IssuerKeys | None,
    username: str,
    token: str,
    trace: TokenTrace,
    grant_type: str | None = None,
    now: Callable[[], float] = time.time,
) -> Identity:
    """Verify an ID token (`federation.id_token`) and return the identity it names. A refusal
    is a 401 with the Basic challenge, like a wrong password, naming the reason (token
    exchange: 400 invalid_request, RFC 8693 §2.2.2); nothing is counted against login limits
    (a forged token has nothing to guess)."""
    trace.credential = "id_token"
    trace.username = username[:128] or None
    try:
        peeked = peek(token)
        if peeked is None:
            raise IdTokenRefused("malformed", "not a signed JWT")
        issuer = issuer_for(peeked[1], runtime.policy.federated_issuers)
        finder = keys.finder(issuer) if keys is not None else None
        if finder is None:
            raise IdTokenRefused("keys-unavailable", "no key set for this issuer", issuer.name)
        federated = verify_id_token(token, issuer, finder, now)
    except IdTokenRefused as e:
        trace.id_token_refused = e.reason
        trace.federated_issuer = e.issuer
        if grant_type == TOKEN_EXCHANGE:
            raise TokenError(
                400, Code.UNAUTHORIZED, "invalid_request", f"subject_token refused: {e}"
            ) from None
        raise TokenError(
            401,
            Code.UNAUTHORIZED,
            "invalid_grant",
            f"ID token refused: {e}",
            basic_challenge(runtime),
        ) from None
    trace.federated_issuer = federated.issuer
    trace.federated_subject = federated.subject
    return Identity(None, federated=federated)


def _claim_names(federated: FederatedIdentity, runtime: Runtime) -> list[str]:
    """The claims the issuer's subject template, groups claim, and its rules' conditions and
    `${claims.NAME}` patterns read."""
    names: list[str] = []
    for issuer in runtime.policy.federated_issuers:
        if issuer.name == federated.issuer:
            names += template_claims(issuer.subject)
            if issuer.groups_claim:
                names.append(issuer.groups_claim)
    for rule in runtime.policy.rules:
        if federated.issuer in rule.issuers:
            names += [c.claim for c in rule.claims]
            names += [
                p.removeprefix("claims.")
                for pattern in rule.repositories
                for p in pattern.placeholders
                if p.startswith("claims.")
            ]
    return list(dict.fromkeys(names))


def refresh_identity(identity: FederatedIdentity, runtime: Runtime) -> FederatedIdentity:
    """What a refresh token carries of an ID token's identity: only the claims the policy
    reads (the token stays small enough for a Basic header), by their top-level name."""
    kept = {}
    for name in _claim_names(identity, runtime):
        top = name if name in identity.claims else name.split("/", 1)[0]
        if top in identity.claims:
            kept[top] = identity.claims[top]
    return FederatedIdentity(
        identity.issuer, identity.subject, identity.groups, kept, identity.expires_at
    )


def decided_claims(identity: Identity, runtime: Runtime) -> dict[str, str]:
    """The claims that decided, for the log: those the subject template and the claim
    conditions of the rules naming the identity's issuer read (never the token)."""
    federated = identity.federated
    if federated is None:
        return {}
    out: dict[str, str] = {}
    for name in _claim_names(federated, runtime):
        texts = claim_texts(federated.claims, name)
        if texts:
            out[name] = ",".join(texts)[:256]
    return out


def federated_refresh(runtime: Runtime, claims: dict[str, object]) -> FederatedIdentity:
    """The identity a verified federated refresh token carries (`fed`, signed by regauth when
    it verified the ID token). Raises InvalidToken when its issuer left the policy."""
    fed = claims.get("fed")
    if not isinstance(fed, dict):
        raise InvalidToken("malformed federated refresh token")
    name = fed.get("iss")
    entry = next((i for i in runtime.policy.federated_issuers if i.name == name), None)
    if entry is None:
        raise InvalidToken(f"federated issuer {str(name)[:64]!r} is no longer in the policy")
    if fed.get("url") != entry.issuer:
        raise InvalidToken(f"federated issuer {str(name)[:64]!r} names another issuer now")
    groups = fed.get("groups")
    original = fed.get("claims")
    exp = claims.get("exp")
    return FederatedIdentity(
        str(name),
        str(claims.get("sub", "")),
        tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        dict(original) if isinstance(original, dict) else {},
        float(exp) if isinstance(exp, int | float) else 0.0,
    )


MAX_MISMATCHES = 8


def claim_mismatches(
    identity: Identity, runtime: Runtime, decisions: list[ScopeDecision]
) -> list[dict[str, object]]:
    """For each scope not wholly granted to an identity from an ID token: the rules naming its
    issuer that cover the repository, and the first claim condition each failed (`trace`'s
    `claim-mismatch`). Values of claims are logged (they decided); the token never is."""
    federated = identity.federated
    if federated is None:
        return []
    out: list[dict[str, object]] = []
    for decision in decisions:
        scope = decision.requested
        if set(scope.actions) <= set(decision.granted) or "*" in decision.granted:
            continue
        for rule in runtime.policy.rules:
            if federated.issuer not in rule.issuers or not rule.matches_resource(scope, identity):
                continue
            failed = next((c for c in rule.claims if not c.holds(federated.claims)), None)
            if failed is None:
                continue
            have = claim_texts(federated.claims, failed.claim)
            out.append(
                {
                    "scope": str(scope),
                    "rule": rule.index,
                    "line": rule.line,
                    "claim": failed.claim,
                    "expected": list(failed.values),
                    "got": ",".join(have)[:256] if have else None,
                }
            )
            if len(out) >= MAX_MISMATCHES:
                return out
    return out
