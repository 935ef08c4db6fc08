"""Answering refused requests that carry a body, without buffering the body.

mitmproxy reads a request's whole body before it sends a response an addon set in
`requestheaders` (1 GiB refused upload = 1 GiB of RSS). Instead, a refused request with a large
or unknown-size body is re-targeted at this loopback sink and streamed: the sink answers at once
with the prepared refusal and `Connection: close`, then discards whatever arrives. HTTP/1 clients
(with or without `Expect: 100-continue`) and HTTP/2 clients get the 401 before sending the body;
the upstream never sees the request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from http import HTTPStatus

logger = logging.getLogger(__name__)

NONCE_HEADER = "x-regauth-refusal"
_MAX_HEAD = 64 * 1024


def assemble(status: int, headers: dict[str, str], body: bytes) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [
        f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("content-length", "connection")
    ]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RefusalSink:
    def __init__(self) -> None:
        self._pending: dict[str, bytes] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def prepare(self, status: int, headers: dict[str, str], body: bytes) -> str:
        nonce = secrets.token_hex(16)
        self._pending[nonce] = assemble(status, headers, body)
        if len(self._pending) > 10000:  # abandoned flows must not grow this forever
            self._pending.pop(next(iter(self._pending)))
        return nonce

    def discard(self, nonce: str) -> None:
        self._pending.pop(nonce, None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            nonce = ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == NONCE_HEADER.encode():
                    nonce = value.strip().decode("ascii", "replace")
            answer = self._pending.pop(nonce, None)
            if answer is None:
                answer = assemble(400, {"Content-Type": "text/plain"}, b"unknown refusal\n")
            writer.write(answer)
            await writer.drain()
            while await reader.read(1 << 20):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
