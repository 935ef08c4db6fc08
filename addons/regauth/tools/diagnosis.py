"""Known failure patterns of registry auth, recognised in exchange-log conversations.

Each detector reads one conversation (and, where "afterwards" or "again" matters, every record
of the same client) and returns what it recognised, in registry terms, with a hint at the fix:

| code | pattern |
|---|---|
| `no-token-request` | a challenge with no token request from that client afterwards |
| `bad-credentials` | the token endpoint refused the login (wrong password or unknown account) |
| `id-token-refused` | the token endpoint refused an OIDC ID token (audience, expiry, kid, …) |
| `claim-mismatch` | an ID token got less than asked: the rule and the claim that failed |
| `rate-limited` | the token endpoint answered 429 (too many failed logins) |
| `login-queue` | 429 from the login queue (too many of the network's logins waiting) |
| `partial-grant` | a token granted less than requested, and which rule decided |
| `insufficient-scope` | a request with a token from this conversation got insufficient_scope |
| `service-mismatch` | the registry's `auth.token.service` (or the client's) is not the policy's |
| `basic-on-registry` | a client sent Basic credentials to a registry route |
| `challenge-loop` | the same challenge to the same client over and over |
| `registry-refused-token` | a token-mode registry refused regauth's token (invalid_token) |
| `upstream-credentials-refused` | the upstream refused the credentials regauth injected |
| `delegate-check-refused` | delegate mode: the registry is not known to check regauth's tokens |
| `regauth-overloaded` | 503 from regauth's connection or registry-connection ceiling |
| `body-too-slow` | regauth cut a request whose body stopped arriving (`regauth_body_min_rate`) |
| `tls-untrusted` | the client rejected regauth's certificate (a `tls` record): trust snippets |
| `tls-closed`, `tls-version`, `tls-other` | the client's TLS handshake failed otherwise |

`Diagnosis.hint` may span lines (the trust snippets); `trace` prints each line indented.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from regauth.ops.exchange_record import TLS_KIND
from regauth.ops.exchange_record import ChallengeRecord
from regauth.ops.safe_text import quote
from regauth.tools.log_records import Conversation
from regauth.tools.log_records import Entry
from regauth.tools.trust_snippets import safe_host
from regauth.tools.trust_snippets import snippets

# Clients ask for a token within milliseconds of a challenge; one that has not asked this
# long afterwards (or did something else meanwhile) is not going to.
TOKEN_WAIT = dt.timedelta(seconds=5)
# The same challenge this many times within LOOP_WINDOW is a loop.
LOOP_COUNT = 3
LOOP_WINDOW = dt.timedelta(seconds=60)
# distribution's leeway for exp/nbf (registry/auth/token/token.go, both 2.8 and 3.x).
REGISTRY_LEEWAY = 60


@dataclass(frozen=True)
class Diagnosis:
    code: str
    title: str
    detail: str
    hint: str
    line: int  # the log line that shows it

    def as_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "hint": self.hint,
            "log_line": self.line,
        }


@dataclass
class Context:
    """Everything the detectors may look at besides the conversation itself: the records
    around it (the whole log, or `trace`'s window of recent records when it streams) by
    client address."""

    entries: Sequence[Entry]  # the records around the conversation, in time order
    end: dt.datetime | None  # the time of the last record, or now if later
    clients: Mapping[str, Sequence[Entry]] | None = None  # client address → its entries;
    # built from `entries` when not given

    def of_client(self, address: str) -> Sequence[Entry]:
        """The records of the client at `address`, in time order."""
        if self.clients is None:
            index: dict[str, list[Entry]] = {}
            for e in self.entries:
                index.setdefault(e.client_ip, []).append(e)
            self.clients = index
        return self.clients.get(address, ())


def _q(value: object) -> str:
    """An untrusted value between quotes (safe_text.quote); a non-string as Python shows it."""
    return quote(value) if isinstance(value, str) else repr(value)


def _challenge_error(entry: Entry) -> str | None:
    challenge = entry.bearer_challenge
    error = challenge.error if challenge else None
    if error is None:
        for upstream in entry.upstream_challenges:
            if upstream.error:
                error = upstream.error
    return error or None


def _is_challenge(entry: Entry) -> bool:
    return (
        entry.kind == "registry"
        and entry.status == 401
        and (entry.bearer_challenge is not None or bool(entry.upstream_challenges))
    )


def _scopes(challenge: ChallengeRecord | None) -> list[str]:
    return list(challenge.scopes or ()) if challenge else []


# -- detectors -------------------------------------------------------------------------------


def no_token_request(c: Conversation, ctx: Context) -> list[Diagnosis]:
    if any(e.kind == "token" for e in c.entries):
        return []
    for entry in c.entries:
        if not _is_challenge(entry) or _challenge_error(entry) or entry.auth_scheme == "Bearer":
            continue
        at = entry.time
        if at is None or ctx.end is None:
            continue
        if ctx.end - at < TOKEN_WAIT and not _later_activity(entry, ctx):
            continue  # too early to tell
        later = [
            e
            for e in ctx.of_client(entry.client_ip)
            if e.time
            and at <= e.time <= at + TOKEN_WAIT
            and (e.kind == "token" or e.auth_scheme == "Bearer")
        ]
        if later:
            continue
        bearer = entry.bearer_challenge
        realm = bearer.realm if bearer is not None and bearer.realm is not None else "the realm"
        failed = next(
            (
                e
                for e in ctx.of_client(entry.client_ip)
                if e.kind == TLS_KIND and e.time and at <= e.time <= at + TOKEN_WAIT
            ),
            None,
        )
        handshake = (
            f"; its TLS handshake failed right after ({failed.location}: see its "
            "conversation for how that client trusts regauth's CA)"
            if failed is not None
            else ""
        )
        return [
            Diagnosis(
                "no-token-request",
                "challenge not followed by a token request",
                f"{entry.client_ip} got a 401 challenge for {entry.method} {entry.path} and never "
                f"asked {realm} for a token{handshake}",
                "the process that fetches tokens does not trust regauth's CA (buildx/buildctl "
                "fetch tokens on the client host; SSL_CERT_FILE, certs.d, hosts.toml), or the "
                "client is configured for a plain-http or insecure registry",
                entry.line,
            )
        ]
    return []


@dataclass(frozen=True)
class Pending:
    """A diagnosis that time will decide: what the log is waiting for, and until when."""

    code: str  # the diagnosis it becomes if nothing arrives
    waiting_for: str  # in words: `a token request from 10.0.0.1`
    until: dt.datetime  # when it is decided (the record's time + the wait)
    line: int

    def seconds_left(self, end: dt.datetime | None) -> float:
        return max(0.0, (self.until - end).total_seconds()) if end is not None else 0.0

    def as_json(self, end: dt.datetime | None) -> dict[str, object]:
        return {
            "code": self.code,
            "waiting_for": self.waiting_for,
            "until": self.until.isoformat(timespec="milliseconds"),
            "seconds_left": round(self.seconds_left(end), 3),
            "log_line": self.line,
        }


def pending(c: Conversation, ctx: Context) -> list[Pending]:
    """What the log does not tell yet: a challenge whose token request may still come
    (`no-token-request` is said only TOKEN_WAIT after the challenge)."""
    if any(e.kind == "token" for e in c.entries):
        return []
    for entry in c.entries:
        if not _is_challenge(entry) or _challenge_error(entry) or entry.auth_scheme == "Bearer":
            continue
        at = entry.time
        if at is None or ctx.end is None:
            continue
        if ctx.end - at < TOKEN_WAIT and not _later_activity(entry, ctx):
            bearer = entry.bearer_challenge
            realm = f" at {bearer.realm}" if bearer is not None and bearer.realm else ""
            return [
                Pending(
                    "no-token-request",
                    f"a token request from {entry.client_ip}{realm}",
                    at + TOKEN_WAIT,
                    entry.line,
                )
            ]
    return []


def _later_activity(entry: Entry, ctx: Context) -> bool:
    """True when the same client sent anything after `entry` (so it is not still waiting)."""
    return any(
        e.time and entry.time and e.time > entry.time and e is not entry
        for e in ctx.of_client(entry.client_ip)
    )


_ID_TOKEN_HINTS = {
    "issuer-not-configured": "add a `federated_issuers` entry whose `issuer` is exactly the "
    "token's iss (scheme, host, path; no trailing slash unless the token has one)",
    "wrong-audience": "ask the CI system for a token with the entry's `audience`: GitHub "
    "`$ACTIONS_ID_TOKEN_REQUEST_URL&audience=…`, GitLab `id_tokens: NAME: aud:`, Kubernetes "
    "`serviceAccountToken.audience`",
    "expired": "the job used its ID token after it expired: fetch it right before the login "
    "(GitHub's live 5-10 min), or check this host's clock",
    "not-yet-valid": "the token is from the future: check the clocks of regauth and the issuer "
    "(`leeway` allows up to 300 s)",
    "too-old": "the token was issued longer ago than the entry's `max_token_age`",
    "unknown-kid": "regauth refetched the issuer's key set and the key is not in it: check "
    "`jwks_uri`/`jwks_file` is that issuer's (a Kubernetes cluster rotates its keys: refresh "
    "the file), and `/readyz` for key-set fetch warnings",
    "keys-unavailable": "regauth has no key set for the issuer yet: see `/readyz` warnings and "
    "the log for the fetch error (https, ca_file, network)",
    "algorithm-not-allowed": "the token's alg is not in the entry's `algorithms` (none and HMAC "
    "are never accepted): a forged token, or add the issuer's real algorithm",
    "bad-signature": "the signature does not verify with the issuer's key: a forged or altered "
    "token, or one from another issuer using the same kid",
    "missing-claim": "the entry's `subject` template names a claim this token lacks",
    "too-large": "ID tokens are at most 8 KiB",
    "malformed": "not a usable JWT (shape, nesting, or a required claim: iss, aud, exp, iat, sub)",
}


def id_token_refused(c: Conversation, ctx: Context) -> list[Diagnosis]:
    """The token endpoint refused an OIDC ID token (`token_response.id_token_refused`)."""
    for entry in c.entries:
        reason = entry.token_response.id_token_refused if entry.kind == "token" else None
        if reason:
            issuer = entry.token_response.federated_issuer
            return [
                Diagnosis(
                    "id-token-refused",
                    f"ID token refused: {reason}",
                    f"{entry.client_ip}"
                    + (f", issuer {_q(issuer)}" if issuer else "")
                    + f": {entry.token_refused or reason}",
                    _ID_TOKEN_HINTS.get(reason, "see README, Workload identity federation"),
                    entry.line,
                )
            ]
    return []


def claim_mismatch(c: Conversation, ctx: Context) -> list[Diagnosis]:
    """An ID token's identity got less than it asked: the issuer's rule and the claim that
    failed (`token_response.claim_mismatches`)."""
    for entry in c.entries:
        mismatches = entry.token_response.claim_mismatches if entry.kind == "token" else None
        if not mismatches:
            continue
        parts = []
        for m in mismatches:
            expected = m.get("expected")
            wanted = ", ".join(str(v) for v in expected) if isinstance(expected, list) else "?"
            got = m.get("got")
            parts.append(
                f"{m.get('scope')}: rule {m.get('rule')} (line {m.get('line')}) needs claim "
                f"{_q(m.get('claim'))} = {_q(wanted)}, the token has "
                + (_q(got) if got is not None else "none")
            )
        who = entry.token_response.federated_subject or "the ID token"
        return [
            Diagnosis(
                "claim-mismatch",
                "an ID token's claims do not meet the rule",
                f"{_q(who)}: " + "; ".join(parts),
                "run the job from what the rule expects (branch, project, namespace), or change "
                "the rule's `claims:` (try it first: `regauth policy explain --claims FILE.json`)",
                entry.line,
            )
        ]
    return []


def bad_credentials(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        if entry.kind == "token" and entry.token_response.credential == "id_token":
            continue  # id_token_refused says why
        if entry.kind == "token" and entry.status == 401:
            user = entry.token_request.username or entry.basic_username
            who = f"user {_q(user)}" if user else "a refresh token"
            return [
                Diagnosis(
                    "bad-credentials",
                    "bad credentials or unknown account",
                    f"the token endpoint refused {who}: {entry.token_refused or 'unauthorized'}",
                    "check the client's login (docker/skopeo login, --creds, --user) against the "
                    "policy's accounts; regauth does not say which of name or password is wrong",
                    entry.line,
                )
            ]
    return []


def rate_limited(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        if entry.kind == "token" and entry.status == 429:
            user = entry.token_request.username or entry.basic_username or "?"
            limit = entry.token_response.rate_limited
            if isinstance(limit, str) and limit.startswith("login queue"):
                return [
                    Diagnosis(
                        "login-queue",
                        "refused by the login queue",
                        f"{_q(user)} from {entry.client_ip}: {limit} (too many logins from that "
                        "network were waiting for a password check; nothing was checked or "
                        "counted)",
                        "retry after a second; many parallel logins from one host with the same "
                        "credentials share one check, different ones wait their turn (4 at most "
                        "per network): use a refresh token (docker login) or fewer parallel logins",
                        entry.line,
                    )
                ]
            return [
                Diagnosis(
                    "rate-limited",
                    "rate limited",
                    f"too many failed logins for {_q(user)} from {entry.client_ip}: "
                    f"{entry.token_refused or '429'}",
                    "fix the credentials first (the failed logins before this one), then wait for "
                    "the Retry-After period",
                    entry.line,
                )
            ]
    return []


def partial_grant(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        short = [d for d in entry.decisions if d.outcome != "granted"]
        if entry.kind != "token" or not short:
            continue
        parts = [
            f"{d.scope} → [{','.join(d.granted) or '-'}] "
            f"by {d.rule_label('default deny (no rule matched)')}"
            for d in short
        ]
        who = entry.token_account or "anonymous"
        return [
            Diagnosis(
                "partial-grant",
                "granted less than requested",
                f"{who}: " + "; ".join(parts),
                "`regauth policy explain POLICY --account NAME SCOPE` shows the decision; change "
                "that rule (or an earlier one) if the access is intended",
                entry.line,
            )
        ]
    return []


def insufficient_scope(c: Conversation, ctx: Context) -> list[Diagnosis]:
    grants = {e.issued_jti: e for e in c.entries if e.issued_jti}
    if not grants:
        return []
    for entry in c.entries:
        if not _is_challenge(entry) or _challenge_error(entry) != "insufficient_scope":
            continue
        token = grants.get(entry.verified_jti or "")
        if token is None:
            continue
        missing = _scopes(entry.bearer_challenge) or [
            s for u in entry.upstream_challenges for s in _scopes(u)
        ]
        requested = token.requested
        asked = [m for m in missing if _covered(m, requested)]
        if asked and len(asked) == len(missing):
            why = "the client asked for it but the policy granted less (see the partial grant)"
        else:
            why = (
                f"the client never asked for it: it asked for {' '.join(requested) or '-'} "
                "(a token request must name every scope the next requests need)"
            )
        return [
            Diagnosis(
                "insufficient-scope",
                "insufficient_scope after a grant",
                f"{entry.method} {entry.path} needs {' '.join(missing) or entry.required}; {why}",
                "compare the challenge's scope with the token request; for a cross-repository "
                "mount the source repository needs pull too",
                entry.line,
            )
        ]
    return []


def _covered(scope: str, requested: list[str]) -> bool:
    resource, _, actions = scope.rpartition(":")
    for r in requested:
        r_resource, _, r_actions = r.rpartition(":")
        if r_resource == resource and (
            set(actions.split(",")) <= set(r_actions.split(",")) or "*" in r_actions.split(",")
        ):
            return True
    return False


def service_mismatch(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        ours = (entry.bearer_challenge or ChallengeRecord()).service
        for upstream in entry.upstream_challenges:
            theirs = upstream.service
            if upstream.is_bearer and theirs and ours and theirs != ours:
                return [
                    Diagnosis(
                        "service-mismatch",
                        "service mismatch",
                        f"the registry challenges for service {_q(theirs)}, the policy's service "
                        f"is {_q(ours)}: the registry refuses tokens whose audience is {_q(ours)}",
                        f"set the registry's auth.token.service to {_q(ours)} (or the policy's "
                        f"`service:` to {_q(theirs)})",
                        entry.line,
                    )
                ]
        refused = entry.token_refused or ""
        if entry.kind == "token" and entry.status == 400 and "for service" in refused:
            asked = entry.token_request.named_service
            return [
                Diagnosis(
                    "service-mismatch",
                    "service mismatch",
                    f"the client asked for a token for service {_q(asked)}: {refused}",
                    "the client's realm configuration names another service than the policy's; "
                    "use the challenge regauth sends",
                    entry.line,
                )
            ]
    return []


def basic_on_registry(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        if entry.kind == "registry" and entry.auth_scheme.lower() == "basic":
            user = f" (user {_q(entry.basic_username)})" if entry.basic_username else ""
            return [
                Diagnosis(
                    "basic-on-registry",
                    "Basic credentials sent to a registry route",
                    f"{entry.method} {entry.path} carried Basic credentials{user}; registry routes "
                    "take only Bearer tokens from regauth's token endpoint",
                    "the client skipped the token flow: use a registry client (docker, skopeo, "
                    "ctr), or with curl first GET a token from /v2/token with -u and send it as "
                    "`Authorization: Bearer`",
                    entry.line,
                )
            ]
    return []


def challenge_loop(c: Conversation, ctx: Context) -> list[Diagnosis]:
    """The same challenge (request, scopes, error) LOOP_COUNT times within LOOP_WINDOW in one
    conversation: the client keeps fetching tokens that never cover the request. (Separate
    client runs from one address are separate conversations and never count.)"""
    # (client, method, path, scopes, error)
    by_key: dict[tuple[str, str, str, tuple[str, ...], str | None], list[Entry]] = {}
    for entry in c.entries:
        if _is_challenge(entry) and entry.time is not None:
            key = (
                entry.client_ip,
                entry.method,
                entry.path.partition("?")[0],
                tuple(_scopes(entry.bearer_challenge)),
                _challenge_error(entry),
            )
            by_key.setdefault(key, []).append(entry)
    for key, found in by_key.items():
        for i, first in enumerate(found):
            assert first.time is not None
            run = [e for e in found[i:] if e.time and e.time - first.time <= LOOP_WINDOW]
            if len(run) < LOOP_COUNT:
                continue
            last = run[-1]
            assert last.time is not None
            span = (last.time - first.time).total_seconds()
            tokens = sum(
                1
                for e in c.entries
                if e.kind == "token" and e.time and first.time <= e.time <= last.time
            )
            error = f" ({key[4]})" if key[4] else ""
            scopes = " ".join(key[3])
            return [
                Diagnosis(
                    "challenge-loop",
                    "the same challenge repeated in a loop",
                    f"{first.client_ip} got the same challenge{error} for {first.method} {key[2]} "
                    f"{len(run)} times in {span:.1f} s, with {tokens} token requests in between"
                    + (f"; scope {scopes}" if scopes else ""),
                    "the token the client fetches never covers the request: read the token "
                    "requests between the challenges (partial grant, wrong scope, refused token)",
                    first.line,
                )
            ]
    return []


def registry_refused_token(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        if (
            entry.answered_by != "upstream"
            or entry.status != 401
            or entry.auth_scheme != "Bearer"
            or not entry.jwt_claims
        ):
            continue
        if _challenge_error(entry) not in ("invalid_token", None):
            continue
        claims = entry.jwt_claims
        theirs = [u.service for u in entry.upstream_challenges if u.service]
        if theirs and claims.get("aud") and theirs[0] != claims.get("aud"):
            continue  # service-mismatch says it
        detail, hint = _refusal_cause(entry, claims)
        return [
            Diagnosis(
                "registry-refused-token",
                "the registry refused regauth's token",
                detail,
                hint,
                entry.line,
            )
        ]
    return []


def _refusal_cause(entry: Entry, claims: dict[str, object]) -> tuple[str, str]:
    nbf, exp = claims.get("nbf"), claims.get("exp")
    at = entry.time
    if isinstance(exp, int) and at is not None and at.timestamp() > exp:
        return (
            f"the client presented a token that had expired {at.timestamp() - exp:.0f} s earlier",
            "the client should fetch a new token; check its clock and the policy's token.lifetime",
        )
    date = entry.upstream_date
    if date and isinstance(nbf, int) and isinstance(exp, int):
        try:
            registry_now = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            registry_now = None
        if registry_now is not None and registry_now < nbf - REGISTRY_LEEWAY:
            return (
                f"clock skew: the registry's clock ({date}) is {nbf - registry_now:.0f} s "
                "before the token's nbf (distribution allows 60 s)",
                "synchronise the registry host's clock (NTP) with regauth's",
            )
        if registry_now is not None and registry_now > exp + REGISTRY_LEEWAY:
            return (
                f"clock skew: the registry's clock ({date}) is {registry_now - exp:.0f} s "
                "past the token's exp (distribution allows 60 s)",
                "synchronise the registry host's clock (NTP) with regauth's",
            )
    iss = claims.get("iss")
    jwt = entry.auth.jwt
    header_kid = jwt.header.get("kid") if jwt is not None else None
    kid = f" (kid {header_kid})" if header_kid else ""
    skew = (
        ""
        if date
        else " or its clock is off by more than 60 s (the log has no registry Date to tell)"
    )
    return (
        f"a token-mode registry answered invalid_token to a token regauth issued "
        f"(iss {_q(iss)}, aud {_q(claims.get('aud'))}){kid}: it does not trust the signing "
        f"key (rootcertbundle), expects another issuer{skew}",
        f"compare the registry's auth.token.rootcertbundle with `regauth certs bundle`, "
        f"its auth.token.issuer with {_q(iss)}, and its clock with regauth's; the registry's "
        "own log names the reason",
    )


def upstream_credentials_refused(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        # The refusal the client ends with: 503 since issue 25 (502 in older logs); the 307
        # that sent a request back once after a renewal is not one.
        refused = entry.reason.startswith("upstream refused the injected credentials")
        if entry.injected and refused and (entry.status or 0) >= 500:
            schemes = ", ".join(str(u.scheme) for u in entry.upstream_challenges) or "401"
            return [
                Diagnosis(
                    "upstream-credentials-refused",
                    "injected upstream credentials refused",
                    f"the upstream answered {schemes} to the credentials regauth injected for "
                    f"{entry.method} {entry.path}; the client got {entry.status}",
                    "check `upstreams[].credentials` (username and password source) against the "
                    "registry's htpasswd or token service",
                    entry.line,
                )
            ]
    return []


def delegate_check_refused(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        reason = entry.reason
        if entry.status != 503 or not reason.startswith("delegate check "):
            continue
        pending = reason.startswith("delegate check pending")
        detail = reason.removesuffix("; retry shortly")
        if pending:
            title = "delegate mode refused to forward: the registry has not been checked yet"
            hint = (
                "regauth could not reach the registry, or it answered 5xx: see /readyz on "
                "the admin listener and regauth's log; requests are refused until the "
                "check passes"
            )
        else:
            title = "delegate mode refused to forward: the registry does not check regauth's tokens"
            hint = (
                "in delegate mode the registry must check regauth's tokens itself: "
                "configure its auth.token (realm <public URL>/v2/token, the policy's "
                "service and issuer, rootcertbundle from `regauth certs bundle`) and "
                "restart it; /readyz names the problem in full. --delegate-unchecked "
                "forwards anyway, for test setups only"
            )
        return [
            Diagnosis(
                "delegate-check-refused",
                title,
                f"{entry.method} {entry.path}: {detail}",
                hint,
                entry.line,
            )
        ]
    return []


def regauth_overloaded(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        reason = entry.reason
        if entry.status == 503 and "connection limit" in reason:
            return [
                Diagnosis(
                    "regauth-overloaded",
                    "regauth shed the request (connection limits)",
                    f"{entry.method} {entry.path}: {reason}",
                    "clients retry after Retry-After; if it persists, see "
                    "regauth_connections_refused_total and raise regauth_max_connections or "
                    "regauth_max_upstream_connections (each needs file descriptors), or add a "
                    "replica",
                    entry.line,
                )
            ]
    return []


def body_too_slow(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        error = entry.error or ""
        if "body too slow" in error or "token request body incomplete" in error:
            return [
                Diagnosis(
                    "body-too-slow",
                    "request cut: its body stopped arriving",
                    f"{entry.method} {entry.path}: {error}",
                    "a client (or a network path) that cannot send 1 KiB/s for 30 s is cut; "
                    "check the client's uplink, or raise regauth_body_timeout / "
                    "regauth_body_min_rate",
                    entry.line,
                )
            ]
    return []


_CERTIFICATE_HINTS = (
    ("expired", "issue a new one (`regauth certs client … --ttl`), or check the client's clock"),
    ("not valid before", "the client's clock (or regauth's) is wrong by more than 5 minutes"),
    (
        "not issued by",
        "the client presents a certificate of another CA: only certificates "
        "from `regauth certs client` (certs/clients/ca.crt) are identities",
    ),
    (
        "revoked",
        "revoked with `regauth certs revoke`: issue a new certificate if that was a "
        "mistake, after removing the entry from certs/clients/revoked.json",
    ),
    ("no client CA", "run `regauth certs` to create the client CA"),
)


def client_certificate_refused(c: Conversation, ctx: Context) -> list[Diagnosis]:
    for entry in c.entries:
        certificate = entry.record.client_certificate
        if certificate is not None and certificate.refused:
            reason = certificate.refused
            hint = next(
                (h for needle, h in _CERTIFICATE_HINTS if needle in reason),
                "the certificate is outside regauth's profile: issue one with "
                "`regauth certs client`, or connect without a certificate",
            )
            return [
                Diagnosis(
                    "client-certificate-refused",
                    "client certificate refused: every request on the connection got 401",
                    f"{entry.client_ip}: {reason}",
                    hint,
                    entry.line,
                )
            ]
    return []


_TLS_TITLES = {
    "untrusted": "the client does not trust regauth's certificate",
    "version": "no TLS version in common",
    "closed": "the client hung up during the TLS handshake",
    "other": "TLS handshake failed",
}


def tls_handshake_failed(c: Conversation, ctx: Context) -> list[Diagnosis]:
    """A `tls` record (`mitm.tls_failures`): the handshake failed, and how the client that
    failed would trust regauth's CA (`trust_snippets`, for the client's TLS library)."""
    for entry in c.entries:
        tls = entry.record.tls
        if entry.kind != TLS_KIND or tls is None:
            continue
        cause = tls.cause or "other"
        listen_host, _, listen_port = (tls.listen or "").rpartition(":")
        port = int(listen_port) if listen_port.isdigit() else None
        host = safe_host(tls.sni, safe_host(listen_host.strip("[]")))
        ca = tls.ca or "certs/ca.crt"
        client = {"go": "a Go client (docker, podman, buildah, skopeo, containerd, BuildKit)"}.get(
            tls.library or "",
            "an OpenSSL client (curl, …)" if tls.library == "openssl" else "a client",
        )
        asked = f"for {_q(tls.sni)}" if tls.sni else "without a server name (SNI)"
        detail = f"{entry.client_ip}: {client} connecting {asked}: {entry.error or cause}"
        if cause == "version":
            hint = (
                "the client's TLS versions and regauth's have none in common: regauth speaks "
                "TLS 1.2 and 1.3; update the client"
            )
        else:
            lines = [
                "trust regauth's CA "
                + ("in the client" if cause == "untrusted" else "if the client does not")
                + f" ({ca}):"
            ]
            for name, snippet in snippets(host, port, ca, tls.library):
                lines.append(f"  {name}:")
                lines += [f"    {text}" for text in snippet.split("\n")]
            if not tls.sni:
                lines.append(
                    "  the client sent no server name: connect by the host name regauth's "
                    "certificate is for (its public URL), not by IP address"
                )
            if cause == "closed":
                lines.append("  (a load balancer's TLS health check looks the same)")
            hint = "\n".join(lines)
        return [Diagnosis(f"tls-{cause}", _TLS_TITLES[cause], detail, hint, entry.line)]
    return []


DETECTORS: tuple[Callable[[Conversation, Context], list[Diagnosis]], ...] = (
    tls_handshake_failed,
    client_certificate_refused,
    id_token_refused,
    bad_credentials,
    rate_limited,
    service_mismatch,
    basic_on_registry,
    claim_mismatch,
    partial_grant,
    insufficient_scope,
    registry_refused_token,
    upstream_credentials_refused,
    delegate_check_refused,
    regauth_overloaded,
    body_too_slow,
    challenge_loop,
    no_token_request,
)


def diagnose(conversation: Conversation, ctx: Context) -> list[Diagnosis]:
    found: list[Diagnosis] = []
    for detector in DETECTORS:
        found += detector(conversation, ctx)
    return found
