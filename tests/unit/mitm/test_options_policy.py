"""The option policy in process: an allow-list of mitmproxy options (README "Options: an
allow-list").

The options are the real ones of regauth's masters (mitmdump's and mitmweb's, with their names,
types and defaults); only the option policy reacts to them here, so each refusal shown is its
own. Hooks: `configure` at start and after `running`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from regauth.mitm.options_policy import STARTUP_OPTIONS
from regauth.mitm.options_policy import VIEW_OPTIONS
from regauth.mitm.options_policy import OptionPolicy
from tests.unit.mitm import harness
from tests.unit.mitm.harness import UPSTREAM
from tests.unit.mitm.harness import all_options

# README: "So `scripts`, `stickyauth`, ... are all refused": each with a value mitmproxy itself
# accepts.
REFUSED: dict[str, object] = {
    "scripts": ["addon.py"],
    "stickyauth": ".*",
    "stickycookie": ".*",
    "anticache": True,
    "anticomp": True,
    "modify_headers": ["/~q/X-Test/1"],
    "modify_body": ["/~q/a/b"],
    "map_remote": ["|example.com|example.org"],
    "map_local": ["|example.com|/srv"],
    "intercept": "~q",
    "ssl_insecure": True,
    "upstream_cert": False,
    "upstream_auth": "user:password",
    "proxyauth": "any",
    "keep_host_header": True,
    "ignore_hosts": [".*"],
    "allow_hosts": ["example.com"],
    "tcp_hosts": [".*"],
    "udp_hosts": [".*"],
    "client_replay": ["flows"],
    "server_replay": ["flows"],
    "save_stream_file": "flows",
    "hardump": "flows.har",
    "rfile": "flows",
    "web_static_viewer": "static",
    "stream_large_bodies": "1m",
    "store_streamed_bodies": True,
    "proxy_debug": True,
    "validate_inbound_headers": False,
}

# README: the options that may differ from their defaults at start, each with a value that
# differs from mitmproxy's default.
ALLOWED: dict[str, object] = {
    # set by `regauth serve` itself
    "mode": [f"reverse:{UPSTREAM}@127.0.0.1:5443"],
    "confdir": "certs/private",
    "connection_strategy": "lazy",
    "flow_detail": 0,
    "listen_host": "127.0.0.1",
    "listen_port": 5443,
    "http3": False,
    "block_global": False,
    "web_host": "0.0.0.0",
    "web_port": 8082,
    "web_open_browser": False,
    "web_password": "$argon2id$v=19$hash",
    "web_columns": ["icon", "path", "comment"],
    # TLS and trust
    "ssl_verify_upstream_trusted_ca": "ca.pem",
    "ssl_verify_upstream_trusted_confdir": "/etc/ssl/certs",
    "certs": ["*=cert.pem"],
    "cert_passphrase": "secret",
    "key_size": 4096,
    "ciphers_client": "ECDHE+AESGCM",
    "ciphers_server": "ECDHE+AESGCM",
    "tls_version_client_min": "TLS1_3",
    "tls_version_client_max": "TLS1_3",
    "tls_version_server_min": "TLS1_3",
    "tls_version_server_max": "TLS1_2",
    "tls_ecdh_curve_client": "prime256v1",
    "tls_ecdh_curve_server": "prime256v1",
    "request_client_cert": True,
    "client_certs": "client.pem",
    "add_upstream_certs_to_client_chain": True,
    # protocol and limits that can only refuse more
    "http2": False,
    "http2_ping_keepalive": 0,
    "body_size_limit": "1g",
    "tcp_timeout": 60,
    "block_private": True,
    # logging and view
    "termlog_verbosity": "warn",
    "command_history": False,
    "protobuf_definitions": "x.proto",
    "web_theme": "dark",
    "view_filter": "~q",
    "view_order": "size",
    "view_order_reversed": True,
    "content_view_lines_cutoff": 100,
    "console_focus_follow": True,
    "showhost": True,
    "show_ignored_hosts": True,
}


def _other_value(options, name: str) -> object:
    """A value of `name`'s type that differs from its default."""
    option = options._options[name]
    default, typespec = option.default, option.typespec
    if option.choices:
        return next(c for c in option.choices if c != default)
    if typespec is bool:
        return not default
    if typespec in (int, int | None):
        return (default or 0) + 1
    if typespec in (str, str | None):
        return "regauth-test"
    if typespec == Sequence[str]:
        return ["regauth-test"]
    raise AssertionError(f"no value for {name}: {typespec}")


