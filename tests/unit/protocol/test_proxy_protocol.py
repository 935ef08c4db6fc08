"""PROXY protocol header parser (proxy_protocol.py): valid v1 and v2 headers, every error, and
segmentation (every prefix of every header here gives NeedMore or the whole's result)."""

from __future__ import annotations

import time
from typing import Literal

import pytest

from regauth.protocol.proxy_protocol import MAX_HEADER_BYTES
from regauth.protocol.proxy_protocol import MAX_V1_BYTES
from regauth.protocol.proxy_protocol import MAX_V2_LENGTH
from regauth.protocol.proxy_protocol import V2_SIGNATURE
from regauth.protocol.proxy_protocol import Address
from regauth.protocol.proxy_protocol import Command
from regauth.protocol.proxy_protocol import Family
from regauth.protocol.proxy_protocol import NeedMore
from regauth.protocol.proxy_protocol import ProxyHeader
from regauth.protocol.proxy_protocol import ProxyProtocolError
from regauth.protocol.proxy_protocol import Tlv
from regauth.protocol.proxy_protocol import parse

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
HTTP = b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n\r\n"
IPV4_ADDRESSES = (
    bytes([192, 0, 2, 1, 198, 51, 100, 7]) + (56324).to_bytes(2, "big") + (443).to_bytes(2, "big")
)
IPV6_ADDRESSES = (
    bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("fe800000000000000000000000000abc")
    + (1).to_bytes(2, "big")
    + (65535).to_bytes(2, "big")
)
V6_MAX = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def v2(ver_cmd: int, family: int, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return SIG + bytes([ver_cmd, family]) + size.to_bytes(2, "big") + body


def tlv(type_: int, value: bytes) -> bytes:
    return bytes([type_]) + len(value).to_bytes(2, "big") + value


def header(
    version: Literal[1, 2],
    command: Command,
    family: Family,
    source: Address | None,
    destination: Address | None,
    consumed: int,
    tlvs: tuple[Tlv, ...] = (),
) -> ProxyHeader:
    return ProxyHeader(
        version=version,
        command=command,
        family=family,
        source=source,
        destination=destination,
        tlvs=tlvs,
        consumed=consumed,
    )


def outcome(data: bytes) -> tuple[str, object]:
    try:
        result = parse(data)
    except ProxyProtocolError as error:
        return "error", error.reason
    return ("more", result.at_least) if isinstance(result, NeedMore) else ("header", result)


def v1(line: str) -> bytes:
    return line.encode("latin-1") + b"\r\n"


# PP2_TYPE_SSL (§2.2.6): client flags, verify, then sub-TLVs (returned whole, uninterpreted).
SSL_VALUE = b"\x05" + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.test")
SSL_TLV = tlv(0x20, SSL_VALUE)

VALID = {
    # version 1 (§2.1)
    "v1 tcp4, the spec's example": (
        v1("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443"),
        header(1, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), 47),
    ),
    "v1 tcp4 extremes": (
        v1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535"),
        header(1, "PROXY", "TCP4", ("0.0.0.0", 0), ("255.255.255.255", 65535), 44),
    ),
    "v1 tcp4 longest (56 bytes)": (
        v1("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535"),
        header(1, "PROXY", "TCP4", ("255.255.255.255", 65535), ("255.255.255.255", 65535), 56),
    ),
    "v1 tcp6 compressed": (
        v1("PROXY TCP6 2001:db8::1 ::1 1 2"),
        header(1, "PROXY", "TCP6", ("2001:db8::1", 1), ("::1", 2), 32),
    ),
    "v1 tcp6 upper case, canonicalised": (
        v1("PROXY TCP6 2001:DB8::A :: 10 20"),
        header(1, "PROXY", "TCP6", ("2001:db8::a", 10), ("::", 20), 33),
    ),
    "v1 tcp6 longest (104 bytes)": (
        v1(f"PROXY TCP6 {V6_MAX} {V6_MAX} 65535 65535"),
        header(1, "PROXY", "TCP6", (V6_MAX, 65535), (V6_MAX, 65535), 104),
    ),
    "v1 tcp6 ipv4-mapped, as inet_ntop writes it (kept as IPv6)": (
        v1("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:10.0.0.1 443 8443"),
        header(1, "PROXY", "TCP6", ("::ffff:c000:201", 443), ("::ffff:a00:1", 8443), 54),
    ),
    "v1 unknown, short form": (v1("PROXY UNKNOWN"), header(1, "PROXY", "UNKNOWN", None, None, 15)),
    "v1 unknown with addresses, ignored": (
        v1("PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2"),
        header(1, "PROXY", "UNKNOWN", None, None, 39),
    ),
    "v1 unknown, worst case of §2.1 (107 bytes)": (
        v1(f"PROXY UNKNOWN {V6_MAX} {V6_MAX} 65535 65535"),
        header(1, "PROXY", "UNKNOWN", None, None, 107),
    ),
    "v1 unknown with anything but CR and LF, up to 107 bytes": (
        b"PROXY UNKNOWN " + bytes(b for b in range(256) if b not in b"\r\n")[:91] + b"\r\n",
        header(1, "PROXY", "UNKNOWN", None, None, 107),
    ),
    "v1 unknown with control bytes and spaces": (
        b"PROXY UNKNOWN  \x00\t\xff  x\r\n",
        header(1, "PROXY", "UNKNOWN", None, None, 23),
    ),
    # version 2 (§2.2)
    "v2 tcp4": (
        v2(0x21, 0x11, IPV4_ADDRESSES),
        header(2, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.7", 443), 28),
    ),
    "v2 udp4": (
        v2(0x21, 0x12, IPV4_ADDRESSES),
        header(2, "PROXY", "UDP4", ("192.0.2.1", 56324), ("198.51.100.7", 443), 28),
    ),
    "v2 tcp6": (
        v2(0x21, 0x21, IPV6_ADDRESSES),
        header(2, "PROXY", "TCP6", ("2001:db8::1", 1), ("fe80::abc", 65535), 52),
    ),
    "v2 udp6": (
        v2(0x21, 0x22, IPV6_ADDRESSES),
        header(2, "PROXY", "UDP6", ("2001:db8::1", 1), ("fe80::abc", 65535), 52),
    ),
    "v2 tcp6 ipv4-mapped (kept as IPv6)": (
        v2(0x21, 0x21, bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1]) + bytes(16) + bytes(4)),
        header(2, "PROXY", "TCP6", ("::ffff:c000:201", 0), ("::", 0), 52),
    ),
    "v2 unix stream: no addresses returned": (
        v2(0x21, 0x31, b"/run/a.sock".ljust(108, b"\x00") + b"/run/b.sock".ljust(108, b"\x00")),
        header(2, "PROXY", "UNIX", None, None, 232),
    ),
    "v2 unix datagram": (v2(0x21, 0x32, bytes(216)), header(2, "PROXY", "UNIX", None, None, 232)),
    "v2 unspec: no addresses, only TLVs": (
        v2(0x21, 0x00, tlv(0x02, b"registry.test")),
        header(2, "PROXY", "UNSPEC", None, None, 32, (Tlv(0x02, b"registry.test"),)),
    ),
    "v2 unspec, empty": (v2(0x21, 0x00, b""), header(2, "PROXY", "UNSPEC", None, None, 16)),
    "v2 tcp4 with TLVs": (
        v2(
            0x21,
            0x11,
            IPV4_ADDRESSES
            + tlv(0x01, b"h2")
            + tlv(0x02, b"registry.test")
            + tlv(0x04, b"")
            + tlv(0x05, b"id-1")
            + SSL_TLV
            + tlv(0xE0, b"\xff\x00"),
        ),
        header(
            2,
            "PROXY",
            "TCP4",
            ("192.0.2.1", 56324),
            ("198.51.100.7", 443),
            28 + 5 + 16 + 3 + 7 + len(SSL_TLV) + 5,
            (
                Tlv(0x01, b"h2"),
                Tlv(0x02, b"registry.test"),
                Tlv(0x04, b""),
                Tlv(0x05, b"id-1"),
                Tlv(0x20, SSL_VALUE),
                Tlv(0xE0, b"\xff\x00"),
            ),
        ),
    ),
    "v2 tcp6 at the length limit": (
        v2(0x21, 0x21, IPV6_ADDRESSES + tlv(0x04, bytes(MAX_V2_LENGTH - 36 - 3))),
        header(
            2,
            "PROXY",
            "TCP6",
            ("2001:db8::1", 1),
            ("fe80::abc", 65535),
            MAX_HEADER_BYTES,
            (Tlv(0x04, bytes(MAX_V2_LENGTH - 39)),),
        ),
    ),
    "v2 tcp4 as HAProxy 2.6 sends it (crc32c, unique-id, ssl)": (
        # send-proxy-v2 proxy-v2-options authority,crc32c,unique-id,ssl,... on a plain TCP
        # frontend: no AUTHORITY, an empty UNIQUE_ID, an SSL TLV saying "no TLS".
        SIG + b"!\x11\x00\x1e\x7f\x00\x00\x01\x7f\x00\x00\x01\xc6JBj"
        b"\x03\x00\x04\xa6{Gh\x05\x00\x00 \x00\x05\x00\x00\x00\x00\x00",
        header(
            2,
            "PROXY",
            "TCP4",
            ("127.0.0.1", 50762),
            ("127.0.0.1", 17002),
            46,
            (Tlv(0x03, b"\xa6{Gh"), Tlv(0x05, b""), Tlv(0x20, bytes(5))),
        ),
    ),
    "v1 tcp6 as HAProxy 2.6 sends it for an IPv4 client of a v4v6 listener": (
        v1("PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.1 34590 17003"),
        header(1, "PROXY", "TCP6", ("::ffff:7f00:1", 34590), ("::ffff:7f00:1", 17003), 58),
    ),
    "v2 local, no body (a health check, as HAProxy 2.6 sends it)": (
        v2(0x20, 0x00, b""),
        header(2, "LOCAL", "UNSPEC", None, None, 16),
    ),
    "v2 local with addresses: skipped, never returned": (
        v2(0x20, 0x11, IPV4_ADDRESSES),
        header(2, "LOCAL", "UNSPEC", None, None, 28),
    ),
    "v2 local with an unknown family and junk: skipped": (
        v2(0x20, 0xFF, b"\x99" * 40),
        header(2, "LOCAL", "UNSPEC", None, None, 56),
    ),
    "v2 local at the length limit": (
        v2(0x20, 0x00, bytes(MAX_V2_LENGTH)),
        header(2, "LOCAL", "UNSPEC", None, None, MAX_HEADER_BYTES),
    ),
}


