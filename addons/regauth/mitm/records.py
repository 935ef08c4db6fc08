"""The exchange record and the mitmweb comment of a finished flow (README: "The exchange log")."""

from __future__ import annotations

import datetime as dt

from mitmproxy import http

from regauth.mitm.flow_state import FlowState
from regauth.mitm.patches.proxy_header import VIA
from regauth.ops.safe_text import quote
from regauth.protocol.challenge import parse_challenges

# Never written: credentials, and distribution's `_state` upload parameter (base64 JSON that
# names the repository, so a capability id would pass the redactor inside it; the upload's
# UUID in the path already identifies it).
_SECRET_QUERY_KEYS = ("password", "refresh_token", "token", "access_token", "client_secret",
                      "_state")


def _logged_path(flow: http.HTTPFlow) -> str:
    """The request target with its query decoded (readable, and redactable) minus secrets."""
    request = flow.request
    base = request.path.partition("?")[0]
    if "?" not in request.path:
        return base
    kept = [f"{k}={v}" for k, v in request.query.items(multi=True)
            if k.lower() not in _SECRET_QUERY_KEYS]
    return base + ("?" + "&".join(kept) if kept else "")


def _body_size(message: http.Message | None, counted: int | None) -> int | None:
    if counted is not None:
        return counted
    if message is None or message.raw_content is None:
        return None
    return len(message.raw_content)


def build_record(flow: http.HTTPFlow, state: FlowState, sent_challenges: list[str]) -> dict:
    request = flow.request
    response = flow.response
    client = flow.client_conn.peername
    record: dict[str, object] = {
        "time": dt.datetime.fromtimestamp(state.started, dt.UTC).isoformat(timespec="milliseconds"),
        "flow": flow.id,
        "conversation": state.conversation,
        "client": f"{client[0]}:{client[1]}" if client else None,
        # As the client spelled it (mitmproxy upper-cases request.method).
        "method": request.data.method.decode("utf-8", "surrogateescape"),
        "path": _logged_path(flow),
        "http_version": request.http_version,
        "kind": state.kind,
        "status": response.status_code if response is not None else None,
        "answered_by": state.answered_by or None,
    }
    via = flow.metadata.get(VIA)
    if isinstance(via, str):
        # The load balancer whose PROXY protocol header named `client`.
        record["via"] = via
    if state.route is not None:
        record["repository"] = state.route.repository
        record["route"] = state.route.kind
        record["required"] = state.route.required_strings
    if state.auth is not None:
        record["auth"] = state.auth if state.kind == "token" else \
            {**state.auth, "checked_by": checked_by(state)}
    gate = state.gate_record
    if gate is not None:
        record["decision"] = gate
    elif state.reason:
        record["decision"] = {"reason": state.reason}
    if state.injected:
        record["upstream_credentials"] = "injected"
    challenges = []
    for value in sent_challenges:
        try:
            challenges += [c.as_record() for c in parse_challenges(value)]
        except ValueError:
            challenges.append({"unparsed": True})
    if challenges:
        record["challenge"] = challenges[0] if len(challenges) == 1 else challenges
    if state.upstream_challenge:
        record["upstream_challenge"] = state.upstream_challenge
    if state.upstream_refused_token:
        record["upstream_refused_token"] = state.upstream_refused_token
    if state.token_trace is not None:
        record["token_request"] = state.token_trace.request_record()
        record["token_response"] = state.token_trace.response_record()
    record["bytes"] = {
        "request": _body_size(request, state.counted.get("request")),
        "response": _body_size(response, state.counted.get("response")),
    }
    if state.answered_by == "upstream" and response is not None and "date" in response.headers:
        # The registry's clock, to tell clock skew from other reasons it refuses a token.
        record["upstream_date"] = response.headers["date"][:64]
    if state.answered_by == "upstream" and response is not None and \
            response.timestamp_start is not None:
        sent_at = request.timestamp_end or request.timestamp_start
        record["upstream_ms"] = round(max(0.0, response.timestamp_start - sent_at) * 1000, 2)
    if state.via_sink:
        record["body_discarded"] = True
    if flow.error is not None:
        record["error"] = flow.error.msg
    return record


