"""The config loader in process: regauth's options, the `Active` snapshot, and the reload
watcher (README "Hot reload", "Fail closed").

Hooks: `load`, `configure` (policy, mode, options), `running` (the watcher, a missing mode),
`done`; and `reload_if_changed` / the watcher loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import types

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from regauth.mitm import config_loader
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.config_loader import upstream_from_modes
from regauth.ops import pki
from regauth.protocol.urls import Origin
from tests.support.policies import policy_text
from tests.unit.mitm.harness import PUBLIC
from tests.unit.mitm.harness import UPSTREAM
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import upstream_response

MORE_RULES = """  - comment: added later
    account: any
    repository: "late/**"
    actions: [pull]
"""


@pytest.fixture
def certs(tmp_path, certs_dir):
    """A private copy of the test keys: these tests add and break keys."""
    return shutil.copytree(certs_dir, tmp_path / "certs")


@pytest.fixture
def loader():
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        yield addon, tctx


def _configure(tctx, addon, policy, certs, **options):
    settings = {
        "mode": [f"reverse:{UPSTREAM}"],
        "regauth_certs_dir": str(certs),
        "regauth_public_url": PUBLIC,
        "regauth_reload_seconds": 0,
        "regauth_policy": str(policy),
        **options,
    }
    tctx.configure(addon, **settings)


def _edit(path, text):
    """Replace a watched file so that its stamp changes even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


# --- options and configure -------------------------------------------------------------------


def test_regauths_options_and_their_defaults(loader):
    _, tctx = loader
    options = tctx.options
    assert options.regauth_policy == "" and options.regauth_certs_dir == "certs"
    assert options.regauth_public_url == "" and options.regauth_upstream_ca == ""
    assert options.regauth_stream_threshold == 1024 * 1024
    assert options.regauth_reload_seconds == 1


def test_a_policy_builds_one_snapshot(loader, write_policy, certs, caplog):
    addon, tctx = loader
    caplog.set_level(logging.INFO)
    policy = write_policy()
    _configure(tctx, addon, policy, certs, regauth_stream_threshold=4096)
    active = addon.active
    assert active is not None and addon.config_error is None
    assert active.public == Origin("https", "localhost", 5443)
    assert active.upstream == Origin("http", "127.0.0.1", 5000)
    assert active.realm == f"{PUBLIC}/v2/token" and active.stream_threshold == 4096
    assert active.upstream_auth is None
    assert active.runtime.policy.service == "regauth-test"
    assert (
        f"regauth: policy {policy} loaded (service regauth-test, 6 rules, upstream "
        f"{UPSTREAM} in enforce mode)"
    ) in caplog.text


def test_the_public_url_defaults_to_localhost_and_the_listen_port(loader, write_policy, certs):
    addon, tctx = loader
    _configure(tctx, addon, write_policy(), certs, regauth_public_url="", listen_port=6000)
    assert addon.active.public == Origin("https", "localhost", 6000)


def test_inject_credentials_give_the_snapshot_an_upstream_authenticator(
    loader, write_policy, certs
):
    addon, tctx = loader
    _configure(
        tctx,
        addon,
        write_policy(
            upstream_extra="""    credentials:
      type: basic
      username: robot
      password: robot-secret
"""
        ),
        certs,
    )
    assert addon.active.upstream_auth is not None
    assert addon.active.upstream_auth.upstream == addon.active.upstream


def test_without_a_policy_there_is_no_snapshot(loader, certs, caplog):
    addon, tctx = loader
    _configure(tctx, addon, "", certs)
    assert addon.active is None
    asyncio.run(addon.running())
    assert "regauth: no policy loaded; every request is refused" in caplog.text


def test_an_invalid_policy_is_refused_with_its_position(loader, write_policy, certs):
    addon, tctx = loader
    policy = write_policy(text="version: 1\nservice: x\nrules: [\n")
    with pytest.raises(exceptions.OptionsError, match=rf"^invalid policy:\n{policy}:\d+:\d+: "):
        _configure(tctx, addon, policy, certs)
    assert addon.active is None and tctx.options.regauth_policy == ""  # rolled back


