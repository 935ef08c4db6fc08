"""Request heads are bounded before mitmproxy parses them (`regauth.protocol.request_bounds`).

mitmproxy 12 reads an HTTP/1 request head into an unbounded buffer (`Http1Server.read_headers`
says `FIXME: protect against header size DoS`), and h11 drops only one leading empty line per
read; hyper-h2 buffers up to 64 CONTINUATION frames of up to `max_frame_size` (128 KiB in
mitmproxy) for one header block. Two wrappers, installed once, close both:

1. `Http1Server.read_headers`: an `Http1HeadScanner` per connection judges the buffered bytes
   on every read; a refused head gets 414, 431 or 400 (registry-format JSON, `Connection:
   close`) and the connection is closed, before any hook runs.
2. `FrameBuffer._update_header_buffer`: a header block whose buffered fragments exceed
   `MAX_HEAD_BYTES` is a connection error (GOAWAY), as hyper-h2 already treats too many
   CONTINUATION frames or an HPACK list over its limit.

Refusals are counted and logged through `refusal_log.refusals` (reasons `head_too_large`,
`request_line_too_long`, `header_block_too_large`, `bad_head`). install() checks every target
first and fails loudly on a mitmproxy/h11/hyper-h2 that moved them.
"""

from __future__ import annotations

import functools
from typing import Any

import h2.exceptions
import h2.frame_buffer
from h11._receivebuffer import ReceiveBuffer
from hyperframe.frame import Frame
from mitmproxy import http
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.proxy import commands
from mitmproxy.proxy import events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.utils import human

from regauth.mitm.refusal_log import refusals
from regauth.protocol.errors import JSON_HEADERS
from regauth.protocol.errors import Code
from regauth.protocol.errors import error_body
from regauth.protocol.request_bounds import MAX_HEAD_BYTES
from regauth.protocol.request_bounds import HeadRefusal
from regauth.protocol.request_bounds import Http1HeadScanner

_INSTALLED = "_regauth_head_limits"
_SCANNER = "_regauth_head_scanner"
_REASONS = {414: "request_line_too_long", 431: "head_too_large", 400: "bad_head"}
_PHRASES = {414: "URI Too Long", 431: "Request Header Fields Too Large", 400: "Bad Request"}


def refusal_response(refusal: HeadRefusal) -> bytes:
    """The bytes of the HTTP/1.1 answer to a refused head (the connection closes after it)."""
    response = http.Response.make(
        refusal.status,
        error_body(Code.UNSUPPORTED, f"regauth: {refusal.reason}"),
        {**JSON_HEADERS, "Connection": "close"},
    )
    response.reason = _PHRASES.get(refusal.status, "")
    return assemble_response(response)


def _wrap_read_headers() -> None:
    read_headers = _http1.Http1Server.read_headers

    @functools.wraps(read_headers)
    def wrapped(self: Any, event: Any) -> Any:
        if isinstance(event, events.DataReceived):
            scanner: Http1HeadScanner | None = getattr(self, _SCANNER, None)
            if scanner is None:
                scanner = Http1HeadScanner()
                setattr(self, _SCANNER, scanner)
            refusal = scanner.feed(self.buf._data)
            if refusal is not None:
                address = human.format_address(self.conn.peername)
                refusals.note(
                    str(self.conn.peername[0]) if self.conn.peername else "",
                    _REASONS.get(refusal.status, "bad_head"),
                    f"refused a request head from {address}: {refusal.reason} ({refusal.status})",
                )
                yield commands.SendData(self.conn, refusal_response(refusal))
                yield commands.CloseConnection(self.conn)
                self.buf = ReceiveBuffer()
                self.state = self.done
                return
            before = len(self.buf)
            yield from read_headers(self, event)
            if self.state != self.read_headers or len(self.buf) < before:
                # A head was extracted (the next one starts from scratch), or h11 dropped a
                # leading empty line (every offset moved).
                scanner.reset()
            return
        yield from read_headers(self, event)

    # The patch itself: mypy's method-assign flags every assignment to a method.
    _http1.Http1Server.read_headers = wrapped  # type: ignore[method-assign]


def _wrap_header_buffer() -> None:
    update = h2.frame_buffer.FrameBuffer._update_header_buffer

    @functools.wraps(update)
    def wrapped(self: h2.frame_buffer.FrameBuffer, frame: Frame | None) -> Frame | None:
        result = update(self, frame)
        pending = self._headers_buffer
        if pending and sum(len(f.data) for f in pending) > MAX_HEAD_BYTES:
            self._headers_buffer = []
            refusals.counts["header_block_too_large"] += 1
            raise h2.exceptions.DenialOfServiceError(
                f"header block larger than {MAX_HEAD_BYTES} bytes"
            )
        return result

    # The patch (method-assign); functools.wraps makes a _Wrapped, not a method (assignment).
    h2.frame_buffer.FrameBuffer._update_header_buffer = wrapped  # type: ignore[method-assign, assignment]


def install() -> None:
    if getattr(_http1.Http1Server, _INSTALLED, False):
        return
    problems = []
    if not callable(getattr(_http1.Http1Server, "read_headers", None)):
        problems.append("mitmproxy Http1Server.read_headers")
    if not isinstance(getattr(ReceiveBuffer(), "_data", None), bytearray):
        problems.append("h11 ReceiveBuffer._data")
    if not callable(
        getattr(h2.frame_buffer.FrameBuffer, "_update_header_buffer", None)
    ) or not hasattr(h2.frame_buffer.FrameBuffer(), "_headers_buffer"):
        problems.append("hyper-h2 FrameBuffer._update_header_buffer")
    if problems:
        raise RuntimeError(
            f"{', '.join(problems)} missing: regauth needs mitmproxy 12.3, h11 0.16 and hyper-h2 4"
        )
    _wrap_read_headers()
    _wrap_header_buffer()
    setattr(_http1.Http1Server, _INSTALLED, True)
