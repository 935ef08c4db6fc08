"""The exchange record (`ops.exchange_record`) and the mitmweb comment of a finished flow
(README: "The exchange log and mitmweb")."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from mitmproxy import http

from regauth.front import Forward
from regauth.front import Respond
from regauth.mitm.client_certs import CLIENT_CERTIFICATE
from regauth.mitm.client_certs import CLIENT_CERTIFICATE_REFUSED
from regauth.mitm.flow_state import FlowState
from regauth.mitm.patches.proxy_header import VIA
from regauth.mtls.identity import ClientCertificate
from regauth.ops.exchange_record import ABSENT
from regauth.ops.exchange_record import AuthRecord
from regauth.ops.exchange_record import BytesRecord
from regauth.ops.exchange_record import ChallengeRecord
from regauth.ops.exchange_record import CheckedBy
from regauth.ops.exchange_record import ClientCertificateRecord
from regauth.ops.exchange_record import DecisionRecord
from regauth.ops.exchange_record import ExchangeRecord
from regauth.ops.exchange_record import RouteRecord
from regauth.ops.exchange_record import ScopeDecisionRecord
from regauth.ops.exchange_record import TokenRequestRecord
from regauth.ops.exchange_record import TokenResponseRecord
from regauth.ops.exchange_record import VerifiedTokenRecord
from regauth.ops.safe_text import quote
from regauth.protocol.challenge import parse_challenges
from regauth.token_trace import TokenTrace

# Never written: credentials, and distribution's `_state` upload parameter (base64 JSON that
# names the repository, so a capability id would pass the redactor inside it; the upload's
# UUID in the path already identifies it).
_SECRET_QUERY_KEYS = (
    "password",
    "refresh_token",
    "token",
    "access_token",
    "client_secret",
    "_state",
)


def _logged_path(flow: http.HTTPFlow) -> str:
    """The request target with its query decoded (readable, and redactable) minus secrets."""
    request = flow.request
    base = request.path.partition("?")[0]
    if "?" not in request.path:
        return base
    kept = [
        f"{k}={v}"
        for k, v in request.query.items(multi=True)
        if k.lower() not in _SECRET_QUERY_KEYS
    ]
    return base + ("?" + "&".join(kept) if kept else "")


def _body_size(message: http.Message | None, counted: int | None) -> int | None:
    if counted is not None:
        return counted
    if message is None or message.raw_content is None:
        return None
    return len(message.raw_content)


def _client_certificate(flow: http.HTTPFlow) -> ClientCertificateRecord | None:
    certificate = flow.metadata.get(CLIENT_CERTIFICATE)
    if isinstance(certificate, ClientCertificate):
        return ClientCertificateRecord(subject=certificate.subject.uri, serial=certificate.serial)
    refused = flow.metadata.get(CLIENT_CERTIFICATE_REFUSED)
    if isinstance(refused, str) and refused:
        return ClientCertificateRecord(refused=refused)
    return None


def build_record(
    flow: http.HTTPFlow, state: FlowState, sent_challenges: list[str]
) -> ExchangeRecord:
    """The exchange record of a finished flow (`ops.exchange_record`): what the client sent and
    got, and what regauth decided, from the flow and the facts its addons gathered.
    `sent_challenges`: the `WWW-Authenticate` values the client got (one that does not parse
    is recorded as unparsed)."""
    request = flow.request
    response = flow.response
    client = flow.client_conn.peername
    # Written to the millisecond: keep no more, so the record reads back equal.
    started = dt.datetime.fromtimestamp(state.started, dt.UTC)
    started = started.replace(microsecond=started.microsecond // 1000 * 1000)
    via = flow.metadata.get(VIA)
    route = state.route
    registry = response if state.answered_by == "upstream" else None  # the registry's answer
    upstream_ms = None
    if registry is not None and registry.timestamp_start is not None:
        sent_at = request.timestamp_end or request.timestamp_start
        upstream_ms = round(max(0.0, registry.timestamp_start - sent_at) * 1000, 2)
    trace = state.token_trace
    return ExchangeRecord(
        time=started,
        flow=flow.id,
        conversation=state.conversation,
        client=f"{client[0]}:{client[1]}" if client else None,
        # As the client spelled it (mitmproxy upper-cases request.method).
        method=request.data.method.decode("utf-8", "surrogateescape"),
        path=_logged_path(flow),
        http_version=request.http_version,
        kind=state.kind,
        status=response.status_code if response is not None else None,
        answered_by=state.answered_by or None,
        # The load balancer whose PROXY protocol header named `client`.
        via=via if isinstance(via, str) else None,
        client_certificate=_client_certificate(flow),
        route=RouteRecord(
            kind=route.kind, repository=route.repository, required=tuple(route.required_strings)
        )
        if route is not None
        else None,
        auth=_auth(state),
        decision=_decision(state),
        upstream_credentials="injected" if state.injected else None,
        challenge=tuple(_sent_challenges(sent_challenges)),
        upstream_challenge=tuple(ChallengeRecord.from_json(c) for c in state.upstream_challenge),
        upstream_refused_token=state.upstream_refused_token or None,
        token_request=_token_request(trace) if trace is not None else None,
        token_response=_token_response(trace) if trace is not None else None,
        bytes=BytesRecord(
            request=_body_size(request, state.counted.get("request")),
            response=_body_size(response, state.counted.get("response")),
        ),
        # The registry's clock, to tell clock skew from other reasons it refuses a token.
        upstream_date=registry.headers["date"][:64]
        if registry is not None and "date" in registry.headers
        else None,
        upstream_ms=upstream_ms,
        body_discarded=state.via_sink,
        error=flow.error.msg if flow.error is not None else None,
    )


def _auth(state: FlowState) -> AuthRecord | None:
    """The Authorization header as `auth_header.describe` logged it; with `checked_by` on
    every request but a token request."""
    if state.auth is None:
        return None
    auth = AuthRecord.from_json(state.auth)
    return auth if state.kind == "token" else replace(auth, checked_by=checked_by(state))


def _decision(state: FlowState) -> DecisionRecord | None:
    """The gate's decision (the verified token with it), or the reason regauth answered a
    request no gate decided; a gate decision answered locally after all (a framing refusal,
    an upstream refusal regauth turned into its own) is written as not forwarded."""
    decision = state.decision
    gate = decision.gate if isinstance(decision, (Forward, Respond)) else None
    if gate is None:
        return DecisionRecord(reason=state.reason) if state.reason else None
    answered_here = bool(state.reason_override) or isinstance(decision, Respond)
    token = gate.token
    return DecisionRecord(
        forward=False if answered_here else gate.forward,
        reason=state.reason,
        verified_token=VerifiedTokenRecord(
            issuer=token.issuer, subject=token.subject, source=token.source
        )
        if token is not None
        else None,
    )


def _sent_challenges(values: list[str]) -> list[ChallengeRecord]:
    """The challenges of the `WWW-Authenticate` values the client got."""
    records: list[ChallengeRecord] = []
    for value in values:
        try:
            records += [ChallengeRecord.from_json(c.as_record()) for c in parse_challenges(value)]
        except ValueError:
            records.append(ChallengeRecord(unparsed=True))
    return records


def _token_request(trace: TokenTrace) -> TokenRequestRecord:
    """What the client asked the token endpoint for (README: `token_request`)."""
    return TokenRequestRecord(
        method=trace.method,
        grant_type=trace.grant_type,
        service=trace.service if trace.service_given else ABSENT,
        client_id=trace.client_id,
        username=trace.username,
        requested=tuple(trace.requested) if trace.requested is not None else None,
    )


def _token_response(trace: TokenTrace) -> TokenResponseRecord:
    """What the token endpoint did (README: `token_response`), each scope's decision with the
    rule that made it."""
    return TokenResponseRecord(
        credential=trace.credential,
        failed_login_counted=trace.failed_login_counted,
        rate_limited=trace.rate_limited,
        account=trace.account,
        build=trace.build,
        certificate_serial=trace.certificate_serial,
        job_token=trace.job_token,
        federated_issuer=trace.federated_issuer,
        federated_subject=trace.federated_subject,
        federated_claims=trace.federated_claims,
        id_token_refused=trace.id_token_refused,
        claim_mismatches=tuple(trace.claim_mismatches) if trace.claim_mismatches else None,
        decisions=tuple(
            ScopeDecisionRecord(
                scope=str(d.requested),
                granted=d.granted,
                outcome=d.outcome,
                rule=d.rule.index if d.rule is not None else None,
                line=d.rule.line if d.rule is not None else None,
                comment=(d.rule.comment or None) if d.rule is not None else None,
            )
            for d in trace.decisions
        )
        if trace.decided
        else None,
        granted=tuple(trace.granted) if trace.granted is not None else None,
        refresh_token_issued=trace.refresh_token_issued,
        expires_in=trace.expires_in,
        issued_at=trace.issued_at,
        jti=trace.jti,
        refused=trace.refused,
    )


def checked_by(state: FlowState) -> CheckedBy | None:
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
    if (
        state.answered_by == "upstream"
        and active is not None
        and active.runtime.upstream_entry.mode == "delegate"
    ):
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
        c.get("error") == "insufficient_scope" for c in state.upstream_challenge
    ):
        return None
    return state.presented_jti()


def comment_and_marker(
    flow: http.HTTPFlow, state: FlowState, record: ExchangeRecord
) -> tuple[str, str]:
    """One line for mitmweb's comment column, and an emoji name for the marker column.

    The comment ends with `[conv ID]`, the record's conversation: mitmweb's filter
    `~comment ID` then shows that challenge → token → retry exchange end to end. It is raw
    text (what clients sent, capability ids): the recorder hides ids and escapes it before it
    is set (`shown.shown_text`).
    """
    text, marker = _describe(flow, state, record)
    conversation = record.conversation
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


def _describe(flow: http.HTTPFlow, state: FlowState, record: ExchangeRecord) -> tuple[str, str]:
    status = record.status
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
            "; ".join(parts) if parts else "no scope requested"
        )
        return text, ":key:"
    if status == 401 and len(record.challenge) == 1:
        challenge = record.challenge[0]
        scopes = " ".join(challenge.scopes or ()) or "(no scope)"
        origin = "upstream " if state.answered_by == "upstream" else ""
        error = challenge.error
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
