"""`POST /job-tokens` on the admin listener: a CI controller mints job tokens (issue 23).

Never on the proxy port. Authenticated with the admin token (`mitm/admin_auth.py`), a secret
in `certs/private/admin-token` (create it: `regauth token admin-secret`); without that file the
route answers 404, so minting is off until an operator turns it on. The request is JSON,
bounded (16 KiB), with the same grammar as `regauth token issue`:

    {"build": "ID" | "account": "NAME", "scope": ["repository:R:ACTIONS", …], "ttl": "15m"}

The answer is `{"token", "username", "jti", "subject", "scopes", "issued_at", "exp"}`; the
token is recorded (id, subject, scopes, times; never the token) where `regauth token list`
finds it, and never logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from tornado import web

from regauth.logins.job_tokens import JobStore
from regauth.logins.job_tokens import mint
from regauth.logins.job_tokens import parse_job_request
from regauth.mitm.admin_auth import authorize
from regauth.mitm.config_loader import ConfigLoader
from regauth.tools.trace import parse_duration

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024


class JobTokensHandler(web.RequestHandler):
    def initialize(
        self,
        config: ConfigLoader,
        store: Callable[[], JobStore | None],
        certs_dir: Callable[[], Path],
    ) -> None:
        self.config = config
        self.store = store  # the authenticator's job store, as configured now
        self.certs_dir = certs_dir

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"error": message}))

    def post(self) -> None:
        if not authorize(self, self.certs_dir(), "job token minting"):
            return
        if len(self.request.body) > MAX_BODY:
            self._fail(413, f"at most {MAX_BODY} bytes")
            return
        try:
            doc = json.loads(self.request.body)
            if not isinstance(doc, dict) or set(doc) - {"build", "account", "scope", "ttl"}:
                raise ValueError("expected an object with build or account, scope, ttl")
            if ("build" in doc) == ("account" in doc):
                raise ValueError("give exactly one of build and account")
            kind = "build" if "build" in doc else "account"
            raw_scopes = doc.get("scope")
            if not isinstance(raw_scopes, list):
                raise ValueError("scope must be a list")
            lifetime = int(parse_duration(str(doc.get("ttl", "15m"))).total_seconds())
            request = parse_job_request(
                kind, str(doc[kind]), [str(s) for s in raw_scopes], lifetime
            )
        except (ValueError, TypeError) as e:
            self._fail(400, str(e)[:300])
            return
        active = self.config.active
        if active is None:
            self._fail(503, "regauth has no valid policy loaded")
            return
        subject = request.subject
        if subject.kind == "account" and subject.name not in active.runtime.policy.accounts:
            self._fail(400, f"account {subject.name!r} is not in the policy")
            return
        token, record = mint(active.runtime.issuer, request)
        store = self.store()
        try:
            if store is not None:
                store.record(record)
        except Exception as e:  # Redis down: an unlisted token could not be revoked by id
            self._fail(503, f"cannot record the job token: {type(e).__name__}")
            return
        logger.info("regauth: job token %s minted for %s over the admin listener",
                    record.jti, subject.uri)  # fmt: skip
        self.finish(json.dumps({"token": token, "username": subject.name, **record.to_json()}))
