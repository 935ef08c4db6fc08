"""PROXY protocol headers (HAProxy's "The PROXY protocol", versions 1 and 2), parsed sans-IO.

Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt (revision 2020/03/05); the
section numbers below are that document's.

A listener that sits behind a trusted load balancer reads the header the balancer prepends to
each connection (spec §2: the receiver must be configured to expect it and must not guess).
The caller owns the socket: it calls `parse(received)` with every byte received so far, and

- gets `NeedMore(at_least=n)`: the header is incomplete; any valid header that starts with
  these bytes is at least `n` bytes longer, so reading exactly `n` more bytes never reads past
  the header (the peer may be waiting for an answer to what follows it, e.g. a TLS
  ClientHello);
- gets a `ProxyHeader`: its first `consumed` bytes were the header; the rest belongs to the
  next protocol (TLS) and must be passed on untouched;
- or catches `ProxyProtocolError` (a ValueError): the bytes are not a valid header, and the
  connection must be closed (spec §2.1: "abort the connection as soon as possible"). Its
  reason is a fixed, short text, never a quote of the input, so it is safe to log.

Segmentation never matters (spec §2 warns that intermediaries may split the header anywhere):
for every prefix of a byte stream, `parse` returns NeedMore, or the same header or the same
error as for the whole stream once the header (or its first invalid byte) is inside the
prefix, and an error never turns back into NeedMore when more bytes come. Errors come early,
so that a peer that does not speak the protocol (TLS's 0x16, `GET `, `SSH-`) is refused at
its first byte rather than after a timeout: a v1 line is refused at the first byte that no
valid line could have there (a character, a separator, an address or port that cannot be
completed; the protocol name), or when 106 bytes hold no CR; a v2 header at the first wrong
byte of its signature, version, command or family, at its 15th byte if the length's high byte
is already over the cap, at its 16th if the length is over the cap or too short for the
family; its addresses and TLVs are checked once all of it has arrived (§2.2: "the receiver
must not start to parse an address before the whole address block is received"). The work
is bounded: `parse` looks at no more than the first `MAX_HEADER_BYTES` of its input.

Bounds (see the constants):

- v1 (§2.1): a line of at most `MAX_V1_BYTES` = 107 bytes including the CRLF; with no CR among
  the first 106 bytes, the line cannot end in time and is refused (at its 106th byte, even
  when the fields it still lacks could have told a few bytes earlier).
- v2 (§2.2): 16 fixed bytes, then `length` bytes of addresses and TLVs. `length` is capped at
  `MAX_V2_LENGTH` = 1,024, and a longer one is refused from the fixed 16 bytes alone (from the
  15th, if the length's high byte already says so), before the body is read.
  The spec designs headers to fit in one 536-byte segment (§2) and its largest address block
  is 216 bytes (AF_UNIX); 1 KiB also holds what HAProxy may append (AUTHORITY: a host name of
  up to 255 bytes, UNIQUE_ID up to 128, ALPN, SSL with its version, CN and cipher, NETNS,
  CRC32C) while keeping a header's buffer small.

Strictness, and what the spec leaves open:

- v1 fields are separated by exactly one space; ports are decimal 0-65535 without leading
  zeros ("0" itself is fine); addresses must match the family (TCP4: dotted quad without
  leading zeros; TCP6: RFC 4291 text, upper or lower case, `::` at most once, and a dotted
  IPv4 tail is accepted as inet_pton(3) does, since HAProxy writes IPv4-mapped addresses that
  way; no zone index). After `PROXY UNKNOWN`, anything up to the CRLF is ignored (§2.1).
  Neither a bare CR nor a bare LF is accepted anywhere in a v1 line, not even in the ignored
  part of an UNKNOWN line (§2.1: a single CR or LF must not end the line; refusing them rather
  than skipping them leaves no room for two parsers to disagree about where the line ends).
- v2: the version nibble must be 2 and the command LOCAL (0) or PROXY (1). For LOCAL the
  family byte and the whole declared length are skipped unread, as §2.2 says ("discard the
  protocol block including the family"), and the result has family "UNSPEC" and no addresses.
  For PROXY, the family byte must be one of the seven listed in §2.2 (0x00 UNSPEC, 0x11, 0x12,
  0x21, 0x22, 0x31, 0x32; §2.2 lets a receiver refuse UNSPEC or accept it without addresses:
  accepted), and `length` must hold its address block; what follows the addresses is a
  sequence of TLVs (§2.2.1-2.2.8), each of which must end inside the header.
  TLV values are returned as opaque bytes and never interpreted: neither the SSL sub-TLVs nor
  the CRC32C checksum are checked (§2.2.3 obliges only receivers that support it), so a TLV
  is only as trustworthy as the peer that sent it.
- Addresses are returned only for TCP4, TCP6, UDP4 and UDP6, as (ip text, port): the text is
  `str()` of the `ipaddress` object, so equal addresses give equal text whatever way a v1 line
  wrote them. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stays an IPv6 address of a TCP6
  header, as the sender gave it (`str()` writes it `::ffff:102:304` on Python 3.12); the
  caller normalises it if it wants to (`ipaddress.IPv6Address(text).ipv4_mapped`). LOCAL,
  UNKNOWN, UNSPEC and UNIX headers have no addresses (None): the caller uses the connection's
  own endpoints (§2.1, §2.2), never an address from such a header.

This module does no I/O and keeps no state between calls.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from typing import Literal
from typing import NamedTuple

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_V1_BYTES",
    "MAX_V2_LENGTH",
    "MIN_HEADER_BYTES",
    "V1_PREFIX",
    "V2_FIXED_BYTES",
    "V2_SIGNATURE",
    "Address",
    "Command",
    "Family",
    "NeedMore",
    "ProxyHeader",
    "ProxyProtocolError",
    "Tlv",
    "parse",
]

V1_PREFIX: Final = b"PROXY "
# §2.1: the longest line a receiver must support, CRLF included ("PROXY UNKNOWN" and two
# full-length IPv6 addresses and ports).
MAX_V1_BYTES: Final = 107
# §2.1: the shortest valid line, "PROXY UNKNOWN\r\n".
MIN_V1_BYTES: Final = 15
# §2.2: the 12-byte signature, then ver/cmd, family/protocol and a 2-byte big-endian length.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES: Final = 16
# Our cap on a v2 header's declared length (addresses and TLVs), in bytes; see the module doc.
MAX_V2_LENGTH: Final = 1024
# The most bytes `parse` ever looks at, and the most a caller needs to buffer for a header.
MAX_HEADER_BYTES: Final = V2_FIXED_BYTES + MAX_V2_LENGTH
# The shortest possible header (a v1 UNKNOWN line; a v2 header has at least 16 bytes).
MIN_HEADER_BYTES: Final = MIN_V1_BYTES

Command = Literal["PROXY", "LOCAL"]
Family = Literal["TCP4", "TCP6", "UNKNOWN", "UDP4", "UDP6", "UNIX", "UNSPEC"]
Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header within this module's bounds.

    `reason` (also the message) is a short fixed text naming the part or the bound at fault,
    never the input's bytes: safe to log as it is.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The header is incomplete: at least `at_least` (>= 1) more bytes are needed.

    A lower bound: any valid header that starts with the bytes given is at least that many
    bytes longer than they are, so reading exactly that many more never reads past the end of
    the header. It never takes the total beyond `MAX_V1_BYTES` (v1) or `MAX_HEADER_BYTES`.
    """

    at_least: int


