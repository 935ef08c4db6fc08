"""Connection limits: no slow, idle or numerous client holds regauth's connections for ever.

Per connection:
- Request-head timeout (`regauth_head_timeout`, default 30 s): a new connection must complete
  its TLS handshake and the headers of its first request within this time.
- Idle timeout (`regauth_idle_timeout`, default 60 s): a connection with no request in flight
  (after its last response, or between HTTP/2 streams) is closed after this time. This also
  bounds a client that trickles the head of a later request on a kept-alive connection.
- Request bodies must keep arriving (`regauth_body_timeout`, `regauth_body_min_rate`,
  `regauth_token_body_timeout`; enforced per stream by `body_limits`), and request heads are
  bounded in size (`head_limits`).

Per address: at most `regauth_max_connections_per_address` (default 100) concurrent
connections; more are closed at once.

Per process, below the file-descriptor limit (which regauth raises to its hard limit at start):
- `regauth_max_connections` client connections (default: half of the descriptors, less a
  reserve for files and listeners). Past it, load is shed while descriptors remain: a new
  connection gets one `503 UNAVAILABLE` (`Retry-After`, `Connection: close`) to its first
  request and no more than 5 s to send it; past it by `SHED_MARGIN` more, new connections are
  closed at once. `accept()` never runs out of descriptors.
- `regauth_max_upstream_connections` connections to the registry (default: the other half).
  While that many are open, registry requests get `503 UNAVAILABLE` with `Retry-After`
  (token requests need no registry connection and are still answered); a connection beyond
  it by `SHED_MARGIN` (requests decided just before) is refused and its request gets 503
  with `Retry-After` too (`patches/error_pages.py`).

A closed connection is logged (once per address and reason per minute, with counts, in bounded
memory: `refusal_log`) and counted by reason for the metrics. `0` disables a limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from dataclasses import field

from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

from regauth.mitm.patches import body_limits
from regauth.mitm.refusal_log import RefusalLog
from regauth.mitm.refusal_log import refusals
from regauth.mitm.request_handler import SHED
from regauth.mitm.request_handler import UPSTREAM_UNAVAILABLE

logger = logging.getLogger(__name__)

# Descriptors kept free for everything that is not a client or registry connection: the
# exchange log, the policy and key files, listeners, the admin socket, Redis, the embedded
# registry's pipes.
FD_RESERVE = 128
SHED_MARGIN = 64  # shedding connections (503) beyond the ceiling, before refusing outright
SHED_HEAD_TIMEOUT = 5  # seconds a shed connection has to send the request it gets 503 for
UPSTREAM_LIMIT_MESSAGE = "regauth: registry connection limit reached, retry shortly"


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE, raised to the hard limit first when that is possible (the
    usual 1024 soft limit is far below what a busy proxy needs, and systemd's default hard
    limit is 512K)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_ceilings(descriptors: int) -> tuple[int, int]:
    """(client connections, registry connections) for a descriptor limit: the descriptors
    left after `FD_RESERVE` and `SHED_MARGIN`, split evenly."""
    usable = max(64, descriptors - FD_RESERVE - SHED_MARGIN)
    return usable // 2, usable // 2


@dataclass
class _Conn:
    client: connection.Client
    address: str
    in_flight: int = 0
    shed: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ConnectionLimits:
    def __init__(self, log: RefusalLog | None = None) -> None:
        self._conns: dict[str, _Conn] = {}
        self.per_address: Counter[str] = Counter()
        self.log = log if log is not None else refusals
        self.upstream_open = 0
        self._reserved: set[str] = set()  # ids of registry connections counted as open
        self._descriptors = 0

    @property
    def closed(self) -> Counter[str]:
        """Refused or closed connections by reason (head_timeout, idle_timeout, cap,
        overloaded, shed, body_too_slow, head_too_large, …)."""
        return self.log.counts

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "regauth_head_timeout",
            int,
            30,
            "Seconds a new connection has to send its first request's headers "
            "(TLS handshake included); 0 disables.",
        )
        loader.add_option(
            "regauth_idle_timeout",
            int,
            60,
            "Seconds a connection may stay open with no request in flight; 0 disables.",
        )
        loader.add_option(
            "regauth_max_connections_per_address",
            int,
            100,
            "Concurrent connections allowed from one client address; 0 disables.",
        )
        loader.add_option(
            "regauth_max_connections",
            int,
            -1,
            "Concurrent client connections before regauth sheds load (503); "
            "-1: half of the file descriptors; 0 disables.",
        )
        loader.add_option(
            "regauth_max_upstream_connections",
            int,
            -1,
            "Concurrent connections to the registry; -1: half of the file descriptors; 0 disables.",
        )
        loader.add_option(
            "regauth_body_timeout",
            int,
            body_limits.DEFAULT_BODY_TIMEOUT,
            "Seconds per window in which a request body must bring "
            "regauth_body_min_rate bytes per second; 0 disables.",
        )
        loader.add_option(
            "regauth_body_min_rate",
            int,
            body_limits.DEFAULT_BODY_MIN_RATE,
            "Bytes per second a request body must bring, averaged over regauth_body_timeout.",
        )
        loader.add_option(
            "regauth_token_body_timeout",
            int,
            body_limits.DEFAULT_TOKEN_BODY_TIMEOUT,
            "Seconds a token request's form has to arrive whole; 0 disables.",
        )

    def configure(self, updated: set[str]) -> None:
        for name in (
            "regauth_head_timeout",
            "regauth_idle_timeout",
            "regauth_max_connections_per_address",
            "regauth_body_timeout",
            "regauth_body_min_rate",
            "regauth_token_body_timeout",
        ):
            if name in updated and getattr(ctx.options, name) < 0:
                raise exceptions.OptionsError(f"{name} must be >= 0")
        for name in ("regauth_max_connections", "regauth_max_upstream_connections"):
            if name in updated and getattr(ctx.options, name) < -1:
                raise exceptions.OptionsError(f"{name} must be >= -1")

    def running(self) -> None:
        self._descriptors = descriptor_limit()
        clients, upstream = self.ceilings
        logger.info(
            "regauth: connection ceilings: %s client, %s registry connections "
            "(%d file descriptors)",
            clients or "no limit on",
            upstream or "no limit on",
            self._descriptors,
        )

    @property
    def ceilings(self) -> tuple[int, int]:
        """(client, registry) connection ceilings in force; 0 = none."""
        auto = default_ceilings(self._descriptors or descriptor_limit())
        clients = ctx.options.regauth_max_connections
        upstream = ctx.options.regauth_max_upstream_connections
        return (auto[0] if clients == -1 else clients, auto[1] if upstream == -1 else upstream)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def client_connected(self, client: connection.Client) -> None:
        address = client.peername[0] if client.peername else ""
        cap = ctx.options.regauth_max_connections_per_address
        if cap and self.per_address[address] >= cap:
            client.error = f"regauth: more than {cap} connections from {address}"
            self.log.note(
                address,
                "cap",
                f"refused connections from {address}: already {cap} "
                "open (regauth_max_connections_per_address)",
            )
            return
        ceiling, _ = self.ceilings
        shed = bool(ceiling) and len(self._conns) >= ceiling
        if shed and len(self._conns) >= ceiling + SHED_MARGIN:
            client.error = f"regauth: more than {ceiling + SHED_MARGIN} connections open"
            self.log.note(
                "*",
                "overloaded",
                f"refused connections: {len(self._conns)} open "
                f"(regauth_max_connections {ceiling} + "
                f"{SHED_MARGIN} shedding)",
            )
            return
        conn = _Conn(client, address, shed=shed)
        self._conns[client.id] = conn
        self.per_address[address] += 1
        if shed:
            self.log.note(
                "*",
                "shed",
                f"shedding load: {len(self._conns)} connections open "
                f"(regauth_max_connections {ceiling}); new ones get 503",
            )
            self._arm(conn, SHED_HEAD_TIMEOUT, "head_timeout")
        else:
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
            if conn.shed:
                flow.metadata[SHED] = (
                    f"regauth is at its connection limit "
                    f"({self.ceilings[0]} connections); retry shortly"
                )
        _, ceiling = self.ceilings
        if ceiling and self.upstream_open >= ceiling:
            flow.metadata[UPSTREAM_UNAVAILABLE] = (
                f"regauth is at its registry connection limit ({ceiling})"
            )

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
            idle = 1 if conn.shed else ctx.options.regauth_idle_timeout
            self._arm(conn, idle, "idle_timeout")

    # Registry connections: reserved in server_connect (before mitmproxy opens one), released
    # when it closes or fails to open.

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        _, ceiling = self.ceilings
        if ceiling and self.upstream_open >= ceiling + SHED_MARGIN:
            # Requests are shed (503) from `ceiling` on; this only stops what was already
            # decided when the last connections were taken.
            data.server.error = UPSTREAM_LIMIT_MESSAGE
            self.log.note(
                "*",
                "upstream_limit",
                f"refused a registry connection: {self.upstream_open} open "
                f"(regauth_max_upstream_connections {ceiling} + {SHED_MARGIN})",
            )
            return
        self.upstream_open += 1
        self._reserved.add(data.server.id)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._release(data.server)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._release(data.server)

    def _release(self, server: connection.Server) -> None:
        if server.id in self._reserved:
            self._reserved.discard(server.id)
            self.upstream_open -= 1

    def _arm(self, conn: _Conn, seconds: int, reason: str) -> None:
        self._disarm(conn)
        if seconds:
            conn.timer = asyncio.get_running_loop().call_later(
                seconds, self._expire, conn.client.id, reason, seconds
            )

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
        self.log.note(
            conn.address,
            reason,
            f"closed connection from {conn.address}: {what} within {seconds} s (regauth_{reason})",
        )
        transport.handler.cancel(f"regauth {reason}")
