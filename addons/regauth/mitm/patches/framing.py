"""Let the front door know when a request's headers already ended it.

An HTTP/2 or HTTP/3 request announces "no body" by ending the stream on its HEADERS frame;
mitmproxy knows this (`RequestHeaders.end_stream`) but does not put it on the request. Without
it, a GET whose HEADERS frame leaves the stream open could still send DATA, which must never be
forwarded (an HTTP/1.1 upstream would read those bytes as further requests). install() wraps
mitmproxy's request-headers state of `HttpStream` once, so that a request whose headers ended
it carries an empty body (`content == b""`) by the time regauth's `requestheaders` hook sees
it. It fails loudly if the mitmproxy version has no such state (a mitmproxy upgrade that moves
it must be noticed by the test suite, not in production).

It also refuses HTTP/1 chunked trailers: mitmproxy 12 raises NotImplementedError on them,
which crashes the connection's handler while the upstream holds an unterminated chunked body.
A trailer becomes an HTTP/1 protocol error, and mitmproxy closes the connection as it does for
any malformed chunk.
"""

from __future__ import annotations

import functools
from typing import Any

import h11
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import _http1

_MARK = "_regauth_end_stream_marked"


class _NoTrailers:
    """Wraps an h11 body reader: a chunked body's trailer section is a protocol error."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def _check(self, event: Any) -> Any:
        if isinstance(event, h11.EndOfMessage) and event.headers:
            raise h11.RemoteProtocolError("chunked trailers are not accepted")
        return event

    def __call__(self, buf: Any) -> Any:
        return self._check(self.reader(buf))

    def read_eof(self) -> Any:
        return self._check(self.reader.read_eof())


def _refuse_trailers() -> None:
    make = getattr(_http1, "make_body_reader", None)
    if make is None or not callable(make):
        raise RuntimeError(
            "this mitmproxy version has no _http1.make_body_reader to wrap; "
            "regauth needs mitmproxy 12.3"
        )
    if getattr(make, _MARK, False):
        return

    @functools.wraps(make)
    def make_body_reader(expected_size: int | None) -> Any:
        return _NoTrailers(make(expected_size))

    setattr(make_body_reader, _MARK, True)
    _http1.make_body_reader = make_body_reader


def install() -> None:
    _refuse_trailers()
    stream = http_layer.HttpStream
    original: Any = getattr(stream, "state_wait_for_request_headers", None)
    if original is None or not callable(original):
        raise RuntimeError(
            "this mitmproxy version has no HttpStream.state_wait_for_request_"
            "headers to wrap; regauth needs mitmproxy 12.3"
        )
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def state_wait_for_request_headers(self: Any, event: Any) -> Any:
        if getattr(event, "end_stream", False) and event.request.data.content is None:
            event.request.data.content = b""
        return (yield from original(self, event))

    setattr(state_wait_for_request_headers, _MARK, True)
    # The patch itself: mypy's method-assign flags every assignment to a method.
    stream.state_wait_for_request_headers = state_wait_for_request_headers  # type: ignore[method-assign]


def body_absent(
    content: bytes | None, http1: bool, content_length: str | None, transfer_encoding: str | None
) -> bool:
    """Whether no request body follows: HTTP/1 without chunking and with no or a zero length,
    or any request marked by the wrapped state above."""
    if content is not None and not content:
        return True
    if http1 and transfer_encoding is None:
        return content_length is None or content_length.strip() == "0"
    return False
