"""Registry-format error bodies: {"errors": [{"code", "message", "detail"}]} (OCI spec.md)."""

from __future__ import annotations

import json

from regauth.scope import ResourceScope

JSON_HEADERS = {
    "Content-Type": "application/json",
    "Docker-Distribution-Api-Version": "registry/2.0",
}

def error_body(code: str, message: str, detail: object = None) -> bytes:
    entry: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def access_detail(scopes: tuple[ResourceScope, ...] | list[ResourceScope]) -> list[dict[str, str]]:
    """The `detail` distribution attaches to UNAUTHORIZED: one record per required action."""
    return [
        {"Type": s.type, "Name": s.name, "Action": action}
        for s in scopes
        for action in s.actions
    ]