class Tlv(NamedTuple):
    """A v2 type-length-value vector (§2.2): the type byte and the raw value (untrusted,
    uninterpreted; its `repr` escapes it, but log the type rather than the value)."""

    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete, valid header.

    `version` is 1 (text, §2.1) or 2 (binary, §2.2). `command` is "LOCAL" only for v2 LOCAL
    (a connection the proxy made itself, e.g. a health check). `family` is "TCP4", "TCP6" or
    "UNKNOWN" for v1; "TCP4", "UDP4", "TCP6", "UDP6", "UNIX" or "UNSPEC" for v2 PROXY; "UNSPEC"
    for v2 LOCAL. `source` and `destination` are (ip text, port) for TCP4/TCP6/UDP4/UDP6, else
    None. `tlvs` are the v2 TLVs in order (empty for v1 and LOCAL). `consumed` is the header's
    length in bytes: the caller passes on everything after it.
    """

    version: Literal[1, 2]
    command: Command
    family: Family
    source: Address | None
    destination: Address | None
    tlvs: tuple[Tlv, ...]
    consumed: int


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader | NeedMore:
    """Parse the PROXY protocol header at the start of `data` (all bytes received so far).

    Returns NeedMore while the header is incomplete, or the ProxyHeader once it is complete;
    bytes after the header are ignored (see `ProxyHeader.consumed`). Raises ProxyProtocolError
    as soon as the bytes cannot begin a valid header. Looks at no more than the first
    `MAX_HEADER_BYTES` of `data`.
    """
    head = bytes(data[:MAX_HEADER_BYTES])
    if not head:
        return NeedMore(MIN_HEADER_BYTES)
    if head[0] == V1_PREFIX[0]:
        return _parse_v1(head)
    if head[0] == V2_SIGNATURE[0]:
        return _parse_v2(head)
    raise ProxyProtocolError("not a PROXY protocol header")


# --- version 1 (§2.1) -------------------------------------------------------------------------

_V1_PROTOCOLS: Final = (b"TCP4", b"TCP6", b"UNKNOWN")
_DIGITS: Final = frozenset(b"0123456789")
_IPV4_CHARS: Final = frozenset(b"0123456789.")
_IPV6_CHARS: Final = frozenset(b"0123456789abcdefABCDEF:.")
_MAX_IPV4_TEXT: Final = 15  # 255.255.255.255
_MAX_IPV6_TEXT: Final = 45  # ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 (INET6_ADDRSTRLEN - 1)
_MAX_PORT_TEXT: Final = 5
_FIELDS: Final = ("source address", "destination address", "source port", "destination port")


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    # A line that fits has its CR at index MAX_V1_BYTES - 2 at the latest.
    window = data[: MAX_V1_BYTES - 1]
    cr = window.find(b"\r")
    if cr < 0:
        _check_v1_line(window, complete=False)
        if len(window) == MAX_V1_BYTES - 1:
            raise ProxyProtocolError("v1 line without CRLF in 107 bytes")
        return NeedMore(max(1, MIN_V1_BYTES - len(data)))
    family, source, destination = _check_v1_line(window[:cr], complete=True)
    if len(data) == cr + 1:
        return NeedMore(1)
    if data[cr + 1] != 0x0A:
        raise ProxyProtocolError("v1 line with a CR not followed by LF")
    return ProxyHeader(
        version=1,
        command="PROXY",
        family=family,
        source=source,
        destination=destination,
        tlvs=(),
        consumed=cr + 2,
    )


def _check_v1_line(line: bytes, complete: bool) -> tuple[Family, Address | None, Address | None]:
    """Check a v1 line (without its CRLF) from left to right; raise at the first field that
    is invalid (`complete`) or cannot be completed (not `complete`). The result means
    something only for a complete line."""
    if not V1_PREFIX.startswith(line[: len(V1_PREFIX)]):
        raise ProxyProtocolError("not a PROXY protocol header")
    if len(line) < len(V1_PREFIX):
        if complete:
            raise ProxyProtocolError("v1 line without a protocol")
        return "UNKNOWN", None, None
    protocol, space, rest = line[len(V1_PREFIX) :].partition(b" ")
    if not space and not complete:
        if not any(known.startswith(protocol) for known in _V1_PROTOCOLS):
            raise ProxyProtocolError("v1 protocol not TCP4, TCP6 or UNKNOWN")
        return "UNKNOWN", None, None
    if protocol not in _V1_PROTOCOLS:
        raise ProxyProtocolError("v1 protocol not TCP4, TCP6 or UNKNOWN")
    if protocol == b"UNKNOWN":
        # §2.1: the receiver ignores the rest of an UNKNOWN line (but see the module doc on LF).
        if b"\n" in rest:
            raise ProxyProtocolError("v1 line with a LF not preceded by CR")
        return "UNKNOWN", None, None
    if not space:
        raise ProxyProtocolError("v1 line without addresses")
    fields = rest.split(b" ")
    ipv6 = protocol == b"TCP6"
    # Strictly left to right, so that a prefix of a line fails where the whole line does.
    values: list[str | int | None] = []
    for index, field in enumerate(fields):
        if index == len(_FIELDS):
            raise ProxyProtocolError("v1 line with too many fields")
        values.append(_v1_field(index, field, ipv6, whole=complete or index < len(fields) - 1))
    if not complete:
        return "UNKNOWN", None, None
    if len(fields) < len(_FIELDS):
        raise ProxyProtocolError("v1 line with missing fields")
    source_ip, destination_ip, source_port, destination_port = values
    assert isinstance(source_ip, str) and isinstance(destination_ip, str)
    assert isinstance(source_port, int) and isinstance(destination_port, int)
    return (
        ("TCP6" if ipv6 else "TCP4"),
        (source_ip, source_port),
        (destination_ip, destination_port),
    )


def _v1_field(index: int, field: bytes, ipv6: bool, whole: bool) -> str | int | None:
    """Field `index` of a v1 line after the protocol: an address's canonical text or a port's
    value if `whole`, else None if the partial field can still become valid; raise otherwise."""
    what = _FIELDS[index]
    if index < 2:
        if whole:
            return _v1_address(field, ipv6, what)
        if not _address_chars_ok(field, ipv6) or not (
            _ipv6_prefix_ok(field.decode("ascii"))
            if ipv6
            else _ipv4_prefix_ok(field.decode("ascii"))
        ):
            raise ProxyProtocolError(f"v1 {what} invalid")
    elif whole:
        return _v1_port(field, what)
    elif not _port_prefix_ok(field):
        raise ProxyProtocolError(f"v1 {what} invalid")
    return None


def _address_chars_ok(field: bytes, ipv6: bool) -> bool:
    if ipv6:
        return len(field) <= _MAX_IPV6_TEXT and _IPV6_CHARS.issuperset(field)
    return len(field) <= _MAX_IPV4_TEXT and _IPV4_CHARS.issuperset(field)


def _v1_address(field: bytes, ipv6: bool, what: str) -> str:
    """The canonical text (`str()` of the `ipaddress` object) of a complete address field."""
    if not _address_chars_ok(field, ipv6):
        raise ProxyProtocolError(f"v1 {what} invalid")
    text = field.decode("ascii")
    try:
        address = ipaddress.IPv6Address(text) if ipv6 else ipaddress.IPv4Address(text)
    except ValueError:
        raise ProxyProtocolError(f"v1 {what} invalid") from None
    return str(address)


def _port_prefix_ok(field: bytes) -> bool:
    """Whether `field` is empty or a port (every prefix of a port is a port or empty)."""
    return (
        len(field) <= _MAX_PORT_TEXT
        and _DIGITS.issuperset(field)
        and not (len(field) > 1 and field[0] == 0x30)
        and (not field or int(field) <= 0xFFFF)
    )


def _v1_port(field: bytes, what: str) -> int:
    """A complete port field's value: decimal 0-65535, no leading zeros (§2.1)."""
    if not field or not _port_prefix_ok(field):
        raise ProxyProtocolError(f"v1 {what} invalid")
    return int(field)


