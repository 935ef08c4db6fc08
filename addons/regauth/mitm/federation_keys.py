"""The federated issuers' key sets (`regauth.federation.jwks`), for the token endpoint.

One `IssuerKeySets` for the process, handed to the request handler's authenticator (the token
service finds each issuer's keys there) and kept across policy reloads, so a reload does not
forget keys. Each issuer's key set is fetched in the background when regauth starts and when a
reload adds the issuer, so the first login does not wait; after that, an unknown `kid` or a key
set older than an hour fetches again from the login that needs it (on the login queue's worker
threads, never the event loop). Each replica fetches on its own: a key set is public, small and
cached by the issuer's CDN; sharing it through Redis would add a dependency for no gain.
A failed fetch is logged and kept in the cache's status (`/readyz` warnings, metrics).
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy.utils import asyncio_utils

from regauth.federation.jwks import IssuerKeySets
from regauth.federation.jwks import JwksCache
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.request_handler import RequestHandler
from regauth.ops.jwks_fetch import fetcher_for
from regauth.runtime import Active

logger = logging.getLogger(__name__)


class FederationKeys:
    def __init__(self, config: ConfigLoader, handler: RequestHandler) -> None:
        self.config = config
        self.keysets = IssuerKeySets(fetcher_for)
        handler.authenticator.federation = self.keysets
        config.before_swap.append(self._before_swap)

    async def running(self) -> None:
        active = self.config.active
        if active is not None:
            self._prefetch(active)

    async def _before_swap(self, active: Active) -> None:
        self._prefetch(active)

    def _prefetch(self, active: Active) -> None:
        for cache in self.keysets.sync(active.runtime.policy.federated_issuers):
            asyncio_utils.create_task(
                self._fetch(cache), name=f"regauth jwks {cache.source}", keep_ref=True
            )

    async def _fetch(self, cache: JwksCache) -> None:
        try:
            await asyncio.to_thread(cache.refresh)
        except Exception:  # refresh never raises; a bug here must still be seen
            logger.exception("regauth: fetching the key set of %s failed", cache.source)
            return
        if cache.last_error:
            logger.warning(
                "regauth: federated key set %s unavailable: %s", cache.source, cache.last_error
            )
        else:
            count = len(cache.keyset.keys) if cache.keyset else 0
            logger.info("regauth: federated key set %s: %d keys", cache.source, count)
