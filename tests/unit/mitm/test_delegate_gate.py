"""The delegate gate in process (mitm/delegate_gate.py, mitm/upstream_probe.py, admin.py).

The upstream probe's `fetch` is the harness's FakeRegistry, so each test says what the
registry answers regauth's own `GET /v2/` (anonymous, and with the probe token) and drives
check rounds itself (`probe.check()`) where the order matters.
"""

from __future__ import annotations

import asyncio
import json
import logging

import jwt
import pytest
from mitmproxy import http
from prometheus_client import generate_latest

from regauth.delegate_check import Reply
from regauth.mitm.request_handler import UPSTREAM_UNAVAILABLE
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE
from tests.unit.mitm.harness import PUBLIC
from tests.unit.mitm.harness import FakeRegistry
from tests.unit.mitm.harness import Harness
from tests.unit.mitm.harness import get_token
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running

OPEN = Reply(200)
BASIC = Reply(401, ('Basic realm="staging-registry"',))
REFUSED_OPEN = (
    "delegate check failed: the registry behind regauth answers without "
    "authentication (delegate mode needs it to check regauth's tokens: auth.token); "
    "nothing is forwarded until it does; retry shortly"
)
PENDING = (
    "delegate check pending: regauth has not yet verified that the registry behind it "
    "checks regauth's tokens (delegate mode); nothing is forwarded until it has; retry "
    "shortly"
)


def _error(flow: http.HTTPFlow) -> tuple[int, str, str]:
    assert flow.response is not None, (flow.error, flow.metadata)
    [error] = json.loads(flow.response.content)["errors"]
    return flow.response.status_code, error["code"], error["message"]


def _metrics(harness: Harness) -> str:
    assert harness.admin is not None
    return generate_latest(harness.admin.metrics.registry).decode()


def _forwarded(harness: Harness, flow: http.HTTPFlow) -> bool:
    return flow.id in harness.sent_upstream


