"""The shared login-limit store (`regauth.logins.redis_store`) without a Redis: state URLs, the
store `--state` opens (never connecting, never showing a password), and the fallback that
keeps a shared store from ever deciding a login: every event also in memory, reads from
memory during an outage, the outage logged once when it starts and once when it ends, retries
spaced. A real Redis: tests/integration/test_shared_state.py and test_known_networks_redis.py."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from regauth.logins.limits import MemoryAttemptStore
from regauth.logins.redis_store import FallbackAttemptStore
from regauth.logins.redis_store import RedisAttemptStore
from regauth.logins.redis_store import open_store
from regauth.logins.redis_store import parse_state_url
from regauth.ops.registry_process import free_port
from tests.unit.helpers import FakeClock


class _Flaky:
    """A primary store that fails while `down`, and records what reached it."""

    def __init__(self) -> None:
        self.down = False
        self.memory = MemoryAttemptStore()
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")

    def add(self, keys: Sequence[str], at: float, keep: float) -> None:
        self._call()
        self.memory.add(keys, at, keep)

    def recent(self, key: str, since: float) -> list[float]:
        self._call()
        return self.memory.recent(key, since)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", None),
        ("memory", None),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("rediss://:pw@redis.example", "rediss://:pw@redis.example"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_state_urls(url, expected):
    assert parse_state_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://x", "use redis://HOST:PORT/DB"),
        ("redis://", "no host"),
        ("redis://redis/zero", "the path must be a database number"),
        ("redis", "use redis://"),
    ],
)
def test_unusable_state_urls(url, message):
    with pytest.raises(ValueError, match=message):
        parse_state_url(url)


def test_open_store_connects_to_nothing_and_names_no_password():
    assert open_store("") is None
    port = free_port()
    store = open_store(f"redis://:s3cret@127.0.0.1:{port}/2")
    assert store is not None and isinstance(store.primary, RedisAttemptStore)
    assert store.name == f"state store redis://127.0.0.1:{port}/2"
    assert store.check() is False and store.available is False  # nothing listens there
    store.primary.close()


def test_events_go_to_both_and_reads_come_from_the_primary_while_it_answers():
    primary, clock = _Flaky(), FakeClock()
    store = FallbackAttemptStore(primary, clock=clock)
    store.add(["a", "b"], 10.0, 60)
    primary.memory.add(["a"], 11.0, 60)  # another replica's event
    assert store.recent("a", 0) == [10.0, 11.0]  # shared
    assert store.fallback.recent("a", 0) == [10.0]
    assert (store.available, store.errors, store.outages) == (True, 0, 0)


def test_an_outage_is_served_from_memory_logged_once_and_retried_spaced(caplog):
    primary, clock = _Flaky(), FakeClock()
    store = FallbackAttemptStore(primary, retry_seconds=5.0, name="state store test", clock=clock)
    store.add(["a"], 10.0, 60)
    primary.down = True
    with caplog.at_level(logging.WARNING):
        store.add(["a"], 11.0, 60)  # fails: an outage begins
        assert store.recent("a", 0) == [10.0, 11.0]  # not tried again yet: memory
        assert store.recent("a", 0) == [10.0, 11.0]
        assert primary.calls == 2  # the add that succeeded, and the one that failed
        clock.advance(5)
        assert store.recent("a", 0) == [10.0, 11.0]  # tried, failed, memory
        assert primary.calls == 3
        primary.down = False
        clock.advance(5)
        assert store.recent("a", 0) == [10.0]  # the primary again (it missed 11.0)
    assert store.available and store.outages == 1 and store.errors == 4
    assert [r.getMessage() for r in caplog.records] == [
        "regauth: state store test unreachable (ConnectionError: connection refused); login "
        "limits are counted per replica until it answers again",
        "regauth: state store test reachable again after 10 s; login limits are shared again",
    ]


def test_check_tries_now_and_counts_no_operation(caplog):
    primary, clock = _Flaky(), FakeClock()
    store = FallbackAttemptStore(primary, clock=clock)
    primary.down = True
    assert store.check() is False and store.errors == 0 and not store.available
    primary.down = False
    assert store.check() is True and store.available