@pytest.mark.parametrize(("data", "expected"), VALID.values(), ids=VALID.keys())
@pytest.mark.parametrize(
    "trailer",
    [b"", TLS_HELLO, HTTP, b"\r\n", b"PROXY TCP4 x", SIG],
    ids=["alone", "tls", "http", "crlf", "v1-again", "v2-again"],
)
def test_valid_headers(data, expected, trailer):
    assert expected.consumed == len(data)
    assert parse(data + trailer) == expected
    assert (data + trailer)[expected.consumed :] == trailer  # the rest, untouched
    assert parse(bytearray(data + trailer)) == parse(memoryview(data + trailer)) == expected


@pytest.mark.parametrize(("data", "expected"), VALID.values(), ids=VALID.keys())
def test_every_prefix_of_a_valid_header_needs_more_within_the_header(data, expected):
    for cut in range(len(data)):
        result = parse(data[:cut])
        assert isinstance(result, NeedMore), cut
        assert 1 <= result.at_least <= len(data) - cut, cut
    for cut in range(len(data), len(data) + len(HTTP) + 1):
        assert parse((data + HTTP)[:cut]) == expected


@pytest.mark.parametrize(("data", "expected"), VALID.values(), ids=VALID.keys())
def test_reading_exactly_what_need_more_asks_stops_at_the_header_end(data, expected):
    stream = data + TLS_HELLO
    received = b""
    reads = 0
    while not isinstance(result := parse(received), ProxyHeader):
        received += stream[len(received) : len(received) + result.at_least]
        reads += 1
        assert len(received) <= len(data)
    assert result == expected
    if expected.version == 2:
        assert reads <= 3  # the fixed 16 bytes, then the body in one read


