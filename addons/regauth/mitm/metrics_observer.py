"""Counts what happened to each finished flow (`regauth.ops.metrics`); decides nothing.

It runs after the response rewriter and before the recorder (which drops the flow's state), so
it sees each flow's final decision and answer: token requests (with their scope decisions,
failed logins and rate limiting) and registry requests (route kind and outcome; the
upstream's response time when one answered). It also keeps the client connections and how
many have a request in flight. Disabled (every hook returns at once) while the admin listener
is off: nobody could read the numbers.

A failure here must never touch the flow: it is logged (at most once a minute) and the
sample is lost.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import connection
from mitmproxy import http

from regauth.front import Forward
from regauth.front import Respond
from regauth.mitm.flow_state import FlowState
from regauth.mitm.flow_state import FlowStates
from regauth.ops import metrics
from regauth.ops.metrics import Metrics

logger = logging.getLogger(__name__)
_REPORT_INTERVAL = 60.0


class MetricsObserver:
    def __init__(self, metrics: Metrics, states: FlowStates) -> None:
        self.metrics = metrics
        self.states = states
        self.enabled = False  # set by the admin addon
        self.connections: dict[str, int] = {}  # client connection id -> requests in flight
        self._in_flight: dict[str, str] = {}  # flow id -> client connection id
        self._last_report = float("-inf")

    def connection_states(self) -> dict[str, int]:
        active = sum(1 for n in self.connections.values() if n > 0)
        return {"active": active, "idle": len(self.connections) - active}

    def client_connected(self, client: connection.Client) -> None:
        if self.enabled:
            self.connections[client.id] = 0

    def client_disconnected(self, client: connection.Client) -> None:
        self.connections.pop(client.id, None)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        conn = flow.client_conn.id
        if self.enabled and conn in self.connections and flow.id not in self._in_flight:
            self._in_flight[flow.id] = conn
            self.connections[conn] += 1

    def response(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def _finished(self, flow: http.HTTPFlow) -> None:
        conn = self._in_flight.pop(flow.id, None)
        if conn is not None and conn in self.connections:
            self.connections[conn] -= 1
        if not self.enabled:
            return
        state = self.states.get(flow)
        if state is None:
            return
        try:
            self._observe(flow, state)
        except Exception as e:  # metrics are never worth a refused request
            now = time.monotonic()
            if now - self._last_report >= _REPORT_INTERVAL:
                self._last_report = now
                logger.error("regauth: metrics for flow %s lost: %r", flow.id, e)

    def _observe(self, flow: http.HTTPFlow, state: FlowState) -> None:
        response = flow.response
        if state.kind == "token":
            if response is not None:
                trace = state.token_trace
                self.metrics.token_answered(
                    response.status_code,
                    trace.as_record() if trace is not None else {},
                    state.client_authorization is not None,
                )
            return
        if state.kind == "jwks":
            return
        decision = state.decision
        gate = decision.gate if isinstance(decision, (Forward, Respond)) else None
        route = gate.route.kind if gate is not None and gate.route is not None else None
        self.metrics.gate_answered(route, metrics.gate_outcome(gate, bool(state.reason_override)))
        if (
            state.answered_by == "upstream"
            and response is not None
            and response.timestamp_start is not None
            and not state.reason_override
        ):
            request = flow.request
            sent = request.timestamp_end or request.timestamp_start
            self.metrics.upstream_answered(route, response.timestamp_start - sent)
