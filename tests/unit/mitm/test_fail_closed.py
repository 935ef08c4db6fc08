"""Fail closed: `fail_closed` around every regauth flow hook, and the guard last in the chain.

An exception in a wrapped hook refuses the flow: a 500 registry error while the response has
not started (`requestheaders`, `request` of a buffered request), a kill afterwards. Each failure
is one log line naming the flow; the traceback comes at most once per `TRACE_INTERVAL`.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth.mitm import fail_closed
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter
from tests.unit.mitm.harness import get_token
from tests.unit.mitm.harness import killed
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import upstream_response

INJECT_BASIC = """    credentials:
      type: basic
      username: robot
      password: robot-secret
"""
UPLOAD = "/v2/public/app/blobs/uploads/abc?digest=sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def _fresh_trace_interval(monkeypatch):
    monkeypatch.setattr(fail_closed, "_last_trace", [float("-inf")])


def _boom(*_args, **_kwargs):
    raise RuntimeError("boom")


def _failures(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "regauth.mitm.fail_closed" and "hook failed" in r.getMessage()
    ]


# --- every flow hook of regauth's addons is wrapped ------------------------------------------


@pytest.mark.parametrize(
    ("addon", "hook"),
    [
        (RequestHandler, "requestheaders"),
        (RequestHandler, "request"),
        (ResponseRewriter, "responseheaders"),
        (ResponseRewriter, "response"),
        (Recorder, "response"),
        (Recorder, "error"),
    ],
)
def test_every_flow_hook_that_touches_a_flow_is_wrapped(addon, hook):
    assert getattr(addon, hook).__wrapped__.__name__ == hook


def test_no_other_flow_hook_is_left_unwrapped():
    flow_hooks = {"requestheaders", "request", "responseheaders", "response", "error"}
    for addon in (RequestHandler, ResponseRewriter, Recorder):
        for name in flow_hooks & set(vars(addon)):
            assert hasattr(getattr(addon, name), "__wrapped__"), (addon, name)


# --- fail_closed in the running chain --------------------------------------------------------


@run
async def test_an_exception_in_requestheaders_answers_500(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.front.decide", _boom)
    async with running(write_policy(), certs_dir) as harness:
        flow = await harness.cycle(registry_flow())
    assert flow.response is not None and flow.response.status_code == 500
    assert json.loads(flow.response.content)["errors"][0]["code"] == "UNAVAILABLE"
    assert flow.response.headers["Content-Type"] == "application/json"
    assert fail_closed.FORWARD_MARK not in flow.metadata and flow.metadata[fail_closed.LOCAL_MARK]
    assert flow.error is None and flow.id not in harness.sent_upstream
    [line] = _failures(caplog)
    assert flow.id in line.getMessage()
    assert "regauth requestheaders hook failed" in line.getMessage()
    assert "GET /v2/public/app/manifests/1" in line.getMessage()
    assert "RuntimeError: boom" in line.getMessage()


@run
async def test_an_exception_in_request_answers_500_for_a_buffered_body(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.front.check_body", _boom)
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = await harness.cycle(registry_flow(UPLOAD, "PUT", {}, b"abc"))
    assert flow.response.status_code == 500
    assert fail_closed.FORWARD_MARK not in flow.metadata
    assert flow.id not in harness.sent_upstream
    [line] = _failures(caplog)
    assert "regauth request hook failed" in line.getMessage() and flow.id in line.getMessage()


@run
async def test_an_exception_in_request_kills_a_streamed_body(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.front.check_body", _boom)
    async with running(
        write_policy(mode="delegate"), certs_dir, regauth_stream_threshold=16
    ) as harness:
        flow = await harness.cycle(registry_flow(UPLOAD, "PUT", {}, b"x" * 100))
    assert killed(flow) and flow.response is None
    assert len(_failures(caplog)) == 1


@run
async def test_an_exception_in_responseheaders_kills_the_flow(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.protocol.rewrite.rewrite_challenges", _boom)
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = await harness.cycle(
            registry_flow(),
            upstream_response(
                401, [("WWW-Authenticate", 'Bearer realm="http://127.0.0.1:5000/token"')]
            ),
        )
    assert killed(flow)
    [line] = _failures(caplog)
    assert "regauth responseheaders hook failed" in line.getMessage()
    assert flow.id in line.getMessage()


@run
async def test_an_exception_in_the_rewriters_response_hook_kills_the_flow(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.mitm.response_rewriter.RegistryError", _boom)
    async with running(write_policy(upstream_extra=INJECT_BASIC), certs_dir) as harness:
        token = await get_token(harness, "repository:public/app:pull")
        flow = await harness.cycle(
            registry_flow(headers={"Authorization": f"Bearer {token}"}),
            upstream_response(401, [("WWW-Authenticate", 'Basic realm="registry"')]),
        )
    assert killed(flow)  # the upstream's 401 never reaches the client
    [line] = _failures(caplog)
    assert "regauth response hook failed" in line.getMessage()


@run
async def test_an_exception_in_the_recorder_kills_the_flow(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.mitm.recorder.build_record", _boom)
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = await harness.send(registry_flow())
        flow.response = upstream_response(200)
        await harness.hook("responseheaders", flow)
        await harness.hook("response", flow)
    assert killed(flow)
    [line] = _failures(caplog)
    assert "regauth response hook failed" in line.getMessage()


@run
async def test_an_exception_in_the_recorders_error_hook_is_contained(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.mitm.recorder.build_record", _boom)
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        failed = await harness.fail(registry_flow(), "[Errno 111] Connect call failed")
    assert failed.error is not None
    assert len(_failures(caplog)) == 1


@run
async def test_an_exception_in_the_error_hook_of_a_killed_flow_is_contained(
    write_policy, certs_dir, monkeypatch, caplog
):
    """A flow the guard (or a 101, or a cut body) killed gets the error hook; if recording it
    fails, the failure must still be one contained log line: killing it again raises
    mitmproxy's ControlException out of the hook."""
    monkeypatch.setattr("regauth.mitm.recorder.build_record", _boom)
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = registry_flow()
        await harness.send(flow)
        flow.response = upstream_response(101, [("Upgrade", "h2c")])
        await harness.hook("responseheaders", flow)  # the rewriter kills a 101
        assert killed(flow)
        harness.recorder.error(flow)  # must not raise
    assert len(_failures(caplog)) == 1


