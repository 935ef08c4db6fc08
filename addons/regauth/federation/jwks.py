"""An issuer's JSON Web Key Set (RFC 7517 §5), parsed within bounds and cached.

`parse_jwks` keeps only keys regauth may verify ID tokens with: asymmetric (`RSA`, `EC`,
`OKP`), for signatures (`use` absent or `sig`), with an algorithm the issuer allows. A
symmetric (`oct`) key is never used: an HMAC "signed" with a public key's bytes is the classic
algorithm-confusion forgery.

`JwksCache` holds the last good key set of one issuer. An unknown `kid` triggers a refetch at
most once per `refetch_interval` seconds (so a flood of tokens with random kids costs one fetch
per interval, not one per token); the set is also refreshed after `max_age` seconds. A failed
fetch keeps the last good keys and is reported by `status()` (readiness detail, metrics).
Thread-safe, and one fetch at a time, outside the lock: while it runs, logins use the keys
already held (a flood of made-up kids holds no worker); only before the first key set arrives
does a login wait for the fetch under way (at most WAIT_FOR_FETCH seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

import jwt

from regauth.policy.model import FederatedIssuer
from regauth.protocol import strict_json

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 64
MAX_DEPTH = 6
REFETCH_INTERVAL = 60.0  # seconds between fetches caused by unknown kids
MAX_AGE = 3600.0  # seconds before a good key set is fetched again
WAIT_FOR_FETCH = 10.0  # seconds a lookup waits for a running fetch when it has no keys at all
ASYMMETRIC = {"RSA": "RSA", "EC": "EC", "OKP": "OKP"}


class JwksError(ValueError):
    """The key set cannot be fetched or used; the message is safe to log."""


# Which key type each algorithm needs (RFC 7518 §3.1, RFC 8037).
KEY_TYPE_OF = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}


@dataclass(frozen=True)
class KeySet:
    """Usable keys by `kid` ("" for a key without one)."""

    keys: dict[str, jwt.PyJWK]

    def find(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The key for a token's `kid` and `alg`. A token without `kid` is accepted only when
        the set has exactly one key of the algorithm's type (OIDC Core §10.1)."""
        kty = KEY_TYPE_OF.get(algorithm)
        if kid is not None:
            key = self.keys.get(kid)
            return key if key is not None and _kty(key) == kty else None
        candidates = [k for k in self.keys.values() if _kty(k) == kty]
        return candidates[0] if len(candidates) == 1 else None


def _kty(key: jwt.PyJWK) -> str:
    return str(key.key_type)


