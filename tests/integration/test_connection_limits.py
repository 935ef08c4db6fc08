"""Connection limits: stalled, idle and excess connections are closed, normal clients served."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.support import httpclient
from tests.support.policies import SERVICE

HEAD = b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\n\r\n"


def _open(port: int, source: str = "127.0.0.1", tls_ca=None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if tls_ca is not None:
        sock = ssl.create_default_context(cafile=str(tls_ca)).wrap_socket(
            sock, server_hostname="localhost"
        )
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the peer closed (EOF or reset); False if it is still open."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    finally:
        sock.setblocking(True)


def _trickle_until_closed(sock: socket.socket, limit: float) -> float:
    """Send the request head one byte every 0.2 s; seconds until the proxy closed it."""
    started = time.monotonic()
    for byte in HEAD * 100:
        if time.monotonic() - started > limit:
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            return time.monotonic() - started
        if _closed_by_peer(sock):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"connection still open after {limit} s")


@pytest.fixture
def limited(write_policy, make_registry, make_proxy):
    registry = make_registry()
    # Plain HTTP allowed: the timeouts are easiest to show with raw request bytes (the TLS
    # variants run too).
    return make_proxy(
        write_policy(),
        registry.url,
        extra=[
            "--set",
            "regauth_head_timeout=2",
            "--set",
            "regauth_idle_timeout=3",
            "--set",
            "regauth_max_connections_per_address=220",
            "--set",
            "regauth_plain_http=true",
        ],
    )


def test_the_default_head_timeout_is_at_most_30_seconds():
    from regauth.mitm.conn_limits import ConnectionLimits

    options = {}

    class Loader:
        def add_option(self, name, typespec, default, help):
            options[name] = default

    ConnectionLimits().load(Loader())
    assert 0 < options["regauth_head_timeout"] <= 30
    assert options["regauth_idle_timeout"] > 0
    assert options["regauth_max_connections_per_address"] > 0


@pytest.mark.parametrize("tls", [False, True])
def test_a_connection_stalled_in_its_request_head_is_closed_within_the_head_timeout(limited, tls):
    sock = _open(limited.port, tls_ca=limited.ca if tls else None)
    try:
        closed_after = _trickle_until_closed(sock, limit=10)
    finally:
        sock.close()
    assert 1.5 <= closed_after <= 4.5, closed_after
    time.sleep(0.2)
    assert "no complete request head within 2 s (regauth_head_timeout)" in limited.output()


def test_a_silent_connection_is_closed_within_the_head_timeout(limited):
    sock = _open(limited.port)
    started = time.monotonic()
    try:
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed without a byte sent
    except ConnectionError:
        pass
    finally:
        sock.close()
    assert time.monotonic() - started <= 4.5


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(limited):
    sock = _open(limited.port, tls_ca=limited.ca)
    try:
        sock.sendall(HEAD)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 401")
        started = time.monotonic()
        sock.settimeout(10)
        while sock.recv(65536):
            pass
        idle = time.monotonic() - started
    finally:
        sock.close()
    assert 2.5 <= idle <= 5.5, idle


def test_a_normal_client_is_served_while_200_stalled_connections_are_open(limited):
    # The stalled connections come from 200 other loopback addresses (one each, under the
    # per-address cap), so only the head timeout can close them.
    stalled = []
    try:
        for i in range(200):
            sock = _open(limited.port, source=f"127.0.1.{i + 1}" if i < 250 else "127.0.2.1")
            sock.send(b"G")
            stalled.append(sock)
        served = []
        for _ in range(5):
            started = time.monotonic()
            reply = httpclient.get_token(
                limited.port, limited.ca, ["repository:public/a:pull"], SERVICE
            )
            served.append(time.monotonic() - started)
            assert reply.status == 200
        assert max(served) < 2.0, served
        assert all(not _closed_by_peer(s) for s in stalled[:10])  # still open meanwhile
        time.sleep(4)
        closed = sum(_closed_by_peer(s) for s in stalled)
        assert closed == 200, closed
    finally:
        for sock in stalled:
            sock.close()


def test_connections_past_the_per_address_cap_are_refused(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(
        write_policy(), registry.url, extra=["--set", "regauth_max_connections_per_address=5"]
    )
    held = [_open(proxy.port, source="127.0.0.3") for _ in range(5)]
    try:
        for sock in held:
            sock.send(b"G")
        extra = _open(proxy.port, source="127.0.0.3")
        extra.settimeout(5)
        try:
            assert extra.recv(1) == b""  # closed at once
        except ConnectionError:
            pass
        extra.close()
        # Another address is not affected.
        reply = httpclient.get_token(proxy.port, proxy.ca, ["repository:public/a:pull"], SERVICE)
        assert reply.status == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert "refused connections from 127.0.0.3: already 5 open" in proxy.output()
