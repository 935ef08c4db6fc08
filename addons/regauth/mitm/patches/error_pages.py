"""Registry-format JSON for the error responses mitmproxy generates itself (e.g. 502 when the
upstream is down), instead of its HTML page, so registry clients can show the message.

mitmproxy has no hook for these responses, so the two module-level functions its HTTP/1 and
HTTP/2 layers call are replaced. install() checks they exist and fails loudly otherwise (a
mitmproxy upgrade that moves them must be noticed by the test suite, not in production).
"""

from __future__ import annotations

import json

from mitmproxy import http
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http import _http2

_CODES = {502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE", 413: "SIZE_INVALID",
          400: "UNSUPPORTED"}


def registry_error(status_code: int, message: str) -> bytes:
    code = _CODES.get(status_code, "UNAVAILABLE" if status_code >= 500 else "UNSUPPORTED")
    text = f"regauth: {message}" if message else "regauth: proxy error"
    return json.dumps({"errors": [{"code": code, "message": text}]}).encode()


def _make_error_response(status_code: int, message: str = "") -> bytes:
    response = http.Response.make(
        status_code, registry_error(status_code, message),
        {"Content-Type": "application/json", "Connection": "close",
         "Docker-Distribution-Api-Version": "registry/2.0"})
    return assemble_response(response)


def install() -> None:
    if not callable(getattr(_http1, "make_error_response", None)) or \
            not callable(getattr(_http2, "format_error", None)):
        raise RuntimeError("this mitmproxy version has no make_error_response/format_error to "
                           "replace; regauth needs mitmproxy 12.3")
    _http1.make_error_response = _make_error_response
    _http2.format_error = registry_error
