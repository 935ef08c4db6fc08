"""What a connection's first bytes may be (regauth.mitm.first_bytes.classify)."""

from __future__ import annotations

import json

import pytest

from regauth.mitm.patches.first_bytes import ANSWER_400
from regauth.mitm.patches.first_bytes import classify
from tests.support.proxyproto import v1
from tests.support.proxyproto import v2


@pytest.mark.parametrize(
    ("data", "plain", "kind"),
    [
        (b"", False, "wait"),
        (b"\x16", False, "wait"),
        (b"\x16\x03", False, "wait"),
        (b"\x16\x03\x01", False, "tls"),
        (b"\x16\x03\x03\x02\x00", True, "tls"),
        (b"GET", False, "plain_http"),
        (b"GET / HTTP/1.1\r\n", True, "plain"),
        (b"PRI * HTTP/2.0", False, "plain_http"),
        (b"PRO", False, "proxy_header_untrusted"),
        (v1("10.0.0.1"), True, "proxy_header_untrusted"),
        (v2("10.0.0.1")[:3], False, "proxy_header_untrusted"),
        (v2("10.0.0.1"), True, "proxy_header_untrusted"),
        (b"POST /v2/token HTTP/1.1", False, "plain_http"),
    ],
)
def test_classify(data, plain, kind):
    assert classify(data, plain) == kind


def test_the_plain_http_answer_asks_for_tls_and_closes():
    head, _, body = ANSWER_400.partition(b"\r\n\r\n")
    status = b"HTTP/1.1 400 Bad Request: this port speaks TLS only, use https://\r\n"
    assert head.startswith(status)  # what clients that show only the status line print
    assert b"Connection: close" in head and b"WWW-Authenticate" not in head
    assert f"Content-Length: {len(body)}".encode() in head
    [error] = json.loads(body)["errors"]
    assert error["code"] == "UNSUPPORTED" and "TLS only" in error["message"]
