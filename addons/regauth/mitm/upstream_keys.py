"""Names a signing key the upstream registry does not trust (`regauth.tokens.refused_keys` decides).

When a token-mode upstream answers 401 to a token regauth issued and that verifies (delegate
mode, or enforce mode in front of a token-mode registry), this addon logs, once per key id:
"the registry does not trust signing key <kid>: update its rootcertbundle (`regauth certs
bundle`) and restart it", marks the exchange record (`upstream_refused_token`), and keeps the key
id in `refused_kids` until the registry accepts a token of that key again. Readiness checks and
metrics read `refused_kids` (a plain set). The client always gets the registry's answer as it
was: this addon only observes, and an error in it is logged, never turned into a refusal.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from regauth.mitm.flow_state import FlowStates
from regauth.tokens import refused_keys

logger = logging.getLogger(__name__)


class UpstreamKeyWatch:
    def __init__(self, states: FlowStates) -> None:
        self.states = states
        self.refused_kids: set[str] = set()  # key ids the upstream refuses now

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.states.get(flow)
        response = flow.response
        if (
            state is None
            or response is None
            or state.answered_by != "upstream"
            or state.injected
            or state.active is None
        ):
            return
        if response.status_code != 401 and not self.refused_kids:
            return  # only a refusal, or the end of one, is news
        try:
            verdict = refused_keys.judge(
                state.active.runtime,
                response.status_code,
                state.upstream_challenge,
                state.token,
                state.client_authorization,
                response.headers.get("date"),
                time.time(),
            )
        except Exception as e:  # observing must never change what the client gets
            logger.error(
                "regauth: could not check the upstream's answer for flow %s: %r", flow.id, e
            )
            return
        if verdict is None:
            return
        if verdict.refused:
            state.upstream_refused_token = verdict.kid
            if verdict.kid not in self.refused_kids:
                self.refused_kids.add(verdict.kid)
                logger.error(
                    "regauth: the registry does not trust signing key %s: update its "
                    "rootcertbundle (`regauth certs bundle`) and restart it",
                    verdict.kid,
                )
        elif verdict.kid in self.refused_kids:
            self.refused_kids.discard(verdict.kid)
            logger.info("regauth: the registry accepts signing key %s again", verdict.kid)
