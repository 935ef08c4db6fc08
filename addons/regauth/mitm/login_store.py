"""The `regauth_state` option: where the login-limit counters live (`regauth.logins.redis_store`).

Empty (or `memory`): in this process, as before. `redis://HOST:PORT/DB`: in Redis, shared by
every replica, with this process's memory as the fallback during an outage. The store is
chosen once, before any request (the option cannot change while regauth runs), and handed to
the request handler's authenticator; nothing else reads it (the login queue's hint, whether an
account is known on a network, reads only the memory behind it: `LoginLimiter.known_here`).
Both the in-process store and that memory keep known networks in a budget failures cannot
evict (`logins.limits.MemoryAttemptStore`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

from regauth.logins.job_tokens import FileJobStore
from regauth.logins.limits import LoginLimiter
from regauth.logins.redis_store import FallbackAttemptStore
from regauth.logins.redis_store import RedisAttemptStore
from regauth.logins.redis_store import RedisJobStore
from regauth.logins.redis_store import open_store
from regauth.logins.redis_store import parse_state_url
from regauth.mitm.request_handler import RequestHandler

logger = logging.getLogger(__name__)


class SharedState:
    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler
        self.store: FallbackAttemptStore | None = None
        self.error: str | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "regauth_state",
            str,
            "",
            "Where login-failure counters live: empty for this process, or "
            "redis://HOST:PORT/DB to share them between replicas.",
        )

    def configure(self, updated: set[str]) -> None:
        if "regauth_state" in updated or "regauth_certs_dir" in updated:
            self._job_store()
        if "regauth_state" not in updated:
            return
        try:
            store = open_store(ctx.options.regauth_state)
        except ValueError as e:
            # Reported in `running` (errorcheck stops the start-up); until then, and if the
            # start went on, the counters stay in memory: never without limits.
            self.error = str(e)
            store = None
        self._close()
        self.store = store
        authenticator = self.handler.authenticator
        if store is None:
            authenticator.limiter = LoginLimiter(clock=authenticator.clock)
        else:
            # Replicas compare event times: a clock they share, not this process's monotonic.
            authenticator.limiter = LoginLimiter(store=store, clock=time.time)

    def _job_store(self) -> None:
        """Job tokens' revocations: in Redis with `regauth_state`, else in the certs directory
        (logins/job_tokens.py). A bad state URL is reported by the limits' store below."""
        authenticator = self.handler.authenticator
        try:
            url = parse_state_url(ctx.options.regauth_state)
        except ValueError:
            url = None
        if url is not None:
            authenticator.job_store = RedisJobStore(url)
        elif ctx.options.regauth_certs_dir:
            authenticator.job_store = FileJobStore(Path(ctx.options.regauth_certs_dir))

    async def running(self) -> None:
        if self.error:
            logger.error("regauth: %s", self.error)  # errorcheck exits on this
            return
        store = self.store
        if store is None or not isinstance(store.primary, RedisAttemptStore):
            return
        # An outage from the start is logged (once) and served by the fallback like any other.
        if await asyncio.to_thread(store.check):
            logger.info("regauth: login limits shared through %s", store.name)

    def _close(self) -> None:
        if self.store is not None and isinstance(self.store.primary, RedisAttemptStore):
            self.store.primary.close()

    def done(self) -> None:
        self._close()
