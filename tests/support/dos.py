"""Attacks on one regauth, shared by the resource-bound tests and bench/attacks.py.

Each function is one anonymous client misbehaving on its own connections (from a loopback
source address of its own, 127.0.0.0/8 all reach the proxy): endless request heads, endless
HTTP/2 CONTINUATION frames, HTTP/2 rapid reset, trickled bodies. `rss_mib`, `cpu_seconds` and
`open_fds` read a process's cost from /proc.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def rss_mib(pid: int) -> float:
    return _status(pid, "VmRSS") / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tls_socket(
    port: int, ca: Path, source: str = "127.0.0.1", alpn: str | None = None, timeout: float = 10.0
) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    if alpn:
        context.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return context.wrap_socket(raw, server_hostname="localhost")


def flood(sock: ssl.SSLSocket, chunk: bytes, seconds: float) -> tuple[int, bytes]:
    """Send `chunk` again and again until the peer closes or `seconds` pass: (bytes sent,
    what the peer answered)."""
    sent = 0
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
            sent += len(chunk)
        except OSError:
            break
    answer = b""
    sock.settimeout(2)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    return sent, answer


def rapid_reset(
    port: int, ca: Path, seconds: float, source: str, service: str = "regauth"
) -> dict[str, int]:
    """Open streams and reset them at once, in batches of 50, reconnecting whenever regauth
    closes the connection, for `seconds`."""
    outcome = {"streams": 0, "connections": 0, "enhance_your_calm": 0, "closed": 0}
    deadline = time.monotonic() + seconds
    headers = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", f"localhost:{port}"),
        (":path", f"/v2/token?service={service}&scope=repository:public/a:pull"),
    ]
    while time.monotonic() < deadline:
        try:
            sock = tls_socket(port, ca, source=source, alpn="h2", timeout=5)
        except OSError:
            continue
        outcome["connections"] += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        try:
            while time.monotonic() < deadline:
                for _ in range(50):
                    stream = conn.get_next_available_stream_id()
                    conn.send_headers(stream, headers, end_stream=True)
                    conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                    outcome["streams"] += 1
                sock.sendall(conn.data_to_send())
                sock.settimeout(0)
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    data = None
                finally:
                    sock.settimeout(5)
                if data == b"":
                    outcome["closed"] += 1
                    break
                if data:
                    events = conn.receive_data(data)
                    if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                        outcome["enhance_your_calm"] += 1
                        break
        except (OSError, h2.exceptions.ProtocolError):
            outcome["closed"] += 1
        finally:
            sock.close()
    return outcome


def trickle(sock: ssl.SSLSocket, head: bytes, every: float, limit: float) -> float | None:
    """Send `head`, then one body byte every `every` seconds: seconds until regauth closed
    the connection, or None if it was still open after `limit`."""
    started = time.monotonic()
    sock.sendall(head)
    while time.monotonic() - started < limit:
        try:
            sock.sendall(b"a")
            sock.settimeout(every)
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def head_flood(port: int, ca: Path, shape: str, seconds: float, source: str) -> tuple[int, bytes]:
    """One HTTP/1.1 connection sending a request head without end: `header lines` (1 KB
    header lines) or `one endless line` (a request target that never ends)."""
    sock = tls_socket(port, ca, source=source)
    if shape == "header lines":
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n")
        chunk = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    else:
        sock.sendall(b"GET /v2/")
        chunk = b"a" * 4096
    try:
        return flood(sock, chunk, seconds)
    finally:
        sock.close()


def continuation_flood(
    port: int, ca: Path, seconds: float, source: str = "127.0.0.1"
) -> tuple[int, list[int]]:
    """HTTP/2 HEADERS without END_HEADERS, then CONTINUATION frames without end: (bytes
    sent, the GOAWAY error codes received)."""
    from hyperframe.frame import ContinuationFrame
    from hyperframe.frame import HeadersFrame

    sock = tls_socket(port, ca, source=source, alpn="h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    try:
        sock.sendall(conn.data_to_send())
        sock.sendall(HeadersFrame(1, data=b"\x82\x87", flags=[]).serialize())  # GET, https
        frame = ContinuationFrame(1, data=b"\x00" * 16000).serialize()
        sent, answer = flood(sock, frame, seconds)
    finally:
        sock.close()
    try:
        events = conn.receive_data(answer) if answer else []
    except h2.exceptions.ProtocolError:
        events = []
    return sent, [e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)]