def test_empty_input_needs_the_shortest_header():
    assert parse(b"") == NeedMore(15)


# --- errors ---------------------------------------------------------------------------------

NOT_PROXY = "not a PROXY protocol header"
V1_LINE = "PROXY TCP4 192.0.2.1 192.0.2.2 1 2"
ERRORS = {
    # neither signature
    "tls": (TLS_HELLO, NOT_PROXY),
    "http": (HTTP, NOT_PROXY),
    "ssh": (b"SSH-2.0-OpenSSH_9.6\r\n", NOT_PROXY),
    "http put": (b"PUT /v2/a/blobs/uploads/ HTTP/1.1\r\n", NOT_PROXY),
    "http/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NOT_PROXY),
    "nul": (b"\x00" * 20, NOT_PROXY),
    "lower case v1": (v1(V1_LINE.lower()), NOT_PROXY),
    "PROXY without a space": (b"PROXY\tTCP4 192.0.2.1 192.0.2.2 1 2\r\n", NOT_PROXY),
    "v2 signature, one byte wrong": (
        SIG[:11] + b"\x0b\x21\x11\x00\x0c" + IPV4_ADDRESSES,
        NOT_PROXY,
    ),
    "v2 signature cut by a LF": (b"\r\n\r\n\n", NOT_PROXY),
    # v1 structure
    "v1 line without a protocol": (b"PROXY\r\n", "v1 line without a protocol"),
    "v1 empty protocol": (b"PROXY \r\n", "v1 protocol not TCP4, TCP6 or UNKNOWN"),
    "v1 double space after PROXY": (
        v1("PROXY  TCP4 192.0.2.1 192.0.2.2 1 2"),
        "v1 protocol not TCP4, TCP6 or UNKNOWN",
    ),
    "v1 protocol TCP5": (
        v1("PROXY TCP5 192.0.2.1 192.0.2.2 1 2"),
        "v1 protocol not TCP4, TCP6 or UNKNOWN",
    ),
    "v1 protocol UDP4": (
        v1("PROXY UDP4 192.0.2.1 192.0.2.2 1 2"),
        "v1 protocol not TCP4, TCP6 or UNKNOWN",
    ),
    "v1 protocol lower case": (
        v1("PROXY tcp4 192.0.2.1 192.0.2.2 1 2"),
        "v1 protocol not TCP4, TCP6 or UNKNOWN",
    ),
    "v1 UNKNOWN glued": (v1("PROXY UNKNOWNX"), "v1 protocol not TCP4, TCP6 or UNKNOWN"),
    "v1 UNKNOWN then a tab": (v1("PROXY UNKNOWN\t"), "v1 protocol not TCP4, TCP6 or UNKNOWN"),
    "v1 tcp4 without addresses": (v1("PROXY TCP4"), "v1 line without addresses"),
    "v1 tcp4 and a space only": (v1("PROXY TCP4 "), "v1 source address invalid"),
    "v1 missing ports": (v1("PROXY TCP4 192.0.2.1 192.0.2.2"), "v1 line with missing fields"),
    "v1 missing destination port": (
        v1("PROXY TCP4 192.0.2.1 192.0.2.2 1"),
        "v1 line with missing fields",
    ),
    "v1 too many fields": (v1(V1_LINE + " 3"), "v1 line with too many fields"),
    "v1 trailing space": (v1(V1_LINE + " "), "v1 line with too many fields"),
    "v1 double space between addresses": (
        v1("PROXY TCP4 192.0.2.1  192.0.2.2 1 2"),
        "v1 destination address invalid",
    ),
    "v1 tab between fields": (
        v1("PROXY TCP4 192.0.2.1\t192.0.2.2 1 2"),
        "v1 source address invalid",
    ),
    # v1 addresses
    "v1 tcp4 leading zero": (
        v1("PROXY TCP4 192.0.2.01 192.0.2.2 1 2"),
        "v1 source address invalid",
    ),
    "v1 tcp4 octet 256": (
        v1("PROXY TCP4 192.0.2.1 192.0.2.256 1 2"),
        "v1 destination address invalid",
    ),
    "v1 tcp4 three octets": (v1("PROXY TCP4 192.0.2 192.0.2.2 1 2"), "v1 source address invalid"),
    "v1 tcp4 five octets": (
        v1("PROXY TCP4 192.0.2.1.5 192.0.2.2 1 2"),
        "v1 source address invalid",
    ),
    "v1 tcp4 hostname": (v1("PROXY TCP4 localhost 192.0.2.2 1 2"), "v1 source address invalid"),
    "v1 tcp4 with an IPv6 address": (
        v1("PROXY TCP4 ::1 192.0.2.2 1 2"),
        "v1 source address invalid",
    ),
    "v1 tcp6 with an IPv4 address": (
        v1("PROXY TCP6 2001:db8::1 192.0.2.2 1 2"),
        "v1 destination address invalid",
    ),
    "v1 tcp6 zone index": (v1("PROXY TCP6 fe80::1%eth0 ::1 1 2"), "v1 source address invalid"),
    "v1 tcp6 two ::": (v1("PROXY TCP6 1::2::3 ::1 1 2"), "v1 source address invalid"),
    "v1 tcp6 nine groups": (
        v1("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2"),
        "v1 source address invalid",
    ),
    "v1 tcp6 five hex digits": (v1("PROXY TCP6 12345:: ::1 1 2"), "v1 source address invalid"),
    "v1 tcp6 brackets": (v1("PROXY TCP6 [::1] ::1 1 2"), "v1 source address invalid"),
    "v1 tcp6 ipv4 tail not last": (
        v1("PROXY TCP6 ::1.2.3.4:5 ::1 1 2"),
        "v1 source address invalid",
    ),
    "v1 tcp6 ipv4 tail leading zero": (
        v1("PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2"),
        "v1 source address invalid",
    ),
    "v1 tcp6 too short": (v1("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2"), "v1 source address invalid"),
    # v1 ports
    "v1 port leading zero": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 01 2"), "v1 source port invalid"),
    "v1 port 00": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 00 2"), "v1 source port invalid"),
    "v1 port 65536": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 65536"), "v1 destination port invalid"),
    "v1 port 6 digits": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 100000 2"), "v1 source port invalid"),
    "v1 port negative": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 -1 2"), "v1 source port invalid"),
    "v1 port plus": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 +1 2"), "v1 source port invalid"),
    "v1 port hex": (v1("PROXY TCP4 192.0.2.1 192.0.2.2 0x1 2"), "v1 source port invalid"),
    "v1 port non-ascii digit": (
        "PROXY TCP4 192.0.2.1 192.0.2.2 1 \u0662\r\n".encode(),
        "v1 destination port invalid",
    ),
    # v1 line ends (§2.1: a single CR or LF must not end the line)
    "v1 bare LF": (V1_LINE.encode() + b"\n", "v1 destination port invalid"),
    "v1 CR then no LF": (V1_LINE.encode() + b"\rGET", "v1 line with a CR not followed by LF"),
    "v1 CR CR LF": (V1_LINE.encode() + b"\r\r\n", "v1 line with a CR not followed by LF"),
    "v1 unknown with a LF": (b"PROXY UNKNOWN a\nb\r\n", "v1 line with a LF not preceded by CR"),
    "v1 unknown with a bare CR": (
        b"PROXY UNKNOWN a\rb\r\n",
        "v1 line with a CR not followed by LF",
    ),
    "v1 unknown, 108 bytes": (
        b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",
        "v1 line without CRLF in 107 bytes",
    ),
    "v1 unknown, no CRLF at all": (
        b"PROXY UNKNOWN " + b"x" * 500,
        "v1 line without CRLF in 107 bytes",
    ),
    # v2 fixed part
    "v2 version 1": (v2(0x11, 0x11, IPV4_ADDRESSES), "v2 version not 2"),
    "v2 version 3": (v2(0x31, 0x11, IPV4_ADDRESSES), "v2 version not 2"),
    "v2 version 0 (the v1 ancestor's byte)": (v2(0x02, 0x11, IPV4_ADDRESSES), "v2 version not 2"),
    "v2 command 2": (v2(0x22, 0x11, IPV4_ADDRESSES), "v2 command not LOCAL or PROXY"),
    "v2 command 15": (v2(0x2F, 0x11, IPV4_ADDRESSES), "v2 command not LOCAL or PROXY"),
    "v2 family 4": (v2(0x21, 0x41, IPV4_ADDRESSES), "v2 address family or protocol unknown"),
    "v2 protocol 3": (v2(0x21, 0x13, IPV4_ADDRESSES), "v2 address family or protocol unknown"),
    "v2 inet with unspec protocol": (
        v2(0x21, 0x10, IPV4_ADDRESSES),
        "v2 address family or protocol unknown",
    ),
    "v2 unspec family with stream": (v2(0x21, 0x01, b""), "v2 address family or protocol unknown"),
    "v2 length over the limit": (
        v2(0x21, 0x11, b"", length=MAX_V2_LENGTH + 1),
        "v2 length over the limit of 1024",
    ),
    "v2 length 65535": (v2(0x20, 0x00, b"", length=0xFFFF), "v2 length over the limit of 1024"),
    "v2 tcp4 length 11": (
        v2(0x21, 0x11, IPV4_ADDRESSES[:11]),
        "v2 length too short for TCP4 addresses",
    ),
    "v2 tcp4 length 0": (v2(0x21, 0x11, b""), "v2 length too short for TCP4 addresses"),
    "v2 tcp6 with IPv4 addresses": (
        v2(0x21, 0x21, IPV4_ADDRESSES),
        "v2 length too short for TCP6 addresses",
    ),
    "v2 unix length 215": (v2(0x21, 0x31, bytes(215)), "v2 length too short for UNIX addresses"),
    # v2 TLVs
    "v2 one byte after the addresses": (
        v2(0x21, 0x11, IPV4_ADDRESSES + b"\x04"),
        "v2 TLV truncated",
    ),
    "v2 two bytes after the addresses": (
        v2(0x21, 0x11, IPV4_ADDRESSES + b"\x04\x00"),
        "v2 TLV truncated",
    ),
    "v2 TLV past the header": (
        v2(0x21, 0x11, IPV4_ADDRESSES + b"\x02\x00\x05abcd"),
        "v2 TLV runs past the header",
    ),
    "v2 TLV past the header, bytes follow": (
        v2(0x21, 0x11, IPV4_ADDRESSES + b"\x02\x00\x05abcd") + b"e" + TLS_HELLO,
        "v2 TLV runs past the header",
    ),
    "v2 second TLV past the header": (
        v2(0x21, 0x11, IPV4_ADDRESSES + tlv(0x01, b"h2") + b"\x02\xff\xff"),
        "v2 TLV runs past the header",
    ),
    "v2 unspec with a truncated TLV": (v2(0x21, 0x00, b"\x04\x00"), "v2 TLV truncated"),
}


