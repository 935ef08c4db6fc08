"""mitmproxy's own error answers in registry format; an unreachable upstream is `503
UNAVAILABLE` with `Retry-After` over HTTP/1.1 and HTTP/2 (issue 26)."""

from __future__ import annotations

import json

import h2.config
import h2.connection
import h2.events
from mitmproxy import version
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http import _http2
from mitmproxy.proxy.layers.http._events import ErrorCode
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection

from regauth.mitm.patches import error_pages


def setup_module() -> None:
    error_pages.install()
    error_pages.install()  # idempotent


def _parse_h1(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_failed_upstream_connection_is_503_and_nothing_else_moves():
    assert ErrorCode.CONNECT_FAILED.http_status_code() == 503
    assert ErrorCode.GENERIC_SERVER_ERROR.http_status_code() == 502
    assert ErrorCode.RESPONSE_TOO_LARGE.http_status_code() == 502
    assert ErrorCode.REQUEST_TOO_LARGE.http_status_code() == 413
    assert ErrorCode.GENERIC_CLIENT_ERROR.http_status_code() == 400
    assert ErrorCode.KILL.http_status_code() is None


def test_http1_503_has_retry_after_and_distribution_json():
    status, headers, body = _parse_h1(_http1.make_error_response(503, "Connect call failed"))
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body["errors"][0]["code"] == "UNAVAILABLE"
    assert "Connect call failed" in body["errors"][0]["message"]
    status, headers, body = _parse_h1(_http1.make_error_response(502, "peer closed"))
    assert status == 502 and "retry-after" not in headers
    assert body["errors"][0]["code"] == "UNAVAILABLE"
    assert json.loads(_http2.format_error(400, "bad"))["errors"][0]["code"] == "UNSUPPORTED"


def _h2_answer(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Send `headers` as the response of an HTTP/2 server connection (mitmproxy's class,
    patched) to a request, and return what the client receives."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = BufferedH2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client.initiate_connection()
    client.send_headers(
        1,
        [(":method", "GET"), (":path", "/v2/"), (":scheme", "https"), (":authority", "x")],
        end_stream=True,
    )
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    server.send_headers(1, headers, end_stream=True)
    events = client.receive_data(server.data_to_send())
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    return dict(response.headers)


def test_http2_error_headers_become_json_with_retry_after():
    mitmproxy_error = [
        (b":status", b"503"),
        (b"server", version.MITMPROXY.encode()),
        (b"content-type", b"text/html"),
    ]
    got = _h2_answer(mitmproxy_error)
    assert got[b":status"] == b"503"
    assert got[b"retry-after"] == b"1"
    assert got[b"content-type"] == b"application/json"
    assert b"server" not in got
    bad_gateway = _h2_answer([(b":status", b"502"), *mitmproxy_error[1:]])
    assert bad_gateway[b"content-type"] == b"application/json"
    assert b"retry-after" not in bad_gateway


def test_other_http2_headers_are_left_alone():
    ordinary = [(b":status", b"503"), (b"content-type", b"text/html")]
    assert error_pages._h2_error_headers(ordinary) is ordinary
    upstream = [
        (b":status", b"503"),
        (b"server", b"nginx"),
        (b"content-type", b"text/html"),
    ]
    assert _h2_answer(upstream)[b"server"] == b"nginx"