def _octet_ok(text: str) -> bool:
    """Decimal 0-255 without leading zeros (§2.1)."""
    return (
        0 < len(text) <= 3
        and text.isascii()
        and text.isdigit()
        and (text == "0" or text[0] != "0")
        and int(text) <= 255
    )


def _ipv4_prefix_ok(text: str) -> bool:
    """Whether `text` (digits and dots) can be continued into a dotted quad. Every non-empty
    prefix of a valid octet is itself a valid octet, so the last part needs no lookahead."""
    parts = text.split(".")
    return (
        len(parts) <= 4
        and all(_octet_ok(part) for part in parts[:-1])
        and (not parts[-1] or _octet_ok(parts[-1]))
    )


def _ipv6_prefix_ok(text: str) -> bool:
    """Whether `text` (hex digits, colons, dots) can be continued into an IPv6 address as
    `ipaddress.IPv6Address` reads them (8 groups; or at most 7 and one `::`; an IPv4 tail
    counting as 2 groups)."""
    if "." in text:
        # An IPv4 tail: what precedes it must be valid before any dotted quad.
        colon = text.rfind(":")
        if colon < 0 or not _ipv4_prefix_ok(text[colon + 1 :]):
            return False
        try:
            ipaddress.IPv6Address(text[: colon + 1] + "0.0.0.0")
        except ValueError:
            return False
        return True
    if text in ("", ":"):
        return True
    if ":::" in text or text.count("::") > 1 or (text[0] == ":" and text[:2] != "::"):
        return False
    groups = [group for group in text.split(":") if group]
    if any(len(group) > 4 for group in groups):
        return False
    open_colon = text[-1] == ":" and text[-2:] != "::"  # another group must follow
    if "::" in text:
        return len(groups) + open_colon <= 7
    # Without `::` yet: 8 groups in all, or at most 7 and a `::` still to come.
    return len(groups) <= (7 if open_colon else 8)


