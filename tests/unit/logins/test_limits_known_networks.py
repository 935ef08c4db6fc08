"""Issue 20 item 8: failed logins from many networks must not evict the record of the networks an
account logged in from (the exemption from the per-account ceiling), in memory and in the
memory that serves during a Redis outage."""

from __future__ import annotations

import time

import pytest

from regauth.logins.limits import KNOWN_PREFIX
from regauth.logins.limits import LoginLimiter
from regauth.logins.limits import MemoryAttemptStore
from regauth.logins.limits import RateLimited
from regauth.logins.redis_store import FallbackAttemptStore
from tests.unit.helpers import FakeClock

USUAL = "198.51.100.7"  # where ci's runner logs in from
SPRAY = 100_000


def _spray_network(i: int) -> str:
    """One address in each of `SPRAY` IPv6 /64s: an attacker holding a /48 has 65,536 of them."""
    return f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1"


def _spray(limiter: LoginLimiter, networks: int = SPRAY) -> None:
    # One guess at ci per network: each stays far below its own network's limits, while
    # together they reach the account's ceiling and fill the store with failure keys.
    for i in range(networks):
        limiter.failed("ci", _spray_network(i))


def test_a_spray_from_100000_networks_leaves_the_usual_network_known():
    clock = FakeClock()
    store = MemoryAttemptStore()
    limiter = LoginLimiter(store=store, clock=clock)
    limiter.succeeded("ci", USUAL)
    clock.advance(60)
    started = time.monotonic()
    _spray(limiter)
    print(
        f"\n{SPRAY} failed networks recorded in {time.monotonic() - started:.1f} s; "
        f"{len(store)} keys held"
    )
    # The ceiling holds for everyone else...
    with pytest.raises(RateLimited) as refused:
        limiter.check("ci", "203.0.113.9")
    assert refused.value.limit == "account"
    # ...but the account's usual network is still exempt (before the fix: 429 for ~5 min).
    limiter.check("ci", USUAL)
    assert limiter.known_here("ci", USUAL)
    # Both budgets stayed bounded.
    assert len(store._events) <= store.max_keys
    assert len(store._known) == 1


def test_failures_never_evict_known_networks_and_successes_evict_only_each_other():
    store = MemoryAttemptStore(max_keys=3, max_known_keys=2)
    store.add([KNOWN_PREFIX + "a"], 1.0, 100)
    for i in range(50):
        store.add([f"login-failure:network:{i}"], 2.0 + i, 100)
    assert store.recent(KNOWN_PREFIX + "a", 0) == [1.0]
    assert len(store._events) == 3
    store.add([KNOWN_PREFIX + "b"], 60.0, 100)
    store.add([KNOWN_PREFIX + "a"], 61.0, 100)  # written again: the most recent
    store.add([KNOWN_PREFIX + "c"], 62.0, 100)  # over the budget: b, the oldest success, goes
    assert sorted(store._known) == [KNOWN_PREFIX + "a", KNOWN_PREFIX + "c"]
    assert store.recent(KNOWN_PREFIX + "a", 0) == [61.0]  # one event is all a known key keeps


class _Down:
    """A shared store that is never reachable (a Redis outage from the start)."""

    def add(self, keys, at, keep):  # type: ignore[no-untyped-def]
        raise ConnectionError("down")

    def recent(self, key, since):  # type: ignore[no-untyped-def]
        raise ConnectionError("down")


def test_during_an_outage_the_fallback_memory_keeps_known_networks_too():
    clock = FakeClock()
    store = FallbackAttemptStore(_Down(), retry_seconds=1e9, clock=clock)
    limiter = LoginLimiter(store=store, clock=clock)
    limiter.succeeded("ci", USUAL)  # recorded in memory as well as (not) in Redis
    clock.advance(60)
    _spray(limiter, 20_000)  # 40,001 failure keys: four times the memory's budget
    with pytest.raises(RateLimited):
        limiter.check("ci", "203.0.113.9")
    limiter.check("ci", USUAL)
    assert not store.available


def test_known_here_reads_only_this_process_memory():
    clock = FakeClock()
    limiter = LoginLimiter(clock=clock)
    assert not limiter.known_here("ci", USUAL)
    limiter.succeeded("ci", "198.51.100.7")
    assert limiter.known_here("ci", USUAL)
    assert not limiter.known_here("alice", USUAL)
    assert not limiter.known_here("ci", "198.51.100.8")
    clock.advance(limiter.known_network_ttl + 1)
    assert not limiter.known_here("ci", USUAL)
    # Behind a shared store: what this process recorded (the fallback memory), never I/O.
    shared = LoginLimiter(store=FallbackAttemptStore(_Down(), clock=clock), clock=clock)
    shared.succeeded("ci", USUAL)
    assert shared.known_here("ci", USUAL)
