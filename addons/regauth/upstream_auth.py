"""Credentials regauth itself presents to the upstream (inject mode).

Basic credentials are sent as they are. For a Bearer upstream, regauth runs the token flow
itself: it reads the upstream's challenge, checks the realm (https, or on the upstream's own
host, or a host the policy allows), asks it for a token per scope with its credentials, caches
the token and renews it before it expires. Redirects are never followed with credentials.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import urlencode
from urllib.parse import urlsplit

from regauth.policy.model import UpstreamCredentials
from regauth.protocol import challenge
from regauth.protocol import strict_json
from regauth.protocol.scope import ResourceScope
from regauth.protocol.urls import DEFAULT_PORTS
from regauth.protocol.urls import Origin
from regauth.protocol.urls import parse_origin

MAX_TOKEN_RESPONSE = 1024 * 1024
USER_AGENT = "regauth-upstream-auth"
RENEW_FRACTION = 0.9  # renew at 90% of the lifetime, like BuildKit
# distribution token.md: "expires_in … defaults to 60 seconds" when absent. A shorter lifetime
# the token service states is honoured (an upstream refusing its token after 10 s must see a new
# one by then); 1 s is the floor for a zero or negative one.
DEFAULT_EXPIRES_IN = 60
MIN_EXPIRES_IN = 1
# A token said to live longer is still renewed daily: an upstream's clock or typo must not pin a
# token in the cache for ever.
MAX_EXPIRES_IN = 24 * 3600
MAX_RESPONSE_DEPTH = 16


class UpstreamAuthError(Exception):
    """regauth could not obtain upstream credentials; the request is refused (never forwarded
    without them)."""


@dataclass
class HttpResult:
    """What a `Fetcher` got back: status, lower-case headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes
    # Every WWW-Authenticate value, in order: a registry may send several header lines.
    challenges: tuple[str, ...] = ()


Fetcher = Callable[[str, dict[str, str]], HttpResult]


def check_realm(realm: str, upstream: Origin, allowed_hosts: tuple[str, ...]) -> Origin:
    """The realm's origin, if regauth may send the upstream credentials there.

    The realm must be on the upstream's own host and port, or on a `host:port` listed in
    `realm_hosts` (a bare host stands for its scheme's default port); and an https upstream's
    realm must be https: credentials never travel in clear text unless the upstream itself is
    plain http. Raise UpstreamAuthError otherwise.
    """
    try:
        origin = parse_origin(f"{urlsplit(realm).scheme}://{urlsplit(realm).netloc}")
    except ValueError as e:
        raise UpstreamAuthError(f"upstream realm {realm!r} is not a usable URL: {e}") from None
    if upstream.scheme == "https" and origin.scheme != "https":
        raise UpstreamAuthError(
            f"upstream realm {origin.url} is plain http for an https "
            "upstream; credentials are never sent in clear text"
        )
    listed = f"{origin.host}:{origin.port}" in allowed_hosts or (
        origin.host in allowed_hosts and origin.port == DEFAULT_PORTS[origin.scheme]
    )
    if (origin.host, origin.port) == (upstream.host, upstream.port) or listed:
        return origin
    raise UpstreamAuthError(
        f"upstream realm {origin.url} is not on the upstream's own host and "
        "port; list it in realm_hosts (host:port) to send credentials there"
    )


@dataclass
class _Cached:
    header: str
    renew_at: float


