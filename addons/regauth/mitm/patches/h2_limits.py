"""HTTP/2 rapid reset (CVE-2023-44487): a client that opens and resets streams is closed.

A client can open a stream with HEADERS and cancel it with RST_STREAM at once, many thousand
times a second, on one connection: the stream never counts against
SETTINGS_MAX_CONCURRENT_STREAMS, but every one used to cost a flow, regauth's decision and an
exchange record, queued behind each other (issue 20: 497,050 resets in 30 s from three
connections, 320 MiB, 20.7 s of CPU after the attacker had left). Two wrappers, installed once
on mitmproxy's HTTP/2 server side only (the upstream side is regauth's own HTTP/1.1):

1. No work for a stream reset before it was looked at: the events hyper-h2 returns for one
   read are filtered, and a stream opened *and* reset within them is dropped whole (its flow
   is never created; connection flow control is still acknowledged).
2. Offenders are closed the way nginx, Go and h2o do it: a connection on which the client reset
   more than `MAX_PREMATURE_RESETS` streams before their response was complete, and more than
   half of all the streams it opened, gets GOAWAY(ENHANCE_YOUR_CALM) and is closed. Clients
   that cancel now and then (BuildKit aborts a resolve, containerd a layer it already has)
   stay far below both.

Refusals are counted and logged through `refusal_log.refusals` (reason `h2_rapid_reset`;
`h2_streams_cancelled` counts streams dropped by 1). install() checks its targets first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import h2.connection
import h2.errors
import h2.events
from mitmproxy.proxy import events
from mitmproxy.proxy.layers.http._http2 import Http2Server
from mitmproxy.utils import human

from regauth.mitm.refusal_log import refusals

MAX_PREMATURE_RESETS = 100
_INSTALLED = "_regauth_h2_limits"
_COUNTS = "_regauth_reset_counts"


@dataclass
class ResetCounts:
    """Per client connection: streams the client opened, and reset before their end."""

    opened: int = 0
    reset: int = 0

    @property
    def offending(self) -> bool:
        return self.reset > MAX_PREMATURE_RESETS and self.reset * 2 > self.opened


def _counts(server: Any) -> ResetCounts:
    counts = getattr(server, _COUNTS, None)
    if counts is None:
        counts = ResetCounts()
        setattr(server, _COUNTS, counts)
    return counts


def drop_cancelled(received: list[Any], counts: ResetCounts) -> tuple[list[Any], list[Any]]:
    """Split hyper-h2 events of one read into (kept, dropped): every event of a stream that
    was opened (RequestReceived) and reset by the client (StreamReset) within the same read
    is dropped. Counts opened and reset streams."""
    opened = {e.stream_id for e in received if isinstance(e, h2.events.RequestReceived)}
    counts.opened += len(opened)
    reset = {
        e.stream_id for e in received if isinstance(e, h2.events.StreamReset) and e.remote_reset
    }
    cancelled = opened & reset
    if not cancelled:
        return received, []
    counts.reset += len(cancelled)
    kept = [e for e in received if getattr(e, "stream_id", None) not in cancelled]
    dropped = [e for e in received if getattr(e, "stream_id", None) in cancelled]
    return kept, dropped


def _wrap_init() -> None:
    init = Http2Server.__init__

    @functools.wraps(init)
    def __init__(self: Any, context: Any) -> None:
        init(self, context)
        conn = self.h2_conn
        receive = conn.receive_data
        counts = _counts(self)

        def receive_data(data: Any) -> list[Any]:
            kept, dropped = drop_cancelled(receive(data), counts)
            for event in dropped:
                if isinstance(event, h2.events.DataReceived):
                    # The connection window must still get these bytes back.
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if dropped:
                refusals.counts["h2_streams_cancelled"] += len({e.stream_id for e in dropped})
            return kept

        conn.receive_data = receive_data

    # The patch itself: mypy's method-assign flags every assignment to a method.
    Http2Server.__init__ = __init__  # type: ignore[method-assign]


def _wrap_events() -> None:
    handle_h2_event = Http2Server.handle_h2_event
    handle = Http2Server._handle_event

    @functools.wraps(handle_h2_event)
    def wrapped_h2_event(self: Any, event: Any) -> Any:
        if (
            isinstance(event, h2.events.StreamReset)
            and event.remote_reset
            and event.stream_id in self.streams
        ):
            _counts(self).reset += 1
        return (yield from handle_h2_event(self, event))

    @functools.wraps(handle)
    def wrapped_handle(self: Any, event: Any) -> Any:
        yield from handle(self, event)
        if not isinstance(event, events.DataReceived) or not _counts(self).offending:
            return
        if self.h2_conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
            return
        counts = _counts(self)
        peer = self.conn.peername
        refusals.note(
            str(peer[0]) if peer else "",
            "h2_rapid_reset",
            f"closed HTTP/2 connection from {human.format_address(peer)}: the client "
            f"reset {counts.reset} of its {counts.opened} streams before their end "
            "(GOAWAY ENHANCE_YOUR_CALM)",
        )
        yield from self.protocol_error(
            "too many streams reset by the client", h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        )

    # The patch itself: mypy's method-assign flags every assignment to a method.
    Http2Server.handle_h2_event = wrapped_h2_event  # type: ignore[method-assign]
    Http2Server._handle_event = wrapped_handle  # type: ignore[method-assign]


def install() -> None:
    if getattr(Http2Server, _INSTALLED, False):
        return
    for name in ("handle_h2_event", "_handle_event", "protocol_error", "__init__"):
        if not callable(getattr(Http2Server, name, None)):
            raise RuntimeError(
                f"mitmproxy Http2Server.{name} is missing: regauth needs mitmproxy 12.3"
            )
    if not callable(getattr(h2.connection.H2Connection, "receive_data", None)):
        raise RuntimeError(
            "hyper-h2 H2Connection.receive_data is missing: regauth needs hyper-h2 4"
        )
    _wrap_init()
    _wrap_events()
    setattr(Http2Server, _INSTALLED, True)
