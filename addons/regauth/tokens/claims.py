"""The grants a token's claims carry, and the one error verification raises.

distribution's `access` claim (`access_claim`), and trusted issuers' claim shapes (`access`,
`repos`, `repo_access`: one `ClaimReader` each, `CLAIM_READERS`, picked once per issuer when the
verifier is built) with the mapping of their action names to registry actions (README
"trusted_issuers"; a destructive action is never a default: `delete` and `*` grant nothing
unless the issuer's `actions` names them). Every list is bounded (`MAX_ACCESS_ENTRIES`); anything
else is `InvalidToken`, with a reason safe to log.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable

from regauth.policy.model import ClaimShape
from regauth.policy.model import TrustedIssuer
from regauth.protocol.scope import REPOSITORY
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import parse_scope

MAX_ACCESS_ENTRIES = 256


class InvalidToken(ValueError):
    """The token must not be honoured; the message says why (safe to log, never the token)."""


def access_claim(value: object) -> tuple[ResourceScope, ...]:
    if not isinstance(value, list) or len(value) > MAX_ACCESS_ENTRIES:
        raise InvalidToken("malformed access claim")
    grants = []
    for entry in value:
        if not isinstance(entry, dict):
            raise InvalidToken("malformed access claim entry")
        actions = entry.get("actions")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise InvalidToken("malformed access claim actions")
        if not actions:
            continue
        try:
            grants.append(
                parse_scope(f"{entry.get('type')}:{entry.get('name')}:{','.join(actions)}")
            )
        except ValueError as e:
            raise InvalidToken(f"access claim outside the scope grammar: {e}") from None
    return tuple(grants)


def map_actions(names: Iterable[object], trusted: TrustedIssuer) -> list[str]:
    mapped: list[str] = []
    for name in names:
        mapped.extend(trusted.action_map.get(str(name), ()))
    return mapped


# The grants a verified token of a trusted issuer carries, read from its claims.
ClaimReader = Callable[[dict[str, object], TrustedIssuer], tuple[ResourceScope, ...]]


def external_grants(claims: dict[str, object], trusted: TrustedIssuer) -> tuple[ResourceScope, ...]:
    """Grants from the claim shape the issuer uses, mapped to registry actions per the policy."""
    return CLAIM_READERS[trusted.claims](claims, trusted)


def _access_grants(claims: dict[str, object], trusted: TrustedIssuer) -> tuple[ResourceScope, ...]:
    # Actions go through the policy's mapping here too: delete and `*` only if named.
    out = []
    for grant in access_claim(claims.get("access", [])):
        mapped = map_actions(list(grant.actions), trusted)
        if mapped:
            out.append(grant.with_actions(mapped))
    return tuple(out)


def _repos_grants(claims: dict[str, object], trusted: TrustedIssuer) -> tuple[ResourceScope, ...]:
    repos = claims.get("repos")
    if not isinstance(repos, list) or len(repos) > MAX_ACCESS_ENTRIES:
        raise InvalidToken("malformed repos claim")
    out = []
    for name in repos:
        try:
            out.append(parse_scope(f"{REPOSITORY}:{name}:{','.join(trusted.repos_actions)}"))
        except ValueError as e:
            raise InvalidToken(f"repos claim outside the name grammar: {e}") from None
    return tuple(out)


def _repo_access_grants(
    claims: dict[str, object], trusted: TrustedIssuer
) -> tuple[ResourceScope, ...]:
    entries = claims.get("repo_access")
    if not isinstance(entries, list) or len(entries) > MAX_ACCESS_ENTRIES:
        raise InvalidToken("malformed repo_access claim")
    out = []
    name: object  # a scope's name, or whatever an entry object holds (parse_scope judges it)
    for entry in entries:
        if isinstance(entry, str):
            try:
                parsed = parse_scope(entry)
            except ValueError as e:
                raise InvalidToken(f"repo_access entry outside the scope grammar: {e}") from None
            if parsed.type != REPOSITORY:
                continue  # repo_access grants repositories only; never reinterpret a type
            name, actions = parsed.name, list(parsed.actions)
        elif isinstance(entry, dict):
            name = entry.get("repository", entry.get("name"))
            actions = entry.get("actions", [])
            if not isinstance(actions, list):
                raise InvalidToken("malformed repo_access actions")
        else:
            raise InvalidToken("malformed repo_access entry")
        mapped = map_actions(actions, trusted)
        if not mapped:
            continue
        try:
            out.append(parse_scope(f"{REPOSITORY}:{name}:{','.join(dict.fromkeys(mapped))}"))
        except ValueError as e:
            raise InvalidToken(f"repo_access entry outside the name grammar: {e}") from None
    return tuple(out)


CLAIM_READERS: dict[ClaimShape, ClaimReader] = {
    "access": _access_grants,
    "repos": _repos_grants,
    "repo_access": _repo_access_grants,
}
