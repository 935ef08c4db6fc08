"""Delegate mode forwards only while the registry checks regauth's tokens (issue 20, A2).

The verdict comes from the upstream probe (`mitm/upstream_probe.py`), which runs the delegate
check (`regauth.delegate_check`) at start and every `regauth_upstream_check_seconds`. This
addon carries it out, before the request handler decides:

- while the verdict refuses (`open`, `wrong_scheme`, `unexpected_status`, `unverified`), every
  request that would be forwarded gets `UPSTREAM_UNAVAILABLE` with the verdict's client
  text, so the front door answers distribution's `503 UNAVAILABLE` and the exchange record
  carries the reason; token and key-set requests never reach the upstream and are answered;
- until the first verdict (at start, or when the upstream enters delegate mode on a reload)
  such requests wait for it, at most HOLD_TIMEOUT s, then get the 503; the probe is kicked so
  that they wait for one round trip only;
- a verdict that does not refuse but is not `ok` (service, issuer, keys, clock, realm) makes
  `/readyz` not ready with the reason (`readiness_problem`); the registry then refuses the
  tokens itself;
- each change of verdict is logged once (an error while refusing, a warning while only not
  ready, info when it passes).

`regauth_delegate_unchecked` (`regauth serve --delegate-unchecked`, test setups only) turns the
refusal off: the check still runs and is reported (metrics, `/readyz` warning lines), and a
warning says so at start and every REMINDER_INTERVAL s. Enforce and inject upstreams are not
checked (regauth checks the tokens itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from mitmproxy import ctx
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from regauth.delegate_check import Expected
from regauth.delegate_check import Tracker
from regauth.delegate_check import Verdict
from regauth.delegate_check import probe_token
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.fail_closed import fail_closed
from regauth.mitm.request_handler import UPSTREAM_UNAVAILABLE
from regauth.protocol.routes import JWKS_PATH
from regauth.protocol.routes import TOKEN_PATH
from regauth.runtime import Active
from regauth.tokens.keyids import key_id

if TYPE_CHECKING:
    from regauth.mitm.upstream_probe import UpstreamProbe

logger = logging.getLogger(__name__)

HOLD_TIMEOUT = 15.0  # seconds a request may wait for the first verdict
REMINDER_INTERVAL = 600.0  # seconds between the opt-out's warnings
_LOCAL = frozenset({TOKEN_PATH, JWKS_PATH})  # answered by regauth itself, never forwarded
NOT_CHECKED_YET = Verdict("unverified", "").refusal()
UNCHECKED_WARNING = (
    "regauth: WARNING: delegate mode runs UNCHECKED (--delegate-unchecked / "
    "regauth_delegate_unchecked): registry requests are forwarded even when the registry does "
    "not check regauth's tokens, and then anyone may read and write it. This is for test "
    "setups only; never run it in front of a registry anyone else can reach."
)


class DelegateGate:
    """Holds and refuses registry requests in delegate mode until the registry passed the
    delegate check; owns the verdict the probe feeds (`conclude`, `idle`)."""

    def __init__(self, config: ConfigLoader, hold_timeout: float = HOLD_TIMEOUT) -> None:
        self.config = config
        self.hold_timeout = hold_timeout
        self.tracker = Tracker()
        self.checked: Active | None = None  # the configuration the verdict was found with
        self.unchecked = False  # the opt-out
        self.probe: UpstreamProbe | None = None  # set by the admin listener, which runs it
        self.held = 0  # requests that waited for the first verdict (for tests and curiosity)
        self._settled: asyncio.Event | None = None
        self._reminded: float | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "regauth_delegate_unchecked",
            bool,
            False,
            "Delegate mode: forward even when the registry does not check "
            "regauth's tokens (an open registry). For test setups only.",
        )

    def configure(self, updated: set[str]) -> None:
        if "regauth_delegate_unchecked" in updated:
            self.unchecked = bool(ctx.options.regauth_delegate_unchecked)

    async def running(self) -> None:
        self._event()
        self.remind()

    @property
    def verdict(self) -> Verdict | None:
        return self.tracker.verdict

    def _event(self) -> asyncio.Event:
        if self._settled is None:
            self._settled = asyncio.Event()
            if self.tracker.verdict is not None:
                self._settled.set()
        return self._settled

    def wanted(self) -> Active | None:
        """The configuration in force when its upstream is in delegate mode, else None."""
        active = self.config.active
        if active is None or active.runtime.upstream_entry.mode != "delegate":
            return None
        return active

    @staticmethod
    def expected(active: Active) -> Expected:
        """What the registry must be configured with for `active`."""
        runtime = active.runtime
        signer = runtime.keyring.signer
        return Expected(
            active.realm,
            runtime.policy.service,
            runtime.policy.issuer,
            signer.name,
            key_id(signer.public_key, runtime.policy.token.kid_format),
        )

    @staticmethod
    def probe_token(active: Active) -> str:
        return probe_token(active.runtime.issuer)

    # -- fed by the probe --------------------------------------------------------------------

    def conclude(self, active: Active, verdict: Verdict | None, error: str) -> None:
        """One check round for `active`: its verdict, or None when it said nothing (`error`:
        what happened instead)."""
        changed = self.tracker.observe(verdict, error)
        self.checked = active
        self._event().set()
        if changed is not None:
            self._log(changed)
        self.remind()

    def idle(self) -> None:
        """The upstream is not in delegate mode (now): forget the verdict."""
        if self.tracker.verdict is not None:
            self.tracker.reset()
            self.checked = None
            self._event().clear()

    def remind(self) -> None:
        """The opt-out's warning, at start and every REMINDER_INTERVAL s in delegate mode."""
        if not self.unchecked or self.wanted() is None:
            return
        now = time.monotonic()
        if self._reminded is None or now - self._reminded >= REMINDER_INTERVAL:
            self._reminded = now
            logger.warning(UNCHECKED_WARNING)

    def _log(self, verdict: Verdict) -> None:
        if verdict.ok:
            logger.info("regauth: delegate check passed: %s", verdict.reason)
        elif self.unchecked:
            logger.warning(
                "regauth: delegate check: %s (not enforced: --delegate-unchecked)", verdict.reason
            )
        elif verdict.refuses:
            logger.error("regauth: delegate check: %s", verdict.reason)
        else:
            logger.warning(
                "regauth: delegate check: %s; /readyz says not ready until it is fixed",
                verdict.reason,
            )

    # -- read by the admin listener ----------------------------------------------------------

    def refusing(self) -> bool:
        """Whether registry requests are refused now (delegate mode, no opt-out, and no
        verdict yet or one that refuses)."""
        if self.unchecked or self.wanted() is None:
            return False
        verdict = self.tracker.verdict
        return verdict is None or verdict.refuses

    def readiness_problem(self) -> str | None:
        """Why `/readyz` must fail because of the delegate check, or None."""
        if self.unchecked or self.wanted() is None:
            return None
        verdict = self.tracker.verdict
        if verdict is None:
            return "delegate check: the registry has not been checked yet"
        return None if verdict.ok else f"delegate check: {verdict.reason}"

    def readiness_warnings(self) -> tuple[str, ...]:
        """`/readyz` lines under the opt-out (it never makes regauth unready)."""
        if not self.unchecked or self.wanted() is None:
            return ()
        verdict = self.tracker.verdict
        last = verdict.reason if verdict is not None else "the registry has not been checked yet"
        return (
            "the delegate check is off (--delegate-unchecked): registry requests are "
            f"forwarded whatever the check says; last check: {last}",
        )

    def result(self) -> str | None:
        """The `result` label of `regauth_delegate_check` (KINDS), None outside delegate mode."""
        if self.wanted() is None:
            return None
        verdict = self.tracker.verdict
        return verdict.kind if verdict is not None else "unverified"

    # -- the flow hook -------------------------------------------------------------------------

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.unchecked:
            return
        active = self.wanted()
        if active is None or flow.request.path.partition("?")[0] in _LOCAL:
            return
        if active is not self.checked and self.probe is not None:
            self.probe.kick()  # a new configuration (or none checked yet): check it now
        if self.tracker.verdict is None:
            self.held += 1
            try:
                await asyncio.wait_for(self._event().wait(), self.hold_timeout)
            except TimeoutError:
                pass
        verdict = self.tracker.verdict
        if verdict is None:
            reason = NOT_CHECKED_YET
        elif verdict.refuses:
            reason = verdict.refusal()
        else:
            return
        flow.metadata.setdefault(UPSTREAM_UNAVAILABLE, reason)
