"""PROXY protocol headers (proxy_protocol.py), four properties:

1. whatever a peer sends, `parse` returns NeedMore or a ProxyHeader or raises
   ProxyProtocolError (with a short reason quoting nothing), and looks no further than its
   bound; where the header is complete, it agrees with a small reference decoder written here
   (a regular expression and struct offsets), and before that it fails exactly when nothing
   could complete the bytes (checked where the error begins, found by bisection);
2. a header built by the small encoder below (written from the spec, not from the parser)
   parses back to what was encoded, with `consumed == len(header)`, whatever follows it;
3. how the bytes are split across reads never changes the result: every prefix gives NeedMore
   or the whole's result, and an error never turns back into NeedMore;
4. NeedMore never asks for more than the bounds allow, nor, for a valid header, for more than
   the header's remaining bytes: a reader that reads exactly what it asks for stops at the
   header's end.

Issue requirement: the parser is fuzzed with at least 10,000 cases per property in CI. The
target below runs max(10,000, the profile's count) examples (conftest.py's `ci` profile runs
1,000 for the other targets, `fuzz` runs REGAUTH_FUZZ_EXAMPLES), and each example is one case
of every property: it yields an encoded header (for 2, 3 and 4) and hostile bytes (for 1, 3
and 4). Each example is a single choice, a fixed-size blob that the code below turns into both,
as a byte-driven fuzzer would. On a busy 2-core machine Hypothesis costs about a millisecond
of CPU per example, and half a millisecond more per further choice: more than the parser's
share, so one target with one choice keeps 10,000 examples to seconds rather than a minute.
Hypothesis still shrinks the blob (towards zero bytes), and a failure notes the bytes parsed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import string
import struct

from hypothesis import event
from hypothesis import given
from hypothesis import note
from hypothesis import settings
from hypothesis import strategies as st

from regauth.protocol.proxy_protocol import MAX_HEADER_BYTES
from regauth.protocol.proxy_protocol import MAX_V1_BYTES
from regauth.protocol.proxy_protocol import MAX_V2_LENGTH
from regauth.protocol.proxy_protocol import NeedMore
from regauth.protocol.proxy_protocol import ProxyHeader
from regauth.protocol.proxy_protocol import ProxyProtocolError
from regauth.protocol.proxy_protocol import parse

MIN_EXAMPLES = 10_000
fuzz = settings(max_examples=max(MIN_EXAMPLES, settings().max_examples))

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # spec §2.2, written out again rather than imported
REASON_CHARS = frozenset(string.ascii_letters + string.digits + " ,-")

Address = tuple[str, int]
Expected = tuple[int, str, str, Address | None, Address | None, tuple[tuple[int, bytes], ...]]
Outcome = tuple[str, object]

# --- an independent encoder -------------------------------------------------------------------


def _ipv4(raw: bytes, knob: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address({1: bytes(4), 2: b"\xff" * 4}.get(knob % 8, raw[:4]))


def _ipv6(raw: bytes, knob: int) -> ipaddress.IPv6Address:
    """16 bytes, with the groups the knob's low 8 bits select zeroed (so that `::` appears),
    or an IPv4-mapped address."""
    if knob & 0x300 == 0x300:
        return ipaddress.IPv6Address(bytes(10) + b"\xff\xff" + raw[:4])
    groups = bytearray(raw[:16])
    for group in range(8):
        if knob >> group & 1:
            groups[2 * group : 2 * group + 2] = bytes(2)
    return ipaddress.IPv6Address(bytes(groups))


def _ipv6_text(address: ipaddress.IPv6Address, form: int) -> str:
    """One of the ways a sender may write an IPv6 address in a v1 line (§2.1)."""
    if form == 1:
        return address.exploded
    if form == 2:
        return address.compressed.upper()
    if form == 3:  # eight groups, leading zeros dropped, no ::
        return ":".join(
            f"{int.from_bytes(address.packed[i : i + 2], 'big'):x}" for i in range(0, 16, 2)
        )
    if form == 4 and address.ipv4_mapped is not None:  # inet_ntop(3)'s way, HAProxy's
        return f"::ffff:{address.ipv4_mapped}"
    return address.compressed


def _port(raw: bytes, knob: int) -> int:
    return {1: 0, 2: 65535}.get(knob % 4, int.from_bytes(raw[:2], "big"))


def _v1(protocol: str, material: bytes, knobs: int) -> tuple[bytes, Expected]:
    if protocol == "UNKNOWN":
        # §2.1: "PROXY UNKNOWN", then anything (but CR and LF: see the module) up to the CRLF.
        # Often as long as a line may be, where the 107-byte limit is tested.
        size = (MAX_V1_BYTES - 15, knobs % (MAX_V1_BYTES - 14))[knobs >> 60 & 1]
        junk = material[:size].replace(b"\r", b"!").replace(b"\n", b"!")
        line = b"PROXY UNKNOWN" + (b" " + junk[1:] if junk else b"")
        return line + b"\r\n", (1, "PROXY", "UNKNOWN", None, None, ())
    if protocol == "TCP4":
        source: ipaddress.IPv4Address | ipaddress.IPv6Address = _ipv4(material, knobs)
        destination: ipaddress.IPv4Address | ipaddress.IPv6Address = _ipv4(
            material[16:], knobs >> 3
        )
        texts = [str(source), str(destination)]
    else:
        source, destination = _ipv6(material, knobs), _ipv6(material[16:], knobs >> 10)
        texts = [_ipv6_text(source, knobs >> 20 & 7), _ipv6_text(destination, knobs >> 23 & 7)]
    source_port = _port(material[32:], knobs >> 26)
    destination_port = _port(material[34:], knobs >> 28)
    line = f"PROXY {protocol} {texts[0]} {texts[1]} {source_port} {destination_port}\r\n"
    assert len(line) <= MAX_V1_BYTES
    return line.encode(), (
        1,
        "PROXY",
        protocol,
        (str(source), source_port),
        (str(destination), destination_port),
        (),
    )


V2_FAMILIES = {
    0x00: ("UNSPEC", 0),
    0x11: ("TCP4", 4),
    0x12: ("UDP4", 4),
    0x21: ("TCP6", 16),
    0x22: ("UDP6", 16),
    0x31: ("UNIX", 108),
    0x32: ("UNIX", 108),
}


def _tlvs_from(raw: bytes) -> list[tuple[int, bytes]]:
    """Bytes cut into TLVs: a type byte, a length byte (mod 48), that many bytes."""
    tlvs = []
    while raw:
        size = raw[1] % 48 if len(raw) > 1 else 0
        tlvs.append((raw[0], raw[2 : 2 + size]))
        raw = raw[2 + size :]
    return tlvs


def _v2(command: int, family_byte: int, body: bytes) -> bytes:
    return SIGNATURE + bytes([0x20 | command, family_byte]) + len(body).to_bytes(2, "big") + body


def _v2_header(kind: str, material: bytes, knobs: int) -> tuple[bytes, Expected]:
    fill = knobs % 8 == 0  # fill the header up to MAX_V2_LENGTH
    if kind == "LOCAL":
        # The family byte is ignored and the whole length skipped (§2.2).
        body = material[1 : knobs % 256].ljust(MAX_V2_LENGTH if fill else 0, b"\xa5")
        return _v2(0x0, material[0], body), (2, "LOCAL", "UNSPEC", None, None, ())
    family_byte = int(kind, 16)
    family, size = V2_FAMILIES[family_byte]
    source: Address | None = None
    destination: Address | None = None
    raw = material.ljust(2 * size + 4, b"\x00")
    if family == "UNIX":
        addresses, rest = raw[:216], raw[216:]
    elif size:
        make = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
        ips = make(raw[:size]), make(raw[size : 2 * size])
        addresses, rest = raw[: 2 * size + 4], raw[2 * size + 4 :]
        source = (str(ips[0]), int.from_bytes(addresses[-4:-2], "big"))
        destination = (str(ips[1]), int.from_bytes(addresses[-2:], "big"))
    else:
        addresses, rest = b"", material
    tlvs = _tlvs_from(rest[: knobs >> 3 & 0xFF])
    used = len(addresses) + sum(3 + len(value) for _, value in tlvs)
    if fill and MAX_V2_LENGTH - used >= 3:
        tlvs.append((0x04, bytes(MAX_V2_LENGTH - used - 3)))  # NOOP padding to the limit
    body = addresses + b"".join(
        bytes([type_]) + len(value).to_bytes(2, "big") + value for type_, value in tlvs
    )
    return _v2(0x1, family_byte, body), (2, "PROXY", family, source, destination, tuple(tlvs))


# What may follow a header: nothing, TLS, HTTP, or bytes that look like (more) header.
TRAILERS = (
    b"",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET /v2/ HTTP/1.1\r\n",
    b"\r\n",
    b"\n",
    b"\x00" * 8,
    b"PROXY ",
    SIGNATURE + b"\x21\x11\x00\x0c",
    b"\xff" * 40,
)
KINDS = ("v1 TCP4", "v1 TCP6", "v1 UNKNOWN", "v2 LOCAL", *(f"v2 {b:#04x}" for b in V2_FAMILIES))
# A blob: bytes 0-8 pick the kind and the knobs of a header, bytes 9-99 are its material
# (addresses, ports, TLVs), and bytes 100-111 describe the hostile bytes made from it.
BLOB = 112
blobs = st.binary(min_size=BLOB, max_size=BLOB)


def encode(blob: bytes) -> tuple[bytes, Expected, bytes]:
    """A header made from `blob`, what parse should return for it, and a trailer: byte 0 picks
    the kind, bytes 1-8 are knobs (text forms, special values, lengths, the trailer), bytes
    9-99 (repeated as needed) become addresses, ports and TLVs."""
    kind = KINDS[blob[0] % len(KINDS)]
    knobs = int.from_bytes(blob[1:9], "big")
    material = blob[9:100] * 4
    version, name = kind.split()
    make = _v1 if version == "v1" else _v2_header
    header, expected = make(name, material, knobs)
    return header, expected, TRAILERS[(knobs >> 40) % len(TRAILERS)]


PREFIXES = (
    b"PROXY ",
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
    SIGNATURE,
    SIGNATURE + b"\x21",
    SIGNATURE + b"\x20",
    b"P",
)
V1_ALPHABET = b"0123456789abcdefABCDEF.: \r\n46"
# Parts of v1 lines, (valid, invalid), for lines the reference below can judge.
V1_PROTOCOLS = ((b"TCP4", b"TCP6", b"TCP4", b"TCP6", b"UNKNOWN"), (b"TCP5", b"tcp4", b""))
V1_ADDRESSES = {
    b"TCP4": (
        (b"0.0.0.0", b"1.2.3.4", b"255.255.255.255", b"192.0.2.1"),
        (b"01.2.3.4", b"1.2.3", b"1.2.3.4.5", b"256.1.1.1", b"1.2.3.04", b"1..2.3", b"", b"::1"),
    ),
    b"TCP6": (
        (
            b"::",
            b"::1",
            b"2001:db8::",
            b"::ffff:1.2.3.4",
            b"1:2:3:4:5:6:7:8",
            b"FE80::A",
            b"1::2:3:4:5:6:7",
        ),
        (
            b"1:2:3:4:5:6:7",
            b"1::2::3",
            b"fe80::1%eth0",
            b"::ffff:1.2.3.04",
            b"fffff::",
            b"1:2:3:4:5:6:7:8:9",
            b":::",
            b"1:::2",
            b"::::",
            b"1.2.3.4",
            b":1::",
            b"1:2:3:4:5:6:7::8",
            b"::1.2.3.4:5",
        ),
    ),
}
V1_PORTS = (
    (b"0", b"1", b"80", b"65535"),
    (b"00", b"01", b"65536", b"99999", b"100000", b"-1", b"+1", b"", b"1a"),
)
V1_SEPARATORS = ((b" ",), (b"  ", b"\t"))
V1_ENDS = ((b"\r\n",), (b"\n", b"\r", b" \r\n", b"\r\r\n", b" 1\r\n"))


def _pick(choices: tuple[tuple[bytes, ...], tuple[bytes, ...]], byte: int, odds: int = 8) -> bytes:
    """Mostly a valid choice; an invalid one once in `odds` (a power of 2)."""
    valid, invalid = choices
    if byte % odds == odds - 1:
        return invalid[(byte // odds) % len(invalid)]
    return valid[(byte // odds) % len(valid)]


def v1_soup(raw: bytes) -> bytes:
    """A v1 line of a protocol, addresses, ports, separators and an ending picked by `raw`
    from the lists above: valid, or with a defect or a few."""
    protocol = _pick(V1_PROTOCOLS, raw[0])
    addresses = V1_ADDRESSES[b"TCP6" if protocol == b"TCP6" else b"TCP4"]
    fields = [
        _pick(addresses, raw[1], 4),
        _pick(addresses, raw[2], 4),
        _pick(V1_PORTS, raw[3], 4),
        _pick(V1_PORTS, raw[4], 4),
    ]
    line = b"PROXY " + protocol
    for i, field in enumerate(fields[: 4 - raw[5] % 16 // 13]):  # 1 in 16 lacks a field
        line += _pick(V1_SEPARATORS, raw[6 + i]) + field
    return line + _pick(V1_ENDS, raw[10])


def hostile(blob: bytes, stream: bytes) -> bytes:
    """Bytes a peer might send, from bytes 100-111 of `blob`: raw bytes (the blob's own), bytes
    after the start of a signature, a v1 line made of address characters or of the pieces
    above, or (half the time) the encoded `stream` with up to three edits (replace, add or
    subtract one, insert, delete, cut) of 3 bytes each."""
    mode, size, program = blob[100] % 10, blob[101], blob[102:111]
    raw = blob[9:100]
    if mode == 0:
        return raw[: size % (len(raw) + 1)]
    if mode == 1:
        return PREFIXES[size % len(PREFIXES)] + raw[: size >> 2]
    if mode == 2:
        return b"PROXY TCP" + bytes(
            V1_ALPHABET[byte % len(V1_ALPHABET)] for byte in raw[: size % 92]
        )
    if mode in (3, 4):
        return v1_soup(raw) + raw[: size % 4]
    data = bytearray(stream)
    for op, place, value in zip(program[::3], program[1::3], program[2::3], strict=True):
        if op == 0 == place == value:
            continue  # an edit of zeros is none, so that Hypothesis shrinks towards none
        at = place * (len(data) + 1) // 256  # scaled, so that edits reach long headers' ends
        if op % 5 == 0 and at < len(data):
            data[at] = value
        elif op % 5 == 1 and at < len(data):  # off by one, where lengths and bounds break
            at = 15 if value & 2 and data[:1] == b"\r" and len(data) > 15 else at  # v2 length
            data[at] = (data[at] + (1 if value & 1 else -1)) % 256
        elif op % 5 == 2:
            data[at:at] = b" \r\n:.0P"[value % 7 : value % 7 + 1] if op & 8 else bytes([value])
        elif op % 5 == 3:
            del data[at : at + 1 + value % 4]
        else:
            del data[at:]
    return bytes(data)


# --- an independent reference, for complete headers -----------------------------------------

UNDECIDED = "undecided"
V1_REFERENCE = re.compile(
    rb"PROXY (?:UNKNOWN(?: [^\r\n]*)?|(TCP[46]) ([^ \r\n]+) ([^ \r\n]+)"
    rb" (0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4}))\r\n"
)
V1_ADDRESS_CHARS = {
    b"TCP4": frozenset(b"0123456789."),
    b"TCP6": frozenset(b"0123456789abcdefABCDEF:."),
}


def v1_line(line: bytes) -> Expected | None:
    """The values of a complete v1 line (CRLF included, no length limit), or None."""
    match = V1_REFERENCE.fullmatch(line)
    if not match:
        return None
    if match[1] is None:
        return 1, "PROXY", "UNKNOWN", None, None, ()
    family = match[1]
    make = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
    try:
        ips = [
            make(text.decode())
            for text in (match[2], match[3])
            if V1_ADDRESS_CHARS[family].issuperset(text)
        ]
    except ValueError:
        return None
    ports = int(match[4]), int(match[5])
    if len(ips) < 2 or max(ports) > 65535:
        return None
    return 1, "PROXY", family.decode(), (str(ips[0]), ports[0]), (str(ips[1]), ports[1]), ()


def reference(data: bytes) -> tuple[int, Expected] | None | str:
    """What a complete header at the start of `data` is, judged from the spec by other means
    than the parser's (a regular expression; struct offsets): (consumed, values), or None if
    it is invalid, or UNDECIDED while it is incomplete."""
    if data[:1] == b"P":
        cr = data.find(b"\r")
        if 0 <= cr < len(data) - 1 and cr + 2 <= MAX_V1_BYTES:
            values = v1_line(data[: cr + 2])
            return None if values is None else (cr + 2, values)
        return None if len(data) >= MAX_V1_BYTES else UNDECIDED
    if data[:1] != b"\r":
        return None if data else UNDECIDED
    if not SIGNATURE.startswith(data[:12]):
        return None
    if len(data) < 16:
        return UNDECIDED
    version_command, family_byte, length = struct.unpack_from("!BBH", data, 12)
    if version_command not in (0x20, 0x21) or length > MAX_V2_LENGTH:
        return None
    if version_command == 0x20:
        return (
            (16 + length, (2, "LOCAL", "UNSPEC", None, None, ()))
            if len(data) >= 16 + length
            else UNDECIDED
        )
    if family_byte not in V2_FAMILIES:
        return None
    family, size = V2_FAMILIES[family_byte]
    if length < (2 * size + 4 if family not in ("UNSPEC", "UNIX") else 2 * size):
        return None
    if len(data) < 16 + length:
        return UNDECIDED
    body = data[16 : 16 + length]
    source: Address | None = None
    destination: Address | None = None
    if family in ("UNSPEC", "UNIX"):
        tlv_block = body[2 * size :]
    else:
        make = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
        ports = struct.unpack_from("!HH", body, 2 * size)
        source = (str(make(body[:size])), ports[0])
        destination = (str(make(body[size : 2 * size])), ports[1])
        tlv_block = body[2 * size + 4 :]
    tlvs = []
    while tlv_block:
        if len(tlv_block) < 3 or 3 + struct.unpack_from("!H", tlv_block, 1)[0] > len(tlv_block):
            return None
        end = 3 + struct.unpack_from("!H", tlv_block, 1)[0]
        tlvs.append((tlv_block[0], tlv_block[3:end]))
        tlv_block = tlv_block[end:]
    return 16 + length, (2, "PROXY", family, source, destination, tuple(tlvs))


# Enough suffixes to complete any partial address that can be completed: a dotted quad (or an
# IPv6 address's dotted tail) lacks at most an octet and the ".0"s after it, and hex groups
# are completed by "0" (the last group), ":" (a "::" to end) or "::", if at all.
ADDRESS_SUFFIXES = (b"", b"0", b":", b"::", b".0", b".0.0", b".0.0.0", b"0.0", b"0.0.0", b"0.0.0.0")
FILLERS = {b"TCP4": (b"0.0.0.0", b"0.0.0.0", b"0", b"0"), b"TCP6": (b"::", b"::", b"0", b"0")}


def completable(prefix: bytes) -> bool:
    """Whether some bytes after `prefix` (a header's start, short of a v1 line's CR or of the
    16 bytes of v2) make a header the reference accepts; the 107-byte limit aside."""
    if prefix[:1] == b"\r":
        return _v2_completable(prefix)
    if prefix[:1] not in (b"", b"P"):
        return False
    if not (b"PROXY ".startswith(prefix) or prefix.startswith(b"PROXY ")):
        return False
    protocol, space, rest = prefix[6:].partition(b" ")
    if not space:
        return any(known.startswith(protocol) for known in (b"TCP4", b"TCP6", b"UNKNOWN"))
    if protocol not in (b"TCP4", b"TCP6"):
        return v1_line(prefix + b"\r\n") is not None
    fields = rest.split(b" ")
    if len(fields) > 4:
        return False
    tail = b"".join(b" " + filler for filler in FILLERS[protocol][len(fields) :]) + b"\r\n"
    return any(
        v1_line(prefix + suffix + tail) is not None
        for suffix in (ADDRESS_SUFFIXES if len(fields) <= 2 else (b"", b"0"))
    )


def _v2_completable(prefix: bytes) -> bool:
    if not SIGNATURE.startswith(prefix[:12]):
        return False
    fixed = prefix[12:16]
    if not fixed:
        return True
    if fixed[0] not in (0x20, 0x21):
        return False
    if len(fixed) == 1:
        return True
    least = 0
    if fixed[0] == 0x21:
        if fixed[1] not in V2_FAMILIES:
            return False
        family, size = V2_FAMILIES[fixed[1]]
        least = 2 * size + (4 if family not in ("UNSPEC", "UNIX") else 0)
    highs = fixed[2:3] or range((MAX_V2_LENGTH >> 8) + 1)
    return any(least <= (high << 8 | low) <= MAX_V2_LENGTH for high in highs for low in range(256))


def check_early(prefix: bytes, kind: str) -> None:
    """Errors come as early as they can (section 2.1), and never earlier: a prefix short of a
    line's CR (and of 106 bytes) or of v2's 16 bytes fails if and only if nothing completes
    it."""
    if (prefix[:1] == b"P" and b"\r" not in prefix and len(prefix) < MAX_V1_BYTES - 1) or (
        prefix[:1] != b"P" and len(prefix) < 16
    ):
        assert (kind != "error") == completable(prefix), f"{kind} for {prefix!r}"


# --- the checks -------------------------------------------------------------------------------


def outcome(data: bytes) -> Outcome:
    """What parse makes of `data`, as a comparable value; any other exception fails the test."""
    try:
        result = parse(data)
    except ProxyProtocolError as error:
        return "error", error.reason
    assert isinstance(result, NeedMore | ProxyHeader), result
    return ("more", result.at_least) if isinstance(result, NeedMore) else ("header", result)


def as_expected(header: ProxyHeader) -> Expected:
    return (
        header.version,
        header.command,
        header.family,
        header.source,
        header.destination,
        tuple((tlv.type, tlv.value) for tlv in header.tlvs),
    )


def check_outcome(data: bytes) -> Outcome:
    """Property 1, 4's global bounds, and agreement with the reference."""
    kind, value = outcome(data)
    bound = MAX_V1_BYTES if data[:1] == b"P" else MAX_HEADER_BYTES
    if kind == "more":
        assert isinstance(value, int)
        assert 1 <= value and len(data) + value <= bound
    elif kind == "header":
        assert isinstance(value, ProxyHeader)
        assert 0 < value.consumed <= min(len(data), bound)
        if value.command == "LOCAL" or value.family in ("UNKNOWN", "UNSPEC", "UNIX"):
            assert value.source is None and value.destination is None
        else:
            assert value.source is not None and value.destination is not None
            assert value.family[3] == str(ipaddress.ip_address(value.source[0]).version)
            assert value.family[3] == str(ipaddress.ip_address(value.destination[0]).version)
    else:
        assert isinstance(value, str)
        assert 0 < len(value) <= 80 and REASON_CHARS.issuperset(value), value
    check_early(data, kind)
    # The reference agrees wherever it can judge.
    judged = reference(data)
    if judged is None:
        assert kind == "error", "accepted what the reference refuses"
    elif judged != UNDECIDED:
        assert kind == "header", f"refused what the reference accepts ({value})"
        assert isinstance(value, ProxyHeader) and isinstance(judged, tuple)
        assert (value.consumed, as_expected(value)) == judged
    # Bounded: nothing past MAX_HEADER_BYTES is looked at.
    if len(data) >= MAX_HEADER_BYTES:
        assert outcome(data[:MAX_HEADER_BYTES] + b"\r\n" * 50) == (kind, value)
    return kind, value


def check_splits(stream: bytes, whole: Outcome, cuts: set[int]) -> None:
    """Property 3 at the given split points, and at the header's end or where the error
    begins: each prefix gives NeedMore, fitting inside the header, or exactly the whole's
    result; once an error, always that error; and more bytes after a result do not change
    it."""
    if whole[0] == "header":
        assert isinstance(whole[1], ProxyHeader)
        cuts = cuts | {whole[1].consumed - 1, whole[1].consumed}
    elif whole[0] == "error":
        # Where the error begins, found by bisection (errors stay errors, as checked below):
        # there, check_early sees whether it begins exactly where it should.
        good, bad = 0, len(stream)
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (good, middle) if outcome(stream[:middle])[0] == "error" else (middle, bad)
        cuts = cuts | {good, bad}
    failed = False
    for cut in sorted(cut for cut in cuts if 0 <= cut <= len(stream)):
        kind, value = outcome(stream[:cut])
        check_early(stream[:cut], kind)
        if kind == "more":
            assert not failed, "an error went away when more bytes came"
            if whole[0] == "header":
                assert isinstance(whole[1], ProxyHeader) and isinstance(value, int)
                assert cut < whole[1].consumed and cut + value <= whole[1].consumed
        else:
            assert (kind, value) == whole
            failed = kind == "error"
    if whole[0] != "more":
        assert outcome(stream + b"\r\nPROXY TCP4 \xff") == whole


def cuts_from(data: bytes) -> set[int]:
    """Six split points spread over [0, len(data)], from a hash of the data rather than from
    six more choices."""
    seed = int.from_bytes(hashlib.blake2b(data, digest_size=9).digest(), "big")
    return {(seed >> (12 * i) & 0xFFF) * (len(data) + 1) // 0x1000 for i in range(6)}


# --- the target -------------------------------------------------------------------------------


@fuzz
@given(blobs)
def test_parse_encoded_and_hostile_bytes(blob: bytes) -> None:
    header, expected, trailer = encode(blob)
    stream = header + trailer
    data = hostile(blob, stream)
    note(f"stream={stream!r}")
    note(f"hostile={data!r}")

    # Encoded: 2, the same values back, and exactly the header consumed.
    whole = check_outcome(stream)
    event(f"encoded: v{expected[0]} {expected[2]}")
    assert whole[0] == "header" and isinstance(whole[1], ProxyHeader)
    assert whole[1].consumed == len(header)
    assert as_expected(whole[1]) == expected
    # 3, and 4 within the header: split anywhere.
    check_splits(stream, whole, cuts_from(blob))
    # 4: a reader that reads exactly what NeedMore asks for stops at the end of the header. (A
    # v1 reader reads a byte at a time past the 14th: that is every prefix, which the unit
    # tests walk for their headers; here the cuts above sample them.)
    if expected[0] == 2:
        received = b""
        while not isinstance(result := parse(received), ProxyHeader):
            assert result.at_least >= 1
            received += stream[len(received) : len(received) + result.at_least]
            assert len(received) <= len(header)
        assert result == whole[1] and len(received) == len(header)

    # Hostile: 1 and 4's bounds, then 3.
    whole = check_outcome(data)
    event(f"hostile: {whole[0]}, v{1 if data[:1] == b'P' else 2}")
    if whole[0] == "header":
        assert isinstance(whole[1], ProxyHeader)
        assert outcome(data[: whole[1].consumed]) == whole  # the header alone suffices
    check_splits(data, whole, cuts_from(data))
