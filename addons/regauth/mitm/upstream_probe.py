"""A small periodic probe of the upstream registry: readiness, and the delegate check.

Every `interval` seconds (and at once when `kick()`ed): `GET /v2/` on the upstream (TLS
verified with the upstream CA when it is https), one request per connection, with
`User-Agent: regauth-readiness`. Any HTTP status line counts as an answer for readiness
(distribution says 401 or 200 there); a refused connection, a TLS failure or no status line
within the timeout does not.

In delegate mode (`DelegateGate.wanted()`), the same answer is the first question of the
delegate check (`regauth.delegate_check`), and when the registry challenged for a Bearer token
a second request follows: `GET /v2/` with a probe token regauth signs for no access at all
(`User-Agent: regauth-delegate-check`); the gate gets the verdict. The probe runs for
readiness only while the admin listener is on (`readiness`); in delegate mode it always runs,
since forwarding depends on it (started at start-up, or by the first request after a reload
into delegate mode: `kick`). Outside both, it sends nothing.

The task survives every exception: nothing but cancellation ends it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Protocol

from regauth.delegate_check import Reply
from regauth.delegate_check import clock_skew
from regauth.delegate_check import judge
from regauth.delegate_check import needs_token_probe
from regauth.protocol.urls import Origin

if TYPE_CHECKING:
    from regauth.mitm.delegate_gate import DelegateGate
    from regauth.runtime import Active

logger = logging.getLogger(__name__)

READINESS_AGENT = "regauth-readiness"
DELEGATE_AGENT = "regauth-delegate-check"
MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is not a registry's answer
MAX_HEAD_LINES = 100
MIN_GAP = 0.25  # seconds between rounds, however often the probe is kicked
_PROBE_ERRORS = (
    OSError,
    TimeoutError,
    ValueError,
    ssl.SSLError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
)


class Fetch(Protocol):
    def __call__(
        self,
        origin: Origin,
        context: ssl.SSLContext | None,
        timeout: float,
        agent: str = ...,
        authorization: str | None = ...,
    ) -> Awaitable[Reply]: ...


async def probe_once(
    origin: Origin,
    context: ssl.SSLContext | None,
    timeout: float,
    agent: str = READINESS_AGENT,
    authorization: str | None = None,
) -> Reply:
    """The upstream's answer to `GET /v2/` (status, WWW-Authenticate values, Date), within
    `timeout` seconds; raise OSError, TimeoutError or ValueError (not HTTP, head too large).

    `authorization` (a probe token) goes to this origin only, over the verified connection,
    and appears in no exception or log."""

    async def exchange() -> Reply:
        reader, writer = await asyncio.open_connection(
            origin.host,
            origin.port,
            ssl=context,
            server_hostname=origin.host if context is not None else None,
            limit=MAX_HEAD_BYTES,
        )
        try:
            credentials = f"Authorization: {authorization}\r\n" if authorization else ""
            writer.write(
                f"GET /v2/ HTTP/1.1\r\nHost: {origin.netloc}\r\n"
                f"User-Agent: {agent}\r\n{credentials}Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
            parts = line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise ValueError("the upstream did not answer with HTTP")
            challenges: list[str] = []
            date = None
            size = len(line)
            for _ in range(MAX_HEAD_LINES):
                header = await reader.readline()
                size += len(header)
                if size > MAX_HEAD_BYTES:
                    raise ValueError("the upstream's response head is too large")
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "www-authenticate":
                    challenges.append(value.strip())
                elif name == "date":
                    date = value.strip()
            else:
                raise ValueError("the upstream's response head has too many lines")
        finally:
            writer.close()
        return Reply(int(parts[1]), tuple(challenges), date)

    return await asyncio.wait_for(exchange(), timeout)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200] if str(error) else type(error).__name__


class UpstreamProbe:
    """Keeps `answered` (Unix time of the last answer), `status` and `error` (the last
    failure) for readiness, and hands delegate-mode answers to `delegate`.

    `target` is read before each probe (the configuration may change); `fetch` is
    `probe_once` (tests replace it); `readiness` is set by the admin listener when it runs.
    """

    def __init__(
        self,
        target: Callable[[], tuple[Origin, ssl.SSLContext | None] | None],
        interval: float,
        delegate: DelegateGate | None = None,
    ) -> None:
        self.target = target
        self.interval = interval
        self.delegate = delegate
        self.readiness = False
        self.fetch: Fetch = probe_once
        self.answered: float | None = None
        self.status: int | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._wake: asyncio.Event | None = None

    @property
    def window(self) -> float:
        """How old the last answer may be for the upstream to count as alive: one probe may
        be lost or slow without the replica flapping."""
        return 3 * self.interval

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the probe task (on the running loop) unless it runs already."""
        if self.running:
            return
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="regauth upstream probe"
        )

    def kick(self) -> None:
        """Probe now rather than at the end of the interval (a new configuration, or requests
        waiting for the first delegate verdict), starting the task if it does not run yet.
        Several kicks make one probe."""
        self.start()
        assert self._wake is not None
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def check(self) -> None:
        """One round: the readiness probe and, in delegate mode, the delegate check."""
        delegate = self.delegate
        active = delegate.wanted() if delegate is not None else None
        if delegate is not None and active is None:
            delegate.idle()
        if not self.readiness and active is None:
            return  # nobody needs an answer: send nothing
        target = self.target()
        if target is None:
            self.error = "no upstream configured"
            return
        origin, context = target
        timeout = min(self.interval, 5.0)
        try:
            reply = await self.fetch(origin, context, timeout)
        except _PROBE_ERRORS as e:
            self.error = _describe(e)
            if not self._failing:
                logger.warning(
                    "regauth: upstream %s does not answer (%s); not ready until it does",
                    origin.url,
                    self.error,
                )
                self._failing = True
            if delegate is not None and active is not None:
                delegate.conclude(active, None, f"GET /v2/: {self.error}")
            return
        self.status = reply.status
        self.answered = time.time()
        self.error = None
        if self._failing:
            logger.warning("regauth: upstream %s answers again", origin.url)
            self._failing = False
        if delegate is not None and active is not None:
            await self._check_delegate(delegate, active, origin, context, reply, timeout)

    async def _check_delegate(
        self,
        delegate: DelegateGate,
        active: Active,
        origin: Origin,
        context: ssl.SSLContext | None,
        anonymous: Reply,
        timeout: float,
    ) -> None:
        expected = delegate.expected(active)
        with_token = None
        if needs_token_probe(anonymous):
            authorization = "Bearer " + delegate.probe_token(active)
            try:
                with_token = await self.fetch(
                    origin, context, timeout, agent=DELEGATE_AGENT, authorization=authorization
                )
            except _PROBE_ERRORS as e:
                delegate.conclude(active, None, f"GET /v2/ with a probe token: {_describe(e)}")
                return
        last = with_token or anonymous
        verdict = judge(expected, anonymous, with_token, clock_skew(last.date, time.time()))
        delegate.conclude(active, verdict, f"the registry answered GET /v2/ with {last.status}")

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()
            try:
                await self.check()
            except Exception as e:  # the last line: this task must never die
                logger.error("regauth: upstream probe failed unexpectedly: %r", e)
            await asyncio.sleep(MIN_GAP)
            try:
                await asyncio.wait_for(wake.wait(), max(0.0, self.interval - MIN_GAP))
            except TimeoutError:
                pass