OTHERS = sorted(
    set(all_options().keys())
    - STARTUP_OPTIONS
    - set(REFUSED)
    - {n for n in all_options().keys() if n.startswith("regauth_")}
)


@pytest.fixture
def policy():
    addon = OptionPolicy()
    with taddons.context(addon, options=all_options(), loadcore=False) as tctx:
        yield addon, tctx


def _refused(tctx, addon, match: str, **values: object) -> None:
    before = {name: getattr(tctx.options, name) for name in values}
    with pytest.raises(exceptions.OptionsError, match=match):
        tctx.configure(addon, **values)
    assert {name: getattr(tctx.options, name) for name in values} == before  # rolled back


def test_the_tables_follow_the_allow_list():
    options = all_options()
    assert set(ALLOWED) == STARTUP_OPTIONS
    assert not set(REFUSED) & STARTUP_OPTIONS
    assert VIEW_OPTIONS <= STARTUP_OPTIONS
    for name, value in {**ALLOWED, **REFUSED}.items():
        assert name in options, f"{name} is not an option of regauth's masters"
        assert value != options.default(name), name
    assert len(OTHERS) > 30  # the rest of mitmproxy's options: default deny


# --- at start ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_option_stops_regauth_at_start(name, policy):
    addon, tctx = policy
    _refused(tctx, addon, f"^regauth: {name}: not allowed with regauth", **{name: REFUSED[name]})


@pytest.mark.parametrize("name", OTHERS)
def test_any_other_option_changed_from_its_default_is_refused_too(name, policy):
    addon, tctx = policy
    value = _other_value(tctx.options, name)
    _refused(tctx, addon, f"^regauth: {name}: not allowed", **{name: value})


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_an_allowed_option_may_differ_from_its_default_at_start(name, policy):
    addon, tctx = policy
    tctx.configure(addon, **{name: ALLOWED[name]})
    assert getattr(tctx.options, name) == ALLOWED[name]


@pytest.mark.parametrize("name", ["regauth_policy", "regauth_whatever"])
def test_regauths_own_options_are_left_to_their_addons(name, policy):
    addon, tctx = policy
    tctx.options.add_option(name, str, "", "")
    tctx.configure(addon, **{name: "x"})


def test_refused_options_at_their_defaults_pass(policy):
    addon, tctx = policy
    tctx.configure(addon, **{name: tctx.options.default(name) for name in REFUSED})


def test_every_problem_is_named_at_once(policy):
    addon, tctx = policy
    # (mitmproxy re-checks the old values when it rolls a refused change back; with the
    # dumper's default flow_detail, that re-check would raise its own error instead.)
    tctx.configure(addon, flow_detail=0)
    with pytest.raises(exceptions.OptionsError) as raised:
        tctx.configure(addon, stickyauth=".*", flow_detail=2, ssl_insecure=True)
    message = str(raised.value)
    assert "flow_detail: must be 0" in message
    assert "ssl_insecure: not allowed" in message and "stickyauth: not allowed" in message


