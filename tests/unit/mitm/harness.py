"""Run regauth's addons in process, in mitmproxy's test context (no registry, no proxy server).

`running()` configures the real addon chain from `make_addons()` inside `taddons.context`, and
`Harness` runs flows built with `tflow`/`tutils` through it the way mitmproxy's HTTP layer does
(`mitmproxy/proxy/layers/http/__init__.py`): `requestheaders` while the body is still on its
way, `request` once it has arrived (or streamed), then `responseheaders` and `response` with
regauth's own answer or the upstream's, or `error` when a hook killed the flow. Every hook runs
through the whole chain in order; unlike mitmproxy's addon manager, the harness lets an
exception escape, so a hook that raises fails the test instead of being logged.

A request refused through the refusal sink is really sent to the sink (a loopback socket the
request handler opened), and its answer is what the flow gets.

regauth's own requests to the upstream (the readiness probe and, in delegate mode, the delegate
check) go to `Harness.registry`, a `FakeRegistry` answering like a token-mode distribution that
trusts regauth unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import asynccontextmanager
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlencode

from mitmproxy import flow as mflow
from mitmproxy import hooks
from mitmproxy import http
from mitmproxy import options as moptions
from mitmproxy.net.http.http1.assemble import assemble_request_head
from mitmproxy.net.http.http1.read import read_response_head
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth.delegate_check import Reply
from regauth.mitm.addons_list import make_addons
from regauth.mitm.admin import AdminServer
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.conn_limits import ConnectionLimits
from regauth.mitm.delegate_gate import DelegateGate
from regauth.mitm.fail_closed import FailClosedGuard
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.options_policy import OptionPolicy
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter
from regauth.mitm.upstream_keys import UpstreamKeyWatch
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE

UPSTREAM = "http://127.0.0.1:5000"
PUBLIC = "https://localhost:5443"
CLIENT = ("127.0.0.1", 40000)

FLOW_HOOKS: dict[str, type[hooks.Hook]] = {
    "requestheaders": http_layer.HttpRequestHeadersHook,
    "request": http_layer.HttpRequestHook,
    "responseheaders": http_layer.HttpResponseHeadersHook,
    "response": http_layer.HttpResponseHook,
    "error": http_layer.HttpErrorHook,
}

# The body a test flow's client sends after its headers (mitmproxy reads it after
# `requestheaders`), keyed by flow.
_BODIES: weakref.WeakKeyDictionary[http.HTTPFlow, bytes] = weakref.WeakKeyDictionary()


@contextmanager
def restoring_log_handlers() -> Iterator[None]:
    """Remove the root log handlers a mitmproxy master installs (its log events, event store,
    error check): they post to the master's event loop, which is closed once a test is over,
    and outside a test (PYTEST_CURRENT_TEST unset) mitmproxy does not filter them out."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)


@dataclass
class FakeRegistry:
    """What the upstream answers regauth's own `GET /v2/` (the upstream probe's `fetch`).

    `anonymous` and `with_token` are the answers without and with an Authorization header
    (default: a token-mode registry for regauth's realm and service, accepting its tokens);
    `error`, when set, is raised instead; `gate`, when set, is awaited before answering.
    `seen` lists (User-Agent, Authorization) of every request.
    """

    anonymous: Reply = field(
        default_factory=lambda: Reply(
            401, (f'Bearer realm="{PUBLIC}/v2/token",service="{SERVICE}"',)
        )
    )
    with_token: Reply = field(default_factory=lambda: Reply(200))
    error: Exception | None = None
    gate: asyncio.Event | None = None
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    async def fetch(
        self,
        origin: object,
        context: object,
        timeout: float,
        agent: str = "regauth-readiness",
        authorization: str | None = None,
    ) -> Reply:
        self.seen.append((agent, authorization))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.with_token if authorization else self.anonymous


def killed(flow: http.HTTPFlow) -> bool:
    return flow.error is not None and flow.error.msg == mflow.Error.KILLED_MESSAGE


