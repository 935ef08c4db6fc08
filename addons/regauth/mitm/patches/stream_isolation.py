"""HTTP/2 stream isolation: a refused or malformed request ends its own stream, nothing else.

containerd and BuildKit multiplex pulls and pushes over one HTTP/2 connection, so a problem
with one request must never take the connection down (RFC 9113 §5.4.2, §8.1.1). Two gaps in
mitmproxy 12 and hyper-h2 are closed here, each by one wrapper installed once:

1. A request whose DATA does not add up to its `content-length` is malformed, which RFC 9113
   §8.1.1 makes a *stream* error of type PROTOCOL_ERROR. hyper-h2 raises a connection error
   instead, and mitmproxy then closes the connection with every other stream on it. The
   wrapped `H2Stream` length checks reset only the offending stream (RST_STREAM
   PROTOCOL_ERROR); mitmproxy sees a reset stream, errors that flow and closes its upstream
   connection (it is never reused).
2. A request refused while its body is still arriving (answered by regauth's refusal sink,
   marked `DISCARD_MARK`) gets its complete response, END_STREAM included, and then
   RST_STREAM(NO_ERROR) "to request that the client abort transmission of a request without
   error" (RFC 9113 §8.1). Without this, mitmproxy holds END_STREAM until the whole body has
   been received: a client that waits for the response to end before sending more waits
   forever, and one that gives up ends its stream early (case 1).

install() fails loudly if the wrapped internals are missing (a mitmproxy or hyper-h2 upgrade
must be noticed by the test suite, not in production).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.stream
from mitmproxy.proxy.commands import SendData
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import ErrorCode
from mitmproxy.proxy.layers.http import _http2
from mitmproxy.proxy.layers.http._base import HttpEvent
from mitmproxy.proxy.layers.http._events import RequestProtocolError
from mitmproxy.proxy.layers.http._http2 import Http2Server
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection

# flow.metadata key: this request is answered without reading its body (refusal sink).
DISCARD_MARK = "regauth.discard_body"
_INSTALLED = "_regauth_stream_isolation"
_RESET_AFTER = "_regauth_reset_after_flush"


@dataclass
class StopSending(HttpEvent):
    """Ask the client to stop sending this request's body, without error (RST_STREAM
    NO_ERROR after a complete response, RFC 9113 §8.1)."""


def _stream_error(stream: Any, cause: Exception) -> h2.exceptions.StreamClosedError:
    """Reset `stream` ourselves and turn `cause` into the StreamClosedError hyper-h2 handles
    as a stream error: it sends RST_STREAM, keeps connection flow control right, and passes
    our StreamReset event on to mitmproxy."""
    stream.state_machine.process_input(h2.stream.StreamInputs.SEND_RST_STREAM)
    error = h2.exceptions.StreamClosedError(stream.stream_id)
    error.error_code = h2.errors.ErrorCodes.PROTOCOL_ERROR
    error._events = [
        h2.events.StreamReset(
            stream_id=stream.stream_id,
            error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR,
            remote_reset=False,
        )
    ]
    error.__cause__ = cause
    return error


def _wrap_length_checks() -> None:
    track = h2.stream.H2Stream._track_content_length
    initialize = h2.stream.H2Stream._initialize_content_length

    @functools.wraps(track)
    def _track_content_length(self: Any, length: int, end_stream: bool) -> None:
        try:
            track(self, length, end_stream)
        except h2.exceptions.InvalidBodyLengthError as e:
            raise _stream_error(self, e) from e

    @functools.wraps(initialize)
    def _initialize_content_length(self: Any, headers: Any) -> None:
        try:
            initialize(self, headers)
        except h2.exceptions.ProtocolError as e:
            raise _stream_error(self, e) from e

    # The patch itself: mypy's method-assign flags every assignment to a method.
    h2.stream.H2Stream._track_content_length = _track_content_length  # type: ignore[method-assign]
    h2.stream.H2Stream._initialize_content_length = _initialize_content_length  # type: ignore[method-assign]


def _wrap_send_response() -> None:
    stream_cls = http_layer.HttpStream
    send_response = stream_cls.send_response

    @functools.wraps(send_response)
    def wrapped(self: Any, already_streamed: bool = False) -> Any:
        yield from send_response(self, already_streamed)
        flow = self.flow
        if (
            not flow.metadata.get(DISCARD_MARK)
            or flow.error is not None
            or self.client_state != self.state_stream_request_body
            or self.server_state != self.state_done
            or not flow.request.is_http2
        ):
            return
        # The refusal is complete: end the response, stop the upload to the sink, and ask
        # the client to stop sending. Nothing else on the connection is touched.
        self.client_state = self.state_done
        yield http_layer.SendHttp(
            RequestProtocolError(self.stream_id, "body discarded", ErrorCode.CANCEL),
            self.context.server,
        )
        yield from self.flow_done()
        yield http_layer.SendHttp(StopSending(self.stream_id), self.context.client)

    # The patch itself: mypy's method-assign flags every assignment to a method.
    stream_cls.send_response = wrapped  # type: ignore[method-assign]


def _reset_without_error(conn: Any, stream_id: int) -> None:
    """RST_STREAM(NO_ERROR) once everything queued for the stream, END_STREAM included, has
    gone out (mitmproxy buffers DATA the client's flow-control window cannot take yet; a
    reset sent before it would throw the response away)."""
    pending = getattr(conn, _RESET_AFTER, None)
    if conn.stream_buffers.get(stream_id):
        if pending is None:
            pending = set()
            setattr(conn, _RESET_AFTER, pending)
        pending.add(stream_id)
        return
    if pending is not None:
        pending.discard(stream_id)
    stream = conn.streams.get(stream_id)
    if stream is not None and not stream.closed:
        h2.connection.H2Connection.reset_stream(conn, stream_id, h2.errors.ErrorCodes.NO_ERROR)


def _wrap_http2_server() -> None:
    handle = Http2Server._handle_event
    window_updated = BufferedH2Connection.stream_window_updated

    @functools.wraps(handle)
    def _handle_event(self: Any, event: Any) -> Any:
        if isinstance(event, StopSending):
            _reset_without_error(self.h2_conn, event.stream_id)
            self.streams.pop(event.stream_id, None)
            data = self.h2_conn.data_to_send()
            if data:
                yield SendData(self.conn, data)
            return
        yield from handle(self, event)

    @functools.wraps(window_updated)
    def stream_window_updated(self: Any, stream_id: int) -> bool:
        sent = window_updated(self, stream_id)
        pending = getattr(self, _RESET_AFTER, None)
        if pending and stream_id in pending and not self.stream_buffers.get(stream_id):
            _reset_without_error(self, stream_id)
        return sent

    # The patch itself: mypy's method-assign flags every assignment to a method.
    Http2Server._handle_event = _handle_event  # type: ignore[method-assign]
    BufferedH2Connection.stream_window_updated = stream_window_updated  # type: ignore[method-assign]


def install() -> None:
    if getattr(h2.stream.H2Stream, _INSTALLED, False):
        return
    for owner, name in (
        (h2.stream.H2Stream, "_track_content_length"),
        (h2.stream.H2Stream, "_initialize_content_length"),
        (http_layer.HttpStream, "send_response"),
        (http_layer.HttpStream, "flow_done"),
        (Http2Server, "_handle_event"),
        (Http2Server, "is_closed"),
        (BufferedH2Connection, "stream_window_updated"),
        (BufferedH2Connection, "stream_buffers"),
        (_http2.Http2Connection, "streams"),
    ):
        if not hasattr(owner, name) and name not in getattr(owner, "__annotations__", {}):
            raise RuntimeError(
                f"{owner.__name__}.{name} is missing: regauth needs mitmproxy 12.3 and hyper-h2 4"
            )
    _wrap_length_checks()
    _wrap_send_response()
    _wrap_http2_server()
    setattr(h2.stream.H2Stream, _INSTALLED, True)


__all__ = ["DISCARD_MARK", "StopSending", "install"]
