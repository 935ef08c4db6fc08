"""Connection limits: no slow or idle client holds a connection for ever.

- Request-head timeout (`regauth_head_timeout`, default 30 s): a new connection must complete
  its TLS handshake and the headers of its first request within this time.
- Idle timeout (`regauth_idle_timeout`, default 60 s): a connection with no request in flight
  (after its last response, or between HTTP/2 streams) is closed after this time. This also
  bounds a client that trickles the head of a later request on a kept-alive connection.
- Per-address cap (`regauth_max_connections_per_address`, default 100): concurrent
  connections from one client address; more are closed at once.

A closed connection is logged (once per address and reason per minute, with counts) and
counted. `0` disables a limit. Counters are plain attributes for metrics to read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field

from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http

logger = logging.getLogger(__name__)

_LOG_INTERVAL = 60.0


@dataclass
class _Conn:
    client: connection.Client
    address: str
    in_flight: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ConnectionLimits:
    def __init__(self) -> None:
        self._conns: dict[str, _Conn] = {}
        self.per_address: Counter[str] = Counter()
        # Closed or refused connections by reason: "head_timeout", "idle_timeout", "cap".
        self.closed: Counter[str] = Counter()
        self._last_log: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("regauth_head_timeout", int, 30,
                          "Seconds a new connection has to send its first request's headers "
                          "(TLS handshake included); 0 disables.")
        loader.add_option("regauth_idle_timeout", int, 60,
                          "Seconds a connection may stay open with no request in flight; "
                          "0 disables.")
        loader.add_option("regauth_max_connections_per_address", int, 100,
                          "Concurrent connections allowed from one client address; 0 "
                          "disables.")

    def configure(self, updated: set[str]) -> None:
        for name in ("regauth_head_timeout", "regauth_idle_timeout",
                     "regauth_max_connections_per_address"):
            if name in updated and getattr(ctx.options, name) < 0:
                raise exceptions.OptionsError(f"{name} must be >= 0")

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def client_connected(self, client: connection.Client) -> None:
        address = client.peername[0] if client.peername else ""
        cap = ctx.options.regauth_max_connections_per_address
        if cap and self.per_address[address] >= cap:
            client.error = f"regauth: more than {cap} connections from {address}"
            self._note(address, "cap", f"refused connections from {address}: already {cap} "
                                       "open (regauth_max_connections_per_address)")
            return
        conn = _Conn(client, address)
        self._conns[client.id] = conn
        self.per_address[address] += 1
        self._arm(conn, ctx.options.regauth_head_timeout, "head_timeout")

    def client_disconnected(self, client: connection.Client) -> None:
        conn = self._conns.pop(client.id, None)
        if conn is None:
            return
        self._disarm(conn)
        self.per_address[conn.address] -= 1
        if self.per_address[conn.address] <= 0:
            del self.per_address[conn.address]

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        conn = self._conns.get(flow.client_conn.id)
        if conn is not None:
            conn.in_flight += 1
            self._disarm(conn)

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def _done(self, flow: http.HTTPFlow) -> None:
        conn = self._conns.get(flow.client_conn.id)
        if conn is None or conn.in_flight == 0:
            return
        conn.in_flight -= 1
        if conn.in_flight == 0:
            self._arm(conn, ctx.options.regauth_idle_timeout, "idle_timeout")

    def _arm(self, conn: _Conn, seconds: int, reason: str) -> None:
        self._disarm(conn)
        if seconds:
            conn.timer = asyncio.get_running_loop().call_later(seconds, self._expire,
                                                               conn.client.id, reason, seconds)

    @staticmethod
    def _disarm(conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _expire(self, client_id: str, reason: str, seconds: int) -> None:
        conn = self._conns.get(client_id)
        if conn is None:
            return
        conn.timer = None
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(client_id) if proxyserver else None
        transport = handler.transports.get(handler.client) if handler is not None else None
        if transport is None or transport.handler is None:
            return
        what = "no complete request head" if reason == "head_timeout" else "no request"
        self._note(conn.address, reason, f"closed connection from {conn.address}: {what} "
                                         f"within {seconds} s (regauth_{reason})")
        transport.handler.cancel(f"regauth {reason}")

    def _note(self, address: str, reason: str, message: str) -> None:
        self.closed[reason] += 1
        key = (address, reason)
        now = time.monotonic()
        if now - self._last_log.get(key, float("-inf")) < _LOG_INTERVAL:
            self._suppressed[key] += 1
            return
        more = self._suppressed.pop(key, 0)
        self._last_log[key] = now
        if len(self._last_log) > 10000:
            self._last_log.clear()
        logger.warning("regauth: %s%s", message,
                       f" ({more} more like it in the last minute)" if more else "")
