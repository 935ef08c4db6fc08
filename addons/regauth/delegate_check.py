"""Whether the registry behind a delegate-mode regauth really checks regauth's tokens (no I/O).

In delegate mode regauth forwards registry requests without checking their tokens: the
registry does (README "Modes"). That is only safe when the registry refuses unauthenticated
requests and accepts regauth's tokens; a registry without `auth.token` in front of which
regauth runs in delegate mode is an open registry. The adapter (`mitm/upstream_probe.py`,
`mitm/delegate_gate.py`) asks the registry two questions, at start and every
`regauth_upstream_check_seconds`, and this module judges the answers:

1. `GET /v2/` without credentials: distribution in token mode answers 401 with
   `WWW-Authenticate: Bearer realm="…",service="…"` (its `auth.token` realm and service);
2. only when (1) is such a challenge: `GET /v2/` with a token regauth signed for no access at
   all (`probe_token`): distribution answers 200 when it trusts the token (issuer, audience =
   service, signing key in its rootcertbundle, time within its 60 s leeway), else 401 with
   `error="invalid_token"`.

`judge` turns the answers into a `Verdict` of one `Kind`:

| kind | answers | effect |
|---|---|---|
| `ok` | (1) Bearer with regauth's realm and service, (2) 2xx | forward |
| `open` | (1) 2xx: nothing is checked | refuse |
| `wrong_scheme` | (1) 401 without a Bearer challenge (Basic: htpasswd) | refuse |
| `unexpected_status` | (1) neither 2xx, 401 nor 5xx (a 404: not a registry?) | refuse |
| `service_mismatch` | (1) Bearer for another service (its tokens are refused there) | not ready |
| `token_refused` | (2) not 2xx (issuer, keys, clock) | not ready |
| `realm_mismatch` | (1) Bearer naming another token service | not ready |
| `unverified` | never answered usefully since the check began | refuse |

"refuse": nothing is forwarded (and `/readyz` is not ready); "not ready": requests are still
forwarded (the registry refuses regauth's tokens itself), `/readyz` says why.

A 5xx (or no answer at all) says nothing about the registry's authentication: `judge` returns
None and `Tracker` keeps the verdict in force (or `unverified` when there is none yet).

Each verdict's `reason` names the misconfiguration and its fix, for operators (`/readyz`, the
log); `refusal()` is the shorter text clients get in the 503 (no internal addresses, no values
read from the registry), starting with `REFUSAL_PREFIX` so that `regauth trace` can tell it.
"""

from __future__ import annotations

import dataclasses
import email.utils
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from regauth.protocol.challenge import Challenge
from regauth.protocol.challenge import parse_challenges
from regauth.tokens.issue import TokenIssuer

Kind = Literal[
    "ok",
    "open",
    "wrong_scheme",
    "unexpected_status",
    "service_mismatch",
    "token_refused",
    "realm_mismatch",
    "unverified",
]
# The closed vocabulary of the `result` label of `regauth_delegate_check` (metrics).
KINDS: tuple[Kind, ...] = (
    "ok",
    "open",
    "wrong_scheme",
    "unexpected_status",
    "service_mismatch",
    "token_refused",
    "realm_mismatch",
    "unverified",
)
# Verdicts under which nothing is forwarded: the registry may not check tokens at all.
REFUSING: frozenset[Kind] = frozenset({"open", "wrong_scheme", "unexpected_status", "unverified"})
REFUSAL_PREFIX = "delegate check "
# Seconds. A probe token lives this long at most (the policy's lifetime if shorter): long
# enough for one request, short enough to be worth nothing to anyone who might see it.
PROBE_LIFETIME = 60
# Seconds of clock difference from which a refused token is blamed on the clocks:
# distribution accepts tokens within 60 s of their `nbf`/`exp`.
CLOCK_TOLERANCE = 60.0
_SHOWN = 200  # characters of a value read from the registry that a reason shows


@dataclass(frozen=True)
class Expected:
    """What the registry must be configured with (README "Modes", `auth.token`).

    `realm`: regauth's public URL + /v2/token; `service` and `issuer`: the policy's;
    `key`: the signing key's name (its file stem, as `regauth certs list` shows it) and `kid`
    its key id in the form the tokens carry.
    """

    realm: str
    service: str
    issuer: str
    key: str
    kid: str

    def registry_config(self) -> str:
        return (
            f"auth.token (realm {self.realm}, service {self.service}, issuer "
            f"{self.issuer}, rootcertbundle from `regauth certs bundle`)"
        )


