"""HTTP/2 stream isolation: on one connection, refusals and malformed requests end their own
stream only, and every authorized transfer completes byte for byte (issue 13, RFC 9113 §8.1).

containerd and BuildKit multiplex pushes and pulls over one connection; before, refusing a
large upload (or a client ending an upload early) cut every other transfer on it.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.support import httpclient
from tests.support.h2raw import H2Client
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE

MIB = 1024 * 1024


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def seeded(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:cache/mux:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    blob = os.urandom(32 * MIB)
    auth = {"Authorization": f"Bearer {token}"}
    start = httpclient.request(proxy.port, proxy.ca, "POST", "/v2/cache/mux/blobs/uploads/", auth)
    location = start.header("Location")
    put = httpclient.request(
        proxy.port,
        proxy.ca,
        "PUT",
        f"{location}&digest={_digest(blob)}",
        {**auth, "Content-Type": "application/octet-stream"},
        blob,
    )
    assert put.status == 201, put.body
    return proxy, token, blob


def _upload_target(proxy, token: str) -> str:
    reply = httpclient.request(
        proxy.port,
        proxy.ca,
        "POST",
        "/v2/cache/mux/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
    )
    assert reply.status == 202, reply.body
    return reply.header("Location")


def test_refused_and_malformed_uploads_leave_concurrent_transfers_whole(seeded):
    proxy, token, blob = seeded
    bearer = [("authorization", f"Bearer {token}")]
    pushed = os.urandom(4 * MIB)
    early = _upload_target(proxy, token)
    target = _upload_target(proxy, token)
    with H2Client(proxy.port, proxy.ca, timeout=60) as client:
        download = client.new_stream()
        client.send_headers(
            download, "GET", f"/v2/cache/mux/blobs/{_digest(blob)}", bearer, end_stream=True
        )
        small = client.new_stream()
        client.send_headers(small, "GET", "/v2/", bearer, end_stream=True)
        # Refused: no token, 8 MiB and 1 KiB bodies.
        big_refused = client.new_stream()
        client.send_headers(
            big_refused,
            "PUT",
            "/v2/cache/mux/blobs/uploads/x?digest=" + _digest(b"x"),
            [("content-length", str(8 * MIB))],
        )
        small_refused = client.new_stream()
        client.send_headers(
            small_refused,
            "PUT",
            "/v2/cache/mux/blobs/uploads/y?digest=" + _digest(b"y"),
            [("content-length", "1024")],
        )
        # Authorized: a 4 MiB upload in one PUT (distribution 2.8 ignores a POST's body).
        upload = client.new_stream()
        client.send_headers(
            upload,
            "PUT",
            f"{target}&digest={_digest(pushed)}",
            bearer
            + [("content-length", str(len(pushed))), ("content-type", "application/octet-stream")],
        )
        # Malformed: declares 4 MiB, ends its stream after 1 MiB.
        short = client.new_stream()
        client.send_headers(
            short,
            "PATCH",
            early,
            bearer
            + [("content-length", str(4 * MIB)), ("content-type", "application/octet-stream")],
        )
        bodies = {
            big_refused: os.urandom(8 * MIB),
            small_refused: b"z" * 1024,
            upload: pushed,
            short: os.urandom(MIB),
        }
        offsets = dict.fromkeys(bodies, 0)
        step = 256 * 1024
        while any(offsets[s] < len(b) for s, b in bodies.items()):
            for stream, body in bodies.items():
                at = offsets[stream]
                if at >= len(body):
                    continue
                reply = client.replies[stream]
                if reply.reset or reply.ended or client.goaway:
                    offsets[stream] = len(body)  # the server asked it to stop
                    continue
                chunk = body[at : at + step]
                offsets[stream] = at + len(chunk)
                client.send_data(stream, chunk, end_stream=offsets[stream] == len(body))
        replies = {
            name: client.reply(stream)
            for name, stream in (
                ("download", download),
                ("small", small),
                ("big_refused", big_refused),
                ("small_refused", small_refused),
                ("upload", upload),
                ("short", short),
            )
        }
        assert client.goaway is None and not client.closed
    got = replies["download"]
    assert got.status == 200 and got.ended and got.body == blob, (got.outcome, len(got.body))
    assert replies["small"].status == 200 and replies["small"].ended
    assert replies["upload"].status == 201, replies["upload"].outcome
    for name in ("big_refused", "small_refused"):
        reply = replies[name]
        assert reply.status == 401, reply.outcome
        assert reply.body.startswith(b'{"errors"'), (name, reply.outcome, reply.body[:200])
        assert reply.error_codes() == ["UNAUTHORIZED"]
    assert replies["short"].reset == "PROTOCOL_ERROR", replies["short"].outcome
    # The upload really landed, byte for byte.
    fetched = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        f"/v2/cache/mux/blobs/{_digest(pushed)}",
        {"Authorization": f"Bearer {token}"},
    )
    assert fetched.status == 200 and fetched.body == pushed
    # Each record carries its own outcome.
    records = proxy.records()
    by_path = {r["path"].split("?")[0]: r for r in records}
    download_record = by_path[f"/v2/cache/mux/blobs/{_digest(blob)}"]
    assert download_record["status"] == 200 and "error" not in download_record
    assert download_record["bytes"]["response"] == len(blob)
    refused = by_path["/v2/cache/mux/blobs/uploads/x"]
    assert refused["status"] == 401 and refused.get("body_discarded") is True
    assert "error" not in refused
    short_record = [r for r in records if r["method"] == "PATCH"][-1]
    assert "error" in short_record and "reset" in short_record["error"]


def test_a_client_waiting_for_the_end_of_a_refusal_gets_it(seeded):
    """A client that stops sending once it has the 401 (waiting for the response to end)
    gets END_STREAM and RST_STREAM(NO_ERROR) instead of waiting for ever (RFC 9113 §8.1)."""
    proxy, _token, _blob = seeded
    with H2Client(proxy.port, proxy.ca, timeout=20) as client:
        stream = client.new_stream()
        client.send_headers(
            stream,
            "PUT",
            "/v2/cache/mux/blobs/uploads/z?digest=" + _digest(b"z"),
            [("content-length", str(64 * MIB))],
        )
        client.send_data(stream, os.urandom(2 * MIB))
        reply = client.reply(stream, timeout=10)
    assert reply.status == 401 and reply.ended, reply.outcome
    assert reply.reset in (None, "NO_ERROR"), reply.outcome
    assert not reply.timed_out
