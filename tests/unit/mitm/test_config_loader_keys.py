"""The config loader's key switches in process (`regauth.mitm.config_loader`, the key
lifecycle's part): a scheduled activation is applied by the running loader, and a listener that
fails (the embedded registry did not come up) keeps the current configuration."""

from __future__ import annotations

import asyncio
import time

import pytest

from regauth.mitm.config_loader import ConfigLoader
from regauth.ops import pki
from regauth.tokens import keystate
from tests.unit.mitm.harness import running


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


def test_a_scheduled_activation_is_applied_by_the_running_loader(write_policy, certs):
    async def run():
        async with running(write_policy(), certs) as harness:
            config: ConfigLoader = harness.config
            old = config.active.runtime.keyring.signer.name
            seen = []

            async def listener(active):
                seen.append(
                    (config.active.runtime.keyring.signer.name, active.runtime.keyring.signer.name)
                )

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
            config: ConfigLoader = harness.config
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
