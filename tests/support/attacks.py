"""Helpers for the security suite: raw HTTP over TLS, forged JWTs, and an upstream watcher.

Everything here talks to real processes: `send_raw` writes exact bytes to regauth's TLS port
(no client-side normalization of the request target), the JWT helpers sign with the genuine
token-signing key or with attacker keys, and `UpstreamWatch` reads what the real registry logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regauth.ops.registry_process import RegistryProcess
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import public_jwk

ACCESS_TYP = "registry-access+jwt"


# -- raw HTTP ---------------------------------------------------------------------------------


@dataclass
class RawReply:
    """What came back on the socket; status None means the connection closed without a reply."""

    status: int | None
    head: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    error: str | None = None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> dict:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        return [e.get("code") for e in self.json().get("errors", [])]


def build_request(
    method: str,
    target: str | bytes,
    port: int,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    raw_headers: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request, byte for byte: the target is sent exactly as given."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [
        method.encode() + b" " + target + b" HTTP/1.1",
        f"Host: localhost:{port}".encode(),
        b"Connection: close",
    ]
    for name, value in headers or []:
        lines.append(f"{name}: {value}".encode("latin-1"))
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}".encode())
    head = b"\r\n".join(lines) + b"\r\n" + raw_headers + b"\r\n"
    return head + (body or b"")


def _parse(data: bytes) -> RawReply:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return RawReply(None, head=data, error="no HTTP response")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    reply = RawReply(status, head, headers)
    length = reply.header("content-length")
    reply.body = rest[: int(length)] if length is not None and length.isdigit() else rest
    return reply


def _exchange(
    port: int, ca: Path, data: bytes | list[bytes], timeout: float, pause: float = 0.0
) -> tuple[bytes, str | None]:
    """Send bytes over TLS to localhost:port (a list is sent in parts, `pause` seconds
    apart), read until the server closes or `timeout`; the error that ended reading, if any."""
    context = ssl.create_default_context(cafile=str(ca))
    chunks: list[bytes] = []
    error = None
    parts = data if isinstance(data, list) else [data]
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            for i, part in enumerate(parts):
                if i and pause:
                    time.sleep(pause)
                try:
                    tls.sendall(part)
                except OSError:
                    break  # the server may answer and close before taking everything
            while True:
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLError, ConnectionResetError, TimeoutError) as e:
                    error = f"{type(e).__name__}: {e}"
                    break
                if not chunk:
                    break
                chunks.append(chunk)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        error = f"{type(e).__name__}: {e}"
    return b"".join(chunks), error


def send_raw(port: int, ca: Path, data: bytes, timeout: float = 15.0) -> RawReply:
    """Send bytes over TLS to localhost:port, read until the server closes, parse the reply."""
    received, error = _exchange(port, ca, data, timeout)
    if not received and error is not None:
        return RawReply(None, error=error)
    return _parse(received)


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    """A chunked body and what follows it, or None if it is incomplete."""
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        size = int(line.split(b";")[0], 16)
        if size == 0:
            _, sep, rest = data.partition(b"\r\n")  # no trailers in these replies
            return (body, rest) if sep else None
        body, data = body + data[:size], data[size + 2 :]


def parse_replies(data: bytes, methods: list[str]) -> list[RawReply]:
    """Every HTTP/1.1 response in `data`, in order (`methods`: the requests they answer, so
    responses to HEAD are read without a body; interim 1xx responses are skipped). Trailing
    bytes that are not a complete response become a reply with status None."""
    replies: list[RawReply] = []
    pending = list(methods)
    while data and pending:
        reply = _parse(data)
        if reply.status is None:
            replies.append(reply)
            return replies
        rest = data.partition(b"\r\n\r\n")[2]
        if 100 <= reply.status < 200:
            data = rest
            continue
        method = pending.pop(0)
        length = reply.header("content-length")
        if method == "HEAD" or reply.status in (204, 304):
            reply.body, data = b"", rest
        elif length is not None and length.isdigit():
            reply.body, data = rest[: int(length)], rest[int(length) :]
        elif (reply.header("transfer-encoding") or "").lower() == "chunked":
            split = _dechunk(rest)
            if split is None:
                reply.error = "incomplete chunked body"
                replies.append(reply)
                return replies
            reply.body, data = split
        else:
            reply.body, data = rest, b""
        replies.append(reply)
    if data:
        replies.append(RawReply(None, head=data, error="bytes after the last response"))
    return replies


@dataclass
class Conversation:
    """Everything one raw connection got back: the parsed replies, in order, and how it
    ended (`error`: a reset or a read timeout; None when the server closed cleanly)."""

    replies: list[RawReply]
    error: str | None

    @property
    def statuses(self) -> list[int | None]:
        return [r.status for r in self.replies]


def converse(
    port: int,
    ca: Path,
    data: bytes | list[bytes],
    methods: list[str],
    timeout: float = 15.0,
    pause: float = 0.0,
) -> Conversation:
    """Send raw bytes (pipelined requests, or parts `pause` seconds apart) on one TLS
    connection, read until the server closes it, and parse every response."""
    received, error = _exchange(port, ca, data, timeout, pause)
    return Conversation(parse_replies(received, methods), error)


def request(
    port: int,
    ca: Path,
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    raw_headers: bytes = b"",
) -> RawReply:
    return send_raw(port, ca, build_request(method, target, port, headers, body, raw_headers))


# -- JWTs --------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@dataclass(frozen=True)
class KeyPair:
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def kid(self) -> str:
        return libtrust_kid(self.private_key.public_key())

    @property
    def x5c(self) -> list[str]:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return [base64.b64encode(der).decode()]

    @property
    def jwk(self) -> dict[str, str]:
        return public_jwk(self.private_key.public_key())

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def genuine_key(certs_dir: Path) -> KeyPair:
    """regauth's own token-signing key (what an attacker must not be able to imitate)."""
    key = serialization.load_pem_private_key(
        (certs_dir / "private" / "token-signing.key").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate((certs_dir / "token-signing.crt").read_bytes())
    return KeyPair(key, cert)


def attacker_key(common_name: str = "regauth token signing token-signing") -> KeyPair:
    """A fresh P-256 key with a self-signed certificate named like regauth's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regauth"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def access_claims(
    issuer: str,
    audience: str,
    access: list[dict[str, object]],
    subject: str = "attacker",
    **overrides: object,
) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "access": access,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims: dict[str, object], key: KeyPair, **header: object) -> str:
    """ES256 with `key`; header defaults to what regauth's genuine tokens carry."""
    headers: dict[str, object] = {"typ": ACCESS_TYP, "kid": key.kid, "x5c": key.x5c}
    headers.update(header)
    headers = {k: v for k, v in headers.items() if v is not None}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)


