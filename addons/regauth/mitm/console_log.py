"""What the console shows of each flow and connection (`regauth serve [-v]`, issue 26 item 8).

By default the console has the decisions, refusals and errors: one line per token request
(who got which actions, by which rule), per request regauth refused or the registry refused
with an error, and per flow that failed; plus everything regauth and mitmproxy log at warning
and above. With `-v` (`regauth_verbose`) it also has the routine: each forwarded request, each
plain challenge, and mitmproxy's connection churn (`client connect`, `client disconnect`,
`server connect …`, `server disconnect …`), which mitmproxy logs at info for every
connection. The exchange log always has every exchange, whatever the console shows.

The line is mitmweb's comment for the flow (`records.comment_and_marker`, capability ids
hidden and control characters escaped before it gets here), after the client's address.
"""

from __future__ import annotations

import logging
from enum import Enum

logger = logging.getLogger("regauth.console")

# mitmproxy.proxy.server's per-connection lines (ProxyConnectionHandler.log), all at info.
_CHURN_EXACT = frozenset({"client connect", "client disconnect"})
_CHURN_PREFIXES = ("server connect ", "server disconnect ")
CHURN_LOGGER = "mitmproxy.proxy.server"


class Kind(Enum):
    DECISION = "decision"  # a token request decided (granted, partial, denied, refused login)
    REFUSAL = "refusal"  # a request answered with an error (by regauth or the registry)
    ERROR = "error"  # the flow failed (connection reset, timeout, ...)
    ROUTINE = "routine"  # a forwarded request, a plain challenge, a JWKS fetch: `-v` only


def classify(
    kind: str, status: int | None, failed: bool, challenge_error: str | None, challenged: bool
) -> Kind:
    """What a finished flow is for the console.

    `kind` is the flow's FlowState.kind ("token", "registry", "jwks", ...); `status` the
    response status (None without a response); `failed` whether the flow ended in an error;
    `challenged` whether the response is a 401 with one Bearer challenge, and
    `challenge_error` that challenge's `error` parameter (`insufficient_scope`,
    `invalid_token`, or None for the first challenge of a conversation)."""
    if failed:
        return Kind.ERROR
    if kind == "token":
        return Kind.DECISION
    if status is None or status < 400:
        return Kind.ROUTINE
    if challenged and challenge_error is None:
        return Kind.ROUTINE  # the first step of every conversation, not a refusal
    return Kind.REFUSAL


class ConnectionChurn(logging.Filter):
    """Drops mitmproxy's per-connection info lines (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if record.levelno > logging.INFO or not isinstance(message, str):
            return True
        return not (message in _CHURN_EXACT or message.startswith(_CHURN_PREFIXES))


_CHURN = ConnectionChurn()
_verbose = False


def set_verbose(verbose: bool) -> None:
    """`-v`: show the routine lines and the connection churn; otherwise hide both."""
    global _verbose
    _verbose = verbose
    target = logging.getLogger(CHURN_LOGGER)
    if verbose:
        target.removeFilter(_CHURN)
    elif _CHURN not in target.filters:
        target.addFilter(_CHURN)


def is_verbose() -> bool:
    return _verbose


def show(kind: Kind, client: str, line: str) -> None:
    """Log one finished flow's line, if `kind` is shown at the current verbosity. `line` must
    already be safe for a terminal (mitmweb's comment is)."""
    if kind is Kind.ROUTINE and not _verbose:
        return
    level = logging.WARNING if kind is Kind.ERROR else logging.INFO
    logger.log(level, "regauth: %s %s", client or "-", line)
