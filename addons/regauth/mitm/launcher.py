"""`regauth serve`: mitmdump or mitmweb with regauth built into the master.

The addons are added to the master object itself, not loaded as a script: there is no script
reload that could unload them and no script-option parse failure that could silently skip them
(mitmproxy#8013). Everything is also validated before mitmproxy starts, so a bad policy or
missing key exits non-zero before a port is opened.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from regauth.ops import pki
from regauth.ops.trust import trust_instructions
from regauth.protocol.urls import parse_origin
from regauth.runtime import build_runtime
from regauth.tools import EXIT_OK

if TYPE_CHECKING:
    from mitmproxy.addonmanager import AddonManager
    from mitmproxy.master import Master
    from mitmproxy.options import Options

    from regauth.mitm.embedded_registry import EmbeddedRegistry

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    upstream: str
    listen_host: str
    listen_port: int
    public_url: str
    certs_dir: Path
    policy: Path
    log: Path
    upstream_ca: Path | None = None
    web: bool = False
    web_port: int = 8081
    extra: tuple[str, ...] = ()
    registry_dir: Path | None = None  # run the embedded registry here (then `upstream` is it)
    # HOST:PORT or "off"; None: DEFAULT_ADMIN_LISTEN if that port is free (else off, with a
    # warning: a second regauth on one host should not fail for want of the default port).
    admin_listen: str | None = None
    state: str = ""  # login-limit counters: "" in memory, or redis://HOST:PORT/DB
    delegate_unchecked: bool = False  # forward in delegate mode whatever the registry checks
    proxy_protocol: str = ""  # CIDR[,CIDR...] of the balancers sending a PROXY header
    plain_http: bool = False  # serve plain HTTP besides TLS on the proxy port (tests only)
    verbose: bool = False  # console: also routine flows and connection churn (console_log)


DEFAULT_ADMIN_LISTEN = "127.0.0.1:9090"


def resolve_admin_listen(value: str | None) -> str:
    """The admin address to use; see ServeConfig.admin_listen."""
    if value is not None:
        return value
    try:
        with socket.create_server(("127.0.0.1", 9090)):
            pass
    except OSError:
        print(
            f"admin listener off: {DEFAULT_ADMIN_LISTEN} is in use (set --admin-listen or "
            "REGAUTH_ADMIN_LISTEN)",
            file=sys.stderr,
            flush=True,
        )
        return "off"
    return DEFAULT_ADMIN_LISTEN


def mitmproxy_args(config: ServeConfig, web_password_hash: str | None) -> list[str]:
    # mitmproxy splits the listen address at its last ':', so an IPv6 host goes in bare
    # (`@::1:5443`); brackets would reach the resolver as part of the name.
    args = [
        "--mode",
        f"reverse:{config.upstream}@{config.listen_host}:{config.listen_port}",
        "--set",
        f"confdir={config.certs_dir / pki.PRIVATE_DIR}",
        "--set",
        "connection_strategy=lazy",
        # HTTP/1.1 and HTTP/2 only: framing and stream isolation are proven for those.
        "--set",
        "http3=false",
        # Ask every TLS client for a certificate (never require one): a certificate of
        # regauth's client CA is an identity (mitm/client_certs.py); without one, nothing changes.
        "--set",
        "request_client_cert=true",
        # mitmproxy's default kills clients with public addresses (meant for open forward
        # proxies); a registry front serves them. regauth's own limits apply instead.
        "--set",
        "block_global=false",
        # Flow lines on the console would print capability ids; the exchange log has it all.
        "--set",
        "flow_detail=0",
        "--set",
        f"regauth_policy={config.policy}",
        "--set",
        f"regauth_certs_dir={config.certs_dir}",
        "--set",
        f"regauth_public_url={config.public_url}",
        "--set",
        f"regauth_log={config.log}",
        "--set",
        f"regauth_admin_listen={resolve_admin_listen(config.admin_listen)}",
    ]
    if config.state:
        args += ["--set", f"regauth_state={config.state}"]
    if config.delegate_unchecked:
        args += ["--set", "regauth_delegate_unchecked=true"]
    if config.proxy_protocol:
        args += ["--set", f"regauth_proxy_protocol={config.proxy_protocol}"]
    if config.plain_http:
        args += ["--set", "regauth_plain_http=true"]
    if config.verbose:
        args += ["--set", "regauth_verbose=true"]
    if config.upstream_ca is not None:
        args += [
            "--set",
            f"ssl_verify_upstream_trusted_ca={config.upstream_ca}",
            "--set",
            f"regauth_upstream_ca={config.upstream_ca}",
        ]
    if config.web:
        args += [
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(config.web_port),
            "--no-web-open-browser",
            # regauth's comment (what happened in auth terms, and the conversation) and
            # marker are the point of watching: show them by default.
            "--set",
            "web_columns=icon",
            "--set",
            "web_columns=path",
            "--set",
            "web_columns=method",
            "--set",
            "web_columns=status",
            "--set",
            "web_columns=comment",
            "--set",
            "web_columns=size",
            "--set",
            "web_columns=time",
        ]
        if web_password_hash:
            args += ["--set", f"web_password={web_password_hash}"]
    return args + list(config.extra)


def _master_class(web: bool, embedded: EmbeddedRegistry | None = None) -> type[Master]:
    from regauth.mitm import log_safety
    from regauth.mitm.addons_list import make_addons
    from regauth.mitm.options_policy import OptionPolicy

    if web:
        from mitmproxy.tools.web.master import WebMaster as Base

        from regauth.mitm.patches import web_window

        web_window.install()  # before the web application is built
    else:
        # mypy takes Base to be WebMaster (the first import); either is a Master.
        from mitmproxy.tools.dump import DumpMaster as Base  # type: ignore[assignment]

    class RegauthMaster(Base):
        def __init__(self, options: Options, **kwargs: Any) -> None:
            super().__init__(options, **kwargs)
            # The master's addons installed the console and event-log handlers: from now on
            # every record they show has capability ids hidden and control characters escaped.
            log_safety.install()
            prune_inert_addons(self.addons)
            addons = make_addons(embedded)
            policy = next(a for a in addons if isinstance(a, OptionPolicy))
            # One top-level entry for regauth's addons (the option policy and the guard stay
            # on their own): mitmproxy pays a context manager and a coroutine per top-level
            # addon and event, eight events per request (bench/control.py).
            group = RegauthAddons([a for a in addons[:-1] if a is not policy])
            self.addons.add(policy, group, addons[-1])
            place_before_view(self.addons.chain, [group], getattr(self, "view", None))
            # The option policy sees every option change before any other addon acts on it
            # (mitmproxy rolls a refused change back, but an addon configured before the
            # refusal would already have opened a file, started a replay or moved a listener).
            self.addons.chain.remove(policy)
            self.addons.chain.insert(0, policy)

    return RegauthMaster


# mitmproxy's default addons that can never act in regauth: every option that would make them
# act is pinned to its default by the option policy (options_policy.STARTUP_OPTIONS; a unit
# test checks it), and at those defaults their hooks return at once, or they only add
# commands (which stay registered). Onboarding is pinned *on*, but only answers requests to
# `mitm.it`, which in reverse mode could only be the upstream itself: regauth decides alone.
# Each addon in the chain costs every event of every request, so they are taken out of it.
INERT_ADDONS = frozenset(
    {
        "AntiCache",
        "AntiComp",
        "BlockList",
        "Browser",
        "ClientPlayback",
        "Comment",
        "Cut",
        "DnsResolver",
        "Export",
        "MapLocal",
        "MapRemote",
        "ModifyBody",
        "ModifyHeaders",
        "Onboarding",
        "ProxyAuth",
        "Save",
        "SaveHar",
        "ServerPlayback",
        "StickyAuth",
        "StickyCookie",
        "StripDnsHttpsRecords",
        "UpstreamAuth",
    }
)


def prune_inert_addons(manager: AddonManager) -> None:
    """Take INERT_ADDONS out of the event chain; their options and commands stay."""
    manager.chain = [a for a in manager.chain if type(a).__name__ not in INERT_ADDONS]


class RegauthAddons:
    """regauth's addons as the children of one chain entry, in make_addons() order."""

    def __init__(self, children: list[object]) -> None:
        self.addons = children


