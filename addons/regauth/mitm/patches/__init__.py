"""Every private object of mitmproxy, mitmweb, hyper-h2 and h11 that regauth replaces.

mitmproxy's addon hooks cannot bound a request head, count HTTP/2 resets, time a request body,
read a PROXY protocol header, refuse plain HTTP on a TLS port, isolate HTTP/2 streams, give its
own error pages registry-format bodies, or make mitmweb read-only; so these modules wrap the
objects that do. Each `install()` checks that every target exists before it patches anything
and raises RuntimeError naming what is missing (an upgrade must fail the test suite, not
proxy unchecked), and is idempotent. `install_all()` installs all of them but `web_window`
(mitmweb only: the launcher installs it before the web application is built).

Written for mitmproxy 12.3 (`mitmproxy>=12.3,<13` in pyproject.toml), hyper-h2 4.x and h11 0.16;
re-read each target's source when upgrading any of them.

What each module replaces (private unless noted), and why:

- `error_pages`: `proxy.layers.http._http1.make_error_response`, `_http2.format_error`,
  `_events.ErrorCode.http_status_code`, `_http_h2.BufferedH2Connection.send_headers` and
  `send_data`, `_http1.Http1Server.send` (protocol errors only), `_http2.Http2Server
  .handle_h2_event` (notes HEAD streams). mitmproxy's own error answers
  (502, 400) become registry-format JSON; an upstream that cannot be reached is `503
  UNAVAILABLE` with `Retry-After` (was 502); to a HEAD, without a body but with its length.
- `framing`: `_http1.make_body_reader`; `layers.http.HttpStream
  .state_wait_for_request_headers`. HTTP/1 chunked trailers are refused (mitmproxy raises
  NotImplementedError on them); an HTTP/2 request whose HEADERS end the stream is marked
  bodiless before regauth decides.
- `stream_isolation`: `h2.stream.H2Stream._track_content_length` and
  `_initialize_content_length`; `HttpStream.send_response`; `_http2.Http2Server._handle_event`;
  `_http_h2.BufferedH2Connection.stream_window_updated`. A malformed or refused HTTP/2 stream
  resets itself only (RFC 9113 §8.1), never the connection.
- `head_limits`: `_http1.Http1Server.read_headers` (reading h11's `ReceiveBuffer._data`);
  `h2.frame_buffer.FrameBuffer._update_header_buffer`. Request heads are bounded before they
  are parsed (mitmproxy: "FIXME: protect against header size DoS").
- `h2_limits`: `_http2.Http2Server.__init__`, `handle_h2_event`, `_handle_event`, and each
  instance's `h2_conn.receive_data`. HTTP/2 rapid reset: streams reset within one read are
  never processed, offending connections are closed.
- `body_limits`: `HttpStream._handle_event`. Request bodies must keep arriving (wakeups are
  routed back to the stream by mitmproxy's HTTP layer).
- `proxy_header`: `proxy.mode_servers.ServerInstance.handle_stream`. The PROXY protocol from
  trusted balancers, read before TLS (where mitmproxy PR #8377 reads it).
- `first_bytes`: `addons.next_layer.NextLayer._next_layer`. TLS is decided on 3 bytes; plain
  HTTP and untrusted PROXY headers are refused.
- `web_window`: entries of `tools.web.app.handlers`, `app.flow_to_json` and
  `flowfilter.parse` (public). mitmweb is read-only and secret-free: flows are shown, exported
  and filtered as scrubbed copies; its page (`IndexHandler`) gets a style that gives the flow
  list's comment column (regauth's auth story) the room mitmweb gives the path.
"""

from __future__ import annotations

from regauth.mitm.patches import body_limits
from regauth.mitm.patches import error_pages
from regauth.mitm.patches import first_bytes
from regauth.mitm.patches import framing
from regauth.mitm.patches import h2_limits
from regauth.mitm.patches import head_limits
from regauth.mitm.patches import proxy_header
from regauth.mitm.patches import stream_isolation


def install_all() -> None:
    """Install every patch but `web_window` (see the module docstring); idempotent."""
    error_pages.install()
    framing.install()
    stream_isolation.install()
    head_limits.install()
    h2_limits.install()
    body_limits.install()
    proxy_header.install()
    first_bytes.install()