def test_an_invalid_policy_later_keeps_the_current_snapshot(loader, write_policy, certs):
    addon, tctx = loader
    policy = write_policy()
    _configure(tctx, addon, policy, certs)
    broken = write_policy("broken.yaml", text="version: 2\n")
    with pytest.raises(exceptions.OptionsError, match="invalid policy"):
        tctx.configure(addon, regauth_policy=str(broken))
    # mitmproxy rolls the option back, and the snapshot is the good policy's again.
    assert addon.active.runtime.policy.source == str(policy)
    assert tctx.options.regauth_policy == str(policy)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"regauth_public_url": "ftp://x"}, "^regauth: "),
        ({"regauth_certs_dir": "/nonexistent"}, "^regauth: no token-signing keys"),
    ],
)
def test_values_that_do_not_build_a_snapshot_are_refused(
    options, match, loader, write_policy, certs
):
    addon, tctx = loader
    with pytest.raises(exceptions.OptionsError, match=match):
        _configure(tctx, addon, write_policy(), certs, **options)
    assert addon.active is None


def test_a_policy_without_an_entry_for_the_upstream_is_refused(
    loader, write_policy, certs, password_hashes
):
    addon, tctx = loader
    text = policy_text(password_hashes).replace('url: "*"', "url: https://other.example")
    with pytest.raises(exceptions.OptionsError, match="no `upstreams:` entry matches"):
        _configure(tctx, addon, write_policy(text=text), certs)


@pytest.mark.parametrize("name", ["regauth_stream_threshold", "regauth_reload_seconds"])
def test_negative_values_are_refused(name, loader, write_policy, certs):
    addon, tctx = loader
    with pytest.raises(exceptions.OptionsError, match=f"^{name} must be >= 0$"):
        _configure(tctx, addon, write_policy(), certs, **{name: -1})
    _configure(tctx, addon, write_policy(), certs, **{name: 0})
    assert addon.active is not None


def test_the_mode_may_come_after_the_policy_but_must_come(loader, write_policy, certs, caplog):
    """mitmproxy applies --set before --mode: the default mode is not yet an error."""
    addon, tctx = loader
    _configure(tctx, addon, write_policy(), certs, mode=["regular"])
    assert addon.active is None and "exactly one --mode reverse:URL" in addon.config_error
    tctx.configure(addon, mode=[f"reverse:{UPSTREAM}"])
    assert addon.active is not None and addon.config_error is None


def test_running_without_a_reverse_mode_is_an_error(loader, write_policy, certs, caplog):
    addon, tctx = loader
    _configure(tctx, addon, write_policy(), certs, mode=["regular"])
    asyncio.run(addon.running())
    [record] = [r for r in caplog.records if r.name == "regauth.mitm.config_loader"]
    assert record.levelno == logging.ERROR  # mitmproxy's errorcheck exits on it
    assert "regauth needs exactly one --mode reverse:URL" in record.getMessage()
    assert addon._watcher is None


def test_other_options_leave_the_snapshot_alone(loader, write_policy, certs):
    addon, tctx = loader
    _configure(tctx, addon, write_policy(), certs)
    active = addon.active
    tctx.configure(addon, showhost=True, listen_host="127.0.0.1")
    assert addon.active is active


@pytest.mark.parametrize(
    ("modes", "origin"),
    [
        ([f"reverse:{UPSTREAM}"], Origin("http", "127.0.0.1", 5000)),
        (["reverse:https://Registry.Example"], Origin("https", "registry.example", 443)),
        (["reverse:http://[::1]:5000@[::1]:5443"], Origin("http", "::1", 5000)),
    ],
)
def test_upstream_from_modes(modes, origin):
    assert upstream_from_modes(modes) == origin


@pytest.mark.parametrize(
    "modes",
    [
        [],
        ["regular"],
        ["reverse:http://a", "reverse:http://b"],
        ["reverse:dns://1.1.1.1"],
        ["socks5"],
    ],
)
def test_upstream_from_modes_refuses_anything_but_one_http_reverse_proxy(modes):
    with pytest.raises(ValueError):
        upstream_from_modes(modes)


# --- reloading ---------------------------------------------------------------------------------


@run
async def test_nothing_changed_nothing_reloaded(write_policy, certs):
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        _configure(tctx, addon, write_policy(), certs)
        active = addon.active
        assert await addon.reload_if_changed() is None
    assert addon.active is active and not addon.reloads


