"""Bounds on a request head, one contract for HTTP/1.1 and HTTP/2.

Every client chooses the size of what it sends; regauth keeps a request head (request line and
header fields) in memory until it has been decided, so the head is bounded before it is parsed
(issue 20: one TLS connection sending header lines without end grew regauth by 1.1 GiB in
1.7 s). The limits sit between nginx's (8 KiB lines, `large_client_header_buffers 4 8k`) and
Go's `http.Server` (1 MiB for the whole head, which distribution inherits); registry clients
send a few hundred bytes plus one Authorization header of at most a few KiB.

| bound | value | refused with |
|---|---|---|
| request line (method, target, version) | 8 KiB | 414 URI Too Long |
| one header field line (name, value) | 16 KiB | 431 Request Header Fields Too Large |
| header fields | 100 | 431 |
| whole head | 64 KiB | 431 |

HTTP/1.1 heads are checked on the bytes as they arrive (`Http1HeadScanner`), before mitmproxy
parses them, and the connection is closed after the refusal (RFC 9110 §15.5.15, RFC 6585 §5).
HTTP/2 heads are bounded by hyper-h2's HPACK limit (64 KiB decoded) and regauth's limit on the
CONTINUATION frames buffered for one header block (`MAX_HEAD_BYTES`), both connection errors;
a decoded head within those but over a line or count bound gets the same 414/431 answer on its
own stream (`check_fields`, from the front door). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_REQUEST_LINE = 8 * 1024
MAX_FIELD_LINE = 16 * 1024
MAX_FIELDS = 100
MAX_HEAD_BYTES = 64 * 1024

# Empty lines a client may send before a request line (RFC 9112 §2.2 asks servers to ignore at
# least one CRLF there); h11 drops one per read, so an endless run would grow the buffer.
MAX_LEADING_EMPTY_BYTES = 4


@dataclass(frozen=True)
class HeadRefusal:
    """Why a request head is refused: the status to answer and a reason safe to log."""

    status: int
    reason: str


class Http1HeadScanner:
    """Judges an HTTP/1.x request head as its bytes arrive, before anything parses it.

    Call `feed(buffer)` with the connection's whole receive buffer (what the client sent since
    the previous request ended: a head, perhaps incomplete, perhaps followed by body bytes)
    every time it grows; it returns a refusal as soon as the head breaks a bound, else None.
    Only bytes not seen by an earlier call are scanned, so a head trickled in byte by byte
    costs linear time in total. Once the blank line ending the head has been seen, later calls
    return None at once (the rest is body). `reset()` starts over, for the next request or
    when the buffer lost bytes at its start. Never raises.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pos = 0  # bytes of the buffer already scanned
        self._line_start = -1  # where the current line starts; -1: leading empty lines
        self._head_start = 0  # where the request line starts
        self._lines = 0  # complete lines so far (the request line included)
        self.complete = False

    def feed(self, buffer: bytes | bytearray) -> HeadRefusal | None:
        if self.complete:
            return None
        size = len(buffer)
        pos = self._pos
        if self._line_start < 0:
            while pos < size and buffer[pos] in (0x0D, 0x0A):
                pos += 1
                if pos > MAX_LEADING_EMPTY_BYTES:
                    return HeadRefusal(400, "empty lines before the request line")
            if pos == size:
                self._pos = pos
                return None
            self._line_start = pos
            self._head_start = pos
        while True:
            newline = buffer.find(b"\n", pos, size)
            end = size if newline < 0 else newline
            length = end - self._line_start
            if length and buffer[end - 1] == 0x0D:
                length -= 1  # the CR of CRLF, arrived or not yet followed by its LF
            if self._lines == 0 and length > MAX_REQUEST_LINE:
                return HeadRefusal(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
            if self._lines > 0 and length > MAX_FIELD_LINE:
                return HeadRefusal(431, f"a header field longer than {MAX_FIELD_LINE} bytes")
            if end - self._head_start > MAX_HEAD_BYTES:
                return HeadRefusal(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
            if newline < 0:
                self._pos = size
                return None
            pos = newline + 1
            if length == 0 and self._lines > 0:
                self.complete = True  # the blank line: the head is complete
                return None
            self._lines += 1
            self._line_start = pos
            if self._lines > MAX_FIELDS + 1:
                return HeadRefusal(431, f"more than {MAX_FIELDS} header fields")


def check_fields(
    target: str, method: str, fields: Iterable[tuple[bytes, bytes]]
) -> HeadRefusal | None:
    """The same bounds for a head that arrived decoded (HTTP/2): the request line is measured
    as its HTTP/1.1 form would be (`METHOD TARGET HTTP/1.1`), each field as `name: value`."""
    if len(method) + len(target) + 10 > MAX_REQUEST_LINE:
        return HeadRefusal(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
    count = 0
    total = 0
    for name, value in fields:
        size = len(name) + 2 + len(value)
        if size > MAX_FIELD_LINE:
            return HeadRefusal(431, f"a header field longer than {MAX_FIELD_LINE} bytes")
        count += 1
        total += size + 2
        if count > MAX_FIELDS:
            return HeadRefusal(431, f"more than {MAX_FIELDS} header fields")
    if total > MAX_HEAD_BYTES:
        return HeadRefusal(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
    return None
