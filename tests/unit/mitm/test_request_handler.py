"""The request handler in process: it carries out the front door's decisions."""

from __future__ import annotations

import asyncio

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth.mitm import guard
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import running


def _run(policy, certs_dir, *flows, **options):
    async def run():
        async with running(policy, certs_dir, **options) as harness:
            for flow in flows:
                await harness.request(flow)
        return flows

    return asyncio.run(run())


def test_an_exception_in_a_hook_refuses_the_flow(write_policy, certs_dir, monkeypatch):
    def explode(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("regauth.front.decide", explode)
    [flow] = _run(write_policy(), certs_dir, registry_flow())
    assert flow.response is not None and flow.response.status_code == 500
    assert b"UNAVAILABLE" in flow.response.content
    assert guard.FORWARD_MARK not in flow.metadata


def test_the_guard_kills_requests_without_a_decision():
    undecided = registry_flow()
    guard.RegauthGuard().requestheaders(undecided)
    assert undecided.error is not None and undecided.error.msg == "Connection killed."
    decided = registry_flow()
    decided.metadata[guard.FORWARD_MARK] = True
    guard.RegauthGuard().requestheaders(decided)
    assert decided.error is None


def test_without_a_policy_every_request_is_refused(certs_dir):
    [flow] = _run(None, certs_dir, registry_flow())
    assert flow.response is not None and flow.response.status_code == 503


def test_replayed_and_foreign_destination_flows_are_refused(write_policy, certs_dir):
    replayed = registry_flow("/v2/")
    replayed.is_replay = "request"
    elsewhere = registry_flow("/v2/")
    elsewhere.request.host = "attacker.example"
    regular = registry_flow("/v2/")
    regular.client_conn.proxy_mode = ProxyMode.parse("regular")
    for flow in _run(write_policy(), certs_dir, replayed, elsewhere, regular):
        assert flow.response is not None and flow.response.status_code == 403
        assert guard.FORWARD_MARK not in flow.metadata


def test_the_guard_kills_connect_requests():
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", path=b"", authority=b"x:443"))
    guard.RegauthGuard().http_connect(flow)
    assert flow.error is not None and flow.error.msg == "Connection killed."


def test_a_forwarded_request_gets_the_decided_header_changes(write_policy, certs_dir):
    flow = registry_flow("/v2/public/app/manifests/1",
                         headers={"Forwarded": "for=1.2.3.4", "Upgrade": "h2c"})
    [flow] = _run(write_policy(mode="delegate"), certs_dir, flow)
    assert flow.metadata.get(guard.FORWARD_MARK) and flow.response is None
    headers = flow.request.headers
    assert "forwarded" not in headers and "upgrade" not in headers
    assert headers["X-Forwarded-Host"] == "localhost:5443"
    assert headers["X-Forwarded-Proto"] == "https"
    assert isinstance(flow.request, http.Request)
