"""What the upstream answers, made fit for clients of the proxy (`regauth.protocol.rewrite`).

- URLs pointing at the upstream stay on the proxy (relative upload Locations, Link pages).
- The challenges of a `/v2/` response become one Bearer challenge with regauth's realm and
  service.
- A 101 kills the flow (a registry route never becomes a tunnel).
- Response bodies stream through, whatever their size, so a body that breaks its own framing
  (distribution 2.8 sends a 416 whose Content-Length is the blob's) reaches the client exactly
  as the registry sent it, cut where the registry cut it; small bodies are kept for mitmweb.
- In inject mode, an upstream 401 to regauth's own credentials is never passed on (the
  client's token was fine, regauth's credentials were not): regauth drops its cached upstream
  token and fetches a new one at once; a request it can have repeated (no body, or a body it
  held whole) is answered `307` to itself, so the client repeats it with the new token in place,
  once per `upstream_auth.RetryGuard` window; anything else gets `503 UNAVAILABLE` with
  `Retry-After`, which registry clients retry. Never a loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mitmproxy import http

from regauth.mitm.fail_closed import fail_closed
from regauth.mitm.flow_state import FlowState
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.flow_state import local_response
from regauth.protocol import rewrite
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.routes import is_registry_path
from regauth.upstream_auth import RETRY_AFTER
from regauth.upstream_auth import RetryGuard
from regauth.upstream_auth import UpstreamAuthError

logger = logging.getLogger(__name__)

KEEP_FOR_DISPLAY = 64 * 1024  # bytes of a streamed response body kept for mitmweb


class ResponseRewriter:
    def __init__(self, states: FlowStates, retry_guard: RetryGuard | None = None) -> None:
        self.states = states
        self.retry_guard = retry_guard or RetryGuard()

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.states.get(flow)
        if state is None or state.answered_by != "upstream" or flow.response is None:
            return
        active = state.active
        assert active is not None
        response = flow.response
        for name in ("location", "content-location"):
            if name in response.headers:
                response.headers[name] = rewrite.relative_location(
                    response.headers[name], active.upstream, active.public
                )
        if "link" in response.headers:
            response.headers["link"] = rewrite.rewrite_link(
                response.headers["link"], active.upstream, active.public
            )
        challenges = response.headers.get_all("www-authenticate")
        if challenges and is_registry_path(flow.request.path.partition("?")[0]):
            value, records = rewrite.rewrite_challenges(
                challenges, active.realm, active.runtime.policy.service
            )
            state.upstream_challenge.extend(records)
            response.headers.set_all("www-authenticate", [value])
        if response.status_code == 101:
            flow.kill()  # never let a registry route become a tunnel
            return
        if state.injected and response.status_code == 401:
            state.upstream_refused_credentials = True
            return  # read whole: it is replaced in `response`
        response.stream = _keep_prefix(state)

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        state = self.states.get(flow)
        if state is None or flow.response is None:
            return
        kept = state.kept_response
        if kept is not None and flow.response.stream and state.counted.get("response") == len(kept):
            # The whole body was small: keep it on the flow so mitmweb can show it.
            flow.response.data.content = bytes(kept)
        if state.upstream_refused_credentials:
            await self._after_refused_credentials(flow, state)

    async def _after_refused_credentials(self, flow: http.HTTPFlow, state: FlowState) -> None:
        active = state.active
        route = state.route
        renewed = False
        auth = active.upstream_auth if active is not None else None
        if auth is not None and route is not None:
            auth.forget(route.required)
        # Basic credentials refused stay refused: only a token can be renewed.
        if auth is not None and route is not None and auth.credentials.kind == "bearer":
            try:
                await asyncio.to_thread(auth.header_for, route.required)
                renewed = True
            except UpstreamAuthError as e:
                logger.warning("regauth: upstream credentials unavailable: %s", e)
        view = state.view
        # A streamed request body is gone: only the client can send it again.
        held = view is not None and (view.body_absent or not flow.request.stream)
        if (
            renewed
            and held
            and view is not None
            and self.retry_guard.may_retry(view.client_ip, view.method, view.target)
        ):
            # Relative: the client resolves it against the URL it asked, its own host name.
            flow.response = local_response(flow.request, 307, b"", {"Location": view.target})
            state.reason_override = (
                "upstream refused the injected credentials: renewed, client sent back once"
            )
            return
        answer = RegistryError(
            503,
            Code.UNAVAILABLE,
            "the upstream registry refused regauth's credentials; retry",
            headers={"Retry-After": str(RETRY_AFTER)},
        ).answer()
        flow.response = local_response(flow.request, answer.status, answer.body, answer.headers)
        state.reason_override = "upstream refused the injected credentials"


def _keep_prefix(state: FlowState) -> Callable[[bytes], bytes]:
    """A streaming callable: passes chunks through, counts them, keeps a bounded prefix."""
    state.counted["response"] = 0
    kept = bytearray()
    state.kept_response = kept

    def stream(chunk: bytes) -> bytes:
        state.counted["response"] += len(chunk)
        if len(kept) < KEEP_FOR_DISPLAY:
            kept.extend(chunk[: KEEP_FOR_DISPLAY - len(kept)])
        return chunk

    return stream
