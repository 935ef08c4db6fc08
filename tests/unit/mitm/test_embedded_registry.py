"""The embedded registry in process (`regauth.mitm.embedded_registry`): requests are held while
it restarts for a new key and fail closed after the hold timeout; it restarts once requests on
their way have their answer; after a failed restart requests are refused until one succeeds.
The config loader's key switches are test_config_loader_keys.py, the upstream key watch
test_upstream_keys.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from regauth.mitm.embedded_registry import EmbeddedRegistry
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.tokens import keystate
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import running


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


def _embedded(tmp_path, certs, **kwargs) -> EmbeddedRegistry:
    token = TokenAuth(
        "https://localhost:5443/v2/token", SERVICE, ISSUER, tmp_path / "registry" / "bundle.pem"
    )
    (tmp_path / "registry").mkdir(exist_ok=True)
    return EmbeddedRegistry(RegistryProcess(tmp_path / "registry", token=token), certs, **kwargs)


def test_held_requests_wait_for_the_registry_and_fail_closed_after_the_timeout(
    write_policy, certs, tmp_path
):
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
    write_policy, certs, tmp_path, monkeypatch
):
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
    write_policy, certs, tmp_path, monkeypatch
):
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