def place_before_view(chain: list[object], ours: list[object], view: object | None) -> None:
    """Run regauth's addons (all but the guard, which stays last) just before mitmweb's view:
    after every mitmproxy addon that could still change a request, so regauth decides on what
    is sent, and before the view broadcasts a flow, so what it shows already carries regauth's
    comment and marker."""
    if view is None or view not in chain:
        return
    for addon in ours:
        chain.remove(addon)
    at = chain.index(view)
    chain[at:at] = ours


class _NoStreamingNotices(logging.Filter):
    """mitmproxy logs `Streaming response from HOST.` (and `Streaming request to`) at info for
    every streamed message; regauth streams every upstream response, so that is a console
    line, two writes and a loop wake-up per request, saying nothing (bench/control.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (
            isinstance(message, str)
            and message.startswith(("Streaming response from ", "Streaming request to "))
        )


def quiet_streaming_notices() -> None:
    logging.getLogger("mitmproxy.proxy.server").addFilter(_NoStreamingNotices())


def ensure_dhparam(certs_dir: Path) -> None:
    """Write mitmproxy's DH parameters next to its CA atomically: replicas starting together
    on one certs directory would otherwise race on mitmproxy's own truncate-and-write."""
    from mitmproxy.certs import DEFAULT_DHPARAM

    target = certs_dir / pki.PRIVATE_DIR / "mitmproxy-dhparam.pem"
    if target.exists():
        return
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    temporary.write_bytes(DEFAULT_DHPARAM)
    temporary.replace(target)


