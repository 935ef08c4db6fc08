"""Registry-format JSON for the error responses mitmproxy generates itself, instead of its HTML
page, so registry clients can show the message; and an upstream that cannot be reached answers
distribution's `503 UNAVAILABLE` with `Retry-After`, which registry clients retry.

mitmproxy has no hook for these responses, so what its HTTP/1 and HTTP/2 layers call to make
them is replaced:

- `_http1.make_error_response` and `_http2.format_error` (module-level functions): the body is
  distribution's error JSON (`{"errors": [{"code": "UNAVAILABLE", ...}]}`), `Content-Type:
  application/json`;
- `ErrorCode.http_status_code` (a method of mitmproxy's enum): a failed upstream connection
  (`CONNECT_FAILED`: refused, unreachable, timed out, TLS handshake failed) is 503, not 502:
  the registry is unavailable, the request was not sent, so a client may retry it. Every other
  code keeps mitmproxy's status (a response the upstream broke off stays 502: the request may
  have been acted on);
- `_http_h2.BufferedH2Connection.send_headers`: mitmproxy's HTTP/2 error answer has fixed
  headers (`:status`, `server`, `content-type: text/html`); exactly that list is replaced by
  the status, `content-type: application/json` and, for 503, `retry-after`.

- `_http1.Http1Server.send` (for a protocol error only) and `BufferedH2Connection.send_data`:
  an error answer to a request whose method is exactly `HEAD` has no body but the length its
  GET would get (RFC 9110 §9.3.2, issue 25): mitmproxy writes the body after a HEAD's head
  (HTTP/1.1: the next response on the connection would be misread) and sends DATA on a HEAD
  stream (HTTP/2: a protocol error to strict clients).

A 503 made here always carries `Retry-After: 1` (RETRY_AFTER seconds). install() checks every
target exists and fails loudly otherwise (a mitmproxy upgrade that moves them must be noticed
by the test suite, not in production).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.events
from mitmproxy import http
from mitmproxy import version
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.net.http.http1 import assemble_response_head
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http import _http2
from mitmproxy.proxy.layers.http import _http_h2
from mitmproxy.proxy.layers.http._events import ErrorCode
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

from regauth.protocol.errors import JSON_HEADERS
from regauth.protocol.errors import Code
from regauth.protocol.errors import error_body

RETRY_AFTER = 1  # seconds, as regauth's other 503 answers

_CODES = {
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.UNAVAILABLE,
    413: Code.SIZE_INVALID,
    400: Code.UNSUPPORTED,
}


def registry_error(status_code: int, message: str) -> bytes:
    code = _CODES.get(status_code, Code.UNAVAILABLE if status_code >= 500 else Code.UNSUPPORTED)
    return error_body(code, f"regauth: {message}" if message else "regauth: proxy error")


def error_headers(status_code: int) -> dict[str, str]:
    """The headers of an error answer made here (besides `Connection: close` on HTTP/1)."""
    headers = dict(JSON_HEADERS)
    if status_code == 503:
        headers["Retry-After"] = str(RETRY_AFTER)
    return headers


def _make_error_response(status_code: int, message: str = "", head: bool = False) -> bytes:
    response = http.Response.make(
        status_code,
        registry_error(status_code, message),
        {**error_headers(status_code), "Connection": "close"},
    )
    # The head alone, its Content-Length the body's, for a HEAD.
    return assemble_response_head(response) if head else assemble_response(response)


_original_http1_send: Callable[..., Any] | None = None


def _http1_send(self: Any, event: Any) -> Any:
    """mitmproxy's Http1Server.send, but a protocol error's answer to a HEAD has no body."""
    assert _original_http1_send is not None
    request = self.request
    if (
        isinstance(event, ResponseProtocolError)
        and request is not None
        and request.data.method == b"HEAD"
        and not self.response
        and self.conn.state & ConnectionState.CAN_WRITE
    ):
        status = event.code.http_status_code()
        if status is not None:
            yield commands.SendData(self.conn, _make_error_response(status, event.message, True))
        yield commands.CloseConnection(self.conn)
        return
    yield from _original_http1_send(self, event)


_original_status: Callable[[ErrorCode], int | None] | None = None


def _http_status_code(self: ErrorCode) -> int | None:
    if self is ErrorCode.CONNECT_FAILED:
        return 503
    assert _original_status is not None
    return _original_status(self)


def _h2_error_headers(headers: Any) -> Any:
    """mitmproxy's fixed HTTP/2 error headers, rewritten; any other headers unchanged."""
    if (
        isinstance(headers, list)
        and len(headers) == 3
        and headers[0][0] == b":status"
        and headers[1] == (b"server", version.MITMPROXY.encode())
        and headers[2] == (b"content-type", b"text/html")
    ):
        status = headers[0][1]
        return [(b":status", status)] + [
            (name.lower().encode(), value.encode())
            for name, value in error_headers(int(status)).items()
        ]
    return headers


