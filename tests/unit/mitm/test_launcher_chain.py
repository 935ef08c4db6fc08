"""The master `regauth serve` builds: mitmproxy's inert addons out of the event chain,
regauth's addons one chain entry with the guard last, no per-request streaming notices."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import options
from mitmproxy.addons import default_addons
from mitmproxy.test import taddons

from regauth.mitm.fail_closed import FailClosedGuard
from regauth.mitm.launcher import INERT_ADDONS
from regauth.mitm.launcher import RegauthAddons
from regauth.mitm.launcher import _master_class
from regauth.mitm.launcher import _NoStreamingNotices
from regauth.mitm.options_policy import STARTUP_OPTIONS
from regauth.mitm.options_policy import OptionPolicy


def test_inert_addons_exist_and_every_option_of_theirs_is_pinned_to_its_default():
    defaults = {type(a).__name__: a for a in default_addons()}
    assert INERT_ADDONS <= set(defaults), INERT_ADDONS - set(defaults)
    for name in INERT_ADDONS:
        with taddons.context() as tctx:
            before = set(tctx.options.keys())
            tctx.master.addons.add(defaults[name])
            added = set(tctx.options.keys()) - before
        # The option policy refuses any of these at a value other than its default.
        assert not added & STARTUP_OPTIONS, (name, added & STARTUP_OPTIONS)
        assert not any(o.startswith("regauth_") for o in added)


def test_the_chain_of_regauth_serve():
    async def build():
        master = _master_class(web=False)(options.Options(), with_termlog=False)
        return master

    master = asyncio.run(build())
    chain = master.addons.chain
    names = [type(a).__name__ for a in chain]
    assert not set(names) & INERT_ADDONS
    assert isinstance(chain[-1], FailClosedGuard)
    assert isinstance(chain[-2], RegauthAddons)
    assert isinstance(chain[0], OptionPolicy)  # sees every option change first
    children = [type(a).__name__ for a in chain[-2].addons]
    assert children == [
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
    for name in (
        "requesthandler",
        "recorder",
        "adminserver",
        "disableh2c",
        "tlsconfig",
        "proxyserver",
        "nextlayer",
        "errorcheck",
    ):
        assert master.addons.get(name) is not None, name
    # Options of the addons out of the chain still exist, so the option policy still sees
    # (and refuses) them.
    assert "modify_headers" in master.options and "save_stream_file" in master.options


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord(
        "mitmproxy.proxy.server", logging.INFO, __file__, 1, message, None, None
    )


def test_streaming_notices_are_dropped_and_nothing_else():
    keep = _NoStreamingNotices().filter
    assert not keep(_record("Streaming response from 127.0.0.1."))
    assert not keep(_record("Streaming request to registry.example."))
    assert keep(_record("client connect"))
    assert keep(_record("server connect 127.0.0.1:5000"))
    assert keep(_record("mitmproxy has crashed!"))
