"""A small periodic probe of the upstream registry, for readiness (`regauth.health`).

Every `interval` seconds: `GET /v2/` on the upstream (TLS verified with the upstream CA when
it is https), one request per connection. Any HTTP status line counts as an answer (distribution
says 401 or 200 there); a refused connection, a TLS failure or no status line within the
timeout does not. The task survives every exception: nothing but cancellation ends it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from regauth.urls import Origin

logger = logging.getLogger(__name__)


async def probe_once(origin: Origin, context: ssl.SSLContext | None, timeout: float) -> int:
    """The HTTP status the upstream answers to `GET /v2/`; raise OSError, TimeoutError or
    ValueError (not HTTP) otherwise."""
    async def exchange() -> int:
        reader, writer = await asyncio.open_connection(
            origin.host, origin.port, ssl=context,
            server_hostname=origin.host if context is not None else None)
        try:
            writer.write(f"GET /v2/ HTTP/1.1\r\nHost: {origin.netloc}\r\n"
                         "User-Agent: regauth-readiness\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError("the upstream did not answer with HTTP")
        return int(parts[1])

    return await asyncio.wait_for(exchange(), timeout)


class UpstreamProbe:
    """Keeps `answered` (Unix time of the last answer) and `error` (the last failure)."""

    def __init__(self, target: Callable[[], tuple[Origin, ssl.SSLContext | None] | None],
                 interval: float) -> None:
        self.target = target  # read before each probe: the configuration may change
        self.interval = interval
        self.answered: float | None = None
        self.status: int | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def window(self) -> float:
        """How old the last answer may be for the upstream to count as alive: one probe may
        be lost or slow without the replica flapping."""
        return 3 * self.interval

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="regauth upstream probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def check(self) -> None:
        target = self.target()
        if target is None:
            self.error = "no upstream configured"
            return
        origin, context = target
        try:
            self.status = await probe_once(origin, context, min(self.interval, 5.0))
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as e:
            self.error = f"{type(e).__name__}: {e}"[:200] if str(e) else type(e).__name__
            if not self._failing:
                logger.warning("regauth: upstream %s does not answer (%s); not ready until it "
                               "does", origin.url, self.error)
                self._failing = True
            return
        self.answered = time.time()
        self.error = None
        if self._failing:
            logger.warning("regauth: upstream %s answers again", origin.url)
            self._failing = False

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as e:  # the last line: this task must never die
                logger.error("regauth: upstream probe failed unexpectedly: %r", e)
            await asyncio.sleep(self.interval)
