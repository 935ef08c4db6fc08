"""Registry-format JSON for the error responses mitmproxy generates itself (e.g. 502 when the
upstream is down), instead of its HTML page, so registry clients can show the message.

mitmproxy has no hook for these responses, so the two module-level functions its HTTP/1 and
HTTP/2 layers call are replaced. install() checks they exist and fails loudly otherwise (a
mitmproxy upgrade that moves them must be noticed by the test suite, not in production).
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http import _http2

from regauth.protocol.errors import JSON_HEADERS
from regauth.protocol.errors import Code
from regauth.protocol.errors import error_body

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


def _make_error_response(status_code: int, message: str = "") -> bytes:
    response = http.Response.make(
        status_code, registry_error(status_code, message), {**JSON_HEADERS, "Connection": "close"}
    )
    return assemble_response(response)


def install() -> None:
    if not callable(getattr(_http1, "make_error_response", None)) or not callable(
        getattr(_http2, "format_error", None)
    ):
        raise RuntimeError(
            "this mitmproxy version has no make_error_response/format_error to "
            "replace; regauth needs mitmproxy 12.3"
        )
    _http1.make_error_response = _make_error_response
    _http2.format_error = registry_error
