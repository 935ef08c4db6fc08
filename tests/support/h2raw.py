"""Raw HTTP/2 over TLS for protocol-level tests: exact frames, no client-side normalization.

A client built on the `h2` library (the one mitmproxy itself uses) with outbound validation and
normalization switched off, so header names, pseudo-headers, `content-length` values and
END_STREAM placement are sent exactly as a test states them; `send_frame` writes frames that h2
refuses to build (DATA after END_STREAM, for instance) with `hyperframe`, bypassing h2's state
machine. Replies are read until the stream ends, is reset, or the connection goes away, and say
which of those happened (RFC 9113 §6.4 RST_STREAM, §6.8 GOAWAY).
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hyperframe.frame import DataFrame
from hyperframe.frame import Frame


@dataclass
class H2Reply:
    """What one stream got back.

    `status` is None when no response HEADERS arrived; `reset` is the RST_STREAM error code
    name (e.g. "PROTOCOL_ERROR") when the server reset the stream; `goaway` the GOAWAY error
    code name when the server ended the connection; `closed` is True when the connection closed
    (or the read timed out, `timed_out`) before the stream ended.
    """

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A bytearray: appending each DATA frame to bytes copied the whole body every time (a
    # 32 MiB download took minutes of CPU on a busy machine).
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: str | None = None
    goaway: str | None = None
    closed: bool = False
    timed_out: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def json(self) -> dict:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        return [e.get("code") for e in self.json().get("errors", [])]

    @property
    def outcome(self) -> str:
        """One word for reports: the status, `RST_STREAM(CODE)`, `GOAWAY(CODE)`, `closed`."""
        if self.status is not None and self.ended:
            return str(self.status)
        if self.reset is not None:
            return f"RST_STREAM({self.reset})"
        if self.goaway is not None:
            return f"GOAWAY({self.goaway})"
        return "timeout" if self.timed_out else "closed"


def _code_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


class H2Client:
    """One HTTP/2 connection over TLS to regauth (`localhost:port`, trusting `ca`).

    Use as a context manager. `request()` sends one complete request and reads its reply; the
    lower-level `send_headers`, `send_data`, `send_frame` and `reply` compose anything else.
    """

    def __init__(self, port: int, ca: Path, timeout: float = 15.0) -> None:
        self.port = port
        self.authority = f"localhost:{port}"
        self.timeout = timeout
        context = ssl.create_default_context(cafile=str(ca))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise AssertionError(
                f"regauth did not negotiate h2: {self.sock.selected_alpn_protocol()!r}"
            )
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.replies: dict[int, H2Reply] = {}
        self.goaway: str | None = None
        self.closed = False
        self.send_failed = False
        self._flush()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what h2 has queued without ever blocking on a peer that is itself waiting for
        us to read (both sides' TCP buffers full): while the socket cannot take more, what the
        server sends is read and handled (real clients read and write concurrently)."""
        if self.send_failed:
            return
        out = bytearray(self.conn.data_to_send())
        if not out:
            return
        self.sock.setblocking(False)
        try:
            while out:
                try:
                    sent = self.sock.send(out)
                    del out[:sent]
                except (ssl.SSLWantWriteError, BlockingIOError, ssl.SSLWantReadError):
                    self._read_available()
                    select.select([self.sock], [self.sock], [], 0.2)
                except OSError:
                    self.send_failed = True  # what the server sent before closing is still read
                    return
                out += self.conn.data_to_send()
        finally:
            self.sock.settimeout(self.timeout)

    def _read_available(self) -> None:
        """Handle whatever the server has sent, without waiting (socket non-blocking)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                return
            for event in events:
                self._handle(event)

    def new_stream(self) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.replies[stream_id] = H2Reply()
        return stream_id

    def send_headers(
        self,
        stream_id: int,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        end_stream: bool = False,
        authority: str | None = None,
        scheme: str = "https",
        flush: bool = True,
    ) -> None:
        """HEADERS with the pseudo-headers first, then `headers` exactly as given. With
        `flush=False` the frame goes out with whatever is sent next (one TLS write)."""
        fields = [
            (":method", method),
            (":scheme", scheme),
            (":authority", authority or self.authority),
            (":path", path),
        ]
        self.conn.send_headers(stream_id, fields + list(headers or []), end_stream=end_stream)
        if flush:
            self._flush()

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """DATA frames within the peer's frame size and flow-control windows (waits for
        WINDOW_UPDATE while reading what the server sends meanwhile)."""
        view = memoryview(data)
        while True:
            if (
                self.closed
                or self.send_failed
                or self.goaway is not None
                or self.replies[stream_id].reset
            ):
                return
            if self.sock.pending() or select.select([self.sock], [], [], 0)[0]:
                # Read what the server said meanwhile (a GOAWAY must be seen before the
                # connection is reset by data it no longer reads).
                self._receive_once(deadline=time.monotonic())
                continue
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0 and view:
                self._receive_once(deadline=time.monotonic() + self.timeout)
                continue
            chunk, view = view[:window], view[window:]
            last = not view
            self.conn.send_data(stream_id, bytes(chunk), end_stream=end_stream and last)
            self._flush()
            if last:
                return

    def end_stream(self, stream_id: int) -> None:
        self.conn.end_stream(stream_id)
        self._flush()

    def send_frame(self, frame: Frame) -> None:
        """A frame written as it is, outside h2's state machine (e.g. DATA after END_STREAM),
        in the same TLS write as anything h2 still has to send."""
        try:
            self.sock.sendall(self.conn.data_to_send() + frame.serialize())
        except OSError:
            self.send_failed = True

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        self.conn.reset_stream(stream_id, code)
        self._flush()

    # -- receiving -------------------------------------------------------------------------

    def _receive_once(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except (ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return
        for event in events:
            self._handle(event)
        self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            reply = self.replies.setdefault(event.stream_id, H2Reply())
            for name, value in event.headers:
                if name == ":status":
                    reply.status = int(value)
                else:
                    reply.headers.append((name, value))
        elif isinstance(event, h2.events.DataReceived):
            reply = self.replies.setdefault(event.stream_id, H2Reply())
            reply.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.replies.setdefault(event.stream_id, H2Reply()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.replies.setdefault(event.stream_id, H2Reply()).reset = _code_name(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = _code_name(event.error_code)

    def reply(self, stream_id: int, timeout: float | None = None) -> H2Reply:
        """Read until `stream_id` ends or is reset, the connection goes away, or `timeout`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reply = self.replies.setdefault(stream_id, H2Reply())
        while not (reply.ended or reply.reset or self.closed):
            if self.goaway is not None:
                # GOAWAY names the last stream it processes; read on briefly for its end.
                deadline = min(deadline, time.monotonic() + 1.0)
            if time.monotonic() >= deadline:
                reply.timed_out = not (self.goaway or self.closed)
                break
            self._receive_once(deadline)
        if not (reply.ended or reply.reset):
            reply.goaway = self.goaway
            reply.closed = self.closed or self.goaway is not None
        return reply

    # -- one request -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end_stream_on_headers: bool | None = None,
        timeout: float | None = None,
    ) -> H2Reply:
        """Send one request and read its reply. Without `body` the HEADERS frame ends the
        stream unless `end_stream_on_headers` is False (then an empty DATA frame with
        END_STREAM follows); with `body` the DATA frames carry END_STREAM, and HEADERS ends
        it too only if `end_stream_on_headers` is True (a protocol violation then follows)."""
        stream_id = self.new_stream()
        if end_stream_on_headers is None:
            end_stream_on_headers = body is None
        self.send_headers(stream_id, method, path, headers, end_stream=end_stream_on_headers)
        if not end_stream_on_headers:
            self.send_data(stream_id, body or b"", end_stream=True)
        elif body:
            frame = DataFrame(stream_id, data=body, flags=["END_STREAM"])
            self.send_frame(frame)
        return self.reply(stream_id, timeout)


def request(
    port: int,
    ca: Path,
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    end_stream_on_headers: bool | None = None,
    timeout: float = 15.0,
) -> H2Reply:
    """One request on a fresh HTTP/2 connection, which is closed afterwards."""
    with H2Client(port, ca, timeout) as client:
        return client.request(method, path, headers, body, end_stream_on_headers, timeout)
