"""Request bodies must keep arriving: a slow body is cut, on its own stream.

mitmproxy times a connection out only when nothing at all happens on it (`tcp_timeout`, 10
minutes), and regauth's head and idle timeouts stop once a request's head is complete and
start again after its response; a body trickled in (one byte every 20 s) held a connection, a
registry connection and a file descriptor for as long as the client wished (issue 20: 20
token POSTs and 20 upload PATCHes were all still open after 100 s; from six addresses slow
uploads reached the descriptor limit). Like Apache's mod_reqtimeout (`body=…,MinRate=…`) and
nginx's `client_body_timeout`, regauth therefore requires progress:

- a token request's form (at most 64 KiB) must arrive whole within
  `regauth_token_body_timeout` seconds (default 10) of its head;
- every other body must bring at least `regauth_body_min_rate` bytes per second (default
  1024), measured over windows of `regauth_body_timeout` seconds (default 30), until it ends.
  A body that stops because regauth itself does not read (the registry is slow to take the
  data, so TCP flow control holds the client back) still counts what arrived: 30 KiB per
  30 s is far below any registry's write speed.

A body that falls short is cut: the flow ends with an error (its exchange record says why), a
body already streaming to the registry is cut there too (the registry's connection is closed,
never reused), and the client's HTTP/1.1 connection is closed, or its HTTP/2 stream reset
(CANCEL) with the connection's other streams untouched. Counted and logged through
`refusal_log.refusals` (reason `body_too_slow`).

Implementation: `HttpStream._handle_event` is wrapped once; a stream whose request body
follows its headers asks mitmproxy for a wakeup (`RequestWakeup`, routed back to the stream
by mitmproxy's HTTP layer) and checks its progress each time one arrives. install() checks the
targets first.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from mitmproxy.proxy import commands
from mitmproxy.proxy import events
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http import ErrorCode
from mitmproxy.proxy.layers.http import RequestData
from mitmproxy.proxy.layers.http import RequestHeaders
from mitmproxy.proxy.layers.http import RequestProtocolError
from mitmproxy.proxy.layers.http import ResponseProtocolError
from mitmproxy.utils import human

from regauth.mitm.refusal_log import refusals
from regauth.protocol.routes import TOKEN_PATH

_INSTALLED = "_regauth_body_limits"
_WATCH = "_regauth_body_watch"

DEFAULT_BODY_TIMEOUT = 30
DEFAULT_BODY_MIN_RATE = 1024
DEFAULT_TOKEN_BODY_TIMEOUT = 10


@dataclass
class BodyWatch:
    """Progress of one request body: bytes received, and at the last check."""

    started: float
    token: bool
    window: float
    min_rate: int
    received: int = 0
    checked_at: float = 0.0
    checked_bytes: int = 0
    pending: commands.RequestWakeup | None = None  # the wakeup this watch waits for

    def verdict(self, now: float) -> str | None:
        """Why the body is too slow at `now`, or None (then check again one window later)."""
        if self.token:
            if now - self.started >= self.window:
                return (
                    f"token request body incomplete after {self.window:g} s "
                    "(regauth_token_body_timeout)"
                )
            return None
        needed = self.min_rate * (now - self.checked_at)
        got = self.received - self.checked_bytes
        if got < needed:
            return (
                f"request body too slow: {got} bytes in {now - self.checked_at:.0f} s, "
                f"less than {self.min_rate} bytes/s (regauth_body_min_rate)"
            )
        self.checked_at, self.checked_bytes = now, self.received
        return None


def _option(stream: Any, name: str, default: int) -> int:
    return int(getattr(stream.context.options, name, default))


def _body_states(stream: Any) -> tuple[Any, Any]:
    return stream.state_stream_request_body, stream.state_consume_request_body


def _start(stream: Any) -> Any:
    """After a request's headers: watch its body if one follows. Yields our wakeup."""
    token = stream.flow.request.path.partition("?")[0] == TOKEN_PATH
    if token:
        window = _option(stream, "regauth_token_body_timeout", DEFAULT_TOKEN_BODY_TIMEOUT)
    else:
        window = _option(stream, "regauth_body_timeout", DEFAULT_BODY_TIMEOUT)
    if window <= 0:
        return
    now = time.monotonic()
    watch = BodyWatch(
        now,
        token,
        float(window),
        _option(stream, "regauth_body_min_rate", DEFAULT_BODY_MIN_RATE),
        checked_at=now,
    )
    setattr(stream, _WATCH, watch)
    yield from _schedule(watch)


def _schedule(watch: BodyWatch) -> Any:
    watch.pending = commands.RequestWakeup(watch.window)
    yield watch.pending


def _cut(stream: Any, reason: str) -> Any:
    peer = stream.context.client.peername
    refusals.note(
        str(peer[0]) if peer else "",
        "body_too_slow",
        f"cut a request from {human.format_address(peer)}: {reason}",
    )
    yield from stream.handle_protocol_error(
        RequestProtocolError(stream.stream_id, reason, ErrorCode.CANCEL)
    )
    # HTTP/1.1: close the connection (no status can follow a partial body); HTTP/2: reset
    # this stream only.
    yield http_layer.SendHttp(
        ResponseProtocolError(stream.stream_id, reason, ErrorCode.CANCEL), stream.context.client
    )


def _wrap() -> None:
    handle = http_layer.HttpStream._handle_event

    @functools.wraps(handle)
    def _handle_event(self: Any, event: Any) -> Any:
        watch: BodyWatch | None = getattr(self, _WATCH, None)
        if isinstance(event, events.Wakeup):
            # Only this module asks mitmproxy to wake an HttpStream (its own states expect
            # HTTP events only), so every wakeup here is ours, perhaps a stale one.
            if watch is None or event.command is not watch.pending:
                return
            watch.pending = None
            if self.client_state not in _body_states(self) or not self.flow.live:
                return  # the body is complete, or the flow already ended
            reason = watch.verdict(time.monotonic())
            if reason is None:
                yield from _schedule(watch)
            else:
                setattr(self, _WATCH, None)
                yield from _cut(self, reason)
            return
        if isinstance(event, RequestData) and watch is not None:
            watch.received += len(event.data)
        yield from handle(self, event)
        if (
            isinstance(event, RequestHeaders)
            and not event.end_stream
            and self.client_state in _body_states(self)
            and self.flow.live
        ):
            yield from _start(self)

    # The patch itself: mypy's method-assign flags every assignment to a method.
    http_layer.HttpStream._handle_event = _handle_event  # type: ignore[method-assign]


def install() -> None:
    stream = http_layer.HttpStream
    if getattr(stream, _INSTALLED, False):
        return
    for name in (
        "_handle_event",
        "handle_protocol_error",
        "state_stream_request_body",
        "state_consume_request_body",
    ):
        if not callable(getattr(stream, name, None)):
            raise RuntimeError(
                f"mitmproxy HttpStream.{name} is missing: regauth needs mitmproxy 12.3"
            )
    _wrap()
    setattr(stream, _INSTALLED, True)
