"""The PROXY protocol adapter's pure parts: trusted networks, addresses, reading a header off
a stream without reading past it (the socket side is tests/integration/test_proxy_protocol.py)."""

from __future__ import annotations

import asyncio

import pytest

from regauth.mitm.patches.proxy_header import is_trusted
from regauth.mitm.patches.proxy_header import parse_networks
from regauth.mitm.patches.proxy_header import plain_address
from regauth.mitm.patches.proxy_header import read_header
from regauth.protocol.proxy_protocol import ProxyProtocolError
from tests.support.proxyproto import v1
from tests.support.proxyproto import v2


def test_networks_are_cidrs_with_host_bits_zero():
    assert [str(n) for n in parse_networks(" 10.0.0.0/8, 127.0.0.1 ,fd00::/64,")] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "fd00::/64",
    ]
    assert parse_networks("") == ()
    for bad in ("10.0.0.1/8", "haproxy", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="is not a network"):
            parse_networks(bad)


def test_ipv4_mapped_peers_count_as_ipv4():
    networks = parse_networks("127.0.0.1/32")
    assert plain_address("::ffff:127.0.0.1") == "127.0.0.1"
    assert is_trusted("::ffff:127.0.0.1", networks) and is_trusted("127.0.0.1", networks)
    assert not is_trusted("127.0.0.2", networks) and not is_trusted("not-an-ip", networks)
    assert plain_address("fe80::1%eth0") == "fe80::1%eth0"


def _read(data: bytes, pieces: int = 1) -> tuple[object, bytes]:
    async def run() -> tuple[object, bytes]:
        reader = asyncio.StreamReader()
        step = max(1, len(data) // pieces)
        for at in range(0, len(data), step):
            reader.feed_data(data[at : at + step])
        reader.feed_eof()
        header = await read_header(reader)
        return header, await reader.read()

    return asyncio.run(run())


@pytest.mark.parametrize("pieces", [1, 3, 200])
@pytest.mark.parametrize("header", [v1("10.1.2.3"), v2("10.1.2.3", tlvs=b"\x04\x00\x02ab")])
def test_a_header_is_read_and_not_a_byte_more(header, pieces):
    hello = b"\x16\x03\x01\x00\x05hello"
    parsed, rest = _read(header + hello, pieces)
    assert parsed.source == ("10.1.2.3", 40000)  # type: ignore[attr-defined]
    assert rest == hello


def test_bytes_that_cannot_start_a_header_are_refused_at_once():
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x16\x03\x01")  # and nothing more: must not wait for 16 bytes
        await asyncio.wait_for(read_header(reader), 1)

    with pytest.raises(ProxyProtocolError):
        asyncio.run(run())


def test_a_peer_that_closes_mid_header_ends_the_read():
    with pytest.raises(asyncio.IncompleteReadError):
        _read(v2("10.1.2.3")[:20])