@pytest.mark.parametrize(("data", "reason"), ERRORS.values(), ids=ERRORS.keys())
def test_errors(data, reason):
    with pytest.raises(ProxyProtocolError) as caught:
        parse(data)
    assert caught.value.reason == str(caught.value) == reason
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("data", "reason"), ERRORS.values(), ids=ERRORS.keys())
def test_every_prefix_of_an_error_needs_more_or_fails_alike(data, reason):
    """Once a prefix fails, it fails with the whole's reason, and so does every longer one."""
    failed_at = None
    for cut in range(len(data) + 1):
        kind, value = outcome(data[:cut])
        if failed_at is None and kind == "more":
            assert isinstance(value, int) and value >= 1
            continue
        assert (kind, value) == ("error", reason), cut
        failed_at = cut if failed_at is None else failed_at
    assert failed_at is not None


@pytest.mark.parametrize(
    ("data", "rejected_after"),
    [
        (TLS_HELLO, 1),
        (HTTP, 1),
        (b"HEAD / HTTP/1.1\r\n", 1),
        (b"POST /v2/ HTTP/1.1\r\n", 2),
        (b"PATCH /v2/ HTTP/1.1\r\n", 2),
        (b"PUT /v2/ HTTP/1.1\r\n", 2),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 3),
        (b"SSH-2.0-x\r\n", 1),
        (b"\r\n\r\nGET", 5),  # a CRLF-led peer stops at its first byte off the v2 signature
        (b"PROXY TCP4 192.0.2.256 ", 22),
        (b"PROXY TCP4 01", 13),
        (b"PROXY TCP6 1::2::", 17),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 ", 36),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 ", 35),
        (SIG + b"\x21\x11\x04\x01", 16),  # declared 1025: refused before the body is read
        (SIG + b"\x21\x11\xff\xff", 15),  # its high byte alone is over the limit
        (SIG + b"\x20\x00\x05\x00", 15),
        (SIG + b"\x21\x11\x00\x0b", 16),  # too short for TCP4 addresses
        (SIG + b"\x31", 13),
        (SIG + b"\x21\x45", 14),
    ],
)
def test_early_rejection(data, rejected_after):
    """The first byte that no valid header can have is refused at once, without waiting for
    more (nor for a timeout)."""
    for cut in range(rejected_after):
        assert isinstance(parse(data[:cut]), NeedMore), cut
    with pytest.raises(ProxyProtocolError):
        parse(data[:rejected_after])


