"""Carries out the front door's decision for each request (`regauth.front`).

Life of a request in this addon:
- `requestheaders`: build a `RequestView`, ask `front.decide`, apply the decision: answer
  locally (through the refusal sink when a large body may follow), forward with the decided
  header changes (and regauth's upstream credentials in inject mode), issue a token off the
  event loop, or wait for a token form.
- `request`: a token form has arrived (`front.token_form`), or a forwarded body is complete and
  its size is checked against what was declared (`front.check_body`).
- `server_connect`: the upstream is always spoken to in HTTP/1.1, so framing is explicit.
Nothing here decides an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from mitmproxy import http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import ReverseMode

from regauth import front
from regauth.logins.credentials import Authenticator
from regauth.logins.queue import WORKERS
from regauth.mitm.client_certs import CLIENT_CERTIFICATE
from regauth.mitm.client_certs import CLIENT_CERTIFICATE_REFUSED
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.fail_closed import FORWARD_MARK
from regauth.mitm.fail_closed import LOCAL_MARK
from regauth.mitm.fail_closed import fail_closed
from regauth.mitm.flow_state import FlowState
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.flow_state import local_response
from regauth.mitm.login_pool import LoginPool
from regauth.mitm.patches.framing import body_absent
from regauth.mitm.patches.stream_isolation import DISCARD_MARK
from regauth.mitm.refusal_sink import NONCE_HEADER
from regauth.mitm.refusal_sink import RefusalSink
from regauth.mitm.scrub import CLIENT_AUTHORIZATION
from regauth.mitm.scrub import CLIENT_ORIGIN
from regauth.mitm.scrub import redact_authorization
from regauth.mitm.scrub import scrub_request
from regauth.mtls.identity import ClientCertificate
from regauth.protocol.auth_header import describe
from regauth.protocol.errors import Answer
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.runtime import Active
from regauth.upstream_auth import UpstreamAuthError

logger = logging.getLogger(__name__)

# Set by an adapter that cannot let requests reach the upstream now (the embedded registry is
# restarting, every registry connection allowed is open, the delegate check has not passed):
# why, for the front door to refuse registry requests with 503.
UPSTREAM_UNAVAILABLE = "regauth.upstream_unavailable"
# Set by the connection limits on a connection accepted past the connection ceiling: why, for
# the front door to answer its request with 503 and close it.
SHED = "regauth.shed"


def _goes_to_upstream(flow: http.HTTPFlow, active: Active | None) -> bool:
    """Only live flows of the reverse proxy, aimed at the configured upstream."""
    if active is None or flow.is_replay or not isinstance(flow.client_conn.proxy_mode, ReverseMode):
        return False
    request = flow.request
    upstream = active.upstream
    return (request.scheme, request.host.lower(), request.port) == (
        upstream.scheme,
        upstream.host,
        upstream.port,
    )


def request_view(flow: http.HTTPFlow, active: Active | None) -> front.RequestView:
    request = flow.request
    headers = request.headers
    lengths = tuple(headers.get_all("content-length"))
    te = headers.get("transfer-encoding")
    http1 = request.http_version.startswith("HTTP/1")
    peer = flow.client_conn.peername
    certificate = flow.metadata.get(CLIENT_CERTIFICATE)
    return front.RequestView(
        method=request.data.method.decode("utf-8", "surrogateescape"),
        target=request.path,
        http_version=request.http_version,
        authorization=tuple(headers.get_all("authorization")),
        content_types=tuple(headers.get_all("content-type")),
        content_lengths=lengths,
        transfer_encoding=te,
        body_absent=body_absent(request.raw_content, http1, lengths[0] if lengths else None, te),
        client_ip=peer[0] if peer else "",
        to_upstream=_goes_to_upstream(flow, active),
        upstream_unavailable=str(flow.metadata.get(UPSTREAM_UNAVAILABLE, "")),
        shed=str(flow.metadata.get(SHED, "")),
        header_fields=tuple(headers.fields),
        client_certificate=certificate if isinstance(certificate, ClientCertificate) else None,
        client_certificate_refused=str(flow.metadata.get(CLIENT_CERTIFICATE_REFUSED, "")),
    )


class RequestHandler:
    """Applies front-door decisions; owns the token endpoint's login pool and the sink."""

    def __init__(self, config: ConfigLoader, states: FlowStates) -> None:
        self.config = config
        self.states = states
        self.authenticator = Authenticator()
        self.sink = RefusalSink()
        # bcrypt runs here, bounded, so failed logins cannot take every thread of the loop;
        # the login queue decides whose check runs next (mitm/login_pool.py).
        self.login_pool = ThreadPoolExecutor(
            max_workers=WORKERS, thread_name_prefix="regauth-login"
        )
        self.logins = LoginPool(self.login_pool)

    async def running(self) -> None:
        await self.sink.start()

    async def done(self) -> None:
        self.login_pool.shutdown(wait=False, cancel_futures=True)
        await self.sink.stop()

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # One framing rule for every request regardless of the client's protocol: the
        # upstream always speaks HTTP/1.1 (explicit Content-Length or chunked bodies).
        data.server.alpn_offers = (b"http/1.1",)

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        # Marks from an earlier life of this flow (a replay, a loaded file) decide nothing.
        flow.metadata.pop(FORWARD_MARK, None)
        flow.metadata.pop(LOCAL_MARK, None)
        state = self.states.start(flow, time.time())
        active = self.config.active
        state.active = active
        authorization = flow.request.headers.get_all("authorization")
        state.client_authorization = authorization[0] if authorization else None
        state.auth = describe(state.client_authorization)
        flow.metadata[CLIENT_AUTHORIZATION] = redact_authorization(state.client_authorization)
        if active is not None:
            flow.metadata[CLIENT_ORIGIN] = active.public.url  # what mitmweb shows (scrub.py)
        view = request_view(flow, active)
        state.view = view
        state.kind = view.kind
        if view.kind == "token":
            # Never forwarded: the credentials live on in the view and the decision only, not
            # in the flow mitmweb keeps.
            scrub_request(flow.request, state.client_authorization)
        await self._apply(flow, state, front.decide(active, view))

    async def _apply(self, flow: http.HTTPFlow, state: FlowState, decision: front.Decision) -> None:
        state.decision = decision
        match decision:
            case front.Respond():
                self._respond(flow, state, decision.answer, decision.discard_body)
            case front.Forward():
                await self._forward(flow, state, decision)
            case front.IssueToken():
                await self._issue(flow, state, decision)
            case front.ReadTokenForm():
                # The form is read (its size was bounded) and answered in `request`.
                flow.metadata[LOCAL_MARK] = True
                state.answered_by = "regauth"

    def _respond(
        self, flow: http.HTTPFlow, state: FlowState, answer: Answer, discard_body: bool
    ) -> None:
        """Answer locally; a large or unknown-size request body goes to the refusal sink."""
        flow.metadata[LOCAL_MARK] = True
        flow.metadata.pop(FORWARD_MARK, None)
        state.answered_by = "regauth"
        request = flow.request
        if discard_body and self.sink.running:
            nonce = self.sink.prepare(answer.status, answer.headers, answer.body)
            request.headers.pop("expect", None)
            request.headers[NONCE_HEADER] = nonce
            request.headers.pop("authorization", None)
            request.scheme = "http"
            request.host = "127.0.0.1"
            request.port = self.sink.port
            request.stream = state.counter("request")
            state.via_sink = True
            flow.metadata[DISCARD_MARK] = True
            return
        flow.response = local_response(request, answer.status, answer.body, answer.headers)

    def _refuse(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        error: RegistryError,
        reason: str,
        body_read: bool = False,
    ) -> None:
        """A refusal met while carrying out a decision (no upstream credentials, a body that
        does not match its length); the record then says why it was not carried out."""
        state.reason_override = reason
        discard = False
        if not body_read and state.view is not None and state.active is not None:
            discard = state.view.may_carry_large_body(state.active.stream_threshold)
        self._respond(flow, state, error.answer(), discard)

    async def _forward(
        self, flow: http.HTTPFlow, state: FlowState, decision: front.Forward
    ) -> None:
        request = flow.request
        active = state.active
        assert active is not None
        if decision.inject and active.upstream_auth is not None:
            route = decision.gate.route
            scopes = route.required if route is not None else ()
            try:
                header = await asyncio.to_thread(active.upstream_auth.header_for, scopes)
            except UpstreamAuthError as e:
                logger.warning("regauth: upstream credentials unavailable: %s", e)
                self._refuse(
                    flow,
                    state,
                    RegistryError(
                        502,
                        Code.UNAVAILABLE,
                        "regauth could not obtain upstream credentials (see its log)",
                    ),
                    "upstream credentials unavailable",
                )
                return
            request.headers["authorization"] = header
            state.injected = True
        if not (request.is_http2 or request.is_http3):
            # An absolute-form target would reach the upstream with the client's host in it.
            request.authority = ""
        for name in decision.remove_headers:
            request.headers.pop(name, None)
        for name, value in decision.set_headers:
            request.headers[name] = value
        if decision.stream:
            request.stream = state.counter("request")
        flow.metadata[FORWARD_MARK] = True
        state.answered_by = "upstream"

    async def _issue(
        self, flow: http.HTTPFlow, state: FlowState, decision: front.IssueToken
    ) -> None:
        active = state.active
        assert active is not None
        response = await self.logins.answer(active.runtime, self.authenticator, decision.request)
        state.token_trace = response.trace
        answer = front.token_answer(response)
        state.decision = answer
        self._respond(flow, state, answer.answer, discard_body=False)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.error or not flow.live:
            return
        state = self.states.get(flow)
        if state is None:
            return
        decision = state.decision
        if isinstance(decision, front.ReadTokenForm) and flow.response is None:
            active = state.active
            assert active is not None and state.view is not None
            decision = front.token_form(active, state.view, flow.request.raw_content or b"")
            scrub_request(flow.request, state.client_authorization)  # the form's secrets
            await self._apply(flow, state, decision)
            return
        if isinstance(decision, front.Forward) and flow.response is None:
            received = state.counted.get("request")
            if received is None:
                received = len(flow.request.raw_content or b"")
            error = front.check_body(decision, received)
            if error is None:
                return
            if flow.request.stream:
                # Already on its way: cut it, so the upstream gets an incomplete request and
                # its connection is closed, never reused.
                logger.warning(
                    "regauth: %s %s: %s; request aborted",
                    flow.request.method,
                    flow.request.path[:200],
                    error.message,
                )
                state.reason_override = error.message
                flow.kill()
                return
            self._refuse(flow, state, error, error.message, body_read=True)