@run
async def test_a_registry_that_checks_regauths_tokens_gets_requests(write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = await harness.cycle(registry_flow("/v2/cache/app/manifests/1"))
        assert _forwarded(harness, flow) and flow.response.status_code == 200
        assert harness.delegate.verdict.ok  # type: ignore[union-attr]
        seen = harness.registry.seen
        assert seen[0] == ("regauth-readiness", None)
        agent, authorization = seen[1]
        assert agent == "regauth-delegate-check" and authorization.startswith("Bearer ")
        claims = jwt.decode(
            authorization.removeprefix("Bearer "), options={"verify_signature": False}
        )
        assert (claims["access"], claims["sub"], claims["iss"], claims["aud"]) == (
            [],
            "",
            ISSUER,
            SERVICE,
        )
        assert harness.admin.readiness().reasons == ()  # type: ignore[union-attr]
        text = _metrics(harness)
        assert 'regauth_delegate_check{result="ok"} 1.0' in text
        assert "regauth_delegate_refusing 0.0" in text


@pytest.mark.parametrize(
    "anonymous, kind", [(OPEN, "open"), (BASIC, "wrong_scheme"), (Reply(404), "unexpected_status")]
)
@run
async def test_a_registry_that_does_not_challenge_gets_nothing(
    anonymous, kind, write_policy, certs_dir, tmp_path, caplog
):
    log = tmp_path / "exchange.jsonl"
    registry = FakeRegistry(anonymous=anonymous)
    async with running(write_policy(mode="delegate"), certs_dir, log, registry=registry) as harness:
        flows = [
            await harness.cycle(registry_flow(path, method, headers, body))
            for path, method, headers, body in [
                ("/v2/cache/app/blobs/uploads/", "POST", {}, b""),
                (
                    "/v2/cache/app/blobs/uploads/abc?digest=sha256:" + "a" * 64,
                    "PUT",
                    {"Content-Type": "application/octet-stream"},
                    b"x" * (2 << 20),
                ),
                ("/v2/", "GET", {}, b""),
                ("/v2/_catalog", "GET", {}, b""),
                ("/metrics", "GET", {}, b""),
            ]
        ]
        token = await get_token(harness, "repository:cache/app:pull")  # still answered
        jwks = await harness.cycle(registry_flow("/.well-known/jwks.json"))
        assert jwks.response.status_code == 200
        with_token = await harness.cycle(
            registry_flow("/v2/cache/app/manifests/1", headers={"Authorization": f"Bearer {token}"})
        )
        for flow in [*flows, with_token]:
            status, code, message = _error(flow)
            assert (status, code) == (503, "UNAVAILABLE"), flow.request.path
            assert message.startswith("delegate check failed: "), message
            assert flow.response.headers["Retry-After"] == "1"
            assert not _forwarded(harness, flow), flow.request.path
        if kind == "open":
            assert _error(flows[0])[2] == REFUSED_OPEN
        # Nothing but the anonymous probe: a registry that does not challenge gets no token.
        assert {agent for agent, _ in harness.registry.seen} == {"regauth-readiness"}
        readiness = harness.admin.readiness()  # type: ignore[union-attr]
        assert not readiness.ready
        assert readiness.reasons[-1].startswith("delegate check: the registry ")
        text = _metrics(harness)
        assert f'regauth_delegate_check{{result="{kind}"}} 1.0' in text
        assert "regauth_delegate_refusing 1.0" in text
    records = [
        r
        for r in harness.records()
        if r["kind"] != "token" and r["method"] != "GET" or r["path"] == "/v2/"
    ]
    assert records and all(
        r["status"] == 503
        and r["answered_by"] == "regauth"
        and r["decision"]["reason"].startswith("delegate check failed: ")
        for r in records
    ), records
    errors = [r for r in caplog.records if "delegate check" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once, not per request


@run
async def test_requests_wait_for_the_first_verdict(write_policy, certs_dir):
    registry = FakeRegistry(gate=asyncio.Event())
    async with running(write_policy(mode="delegate"), certs_dir, registry=registry) as harness:
        waiting = asyncio.create_task(harness.cycle(registry_flow("/v2/cache/app/tags/list")))
        await asyncio.sleep(0.1)
        assert not waiting.done() and harness.delegate.held == 1  # type: ignore[union-attr]
        # Token requests never wait.
        await asyncio.wait_for(get_token(harness, "repository:cache/app:pull"), 2)
        registry.gate.set()  # type: ignore[union-attr]
        flow = await asyncio.wait_for(waiting, 5)
        assert _forwarded(harness, flow)


@run
async def test_a_request_waits_at_most_the_hold_timeout(write_policy, certs_dir):
    registry = FakeRegistry(gate=asyncio.Event())  # the registry never answers
    async with running(write_policy(mode="delegate"), certs_dir, registry=registry) as harness:
        harness.delegate.hold_timeout = 0.2  # type: ignore[union-attr]
        flow = await asyncio.wait_for(harness.cycle(registry_flow("/v2/")), 5)
        assert _error(flow) == (503, "UNAVAILABLE", PENDING)
        assert not _forwarded(harness, flow)
        assert (
            "delegate check: the registry has not been checked yet"
            in harness.admin.readiness().reasons
        )  # type: ignore[union-attr]
        registry.gate.set()  # type: ignore[union-attr]


@run
async def test_an_unreachable_registry_is_unverified_until_it_answers(write_policy, certs_dir):
    registry = FakeRegistry(error=ConnectionRefusedError(111, "Connect call failed"))
    async with running(write_policy(mode="delegate"), certs_dir, registry=registry) as harness:
        flow = await harness.cycle(registry_flow("/v2/"))
        assert _error(flow) == (503, "UNAVAILABLE", PENDING)
        problem = harness.delegate.readiness_problem()  # type: ignore[union-attr]
        assert problem.startswith(
            "delegate check: regauth could not yet check that the "
            "registry verifies its tokens (GET /v2/: "
            "ConnectionRefusedError"
        )
        text = _metrics(harness)
        assert 'regauth_delegate_check{result="unverified"} 1.0' in text
        registry.error = None
        await harness.admin.probe.check()  # type: ignore[union-attr]
        flow = await harness.cycle(registry_flow("/v2/"))
        assert _forwarded(harness, flow)


@run
async def test_the_verdict_follows_the_registry_and_silence_keeps_it(write_policy, certs_dir):
    registry = FakeRegistry()
    async with running(write_policy(mode="delegate"), certs_dir, registry=registry) as harness:
        probe = harness.admin.probe  # type: ignore[union-attr]
        assert _forwarded(harness, await harness.cycle(registry_flow("/v2/")))
        registry.anonymous = OPEN  # restarted without auth
        await probe.check()
        assert _error(await harness.cycle(registry_flow("/v2/")))[0] == 503
        registry.anonymous = Reply(503)  # says nothing: the open verdict stays
        await probe.check()
        assert _error(await harness.cycle(registry_flow("/v2/")))[0] == 503
        registry.anonymous = FakeRegistry().anonymous
        registry.error = TimeoutError()  # nor does silence
        await probe.check()
        assert _error(await harness.cycle(registry_flow("/v2/")))[0] == 503
        registry.error = None
        await probe.check()
        assert _forwarded(harness, await harness.cycle(registry_flow("/v2/")))
        registry.with_token = Reply(503)  # a 5xx to the token keeps ok
        await probe.check()
        assert harness.delegate.verdict.ok  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "anonymous, with_token, kind",
    [
        (
            Reply(401, (f'Bearer realm="{PUBLIC}/v2/token",service="other"',)),
            Reply(401, ('Bearer error="invalid_token"',)),
            "service_mismatch",
        ),
        (
            None,
            Reply(
                401,
                (f'Bearer realm="{PUBLIC}/v2/token",service="{SERVICE}",error="invalid_token"',),
            ),
            "token_refused",
        ),
        (
            Reply(401, (f'Bearer realm="https://elsewhere/token",service="{SERVICE}"',)),
            Reply(200),
            "realm_mismatch",
        ),
    ],
)
@run
async def test_a_registry_that_disagrees_is_not_ready_but_still_decides(
    anonymous, with_token, kind, write_policy, certs_dir, caplog
):
    registry = FakeRegistry(with_token=with_token)
    if anonymous is not None:
        registry.anonymous = anonymous
    async with running(write_policy(mode="delegate"), certs_dir, registry=registry) as harness:
        flow = await harness.cycle(registry_flow("/v2/cache/app/tags/list"))
        assert _forwarded(harness, flow)  # the registry refuses the tokens itself
        assert harness.delegate.verdict.kind == kind  # type: ignore[union-attr]
        readiness = harness.admin.readiness()  # type: ignore[union-attr]
        assert not readiness.ready and readiness.reasons[-1].startswith("delegate check: ")
        assert f'regauth_delegate_check{{result="{kind}"}} 1.0' in _metrics(harness)
        assert "regauth_delegate_refusing 0.0" in _metrics(harness)
    [line] = [r for r in caplog.records if "delegate check" in r.getMessage()]
    assert line.levelno == logging.WARNING and "/readyz says not ready" in line.getMessage()


@run
async def test_the_opt_out_forwards_and_warns(write_policy, certs_dir, caplog):
    registry = FakeRegistry(anonymous=OPEN)
    async with running(
        write_policy(mode="delegate"), certs_dir, registry=registry, regauth_delegate_unchecked=True
    ) as harness:
        flow = await harness.cycle(registry_flow("/v2/cache/app/blobs/uploads/", "POST"))
        assert _forwarded(harness, flow)
        await harness.admin.probe.check()  # type: ignore[union-attr]
        readiness = harness.admin.readiness()  # type: ignore[union-attr]
        assert readiness.ready
        assert readiness.body().startswith(
            "ready\nwarning: the delegate check is off (--delegate-unchecked): registry requests "
            "are forwarded whatever the check says; last check: the registry answered GET /v2/ "
            "without authentication (200)"
        )
        text = _metrics(harness)
        assert 'regauth_delegate_check{result="open"} 1.0' in text
        assert "regauth_delegate_refusing 0.0" in text
        assert "regauth_delegate_unchecked 1.0" in text
    warnings = [r.getMessage() for r in caplog.records if "UNCHECKED" in r.getMessage()]
    assert len(warnings) == 1 and "for test setups only" in warnings[0]


@run
async def test_enforce_mode_is_not_checked(write_policy, certs_dir):
    registry = FakeRegistry(anonymous=OPEN)
    async with running(write_policy(), certs_dir, registry=registry) as harness:
        token = await get_token(harness, "repository:public/app:pull")
        flow = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            )
        )
        assert _forwarded(harness, flow)
        assert registry.seen == []  # no admin listener, no delegate mode: nothing sent
        assert not harness.admin.probe.running  # type: ignore[union-attr]
        assert "regauth_delegate" not in _metrics(harness)
        assert harness.admin.readiness().reasons[-1:] != ("delegate check",)  # type: ignore


