"""Let the front door know when a request's headers already ended it.

An HTTP/2 or HTTP/3 request announces "no body" by ending the stream on its HEADERS frame;
mitmproxy knows this (`RequestHeaders.end_stream`) but does not put it on the request. Without
it, a GET whose HEADERS frame leaves the stream open could still send DATA, which must never be
forwarded (an HTTP/1.1 upstream would read those bytes as further requests). install() wraps
mitmproxy's request-headers state of `HttpStream` once, so that a request whose headers ended
it carries an empty body (`content == b""`) by the time regauth's `requestheaders` hook sees
it. It fails loudly if the mitmproxy version has no such state (a mitmproxy upgrade that moves
it must be noticed by the test suite, not in production).
"""

from __future__ import annotations

import functools
from typing import Any

from mitmproxy.proxy.layers import http as http_layer

_MARK = "_regauth_end_stream_marked"


def install() -> None:
    stream = http_layer.HttpStream
    original: Any = getattr(stream, "state_wait_for_request_headers", None)
    if original is None or not callable(original):
        raise RuntimeError("this mitmproxy version has no HttpStream.state_wait_for_request_"
                           "headers to wrap; regauth needs mitmproxy 12.3")
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def state_wait_for_request_headers(self: Any, event: Any) -> Any:
        if getattr(event, "end_stream", False) and event.request.data.content is None:
            event.request.data.content = b""
        return (yield from original(self, event))

    setattr(state_wait_for_request_headers, _MARK, True)
    stream.state_wait_for_request_headers = state_wait_for_request_headers  # type: ignore[method-assign]


def body_absent(content: bytes | None, http1: bool, content_length: str | None,
                transfer_encoding: str | None) -> bool:
    """Whether no request body follows: HTTP/1 without chunking and with no or a zero length,
    or any request marked by the wrapped state above."""
    if content is not None and not content:
        return True
    if http1 and transfer_encoding is None:
        return content_length is None or content_length.strip() == "0"
    return False
