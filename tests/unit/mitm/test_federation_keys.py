"""The federated issuers' key sets in the running addon chain (mitm/federation_keys.py, and
their `/readyz` warnings and metrics in mitm/admin.py): the adapter hands its IssuerKeySets to
the request handler's authenticator, fetches each issuer's key set in the background when
regauth starts and when a reload adds an issuer, logs a failed fetch, and `/readyz` names the
issuer whose key set could not be fetched."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest
from prometheus_client import generate_latest

from regauth.federation.jwks import IssuerKeySets
from regauth.mitm import federation_keys
from regauth.mitm.federation_keys import FederationKeys
from regauth.ops.jwks_fetch import fetcher_for
from regauth.policy.model import FederatedIssuer
from tests.support.policies import policy_text
from tests.unit.federation.idp import AUDIENCE
from tests.unit.federation.idp import ISSUER
from tests.unit.federation.idp import Idp
from tests.unit.mitm.harness import Harness
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running

GITLAB = "https://gitlab.example.test"


def _federation(*entries: tuple[str, str, str]) -> str:
    text = "federated_issuers:\n"
    for name, issuer, jwks_file in entries:
        text += (
            f"  - name: {name}\n    issuer: {issuer}\n    audience: {AUDIENCE}\n"
            f"    jwks_file: {jwks_file}\n"
        )
    return text


@pytest.fixture(scope="module")
def idp() -> Idp:
    idp = Idp()
    idp.add_key("RS256")
    return idp


def _adapter(harness: Harness) -> FederationKeys:
    [adapter] = [a for a in harness.tctx.master.addons.chain if isinstance(a, FederationKeys)]
    return adapter


async def _settled(keysets: IssuerKeySets, count: int, seconds: float = 5) -> None:
    """Until `count` caches have a finished fetch behind them (good or not)."""
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        status = keysets.status()
        done = [s for s in status.values() if s.fetched_at is not None or s.last_error]
        if len(status) == len(done) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"key sets not fetched: {keysets.status()}")


@run
async def test_the_authenticator_gets_the_key_sets_fetched_in_the_background(
    write_policy, certs_dir, tmp_path, idp, monkeypatch
):
    (tmp_path / "jwks.json").write_bytes(idp.jwks())
    release = threading.Event()
    fetching = threading.Event()

    def slow_fetcher(issuer: FederatedIssuer):
        read = fetcher_for(issuer)

        def fetch() -> bytes:
            fetching.set()
            release.wait(5)
            return read()

        return fetch

    monkeypatch.setattr(federation_keys, "fetcher_for", slow_fetcher)
    policy = write_policy(top_extra=_federation(("github", ISSUER, "jwks.json")))
    async with running(policy, certs_dir) as harness:
        keysets = _adapter(harness).keysets
        assert harness.requests.authenticator.federation is keysets
        # regauth is running while the fetch is still under way: it does not wait for it.
        ends = time.monotonic() + 5
        while not fetching.is_set() and time.monotonic() < ends:
            await asyncio.sleep(0.01)
        assert fetching.is_set()
        assert keysets.status()[ISSUER].fetched_at is None
        release.set()
        await _settled(keysets, 1)
        status = keysets.status()[ISSUER]
        assert status.keys == tuple(idp.keys) and status.last_error is None
        assert harness.admin.readiness().warnings == ()  # type: ignore[union-attr]
        metrics = generate_latest(harness.admin.metrics.registry).decode()  # type: ignore[union-attr]
        assert f'regauth_federation_keys{{issuer="{ISSUER}"}} 1.0' in metrics
        assert f'regauth_federation_key_set_up{{issuer="{ISSUER}"}} 1.0' in metrics


@run
async def test_a_failed_fetch_is_logged_and_readyz_names_the_issuer(
    write_policy, certs_dir, tmp_path, idp, caplog
):
    caplog.set_level(logging.INFO)
    (tmp_path / "jwks.json").write_bytes(idp.jwks())
    (tmp_path / "broken.json").write_bytes(b"<html>not a key set</html>")
    policy = write_policy(
        top_extra=_federation(("github", ISSUER, "jwks.json"), ("gitlab", GITLAB, "broken.json"))
    )
    async with running(policy, certs_dir) as harness:
        keysets = _adapter(harness).keysets
        await _settled(keysets, 2)
        await asyncio.sleep(0)  # the fetch task logs after its thread is done
        readiness = harness.admin.readiness()  # type: ignore[union-attr]
        metrics = generate_latest(harness.admin.metrics.registry).decode()  # type: ignore[union-attr]
    [warning] = readiness.warnings
    assert not any("federated" in r for r in readiness.reasons)  # a warning, not a reason
    assert warning.startswith(f"federated issuer {GITLAB}: key set fetch failed (")
    assert "the key set is not JSON" in warning and warning.endswith("; no keys yet")
    assert f"warning: {warning}\n" in readiness.body()
    assert f'regauth_federation_key_set_up{{issuer="{GITLAB}"}} 0.0' in metrics
    assert f'regauth_federation_key_set_fetch_failures_total{{issuer="{GITLAB}"}} 1.0' in metrics
    assert f'regauth_federation_keys{{issuer="{ISSUER}"}} 1.0' in metrics
    failures = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert failures[0].getMessage() == (
        f"regauth: federated key set {tmp_path / 'broken.json'} unavailable: the key set is not "
        "JSON (malformed JSON (JSONDecodeError))"
    )
    assert "<html>" not in caplog.text  # the message names the source, never the body
    assert f"federated key set {tmp_path / 'jwks.json'}: 1 keys" in caplog.text


@run
async def test_readyz_says_when_old_keys_are_in_use(write_policy, certs_dir, tmp_path, idp):
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(idp.jwks())
    policy = write_policy(top_extra=_federation(("github", ISSUER, "jwks.json")))
    async with running(policy, certs_dir) as harness:
        keysets = _adapter(harness).keysets
        await _settled(keysets, 1)
        jwks.write_bytes(b"{}")
        [cache] = keysets._caches.values()
        cache.refresh()
        [warning] = harness.admin.readiness().warnings  # type: ignore[union-attr]
    assert warning == (
        f"federated issuer {ISSUER}: key set fetch failed (the key set has no `keys` list); "
        "using 1 keys fetched earlier"
    )


@run
async def test_a_reload_that_adds_an_issuer_prefetches_it_and_keeps_the_others(
    write_policy, certs_dir, tmp_path, idp, password_hashes
):
    (tmp_path / "jwks.json").write_bytes(idp.jwks())
    policy = write_policy(top_extra=_federation(("github", ISSUER, "jwks.json")))
    async with running(policy, certs_dir) as harness:
        keysets = _adapter(harness).keysets
        await _settled(keysets, 1)
        [kept] = keysets._caches.values()
        before = policy.stat().st_mtime_ns
        policy.write_text(
            policy_text(
                password_hashes,
                top_extra=_federation(
                    ("github", ISSUER, "jwks.json"), ("gitlab", GITLAB, "jwks.json")
                ),
            )
        )
        os.utime(policy, ns=(before + 2_000_000_000, before + 2_000_000_000))
        assert await harness.config.reload_if_changed() is True
        await _settled(keysets, 2)
        assert kept in keysets._caches.values() and kept.fetches == 1  # not fetched again
        assert set(keysets.status()) == {ISSUER, GITLAB}
