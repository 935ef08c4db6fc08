"""The PROXY protocol on the proxy listener, from trusted load balancers only.

Behind a TCP load balancer (HAProxy `send-proxy-v2`, AWS NLB, nginx `stream` with
`proxy_protocol on`, Envoy, Traefik) every connection comes from the balancer's address; the
balancer names the client in a PROXY protocol header (v1 text or v2 binary, HAProxy's spec)
sent before anything else, so regauth still terminates TLS itself. mitmproxy 12 cannot read it
(mitmproxy#4776; PR #8377 reads it in `handle_stream`, where this module does the same).

`regauth_proxy_protocol` (`regauth serve --proxy-protocol CIDR[,CIDR…]`) names the balancers:

- from a peer in those networks the header is **required**: it is read before TLS, within
  `regauth_head_timeout`, bounded (regauth.protocol.proxy_protocol: 107-byte lines, 1 KiB v2
  bodies) and never past its end (the bytes after it reach TLS untouched, however TCP split them); a
  connection without a valid header is closed and logged. A `LOCAL` header (the balancer's own
  health check) and `UNKNOWN`/`UNSPEC` families keep the balancer's address; TLVs are skipped;
  an IPv4-mapped IPv6 source counts as IPv4;
- from every other peer a header is **refused** (closed and logged by `first_bytes`), never
  parsed as an address: only a trusted balancer can name a client.

The client address from the header replaces the connection's peer address for everything
after it (mitmproxy's `Client.peername`): `networks:` rules, login limits, the per-address
connection cap, the exchange log's `client` and `regauth trace`. The balancer's address is
kept as `via` (`flow.metadata[VIA]`, written to the exchange log). `X-Forwarded-For`,
`Forwarded` and `X-Real-IP` are never consulted: headers come from the client.

install() wraps `ServerInstance.handle_stream` once and checks its target first.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import logging
from typing import Any

from mitmproxy import ctx
from mitmproxy.proxy import mode_servers
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.utils import human

from regauth.mitm.refusal_log import refusals
from regauth.protocol.proxy_protocol import NeedMore
from regauth.protocol.proxy_protocol import ProxyHeader
from regauth.protocol.proxy_protocol import ProxyProtocolError
from regauth.protocol.proxy_protocol import parse

logger = logging.getLogger(__name__)

# flow.metadata key: the load balancer a connection came through ("ADDRESS:PORT"), absent for
# direct connections.
VIA = "regauth.via"
_INSTALLED = "_regauth_proxy_header"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The balancer a connection came through, for the hooks of that connection: every task
# mitmproxy starts for a connection is created from its handle_stream task and so inherits its
# context (asyncio copies it at task creation).
_via: contextvars.ContextVar[str | None] = contextvars.ContextVar("regauth_via", default=None)


def parse_networks(value: str) -> tuple[Network, ...]:
    """`CIDR[,CIDR…]` (addresses allowed: a /32 or /128); raise ValueError naming the bad
    entry. IPv4-mapped IPv6 peers are matched as IPv4."""
    networks = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as e:
            raise ValueError(f"{entry!r} is not a network (CIDR, host bits zero): {e}") from None
    return tuple(networks)


def plain_address(address: str) -> str:
    """An IPv4-mapped IPv6 address as IPv4; any other address as it is."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return address


def is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(plain_address(address))
    except ValueError:
        return False
    return any(parsed in network for network in networks)


async def read_header(reader: asyncio.StreamReader) -> ProxyHeader:
    """Read one PROXY header and nothing after it. Raises ProxyProtocolError or
    asyncio.IncompleteReadError (the peer closed first)."""
    data = b""
    while True:
        result = parse(data)
        if not isinstance(result, NeedMore):
            return result
        # Byte by byte through the fixed part, so that bytes that cannot start a header (a
        # ClientHello, `GET `) are refused at once instead of waiting for 16 of them; then as
        # many as the parser knows the header still has (never more: TLS follows).
        data += await reader.readexactly(1 if len(data) < 16 else result.at_least)


class _Peer:
    """A stream writer whose `peername` is the client a PROXY header named."""

    def __init__(self, writer: Any, peername: tuple[str, int]) -> None:
        self._writer = writer
        self._peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        return self._writer.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


_trusted: list[tuple[Network, ...]] = [()]


def trust(networks: tuple[Network, ...]) -> None:
    """Name the load balancers whose PROXY headers are read (`regauth_proxy_protocol`)."""
    _trusted[0] = networks


def current_via() -> str | None:
    """The load balancer the connection of the running hook came through, if any."""
    return _via.get()


async def _accept(original: Any, server: Any, reader: Any, writer: Any) -> None:
    peer = writer.get_extra_info("peername") if writer is not None else None
    networks = _trusted[0]
    if (
        not networks
        or peer is None
        or not isinstance(server.mode, ReverseMode)
        or not is_trusted(str(peer[0]), networks)
    ):
        await original(server, reader, writer)
        return
    peer_text = human.format_address(peer)
    timeout = getattr(ctx.options, "regauth_head_timeout", 30) or None
    try:
        async with asyncio.timeout(timeout):
            header = await read_header(reader)
    except (ProxyProtocolError, asyncio.IncompleteReadError, TimeoutError, OSError) as e:
        if isinstance(e, ProxyProtocolError):
            why = f"invalid PROXY protocol header ({e})"
        elif isinstance(e, TimeoutError):
            why = f"no complete PROXY protocol header within {timeout} s (regauth_head_timeout)"
        else:
            why = "closed before its PROXY protocol header was complete"
        refusals.note(
            plain_address(str(peer[0])),
            "proxy_header",
            f"closed connection from load balancer {peer_text}: {why}",
        )
        writer.close()
        return
    if header.source is not None:
        writer = _Peer(writer, (plain_address(header.source[0]), header.source[1]))
    _via.set(peer_text)
    await original(server, reader, writer)


def install() -> None:
    if getattr(mode_servers.ServerInstance, _INSTALLED, False):
        return
    handle_stream = getattr(mode_servers.ServerInstance, "handle_stream", None)
    if not callable(handle_stream):
        raise RuntimeError(
            "mitmproxy ServerInstance.handle_stream is missing: regauth needs mitmproxy 12.3"
        )

    @functools.wraps(handle_stream)
    async def wrapped(self: Any, reader: Any, writer: Any = None) -> None:
        await _accept(handle_stream, self, reader, writer)

    # The patch itself: mypy's method-assign flags every assignment to a method.
    mode_servers.ServerInstance.handle_stream = wrapped  # type: ignore[method-assign]
    setattr(mode_servers.ServerInstance, _INSTALLED, True)