_original_send_headers: Callable[..., Any] | None = None


_original_handle_h2_event: Callable[..., Any] | None = None
MAX_HEAD_STREAMS = 1024


def _handle_h2_event(self: Any, event: Any) -> Any:
    """Http2Server.handle_h2_event, noting (on the connection) which streams are HEADs: h2
    remembers a stream's method only on the side that sent the request."""
    assert _original_handle_h2_event is not None
    if isinstance(event, h2.events.RequestReceived) and (b":method", b"HEAD") in (
        event.headers or ()
    ):
        conn = self.h2_conn
        heads: set[int] = getattr(conn, "regauth_head_streams", set())
        heads.add(event.stream_id)
        if len(heads) > MAX_HEAD_STREAMS:
            heads &= set(conn.streams)  # the open ones
        conn.regauth_head_streams = heads
    return (yield from _original_handle_h2_event(self, event))


def _send_headers(self: Any, stream_id: int, headers: Any, *args: Any, **kwargs: Any) -> Any:
    assert _original_send_headers is not None
    rewritten = _h2_error_headers(headers)
    if rewritten is not headers and stream_id in getattr(self, "regauth_head_streams", ()):
        # Sent by `_send_data` with the body's length and no DATA (the body comes next).
        self.regauth_head_errors = {
            **getattr(self, "regauth_head_errors", {}),
            stream_id: rewritten,
        }
        return None
    return _original_send_headers(self, stream_id, rewritten, *args, **kwargs)


_original_send_data: Callable[..., Any] | None = None


def _send_data(self: Any, stream_id: int, data: bytes, *args: Any, **kwargs: Any) -> Any:
    assert _original_send_data is not None and _original_send_headers is not None
    pending = getattr(self, "regauth_head_errors", None)
    if pending and stream_id in pending:
        headers = pending.pop(stream_id)
        headers = [*headers, (b"content-length", str(len(data)).encode())]
        return _original_send_headers(self, stream_id, headers, end_stream=True)
    return _original_send_data(self, stream_id, data, *args, **kwargs)


def install() -> None:
    global _original_status, _original_send_headers, _original_send_data, _original_http1_send
    global _original_handle_h2_event
    if (
        not callable(getattr(_http1, "make_error_response", None))
        or not callable(getattr(_http2, "format_error", None))
        or not callable(getattr(ErrorCode, "http_status_code", None))
        or not hasattr(ErrorCode, "CONNECT_FAILED")
        or not callable(getattr(_http_h2.BufferedH2Connection, "send_headers", None))
        or not callable(getattr(_http_h2.BufferedH2Connection, "send_data", None))
        or not callable(getattr(_http1.Http1Server, "send", None))
        or not callable(getattr(_http2.Http2Server, "handle_h2_event", None))
    ):
        raise RuntimeError(
            "this mitmproxy version has no make_error_response/format_error/"
            "ErrorCode.http_status_code/BufferedH2Connection.send_headers to "
            "replace; regauth needs mitmproxy 12.3"
        )
    _http1.make_error_response = _make_error_response
    _http2.format_error = registry_error
    if _original_status is None:
        _original_status = ErrorCode.http_status_code
        ErrorCode.http_status_code = _http_status_code  # type: ignore[method-assign]
    if _original_send_headers is None:
        _original_send_headers = _http_h2.BufferedH2Connection.send_headers
        _http_h2.BufferedH2Connection.send_headers = _send_headers  # type: ignore[method-assign]
    if _original_send_data is None:
        _original_send_data = _http_h2.BufferedH2Connection.send_data
        _http_h2.BufferedH2Connection.send_data = _send_data  # type: ignore[method-assign]
    if _original_handle_h2_event is None:
        _original_handle_h2_event = _http2.Http2Server.handle_h2_event
        _http2.Http2Server.handle_h2_event = _handle_h2_event  # type: ignore[method-assign]
    if _original_http1_send is None:
        _original_http1_send = _http1.Http1Server.send
        _http1.Http1Server.send = _http1_send  # type: ignore[method-assign]
