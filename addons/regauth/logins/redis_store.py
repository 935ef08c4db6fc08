"""Login-limit counters shared by every replica (Redis), with this process's memory as fallback.

`RedisAttemptStore` implements `logins.limits.AttemptStore` with one sorted set per key (score
and member: the event time, the member made unique): `add` runs one Lua script per call, so
the events of a login failure land under all its keys at once, together with the trimming of
old events and the key's expiry (`keep` seconds: Redis forgets what no limit looks at).
`recent` is one `ZRANGEBYSCORE`. Times are wall-clock seconds (`time.time`), so replicas need
synchronised clocks (NTP); a skew of a few seconds only shifts the windows.

`FallbackAttemptStore` keeps Redis from ever being a reason to refuse or allow a login:
- every event is also recorded in this process's `MemoryAttemptStore`;
- when Redis fails (down, timeout, any error), reads come from memory: the limits then hold
  per replica (with N replicas, up to N times the allowance) until Redis answers again. The
  outage is logged once when it starts and once when it ends, never per request, and every
  operation served from memory is counted (`errors`, read by the metrics);
- while Redis is down it is tried again at most every `retry_seconds`, so a login does not
  wait for a connect timeout each time.
Nothing else depends on the store: tokens, the gate and forwarding never touch it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

from regauth.logins.job_tokens import JobRecord
from regauth.logins.job_tokens import JobStoreUnavailable
from regauth.logins.limits import AttemptStore
from regauth.logins.limits import MemoryAttemptStore

logger = logging.getLogger(__name__)

KEY_PREFIX = "regauth:"
MAX_EVENTS = 256  # per key, like MemoryAttemptStore: older events are dropped first
TIMEOUT = 0.5  # seconds for connecting to Redis and for each command

# KEYS: the keys of one event; ARGV: time, keep (seconds), member, max events per key.
_ADD_SCRIPT = """
local at = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, at, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. tostring(at - keep))
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(ARGV[4]) + 1))
  redis.call('PEXPIRE', key, math.ceil(keep * 1000))