def test_a_prefix_of_either_signature_needs_more_even_one_byte_long():
    for cut in range(1, len(SIG) + 1):
        assert parse(SIG[:cut]) == NeedMore(16 - cut)
    for cut in range(1, 7):
        assert parse(b"PROXY "[:cut]) == NeedMore(15 - cut)


def test_v2_need_more_asks_for_exactly_the_rest_of_the_header():
    data = v2(0x21, 0x21, IPV6_ADDRESSES + tlv(0x02, b"registry.test"))
    assert parse(data[:16]) == NeedMore(len(data) - 16)
    assert parse(data[:40]) == NeedMore(len(data) - 40)


def test_need_more_never_goes_past_the_v1_bound():
    line = b"PROXY UNKNOWN " + b"x" * 91
    assert len(line) == MAX_V1_BYTES - 2
    assert parse(line) == NeedMore(1)
    assert parse(line + b"\r") == NeedMore(1)
    assert parse(line + b"\r\n") == header(1, "PROXY", "UNKNOWN", None, None, MAX_V1_BYTES)
    with pytest.raises(ProxyProtocolError, match="107 bytes"):
        parse(line + b"x")


def test_a_v1_line_that_cannot_fit_is_refused_before_107_bytes():
    # The longest line the spec lists fits; one with two 45-character IPv6 addresses cannot,
    # and is refused at its 106th byte, where the CRLF could still have begun.
    line = f"PROXY TCP6 {V6_MAX} {V6_MAX} 65535 6553".encode()
    assert isinstance(parse(line), NeedMore)
    assert parse(line + b"5\r\n").consumed == 104
    long_v6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    line = f"PROXY TCP6 {long_v6} {long_v6} 1".encode()
    assert len(line) == 104
    assert isinstance(parse(line + b" "), NeedMore)
    with pytest.raises(ProxyProtocolError, match="107 bytes"):
        parse(line + b" 2")


