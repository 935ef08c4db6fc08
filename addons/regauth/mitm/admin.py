"""The admin listener: `/metrics`, `/healthz`, `/readyz` on their own socket.

`regauth_admin_listen` = `HOST:PORT` (port 0: any free port, logged) or `off`. The socket is
bound while options are applied, so a port that cannot be bound stops regauth at start-up
(exit 1) like a bad policy; the server itself is tornado (already in the process: mitmproxy
depends on it) on the proxy's event loop. It is a separate socket, never a route of the proxy
port: the proxy only ever forwards to its upstream.

- `GET /metrics`: Prometheus text format (`regauth.ops.metrics`).
- `GET /healthz`: 200 `ok` whenever the handler runs, i.e. the process and its event loop
  respond (liveness).
- `GET /readyz`: 200 `ready`, or 503 with one `not ready: REASON` line per reason
  (`regauth.ops.health`); the upstream is probed every `regauth_upstream_check_seconds`.
- `POST /job-tokens`: a CI controller mints job tokens (`mitm/admin_job_tokens.py`).
- `POST /log/reopen`: reopen the exchange log after rotation (`mitm/log_reopen.py`).

Both writes need the admin token (`mitm/admin_auth.py`).

The upstream probe belongs to this addon but does not depend on the listener: in delegate mode
it also runs the delegate check (`mitm/delegate_gate.py`), whose verdict decides whether
anything is forwarded, so it runs with `regauth_admin_listen=off` too (then for that alone);
outside delegate mode and without the listener it does not run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from tornado import netutil
from tornado import web
from tornado.httpserver import HTTPServer

from regauth.delegate_check import KINDS
from regauth.federation.jwks import IssuerKeySets
from regauth.mitm.admin_job_tokens import JobTokensHandler
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.delegate_gate import DelegateGate
from regauth.mitm.log_reopen import LogReopen
from regauth.mitm.log_reopen import LogReopenHandler
from regauth.mitm.login_store import SharedState
from regauth.mitm.metrics_observer import MetricsObserver
from regauth.mitm.recorder import Recorder
from regauth.mitm.refusal_log import REASONS
from regauth.mitm.refusal_log import refusals
from regauth.mitm.upstream_probe import UpstreamProbe
from regauth.ops import health
from regauth.ops.metrics import Metrics
from regauth.ops.metrics import counter
from regauth.ops.metrics import gauge
from regauth.protocol.urls import Origin
from regauth.protocol.urls import parse_listen

logger = logging.getLogger(__name__)


class _Handler(web.RequestHandler):
    def initialize(self, admin: AdminServer) -> None:
        self.admin = admin

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")


class _MetricsHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.admin.metrics.registry))


class _HealthHandler(_Handler):
    def get(self) -> None:
        self.write("ok\n")


class _ReadyHandler(_Handler):
    def get(self) -> None:
        state = self.admin.readiness()
        self.set_status(200 if state.ready else 503)
        self.write(state.body())


class AdminServer:
    """Owns the admin socket, the tornado server on it, the upstream probe and the samplers
    that read, at scrape time, what other addons already count."""

    def __init__(
        self,
        metrics: Metrics,
        config: ConfigLoader,
        recorder: Recorder,
        observer: MetricsObserver,
        shared: SharedState,
        delegate: DelegateGate | None = None,
        reopener: LogReopen | None = None,
    ) -> None:
        self.metrics = metrics
        self.reopener = reopener or LogReopen(recorder)
        self.config = config
        self.recorder = recorder
        self.observer = observer
        self.shared = shared
        self.delegate = delegate
        self.sockets: list[socket.socket] = []
        self.server: HTTPServer | None = None
        self.probe = UpstreamProbe(self._probe_target, 2.0, delegate)
        if delegate is not None:
            delegate.probe = self.probe
        self._seen_active: object = None
        self._loaded_at: float | None = None
        self._started = False
        self.bind_error: str | None = None
        self._state_checks: asyncio.Task[None] | None = None
        metrics.add_sampler(self._sample)

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "regauth_admin_listen",
            str,
            "off",
            "HOST:PORT of the admin listener (/metrics, /healthz, /readyz), or off.",
        )
        loader.add_option(
            "regauth_upstream_check_seconds",
            int,
            2,
            "How often the upstream probe asks the upstream for /v2/ (readiness, "
            "and in delegate mode the delegate check); /readyz fails when it has "
            "not answered for three times this long.",
        )

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the admin listener is bound (the real port when 0 was asked for)."""
        if not self.sockets:
            return None
        host, port = self.sockets[0].getsockname()[:2]
        return host, port

    def configure(self, updated: set[str]) -> None:
        active = self.config.active
        if active is not None and active is not self._seen_active:
            self._seen_active = active
            self._loaded_at = time.time()
        if "regauth_upstream_check_seconds" in updated:
            if ctx.options.regauth_upstream_check_seconds < 1 and not self._started:
                self.bind_error = "regauth_upstream_check_seconds must be at least 1"
            self.probe.interval = float(max(1, ctx.options.regauth_upstream_check_seconds))
        if "regauth_admin_listen" not in updated or self._started:
            return
        value = ctx.options.regauth_admin_listen.strip()
        self._close_sockets()
        self.observer.enabled = value.lower() != "off"
        if not self.observer.enabled:
            return
        try:
            host, port = parse_listen(value)
            self.sockets = netutil.bind_sockets(port, host, reuse_port=False)
        except (ValueError, OSError) as e:
            # Reported in `running`, where an error stops mitmproxy's start-up (errorcheck);
            # an OptionsError here would be replaced by the roll-back's own complaints.
            self.observer.enabled = False
            self.bind_error = f"admin listener {value}: {e}"

    async def running(self) -> None:
        self._started = True
        if self.bind_error:
            logger.error("regauth: %s", self.bind_error)  # errorcheck exits on this
            return
        # Without the listener the probe still runs the delegate check; outside delegate
        # mode it does not run at all (the gate starts it if a reload enters delegate mode).
        self.probe.readiness = bool(self.sockets)
        if self.sockets or (self.delegate is not None and self.delegate.wanted() is not None):
            self.probe.start()
        if not self.sockets:
            return
        app = web.Application(
            [
                (r"/metrics", _MetricsHandler, {"admin": self}),
                (r"/healthz", _HealthHandler, {"admin": self}),
                (r"/readyz", _ReadyHandler, {"admin": self}),
                (
                    r"/job-tokens",
                    JobTokensHandler,
                    {
                        "config": self.config,
                        "store": lambda: self.shared.handler.authenticator.job_store,
                        "certs_dir": lambda: Path(ctx.options.regauth_certs_dir),
                    },
                ),
                (
                    r"/log/reopen",
                    LogReopenHandler,
                    {
                        "reopener": self.reopener,
                        "certs_dir": lambda: Path(ctx.options.regauth_certs_dir),
                    },
                ),
            ],
            log_function=lambda handler: None,
        )  # probes every second would flood the console
        self.server = HTTPServer(app, idle_connection_timeout=60)
        self.server.add_sockets(self.sockets)
        host, port = self.address or ("", 0)
        shown = f"[{host}]" if ":" in host else host
        logger.info(
            "regauth admin listening at http://%s:%d/ (/metrics, /healthz, /readyz)", shown, port
        )
        if self.shared.store is not None:
            self._state_checks = asyncio.get_running_loop().create_task(
                self._check_state(), name="regauth state store check"
            )

    async def _check_state(self) -> None:
        """Keep the store's availability current between logins (for the metrics)."""
        while True:
            await asyncio.sleep(self.probe.interval * 5)
            store = self.shared.store
            try:
                if store is not None:
                    await asyncio.to_thread(store.check)
            except Exception as e:  # the last line: this task must never die
                logger.error("regauth: state store check failed unexpectedly: %r", e)

    def _probe_target(self) -> tuple[Origin, ssl.SSLContext | None] | None:
        active = self.config.active
        if active is None:
            return None
        context = None
        if active.upstream.scheme == "https":
            context = ssl.create_default_context(cafile=ctx.options.regauth_upstream_ca or None)
        return active.upstream, context

    def readiness(self) -> health.Readiness:
        active = self.config.active
        signer = active.runtime.keyring.signer if active is not None else None
        not_after = (
            signer.certificate.not_valid_after_utc.timestamp()
            if signer is not None and signer.private_key is not None
            else None
        )
        delegate = self.delegate
        return health.readiness(
            active is not None,
            not_after,
            self.probe.answered,
            self.probe.error,
            time.time(),
            self.probe.window,
            delegate=delegate.readiness_problem() if delegate else None,
            warnings=[
                *(delegate.readiness_warnings() if delegate else ()),
                *self._federation_warnings(),
            ],
        )

    def _sample_federation(self) -> Iterator[Metric]:
        keysets = self.shared.handler.authenticator.federation
        status = keysets.status() if isinstance(keysets, IssuerKeySets) else {}
        if not status:
            return
        yield gauge(
            "regauth_federation_keys",
            "Keys held for each federated issuer (the last good key set)",
            [({"issuer": i}, float(len(s.keys))) for i, s in status.items()],
            ("issuer",),
        )
        yield gauge(
            "regauth_federation_key_set_up",
            "1 when the last fetch of the issuer's key set worked",
            [({"issuer": i}, float(s.last_error is None)) for i, s in status.items()],
            ("issuer",),
        )
        yield counter(
            "regauth_federation_key_set_fetch_failures",
            "Failed fetches of each federated issuer's key set",
            [({"issuer": i}, float(s.failures)) for i, s in status.items()],
            ("issuer",),
        )
        good = [({"issuer": i}, s.fetched_at) for i, s in status.items() if s.fetched_at]
        if good:
            yield gauge(
                "regauth_federation_key_set_last_success_timestamp_seconds",
                "When each issuer's key set was last fetched (Unix time)",
                good,
                ("issuer",),
            )

    def _federation_warnings(self) -> list[str]:
        keysets = self.shared.handler.authenticator.federation
        status = keysets.status() if isinstance(keysets, IssuerKeySets) else {}
        return [
            f"federated issuer {issuer}: key set fetch failed ({s.last_error}); "
            + (f"using {len(s.keys)} keys fetched earlier" if s.keys else "no keys yet")
            for issuer, s in status.items()
            if s.last_error
        ]

    def _sample(self) -> Iterator[Metric]:
        reloads = self.config.reloads
        yield counter(
            "regauth_policy_reloads",
            "Policy reload attempts (start-up excluded)",
            [({"result": r}, reloads.get(r, 0)) for r in ("ok", "refused", "error")],
            ("result",),
        )
        loaded = [t for t in (self.config.last_reload_success, self._loaded_at) if t]
        if loaded:
            yield gauge(
                "regauth_policy_last_reload_success_timestamp_seconds",
                "When the policy in force was loaded (Unix time)",
                [({}, max(loaded))],
            )
        active = self.config.active
        if active is not None:
            not_after = active.runtime.keyring.signer.certificate.not_valid_after_utc
            yield gauge(
                "regauth_signing_key_not_after_timestamp_seconds",
                "notAfter of the token-signing certificate in use (Unix time)",
                [({}, not_after.timestamp())],
            )
        log = self.recorder.exchange_log
        # `records_lost` comes with the robust exchange log; absent before it.
        lost = getattr(log, "records_lost", 0) if log is not None else 0
        yield counter(
            "regauth_log_records_dropped",
            "Exchange-log records that could not be written",
            [({}, float(lost))],
        )
        yield gauge(
            "regauth_client_connections",
            "Client connections by state",
            [({"state": s}, n) for s, n in self.observer.connection_states().items()],
            ("state",),
        )
        yield counter(
            "regauth_connections_refused",
            "Connections, request heads and HTTP/2 "
            "streams refused or closed by regauth's connection limits, by reason",
            [({"reason": r}, float(refusals.counts.get(r, 0))) for r in REASONS],
            ("reason",),
        )
        yield gauge(
            "regauth_upstream_up",
            "1 while the upstream answered the readiness probe within its window",
            [({}, float(self.readiness_upstream()))],
        )
        yield from self._sample_delegate()
        yield from self._sample_federation()
        store = self.shared.store
        if store is not None:
            yield gauge(
                "regauth_state_store_up",
                "1 while the shared state store (Redis) answers",
                [({}, float(store.available))],
            )
            yield counter(
                "regauth_state_store_errors",
                "Login-limit operations served from "
                "this process's memory because the shared store failed",
                [({}, float(store.errors))],
            )

    def _sample_delegate(self) -> Iterator[Metric]:
        """The delegate check, in delegate mode only: the verdict as a one-hot gauge over the
        closed set KINDS, whether requests are refused because of it, and the opt-out."""
        delegate = self.delegate
        result = delegate.result() if delegate is not None else None
        if delegate is None or result is None:
            return
        yield gauge(
            "regauth_delegate_check",
            "The delegate check's verdict on the registry (1 for the current result)",
            [({"result": kind}, float(kind == result)) for kind in KINDS],
            ("result",),
        )
        yield gauge(
            "regauth_delegate_refusing",
            "1 while registry requests are refused "
            "because the registry is not known to check regauth's tokens",
            [({}, float(delegate.refusing()))],
        )
        yield gauge(
            "regauth_delegate_unchecked",
            "1 when the delegate check is not enforced (--delegate-unchecked)",
            [({}, float(delegate.unchecked))],
        )

    def readiness_upstream(self) -> bool:
        answered = self.probe.answered
        return answered is not None and time.time() - answered <= self.probe.window

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    async def done(self) -> None:
        await self.probe.stop()
        if self._state_checks is not None:
            self._state_checks.cancel()
        if self.server is not None:
            self.server.stop()
        self._close_sockets()
