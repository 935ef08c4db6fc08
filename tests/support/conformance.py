"""Differential conformance: send one request to two registries, compare what a client sees.

The two sides are regauth in enforce mode (a registry without auth behind it) and distribution
in token mode (trusting regauth's signing keys), reached directly. Both hold the same content.
An `Observation` is what a registry client decides on: status, the registry error `code`, the
challenge's scheme, scope set and `error`, and `Docker-Distribution-API-Version`.
`on_the_wire` is one request over HTTP/1.1 or HTTP/2 with every byte that came back (the
HEAD-vs-GET rule).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from regauth.protocol.challenge import parse_challenges
from tests.support import h2raw
from tests.support.dos import tls_socket
from tests.support.httpclient import Reply

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Observation:
    status: int
    code: str | None
    scheme: str | None
    scopes: frozenset[str] | None
    error: str | None
    api_version: str | None

    def differences(self, other: Observation) -> dict[str, tuple[object, object]]:
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(other, name)
        }


def _normal_scope(scope: str) -> str:
    head, _, actions = scope.rpartition(":")
    return f"{head}:{','.join(sorted(actions.split(',')))}"


def observe(reply: Reply) -> Observation:
    code = None
    if reply.body and (reply.header("Content-Type") or "").startswith("application/json"):
        try:
            errors = json.loads(reply.body).get("errors")
            code = errors[0]["code"] if errors else None
        except (ValueError, AttributeError, LookupError, TypeError):
            code = None
    scheme = scopes = error = None
    header = reply.header("WWW-Authenticate")
    if header:
        (challenge,) = parse_challenges(header)
        scheme = challenge.scheme
        scopes = frozenset(_normal_scope(s) for s in challenge.scopes())
        error = challenge.params.get("error")
    return Observation(
        reply.status, code, scheme, scopes, error, reply.header("Docker-Distribution-Api-Version")
    )


@dataclass
class Endpoint:
    """One side: `https://localhost:PORT` with a CA (regauth), or `http://127.0.0.1:PORT`."""

    name: str
    url: str
    ca: Path | None = None

    def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        parts = urlsplit(self.url)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=str(self.ca))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, context=context, timeout=30
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            try:
                body = response.read()
            except http.client.IncompleteRead as e:
                # distribution 2.8.2 announces the blob's length on a 416 and sends a short
                # error body: what the client acts on is the status, so keep what arrived.
                body = e.partial
            return Reply(response.status, response.headers, body)
        finally:
            conn.close()

    def push_blob(self, name: str, data: bytes, token: str) -> str:
        """POST then PUT with the whole blob (distribution 2.8 has no monolithic POST)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = self.start_upload(name, token)
        separator = "&" if "?" in location else "?"
        reply = self.send(
            "PUT",
            f"{location}{separator}digest={digest}",
            {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
            data,
        )
        assert reply.status == 201, (self.name, reply.status, reply.body)
        return digest

    def push_manifest(self, name: str, reference: str, manifest: bytes, token: str) -> str:
        reply = self.send(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            {"Authorization": f"Bearer {token}", "Content-Type": MANIFEST_TYPE},
            manifest,
        )
        assert reply.status == 201, (self.name, reply.status, reply.body)
        return reply.header("Docker-Content-Digest") or ""

    def start_upload(self, name: str, token: str) -> str:
        """A new upload session; its path and query (Locations differ: relative or absolute)."""
        reply = self.send(
            "POST", f"/v2/{name}/blobs/uploads/", {"Authorization": f"Bearer {token}"}
        )
        assert reply.status == 202, (self.name, reply.status, reply.body)
        location = urlsplit(reply.header("Location") or "")
        return location.path + (f"?{location.query}" if location.query else "")


def image_manifest(config: tuple[str, int], layers: list[tuple[str, int]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config[0],
                "size": config[1],
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size}
                for d, size in layers
            ],
        }
    ).encode()


TokenFactory = Callable[[list[str]], str]


@dataclass(frozen=True)
class Wire:
    """What one request got on the wire: status (None: no complete answer), the
    `Content-Length` field (None: absent), and every byte after the head (HTTP/1.1) or in DATA
    frames (HTTP/2)."""

    status: int | None
    content_length: str | None
    body: bytes


def on_the_wire(
    protocol: str, port: int, ca: Path, method: str, target: str, headers: dict[str, str]
) -> Wire:
    """One request on a fresh TLS connection to regauth, over `protocol` ("HTTP/1.1" or
    "HTTP/2"). HTTP/1.1 asks for `Connection: close` and reads until the server closes, so a
    body sent after a HEAD's head is seen (http.client would not read it)."""
    if protocol == "HTTP/2":
        reply = h2raw.request(
            port, ca, method, target, [(k.lower(), v) for k, v in headers.items()]
        )
        status = reply.status if reply.ended else None
        return Wire(status, reply.header("content-length"), bytes(reply.body))
    sock = tls_socket(port, ca, alpn="http/1.1")
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    status = int(status_line.split()[1]) if status_line.startswith("HTTP/1.1 ") else None
    return Wire(status, parsed.get("content-length"), rest)
