"""A load balancer's side of the PROXY protocol, for tests: headers, and TLS after them.

`v1()` and `v2()` build headers as HAProxy's spec lays them out (independently of regauth's
parser); `open_tls()` connects from a chosen loopback address, sends a header (whole, or
split as a test asks), then runs TLS to regauth over the same socket; `exchange()` sends one
HTTP/1.1 request on such a socket and reads the reply.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import time
from pathlib import Path

from tests.support.attacks import RawReply
from tests.support.attacks import _parse

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(
    source: str,
    source_port: int = 40000,
    destination: str | None = None,
    destination_port: int = 443,
) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    destination = destination or ("::1" if family == "TCP6" else "127.0.0.1")
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode()


def v2(
    source: str,
    source_port: int = 40000,
    destination: str = "127.0.0.1",
    destination_port: int = 443,
    tlvs: bytes = b"",
    command: int = 0x21,
    length: int | None = None,
) -> bytes:
    """A v2 header (command 0x21 PROXY, 0x20 LOCAL); `length` overrides the declared one."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version == 4:
        family, addresses = 0x11, src.packed + ipaddress.IPv4Address(dst).packed
    else:
        family, addresses = (
            0x21,
            src.packed
            + ipaddress.IPv6Address(
                ipaddress.ip_address(destination) if dst.version == 6 else f"::ffff:{destination}"
            ).packed,
        )
    body = addresses + struct.pack("!HH", source_port, destination_port) + tlvs
    if command == 0x20:
        family, body = 0x00, tlvs
    declared = len(body) if length is None else length
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", declared) + body


def open_tls(
    port: int,
    ca: Path,
    header: bytes = b"",
    source: str = "127.0.0.1",
    split: list[int] | None = None,
    pause: float = 0.05,
    timeout: float = 10.0,
    alpn: str | None = None,
) -> ssl.SSLSocket:
    """TCP from `source`, the header (in pieces at the offsets of `split`, `pause` apart),
    then TLS. Raises OSError/ssl.SSLError when regauth closes the connection."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        cuts = [0, *(split or []), len(header)]
        for start, end in zip(cuts, cuts[1:], strict=False):
            if header[start:end]:
                raw.sendall(header[start:end])
                time.sleep(pause)
        context = ssl.create_default_context(cafile=str(ca))
        if alpn:
            context.set_alpn_protocols([alpn])
        return context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def exchange(
    sock: ssl.SSLSocket,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> RawReply:
    """One HTTP/1.1 request with `Connection: close`; the reply as `attacks.RawReply`."""
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: localhost",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (OSError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return _parse(data)


def closed_without_answer(
    port: int, data: bytes, source: str = "127.0.0.1", wait: float = 5.0
) -> tuple[bool, float, bytes]:
    """Send `data` in plain TCP and wait for regauth to close: (closed, seconds, answer)."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait, source_address=(source, 0))
    answer = b""
    try:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            answer += chunk
        return True, time.monotonic() - started, answer
    except TimeoutError:
        return False, time.monotonic() - started, answer
    except OSError:
        return True, time.monotonic() - started, answer
    finally:
        sock.close()
