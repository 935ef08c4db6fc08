import threading

import pytest

from regauth.logins.limits import Limit
from regauth.logins.limits import LoginLimiter
from regauth.logins.limits import MemoryAttemptStore
from regauth.logins.limits import RateLimited
from regauth.logins.limits import client_network
from tests.unit.helpers import FakeClock


@pytest.mark.parametrize(
    ("client", "network"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_network(client, network):
    assert client_network(client) == network


def test_one_failure_is_one_event_under_each_distinct_key():
    store = MemoryAttemptStore()
    limiter = LoginLimiter(store=store, clock=FakeClock())
    limiter.failed("ci", "192.0.2.7")
    assert sorted(store._events) == [
        "login-failure:account-network:ci:192.0.2.7",
        "login-failure:account:ci",
        "login-failure:network:192.0.2.7",
    ]
    assert all(len(events) == 1 for events in store._events.values())


def test_addresses_of_one_ipv6_64_share_their_allowance():
    limiter = LoginLimiter(clock=FakeClock())
    for i in range(5):
        limiter.check("ci", f"2001:db8::{i + 1:x}")
        limiter.failed("ci", f"2001:db8::{i + 1:x}")
    with pytest.raises(RateLimited) as e:
        limiter.check("ci", "2001:db8::ffff:1")
    assert e.value.limit == "account and network"
    limiter.check("ci", "2001:db8:0:1::1")  # the next /64 is another network


def test_per_network_limit_covers_any_names():
    limiter = LoginLimiter(clock=FakeClock(), per_network=Limit(3, 60))
    for name in ("a", "b", "c"):
        limiter.failed(name, "192.0.2.7")
    with pytest.raises(RateLimited) as e:
        limiter.check("d", "192.0.2.7")
    assert e.value.limit == "network"


def test_per_account_ceiling_across_networks_spares_known_networks():
    clock = FakeClock()
    limiter = LoginLimiter(clock=clock, per_account=Limit(20, 300), known_network_ttl=86400)
    limiter.succeeded("ci", "198.51.100.1")  # where ci's CI runner logs in from
    clock.advance(3600)
    for i in range(20):  # one guess from each of 20 addresses: every per-address limit holds
        limiter.check("ci", f"203.0.113.{i}")
        limiter.failed("ci", f"203.0.113.{i}")
    with pytest.raises(RateLimited) as e:
        limiter.check("ci", "203.0.113.200")
    assert e.value.limit == "account"
    assert e.value.retry_after == 301
    limiter.check("ci", "198.51.100.1")  # the real client is not locked out
    limiter.check("alice", "203.0.113.200")  # nor is any other account
    clock.advance(86400)  # a network is known for a day after its last good login
    for i in range(20):
        limiter.failed("ci", f"203.0.113.{i}")
    with pytest.raises(RateLimited):
        limiter.check("ci", "198.51.100.1")


def test_retry_after_counts_until_the_count_is_under_the_limit():
    clock = FakeClock(0.0)
    limiter = LoginLimiter(
        clock=clock, per_account_network=Limit(2, 60), per_account=Limit(100, 60)
    )
    for t in (0.0, 10.0, 20.0, 30.0):  # more failures than the limit allows
        clock.now = t
        limiter.failed("ci", "c")
    with pytest.raises(RateLimited) as e:
        limiter.check("ci", "c")
    assert e.value.retry_after == 51  # at t=80 only the failure at t=30 is left


def test_memory_store_is_bounded():
    store = MemoryAttemptStore(max_keys=3, max_events=4)
    for i in range(10):
        store.add([f"k{i}"], float(i), 100)
    assert len(store) == 3 and set(store._events) == {"k7", "k8", "k9"}
    for i in range(10):
        store.add(["k9"], float(i), 100)
    assert store.recent("k9", -1) == [6.0, 7.0, 8.0, 9.0]


def test_memory_store_drops_what_it_no_longer_needs():
    store = MemoryAttemptStore()
    store.add(["k"], 0.0, 10)
    store.add(["k"], 5.0, 10)
    store.add(["k"], 20.0, 10)
    assert list(store._events["k"]) == [20.0]


def test_memory_store_is_thread_safe():
    store = MemoryAttemptStore(max_events=100000)

    def add() -> None:
        for i in range(2000):
            store.add(["shared"], float(i), 1e9)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.recent("shared", -1)) == 8000
