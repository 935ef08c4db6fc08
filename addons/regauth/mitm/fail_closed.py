"""Fail closed: an exception inside a regauth hook must never let a request through.

mitmproxy logs addon exceptions and carries on with the flow, which for an auth proxy means
forwarding an unchecked request. Every regauth hook is wrapped: an exception answers the flow
with a 500 registry error (or kills it once the response has started). `FailClosedGuard`, last
in the chain, kills any request that no regauth decision marked as allowed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from regauth.mitm.flow_state import local_response
from regauth.protocol.errors import JSON_HEADERS
from regauth.protocol.errors import Code
from regauth.protocol.errors import error_body

logger = logging.getLogger(__name__)

FORWARD_MARK = "regauth.forward"
LOCAL_MARK = "regauth.local"


TRACE_INTERVAL = 60.0  # seconds: at most one full traceback per interval
_last_trace = [float("-inf")]


def _contain(flow: http.HTTPFlow, hook: str, error: BaseException) -> None:
    # One line per failure (with the flow id to find its exchange record); the whole
    # traceback at most once a minute, so a hostile input cannot flood the console.
    now = time.monotonic()
    trace = now - _last_trace[0] >= TRACE_INTERVAL
    if trace:
        _last_trace[0] = now
    logger.error(
        "regauth %s hook failed for flow %s (%s %s): %s: %s; the request is refused",
        hook,
        flow.id,
        flow.request.method,
        flow.request.path[:200],
        type(error).__name__,
        str(error)[:200],
        exc_info=error if trace else None,
    )
    flow.metadata.pop(FORWARD_MARK, None)
    if hook in ("requestheaders", "request") and flow.response is None and not flow.request.stream:
        flow.response = local_response(
            flow.request,
            500,
            error_body(Code.UNAVAILABLE, "regauth internal error; request refused"),
            JSON_HEADERS,
        )
        flow.metadata[LOCAL_MARK] = True
    elif flow.killable:
        flow.kill()


def fail_closed(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a flow hook (sync or async) so that any exception refuses the flow."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(self: Any, flow: http.HTTPFlow) -> None:
            try:
                await func(self, flow)
            except Exception as e:
                _contain(flow, func.__name__, e)
                _note(self, flow, func.__name__)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(self: Any, flow: http.HTTPFlow) -> None:
        try:
            func(self, flow)
        except Exception as e:
            _contain(flow, func.__name__, e)
            _note(self, flow, func.__name__)

    return wrapper


def _note(addon: Any, flow: http.HTTPFlow, hook: str) -> None:
    """Record a fail-closed 500 as regauth's own refusal, with the hook that failed."""
    states = getattr(addon, "states", None)
    state = states.get(flow) if states is not None else None
    if state is not None and flow.response is not None and flow.metadata.get(LOCAL_MARK):
        state.answered_by = "regauth"
        state.reason_override = f"internal error in the {hook} hook"


class FailClosedGuard:
    """Last addon in the chain: nothing reaches the upstream without a regauth decision."""

    def http_connect(self, flow: http.HTTPFlow) -> None:
        flow.kill()  # regauth is a reverse proxy: no tunnels to anywhere

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        if flow.metadata.get(FORWARD_MARK) or flow.metadata.get(LOCAL_MARK):
            return
        logger.error(
            "request %s %s reached the guard without a regauth decision; killed",
            flow.request.method,
            flow.request.path[:200],
        )
        flow.kill()

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        if flow.metadata.get(FORWARD_MARK):
            return
        if flow.metadata.get(LOCAL_MARK) and flow.request.stream:
            return  # streamed into the refusal sink, which answers it
        logger.error(
            "request %s %s has no response and no forward decision; killed",
            flow.request.method,
            flow.request.path[:200],
        )
        flow.kill()