@run
async def test_a_policy_change_is_applied_as_a_new_snapshot(
    write_policy, certs, password_hashes, caplog
):
    caplog.set_level(logging.INFO)
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        policy = write_policy()
        _configure(tctx, addon, policy, certs)
        old = addon.active
        _edit(policy, policy_text(password_hashes, extra_rules=MORE_RULES))
        assert await addon.reload_if_changed() is True
        assert await addon.reload_if_changed() is None  # once
    new = addon.active
    assert new is not old and len(new.runtime.policy.rules) == len(old.runtime.policy.rules) + 1
    assert (new.public, new.upstream) == (old.public, old.upstream)
    assert addon.reloads == {"ok": 1} and addon.last_reload_success is not None
    assert f"regauth: policy {policy} reloaded (7 rules)" in caplog.text


@run
async def test_a_refused_edit_keeps_the_last_good_snapshot_and_is_counted(
    write_policy, certs, password_hashes, caplog
):
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        policy = write_policy()
        _configure(tctx, addon, policy, certs)
        good = addon.active
        _edit(
            policy,
            policy_text(password_hashes).replace("actions: [pull]\n", "actions: [pull, fly]\n", 1),
        )
        assert await addon.reload_if_changed() is False
        assert addon.active is good
        assert await addon.reload_if_changed() is None  # logged once, not every second
        policy.unlink()  # a deleted policy file: refused too
        assert await addon.reload_if_changed() is False
        assert addon.active is good
        _edit(policy, policy_text(password_hashes, extra_rules=MORE_RULES))
        assert await addon.reload_if_changed() is True  # the next valid edit
    assert addon.reloads == {"refused": 2, "ok": 1}
    refusals = [r.getMessage() for r in caplog.records if "policy change refused" in r.getMessage()]
    assert len(refusals) == 2
    # The first line is fixed; the problem follows on the next line (indented when the log
    # safety filter of another test is still installed on the logger).
    head, problem = refusals[0].split("\n", 1)
    assert head == "regauth: policy change refused, the last good policy stays in force:"
    assert problem.lstrip().startswith(f"{policy}:32:")
    assert all(
        r.levelno == logging.ERROR
        for r in caplog.records
        if "policy change refused" in r.getMessage()
    )


@run
async def test_a_new_signing_key_triggers_a_rebuild(write_policy, certs):
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        _configure(tctx, addon, write_policy(), certs)
        before = addon.active.runtime.keyring
        pki.rotate_signing_key(certs)
        assert await addon.reload_if_changed() is True
    after = addon.active.runtime.keyring
    assert len(after.keys) == len(before.keys) + 1
    assert after.keys[-1].name.startswith(pki.SIGNING_STEM + "-")


@run
async def test_a_broken_signing_key_is_refused_and_the_old_keys_stay(write_policy, certs, caplog):
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        _configure(tctx, addon, write_policy(), certs)
        good = addon.active
        key, _ = pki.rotate_signing_key(certs)
        key.chmod(0o644)
        assert await addon.reload_if_changed() is False
    assert addon.active is good and addon.reloads == {"refused": 1}
    assert "accessible by other users" in caplog.text


@run
async def test_without_a_snapshot_there_is_nothing_to_reload(certs, write_policy):
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        _configure(tctx, addon, write_policy(), certs, mode=["regular"])
        pki.rotate_signing_key(certs)
        assert await addon.reload_if_changed() is None
    assert addon.active is None


@run
async def test_a_request_is_decided_with_the_snapshot_it_started_with(
    write_policy, certs, password_hashes
):
    policy = write_policy(mode="delegate")
    async with running(policy, certs) as harness:
        flow = registry_flow("/v2/late/app/manifests/1")
        await harness.hook("requestheaders", flow)
        before = harness.states.get(flow).active
        _edit(policy, policy_text(password_hashes, extra_rules=MORE_RULES))
        assert await harness.config.reload_if_changed() is True
        assert harness.states.get(flow).active is before is not harness.config.active
        await harness.hook("request", flow)
        await harness.answer(flow, upstream_response(200))
    assert flow.response.status_code == 200