# --- version 2 (§2.2) -------------------------------------------------------------------------

_COMMANDS: Final[dict[int, Command]] = {0x0: "LOCAL", 0x1: "PROXY"}
# §2.2 "In practice, the following protocol bytes are expected": family byte -> (name, length
# of the address block). Any other family byte is refused for PROXY.
_FAMILIES: Final[dict[int, tuple[Family, int]]] = {
    0x00: ("UNSPEC", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNIX", 216),
}
_TLV_HEAD: Final = 3  # type, 2-byte big-endian length


def _parse_v2(data: bytes) -> ProxyHeader | NeedMore:
    if not V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        raise ProxyProtocolError("not a PROXY protocol header")
    command: Command = "LOCAL"
    family: Family = "UNSPEC"
    addresses_length = 0
    if len(data) > 12:  # the 13th byte: version (high nibble) and command
        if data[12] >> 4 != 2:
            raise ProxyProtocolError("v2 version not 2")
        if data[12] & 0x0F not in _COMMANDS:
            raise ProxyProtocolError("v2 command not LOCAL or PROXY")
        command = _COMMANDS[data[12] & 0x0F]
    if len(data) > 13 and command == "PROXY":  # the 14th: address family and protocol
        if data[13] not in _FAMILIES:
            raise ProxyProtocolError("v2 address family or protocol unknown")
        family, addresses_length = _FAMILIES[data[13]]
    # The 15th and 16th: the length of what follows, big-endian; its high byte alone may
    # already be over the limit.
    if len(data) > 14 and data[14] << 8 > MAX_V2_LENGTH:
        raise ProxyProtocolError(f"v2 length over the limit of {MAX_V2_LENGTH}")
    if len(data) < V2_FIXED_BYTES:
        return NeedMore(V2_FIXED_BYTES - len(data))
    length = int.from_bytes(data[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ProxyProtocolError(f"v2 length over the limit of {MAX_V2_LENGTH}")
    if length < addresses_length:
        raise ProxyProtocolError(f"v2 length too short for {family} addresses")
    total = V2_FIXED_BYTES + length
    if len(data) < total:
        return NeedMore(total - len(data))
    if command == "LOCAL":
        return ProxyHeader(
            version=2,
            command="LOCAL",
            family="UNSPEC",
            source=None,
            destination=None,
            tlvs=(),
            consumed=total,
        )
    body = data[V2_FIXED_BYTES:total]
    source, destination = _v2_addresses(family, body)
    return ProxyHeader(
        version=2,
        command="PROXY",
        family=family,
        source=source,
        destination=destination,
        tlvs=_tlvs(body[addresses_length:]),
        consumed=total,
    )


def _v2_addresses(family: Family, body: bytes) -> tuple[Address | None, Address | None]:
    """(source, destination) from the address block at the start of `body`: 4- or 16-byte
    addresses, then 2-byte ports, all big-endian (§2.2)."""
    if family in ("TCP4", "UDP4"):
        size = 4
        make: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.IPv4Address
    elif family in ("TCP6", "UDP6"):
        size = 16
        make = ipaddress.IPv6Address
    else:
        return None, None
    source_ip = str(make(body[:size]))
    destination_ip = str(make(body[size : 2 * size]))
    source_port = int.from_bytes(body[2 * size : 2 * size + 2], "big")
    destination_port = int.from_bytes(body[2 * size + 2 : 2 * size + 4], "big")
    return (source_ip, source_port), (destination_ip, destination_port)


def _tlvs(block: bytes) -> tuple[Tlv, ...]:
    """The TLVs filling `block` exactly (§2.2); raise if one does not fit."""
    tlvs: list[Tlv] = []
    offset = 0
    while offset < len(block):
        if len(block) - offset < _TLV_HEAD:
            raise ProxyProtocolError("v2 TLV truncated")
        end = offset + _TLV_HEAD + int.from_bytes(block[offset + 1 : offset + 3], "big")
        if end > len(block):
            raise ProxyProtocolError("v2 TLV runs past the header")
        tlvs.append(Tlv(block[offset], block[offset + _TLV_HEAD : end]))
        offset = end
    return tuple(tlvs)