end
return #KEYS
"""


def parse_state_url(url: str) -> str | None:
    """'' or 'memory' → None (in-process counters); `redis://HOST[:PORT][/DB]` (or `rediss://`,
    `unix://PATH`) → the URL. Raise ValueError for anything else."""
    if url in ("", "memory"):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"state store {url!r}: use redis://HOST:PORT/DB (or memory)")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"state store {url!r}: no host")
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(f"state store {url!r}: the path must be a database number")
    return url


class RedisAttemptStore:
    """`AttemptStore` in Redis sorted sets (see the module docstring). Raises
    `redis.RedisError` (or OSError) when Redis cannot be reached; thread-safe."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._add = self.client.register_script(_ADD_SCRIPT)

    def add(self, keys: Sequence[str], at: float, keep: float) -> None:
        member = f"{at!r}:{secrets.token_hex(6)}"  # two replicas may fail at the same instant
        self._add(
            keys=[KEY_PREFIX + k for k in keys], args=[repr(at), repr(keep), member, MAX_EVENTS]
        )

    def recent(self, key: str, since: float) -> list[float]:
        # withscores=True: (member, score) pairs; redis-py's return type covers every flag.
        pairs = cast(
            list[tuple[bytes, float]],
            self.client.zrangebyscore(KEY_PREFIX + key, f"({since!r}", "+inf", withscores=True),
        )
        return [float(score) for _, score in pairs]

    def ping(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
        self.client.close()


class FallbackAttemptStore:
    """`primary` (shared) with `fallback` (this process) behind it; see the module docstring.

    `available` is False during an outage; `errors` counts operations served by the fallback
    because the primary failed or was not tried; `outages` counts outages.
    """

    def __init__(
        self,
        primary: AttemptStore,
        fallback: AttemptStore | None = None,
        retry_seconds: float = 5.0,
        name: str = "shared state store",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback: AttemptStore = fallback if fallback is not None else MemoryAttemptStore()
        self.retry_seconds = retry_seconds
        self.name = name
        self.clock = clock
        self.available = True
        self.errors = 0
        self.outages = 0
        self._down_since = 0.0
        self._next_try = 0.0
        self._lock = threading.Lock()

    def _should_try(self) -> bool:
        with self._lock:
            return self.available or self.clock() >= self._next_try

    def _failed(self, error: Exception, served_by_fallback: bool = True) -> None:
        with self._lock:
            now = self.clock()
            self.errors += served_by_fallback
            self._next_try = now + self.retry_seconds
            if not self.available:
                return
            self.available = False
            self.outages += 1
            self._down_since = now
        logger.warning(
            "regauth: %s unreachable (%s: %s); login limits are counted per "
            "replica until it answers again",
            self.name,
            type(error).__name__,
            str(error)[:200],
        )

    def _succeeded(self) -> None:
        if self.available:
            return
        with self._lock:
            if self.available:
                return
            self.available = True
            down = self.clock() - self._down_since
        logger.warning(
            "regauth: %s reachable again after %.0f s; login limits are shared again",
            self.name,
            down,
        )

    def _skipped(self) -> None:
        with self._lock:
            self.errors += 1

    def check(self) -> bool:
        """Try the primary now (at start-up, and periodically so that `available` is current
        without login traffic); True if it answered. Blocking: at most one timeout."""
        ping = getattr(self.primary, "ping", None)
        try:
            if ping is not None:
                ping()
            else:
                self.primary.recent(f"{KEY_PREFIX}check", float("inf"))
        except Exception as e:  # as in add
            self._failed(e, served_by_fallback=False)
            return False
        self._succeeded()
        return True

    def add(self, keys: Sequence[str], at: float, keep: float) -> None:
        self.fallback.add(keys, at, keep)
        if not self._should_try():
            self._skipped()
            return
        try:
            self.primary.add(keys, at, keep)
        except Exception as e:  # any failure of the shared store: never fail a login on it
            self._failed(e)
            return
        self._succeeded()

    def recent(self, key: str, since: float) -> list[float]:
        if self._should_try():
            try:
                times = self.primary.recent(key, since)
            except Exception as e:  # as in add
                self._failed(e)
            else:
                self._succeeded()
                return times
        else:
            self._skipped()
        return self.fallback.recent(key, since)


def open_store(url: str) -> FallbackAttemptStore | None:
    """The store for `--state URL`: None for in-memory counters, else Redis with the memory
    fallback (created without connecting: an unreachable Redis is an outage, not an error)."""
    target = parse_state_url(url)
    if target is None:
        return None
    parts = urlsplit(target)
    shown = (
        f"{parts.scheme}://{parts.hostname or ''}{':' if parts.port else ''}"
        f"{parts.port or ''}{parts.path}"
    )  # never the password of redis://:pw@host
    return FallbackAttemptStore(RedisAttemptStore(target), name=f"state store {shown}")


class RedisJobStore:
    """`logins.job_tokens.JobStore` in Redis: `regauth:job:JTI` (the record, JSON) and
    `regauth:job-revoked:JTI`, each expiring with its token. Every failure to answer
    `is_revoked` is `JobStoreUnavailable` (the job token is refused: fail closed)."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )

    def record(self, entry: JobRecord) -> None:
        key = f"{KEY_PREFIX}job:{entry.jti}"
        self.client.set(key, json.dumps(entry.to_json()), exat=max(entry.exp, int(time.time()) + 1))

    def entries(self) -> list[JobRecord]:
        out = []
        for key in self.client.scan_iter(match=f"{KEY_PREFIX}job:*", count=500):
            raw = self.client.get(key)
            if raw is None:
                continue
            try:
                out.append(JobRecord.from_json(json.loads(cast(bytes, raw))))
            except (ValueError, AttributeError):
                continue
        return out

    def revoke(self, jti: str, exp: int) -> None:
        key = f"{KEY_PREFIX}job-revoked:{jti}"
        self.client.set(key, b"1", exat=max(exp, int(time.time()) + 1))

    def is_revoked(self, jti: str) -> bool:
        try:
            return bool(self.client.exists(f"{KEY_PREFIX}job-revoked:{jti}"))
        except Exception as e:  # redis.RedisError, OSError: cannot answer, so refuse
            raise JobStoreUnavailable(f"state store: {type(e).__name__}") from None

    def close(self) -> None:
        self.client.close()
