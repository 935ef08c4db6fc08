"""Login-limit counters in a real Redis, shared by several limiters, and the memory fallback
through a real outage (redis-server stopped and started again on the same port)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from regauth.logins.limits import LoginLimiter
from regauth.logins.limits import MemoryAttemptStore
from regauth.logins.limits import RateLimited
from regauth.logins.redis_store import KEY_PREFIX
from regauth.logins.redis_store import FallbackAttemptStore
from regauth.logins.redis_store import RedisAttemptStore
from regauth.logins.redis_store import open_store
from regauth.logins.redis_store import parse_state_url
from tests.support.services import Redis

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_store_answers_like_the_memory_store(redis_server):
    shared, memory = RedisAttemptStore(redis_server.url), MemoryAttemptStore()
    operations = [
        ("add", ["a", "b"], 100.0, 60.0),
        ("add", ["a"], 130.5, 60.0),
        ("add", ["a", "c"], 170.25, 60.0),
        ("add", ["b"], 171.0, 300.0),
    ]
    for _, keys, at, keep in operations:
        shared.add(keys, at, keep)
        memory.add(keys, at, keep)
    for key in ("a", "b", "c", "d"):
        for since in (0.0, 100.0, 120.0, 170.25, 200.0):
            assert shared.recent(key, since) == memory.recent(key, since), (key, since)
    # Events older than `keep` are trimmed when a key is written, and the key expires.
    assert shared.recent("a", 0.0) == [130.5, 170.25]
    ttl = shared.client.pttl(KEY_PREFIX + "b")
    assert 0 < ttl <= 300_000


def test_events_from_two_replicas_at_the_same_instant_both_count(redis_server):
    first, second = RedisAttemptStore(redis_server.url), RedisAttemptStore(redis_server.url)
    first.add(["k"], 50.0, 60.0)
    second.add(["k"], 50.0, 60.0)
    assert first.recent("k", 0.0) == [50.0, 50.0]


def test_concurrent_failures_are_all_counted(redis_server):
    stores = [RedisAttemptStore(redis_server.url) for _ in range(4)]
    now = time.time()

    def fail(store: RedisAttemptStore) -> None:
        for i in range(50):
            store.add(["account", "network"], now + i / 1000, 60.0)

    threads = [threading.Thread(target=fail, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores[0].recent("account", 0.0)) == 200
    assert len(stores[0].recent("network", 0.0)) == 200


def test_limiters_on_two_replicas_share_the_limit(redis_server):
    a = LoginLimiter(
        store=FallbackAttemptStore(RedisAttemptStore(redis_server.url)), clock=time.time
    )
    b = LoginLimiter(
        store=FallbackAttemptStore(RedisAttemptStore(redis_server.url)), clock=time.time
    )
    for limiter in (a, b, a, b, a):
        limiter.check("alice", "10.0.0.7")
        limiter.failed("alice", "10.0.0.7")
    for limiter in (a, b):
        with pytest.raises(RateLimited) as refused:
            limiter.check("alice", "10.0.0.7")
        assert refused.value.limit == "account and network"
    # In memory, each replica would have seen 3 and 2 failures: no limit reached.
    alone = LoginLimiter(clock=time.time)
    for _ in range(3):
        alone.failed("alice", "10.0.0.7")
    alone.check("alice", "10.0.0.7")


def test_an_outage_falls_back_to_memory_logged_once_and_counted(redis_server, caplog):
    store = FallbackAttemptStore(
        RedisAttemptStore(redis_server.url, timeout=0.2), retry_seconds=0.5
    )
    limiter = LoginLimiter(store=store, clock=time.time)
    limiter.failed("alice", "10.0.0.7")  # shared, and remembered locally
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="regauth.logins.redis_store")
    started = time.monotonic()
    for _ in range(4):
        limiter.check("alice", "10.0.0.7")
        limiter.failed("alice", "10.0.0.7")
    # Five failures in this process's memory: the limit holds per replica.
    with pytest.raises(RateLimited):
        limiter.check("alice", "10.0.0.7")
    assert time.monotonic() - started < 3, "an outage must not cost a timeout per operation"
    assert not store.available and store.outages == 1 and store.errors >= 9
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    assert "per replica" in unreachable[0].getMessage()

    redis_server.start()
    time.sleep(0.6)  # past retry_seconds: the next operation tries Redis again
    limiter.failed("bob", "10.0.0.8")
    assert store.available
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1
    # Shared again: another replica sees what this one records from now on.
    other = RedisAttemptStore(redis_server.url)
    assert len(other.recent("login-failure:account:bob", 0.0)) == 1


def test_an_unreachable_redis_at_start_is_an_outage_not_an_error(tmp_path):
    from regauth.ops.registry_process import free_port

    store = open_store(f"redis://127.0.0.1:{free_port()}/0")
    assert store is not None
    assert store.check() is False and not store.available
    limiter = LoginLimiter(store=store, clock=time.time)
    limiter.failed("alice", "10.0.0.7")
    assert len(store.recent("login-failure:account:alice", 0.0)) == 1


@pytest.mark.parametrize(
    "url, expected",
    [
        ("", None),
        ("memory", None),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://redis:6379", "redis://redis:6379"),
        ("rediss://r.example:6380/2", "rediss://r.example:6380/2"),
    ],
)
def test_state_urls(url, expected):
    assert parse_state_url(url) == expected


@pytest.mark.parametrize("url", ["http://x", "redis://", "redis://h:1/x", "mysql://h/1", "h:1"])
def test_bad_state_urls(url):
    with pytest.raises(ValueError):
        parse_state_url(url)


def test_the_store_name_never_shows_a_password():
    store = open_store("redis://:s3cret@127.0.0.1:1/0")
    assert store is not None and "s3cret" not in store.name


def test_redis_errors_are_the_ones_the_fallback_catches(redis_server):
    store = RedisAttemptStore(redis_server.url)
    redis_server.stop()
    with pytest.raises(redis.RedisError):
        store.recent("k", 0.0)