@run
async def test_a_reload_into_delegate_mode_is_checked_before_anything_is_forwarded(
    write_policy, certs_dir
):
    policy = write_policy()
    registry = FakeRegistry(anonymous=OPEN)
    async with running(policy, certs_dir, registry=registry) as harness:
        assert registry.seen == []
        write_policy(mode="delegate")  # the same file
        assert await harness.config.reload_if_changed() is True
        flow = await harness.cycle(registry_flow("/v2/"))  # waits for the check it started
        assert _error(flow)[:2] == (503, "UNAVAILABLE")
        assert registry.seen and not _forwarded(harness, flow)
        # And back: enforce mode forgets the verdict.
        write_policy()
        assert await harness.config.reload_if_changed() is True
        await harness.admin.probe.check()  # type: ignore[union-attr]
        assert harness.delegate.verdict is None  # type: ignore[union-attr]
        assert harness.delegate.result() is None  # type: ignore[union-attr]


@run
async def test_the_flag_set_by_another_adapter_is_kept(write_policy, certs_dir):
    registry = FakeRegistry(anonymous=OPEN)
    async with running(write_policy(mode="delegate"), certs_dir, registry=registry) as harness:
        flow = registry_flow("/v2/")
        flow.metadata[UPSTREAM_UNAVAILABLE] = "regauth's registry is restarting"
        await harness.cycle(flow)
        assert _error(flow)[2] == "regauth's registry is restarting; retry shortly"
