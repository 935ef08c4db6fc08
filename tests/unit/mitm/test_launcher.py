"""The launcher in process: the mitmproxy arguments `regauth serve` passes, and regauth's
masters going through mitmproxy's own start-up (argument parsing, `--set`, option updates) up
to the point where they would open a port.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import argon2
import pytest
from mitmproxy import exceptions
from mitmproxy import options as moptions
from mitmproxy.tools import cmdline
from mitmproxy.tools.main import process_options

from regauth.mitm import launcher
from regauth.mitm.fail_closed import FailClosedGuard
from regauth.mitm.launcher import ServeConfig
from regauth.mitm.launcher import mitmproxy_args
from regauth.mitm.launcher import place_before_view
from tests.unit.mitm.harness import UPSTREAM
from tests.unit.mitm.harness import restoring_log_handlers


def _config(tmp_path: Path, policy: Path, certs: Path, **kwargs: object) -> ServeConfig:
    values: dict[str, object] = {
        "upstream": UPSTREAM,
        "listen_host": "127.0.0.1",
        "listen_port": 5443,
        "public_url": "https://localhost:5443",
        "certs_dir": certs,
        "policy": policy,
        "log": tmp_path / "exchange.jsonl",
        **kwargs,
    }
    return ServeConfig(**values)  # type: ignore[arg-type]


def _pairs(args: list[str]) -> list[tuple[str, str]]:
    return list(zip(args[::2], args[1::2], strict=False))


def test_the_arguments_of_regauth_serve(tmp_path, certs_dir):
    policy = tmp_path / "p.yaml"
    args = mitmproxy_args(_config(tmp_path, policy, certs_dir), None)
    pairs = _pairs(args)
    admin = [p for p in pairs if p[1].startswith("regauth_admin_listen=")]
    assert len(admin) == 1  # the default address, or off if it is taken on this host
    assert [p for p in pairs if p not in admin] == [
        ("--mode", f"reverse:{UPSTREAM}@127.0.0.1:5443"),
        ("--set", f"confdir={certs_dir / 'private'}"),
        ("--set", "connection_strategy=lazy"),
        ("--set", "http3=false"),
        ("--set", "request_client_cert=true"),
        ("--set", "block_global=false"),
        ("--set", "flow_detail=0"),
        ("--set", f"regauth_policy={policy}"),
        ("--set", f"regauth_certs_dir={certs_dir}"),
        ("--set", "regauth_public_url=https://localhost:5443"),
        ("--set", f"regauth_log={tmp_path / 'exchange.jsonl'}"),
    ]


def test_an_ipv6_listen_address_goes_in_bare(tmp_path, certs_dir):
    args = mitmproxy_args(
        _config(
            tmp_path,
            tmp_path / "p.yaml",
            certs_dir,
            listen_host="::1",
            public_url="https://[::1]:5443",
        ),
        None,
    )
    assert args[1] == f"reverse:{UPSTREAM}@::1:5443"


def test_an_upstream_ca_is_trusted_by_mitmproxy_and_by_regauth(tmp_path, certs_dir):
    ca = tmp_path / "ca.pem"
    args = mitmproxy_args(_config(tmp_path, tmp_path / "p.yaml", certs_dir, upstream_ca=ca), None)
    assert ("--set", f"ssl_verify_upstream_trusted_ca={ca}") in _pairs(args)
    assert ("--set", f"regauth_upstream_ca={ca}") in _pairs(args)


def test_mitmweb_arguments_and_extra_arguments_come_last(tmp_path, certs_dir):
    config = _config(
        tmp_path,
        tmp_path / "p.yaml",
        certs_dir,
        web=True,
        web_port=8090,
        extra=("--set", "regauth_idle_timeout=5"),
    )
    args = mitmproxy_args(config, "$argon2id$hash")
    web = args[args.index("--web-host") :]
    assert web[:5] == ["--web-host", "127.0.0.1", "--web-port", "8090", "--no-web-open-browser"]
    assert [v for k, v in _pairs(web[5:]) if v.startswith("web_columns=")] == [
        "web_columns=icon",
        "web_columns=path",
        "web_columns=method",
        "web_columns=status",
        "web_columns=comment",
        "web_columns=size",
        "web_columns=time",
    ]
    assert ("--set", "web_password=$argon2id$hash") in _pairs(web[5:])
    assert args[-2:] == ["--set", "regauth_idle_timeout=5"]


def test_place_before_view():
    default, view, after = object(), object(), object()
    ours = [object(), object()]
    guard = object()
    chain = [default, view, after, *ours, guard]
    place_before_view(chain, ours, view)
    assert chain == [default, *ours, view, after, guard]
    unchanged = [default, *ours, guard]
    place_before_view(unchanged, ours, None)
    assert unchanged == [default, *ours, guard]


# --- regauth's masters through mitmproxy's start-up -----------------------------------------


@functools.cache
def _web_password_hash() -> str:
    return argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("token")


def _start(config: ServeConfig, web: bool):
    """mitmproxy.tools.main.run up to (not including) master.run(): the master, its options."""

    async def start():
        opts = moptions.Options()
        master = launcher._master_class(web)(opts, with_termlog=False)
        parser = (cmdline.mitmweb if web else cmdline.mitmdump)(opts)
        args = parser.parse_args(mitmproxy_args(config, _web_password_hash() if web else None))
        opts.set(*args.setoptions, defer=True)
        process_options(parser, opts, args)
        return master

    with restoring_log_handlers():
        return asyncio.run(start())


@pytest.mark.parametrize("web", [False, True], ids=["mitmdump", "mitmweb"])
def test_regauth_serve_starts_with_its_addons_in_place(web, tmp_path, certs_dir, write_policy):
    master = _start(_config(tmp_path, write_policy(), certs_dir, web=web), web)
    chain = master.addons.chain
    names = [type(a).__name__ for a in chain]
    # The option policy runs first of all (a refused option is never acted on), the guard last.
    assert names[0] == "OptionPolicy"
    group = chain[names.index("RegauthAddons")]
    ours = [
        "Listener",
        "ConnectionLimits",
        "ConfigLoader",
        "DelegateGate",
        "SharedState",
        "FederationKeys",
        "ClientCertificates",
        "RequestHandler",
        "ResponseRewriter",
        "UpstreamKeyWatch",
        "MetricsObserver",
        "Recorder",
        "TlsFailures",
        "LogReopen",
        "AdminServer",
    ]
    assert [type(a).__name__ for a in group.addons] == ours
    assert isinstance(chain[-1], FailClosedGuard)
    if web:
        # regauth decides before the view shows anything
        assert chain[names.index("RegauthAddons") + 1] is master.view
    config = master.addons.get("configloader")
    assert config.active is not None and config.active.upstream.url == UPSTREAM
    options = master.options
    assert (options.connection_strategy, options.http3, options.block_global) == (
        "lazy",
        False,
        False,
    )
    if not web:
        assert options.flow_detail == 0


@pytest.mark.parametrize("web", [False, True], ids=["mitmdump", "mitmweb"])
@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        (("--set", "stickyauth=.*"), "stickyauth"),
        (("--anticache",), "anticache"),
        (("--ssl-insecure",), "ssl_insecure"),
        (("--set", "modify_headers=/~q/X-Forwarded-For/1.2.3.4"), "modify_headers"),
        (("--ignore-hosts", ".*"), "ignore_hosts"),
        (("--set", "keep_host_header=true"), "keep_host_header"),
        (("--set", "validate_inbound_headers=false"), "validate_inbound_headers"),
    ],
)
def test_options_that_bypass_regauth_stop_it_at_start(
    web, extra, refused, tmp_path, certs_dir, write_policy
):
    config = _config(tmp_path, write_policy(), certs_dir, web=web, extra=extra)
    with pytest.raises(exceptions.OptionsError, match=f"regauth: {refused}: not allowed"):
        _start(config, web)


def test_a_script_is_refused_at_start(tmp_path, certs_dir, write_policy):
    script = tmp_path / "addon.py"
    script.write_text("")
    config = _config(tmp_path, write_policy(), certs_dir, extra=("-s", str(script)))
    with pytest.raises(exceptions.OptionsError, match="regauth: scripts: not allowed"):
        _start(config, False)


def test_verbose_flow_lines_are_refused(tmp_path, certs_dir, write_policy):
    config = _config(tmp_path, write_policy(), certs_dir, extra=("-v",))
    with pytest.raises(exceptions.OptionsError, match="regauth: flow_detail: must be 0"):
        _start(config, False)


def test_a_second_proxy_mode_is_refused(tmp_path, certs_dir, write_policy):
    config = _config(tmp_path, write_policy(), certs_dir, extra=("--mode", "regular@8089"))
    with pytest.raises(exceptions.OptionsError, match="exactly one --mode reverse:URL"):
        _start(config, False)


def test_an_invalid_policy_stops_regauth_at_start(tmp_path, certs_dir, write_policy):
    config = _config(tmp_path, write_policy(text="version: 1\n"), certs_dir)
    with pytest.raises(exceptions.OptionsError, match="invalid policy"):
        _start(config, False)
