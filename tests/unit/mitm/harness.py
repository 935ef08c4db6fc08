"""Run regauth's addons in process, in mitmproxy's test context (no sockets, no processes).

`Harness` configures the real addon chain from `make_addons()` inside `taddons.context` and
runs flows built with `tflow` through the hooks, the way mitmproxy tests its own addons.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth.mitm.addons_list import make_addons
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.guard import RegauthGuard
from regauth.mitm.options_policy import OptionPolicy
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter

UPSTREAM = "http://127.0.0.1:5000"
PUBLIC = "https://localhost:5443"


@dataclass
class Harness:
    tctx: taddons.context
    options: OptionPolicy
    config: ConfigLoader
    requests: RequestHandler
    responses: ResponseRewriter
    recorder: Recorder
    guard: RegauthGuard

    @property
    def states(self) -> FlowStates:
        return self.requests.states

    async def request(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        """requestheaders and request, as mitmproxy runs them for a buffered request."""
        await self.requests.requestheaders(flow)
        self.guard.requestheaders(flow)
        if flow.error is None:
            await self.requests.request(flow)
            self.guard.request(flow)
        return flow

    def respond(self, flow: http.HTTPFlow, response: http.Response) -> http.HTTPFlow:
        """The upstream's answer through responseheaders and response."""
        flow.response = response
        self.responses.responseheaders(flow)
        if flow.error is None:
            self.responses.response(flow)
            self.recorder.response(flow)
        return flow

    def finish_local(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        """A locally answered flow through the response hooks (mitmproxy runs them too)."""
        self.responses.responseheaders(flow)
        self.responses.response(flow)
        self.recorder.response(flow)
        return flow


@asynccontextmanager
async def running(policy: Path | None, certs_dir: Path, log: Path | None = None,
                  **options: object) -> AsyncIterator[Harness]:
    """The configured addon chain; `policy=None` runs without a policy."""
    addons = make_addons()
    by_type = {type(addon): addon for addon in addons}
    harness = Harness(None, *(by_type[t] for t in (  # type: ignore[arg-type]
        OptionPolicy, ConfigLoader, RequestHandler, ResponseRewriter, Recorder, RegauthGuard)))
    with taddons.context(*addons) as tctx:
        harness.tctx = tctx
        settings: dict[str, object] = {
            "mode": [f"reverse:{UPSTREAM}"], "regauth_certs_dir": str(certs_dir),
            "regauth_public_url": PUBLIC, "regauth_log": str(log) if log else os.devnull,
            "regauth_reload_seconds": 0,
        }
        if policy is not None:
            settings["regauth_policy"] = str(policy)
        settings.update(options)
        tctx.configure(harness.config, **settings)
        await harness.requests.running()
        try:
            yield harness
        finally:
            await harness.requests.done()
            await harness.recorder.done()


def registry_flow(path: str = "/v2/public/app/manifests/1", method: str = "GET",
                  headers: dict[str, str] | None = None, content: bytes | None = b"",
                  http_version: str = "HTTP/1.1") -> http.HTTPFlow:
    """A live reverse-proxy flow aimed at the test upstream."""
    request = tutils.treq(method=method.encode(), path=path.encode(), host="127.0.0.1",
                          port=5000, content=content, http_version=http_version.encode(),
                          headers=http.Headers([(k.encode(), v.encode()) for k, v in
                                                (headers or {}).items()]))
    flow = tflow.tflow(req=request)
    flow.client_conn.proxy_mode = ProxyMode.parse(f"reverse:{UPSTREAM}")
    return flow
