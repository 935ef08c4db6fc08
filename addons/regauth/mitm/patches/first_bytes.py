"""What a new connection's first bytes may be: TLS, and only TLS.

mitmproxy's reverse mode decides between TLS and plain HTTP from the first bytes a client
sends (`NextLayer._setup_reverse_proxy`), and three things went wrong with that for regauth:

1. **Segmentation mattered.** With fewer than 3 bytes (a ClientHello whose first 1-2 bytes
   arrive alone) `starts_like_tls_record` is false, the connection became plain HTTP and stalled
   until the head timeout. The decision now waits for 3 bytes.
2. **Plain HTTP was served on the TLS port**, directly and through a TCP balancer: a client set
   up for an "insecure registry" then sent its passwords and tokens in clear text and got
   challenges and tokens back. A plain-HTTP connection now gets one fixed `400` answer that asks
   for TLS (registry-format JSON, `Connection: close`) and is closed: never a challenge, a token
   or a forwarded request. `regauth_plain_http` (`regauth serve --allow-plain-http`, an option
   of `mitm/listener.py`) serves plain HTTP as before, for test setups only.
3. **A PROXY protocol header from an untrusted peer** would be read as a plain-HTTP request
   line. It is refused (the connection closed without an answer): only a load balancer named
   in `regauth_proxy_protocol` may send one, and its header is read and removed before this
   decision (`proxy_header`).

Refusals are counted and logged through `refusal_log.refusals` (reasons `plain_http`,
`proxy_header_untrusted`). install() wraps `NextLayer._next_layer` once and checks its targets.
"""

from __future__ import annotations

import functools
from typing import Any

from mitmproxy import ctx
from mitmproxy.addons import next_layer
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands
from mitmproxy.proxy import events
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import modes
from mitmproxy.utils import human

from regauth.mitm.refusal_log import refusals
from regauth.protocol.errors import JSON_HEADERS
from regauth.protocol.errors import Code
from regauth.protocol.errors import error_body
from regauth.protocol.proxy_protocol import ProxyProtocolError
from regauth.protocol.proxy_protocol import parse

_INSTALLED = "_regauth_first_bytes"
TLS_ONLY = (
    "regauth: this port speaks TLS only: use https:// (a registry client set up for an "
    "insecure or plain-http registry would send passwords and tokens in clear text)"
)


def _answer_400() -> bytes:
    body = error_body(Code.UNSUPPORTED, TLS_ONLY)
    # The reason phrase says it too: clients that fail on a HEAD (containerd resolves with
    # one) have no body to show, and print the status line as they got it.
    head = [
        "HTTP/1.1 400 Bad Request: this port speaks TLS only, use https://",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in JSON_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


ANSWER_400 = _answer_400()


class Refuse(layer.Layer):
    """A connection regauth will not serve: optionally one fixed answer, then closed."""

    def __init__(self, context: Any, answer: bytes = b"") -> None:
        super().__init__(context)
        self.answer = answer
        self.done = False

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self.done:
            return
        self.done = True
        if self.answer:
            yield commands.SendData(self.context.client, self.answer)
        yield commands.CloseConnection(self.context.client)


def classify(data: bytes, plain_http: bool) -> str:
    """`wait`, `tls`, `plain` (served), `plain_http` or `proxy_header_untrusted` (refused),
    for the first bytes of a reverse-proxy connection (after any trusted PROXY header)."""
    if len(data) < 3:
        return "wait"  # a TLS record header needs 3 bytes to be told from anything else
    if starts_like_tls_record(data):
        return "tls"
    try:
        parse(data)
    except ProxyProtocolError:
        pass
    else:
        return "proxy_header_untrusted"  # a header, or the start of one
    return "plain" if plain_http else "plain_http"


def _wrap() -> None:
    decide = next_layer.NextLayer._next_layer

    @functools.wraps(decide)
    def _next_layer(self: Any, context: Any, data_client: bytes, data_server: bytes) -> Any:
        if (
            context.client.transport_protocol != "tcp"
            or len(context.layers) != 1
            or not isinstance(context.layers[0], modes.ReverseProxy)
        ):
            return decide(self, context, data_client, data_server)
        kind = classify(data_client, bool(getattr(ctx.options, "regauth_plain_http", False)))
        if kind == "wait":
            raise next_layer.NeedsMoreData
        if kind in ("tls", "plain"):
            return decide(self, context, data_client, data_server)
        peer = context.client.peername
        address = str(peer[0]) if peer else ""
        if kind == "plain_http":
            refusals.note(
                address,
                kind,
                f"refused plain HTTP from {human.format_address(peer)}"
                " (this port speaks TLS only; regauth_plain_http)",
            )
            return Refuse(context, ANSWER_400)
        refusals.note(
            address,
            kind,
            f"refused a PROXY protocol header from "
            f"{human.format_address(peer)}: not a trusted load balancer "
            "(regauth_proxy_protocol)",
        )
        return Refuse(context)

    # The patch itself: mypy's method-assign flags every assignment to a method.
    next_layer.NextLayer._next_layer = _next_layer  # type: ignore[method-assign]


def install() -> None:
    if getattr(next_layer.NextLayer, _INSTALLED, False):
        return
    if not callable(getattr(next_layer.NextLayer, "_next_layer", None)) or not hasattr(
        next_layer, "NeedsMoreData"
    ):
        raise RuntimeError(
            "mitmproxy NextLayer._next_layer is missing: regauth needs mitmproxy 12.3"
        )
    _wrap()
    setattr(next_layer.NextLayer, _INSTALLED, True)
