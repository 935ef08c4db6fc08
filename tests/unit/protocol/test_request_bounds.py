"""Request-head bounds (regauth.protocol.request_bounds): one contract for HTTP/1.1 bytes and HTTP/2
fields, judged incrementally and in linear time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regauth.protocol.request_bounds import MAX_FIELD_LINE
from regauth.protocol.request_bounds import MAX_FIELDS
from regauth.protocol.request_bounds import MAX_HEAD_BYTES
from regauth.protocol.request_bounds import MAX_REQUEST_LINE
from regauth.protocol.request_bounds import Http1HeadScanner
from regauth.protocol.request_bounds import check_fields

OK_HEAD = (
    b"PUT /v2/a/blobs/uploads/x?digest=sha256:00 HTTP/1.1\r\nHost: localhost\r\n"
    b"Authorization: Bearer " + b"a" * 8000 + b"\r\nContent-Length: 4\r\n\r\nbody"
)


def _feed(data: bytes, step: int | None = None):
    scanner = Http1HeadScanner()
    buffer = bytearray()
    for at in range(0, len(data), step or len(data) or 1):
        buffer += data[at : at + (step or len(data))]
        refusal = scanner.feed(buffer)
        if refusal is not None:
            return refusal, len(buffer)
    return None, len(buffer)


@pytest.mark.parametrize("step", [None, 1, 7, 4096])
def test_a_normal_head_passes_however_it_arrives(step):
    assert _feed(OK_HEAD, step) == (None, len(OK_HEAD))


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /" + b"a" * (MAX_REQUEST_LINE + 10), 414),  # no end of line yet
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_FIELD_LINE + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_FIELD_LINE + 10), 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_FIELDS + 1) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_FIELDS + 1), 431),  # before its end
        (b"GET / HTTP/1.1\r\n" + (b"X: " + b"a" * 1000 + b"\n") * 70, 431),  # LF only, 70 KB
        (b"\r\n" * 3 + b"GET / HTTP/1.1\r\n\r\n", 400),
    ],
)
@pytest.mark.parametrize("step", [None, 1, 1000])
def test_oversized_heads_are_refused_as_soon_as_they_cannot_fit(data, status, step):
    refusal, received = _feed(data, step)
    assert refusal is not None and refusal.status == status
    assert received <= MAX_HEAD_BYTES + MAX_FIELD_LINE + 8


def test_a_head_of_exactly_the_bounds_passes():
    line = b"GET /" + b"a" * (MAX_REQUEST_LINE - 14) + b" HTTP/1.1"
    assert len(line) == MAX_REQUEST_LINE
    fields = [b"X-%03d: " % i + b"b" * 500 for i in range(MAX_FIELDS)]
    head = b"\r\n".join([line, *fields]) + b"\r\n\r\n"
    assert len(head) < MAX_HEAD_BYTES
    assert _feed(head, 1)[0] is None
    assert _feed(b"\r\n" + head)[0] is None  # one stray CRLF before a request is fine


def test_body_bytes_after_a_complete_head_are_never_judged():
    scanner = Http1HeadScanner()
    buffer = bytearray(b"PATCH /v2/a/blobs/uploads/x HTTP/1.1\r\nContent-Length: 9\r\n\r\n")
    assert scanner.feed(buffer) is None and scanner.complete
    buffer += b"\n" * (MAX_HEAD_BYTES * 2)
    assert scanner.feed(buffer) is None


def test_a_trickled_head_costs_linear_time():
    scanner = Http1HeadScanner()
    data = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 90 + b"Y: " + b"a" * MAX_FIELD_LINE
    buffer = bytearray()
    started = time.process_time()
    for byte in data:
        buffer.append(byte)
        refusal = scanner.feed(buffer)
        if refusal is not None:
            break
    # 17 KB fed one byte at a time: a quadratic rescan would take seconds here.
    assert time.process_time() - started < 1.0
    assert refusal is not None and refusal.status == 431


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=300))
def test_any_bytes_any_split_same_verdict_and_never_an_exception(data, step):
    whole, _ = _feed(data)
    split, _ = _feed(data, step)
    assert (whole is None) == (split is None)
    if whole is not None and split is not None:
        assert whole.status == split.status


def test_decoded_fields_get_the_same_bounds():
    ok = [(b"authorization", b"Bearer " + b"a" * 8000), (b"user-agent", b"containerd")]
    assert check_fields("/v2/", "GET", ok) is None
    assert check_fields("/v2/" + "a" * MAX_REQUEST_LINE, "GET", ok).status == 414
    assert check_fields("/v2/", "GET", [(b"x", b"a" * MAX_FIELD_LINE)]).status == 431
    assert check_fields("/v2/", "GET", [(b"x", b"y")] * (MAX_FIELDS + 1)).status == 431
    many = [(b"x-%d" % i, b"a" * 1000) for i in range(70)]
    assert check_fields("/v2/", "GET", many).status == 431
