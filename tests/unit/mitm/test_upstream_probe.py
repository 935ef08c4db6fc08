"""The upstream probe's request (mitm/upstream_probe.probe_once) against a loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from regauth.delegate_check import Reply
from regauth.mitm.upstream_probe import DELEGATE_AGENT
from regauth.mitm.upstream_probe import MAX_HEAD_BYTES
from regauth.mitm.upstream_probe import probe_once
from regauth.protocol.urls import Origin
from tests.unit.mitm.harness import run


@asynccontextmanager
async def _server(answer: bytes, received: list[bytes]) -> AsyncIterator[Origin]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Origin("http", "127.0.0.1", port)
    finally:
        server.close()


@run
async def test_the_answer_and_the_request():
    received: list[bytes] = []
    answer = (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b'WWW-Authenticate: Basic realm="r"\r\n'
        b'www-authenticate:   Bearer realm="https://x/v2/token",service="s"  \r\n'
        b"Date: Mon, 07 Dec 2026 13:11:10 GMT\r\nContent-Length: 2\r\n\r\n{}"
    )
    async with _server(answer, received) as origin:
        reply = await probe_once(origin, None, 5)
        assert reply == Reply(
            401,
            ('Basic realm="r"', 'Bearer realm="https://x/v2/token",service="s"'),
            "Mon, 07 Dec 2026 13:11:10 GMT",
        )
        await probe_once(origin, None, 5, agent=DELEGATE_AGENT, authorization="Bearer abc")
    anonymous, with_token = received
    assert (
        anonymous
        == (
            f"GET /v2/ HTTP/1.1\r\nHost: {origin.netloc}\r\nUser-Agent: "
            "regauth-readiness\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    assert (
        with_token
        == (
            f"GET /v2/ HTTP/1.1\r\nHost: {origin.netloc}\r\nUser-Agent: "
            "regauth-delegate-check\r\nAuthorization: Bearer abc\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
    )


@pytest.mark.parametrize(
    "answer, message",
    [
        (b"SSH-2.0-OpenSSH\r\n", "did not answer with HTTP"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", "limit|too large"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "too many lines"),
    ],
)
@run
async def test_what_is_not_a_registry_answer(answer, message):
    async with _server(answer, []) as origin:
        with pytest.raises(ValueError, match=message):
            await probe_once(origin, None, 5)


@run
async def test_an_answer_without_end_of_head_still_counts():
    async with _server(b"HTTP/1.1 200 OK\r\nDate: x", []) as origin:
        assert await probe_once(origin, None, 5) == Reply(200, (), "x")


@run
async def test_no_answer_in_time():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            await probe_once(Origin("http", "127.0.0.1", port), None, 0.2)
    finally:
        server.close()