# --- one line per failure, the traceback at most once per interval ---------------------------


@run
async def test_the_traceback_is_logged_at_most_once_per_interval(
    write_policy, certs_dir, monkeypatch, caplog
):
    monkeypatch.setattr("regauth.front.decide", _boom)
    async with running(write_policy(), certs_dir) as harness:
        first = await harness.cycle(registry_flow())
        second = await harness.cycle(registry_flow())
        # a minute later
        fail_closed._last_trace[0] = time.monotonic() - fail_closed.TRACE_INTERVAL - 1
        third = await harness.cycle(registry_flow())
    lines = _failures(caplog)
    assert [
        line.getMessage().count(f.id) for line, f in zip(lines, (first, second, third), strict=True)
    ] == [1, 1, 1]
    assert [line.exc_info is not None for line in lines] == [True, False, True]
    assert all(line.levelno == logging.ERROR for line in lines)


@run
async def test_an_async_and_a_sync_hook_fail_closed_alike():
    class Hooks:
        @fail_closed.fail_closed
        async def requestheaders(self, flow):
            raise ValueError("async")

        @fail_closed.fail_closed
        def request(self, flow):
            raise ValueError("sync")

    one, two = registry_flow(), registry_flow()
    await Hooks().requestheaders(one)
    Hooks().request(two)
    assert one.response.status_code == two.response.status_code == 500


def test_a_failure_after_the_response_exists_kills_instead_of_answering():
    class Hooks:
        @fail_closed.fail_closed
        def request(self, flow):
            raise ValueError("late")

    flow = tflow.tflow(resp=tutils.tresp(status_code=200))
    flow.metadata[fail_closed.FORWARD_MARK] = True
    Hooks().request(flow)
    assert killed(flow) and flow.response.status_code == 200
    assert fail_closed.FORWARD_MARK not in flow.metadata


# --- the guard -------------------------------------------------------------------------------


def test_the_guard_kills_connect_requests():
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", path=b"", authority=b"x:443"))
    fail_closed.FailClosedGuard().http_connect(flow)
    assert killed(flow)


def test_the_guard_kills_requests_without_a_decision(caplog):
    undecided = registry_flow()
    fail_closed.FailClosedGuard().requestheaders(undecided)
    assert killed(undecided)
    assert "reached the guard without a regauth decision" in caplog.text


@pytest.mark.parametrize("mark", [fail_closed.FORWARD_MARK, fail_closed.LOCAL_MARK])
def test_the_guard_lets_decided_requests_pass_requestheaders(mark):
    flow = registry_flow()
    flow.metadata[mark] = True
    fail_closed.FailClosedGuard().requestheaders(flow)
    assert flow.error is None


@pytest.mark.parametrize("hook", ["requestheaders", "request"])
def test_the_guard_leaves_answered_and_errored_flows_alone(hook):
    answered = tflow.tflow(resp=True)
    errored = tflow.tflow(err=True)
    for flow in (answered, errored):
        before = flow.error
        getattr(fail_closed.FailClosedGuard(), hook)(flow)
        assert flow.error is before and flow.live


def test_the_guard_kills_a_request_with_no_response_and_no_forward_decision(caplog):
    local = registry_flow()
    local.metadata[fail_closed.LOCAL_MARK] = True  # e.g. a token form that never got its answer
    nothing = registry_flow()
    for flow in (local, nothing):
        fail_closed.FailClosedGuard().request(flow)
        assert killed(flow)
    assert caplog.text.count("has no response and no forward decision") == 2


def test_the_guard_lets_forwarded_and_sink_bound_requests_pass_request():
    forwarded = registry_flow()
    forwarded.metadata[fail_closed.FORWARD_MARK] = True
    to_sink = registry_flow()
    to_sink.metadata[fail_closed.LOCAL_MARK] = True
    to_sink.request.stream = lambda chunk: chunk  # streamed into the refusal sink
    for flow in (forwarded, to_sink):
        fail_closed.FailClosedGuard().request(flow)
        assert flow.error is None


@run
async def test_the_guard_is_last_and_kills_what_an_earlier_addon_left_undecided(
    write_policy, certs_dir, monkeypatch
):
    async def undecided(self, flow):  # a request handler that decided nothing
        return None

    monkeypatch.setattr(RequestHandler, "requestheaders", undecided)
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        assert harness.tctx.master.addons.chain[-1] is harness.guard
        flow = await harness.cycle(registry_flow())
    assert killed(flow) and flow.id not in harness.sent_upstream
