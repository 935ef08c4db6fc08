"""regauth's own registry (`regauth serve` without `--upstream`), which follows the signing keys.

The registry is Debian's `docker-registry` (distribution 2.8) on loopback in token mode, trusting
regauth's signing certificates (`auth.token.rootcertbundle`). distribution reads that bundle at
start only, so whenever a rebuilt configuration trusts other keys (`regauth certs rotate`,
`retire`) or names another service or issuer, this addon restarts the registry with it before the
configuration is swapped in (`ConfigLoader.before_swap`); a new key therefore never signs before
the registry trusts it. No client request fails meanwhile:

1. new requests for the registry are held: `requestheaders` awaits an asyncio event before
   regauth decides them (token and JWKS requests need no registry and pass);
2. requests already on their way finish: each until its response headers arrive (at most
   DRAIN_WAIT s), and the old registry still finishes what it serves after SIGTERM
   (`http.draintimeout`, DRAIN_TIMEOUT s);
3. the new registry starts on the same port with the same storage and upload secret;
4. the configuration is swapped in and the held requests go on, decided with it.

A request held longer than HOLD_TIMEOUT s, or arriving while the registry is down after a failed
restart, is refused with 503 by the front door (fail closed); the config loader tries again at its
next check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from dataclasses import replace
from pathlib import Path

from mitmproxy import http

from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.fail_closed import fail_closed
from regauth.mitm.request_handler import UPSTREAM_UNAVAILABLE
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.policy.load import load_policy
from regauth.protocol.routes import JWKS_PATH
from regauth.protocol.routes import TOKEN_PATH
from regauth.runtime import Active

logger = logging.getLogger(__name__)

HOLD_TIMEOUT = 30.0  # seconds a request may wait for the restarted registry
DRAIN_WAIT = 10.0  # seconds to wait for forwarded requests to get their response headers
DRAIN_TIMEOUT = 120  # seconds the replaced registry may take to finish what it serves
_UNLOCKED = frozenset({TOKEN_PATH, JWKS_PATH})

Trust = tuple[frozenset[bytes], str, str]  # certificates (DER), service, issuer


def _trust(keys: list[pki.SigningKey], service: str, issuer: str) -> Trust:
    return frozenset(k.certificate_der() for k in keys), service, issuer


class EmbeddedRegistry:
    """Owns the registry process: started before mitmproxy listens (`start`), restarted when the
    trusted keys change (`follow`), stopped when regauth stops (`done`, `stop`)."""

    def __init__(
        self,
        registry: RegistryProcess,
        certs_dir: Path,
        hold_timeout: float = HOLD_TIMEOUT,
        drain_wait: float = DRAIN_WAIT,
    ) -> None:
        assert registry.token is not None, "the embedded registry runs in token mode"
        self.registry = registry
        self.certs_dir = certs_dir
        self.hold_timeout = hold_timeout
        self.drain_wait = drain_wait
        self.config: ConfigLoader | None = None
        self.ready = asyncio.Event()  # set: requests go on; clear: they wait
        self.down = ""  # why the registry is not serving after a failed restart, or ""
        self.in_flight: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self.trusted: Trust | None = None  # what the running registry was started with
        self.restarts = 0
        self.longest_hold = 0.0  # seconds, the longest a request waited

    @classmethod
    def create(
        cls, workdir: Path, certs_dir: Path, policy_path: Path, public_url: str
    ) -> EmbeddedRegistry:
        """The registry for `regauth serve`: storage under `workdir`, realm on `public_url`."""
        policy = load_policy(policy_path)
        workdir.mkdir(parents=True, exist_ok=True)
        token = TokenAuth(
            realm=f"{public_url}/v2/token",
            service=policy.service,
            issuer=policy.issuer,
            rootcertbundle=workdir / "rootcertbundle.pem",
        )
        return cls(RegistryProcess(workdir, token=token, drain_timeout=DRAIN_TIMEOUT), certs_dir)

    @property
    def url(self) -> str:
        return self.registry.url

    def attach(self, config: ConfigLoader) -> None:
        """Follow `config`: every rebuilt configuration passes `follow` before it is used."""
        self.config = config
        config.before_swap.append(self.follow)

    def start(self) -> None:
        """Start the registry trusting every key in the certs directory (blocking; call before
        mitmproxy listens, so a registry that cannot start stops `regauth serve` first)."""
        token = self.registry.token
        assert token is not None
        self._launch(
            pki.load_signing_keys(self.certs_dir), token.service, token.issuer, restart=False
        )
        self.ready.set()

    def stop(self) -> None:
        self.registry.stop()

    def _launch(self, keys: list[pki.SigningKey], service: str, issuer: str, restart: bool) -> None:
        """Write the bundle (atomically) and the token settings, then (re)start; blocking."""
        token = self.registry.token
        assert token is not None
        bundle = token.rootcertbundle
        tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
        tmp.write_text(pki.bundle_pem(keys))
        tmp.replace(bundle)
        self.registry.token = replace(token, service=service, issuer=issuer)
        if restart:
            self.registry.restart()
        else:
            self.registry.start()
        self.trusted = _trust(keys, service, issuer)

    async def running(self) -> None:
        # The keys may have changed between `start` and the first configuration.
        if self.config is not None and self.config.active is not None:
            await self.follow(self.config.active)

    async def done(self) -> None:
        await asyncio.to_thread(self.stop)

    async def follow(self, active: Active) -> None:
        """Restart the registry if `active` trusts other keys (or names another service or
        issuer) than it runs with; raises RuntimeError if it does not come back."""
        runtime = active.runtime
        trust = _trust(runtime.keyring.keys, runtime.policy.service, runtime.policy.issuer)
        if trust == self.trusted and not self.down:
            return
        self.ready.clear()
        started = time.monotonic()
        try:
            deadline = started + self.drain_wait
            while self.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(
                self._launch,
                runtime.keyring.keys,
                runtime.policy.service,
                runtime.policy.issuer,
                True,
            )
        except Exception as e:
            self.down = "regauth's registry is restarting with new signing keys"
            logger.error(
                "regauth: the embedded registry did not restart with the new signing keys: %s", e
            )
            raise
        else:
            self.down = ""
            self.restarts += 1
            logger.info(
                "regauth: embedded registry restarted with %d trusted signing keys in %.2f s",
                len(trust[0]),
                time.monotonic() - started,
            )
        finally:
            # Held requests resume once the loader has swapped the configuration in.
            self.ready.set()

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if flow.request.path.partition("?")[0] in _UNLOCKED:
            return
        if not self.ready.is_set():
            held = time.monotonic()
            try:
                await asyncio.wait_for(self.ready.wait(), self.hold_timeout)
            except TimeoutError:
                flow.metadata[UPSTREAM_UNAVAILABLE] = (
                    "regauth's registry is restarting with new signing keys"
                )
                return
            finally:
                self.longest_hold = max(self.longest_hold, time.monotonic() - held)
        if self.down:
            flow.metadata[UPSTREAM_UNAVAILABLE] = self.down
            return
        self.in_flight.add(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow)