def test_what_regauth_serve_sets_passes_the_startup_check_of_every_option(policy):
    """At start mitmproxy configures every option at once; mitmproxy's defaults plus what
    `regauth serve` sets must pass, and the dumper's default flow_detail must not."""
    addon, tctx = policy
    everything = set(tctx.options.keys())
    with pytest.raises(exceptions.OptionsError, match=r"^regauth: flow_detail: must be 0$"):
        addon.configure(everything)
    tctx.options.update(
        mode=[f"reverse:{UPSTREAM}"],
        flow_detail=0,
        connection_strategy="lazy",
        http3=False,
        block_global=False,
    )
    addon.configure(everything)


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ([f"reverse:{UPSTREAM}"], None),
        (["reverse:https://registry.example:5000@[::1]:5443"], None),
        (
            ["regular"],
            None,
        ),  # mitmproxy's default: --set comes before --mode (the loader refuses it)
        (["socks5"], "exactly one --mode reverse:URL"),
        (["regular@8081"], "exactly one --mode reverse:URL"),
        ([f"upstream:{UPSTREAM}"], "exactly one --mode reverse:URL"),
        ([f"reverse:{UPSTREAM}", "regular@8081"], "exactly one --mode reverse:URL"),
        (
            [f"reverse:{UPSTREAM}@5443", f"reverse:{UPSTREAM}@5444"],
            "exactly one --mode reverse:URL",
        ),
        (["reverse:tcp://127.0.0.1:5000"], "must be http or https, not tcp"),
        (["reverse:tls://127.0.0.1:5000"], "must be http or https, not tls"),
    ],
)
def test_mode_must_be_one_reverse_proxy_to_an_http_registry(mode, problem, policy):
    addon, tctx = policy
    if problem is None:
        tctx.configure(addon, mode=mode)
    else:
        _refused(tctx, addon, f"^regauth: mode: .*{problem}", mode=mode)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, False), (2, False), (4, False)])
def test_flow_detail_must_be_0(value, ok, policy):
    addon, tctx = policy
    if ok:
        tctx.configure(addon, flow_detail=value)
    else:
        _refused(tctx, addon, "^regauth: flow_detail: must be 0", flow_detail=value)


@pytest.mark.parametrize(("value", "ok"), [("lazy", True), ("eager", True), ("bogus", False)])
def test_connection_strategy_must_be_lazy_or_eager(value, ok, policy):
    """mitmproxy does not enforce `choices` itself."""
    addon, tctx = policy
    if ok:
        tctx.configure(addon, connection_strategy=value)
    else:
        _refused(
            tctx,
            addon,
            "^regauth: connection_strategy: must be lazy or eager",
            connection_strategy=value,
        )


# --- while running ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VIEW_OPTIONS))
def test_view_options_may_change_while_regauth_runs(name, policy):
    addon, tctx = policy
    addon.running()
    tctx.configure(addon, **{name: ALLOWED[name]})
    assert getattr(tctx.options, name) == ALLOWED[name]


@pytest.mark.parametrize("name", sorted(STARTUP_OPTIONS - VIEW_OPTIONS))
def test_nothing_else_allowed_at_start_may_change_while_regauth_runs(name, policy):
    addon, tctx = policy
    addon.running()
    _refused(
        tctx,
        addon,
        f"^regauth: {name} cannot be changed while regauth runs; only view options can",
        **{name: ALLOWED[name]},
    )


@pytest.mark.parametrize("name", ["stickyauth", "scripts", "intercept", "rfile"])
def test_refused_options_stay_refused_while_regauth_runs(name, policy):
    addon, tctx = policy
    addon.running()
    _refused(
        tctx,
        addon,
        f"^regauth: {name} cannot be changed while regauth runs",
        **{name: REFUSED[name]},
    )


def test_regauths_own_options_are_set_at_start_only(policy):
    addon, tctx = policy
    tctx.options.add_option("regauth_policy", str, "", "")
    addon.running()
    _refused(tctx, addon, "^regauth: regauth_policy cannot be changed", regauth_policy="p.yaml")


def test_a_mixed_change_while_running_is_refused_whole(policy):
    addon, tctx = policy
    addon.running()
    _refused(
        tctx, addon, "^regauth: listen_port cannot be changed", view_filter="~q", listen_port=1
    )
    assert tctx.options.view_filter is None


def test_collecting_the_option_definitions_leaves_no_log_handler_behind():
    """The masters built to read the option definitions run outside any test (at collection):
    a log handler of theirs left on the root logger would post every later log line of the
    session to their closed event loop (RuntimeError: Event loop is closed)."""
    harness._option_specs.cache_clear()
    before = list(logging.getLogger().handlers)
    all_options()
    assert [h for h in logging.getLogger().handlers if h not in before] == []