@dataclass
class Harness:
    tctx: taddons.context
    limits: ConnectionLimits
    options: OptionPolicy
    config: ConfigLoader
    requests: RequestHandler
    responses: ResponseRewriter
    keys: UpstreamKeyWatch
    recorder: Recorder
    guard: FailClosedGuard
    log: Path | None = None
    admin: AdminServer | None = None
    delegate: DelegateGate | None = None
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    # What went on the wire, per flow: to the upstream (or the sink), and to the client.
    sent_upstream: dict[str, bytes] = field(default_factory=dict)
    sent_to_client: dict[str, bytes] = field(default_factory=dict)
    _sink_answers: dict[str, http.Response] = field(default_factory=dict)

    @property
    def states(self) -> FlowStates:
        return self.requests.states

    async def hook(self, name: str, flow: http.HTTPFlow) -> None:
        """One flow hook through the whole chain, in order (exceptions escape)."""
        event = FLOW_HOOKS[name](flow)
        manager = self.tctx.master.addons
        for addon in manager.chain:
            await manager.invoke_addon(addon, event)

    async def lifecycle(self, event: hooks.Hook) -> None:
        manager = self.tctx.master.addons
        for addon in manager.chain:
            await manager.invoke_addon(addon, event)

    async def send(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        """The request half: requestheaders, the body, request (error if a hook killed it).
        A request streamed into the refusal sink gets the sink's answer in `cycle`."""
        await self.hook("requestheaders", flow)
        if killed(flow):
            await self.hook("error", flow)
            return flow
        body = _BODIES.pop(flow, b"")
        request = flow.request
        if request.stream and flow.response is None:
            chunks = _feed(request.stream, body)
            if self._to_sink(flow):
                self._sink_answers[flow.id] = await self._sink_answer(flow, chunks)
            else:
                self.sent_upstream[flow.id] = chunks
        else:
            request.data.content = body
        request.timestamp_end = time.time()
        await self.hook("request", flow)
        if killed(flow):
            await self.hook("error", flow)
        return flow

    async def cycle(
        self, flow: http.HTTPFlow, upstream: http.Response | None = None
    ) -> http.HTTPFlow:
        """The whole life of a flow. A forwarded request gets `upstream` (default: an empty
        200) as the registry's answer; a local answer goes through the response hooks too."""
        await self.send(flow)
        if flow.error is not None:
            return flow
        sink_answer = self._sink_answers.pop(flow.id, None)
        if sink_answer is not None:
            return await self.answer(flow, sink_answer)
        response = flow.response
        if response is not None:
            # regauth's own answer: mitmproxy emulates responseheaders, then sends it.
            response.timestamp_start = time.time()
            await self.hook("responseheaders", flow)
            if killed(flow):
                await self.hook("error", flow)
                return flow
            await self.hook("response", flow)
            self.sent_to_client[flow.id] = response.raw_content or b""
            return flow
        self.sent_upstream.setdefault(flow.id, flow.request.raw_content or b"")
        return await self.answer(flow, upstream if upstream is not None else upstream_response())

    async def answer(self, flow: http.HTTPFlow, response: http.Response) -> http.HTTPFlow:
        """The upstream's (or the sink's) response through responseheaders and response."""
        body = response.raw_content or b""
        response.data.content = None  # the body is still on its way
        response.timestamp_start = time.time()
        flow.response = response
        await self.hook("responseheaders", flow)
        if killed(flow):
            await self.hook("error", flow)
            return flow
        if callable(response.stream) and body:
            self.sent_to_client[flow.id] = _feed(response.stream, body)
        else:
            response.data.content = body
            self.sent_to_client[flow.id] = body
        response.timestamp_end = time.time()
        await self.hook("response", flow)
        return flow

    async def fail(self, flow: http.HTTPFlow, message: str) -> http.HTTPFlow:
        """A forwarded request whose upstream connection failed (mitmproxy's error hook)."""
        await self.send(flow)
        assert flow.response is None and flow.error is None, "the request was not forwarded"
        flow.error = mflow.Error(message)
        await self.hook("error", flow)
        return flow

    def _to_sink(self, flow: http.HTTPFlow) -> bool:
        request = flow.request
        return (request.scheme, request.host, request.port) == (
            "http",
            "127.0.0.1",
            self.requests.sink.port,
        )

    async def _sink_answer(self, flow: http.HTTPFlow, body: bytes) -> http.Response:
        """Send the streamed request to the refusal sink over loopback; its answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.requests.sink.port)
        request = flow.request.copy()
        request.http_version = "HTTP/1.1"
        writer.write(assemble_request_head(request) + body)
        await writer.drain()
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head, _, content = data.partition(b"\r\n\r\n")
        response = read_response_head(head.split(b"\r\n"))
        response.data.content = content
        return response

    def records(self) -> list[dict]:
        """The exchange log's records so far."""
        assert self.log is not None, "start the harness with log=PATH"
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def _feed(stream: Callable[[bytes], bytes | list[bytes]], body: bytes) -> bytes:
    """Pass `body` through a streaming callable in two chunks, then the end (b""), as
    mitmproxy does; what comes out goes on the wire."""
    half = len(body) // 2
    results = [stream(chunk) for chunk in (body[:half], body[half:]) if chunk]
    results.append(stream(b""))
    return b"".join(r if isinstance(r, bytes) else b"".join(r) for r in results)


@asynccontextmanager
async def running(
    policy: Path | None,
    certs_dir: Path,
    log: Path | None = None,
    registry: FakeRegistry | None = None,
    **options: object,
) -> AsyncIterator[Harness]:
    """The configured, running addon chain; `policy=None` runs without a policy; `registry`
    answers regauth's own requests to the upstream (default: a registry trusting regauth)."""
    addons = make_addons()
    by_type = {type(addon): addon for addon in addons}
    harness = Harness(
        None,
        *(
            by_type[t]
            for t in (  # type: ignore[arg-type]
                ConnectionLimits,
                OptionPolicy,
                ConfigLoader,
                RequestHandler,
                ResponseRewriter,
                UpstreamKeyWatch,
                Recorder,
                FailClosedGuard,
            )
        ),
        log=log,
        admin=by_type[AdminServer],
        delegate=by_type[DelegateGate],  # type: ignore[arg-type]
        registry=registry or FakeRegistry(),
    )
    harness.admin.probe.fetch = harness.registry.fetch  # type: ignore[union-attr]
    with restoring_log_handlers(), taddons.context(*addons) as tctx:
        harness.tctx = tctx
        settings: dict[str, object] = {
            "mode": [f"reverse:{UPSTREAM}"],
            "regauth_certs_dir": str(certs_dir),
            "regauth_public_url": PUBLIC,
            "regauth_log": str(log) if log else str(certs_dir.parent / "discarded.jsonl"),
            "regauth_reload_seconds": 0,
        }
        if policy is not None:
            settings["regauth_policy"] = str(policy)
        settings.update(options)
        tctx.configure(harness.config, **settings)
        await harness.lifecycle(hooks.RunningHook())
        try:
            yield harness
        finally:
            await harness.lifecycle(hooks.DoneHook())


def run(coroutine_function: Callable[..., object]) -> Callable[..., object]:
    """Decorator: run an async test body with `asyncio.run` (no pytest-asyncio here)."""

    @functools.wraps(coroutine_function)
    def wrapper(*args: object, **kwargs: object) -> object:
        return asyncio.run(coroutine_function(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper


def registry_flow(
    path: str = "/v2/public/app/manifests/1",
    method: str = "GET",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    http_version: str = "HTTP/1.1",
    end_stream: bool | None = None,
    client: tuple[str, int] = CLIENT,
    live: bool = True,
) -> http.HTTPFlow:
    """A live reverse-proxy flow aimed at the test upstream, as mitmproxy has it when
    `requestheaders` runs: the body (`body`) has not arrived yet.

    HTTP/1 requests with a body get a Content-Length unless `headers` frame it; an HTTP/2
    request whose HEADERS frame ended the stream (`end_stream`, default: no body) has an empty
    body already (regauth.mitm.patches.framing), any other one none yet.
    """
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in pairs}
    http1 = http_version.startswith("HTTP/1")
    if http1 and body and not names & {"content-length", "transfer-encoding"}:
        pairs.append(("Content-Length", str(len(body))))
    if end_stream is None:
        end_stream = not body
    request = tutils.treq(
        method=method.encode(),
        path=path.encode(),
        host="127.0.0.1",
        port=5000,
        authority=b"" if http1 else b"localhost:5443",
        scheme=b"http",
        content=None,
        http_version=http_version.encode(),
        headers=http.Headers([(k.encode(), v.encode()) for k, v in pairs]),
        timestamp_start=time.time(),
        timestamp_end=None,
    )
    if not http1 and end_stream:
        request.data.content = b""
    flow = tflow.tflow(req=request, live=live)
    flow.client_conn.proxy_mode = ProxyMode.parse(f"reverse:{UPSTREAM}")
    flow.client_conn.peername = client
    _BODIES[flow] = body
    return flow


def upstream_response(
    status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> http.Response:
    """What the registry answers (Content-Length added unless `headers` frame the body)."""
    pairs = list(headers or [])
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in pairs):
        pairs.append(("Content-Length", str(len(body))))
    return tutils.tresp(
        status_code=status,
        content=body,
        timestamp_start=time.time(),
        headers=http.Headers([(k.encode(), v.encode()) for k, v in pairs]),
    )


# ---------------------------------------------------------------------------------------------
# Every option regauth's masters know (mitmdump's and mitmweb's, with their term log and
# dumper, and mitmproxy's console options the allow-list names), for option-policy tests that
# need the real names, types and defaults without the addons that would react to them.


@functools.cache
def _option_specs() -> tuple[tuple[str, object, object, str, object], ...]:
    from mitmproxy.master import Master
    from mitmproxy.tools.console.consoleaddons import ConsoleAddon
    from mitmproxy.tools.dump import DumpMaster
    from mitmproxy.tools.web.master import WebMaster

    async def collect() -> dict[str, tuple[str, object, object, str, object]]:
        specs: dict[str, tuple[str, object, object, str, object]] = {}
        masters: list[Master] = []
        for make in (
            lambda o: WebMaster(o, with_termlog=True),
            lambda o: DumpMaster(o, with_termlog=False, with_dumper=True),
        ):
            opts = moptions.Options()
            masters.append(make(opts))
            for name, option in opts.items():
                specs.setdefault(
                    name, (name, option.typespec, option.default, option.help, option.choices)
                )
        opts = moptions.Options()
        console = Master(opts)
        console.addons.add(ConsoleAddon(console))
        for name, option in opts.items():
            if name.startswith("console_"):
                specs.setdefault(
                    name, (name, option.typespec, option.default, option.help, option.choices)
                )
        return specs

    with restoring_log_handlers():
        return tuple(sorted(asyncio.run(collect()).values()))


def all_options() -> moptions.Options:
    """A fresh Options with every option of regauth's masters, at its default."""
    opts = moptions.Options()
    for name, typespec, default, help_text, choices in _option_specs():
        if name not in opts:
            opts.add_option(name, typespec, default, help_text, choices)  # type: ignore[arg-type]
    return opts


# ---------------------------------------------------------------------------------------------
# Token endpoint helpers.


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_flow(
    *scopes: str,
    user: str | None = None,
    service: str = SERVICE,
    offline: bool = False,
    client: tuple[str, int] = CLIENT,
) -> http.HTTPFlow:
    """GET /v2/token for `scopes`, anonymous or as `user` (with the test password)."""
    query = [("service", service)] + [("scope", s) for s in scopes]
    if offline:
        query.append(("offline_token", "true"))
    headers = {"Authorization": basic(user, PASSWORDS[user])} if user else {}
    return registry_flow("/v2/token?" + urlencode(query), headers=headers, client=client)


def token_post(
    form: dict[str, str], http_version: str = "HTTP/1.1", headers: dict[str, str] | None = None
) -> http.HTTPFlow:
    """POST /v2/token with a form body (Content-Length set unless `headers` set one)."""
    body = urlencode(form).encode()
    pairs = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    return registry_flow("/v2/token", "POST", pairs, body, http_version)


async def get_token(harness: Harness, *scopes: str, user: str | None = None) -> str:
    flow = await harness.cycle(token_flow(*scopes, user=user))
    assert flow.response is not None and flow.response.status_code == 200, flow.response
    return json.loads(flow.response.content)["token"]
