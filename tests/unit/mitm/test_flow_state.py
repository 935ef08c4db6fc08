"""regauth.mitm.flow_state: answers regauth makes itself."""

from __future__ import annotations

from mitmproxy.test import tutils

from regauth.mitm.flow_state import local_response


def test_a_head_gets_no_body_but_the_gets_content_length():
    body = b'{"errors":[{"code":"UNAUTHORIZED"}]}'
    headers = {"Content-Type": "application/json"}
    get = local_response(tutils.treq(method=b"GET"), 401, body, headers)
    head = local_response(tutils.treq(method=b"HEAD"), 401, body, headers)
    assert get.raw_content == body and get.headers["Content-Length"] == str(len(body))
    assert head.raw_content == b""
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["Content-Type"] == "application/json"


def test_only_the_exact_method_head_is_a_head():
    body = b"x" * 10
    other = local_response(tutils.treq(method=b"hEaD"), 405, body, {})
    assert other.raw_content == body
