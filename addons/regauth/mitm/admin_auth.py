"""The admin token: what authenticates writes on the admin listener (`POST /job-tokens`,
`POST /log/reopen`).

The token is a secret in `certs/private/admin-token` (create it: `regauth token admin-secret`).
Without that file every admin write answers 404, so writes are off until an operator turns
them on; with it, a request must carry `Authorization: Bearer <token>` (compared in constant
time) or gets 401 with a `WWW-Authenticate` challenge. Answers are JSON `{"error": …}`.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from tornado import web

from regauth.ops import pki

ADMIN_TOKEN = "admin-token"  # under certs/private/


def admin_token_path(certs_dir: Path) -> Path:
    return certs_dir / pki.PRIVATE_DIR / ADMIN_TOKEN


def fail(handler: web.RequestHandler, status: int, message: str) -> None:
    """Finish `handler` with `status` and a JSON `{"error": message}` body."""
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({"error": message}))


def authorize(handler: web.RequestHandler, certs_dir: Path, what: str) -> bool:
    """True when the request carries the admin token. Otherwise the request is answered (404
    `WHAT is off (no PATH)` without a token file, 401 with a wrong or missing token) and False
    is returned. `what` names the write for the 404 message, e.g. "job token minting"."""
    path = admin_token_path(certs_dir)
    try:
        secret = path.read_bytes()[:4096].strip()
    except OSError:
        fail(handler, 404, f"{what} is off (no {path})")
        return False
    given = handler.request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if (
        not secret
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(value.strip().encode(), secret)
    ):
        handler.set_header("WWW-Authenticate", 'Bearer realm="regauth admin"')
        fail(handler, 401, "the admin token is required")
        return False
    return True
