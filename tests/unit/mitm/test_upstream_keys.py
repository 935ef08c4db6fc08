"""The upstream key watch in process (`regauth.mitm.upstream_keys`): a token-mode upstream
refusing tokens regauth issued names the key once and marks the exchange record; the registry
accepting that key again ends it; tokens regauth did not issue are never blamed on its keys.
What an answer says about a key is decided by `regauth.tokens.refused_keys`
(tokens/test_refused_keys.py)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from mitmproxy import http
from mitmproxy.test import tutils

from regauth.mitm import upstream_keys
from regauth.ops import pki
from regauth.protocol.scope import parse_scope
from regauth.tokens.keyids import libtrust_kid
from tests.support.policies import SERVICE
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import running

INVALID = f'Bearer realm="http://127.0.0.1:5000/auth",service="{SERVICE}",error="invalid_token"'
SCOPE = "repository:public/app:pull"


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


def _upstream(status: int, challenge: str | None = None, date: str | None = None) -> http.Response:
    headers = {}
    if challenge:
        headers["WWW-Authenticate"] = challenge
    if date:
        headers["Date"] = date
    return tutils.tresp(
        status_code=status,
        headers=http.Headers([(k.encode(), v.encode()) for k, v in headers.items()]),
        content=b"{}",
    )


@pytest.mark.parametrize("mode", ["delegate", "enforce"])
def test_an_upstream_refusing_regauth_tokens_names_the_key_once(
    write_policy, certs, tmp_path, caplog, mode
):
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
                await exchange(
                    _upstream(401, INVALID.replace("invalid_token", "insufficient_scope"))
                )
                await exchange(_upstream(401, INVALID, "Mon, 01 Jan 2001 00:00:00 GMT"))
                await exchange(_upstream(401, INVALID.replace(SERVICE, "another-service")))
                assert harness.keys.refused_kids == {kid}
                await exchange(_upstream(200))
                assert harness.keys.refused_kids == set()
            # The warning is logged once (each refused flow's own console line, from
            # regauth.console, also says it).
            named = [
                r
                for r in caplog.records
                if "does not trust signing key" in r.message and r.name != "regauth.console"
            ]
            assert [r.message for r in named] == [
                f"regauth: the registry does not trust signing key {kid}: update its "
                "rootcertbundle (`regauth certs bundle`) and restart it"
            ]
            assert any(f"accepts signing key {kid} again" in r.message for r in caplog.records)
            return kid

    kid = asyncio.run(run())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r.get("upstream_refused_token") for r in records] == [kid] * 3 + [None] * 4


def test_tokens_regauth_did_not_issue_are_not_blamed_on_its_keys(write_policy, certs):
    async def run():
        async with running(write_policy(mode="delegate"), certs) as harness:
            for authorization in ("Bearer not-a-jwt", "Basic Y2k6eA==", None):
                flow = registry_flow(
                    headers={"Authorization": authorization} if authorization else {}
                )
                await harness.send(flow)
                await harness.answer(flow, _upstream(401, INVALID))
            assert harness.keys.refused_kids == set()

    asyncio.run(run())


def test_a_failure_while_judging_is_logged_and_the_answer_passes_unchanged(
    write_policy, certs, caplog, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("judging failed")

    monkeypatch.setattr(upstream_keys.refused_keys, "judge", broken)

    async def run():
        async with running(write_policy(mode="delegate"), certs) as harness:
            runtime = harness.config.active.runtime
            token = runtime.issuer.issue_access("ci", [parse_scope(SCOPE)]).token
            flow = registry_flow(headers={"Authorization": f"Bearer {token}"})
            await harness.send(flow)
            with caplog.at_level(logging.ERROR):
                await harness.answer(flow, _upstream(401, INVALID))
            assert flow.response.status_code == 401 and flow.error is None
            assert harness.keys.refused_kids == set()

    asyncio.run(run())
    assert any(
        "could not check the upstream's answer" in r.message and "judging failed" in r.message
        for r in caplog.records
    )
