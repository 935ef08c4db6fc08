"""What the upstream answers, made fit for clients of the proxy (`regauth.protocol.rewrite`).

- URLs pointing at the upstream stay on the proxy (relative upload Locations, Link pages).
- The challenges of a `/v2/` response become one Bearer challenge with regauth's realm and
  service.
- A 101 kills the flow (a registry route never becomes a tunnel).
- Response bodies stream through, whatever their size, so a body that breaks its own framing
  (distribution 2.8 sends a 416 whose Content-Length is the blob's) reaches the client exactly
  as the registry sent it, cut where the registry cut it; small bodies are kept for mitmweb.
- In inject mode, an upstream 401 to regauth's own credentials becomes a 502: the client's
  token was fine, regauth's credentials were not.
"""

from __future__ import annotations

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

KEEP_FOR_DISPLAY = 64 * 1024  # bytes of a streamed response body kept for mitmweb


class ResponseRewriter:
    def __init__(self, states: FlowStates) -> None:
        self.states = states

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
    def response(self, flow: http.HTTPFlow) -> None:
        state = self.states.get(flow)
        if state is None or flow.response is None:
            return
        kept = state.kept_response
        if kept is not None and flow.response.stream and state.counted.get("response") == len(kept):
            # The whole body was small: keep it on the flow so mitmweb can show it.
            flow.response.data.content = bytes(kept)
        if state.upstream_refused_credentials:
            active = state.active
            route = state.route
            if active is not None and active.upstream_auth is not None and route is not None:
                active.upstream_auth.forget(route.required)
            answer = RegistryError(
                502, Code.UNAVAILABLE, "the upstream registry refused regauth's credentials"
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