@dataclass
class UpstreamAuth:
    """Presents regauth's own credentials to the upstream (`header_for`): Basic as they are,
    Bearer through the upstream's token service, cached per set of scopes. Thread-safe."""

    credentials: UpstreamCredentials
    upstream: Origin  # the registry; its realm must be here or in `realm_hosts`
    fetch: Fetcher
    clock: Callable[[], float] = time.time
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _challenge: challenge.Challenge | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def _basic(self) -> str:
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def header_for(self, scopes: tuple[ResourceScope, ...]) -> str:
        """The Authorization value for a request needing `scopes`. Blocking."""
        if self.credentials.kind == "basic":
            return self._basic
        key = " ".join(sorted(str(s) for s in scopes))
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached.renew_at > self.clock():
            return cached.header
        header, renew_at = self._fetch_token(scopes)
        with self._lock:
            self._cache[key] = _Cached(header, renew_at)
            if len(self._cache) > 1024:
                self._cache.pop(next(iter(self._cache)))
        return header

    def forget(self, scopes: tuple[ResourceScope, ...]) -> None:
        with self._lock:
            self._cache.pop(" ".join(sorted(str(s) for s in scopes)), None)

    def _discover(self) -> challenge.Challenge:
        if self._challenge is not None:
            return self._challenge
        result = self.fetch(f"{self.upstream.url}/v2/", {})
        # All challenges of the response, however they are split over header lines.
        values = result.challenges or (result.headers.get("www-authenticate", ""),)
        for value in values:
            try:
                parsed = challenge.parse_challenges(value)
            except ValueError:
                continue
            for c in parsed:
                if c.is_bearer and "realm" in c.params:
                    self._challenge = c
                    return c
        raise UpstreamAuthError(
            f"upstream {self.upstream.url} sent no Bearer challenge on /v2/ "
            f"(status {result.status}); use credentials type basic"
        )

    def _fetch_token(self, scopes: tuple[ResourceScope, ...]) -> tuple[str, float]:
        c = self._discover()
        realm = c.params["realm"]
        check_realm(realm, self.upstream, self.credentials.realm_hosts)
        # No `service` in the challenge: none in the request (not `service=`).
        service = c.params.get("service")
        query = [("service", service)] if service else []
        query += [("scope", str(s)) for s in scopes]
        separator = "&" if "?" in realm else "?"
        started = self.clock()
        result = self.fetch(realm + separator + urlencode(query), {"Authorization": self._basic})
        if result.status != 200:
            raise UpstreamAuthError(f"upstream token service answered {result.status}")
        token, expires_in = parse_token_response(result.body)
        return f"Bearer {token}", started + RENEW_FRACTION * expires_in


def parse_token_response(body: bytes) -> tuple[str, int]:
    """(token, expires_in seconds) from a token service's 200 body (distribution token.md:
    `token` or OAuth2 `access_token`; `expires_in` defaults to 60 when absent and is clamped to
    [MIN_EXPIRES_IN, MAX_EXPIRES_IN]). The token must be printable ASCII without spaces, so it
    can go into a header as it is.

    Raise UpstreamAuthError, and nothing else, for anything else (a non-object, nesting deeper
    than strict_json allows, non-finite or non-numeric `expires_in`, no usable token).
    """
    try:
        parsed = strict_json.loads(body, MAX_RESPONSE_DEPTH)
    except strict_json.JsonError as e:
        raise UpstreamAuthError(f"upstream token service sent malformed JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise UpstreamAuthError("upstream token service sent malformed JSON (not an object)")
    token = parsed.get("token") or parsed.get("access_token")
    if not isinstance(token, str) or not token or not all("!" <= c <= "~" for c in token):
        raise UpstreamAuthError("upstream token service sent no usable token")
    return token, _expires_in(parsed.get("expires_in"))


def _expires_in(value: object) -> int:
    if value is None or value == "" or value is False:
        return DEFAULT_EXPIRES_IN
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)  # some token services send a string
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise UpstreamAuthError(
            "upstream token service sent malformed JSON (expires_in is not a number)"
        )
    return int(min(max(value, MIN_EXPIRES_IN), MAX_EXPIRES_IN))


RETRY_WINDOW = 30.0  # seconds during which a request already sent back is not sent back again
MAX_RETRY_KEYS = 4096
RETRY_AFTER = 1  # seconds, on the 503 that ends a refusal regauth cannot have retried


@dataclass
class RetryGuard:
    """Whether an upstream 401 to regauth's freshly renewed credentials may be answered with a
    redirect to the same request (RFC 9110 §15.4.8 307: the client repeats method and body),
    at most once per (client address, method, target) in RETRY_WINDOW seconds: so a request the
    upstream keeps refusing ends in a 503 instead of a loop. Bounded to MAX_RETRY_KEYS entries
    (oldest dropped). Sans-IO; `clock` in seconds. Not thread-safe: used on the event loop."""

    clock: Callable[[], float] = time.time
    _sent: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def may_retry(self, client_ip: str, method: str, target: str) -> bool:
        """True, and remembered, the first time in the window; False after that."""
        now = self.clock()
        key = (client_ip, method, target)
        until = self._sent.get(key)
        if until is not None and until > now:
            return False
        self._sent.pop(key, None)
        self._sent[key] = now + RETRY_WINDOW
        while len(self._sent) > MAX_RETRY_KEYS:
            self._sent.pop(next(iter(self._sent)))
        return True
