"""Runs the token requests that must check a password on the login threads, in the login
queue's order (`regauth.logins.queue`), and everything else on the event loop.

- A request that cannot block (anonymous, refresh grants, a pair the authenticator decides
  from memory: `token_service.may_block`) is answered on the event loop, never queued.
- Any other request becomes a job of its *source*, the client network
  (`logins.limits.client_network`), in the known lane if this process remembers the account
  logging in from that network (`LoginLimiter.known_here`). The queue admits it, or it is
  answered at once with `429 TOOMANYREQUESTS`, `Retry-After: 1` and `rate_limited: "login
  queue"` (or `"login queue full"`) in the exchange log: nothing was checked, so nothing is
  counted as a failed login.
- The executor never holds more jobs than it has threads: a job is handed to it only when the
  queue says a worker is free, so the order is the queue's, not the executor's FIFO.
- The same credentials from the same network while a check of them is queued or running wait
  for that check instead of taking a place of their own, then are answered from the
  authenticator's memory (verified or refused): a CI host starting eight pipelines at once
  costs one bcrypt and one place.
- A client that goes away while its job waits (the hook is cancelled) takes the job out of the
  queue; a running check completes.

Everything here runs on the event loop thread; the queue is not thread-safe and needs no lock.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable
from collections.abc import Hashable
from concurrent.futures import Executor
from dataclasses import dataclass

from regauth.logins.credentials import CACHE_MARGIN
from regauth.logins.credentials import Authenticator
from regauth.logins.limits import RateLimited
from regauth.logins.limits import client_network
from regauth.logins.queue import SOURCE_BUSY
from regauth.logins.queue import FairQueue
from regauth.logins.queue import Refusal
from regauth.logins.queue import Taken
from regauth.runtime import Runtime
from regauth.token_service import TokenRequest
from regauth.token_service import TokenResponse
from regauth.token_service import handle_token_request
from regauth.token_service import may_block
from regauth.token_service import password_pair

_WITHDRAWN = Refusal("withdrawn")  # the job's client went away before it ran


@dataclass(eq=False)
class _Job:
    """One password check: `call` runs on a login thread; `outcome` (a future of the event
    loop) gets its TokenResponse, a Refusal if it lost its place, or its exception."""

    call: Callable[[], TokenResponse]
    outcome: asyncio.Future[TokenResponse | Refusal]
    key: Hashable | None = None


class LoginPool:
    """See the module docstring. `executor` must have `queue.workers` threads (more would idle,
    fewer would queue jobs in the executor's FIFO, out of the fair order)."""

    def __init__(self, executor: Executor, queue: FairQueue[_Job] | None = None) -> None:
        self.executor = executor
        self.queue: FairQueue[_Job] = queue if queue is not None else FairQueue()
        self._inflight: dict[Hashable, _Job] = {}

    async def answer(
        self, runtime: Runtime, authenticator: Authenticator, request: TokenRequest
    ) -> TokenResponse:
        """The token service's answer to `request` (a 429 if the login queue has no room)."""
        followed = False
        while True:
            if not may_block(runtime, authenticator, request):
                # No bcrypt and no shared store to wait for: a thread hand-off would cost
                # more than the signature (bench/control.py).
                return handle_token_request(runtime, authenticator, request)
            pair = password_pair(request)
            source = client_network(request.client_ip)
            limiter = authenticator.limiter
            known = (
                pair is not None
                and limiter is not None
                and limiter.known_here(pair[0], request.client_ip)
            )
            key = (
                None
                if pair is None
                else (
                    source,
                    known,
                    hashlib.sha256("\0".join(pair).encode("utf-8", "surrogateescape")).digest(),
                )
            )
            leader = self._inflight.get(key) if key is not None else None
            if leader is not None and not followed:
                # The same check is on its way: wait for it (not for its result, which is
                # another request's), then answer from the authenticator's memory.
                followed = True
                await asyncio.wait([leader.outcome])
                continue
            outcome = await self._run(runtime, authenticator, request, source, known, key)
            if isinstance(outcome, Refusal):
                return self._refuse(runtime, authenticator, request, outcome)
            return outcome

    def _refuse(
        self,
        runtime: Runtime,
        authenticator: Authenticator,
        request: TokenRequest,
        refusal: Refusal,
    ) -> TokenResponse:
        limited = RateLimited(refusal.retry_after, refusal.reason, refusal.message)
        return handle_token_request(runtime, authenticator, request, refuse_login=limited)

    async def _run(
        self,
        runtime: Runtime,
        authenticator: Authenticator,
        request: TokenRequest,
        source: Hashable,
        known: bool,
        key: Hashable | None,
    ) -> TokenResponse | Refusal:
        loop = asyncio.get_running_loop()
        # A queued check also renews a cached login in its last seconds (needs_check sent it
        # here), so the identical logins that follow it find it cached again.
        job = _Job(
            functools.partial(
                handle_token_request, runtime, authenticator, request, renew_within=CACHE_MARGIN
            ),
            loop.create_future(),
            key,
        )
        # Retrieved even when its waiter is gone, so asyncio never reports it as lost.
        job.outcome.add_done_callback(lambda f: f.cancelled() or f.exception())
        admission = self.queue.submit(source, job, known)
        for evicted in admission.evicted:
            self._settle(evicted, Refusal(SOURCE_BUSY))
        if admission.refused is not None:
            return admission.refused
        if key is not None:
            self._inflight[key] = job
        self._pump()
        try:
            # shield: a cancelled waiter must not cancel the outcome its followers wait for.
            return await asyncio.shield(job.outcome)
        except asyncio.CancelledError:
            if self.queue.withdraw(source, job, known):
                self._settle(job, _WITHDRAWN)
            raise

    def _settle(self, job: _Job, outcome: TokenResponse | Refusal | BaseException) -> None:
        if self._inflight.get(job.key) is job:
            del self._inflight[job.key]
        if job.outcome.done():
            return
        if isinstance(outcome, BaseException):
            job.outcome.set_exception(outcome)
        else:
            job.outcome.set_result(outcome)

    def _pump(self) -> None:
        """Hand jobs to the executor while the queue has a free worker and a waiting job."""
        loop = asyncio.get_running_loop()
        while (taken := self.queue.take()) is not None:
            try:
                running = loop.run_in_executor(self.executor, taken.job.call)
            except RuntimeError as e:  # the executor is shut down: regauth is stopping
                self.queue.finish(taken)
                self._settle(taken.job, e)
                continue
            running.add_done_callback(functools.partial(self._finished, taken))

    def _finished(self, taken: Taken[_Job], running: asyncio.Future[TokenResponse]) -> None:
        self.queue.finish(taken)
        if running.cancelled():  # the executor was shut down with the job in it
            if self._inflight.get(taken.job.key) is taken.job:
                del self._inflight[taken.job.key]
            taken.job.outcome.cancel()
        elif (error := running.exception()) is not None:
            self._settle(taken.job, error)
        else:
            self._settle(taken.job, running.result())
        self._pump()
