"""Recording: the exchange log, conversations, and what mitmweb shows of each flow.

When a flow ends (`response` or `error`), the flow is linked to its conversation (challenge →
token request → retries; a presented token links only when it is genuine,
`records.trusted_jti`), its record is built (`records.build_record`, an
`ops.exchange_record.ExchangeRecord`) and written to the JSONL exchange log as
`record.to_json()` (capability ids redacted in the line, `ExchangeLog`), its secrets are
removed from the stored copy (`scrub`), and it gets a one-line comment and a marker for
mitmweb. The comment is what mitmweb, its exports and flow files show: capability
ids hidden and control characters escaped before it is set (`shown.shown_text`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy import ctx
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from regauth.mitm import console_log
from regauth.mitm import shown
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.fail_closed import fail_closed
from regauth.mitm.flow_state import FlowState
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.records import build_record
from regauth.mitm.records import comment_and_marker
from regauth.mitm.records import trusted_jti
from regauth.mitm.scrub import scrub_request
from regauth.mitm.scrub import scrub_token_response
from regauth.ops.conversations import Conversations
from regauth.ops.conversations import new_id
from regauth.ops.exchange_log import ExchangeLog
from regauth.protocol import rewrite


class Recorder:
    """Ends each flow's story: on `response` or `error` it takes the flow's state, writes its
    exchange record, links it to its conversation, scrubs the stored copy, and sets mitmweb's
    comment and marker."""

    def __init__(self, config: ConfigLoader, states: FlowStates) -> None:
        self.config = config
        self.states = states
        self.conversations = Conversations()
        self.exchange_log: ExchangeLog | None = None
        # What mitmweb and the console show hides the ids of the policy in force.
        shown.SHOWN.follow(lambda: config.active)

    def load(self, loader: Loader) -> None:
        loader.add_option("regauth_log", str, "logs/exchange.jsonl", "JSONL exchange log file.")
        loader.add_option(
            "regauth_verbose",
            bool,
            False,
            "Console: also forwarded requests, plain challenges and connection churn.",
        )
        # configure() hears of the option only when it is set: apply the default now.
        console_log.set_verbose(False)

    def configure(self, updated: set[str]) -> None:
        if "regauth_verbose" in updated:
            console_log.set_verbose(ctx.options.regauth_verbose)
        if "regauth_log" not in updated:
            return
        log_path = Path(ctx.options.regauth_log)
        if self.exchange_log is None or self.exchange_log.path != log_path:
            if self.exchange_log is not None:
                self.exchange_log.close()
            self.exchange_log = ExchangeLog(log_path, self._redact)

    def _redact(self, line: str) -> str:
        active = self.config.active
        return active.runtime.redact(line) if active is not None else line

    async def done(self) -> None:
        if self.exchange_log is not None:
            self.exchange_log.close()

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        state = self.states.pop(flow)
        if state is None or flow.response is None:
            return
        self._finish(flow, state)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        state = self.states.pop(flow)
        if state is None:
            return
        self._finish(flow, state)

    def _link(self, flow: http.HTTPFlow, state: FlowState, client_ip: str, sent: list[str]) -> None:
        """Put the flow in its conversation (see regauth.ops.conversations)."""
        trace = state.token_trace
        if state.kind == "token" and trace is not None:
            # Only an issued token names an account regauth checked (a refused login's user
            # name is a claim): it binds the conversation (regauth.ops.conversations).
            identity = (trace.account or "anonymous") if trace.jti else None
            state.conversation = self.conversations.token_requested(
                client_ip, trace.requested or [], identity
            )
            if trace.jti:
                self.conversations.token_issued(trace.jti, state.conversation, identity)
            return
        challenge_scopes = None
        if flow.response is not None and flow.response.status_code == 401:
            for value in sent:
                if value.lower().startswith("bearer"):
                    challenge_scopes = rewrite.challenge_scopes(value)
                    break
        # A request presenting a genuine token stays in the conversation that issued it; a
        # forged one naming that token's jti does not.
        jti = trusted_jti(flow, state)
        issued_in = self.conversations.for_token(jti)
        if challenge_scopes is not None and state.kind == "registry":
            # Whose challenge it is: the account this process issued the token to, or else
            # (another replica issued it) the subject of the token the gate verified, so that
            # another account's token request from the same address never joins it.
            identity = self.conversations.identity_of_token(jti)
            token = state.token
            if identity is None and token is not None:
                name = token.subject or "anonymous"
                identity = name if token.source == "regauth" else f"{token.source}:{name}"
            state.conversation = self.conversations.challenged(
                client_ip, challenge_scopes, issued_in, identity
            )
        elif state.conversation is None:
            state.conversation = issued_in or new_id()

    def _finish(self, flow: http.HTTPFlow, state: FlowState) -> None:
        client_ip = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        sent = flow.response.headers.get_all("www-authenticate") if flow.response else []
        self._link(flow, state, client_ip, sent)
        record = build_record(flow, state, sent)
        scrub_request(flow.request, state.client_authorization)
        if state.kind == "token" and flow.response is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(1.0, scrub_token_response, flow.response)
        comment, marker = comment_and_marker(flow, state, record)
        flow.comment = shown.shown_text(comment)
        flow.marked = marker
        challenge = record.challenge[0] if len(record.challenge) == 1 else None
        kind = console_log.classify(
            state.kind,
            record.status,
            flow.error is not None,
            challenge.error if challenge is not None else None,
            record.status == 401 and challenge is not None,
        )
        console_log.show(kind, client_ip, flow.comment)
        if self.exchange_log is not None:
            self.exchange_log.write(record.to_json())
