"""Which of regauth's signing keys a token-mode registry refuses, from its answers.

distribution reads its `auth.token.rootcertbundle` at start only: a registry that was not
restarted after a new key began signing answers `401` with `error="invalid_token"` to every token
that key signed (registry/auth/token/accesscontroller.go). When the registry refuses a token that
regauth issued and that verifies against regauth's own keys at that moment, the likely cause is
that key, and it is named by its `kid` (in the policy's `token.kid` format). Causes this rules
out first: the registry's challenge names another service (its `auth.token.service` differs),
or its clock (`Date`) is more than distribution's 60 s leeway away from regauth's. An issuer
mismatch looks the same from outside; the operator's message mentions the bundle because a key
change is what the lifecycle makes routine.

A later answer other than 401 to a token of the same key means the registry trusts it (again).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from regauth.protocol.auth_header import split_authorization
from regauth.runtime import Runtime
from regauth.tokens.claims import InvalidToken
from regauth.tokens.keyids import key_id
from regauth.tokens.verify import VerifiedToken

REGISTRY_LEEWAY = 60  # seconds: distribution's leeway on exp and nbf (token.go)


@dataclass(frozen=True)
class KeyVerdict:
    """The upstream refused (`refused`) or accepted a token regauth signed with key `kid`."""

    kid: str
    refused: bool


def _own_token(
    runtime: Runtime, verified: VerifiedToken | None, authorization: str | None
) -> VerifiedToken | None:
    """The regauth token the request carried, verified now (enforce mode: the gate already
    did; delegate mode: here), or None."""
    if verified is None and authorization:
        scheme, credentials = split_authorization(authorization)
        if scheme.lower() != "bearer" or not credentials:
            return None
        try:
            verified = runtime.verifier.verify_access(credentials)
        except InvalidToken:
            return None
    if verified is None or verified.source != "regauth" or verified.signing_key is None:
        return None
    return verified


def _clock_off(upstream_date: str | None, now: float) -> bool:
    if not upstream_date:
        return False
    try:
        registry_now = email.utils.parsedate_to_datetime(upstream_date).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
    return abs(registry_now - now) > REGISTRY_LEEWAY


def judge(
    runtime: Runtime,
    status: int,
    challenges: list[dict[str, object]],
    verified: VerifiedToken | None,
    authorization: str | None,
    upstream_date: str | None,
    now: float,
) -> KeyVerdict | None:
    """What an upstream answer says about regauth's key, or None if it says nothing.

    `status` is the upstream's; `challenges` its parsed `WWW-Authenticate` challenges
    (`Challenge.as_record`); `verified` the token the gate verified (enforce mode) or None;
    `authorization` the client's header (delegate mode); `upstream_date` the registry's `Date`;
    `now` epoch seconds. Server errors say nothing about tokens.
    """
    if status >= 500:
        return None
    token = _own_token(runtime, verified, authorization)
    if token is None:
        return None
    key = next((k for k in runtime.keyring.keys if k.name == token.signing_key), None)
    if key is None:
        return None
    kid = key_id(key.public_key, runtime.policy.token.kid_format)
    if status != 401:
        return KeyVerdict(kid, refused=False)
    bearer = [c for c in challenges if str(c.get("scheme", "")).lower() == "bearer"]
    if any(c.get("error") not in (None, "invalid_token") for c in bearer):
        return None  # insufficient_scope: the token is trusted, its grants fall short
    if any(c.get("service") not in (None, runtime.policy.service) for c in bearer):
        return None  # the registry serves another service: not a key problem
    if _clock_off(upstream_date, now):
        return None
    return KeyVerdict(kid, refused=True)
