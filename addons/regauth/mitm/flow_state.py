"""Per-flow facts gathered across hooks and shared by regauth's addons.

The front door's decision is stored as it is; what the record and the mitmweb comment need
(route, verified token, reason) is derived from it. Only the addons that carry out a step write
here: the request handler (decision, injected credentials, streaming counters), the response
rewriter (upstream challenges, refused credentials), the upstream key watch (a refused signing
key) and the recorder (conversation).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from mitmproxy import http

from regauth.front import Decision
from regauth.front import Forward
from regauth.front import Kind
from regauth.front import RequestView
from regauth.front import Respond
from regauth.gate import GateDecision
from regauth.protocol.routes import Route
from regauth.runtime import Active
from regauth.token_trace import TokenTrace
from regauth.tokens.verify import VerifiedToken

AnsweredBy = Literal["regauth", "upstream", ""]


def local_response(
    request: http.Request, status: int, body: bytes, headers: dict[str, str]
) -> http.Response:
    """An answer regauth makes itself. To a HEAD: no body (mitmproxy would send one and
    desynchronize HTTP/1) but the Content-Length the GET would send (RFC 9110 §8.6, §9.3.2;
    distribution does the same). Only the exact method `HEAD`: methods are case-sensitive
    (RFC 9110 §9.1), and Go's client reads a body after `hEaD` (regauth answers it 405)."""
    if request.data.method != b"HEAD":
        return http.Response.make(status, body, headers)
    response = http.Response.make(status, b"", headers)
    response.headers["Content-Length"] = str(len(body))
    return response


@dataclass
class FlowState:
    started: float
    active: Active | None = None  # the snapshot this request is decided with
    view: RequestView | None = None
    decision: Decision | None = None
    kind: Kind = "registry"
    answered_by: AnsweredBy = ""
    reason_override: str = ""
    auth: dict[str, object] | None = None
    client_authorization: str | None = field(default=None, repr=False)
    token_trace: TokenTrace | None = None
    upstream_challenge: list[dict[str, object]] = field(default_factory=list)
    conversation: str | None = None
    injected: bool = False
    upstream_refused_credentials: bool = False
    upstream_refused_token: str | None = None  # kid of regauth's key the upstream refused
    via_sink: bool = False
    counted: dict[str, int] = field(default_factory=dict)
    kept_response: bytearray | None = field(default=None, repr=False)

    @property
    def _gate(self) -> GateDecision | None:
        decision = self.decision
        if isinstance(decision, (Forward, Respond)):
            return decision.gate
        return None

    @property
    def route(self) -> Route | None:
        gate = self._gate
        return gate.route if gate is not None else None

    @property
    def token(self) -> VerifiedToken | None:
        gate = self._gate
        return gate.token if gate is not None else None

    @property
    def reason(self) -> str:
        if self.reason_override:
            return self.reason_override
        decision = self.decision
        if isinstance(decision, Respond):
            return decision.reason
        if isinstance(decision, Forward):
            return decision.gate.reason
        return ""

    def counter(self, direction: str) -> Callable[[bytes], bytes]:
        """A streaming callable that passes chunks through and counts their bytes."""
        self.counted[direction] = 0

        def count(chunk: bytes) -> bytes:
            self.counted[direction] += len(chunk)
            return chunk

        return count

    def presented_jti(self) -> str | None:
        """The jti of the Bearer token the client sent (decoded for the log, not trusted)."""
        if self.token is not None:
            return self.token.jti
        jwt = (self.auth or {}).get("jwt")
        if isinstance(jwt, dict):
            claims = jwt.get("claims")
            if isinstance(claims, dict) and isinstance(claims.get("jti"), str):
                return claims["jti"]
        return None


class FlowStates:
    """FlowState per live flow, keyed by the flow object: gone with the flow, never evicted
    while it is in flight. One instance is shared by regauth's addons (see make_addons)."""

    def __init__(self) -> None:
        self._states: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = (
            weakref.WeakKeyDictionary()
        )

    def start(self, flow: http.HTTPFlow, started: float) -> FlowState:
        state = FlowState(started=started)
        self._states[flow] = state
        return state

    def get(self, flow: http.HTTPFlow) -> FlowState | None:
        return self._states.get(flow)

    def pop(self, flow: http.HTTPFlow) -> FlowState | None:
        return self._states.pop(flow, None)

    def __len__(self) -> int:
        return len(self._states)
