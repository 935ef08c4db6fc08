"""Plain HTTP over TLS with exact control of the bytes sent (for protocol-level tests)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def tls_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def request(
    port: int,
    ca: Path,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str = "localhost",
    timeout: float = 30,
) -> Reply:
    conn = http.client.HTTPSConnection(host, port, context=tls_context(ca), timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get_token(
    port: int,
    ca: Path,
    scopes: list[str],
    service: str,
    credentials: tuple[str, str] | None = None,
    **params: str,
) -> Reply:
    query = [("service", service)] + [("scope", s) for s in scopes] + list(params.items())
    headers = {"Authorization": basic(*credentials)} if credentials else {}
    return request(port, ca, "GET", "/v2/token?" + urlencode(query), headers)


def post_token(port: int, ca: Path, form: dict[str, str]) -> Reply:
    return request(
        port,
        ca,
        "POST",
        "/v2/token",
        {"Content-Type": "application/x-www-form-urlencoded"},
        urlencode(form).encode(),
    )
