"""The login pool (regauth.mitm.login_pool) in process: which token requests wait for a login
thread, in which order, which are refused at once and how the refusal reads.

The executor here runs nothing by itself: `StepExecutor.run_next()` runs the oldest job handed
to it, so a test sees exactly which checks the pool started, and when.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import json
from collections.abc import Callable
from typing import Any

import bcrypt
import pytest

from regauth.logins import credentials
from regauth.logins.credentials import Authenticator
from regauth.logins.limits import LoginLimiter
from regauth.logins.queue import FairQueue
from regauth.mitm.login_pool import LoginPool
from regauth.token_service import TokenRequest
from regauth.token_service import TokenResponse
from regauth.token_service import may_block
from regauth.token_service import password_pair
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import FakeClock
from tests.unit.helpers import build_runtime
from tests.unit.mitm.harness import run


class StepExecutor(concurrent.futures.Executor):
    """Keeps every submitted call until `run_next` runs the oldest one (no threads)."""

    def __init__(self) -> None:
        self.pending: list[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = []
        self.ran: list[TokenRequest] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.pending.append((future, functools.partial(fn, *args, **kwargs)))
        return future

    async def run_next(self) -> None:
        future, call = self.pending.pop(0)
        # The pool's job: functools.partial(handle_token_request, runtime, auth, request).
        self.ran.append(call.args[2])
        future.set_result(call())
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(tmp_path_factory.mktemp("policy"), certs_dir, policy_text(password_hashes))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock: FakeClock) -> Authenticator:
    return Authenticator(clock=clock, limiter=LoginLimiter(clock=clock))


@pytest.fixture
def checkpw_calls(monkeypatch):
    calls = []
    original = bcrypt.checkpw

    def counting(password, hashed):
        calls.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(credentials.bcrypt, "checkpw", counting)
    return calls


def get(user: str, password: str, client: str) -> TokenRequest:
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return TokenRequest(
        "GET", {"service": [SERVICE], "scope": ["repository:demo/app:pull"]}, None, basic, client
    )


def post(user: str, password: str, client: str) -> TokenRequest:
    form = {
        "grant_type": ["password"],
        "username": [user],
        "password": [password],
        "client_id": ["unit-test"],
        "service": [SERVICE],
    }
    return TokenRequest("POST", {}, form, None, client)


def answers(
    pool: LoginPool, runtime, auth, requests: list[TokenRequest]
) -> list[asyncio.Task[TokenResponse]]:
    return [asyncio.ensure_future(pool.answer(runtime, auth, r)) for r in requests]


@run
async def test_a_flood_is_refused_per_network_and_the_real_client_waits_its_turn(runtime, auth):
    executor = StepExecutor()
    pool = LoginPool(executor, FairQueue(workers=2, per_source=4, max_waiting=32))
    flood = [get(f"spray{n}-{i}", "guess", f"203.0.113.{n}") for i in range(6) for n in range(3)]
    attack = answers(pool, runtime, auth, flood)
    await settle()
    ci = answers(pool, runtime, auth, [get("ci", PASSWORDS["ci"], "198.51.100.7")])[0]
    await settle()
    # 2 per network were refused at once, without a check: 429, Retry-After 1, not counted.
    refused = [t.result() for t in attack if t.done()]
    assert len(refused) == 6 and len(executor.pending) == 2
    for response in refused:
        assert response.status == 429 and response.headers["Retry-After"] == "1"
        record = response.record
        assert record["rate_limited"] == "login queue"
        assert record["failed_login_counted"] is False and record["credential"] == "password"
        body = json.loads(response.body)
        assert body["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert "from this network" in body["error_description"]
    assert auth.limiter is not None and len(auth.limiter.store) == 0  # nothing counted yet
    while executor.pending:
        await executor.run_next()
    order = [r.client_ip for r in executor.ran]
    # The correct password ran after at most one job of each network ahead of it (two were
    # running when it came), not after the 12 admitted guesses.
    assert order.index("198.51.100.7") <= 2 + 3
    assert ci.result().status == 200
    assert [t.result().status for t in attack].count(401) == 12


@run
async def test_identical_logins_from_one_network_cost_one_check_and_one_place(
    runtime, auth, checkpw_calls
):
    executor = StepExecutor()
    pool = LoginPool(executor, FairQueue(workers=2, per_source=1, max_waiting=32))
    same = [get("ci", PASSWORDS["ci"], "198.51.100.7") for _ in range(5)] + [
        post("ci", PASSWORDS["ci"], "198.51.100.7")
    ]
    tasks = answers(pool, runtime, auth, same)
    await settle()
    assert len(executor.pending) == 1 and not any(t.done() for t in tasks)
    await executor.run_next()
    assert [t.result().status for t in tasks] == [200] * 6
    assert len(checkpw_calls) == 1 and not executor.pending
    # The same wrong password: one check, one counted failure, the others answered from the
    # refused memo (401, not counted).
    wrong = answers(pool, runtime, auth, [get("ci", "nope", "198.51.100.7")] * 3)
    await settle()
    await executor.run_next()
    records = [t.result().record for t in wrong]
    assert [t.result().status for t in wrong] == [401] * 3
    assert [r["failed_login_counted"] for r in records] == [True, False, False]


@run
async def test_logins_decided_from_memory_never_wait_for_a_thread(runtime, auth):
    executor = StepExecutor()
    pool = LoginPool(executor)
    first = answers(pool, runtime, auth, [post("ci", PASSWORDS["ci"], "198.51.100.7")])[0]
    await settle()
    await executor.run_next()
    assert first.result().status == 200
    wrong = answers(pool, runtime, auth, [get("alice", "nope", "198.51.100.7")])[0]
    await settle()
    await executor.run_next()
    assert wrong.result().status == 401
    # Cached (GET and POST), refused in the last minute, never a password attempt: answered
    # on the event loop, nothing handed to the executor.
    for request in (
        get("ci", PASSWORDS["ci"], "192.0.2.1"),
        post("ci", PASSWORDS["ci"], "x"),
        get("alice", "nope", "192.0.2.1"),
        get("ci", "", "192.0.2.1"),
        get("-nope", "x", "192.0.2.1"),
        get("ci", "x" * 73, "192.0.2.1"),
    ):
        assert not may_block(runtime, auth, request)
        response = await pool.answer(runtime, auth, request)
        assert response.status in (200, 401)
    assert not executor.pending


def test_password_pair_reads_what_the_token_service_would_check():
    assert password_pair(get("ci", "pw", "c")) == ("ci", "pw")
    assert password_pair(post("ci", "pw", "c")) == ("ci", "pw")
    assert password_pair(get("", "refresh.token.here", "c")) is None
    twice = post("ci", "pw", "c")
    assert twice.form is not None
    twice.form["username"] = ["ci", "alice"]  # ambiguous: refused before any check
    assert password_pair(twice) is None
    twice.form["username"] = ["ci", "ci"]  # the same value twice is one value
    assert password_pair(twice) == ("ci", "pw")
    assert password_pair(TokenRequest("POST", {}, None, "Basic Y2k6cHc=", "c")) is None
    assert password_pair(TokenRequest("GET", {}, None, "Bearer x", "c")) is None


@run
async def test_a_known_client_goes_before_the_flood(runtime, auth, clock):
    executor = StepExecutor()
    pool = LoginPool(executor, FairQueue(workers=1, per_source=4, max_waiting=32))
    assert auth.limiter is not None
    auth.limiter.succeeded("ci", "198.51.100.7")  # ci logged in from there an hour ago
    clock.advance(3600)
    flood = answers(
        pool,
        runtime,
        auth,
        [get(f"spray{n}-{i}", "guess", f"203.0.113.{n}") for i in range(4) for n in range(8)],
    )
    await settle()
    ci = answers(pool, runtime, auth, [get("ci", PASSWORDS["ci"], "198.51.100.7")])[0]
    await settle()
    await executor.run_next()  # the guess that was running when ci came
    await executor.run_next()
    assert executor.ran[-1].client_ip == "198.51.100.7" and ci.result().status == 200
    while executor.pending:
        await executor.run_next()
    assert all(t.done() for t in flood)


@run
async def test_a_client_that_goes_away_takes_its_job_out_of_the_queue(runtime, auth):
    executor = StepExecutor()
    pool = LoginPool(executor, FairQueue(workers=1, per_source=4, max_waiting=32))
    first, second = answers(
        pool, runtime, auth, [get("a1", "x", "203.0.113.1"), get("a2", "x", "203.0.113.1")]
    )
    await settle()
    second.cancel()
    await settle()
    assert pool.queue.waiting == 0
    await executor.run_next()
    assert first.result().status == 401 and not executor.pending
    assert pool.queue.running == 0


@run
async def test_an_evicted_job_is_answered_429(runtime, auth):
    executor = StepExecutor()
    pool = LoginPool(executor, FairQueue(workers=1, per_source=4, max_waiting=3))
    greedy = answers(pool, runtime, auth, [get(f"g{i}", "x", "203.0.113.1") for i in range(4)])
    await settle()  # one runs, three wait: the lane is full
    newcomer = answers(pool, runtime, auth, [get("n", "x", "203.0.113.2")])[0]
    await settle()
    assert greedy[3].done() and greedy[3].result().status == 429
    assert greedy[3].result().record["rate_limited"] == "login queue"
    while executor.pending:
        await executor.run_next()
    assert newcomer.result().status == 401


@run
async def test_identical_logins_in_the_last_seconds_of_a_cached_login_share_one_place(
    runtime, auth, clock
):
    executor = StepExecutor()
    pool = LoginPool(executor, FairQueue(workers=2, per_source=4, max_waiting=32))
    first = answers(pool, runtime, auth, [get("ci", PASSWORDS["ci"], "198.51.100.7")])[0]
    await settle()
    await executor.run_next()
    assert first.result().status == 200
    clock.advance(57)  # still cached for 3 s: inside needs_check's 5 s margin
    same = answers(
        pool, runtime, auth, [get("ci", PASSWORDS["ci"], "198.51.100.7") for _ in range(8)]
    )
    await settle()
    while executor.pending:
        await executor.run_next()
    # Found by bench/proxy_protocol.py: the leader's job used to be answered from the memo
    # without renewing it, so its followers, still inside the margin, each took a place of
    # their own (4 per network) and the rest got 429. Its check now renews the entry.
    assert [t.result().status for t in same] == [200] * 8
    assert auth.verified_recently(runtime.policy.accounts, "ci", PASSWORDS["ci"])
