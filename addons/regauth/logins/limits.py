"""Failed-login limits for the token endpoint, and the store that counts the attempts.

Three sliding-window limits, all checked before any bcrypt runs (defaults):

| key | limit | against |
|---|---|---|
| account name + client network | 5 failures / 60 s | guessing one account's password |
| client network, any names | 30 failures / 60 s | spraying names (unknown names cost bcrypt) |
| account name, all networks | 20 failures / 300 s | guessing one account from many addresses |

A *client network* is the address itself for IPv4 (IPv4-mapped IPv6 counts as IPv4) and the
/64 for IPv6: one host commonly holds a whole /64, so per-address counting would give it 2^64
allowances.

The per-account ceiling would let anyone lock an account out by failing from many networks.
It therefore does not apply to a network from which the account logged in successfully within
`known_network_ttl` (24 h): the real client keeps logging in from where it always does, subject
only to the limits of its own network, while new networks wait. Logins verified in the last
60 s and refresh tokens bypass the limits altogether (see `logins.credentials`, `token_service`).

The counters live behind `AttemptStore`, two methods over keyed timestamps.
`MemoryAttemptStore` keeps them in this process, bounded, with the known networks in a budget
of their own: failures (which anyone can cause) never evict them. A store shared by several
regauth instances (e.g. Redis: one sorted set per key, `ZADD key at at` + `ZREMRANGEBYSCORE key
-inf at-keep` + `EXPIRE key keep` in `add`, `ZRANGEBYSCORE key (since +inf` in `recent`) needs
a clock that all instances share: pass `clock=time.time` to `LoginLimiter`.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Protocol


class RateLimited(Exception):
    """Too many failed logins; `retry_after` is in whole seconds (for `Retry-After`)."""

    def __init__(self, retry_after: int, limit: str, message: str | None = None) -> None:
        super().__init__(message or f"too many failed logins; retry after {retry_after} s")
        self.retry_after = retry_after
        self.limit = limit  # which limit was reached, for the exchange log


class AttemptStore(Protocol):
    """Timestamps of login events under string keys. Implementations must be thread-safe."""

    def add(self, keys: Sequence[str], at: float, keep: float) -> None:
        """Record one event at time `at` (seconds) under each key. Events older than
        `at - keep` are of no further use and may be dropped."""

    def recent(self, key: str, since: float) -> list[float]:
        """The times of the events under `key` later than `since`, oldest first."""


KNOWN_PREFIX = "login-success:"  # keys that only a successful login (a valid password) writes


@dataclass
class MemoryAttemptStore:
    """In-process `AttemptStore`, bounded, with two budgets that never compete:

    - keys under `KNOWN_PREFIX` (the networks an account logged in from: written only after a
      password was verified): at most `max_known_keys` (least recently written dropped first)
      and `max_known_events` events per key (only whether there is a recent one matters);
    - every other key (failed logins, which anyone can cause): at most `max_keys` keys (least
      recently written dropped first) and `max_events` events per key (oldest first).

    An attacker failing from many networks therefore evicts only failure keys (what a limit
    counts), never the record that exempts an account's usual network from the per-account
    ceiling: with one budget, 10,000 failed networks made `ci` a stranger on its own network.
    Memory (measured, CPython 3.12): about 1 KB per key (mostly its deque) and 45 bytes per
    further event, so at the defaults about 10 MB for known networks, and 10 MB plus the
    failure events within their windows (at most 256 per key) for failures.
    """

    max_keys: int = 10000
    max_events: int = 256
    max_known_keys: int = 10000
    max_known_events: int = 1
    _events: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _known: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _budget(self, key: str) -> tuple[OrderedDict[str, deque[float]], int, int]:
        if key.startswith(KNOWN_PREFIX):
            return self._known, self.max_known_keys, self.max_known_events
        return self._events, self.max_keys, self.max_events

    def add(self, keys: Sequence[str], at: float, keep: float) -> None:
        with self._lock:
            for key in keys:
                entries, max_keys, max_events = self._budget(key)
                events = entries.pop(key, None) or deque(maxlen=max_events)
                while events and events[0] < at - keep:
                    events.popleft()
                events.append(at)
                entries[key] = events
                while len(entries) > max_keys:
                    entries.popitem(last=False)

    def recent(self, key: str, since: float) -> list[float]:
        with self._lock:
            entries = self._budget(key)[0]
            return [t for t in entries.get(key, ()) if t > since]

    def __len__(self) -> int:
        return len(self._events) + len(self._known)


@dataclass(frozen=True)
class Limit:
    """At most `failures` failed logins within `window` seconds."""

    failures: int
    window: float


def client_network(client: str) -> str:
    """The network a client address is counted under: IPv4 address, or IPv6 /64 (RFC 4291
    interface identifiers are 64 bits). Anything that is not an IP address counts as itself."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class LoginLimiter:
    """Decides whether a password may be tried, and records the outcome of each try.

    Account names reaching here are syntactically valid account names (no `:`), so keys are
    unambiguous. Unknown names are counted exactly like accounts: different treatment would
    tell an attacker which names exist.
    """

    store: AttemptStore = field(default_factory=MemoryAttemptStore)
    per_account_network: Limit = Limit(5, 60.0)
    per_network: Limit = Limit(30, 60.0)
    per_account: Limit = Limit(20, 300.0)
    known_network_ttl: float = 86400.0
    clock: Callable[[], float] = time.monotonic

    def _keys(self, username: str, client: str) -> tuple[str, str, str]:
        network = client_network(client)
        return (
            f"login-failure:account-network:{username}:{network}",
            f"login-failure:network:{network}",
            f"login-failure:account:{username}",
        )

    @staticmethod
    def _known_key(username: str, client: str) -> str:
        return f"{KNOWN_PREFIX}account-network:{username}:{client_network(client)}"

    def known_here(self, username: str, client: str) -> bool:
        """Whether this process remembers a successful login of `username` from the client's
        network within `known_network_ttl`. Never blocks: it reads the in-process memory only
        (the store itself, or the memory behind a shared store: `FallbackAttemptStore.fallback`
        records every event), so another replica's successes are not seen. A scheduling hint
        for the login queue (mitm/login_pool.py), never a limit decision."""
        local = (
            self.store
            if isinstance(self.store, MemoryAttemptStore)
            else getattr(self.store, "fallback", None)
        )
        if not isinstance(local, MemoryAttemptStore):
            return False
        return bool(
            local.recent(self._known_key(username, client), self.clock() - self.known_network_ttl)
        )

    def check(self, username: str, client: str) -> None:
        """Raise RateLimited if any limit that applies is reached. Cheap: no bcrypt."""
        now = self.clock()
        account_network, network, account = self._keys(username, client)
        checks = [
            (account_network, self.per_account_network, "account and network"),
            (network, self.per_network, "network"),
        ]
        if not self.store.recent(self._known_key(username, client), now - self.known_network_ttl):
            checks.append((account, self.per_account, "account"))
        for key, limit, name in checks:
            times = self.store.recent(key, now - limit.window)
            if len(times) >= limit.failures:
                # Retry when enough failures have left the window to be under the limit.
                release = times[len(times) - limit.failures] + limit.window
                raise RateLimited(max(1, int(release - now) + 1), name)

    def failed(self, username: str, client: str) -> None:
        keep = max(
            self.per_account_network.window, self.per_network.window, self.per_account.window
        )
        self.store.add(self._keys(username, client), self.clock(), keep)

    def succeeded(self, username: str, client: str) -> None:
        self.store.add([self._known_key(username, client)], self.clock(), self.known_network_ttl)