def parse_jwks(body: bytes, algorithms: tuple[str, ...]) -> KeySet:
    """The usable keys of a JWK Set document. Raises JwksError for a document over
    MAX_JWKS_BYTES, malformed JSON, or one without a single usable key."""
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = strict_json.loads(body, MAX_DEPTH)
    except strict_json.JsonError as e:
        raise JwksError(f"the key set is not JSON ({e})") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise JwksError("the key set has no `keys` list")
    wanted = {KEY_TYPE_OF[a] for a in algorithms if a in KEY_TYPE_OF}
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries[:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("kty") not in ASYMMETRIC:
            continue
        if entry.get("kty") not in wanted or entry.get("use", "sig") != "sig":
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in algorithms:
            continue
        kid = entry.get("kid", "")
        if not isinstance(kid, str) or len(kid) > 256 or kid in keys:
            continue
        try:
            # No `alg` in the entry: pyjwt guesses one from the key type; the token's own
            # `alg` (checked against the issuer's list) is what verification uses.
            keys[kid] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
    if not keys:
        raise JwksError("the key set holds no usable signing key")
    return KeySet(keys)


Fetch = Callable[[], bytes]


@dataclass
class JwksCache:
    """The key set of one issuer, fetched through `fetch` (blocking; raises JwksError or
    OSError). `clock` in seconds."""

    source: str  # the URL or file, for messages
    fetch: Fetch
    algorithms: tuple[str, ...]
    refetch_interval: float = REFETCH_INTERVAL
    max_age: float = MAX_AGE
    clock: Callable[[], float] = time.time
    keyset: KeySet | None = None
    fetched_at: float | None = None  # the last good fetch
    attempted_at: float | None = None  # the last fetch, good or not
    last_error: str | None = None
    kid_refetched_at: float | None = None  # the last fetch an unknown kid caused
    fetches: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _running: threading.Event | None = field(default=None, repr=False)  # the fetch under way

    def refresh(self) -> None:
        """Fetch now, unless a fetch is running; keep the last good keys when it fails.
        Never raises."""
        with self._lock:
            claimed = self._claim(self.clock())
        if claimed:
            self._run_fetch()

    def _claim(self, now: float) -> bool:
        """Under the lock: start the one fetch (False when one is running already)."""
        if self._running is not None:
            return False
        self._running = threading.Event()
        self.attempted_at = now
        self.fetches += 1
        return True

    def _run_fetch(self) -> None:
        """The claimed fetch, outside the lock: logins with known keys never wait for it."""
        started = self.attempted_at
        keyset: KeySet | None = None
        error = None
        try:
            keyset = parse_jwks(self.fetch(), self.algorithms)
        except (JwksError, OSError, ValueError) as e:
            error = str(e)[:300]
        with self._lock:
            if keyset is not None:
                self.keyset, self.fetched_at, self.last_error = keyset, started, None
            else:
                self.failures += 1
                self.last_error = error
            running, self._running = self._running, None
        if running is not None:
            running.set()

    def _lookup(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        with self._lock:
            return self.keyset.find(kid, algorithm) if self.keyset is not None else None

    def find(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The key for (kid, alg); fetches when there is no key set yet or it is older than
        `max_age` (at most once per `refetch_interval` while fetches fail), or when the kid is
        unknown and no other unknown kid caused a fetch in `refetch_interval`. One fetch at a
        time: a lookup waits for a running one (at most WAIT_FOR_FETCH seconds) only while no
        key set has arrived yet; otherwise it answers from the keys it has."""
        with self._lock:
            now = self.clock()
            stale = self.fetched_at is None or now - self.fetched_at >= self.max_age
            recently = self.attempted_at is not None and now - self.attempted_at < (
                self.refetch_interval
            )
            fetching = stale and not recently and self._claim(now)
            waiting = self._running if not fetching and self.keyset is None else None
        if fetching:
            self._run_fetch()
        elif waiting is not None:
            waiting.wait(WAIT_FOR_FETCH)
        key = self._lookup(kid, algorithm)
        if key is not None or fetching:
            return key
        with self._lock:
            last = self.kid_refetched_at
            # The issuer may have rotated its keys: look once, then not again for a while.
            refetch = (last is None or now - last >= self.refetch_interval) and self._claim(now)
            if refetch:
                self.kid_refetched_at = now
        if not refetch:
            return None
        self._run_fetch()
        return self._lookup(kid, algorithm)

    def status(self) -> KeySetStatus:
        """For `/readyz` warnings and metrics."""
        keys = tuple(sorted(self.keyset.keys)) if self.keyset is not None else ()
        return KeySetStatus(
            self.source, keys, self.fetched_at, self.last_error, self.fetches, self.failures
        )


@dataclass(frozen=True)
class KeySetStatus:
    """Where a key set comes from, the kids it holds, the last good fetch (epoch seconds, or
    None), the last fetch's error (None: it worked), and fetch counts."""

    source: str
    keys: tuple[str, ...]
    fetched_at: float | None
    last_error: str | None
    fetches: int
    failures: int


@dataclass
class IssuerKeySets:
    """One `JwksCache` per federated issuer, kept across policy reloads while the issuer's
    key source and algorithms stay the same. `make_fetch(issuer)` gives the blocking fetch of
    its key set (ops/jwks_fetch.py). Thread-safe."""

    make_fetch: Callable[[FederatedIssuer], Fetch]
    clock: Callable[[], float] = time.time
    _caches: dict[tuple[str, str, str, tuple[str, ...], int], JwksCache] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def _key(issuer: FederatedIssuer) -> tuple[str, str, str, tuple[str, ...], int]:
        return (
            issuer.issuer,
            issuer.source,
            issuer.ca_file or "",
            issuer.algorithms,
            issuer.refetch_interval,
        )

    def sync(self, issuers: tuple[FederatedIssuer, ...]) -> list[JwksCache]:
        """Keep the caches of `issuers` (new ones created, unfetched), drop the others; return
        every cache not fetched yet (the caller fetches them in the background)."""
        with self._lock:
            wanted = {self._key(i): i for i in issuers}
            for key in list(self._caches):
                if key not in wanted:
                    del self._caches[key]
        caches = [self.finder(issuer) for issuer in issuers]
        return [c for c in caches if c.attempted_at is None]

    def finder(self, issuer: FederatedIssuer) -> JwksCache:
        """The cache of `issuer`, created (unfetched) the first time it is asked for."""
        key = self._key(issuer)
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = JwksCache(
                    issuer.source,
                    self.make_fetch(issuer),
                    issuer.algorithms,
                    refetch_interval=issuer.refetch_interval,
                    clock=self.clock,
                )
                self._caches[key] = cache
            return cache

    def status(self) -> dict[str, KeySetStatus]:
        """Per issuer URL: `JwksCache.status()`."""
        with self._lock:
            return {key[0]: cache.status() for key, cache in self._caches.items()}
