"""Registry-format errors: {"errors": [{"code", "message", "detail"}]} (OCI spec.md).

`RegistryError` is the one refusal type of the core: it carries distribution's status and error
code (registry/api/errcode/register.go), a message safe to show and log, and any extra headers
(a challenge, `Retry-After`), and renders its own response with `answer()`. Route refusals
(`routes.RouteError`) and token-endpoint refusals (`token_service.TokenError`) specialize it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field

from regauth.protocol.scope import ResourceScope

JSON_HEADERS = {
    "Content-Type": "application/json",
    "Docker-Distribution-Api-Version": "registry/2.0",
}


@dataclass(frozen=True)
class Answer:
    """A response regauth sends itself: status, headers, body (bytes, possibly empty)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def error_body(code: str, message: str, detail: object = None) -> bytes:
    entry: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


class RegistryError(ValueError):
    """A refusal with its registry error code; `answer()` renders the response.

    `message` is shown to the client and logged: it never contains a credential.
    """

    def __init__(self, status: int, code: str, message: str, detail: object = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.detail)

    def answer(self) -> Answer:
        return Answer(self.status, {**JSON_HEADERS, **self.headers}, self.body())


def access_detail(scopes: tuple[ResourceScope, ...] | list[ResourceScope]) -> list[dict[str, str]]:
    """The `detail` distribution attaches to UNAUTHORIZED: one record per required action."""
    return [
        {"Type": s.type, "Name": s.name, "Action": action}
        for s in scopes
        for action in s.actions
    ]