def checked_by(state: FlowState) -> str | None:
    """Who checked the credential a request presented (`auth.checked_by` in the record):
    `regauth` when its gate verified the token (enforce mode, also when it then found the
    scope insufficient), `registry` when regauth forwarded it unchecked in delegate mode (the
    registry decides), None when nobody did (refused as invalid, not a token, or never
    forwarded). `regauth trace` attributes a request to an account only when it is `regauth`;
    anything else a token says is a claim. Token requests have none: their record says who
    logged in (`token_response.account`, set only when the login succeeded)."""
    if state.token is not None:
        return "regauth"
    active = state.active
    if state.answered_by == "upstream" and active is not None and \
            active.runtime.upstream.mode == "delegate":
        return "registry"
    return None


def trusted_jti(flow: http.HTTPFlow, state: FlowState) -> str | None:
    """The `jti` of the token a request presented, when the token is genuine: verified by
    regauth, or (delegate mode) accepted by the registry (any answer but 401, or a 401 for
    insufficient scope, which it gives only to a valid token). Only such a jti puts a request
    in the conversation that issued the token: anyone can write a token that names another
    client's jti, and its requests must not join that client's story."""
    if state.token is not None:
        return state.token.jti
    if checked_by(state) != "registry" or flow.response is None:
        return None
    if flow.response.status_code == 401 and not any(
            c.get("error") == "insufficient_scope" for c in state.upstream_challenge):
        return None
    return state.presented_jti()


def comment_and_marker(flow: http.HTTPFlow, state: FlowState,
                       record: dict[str, object]) -> tuple[str, str]:
    """One line for mitmweb's comment column, and an emoji name for the marker column.

    The comment ends with `[conv ID]`, the record's conversation: mitmweb's filter
    `~comment ID` then shows that challenge → token → retry exchange end to end. It is raw
    text (what clients sent, capability ids): the recorder hides ids and escapes it before it
    is set (`scrub.shown_text`).
    """
    text, marker = _describe(flow, state, record)
    conversation = record.get("conversation")
    return (f"{text} [conv {conversation}]" if conversation else text), marker


def _who(state: FlowState) -> str:
    """Whose request it was: the verified token's subject; in delegate mode (regauth does not
    verify) the subject the token claims, in quotes and said to be claimed, as `regauth trace`
    shows it (`sub='ci' (claimed, checked by the registry)`)."""
    if state.token is not None:
        return state.token.subject or "anonymous"
    jwt = (state.auth or {}).get("jwt")
    if isinstance(jwt, dict) and isinstance(jwt.get("claims"), dict):
        subject = jwt["claims"].get("sub")
        name = subject if isinstance(subject, str) else ""
        return f"sub={quote(name, 64)} (claimed, checked by the registry)"
    return "no token"


def _describe(flow: http.HTTPFlow, state: FlowState,
              record: dict[str, object]) -> tuple[str, str]:
    status = record.get("status")
    if flow.error is not None:
        return f"error: {flow.error.msg}", ":x:"
    trace = state.token_trace
    if state.kind == "token" and trace is not None:
        if trace.refused is not None:
            return f"{status} token refused: {trace.refused}", ":no_entry:"
        parts = []
        for d in trace.decisions:
            if d.rule is None:
                parts.append(f"{d.requested} → default deny")
                continue
            granted = ",".join(d.granted) or "nothing"
            parts.append(f"{d.requested} → {d.outcome} [{granted}] ({d.rule.describe_short()})")
        text = f"token for {trace.account or 'anonymous'}: " + (
            "; ".join(parts) if parts else "no scope requested")
        return text, ":key:"
    challenge = record.get("challenge")
    if status == 401 and isinstance(challenge, dict):
        scopes = " ".join(challenge.get("scopes", [])) or "(no scope)"
        origin = "upstream " if state.answered_by == "upstream" else ""
        error = challenge.get("error")
        text = f"{origin}401 challenge → scope {scopes}"
        if error:
            text += f" [{error}]"
        if state.reason and state.answered_by != "upstream":
            text += f" — {state.reason}"
        if state.upstream_refused_token:
            text += f" — the registry does not trust signing key {state.upstream_refused_token}"
        return text, ":x:" if error == "insufficient_scope" else ":lock:"
    if state.answered_by == "regauth" and isinstance(status, int) and status >= 400:
        return f"{status} refused by regauth: {state.reason}", ":no_entry:"
    if state.kind == "jwks":
        return f"{status} token-signing keys (JWKS)", ":white_check_mark:"
    text = f"{status} {_who(state)}"
    if state.route is not None and state.route.required:
        text += " → " + " ".join(state.route.required_strings)
    if state.injected:
        text += " (upstream credentials injected)"
    marker = ":white_check_mark:" if isinstance(status, int) and status < 400 else ":x:"
    return text, marker
