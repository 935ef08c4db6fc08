"""Connection limits in process: head and idle timers, the per-address cap, rate-limited logs
(README "Connection limits"). Closing a connection for real needs a proxy server and is
covered by tests/integration/test_connection_limits.py.

Hooks: `load`, `configure`, `client_connected`, `client_disconnected`, `requestheaders`,
`response`, `error`.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from regauth.mitm import conn_limits
from regauth.mitm.conn_limits import ConnectionLimits
from regauth.mitm.refusal_log import RefusalLog
from tests.unit.mitm.harness import UPSTREAM
from tests.unit.mitm.harness import killed
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import upstream_response

OPTIONS = ("regauth_head_timeout", "regauth_idle_timeout", "regauth_max_connections_per_address")


def _client(address: str = "10.0.0.1", port: int = 40000):
    client = tflow.tclient_conn()
    client.peername = (address, port)
    client.proxy_mode = ProxyMode.parse(f"reverse:{UPSTREAM}")
    return client


def _flow_on(client):
    flow = registry_flow()
    flow.client_conn = client
    return flow


def _timer_in(limits, client) -> float | None:
    timer = limits._conns[client.id].timer
    if timer is None:
        return None
    return round(timer.when() - asyncio.get_running_loop().time())


@pytest.fixture
def limits():
    addon = ConnectionLimits(RefusalLog())
    with taddons.context(addon) as tctx:
        yield addon, tctx


def test_the_limits_and_their_defaults(limits):
    _, tctx = limits
    assert (
        tctx.options.regauth_head_timeout,
        tctx.options.regauth_idle_timeout,
        tctx.options.regauth_max_connections_per_address,
    ) == (30, 60, 100)


@pytest.mark.parametrize("name", OPTIONS)
def test_negative_limits_are_refused_and_0_disables(name, limits):
    addon, tctx = limits
    with pytest.raises(exceptions.OptionsError, match=f"^{name} must be >= 0$"):
        tctx.configure(addon, **{name: -1})
    assert getattr(tctx.options, name) != -1  # rolled back
    tctx.configure(addon, **{name: 0})


@run
async def test_a_new_connection_has_until_the_head_timeout(limits):
    addon, tctx = limits
    client = _client()
    addon.client_connected(client)
    assert addon.open_connections == 1 and addon.per_address == {"10.0.0.1": 1}
    assert _timer_in(addon, client) == 30


@run
async def test_a_request_in_flight_stops_the_clock_and_its_end_starts_the_idle_one(limits):
    addon, _ = limits
    client = _client()
    addon.client_connected(client)
    flow = _flow_on(client)
    addon.requestheaders(flow)
    assert addon._conns[client.id].in_flight == 1 and _timer_in(addon, client) is None
    addon.response(flow)
    assert addon._conns[client.id].in_flight == 0 and _timer_in(addon, client) == 60


@run
async def test_an_errored_request_ends_too(limits):
    addon, _ = limits
    client = _client()
    addon.client_connected(client)
    flow = _flow_on(client)
    addon.requestheaders(flow)
    addon.error(flow)
    assert _timer_in(addon, client) == 60


@run
async def test_http2_streams_keep_the_connection_busy_until_the_last_ends(limits):
    addon, _ = limits
    client = _client()
    addon.client_connected(client)
    one, two = _flow_on(client), _flow_on(client)
    addon.requestheaders(one)
    addon.requestheaders(two)
    addon.response(one)
    assert _timer_in(addon, client) is None
    addon.error(two)
    assert _timer_in(addon, client) == 60
    addon.response(two)  # a late second end changes nothing
    assert addon._conns[client.id].in_flight == 0


@run
async def test_0_disables_the_timers(limits):
    addon, tctx = limits
    tctx.configure(addon, regauth_head_timeout=0, regauth_idle_timeout=0)
    client = _client()
    addon.client_connected(client)
    assert _timer_in(addon, client) is None
    flow = _flow_on(client)
    addon.requestheaders(flow)
    addon.response(flow)
    assert _timer_in(addon, client) is None


@run
async def test_a_disconnected_client_is_forgotten_with_its_timer(limits):
    addon, _ = limits
    client, other = _client(), _client(port=40001)
    addon.client_connected(client)
    addon.client_connected(other)
    timer = addon._conns[client.id].timer
    addon.client_disconnected(client)
    assert timer.cancelled() and client.id not in addon._conns
    assert addon.per_address == {"10.0.0.1": 1}
    addon.client_disconnected(other)
    assert addon.per_address == {} and addon.open_connections == 0
    addon.client_disconnected(other)  # twice: nothing


@run
async def test_flows_of_unknown_connections_are_ignored(limits):
    addon, _ = limits
    flow = registry_flow()
    addon.requestheaders(flow)
    addon.response(flow)
    addon.error(flow)
    assert addon.open_connections == 0


@run
async def test_the_per_address_cap(limits, caplog):
    addon, tctx = limits
    tctx.configure(addon, regauth_max_connections_per_address=2)
    first, second, third = (_client(port=p) for p in (1, 2, 3))
    elsewhere = _client("10.0.0.2")
    for client in (first, second, third, elsewhere):
        addon.client_connected(client)
    assert third.error == "regauth: more than 2 connections from 10.0.0.1"
    assert first.error is second.error is elsewhere.error is None
    assert third.id not in addon._conns and addon.per_address == {"10.0.0.1": 2, "10.0.0.2": 1}
    assert addon.closed == {"cap": 1}
    addon.client_disconnected(third)  # a refused connection leaves no trace when it goes
    assert addon.per_address["10.0.0.1"] == 2
    addon.client_disconnected(first)
    fourth = _client(port=4)
    addon.client_connected(fourth)
    assert fourth.error is None
    assert (
        "refused connections from 10.0.0.1: already 2 open "
        "(regauth_max_connections_per_address)" in caplog.text
    )


@run
async def test_no_cap_with_0(limits):
    addon, tctx = limits
    tctx.configure(addon, regauth_max_connections_per_address=0)
    clients = [_client(port=p) for p in range(150)]
    for client in clients:
        addon.client_connected(client)
    assert addon.per_address == {"10.0.0.1": 150} and not any(c.error for c in clients)


@run
async def test_closed_connections_are_logged_once_per_address_and_reason_a_minute(limits, caplog):
    addon, tctx = limits
    tctx.configure(addon, regauth_max_connections_per_address=1)
    addon.client_connected(_client(port=1))
    for port in range(2, 6):
        addon.client_connected(_client(port=port))
    addon.client_connected(_client("10.0.0.9"))
    addon.client_connected(_client("10.0.0.9", 2))
    lines = [r.getMessage() for r in caplog.records if r.name == conn_limits.__name__]
    assert len(lines) == 2 and addon.closed == {"cap": 5}
    assert all(
        r.levelno == logging.WARNING for r in caplog.records if r.name == conn_limits.__name__
    )
    now = addon.log.clock()
    addon.log.clock = lambda: now + addon.log.interval  # a minute later
    addon.client_connected(_client(port=6))
    last = [r.getMessage() for r in caplog.records if r.name == conn_limits.__name__][-1]
    assert last.endswith("(3 more like it in the last minute)")


@run
async def test_a_timer_for_a_connection_already_gone_does_nothing(limits, caplog):
    addon, _ = limits
    client = _client()
    addon.client_connected(client)
    addon._expire(client.id, "head_timeout", 30)  # no proxy server holds it
    addon.client_disconnected(client)
    addon._expire(client.id, "idle_timeout", 60)
    assert not addon.closed and not caplog.records


@run
async def test_a_timer_for_a_connection_the_proxy_server_no_longer_has_does_nothing(caplog):
    addon, server = ConnectionLimits(RefusalLog()), Proxyserver()
    with taddons.context(server, addon):
        client = _client()
        addon.client_connected(client)
        addon._expire(client.id, "head_timeout", 30)
    assert not addon.closed and not caplog.records


@run
async def test_in_the_chain_every_flow_ends_whoever_answers_it(write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        client = _client("127.0.0.1")
        harness.limits.client_connected(client)
        for path, upstream in (
            ("/v2/a/../b/tags/list", None),  # refused by regauth
            ("/v2/public/app/tags/list", None),  # answered upstream
            (
                "/v2/public/app/tags/list",  # killed (error hook)
                upstream_response(101, [("Upgrade", "h2c")]),
            ),
        ):
            flow = registry_flow(path)
            flow.client_conn = client
            await harness.cycle(flow, upstream)
            assert harness.limits._conns[client.id].in_flight == 0
            assert _timer_in(harness.limits, client) == 60
        assert killed(flow)
        harness.limits.client_disconnected(client)
    assert harness.limits.open_connections == 0


@run
async def test_past_the_ceiling_connections_get_a_503_then_are_refused(limits):
    addon, tctx = limits
    tctx.configure(addon, regauth_max_connections=3, regauth_max_connections_per_address=0)
    clients = [_client(port=p) for p in range(3 + conn_limits.SHED_MARGIN + 1)]
    for client in clients:
        addon.client_connected(client)
    normal, shed, refused = (
        clients[:3],
        clients[3 : 3 + conn_limits.SHED_MARGIN],
        clients[3 + conn_limits.SHED_MARGIN :],
    )
    assert not any(addon._conns[c.id].shed for c in normal)
    assert all(addon._conns[c.id].shed for c in shed)
    assert [c.error for c in refused] == [
        f"regauth: more than {3 + conn_limits.SHED_MARGIN} connections open"
    ]
    assert _timer_in(addon, shed[0]) == conn_limits.SHED_HEAD_TIMEOUT
    assert addon.closed["shed"] == conn_limits.SHED_MARGIN and addon.closed["overloaded"] == 1
    flow = _flow_on(shed[0])
    addon.requestheaders(flow)
    assert "connection limit (3 connections)" in flow.metadata[conn_limits.SHED]
    addon.response(flow)
    assert _timer_in(addon, shed[0]) == 1  # closed soon after its 503
    calm = _flow_on(normal[0])
    addon.requestheaders(calm)
    assert conn_limits.SHED not in calm.metadata


@run
async def test_registry_connections_are_bounded(limits):
    from mitmproxy.proxy import server_hooks

    addon, tctx = limits
    tctx.configure(addon, regauth_max_upstream_connections=2)
    client = _client()
    addon.client_connected(client)

    def connect():
        data = server_hooks.ServerConnectionHookData(client=client, server=tflow.tserver_conn())
        addon.server_connect(data)
        return data

    first, second = connect(), connect()
    assert addon.upstream_open == 2 and first.server.error is None
    flow = _flow_on(client)
    addon.requestheaders(flow)  # at the ceiling: registry requests are shed with 503
    assert "registry connection limit (2)" in flow.metadata[conn_limits.UPSTREAM_UNAVAILABLE]
    extra = [connect() for _ in range(conn_limits.SHED_MARGIN + 1)]
    assert extra[-1].server.error == conn_limits.UPSTREAM_LIMIT_MESSAGE
    assert all(d.server.error is None for d in extra[:-1])
    addon.server_connect_error(extra[-1])  # a refused one was never counted
    assert addon.upstream_open == 2 + conn_limits.SHED_MARGIN
    for data in (first, second, *extra[:-1]):
        addon.server_disconnected(data)
        addon.server_disconnected(data)  # closing twice releases once
    assert addon.upstream_open == 0
    later = _flow_on(client)
    addon.requestheaders(later)
    assert conn_limits.UPSTREAM_UNAVAILABLE not in later.metadata


def test_the_default_ceilings_stay_below_the_descriptor_limit():
    for descriptors in (1024, 4096, 65536, 1 << 20):
        clients, upstream = conn_limits.default_ceilings(descriptors)
        worst = clients + conn_limits.SHED_MARGIN + upstream + conn_limits.SHED_MARGIN
        assert worst + conn_limits.FD_RESERVE // 2 <= descriptors + conn_limits.SHED_MARGIN
        assert clients >= 400
    assert conn_limits.descriptor_limit() >= 1024
