"""An allow-list of mitmproxy options: nothing may change how regauth decides or forwards.

At start, every mitmproxy option keeps its default unless it is in `STARTUP_OPTIONS` (what
the launcher sets, TLS and listening settings, limits that can only refuse more, view
settings) or one of regauth's own (`regauth_*`); some of those must have particular values
(`_REQUIRED`). Anything else that differs from its default (`scripts`, `stickyauth`,
`modify_headers`, `intercept`, `ssl_insecure`, replays, ...) stops regauth with exit 1.

At run time (mitmweb's `/options`, the `set` command, a console) only `VIEW_OPTIONS` may
change; any other change is refused and mitmproxy rolls it back, so nothing is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import cast

from mitmproxy import ctx
from mitmproxy import exceptions

from regauth.mitm.config_loader import upstream_from_modes

# Options that change only what is shown.
VIEW_OPTIONS = frozenset(
    {
        "web_columns",
        "web_theme",
        "view_filter",
        "view_order",
        "view_order_reversed",
        "content_view_lines_cutoff",
        "console_focus_follow",
        "showhost",
        "show_ignored_hosts",
    }
)

# Options that may differ from their defaults at start (besides regauth_*): what the launcher
# sets, where to listen, TLS settings on either side, trust for the upstream, limits that can
# only refuse more, logging verbosity and view settings.
STARTUP_OPTIONS = VIEW_OPTIONS | frozenset(
    {
        "mode",
        "confdir",
        "connection_strategy",
        "flow_detail",
        "listen_host",
        "listen_port",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "web_host",
        "web_port",
        "web_open_browser",
        "web_password",
        "termlog_verbosity",
        "http2",
        "http3",
        "http2_ping_keepalive",
        "tls_version_client_min",
        "tls_version_client_max",
        "tls_version_server_min",
        "tls_version_server_max",
        "ciphers_client",
        "ciphers_server",
        "tls_ecdh_curve_client",
        "tls_ecdh_curve_server",
        "certs",
        "cert_passphrase",
        "key_size",
        "request_client_cert",
        "client_certs",
        "add_upstream_certs_to_client_chain",
        "body_size_limit",
        "tcp_timeout",
        "block_global",
        "block_private",
        "protobuf_definitions",
        "command_history",
    }
)


def _one_reverse_mode(value: object) -> str | None:
    try:
        # mitmproxy checks an option's type before any addon sees the value: `mode` is a
        # Sequence[str].
        upstream_from_modes(list(cast(Sequence[str], value)))
    except ValueError as e:
        return str(e)
    return None


# Allowed options whose value is constrained. Each check returns a problem or None.
_REQUIRED: dict[str, Callable[[object], str | None]] = {
    "mode": _one_reverse_mode,
    # Per-flow console lines would print capability ids (the exchange log has it all).
    "flow_detail": lambda v: None if v == 0 else "must be 0",
    "connection_strategy": lambda v: None if v in ("lazy", "eager") else "must be lazy or eager",
}


class OptionPolicy:
    """Refuses options outside the allow-list, however they are given (command line,
    `--set`, config.yaml, mitmweb, commands); mitmproxy rolls a refused change back."""

    def __init__(self) -> None:
        self.started = False
        self._accepted: dict[str, object] = {}
        self._rollback: dict[str, object] | None = None

    def running(self) -> None:
        self.started = True

    def configure(self, updated: set[str]) -> None:
        # mitmproxy rolls a refused change back and configures again: that restore is not
        # checked (it would replace the refusal's message with one about the old values).
        rollback, self._rollback = self._rollback, None
        if (
            rollback is not None
            and updated == set(rollback)
            and all(getattr(ctx.options, name) == value for name, value in rollback.items())
        ):
            return
        try:
            self._check(updated)
        except exceptions.OptionsError:
            self._rollback = {
                name: self._accepted.get(name, ctx.options.default(name)) for name in updated
            }
            raise
        for name in updated:
            self._accepted[name] = getattr(ctx.options, name)

    def _check(self, updated: set[str]) -> None:
        if self.started:
            changed = sorted(name for name in updated if name not in VIEW_OPTIONS)
            if changed:
                raise exceptions.OptionsError(
                    f"regauth: {', '.join(changed)} cannot be changed while regauth runs; only "
                    f"view options can ({', '.join(sorted(VIEW_OPTIONS))})"
                )
            return
        problems = []
        for name in sorted(updated):
            value = getattr(ctx.options, name)
            if name.startswith("regauth_"):
                continue
            if name not in STARTUP_OPTIONS:
                if value != ctx.options.default(name):
                    problems.append(
                        f"{name}: not allowed with regauth (it could change how "
                        "requests are decided, modified, routed, replayed, "
                        "intercepted or logged)"
                    )
                continue
            check = _REQUIRED.get(name)
            if name == "mode" and list(value) == list(ctx.options.default("mode")):
                # mitmproxy applies --set before --mode: the default mode is not yet an
                # error (the config loader refuses to serve if it stays).
                continue
            problem = check(value) if check is not None else None
            if problem:
                problems.append(f"{name}: {problem}")
        if problems:
            raise exceptions.OptionsError("regauth: " + "; ".join(problems))