# --- the watcher -------------------------------------------------------------------------------


@pytest.fixture
def fast_watch(monkeypatch):
    """The watcher's sleep takes a millisecond instead of regauth_reload_seconds."""
    real_sleep = asyncio.sleep

    async def sleep(_seconds):
        await real_sleep(0.001)

    monkeypatch.setattr(
        config_loader, "asyncio", types.SimpleNamespace(sleep=sleep, to_thread=asyncio.to_thread)
    )


async def _until(condition, seconds=5.0):
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


@run
async def test_the_watcher_survives_an_unexpected_error_and_applies_the_next_edit(
    write_policy, certs, password_hashes, monkeypatch, fast_watch, caplog
):
    addon = ConfigLoader()
    real_build = config_loader._build_active
    calls = []

    def build(*args):
        calls.append(args)
        if len(calls) <= 2:
            raise RuntimeError("unexpected")
        return real_build(*args)

    with taddons.context(addon) as tctx:
        policy = write_policy()
        _configure(tctx, addon, policy, certs, regauth_reload_seconds=1)
        good = addon.active
        monkeypatch.setattr(config_loader, "_build_active", build)
        await addon.running()
        assert addon._watcher is not None
        _edit(policy, policy_text(password_hashes, extra_rules=MORE_RULES))
        await _until(lambda: addon.reloads["error"] == 1)
        assert addon.active is good  # the last good snapshot stays
        pki.rotate_signing_key(certs)
        await _until(lambda: addon.reloads["error"] == 2)
        _edit(policy, policy_text(password_hashes))
        await _until(lambda: addon.reloads["ok"] == 1)
        assert not addon._watcher.done()
        await addon.done()
        await asyncio.sleep(0)
        assert addon._watcher.cancelled() or addon._watcher.done()
    assert addon.active is not good
    errors = [
        r for r in caplog.records if "unexpected error while checking the policy" in r.getMessage()
    ]
    assert len(errors) == 2 and all(r.levelno == logging.ERROR for r in errors)
    assert "RuntimeError('unexpected')" in errors[0].getMessage()
    assert [r.exc_info is not None for r in errors] == [True, False]  # one traceback a minute


@run
async def test_no_watcher_when_reloading_is_off(write_policy, certs):
    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        _configure(tctx, addon, write_policy(), certs, regauth_reload_seconds=0)
        await addon.running()
        assert addon._watcher is None
        await addon.done()


@run
async def test_the_first_unexpected_error_gets_its_traceback_however_soon_after_boot(
    write_policy, certs, password_hashes, monkeypatch, fast_watch, caplog
):
    """The interval is counted from the last traceback, not from the clock's zero: the
    monotonic clock starts at boot, so a regauth started within a minute of it must still
    log the first traceback."""
    monkeypatch.setattr(
        config_loader, "time", types.SimpleNamespace(monotonic=lambda: 5.0, time=time.time)
    )

    def build(*_args):
        raise RuntimeError("unexpected")

    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        policy = write_policy()
        _configure(tctx, addon, policy, certs, regauth_reload_seconds=1)
        monkeypatch.setattr(config_loader, "_build_active", build)
        await addon.running()
        _edit(policy, policy_text(password_hashes, extra_rules=MORE_RULES))
        await _until(lambda: addon.reloads["error"] == 1)
        await addon.done()
    [error] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert error.exc_info is not None


@run
async def test_the_client_certificate_deny_list_reloads_and_a_broken_one_keeps_the_last_good(
    write_policy, certs
):
    from regauth.mtls.revocations import Revocations
    from regauth.ops import client_ca

    addon = ConfigLoader()
    with taddons.context(addon) as tctx:
        _configure(tctx, addon, write_policy(), certs)
        assert addon.active.runtime.client_trust.revocations == Revocations()
        client_ca.write_revocations(certs, Revocations(builds=frozenset(["b1"])))
        assert await addon.reload_if_changed() is True
        revoked = addon.active.runtime.client_trust.revocations
        assert revoked.builds == {"b1"}
        _edit(certs / client_ca.REVOKED, "{broken")
        assert await addon.reload_if_changed() is False
        assert addon.active.runtime.client_trust.revocations is revoked
