"""regauth's options, and the configuration snapshot every request is decided with.

`configure` builds one frozen `Active` (policy, keys, public URL, upstream, upstream
credentials) and swaps it in with a single assignment; a watcher task rebuilds it when the
policy file, the signing certificates or the key state change, and when a scheduled key
activation falls due. A failed rebuild keeps the last good snapshot. Each rebuilt snapshot is
first handed to the `before_swap` listeners (the embedded registry restarts there when the
trusted signing keys changed), so no new key signs before they have followed.
The watcher survives every exception: each refused edit is logged once (with its
`file:line:col` problems), counted, and the next valid edit is applied within the interval.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.utils import asyncio_utils

from regauth.ops import client_ca
from regauth.ops import pki
from regauth.ops.fetch import make_fetcher
from regauth.ops.public_url import default_public_url
from regauth.policy.reader import PolicyError
from regauth.protocol.urls import Origin
from regauth.protocol.urls import parse_origin
from regauth.runtime import Active
from regauth.runtime import build_runtime
from regauth.tokens import keystate
from regauth.upstream_auth import UpstreamAuth

logger = logging.getLogger(__name__)

OPTIONS = frozenset(
    {
        "regauth_policy",
        "regauth_certs_dir",
        "regauth_public_url",
        "regauth_upstream_ca",
        "regauth_stream_threshold",
        "regauth_reload_seconds",
    }
)
_TRACE_INTERVAL = 60.0  # seconds between full tracebacks of unexpected watcher errors


def upstream_from_modes(modes: list[str]) -> Origin:
    """The single reverse-proxy target regauth guards; raise ValueError otherwise."""
    parsed = [ProxyMode.parse(spec) for spec in modes]
    if len(parsed) != 1 or not isinstance(parsed[0], ReverseMode):
        raise ValueError(
            "regauth needs exactly one --mode reverse:URL (the registry it guards) "
            "and no other proxy mode"
        )
    mode = parsed[0]
    if mode.scheme not in ("http", "https"):
        raise ValueError(f"the upstream must be http or https, not {mode.scheme}")
    host, port = mode.address
    return Origin(mode.scheme, host.lower(), port)


def _stamp(paths: list[Path]) -> tuple[object, ...]:
    out: list[object] = []
    for path in paths:
        try:
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(path), None))
    return tuple(out)


def _build_active(
    policy: Path,
    certs_dir: Path,
    public: Origin,
    upstream: Origin,
    upstream_ca: str | None,
    stream_threshold: int,
) -> Active:
    runtime = build_runtime(policy, certs_dir, upstream.url)
    upstream_auth = None
    credentials = runtime.upstream_entry.credentials
    if credentials is not None:
        context = None
        if upstream.scheme == "https" or credentials.kind == "bearer":
            context = ssl.create_default_context(cafile=upstream_ca)
        upstream_auth = UpstreamAuth(credentials, upstream, make_fetcher(context))
    return Active(runtime, public, upstream, upstream_auth, stream_threshold)


class ConfigLoader:
    """Owns regauth's options and the `active` snapshot (None: refuse everything)."""

    def __init__(self) -> None:
        self.active: Active | None = None
        self.config_error: str | None = None
        # Outcomes of reload attempts: "ok", "refused" (a policy or key problem), "error"
        # (anything unexpected); read by metrics.
        self.reloads: Counter[str] = Counter()
        self.last_reload_success: float | None = None
        self._stamp: tuple[object, ...] = ()
        self._watcher: asyncio.Task[None] | None = None
        self._last_trace = float("-inf")
        # Awaited in order with each rebuilt snapshot before it is swapped in; one that raises
        # keeps the current snapshot. Whatever a listener releases runs after the swap: nothing
        # is awaited between the last listener and the assignment.
        self.before_swap: list[Callable[[Active], Awaitable[None]]] = []
        self._change_tried: float | None = None  # a scheduled key activation already tried

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "regauth_policy",
            str,
            "",
            "Policy file (YAML, format v1). Without one, every request is refused.",
        )
        loader.add_option(
            "regauth_certs_dir",
            str,
            "certs",
            "Directory with ca.crt, token-signing*.crt and private/.",
        )
        loader.add_option(
            "regauth_public_url",
            str,
            "",
            "URL clients use to reach regauth (realm and rewritten URLs point "
            "here). Default: https://localhost:<listen port>.",
        )
        loader.add_option(
            "regauth_upstream_ca",
            str,
            "",
            "PEM CA bundle for https upstreams and upstream token realms.",
        )
        loader.add_option(
            "regauth_stream_threshold",
            int,
            1024 * 1024,
            "Bodies larger than this many bytes (or of unknown size) stream "
            "through without being kept.",
        )
        loader.add_option(
            "regauth_reload_seconds",
            int,
            1,
            "How often the policy file is checked for changes (0 disables).",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & (OPTIONS | {"mode", "listen_port"}):
            return
        if ctx.options.regauth_stream_threshold < 0:
            raise exceptions.OptionsError("regauth_stream_threshold must be >= 0")
        if ctx.options.regauth_reload_seconds < 0:
            raise exceptions.OptionsError("regauth_reload_seconds must be >= 0")
        if not ctx.options.regauth_policy:
            self.active = None
            return
        try:
            upstream = upstream_from_modes(list(ctx.options.mode))
        except ValueError as e:
            # mitmproxy applies --set before --mode: wait for the mode, and refuse to run
            # (in `running`) if it never comes.
            self.active = None
            self.config_error = str(e)
            return
        self.config_error = None
        try:
            public_url = ctx.options.regauth_public_url or default_public_url(
                "127.0.0.1", ctx.options.listen_port or 8080
            )
            active = self._build(parse_origin(public_url), upstream)
        except PolicyError as e:
            raise exceptions.OptionsError(f"invalid policy:\n{e}") from None
        except ValueError as e:
            raise exceptions.OptionsError(f"regauth: {e}") from None
        self.active = active
        self._stamp = self._watch_stamp()
        runtime = active.runtime
        logger.info(
            "regauth: policy %s loaded (service %s, %d rules, upstream %s in %s mode)",
            self._policy_path(),
            runtime.policy.service,
            len(runtime.policy.rules),
            upstream.url,
            runtime.upstream_entry.mode,
        )

    def _policy_path(self) -> Path:
        return Path(ctx.options.regauth_policy)

    def _certs_dir(self) -> Path:
        return Path(ctx.options.regauth_certs_dir)

    def _build(self, public: Origin, upstream: Origin) -> Active:
        """Load policy and keys into a new snapshot; raise PolicyError or ValueError.
        Reads the options here, on the event loop; the loading itself may run in a thread."""
        return _build_active(
            self._policy_path(),
            self._certs_dir(),
            public,
            upstream,
            ctx.options.regauth_upstream_ca or None,
            ctx.options.regauth_stream_threshold,
        )

    def _watch_stamp(self) -> tuple[object, ...]:
        certs = self._certs_dir()
        paths = [
            self._policy_path(),
            certs / keystate.STATE_FILE,
            *sorted(certs.glob(f"{pki.SIGNING_STEM}*.crt")),
            certs / client_ca.CA_CERT,
            certs / client_ca.REVOKED,  # `regauth certs revoke` takes effect at the next check
        ]
        return _stamp(paths)

    async def running(self) -> None:
        if self.config_error:
            logger.error("regauth: %s", self.config_error)  # errorcheck exits on this
            return
        if ctx.options.regauth_policy and ctx.options.regauth_reload_seconds:
            self._watcher = asyncio_utils.create_task(
                self._watch(), name="regauth policy watch", keep_ref=True
            )
        if self.active is None:
            logger.warning("regauth: no policy loaded; every request is refused")

    async def _watch(self) -> None:
        """Poll for changes until cancelled; nothing but cancellation ends this loop."""
        while True:
            await asyncio.sleep(ctx.options.regauth_reload_seconds)
            try:
                await self.reload_if_changed()
            except Exception as e:  # the last line: this task must never die
                self.reloads["error"] += 1
                now = time.monotonic()
                trace = now - self._last_trace >= _TRACE_INTERVAL
                if trace:
                    self._last_trace = now
                logger.error(
                    "regauth: unexpected error while checking the policy (the last "
                    "good policy stays in force): %r",
                    e,
                    exc_info=e if trace else None,
                )

    async def reload_if_changed(self) -> bool | None:
        """Rebuild the snapshot if the watched files changed. Returns True (applied), False
        (refused: the last good snapshot stays) or None (nothing changed)."""
        stamp = self._watch_stamp()
        current = self.active
        change_at = current.runtime.key_change_at if current is not None else None
        due = change_at is not None and change_at != self._change_tried and time.time() >= change_at
        if stamp == self._stamp and not due:
            return None
        self._stamp = stamp
        self._change_tried = change_at if due else self._change_tried
        if current is None:
            return None
        try:
            active = await asyncio.to_thread(
                _build_active,
                self._policy_path(),
                self._certs_dir(),
                current.public,
                current.upstream,
                ctx.options.regauth_upstream_ca or None,
                ctx.options.regauth_stream_threshold,
            )
        except (PolicyError, ValueError, OSError) as e:
            self.reloads["refused"] += 1
            logger.error(
                "regauth: policy change refused, the last good policy stays in force:\n%s", e
            )
            return False
        try:
            for listener in self.before_swap:
                await listener(active)
        except Exception as e:
            self._stamp = ()  # try again at the next check
            self.reloads["error"] += 1
            logger.error(
                "regauth: the new configuration is not in force (the last good one stays): %s", e
            )
            return False
        self.active = active
        self.reloads["ok"] += 1
        self.last_reload_success = time.time()
        signer = active.runtime.keyring.signer
        if signer.name != current.runtime.keyring.signer.name:
            logger.info("regauth: tokens are signed with key %s from now on", signer.name)
        logger.info(
            "regauth: policy %s reloaded (%d rules)",
            self._policy_path(),
            len(active.runtime.policy.rules),
        )
        return True

    async def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