def serve(config: ServeConfig) -> int:
    """Validate, print trust instructions, run until interrupted. Returns the exit code.
    With `registry_dir`, regauth's own registry runs as long as regauth does."""
    embedded = None
    if config.registry_dir is not None:
        from regauth.mitm.embedded_registry import EmbeddedRegistry

        embedded = EmbeddedRegistry.create(
            config.registry_dir, config.certs_dir, config.policy, config.public_url
        )
        config = dataclasses.replace(config, upstream=embedded.url)
    try:
        return _serve(config, embedded)
    finally:
        if embedded is not None:
            embedded.stop()


def _serve(config: ServeConfig, embedded: EmbeddedRegistry | None) -> int:
    public = parse_origin(config.public_url)
    runtime = build_runtime(config.policy, config.certs_dir, parse_origin(config.upstream).url)
    if embedded is not None:
        embedded.start()
        print(
            f"embedded registry: {embedded.url} (token mode, storage "
            f"{config.registry_dir / 'data' if config.registry_dir else ''})",
            flush=True,
        )
    web_token = secrets.token_urlsafe(24) if config.web else None
    web_hash = None
    if web_token:
        import argon2

        web_hash = argon2.PasswordHasher().hash(web_token)
    print(trust_instructions(public, config.certs_dir / pki.CA_CERT), flush=True)
    print(
        f"policy {config.policy}: service {runtime.policy.service}, "
        f"{len(runtime.policy.rules)} rules, upstream {config.upstream} "
        f"({runtime.upstream_entry.mode} mode)",
        flush=True,
    )
    print(f"exchange log: {config.log}", flush=True)
    if web_token:
        print(f"mitmweb: http://127.0.0.1:{config.web_port}/?token={web_token}", flush=True)
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.main import run

    ensure_dhparam(config.certs_dir)
    quiet_streaming_notices()
    parser = cmdline.mitmweb if config.web else cmdline.mitmdump
    master = run(_master_class(config.web, embedded), parser, mitmproxy_args(config, web_hash))
    del master
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `regauth serve`")