def unsigned(claims: dict[str, object], header: dict[str, object], signature: str = "") -> str:
    return f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"


def hmac_signed(claims: dict[str, object], header: dict[str, object], secret: bytes) -> str:
    """HS256 by hand (PyJWT refuses PEM keys as HMAC secrets, which is the point of the attack)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def replace_claims(token: str, claims: dict[str, object]) -> str:
    """Keep the header and signature of `token`, swap in other claims."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url_json(claims)}.{signature}"


# -- what the upstream saw --------------------------------------------------------------------


class UpstreamWatch:
    """Counts the request lines a real registry logged, with a direct sentinel request as a
    barrier: once the sentinel is in the log, every request regauth forwarded before it is too.
    """

    def __init__(
        self, registry: RegistryProcess, direct: Callable[[str, str], object] | None = None
    ) -> None:
        self.registry = registry
        # How sentinels reach the registry: `RegistryWatch.direct` keeps them out of the
        # registry-saw-only-decided invariant.
        self.direct = direct

    def lines(self) -> list[str]:
        return self.registry.requests_seen()

    def mark(self) -> int:
        return len(self.lines())

    def barrier(self, timeout: float = 10.0) -> str:
        tag = "sentinel" + secrets.token_hex(8)
        if self.direct is not None:
            self.direct("GET", f"/v2/{tag}/tags/list")
        else:
            try:
                urllib.request.urlopen(f"{self.registry.url}/v2/{tag}/tags/list", timeout=5).close()
            except urllib.error.HTTPError:
                pass  # 404 NAME_UNKNOWN: logged all the same
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(tag in line for line in self.lines()):
                return tag
            time.sleep(0.02)
        raise AssertionError(f"sentinel {tag} never appeared in {self.registry.log_path}")

    def since(self, mark: int) -> list[str]:
        """Request lines logged after `mark`, sentinels excluded (waits for a barrier first)."""
        self.barrier()
        time.sleep(0.1)  # a forwarded request's log line is written just after its response
        return [line for line in self.lines()[mark:] if "/v2/sentinel" not in line]