def test_a_huge_buffer_is_read_only_up_to_the_bound():
    tail = b"\x00" * 10_000_000
    start = time.perf_counter()
    assert parse(VALID["v2 tcp4"][0] + tail).consumed == 28
    assert parse(v1(V1_LINE) + tail).consumed == len(V1_LINE) + 2
    with pytest.raises(ProxyProtocolError):
        parse(b"PROXY UNKNOWN " + tail)
    with pytest.raises(ProxyProtocolError):
        parse(SIG + b"\x21\x11\x00\x0d" + tail)  # one byte after the addresses: no TLV
    assert time.perf_counter() - start < 5  # copies at most MAX_HEADER_BYTES, not 10 MB


def test_reasons_quote_nothing_from_the_input():
    for data, _ in ERRORS.values():
        with pytest.raises(ProxyProtocolError) as caught:
            parse(data)
        reason = caught.value.reason
        assert reason.isascii() and reason.isprintable() and len(reason) <= 80
        for word in (b"GET", b"SSH", b"localhost", b"eth0", b"0x1", b"abcd"):
            assert word.decode() not in reason


def test_results_are_immutable():
    result = parse(VALID["v2 tcp4 with TLVs"][0])
    assert isinstance(result, ProxyHeader)
    with pytest.raises(AttributeError):
        result.source = ("203.0.113.9", 1)  # type: ignore[misc]
    assert result.tlvs[1].type == 0x02 and result.tlvs[1].value == b"registry.test"


def test_the_module_constants():
    assert V2_SIGNATURE == SIG
    assert MAX_V1_BYTES == 107
    assert MAX_HEADER_BYTES == 16 + MAX_V2_LENGTH