@dataclass(frozen=True)
class Reply:
    """The registry's answer to one `GET /v2/`: its status, every `WWW-Authenticate` value as
    received, and its `Date` header (None when absent)."""

    status: int
    challenges: tuple[str, ...] = ()
    date: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: `kind`, and `reason` (names the problem and the fix)."""

    kind: Kind
    reason: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def refuses(self) -> bool:
        """Whether nothing may be forwarded: the registry may not check tokens at all."""
        return self.kind in REFUSING

    def refusal(self) -> str:
        """The message of the 503 a client gets while this verdict refuses (fixed texts: no
        addresses and nothing read from the registry); '' when it does not refuse."""
        return _REFUSALS.get(self.kind, "")


_NOTHING = "; nothing is forwarded until it does"
_REFUSALS: dict[Kind, str] = {
    "open": (
        f"{REFUSAL_PREFIX}failed: the registry behind regauth answers without "
        "authentication (delegate mode needs it to check regauth's tokens: auth.token)"
        f"{_NOTHING}"
    ),
    "wrong_scheme": (
        f"{REFUSAL_PREFIX}failed: the registry behind regauth asks for other "
        "credentials than regauth's tokens (delegate mode needs its auth.token)"
        f"{_NOTHING}"
    ),
    "unexpected_status": (
        f"{REFUSAL_PREFIX}failed: the registry behind regauth did not "
        "challenge an anonymous request (delegate mode needs it to check "
        f"regauth's tokens: auth.token){_NOTHING}"
    ),
    "unverified": (
        f"{REFUSAL_PREFIX}pending: regauth has not yet verified that the registry "
        "behind it checks regauth's tokens (delegate mode); nothing is forwarded "
        "until it has"
    ),
}


def _shown(value: str) -> str:
    """A value read from the registry, quoted and bounded, for a reason text."""
    return repr(value[:_SHOWN])


def _challenges(values: tuple[str, ...]) -> tuple[list[Challenge], bool]:
    """Every challenge of every value, and whether some value could not be parsed."""
    found: list[Challenge] = []
    malformed = False
    for value in values:
        try:
            found += parse_challenges(value)
        except ValueError:
            malformed = True
    return found, malformed


def _bearer(reply: Reply) -> Challenge | None:
    return next((c for c in _challenges(reply.challenges)[0] if c.is_bearer), None)


def needs_token_probe(anonymous: Reply) -> bool:
    """Whether the token probe (question 2) is worth sending: only when the registry
    challenged the anonymous request for a Bearer token."""
    return anonymous.status == 401 and _bearer(anonymous) is not None


def _same_url(a: str, b: str) -> bool:
    """URLs equal up to the case of scheme and host and an explicit default port."""
    try:
        x, y = urlsplit(a), urlsplit(b)
        ports = (x.port, y.port)
    except ValueError:
        return a == b
    defaults = {"http": 80, "https": 443}

    def norm(u, port):
        scheme = u.scheme.lower()
        return (
            scheme,
            (u.hostname or "").lower(),
            port or defaults.get(scheme),
            u.path or "/",
            u.query,
        )

    return norm(x, ports[0]) == norm(y, ports[1])


def clock_skew(date: str | None, now: float) -> float | None:
    """The registry's clock minus regauth's, in seconds, from an HTTP `Date` header (1 s
    resolution) received at Unix time `now`; None without a usable header."""
    if not date:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp() - now


def _fix(expected: Expected) -> str:
    return f"configure its {expected.registry_config()} and restart it"


def judge(
    expected: Expected, anonymous: Reply, with_token: Reply | None = None, skew: float | None = None
) -> Verdict | None:
    """The verdict on the registry's answers (see the module docstring), or None when they
    say nothing about its authentication (a 5xx).

    `with_token` is the answer to the token probe, required when `needs_token_probe
    (anonymous)` (ValueError otherwise) and ignored when not; `skew` is `clock_skew` of the
    registry's `Date`, for the reason of a refused token.
    """
    status = anonymous.status
    if status >= 500:
        return None
    if 200 <= status < 300:
        return Verdict(
            "open",
            f"the registry answered GET /v2/ without authentication "
            f"({status}): in delegate mode it must check regauth's tokens "
            f"itself: {_fix(expected)}; until then regauth forwards "
            "nothing",
        )
    if status != 401:
        return Verdict(
            "unexpected_status",
            f"the registry answered an anonymous GET /v2/ "
            f"with {status}, not with 401 and a Bearer "
            "challenge: is it a distribution registry? In "
            "delegate mode it must check regauth's tokens: "
            f"{_fix(expected)}; until then regauth forwards "
            "nothing",
        )
    bearer = _bearer(anonymous)
    if bearer is None:
        found, malformed = _challenges(anonymous.challenges)
        schemes = ", ".join(dict.fromkeys(c.scheme for c in found))
        seen = (
            f"with {schemes} only"
            if schemes
            else "with a WWW-Authenticate header regauth cannot parse"
            if malformed
            else "without a WWW-Authenticate header"
        )
        return Verdict(
            "wrong_scheme",
            f"the registry challenged an anonymous GET /v2/ {seen}, "
            "not with Bearer: it checks credentials of its own "
            "(auth.htpasswd?), not regauth's tokens; "
            f"{_fix(expected)}; until then regauth forwards "
            "nothing",
        )
    if with_token is None:
        raise ValueError(
            "the registry challenged for a Bearer token: the token probe's answer is needed"
        )
    if with_token.status >= 500:
        return None
    realm = bearer.params.get("realm", "")
    service = bearer.params.get("service", "")
    realm_off = not _same_url(realm, expected.realm)
    realm_note = (
        (f"auth.token realm is {_shown(realm)}, not regauth's token endpoint {expected.realm}")
        if realm_off
        else ""
    )
    also = f"; also, its {realm_note}" if realm_off else ""
    if service != expected.service:
        return Verdict(
            "service_mismatch",
            f"the registry's auth.token service is "
            f"{_shown(service)}, but regauth issues tokens for "
            f"'{expected.service}' (the policy's `service`): "
            "the registry refuses them; set its service to "
            f"'{expected.service}' and restart it{also}",
        )
    if not 200 <= with_token.status < 300:
        return Verdict("token_refused", _refused_reason(expected, with_token, skew) + also)
    if realm_off:
        return Verdict(
            "realm_mismatch",
            f"the registry's {realm_note}: set its "
            f"realm to {expected.realm} and restart it (regauth "
            "rewrites the realm of what it forwards, but a "
            "registry set up for another token service may "
            "trust that service's tokens as well)",
        )
    return Verdict(
        "ok",
        "the registry challenges anonymous requests for regauth's realm and "
        "service and accepts regauth's tokens",
    )


def _refused_reason(expected: Expected, with_token: Reply, skew: float | None) -> str:
    bearer = _bearer(with_token)
    error = bearer.params.get("error") if bearer is not None else None
    answer = f"{with_token.status}, error={error}" if error else f"{with_token.status}"
    head = f"the registry refused a token regauth signed ({answer})"
    if skew is not None and abs(skew) >= CLOCK_TOLERANCE:
        side = "behind" if skew < 0 else "ahead of"
        return (
            f"{head}: its clock is {abs(skew):.0f} s {side} regauth's (distribution "
            "accepts tokens within 60 s of their validity): synchronize both clocks (NTP)"
        )
    return (
        f"{head}: set its auth.token issuer to '{expected.issuer}' (the policy's "
        f"`issuer`) and put regauth's signing key {expected.key} (kid {expected.kid}) in "
        "its rootcertbundle (`regauth certs bundle`), then restart it"
    )


def unverified(error: str) -> Verdict:
    """The verdict while the registry has never answered the check usefully (`error`: the
    last failure, e.g. a refused connection or a 503)."""
    return Verdict(
        "unverified",
        f"regauth could not yet check that the registry verifies its "
        f"tokens ({error}); until it can, regauth forwards nothing",
    )


def probe_token(issuer: TokenIssuer) -> str:
    """A token for question 2: signed like every token regauth issues (same key, `kid`,
    `x5c`, issuer, audience), but for no access at all, no subject, and a lifetime of at
    most PROBE_LIFETIME seconds. It opens `GET /v2/` and nothing else; it is sent to the
    upstream only, and never logged."""
    settings = dataclasses.replace(
        issuer.settings, lifetime=min(PROBE_LIFETIME, issuer.settings.lifetime)
    )
    return dataclasses.replace(issuer, settings=settings).issue_access("", []).token


@dataclass
class Tracker:
    """The verdict in force, folded from check rounds.

    `observe` returns the verdict when its kind changed (the adapter logs once per state
    change, not per round or per request), else None.
    """

    verdict: Verdict | None = None

    def observe(self, verdict: Verdict | None, error: str = "no answer") -> Verdict | None:
        """Fold in one round: `verdict` from `judge`, or None for a round that said nothing
        (no answer, a 5xx: `error` says which). Such a round keeps the verdict in force, or
        makes it `unverified` if there is none yet."""
        if verdict is None:
            if self.verdict is not None and self.verdict.kind != "unverified":
                return None
            verdict = unverified(error)
        previous = self.verdict
        self.verdict = verdict
        if previous is None or previous.kind != verdict.kind:
            return verdict
        return None

    def reset(self) -> None:
        """Forget the verdict (the upstream left delegate mode): the next check starts over."""
        self.verdict = None
