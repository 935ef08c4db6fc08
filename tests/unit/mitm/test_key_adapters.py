"""The key lifecycle's adapters in process: the config loader's key switches, the embedded
registry's hold, and the upstream key watch."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from regauth.mitm.embedded_registry import EmbeddedRegistry
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.protocol.scope import parse_scope
from regauth.tokens import keystate
from regauth.tokens.keyids import libtrust_kid
from tests.conftest import ISSUER
from tests.conftest import SERVICE
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import running

INVALID = f'Bearer realm="http://127.0.0.1:5000/auth",service="{SERVICE}",error="invalid_token"'
SCOPE = "repository:public/app:pull"


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


def _embedded(tmp_path, certs, **kwargs) -> EmbeddedRegistry:
    token = TokenAuth("https://localhost:5443/v2/token", SERVICE, ISSUER,
                      tmp_path / "registry" / "bundle.pem")
    (tmp_path / "registry").mkdir(exist_ok=True)
    return EmbeddedRegistry(RegistryProcess(tmp_path / "registry", token=token), certs,
                            **kwargs)


def test_a_scheduled_activation_is_applied_by_the_running_loader(write_policy, certs):
    async def run():
        async with running(write_policy(), certs) as harness:
            config = harness.config
            old = config.active.runtime.keyring.signer.name
            seen = []

            async def listener(active):
                seen.append((config.active.runtime.keyring.signer.name,
                             active.runtime.keyring.signer.name))

            config.before_swap.append(listener)
            name, _ = keystate.stage(certs, "ES256", time.time() + 0.5, time.time())
            assert await config.reload_if_changed() is True  # published: a new file
            assert config.active.runtime.keyring.signer.name == old
            assert await config.reload_if_changed() is None  # not yet due
            await asyncio.sleep(0.6)
            assert await config.reload_if_changed() is True  # due: nothing changed on disk
            assert config.active.runtime.keyring.signer.name == name
            # Listeners see each new configuration before it is in force.
            assert seen == [(old, old), (old, name)]

    asyncio.run(run())


def test_a_listener_that_fails_keeps_the_current_configuration(write_policy, certs):
    async def run():
        async with running(write_policy(), certs) as harness:
            config = harness.config
            before = config.active
            calls = []

            async def failing(active):
                calls.append(active)
                if len(calls) == 1:
                    raise RuntimeError("registry did not come up")

            config.before_swap.append(failing)
            keystate.stage(certs, "ES256", None, time.time())
            assert await config.reload_if_changed() is False
            assert config.active is before
            assert await config.reload_if_changed() is True  # tried again at the next check
            assert len(config.active.runtime.keyring.keys) == 2

    asyncio.run(run())


def test_held_requests_wait_for_the_registry_and_fail_closed_after_the_timeout(
        write_policy, certs, tmp_path):
    async def run():
        embedded = _embedded(tmp_path, certs, hold_timeout=0.2)
        async with running(write_policy(mode="delegate"), certs) as harness:
            embedded.ready.clear()
            token_flow = registry_flow("/v2/token?service=x")
            await embedded.requestheaders(token_flow)  # the token endpoint is not held
            held = registry_flow("/v2/")
            started = time.monotonic()
            await embedded.requestheaders(held)
            await harness.send(held)
            assert time.monotonic() - started >= 0.2
            assert held.response.status_code == 503
            assert held.response.headers["Retry-After"] == "1"
            assert json.loads(held.response.content)["errors"][0]["code"] == "UNAVAILABLE"
            # Released in time: the request goes on to its decision.
            waiting = registry_flow("/v2/")
            task = asyncio.create_task(embedded.requestheaders(waiting))
            await asyncio.sleep(0.05)
            assert not task.done()
            embedded.ready.set()
            await task
            await harness.send(waiting)
            assert waiting.response is None and waiting.error is None
            assert 0.05 <= embedded.longest_hold

    asyncio.run(run())


def test_the_registry_restarts_once_requests_on_their_way_have_their_answer(
        write_policy, certs, tmp_path, monkeypatch):
    async def run():
        embedded = _embedded(tmp_path, certs, drain_wait=5)
        events = []
        monkeypatch.setattr(embedded.registry, "restart", lambda: events.append("restart"))
        monkeypatch.setattr(embedded.registry, "start", lambda: events.append("start"))
        embedded.start()
        async with running(write_policy(mode="delegate"), certs) as harness:
            embedded.attach(harness.config)
            on_its_way = registry_flow("/v2/")
            await embedded.requestheaders(on_its_way)
            keystate.stage(certs, "ES256", None, time.time())
            reload = asyncio.create_task(harness.config.reload_if_changed())
            await asyncio.sleep(0.1)
            assert events == ["start"] and not embedded.ready.is_set()
            assert len(harness.config.active.runtime.keyring.keys) == 1
            events.append("answered")
            embedded.responseheaders(on_its_way)
            assert await reload is True
            assert events == ["start", "answered", "restart"] and embedded.ready.is_set()
            bundle = embedded.registry.token.rootcertbundle.read_text()
            assert bundle == pki.bundle_pem(pki.load_signing_keys(certs))
            assert await harness.config.reload_if_changed() is None  # nothing more to do

    asyncio.run(run())


def test_after_a_failed_restart_requests_are_refused_until_one_succeeds(
        write_policy, certs, tmp_path, monkeypatch):
    async def run():
        embedded = _embedded(tmp_path, certs)
        monkeypatch.setattr(embedded.registry, "start", lambda: None)
        embedded.start()
        outcomes = iter([RuntimeError("docker-registry did not come up"), None])

        def restart():
            outcome = next(outcomes)
            if outcome is not None:
                raise outcome

        monkeypatch.setattr(embedded.registry, "restart", restart)
        async with running(write_policy(mode="delegate"), certs) as harness:
            embedded.attach(harness.config)
            keystate.stage(certs, "ES256", None, time.time())
            assert await harness.config.reload_if_changed() is False
            refused = registry_flow("/v2/")
            await embedded.requestheaders(refused)
            await harness.send(refused)
            assert refused.response.status_code == 503
            assert await harness.config.reload_if_changed() is True
            accepted = registry_flow("/v2/")
            await embedded.requestheaders(accepted)
            await harness.send(accepted)
            assert accepted.response is None

    asyncio.run(run())


def _upstream(status: int, challenge: str | None = None, date: str | None = None
              ) -> http.Response:
    headers = {}
    if challenge:
        headers["WWW-Authenticate"] = challenge
    if date:
        headers["Date"] = date
    return tutils.tresp(status_code=status, headers=http.Headers(
        [(k.encode(), v.encode()) for k, v in headers.items()]), content=b"{}")


@pytest.mark.parametrize("mode", ["delegate", "enforce"])
def test_an_upstream_refusing_regauth_tokens_names_the_key_once(
        write_policy, certs, tmp_path, caplog, mode):
    log = tmp_path / "exchange.jsonl"

    async def run():
        async with running(write_policy(mode=mode), certs, log) as harness:
            runtime = harness.config.active.runtime
            kid = libtrust_kid(runtime.keyring.signer.public_key)

            async def exchange(response):
                token = runtime.issuer.issue_access("ci", [parse_scope(SCOPE)]).token
                flow = registry_flow(headers={"Authorization": f"Bearer {token}"})
                await harness.send(flow)
                assert flow.response is None  # forwarded
                return await harness.answer(flow, response)

            with caplog.at_level(logging.INFO):
                for _ in range(3):
                    flow = await exchange(_upstream(401, INVALID))
                    assert flow.response.status_code == 401  # the registry's answer
                assert harness.keys.refused_kids == {kid}
                await exchange(_upstream(401, INVALID.replace("invalid_token",
                                                              "insufficient_scope")))
                await exchange(_upstream(401, INVALID, "Mon, 01 Jan 2001 00:00:00 GMT"))
                await exchange(_upstream(401, INVALID.replace(SERVICE, "another-service")))
                assert harness.keys.refused_kids == {kid}
                await exchange(_upstream(200))
                assert harness.keys.refused_kids == set()
            named = [r for r in caplog.records if "does not trust signing key" in r.message]
            assert [r.message for r in named] == [
                f"regauth: the registry does not trust signing key {kid}: update its "
                "rootcertbundle (`regauth certs bundle`) and restart it"]
            assert any(f"accepts signing key {kid} again" in r.message for r in caplog.records)
            return kid

    kid = asyncio.run(run())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r.get("upstream_refused_token") for r in records] == [kid] * 3 + [None] * 4


def test_tokens_regauth_did_not_issue_are_not_blamed_on_its_keys(write_policy, certs):
    async def run():
        async with running(write_policy(mode="delegate"), certs) as harness:
            for authorization in ("Bearer not-a-jwt", "Basic Y2k6eA==", None):
                flow = registry_flow(headers={"Authorization": authorization}
                                     if authorization else {})
                await harness.send(flow)
                await harness.answer(flow, _upstream(401, INVALID))
            assert harness.keys.refused_kids == set()

    asyncio.run(run())
