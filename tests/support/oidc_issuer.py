"""A local OpenID Connect issuer for the workload identity federation tests (issue 24).

`OidcIssuer` serves, over HTTPS on 127.0.0.1 with a certificate from a test CA it creates:

- `GET {issuer}/.well-known/openid-configuration`: the discovery document (OpenID Connect
  Discovery 1.0, section 3: `issuer`, `jwks_uri`, `response_types_supported`,
  `subject_types_supported`, `id_token_signing_alg_values_supported`, ...);
- `GET {issuer}/jwks`: a JWK Set (RFC 7517, section 5) of its public keys, one `kid` each.

It mints ID tokens (`mint`) signed with its private keys, in the claim shapes of GitHub Actions,
GitLab CI and Kubernetes projected service account tokens (`github_actions`, `gitlab_ci`,
`kubernetes`, with the claim names those systems document). It rotates keys (`rotate`,
`retire`) and its JWKS endpoint can turn hostile at run time (`jwks_mode`). Each request is
counted per path in `requests`, so a test can assert "at most one refetch".

Every instance is independent (its own CA unless one is shared, its own keys and ports), so a
token from issuer A signed with issuer B's key is `a.mint(claims, key=b.private_key())`.

All I/O runs on threads of this process; `stop()` ends them all (including the connections
held by the "hang" mode) and closes every port it opened.
"""

from __future__ import annotations

import collections
import datetime as dt
import http.server
import ipaddress
import json
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from typing import Literal
from typing import get_args
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm
from jwt.algorithms import RSAAlgorithm
from jwt.algorithms import get_default_algorithms
from jwt.utils import base64url_encode

from regauth.ops import pki

JwksMode = Literal["ok", "hang", "trickle", "redirect", "garbage", "huge", "error", "down"]
JWKS_MODES: frozenset[str] = frozenset(get_args(JwksMode))
SigningAlg = Literal["RS256", "ES256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# The audience the claim shapes put in `aud` unless told otherwise; the federation policy of a
# test names the same string.
DEFAULT_AUDIENCE = "https://registry.regauth.test"

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
GARBAGE = b"<html><body>502 Bad Gateway</body></html>\n\x00\xff\xfe not json {"
HUGE_BYTES = 50 * 1024 * 1024
_CHUNK = 64 * 1024


class TestCa:
    """A throw-away CA (EC P-256) that signs the loopback server certificates of the test
    issuers. `pem` is its certificate (PEM bytes) and `path` the file holding it, the file a
    client passes as its trust store (`ssl.create_default_context(cafile=...)`)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # regauth's own CA maker (ops/pki.py): EC P-256, a day backdated, keyCertSign.
        self._key, self.certificate = pki.create_ca("regauth test OIDC CA")
        self.pem: bytes = self.certificate.public_bytes(serialization.Encoding.PEM)
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.pem)

    def server_certificate(self, name: str) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1 and localhost, written as
        `<directory>/<name>.crt` and `.key` (PEM); returns both paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


@dataclass(frozen=True)
class SigningKey:
    """One key of the issuer: its `kid`, the JWS `alg` it signs with, the private key."""

    kid: str
    alg: SigningAlg
    private: PrivateKey

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWK (RFC 7517) with `kid`, `alg` and `use: sig`."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = dict(RSAAlgorithm.to_jwk(public, as_dict=True))
        else:
            jwk = dict(ECAlgorithm.to_jwk(public, as_dict=True))
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM, the bytes an HS256 key-confusion attack
        uses as its HMAC secret."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_key(alg: SigningAlg = "RS256", kid: str | None = None) -> SigningKey:
    """A fresh RSA 2048 (RS256) or P-256 (ES256) key; `kid` defaults to a random string."""
    private: PrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unsupported signing alg {alg!r}")
    return SigningKey(kid or f"{alg.lower()}-{uuid.uuid4().hex[:12]}", alg, private)


def sign(
    header: Mapping[str, Any],
    payload: Mapping[str, Any] | bytes,
    key: object,
) -> str:
    """A JWS compact serialization (RFC 7515, section 7.1) of `payload` (claims serialized as
    compact JSON, or bytes used verbatim) under exactly `header`, signed with pyjwt's algorithm
    for `header["alg"]` (`none` gives an empty signature). HMAC keys are used as given, so the
    PEM bytes of a public key work as a secret, which pyjwt's own `encode` refuses."""
    alg = str(header["alg"])
    algorithm = get_default_algorithms()[alg]
    if isinstance(payload, bytes):
        body = payload
    else:
        body = json.dumps(payload, separators=(",", ":")).encode()
    signing_input = (
        base64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + b"."
        + base64url_encode(body)
    )
    if alg == "none":
        signature = b""
    elif alg.startswith("HS"):
        secret = key.encode() if isinstance(key, str) else key
        signature = algorithm.sign(signing_input, secret)
    else:
        signature = algorithm.sign(signing_input, key)
    return (signing_input + b"." + base64url_encode(signature)).decode()


class _Server(http.server.ThreadingHTTPServer):
    """One HTTPS listener. The TLS handshake runs on the connection's own thread (a client that
    connects and says nothing must not block `accept`), and every open connection is tracked
    so that `stop` can cut it, which ends even the threads of the "hang" mode."""

    daemon_threads = False  # server_close() joins them: no thread outlives stop()
    block_on_close = True

    def __init__(
        self, port: int, issuer: OidcIssuer, context: ssl.SSLContext, redirect: bool
    ) -> None:
        self.issuer = issuer
        self.context = context
        self.redirect = redirect
        self.connections: set[ssl.SSLSocket] = set()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)
        self.port: int = self.server_address[1]
        self.thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"oidc-issuer-{self.port}",
        )
        self.thread.start()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which is slow on hosts
        # without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self.connections.add(tls)
        return tls, address

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-answer are the point of several modes

    def stop_listening(self) -> None:
        """Stop accepting and close the listening socket: the port refuses from now on."""
        self.shutdown()
        self.socket.close()

    def cut_connections(self) -> None:
        with self._lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                # The plain socket's shutdown: SSLSocket.shutdown would drop its SSL object
                # under the thread blocked in it.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a silent or stalled client may hold its connection
    server_version = "regauth-test-oidc"
    sys_version = ""

    def handle(self) -> None:
        try:
            self.request.do_handshake()
        except (OSError, ValueError):
            return
        try:
            super().handle()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        issuer = self.server.issuer
        path = urlsplit(self.path).path
        if self.server.redirect:
            issuer._count(issuer.redirected, path)
            self._json(200, issuer.jwks())
            return
        issuer._count(issuer.requests, path)
        if path == issuer.discovery_path:
            self._json(200, issuer.discovery())
        elif path == issuer.jwks_path:
            self._jwks(issuer.jwks_mode)
        else:
            self._json(404, {"error": "not_found"})

    def _jwks(self, mode: str) -> None:
        issuer = self.server.issuer
        if mode == "hang":
            issuer._stopping.wait()
            self.close_connection = True
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", issuer.redirect_url)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "garbage":
            self._raw(200, "application/json", GARBAGE)
        elif mode == "error":
            self._json(500, {"error": "internal"})
        elif mode == "huge":
            self._huge(issuer.huge_bytes, issuer.huge_content_length)
        elif mode == "trickle":
            self._trickle(json.dumps(issuer.jwks()).encode(), issuer.trickle_interval)
        else:  # "ok", or "down" reached by a connection accepted just before the switch
            self._json(200, issuer.jwks())

    def _huge(self, size: int, declare_length: bool) -> None:
        """`size` bytes that start like a JWK Set and never end it, written 64 KiB at a time
        (nothing near `size` is ever held in memory)."""
        head = b'{"keys":['
        entry = b'{"kty":"oct","kid":"k","k":"' + b"A" * 1000 + b'"},'
        chunk = entry * (_CHUNK // len(entry))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declare_length:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        stopping = self.server.issuer._stopping
        self.wfile.write(head)
        sent = len(head)
        while sent < size and not stopping.is_set():
            piece = chunk[: size - sent]
            self.wfile.write(piece)
            sent += len(piece)
        self.close_connection = True

    def _trickle(self, body: bytes, interval: float) -> None:
        """A valid JWK Set with its true Content-Length, one byte every `interval` seconds:
        no single read times out, only a deadline on the whole fetch ends it."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        stopping = self.server.issuer._stopping
        for i in range(len(body)):
            if stopping.wait(interval):
                break
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, body: object) -> None:
        self._raw(status, "application/json", json.dumps(body).encode())

    def _raw(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OidcIssuer:
    """A local OIDC issuer (see the module docstring). Use as a context manager, or call
    `start()` and `stop()`.

    `directory` receives the CA and server certificate files (a temporary directory, removed by
    `stop()`, if omitted); `ca` shares one `TestCa` between issuers; `issuer_path` puts the
    issuer below a path (`https://127.0.0.1:PORT/realms/ci`); `clock` gives the `now`
    (seconds since the epoch) of `mint` when none is passed.

    Attributes a test may change while it runs: `jwks_mode` (one of `JWKS_MODES`),
    `discovery_overrides` (merged into the discovery document), `huge_bytes` and
    `huge_content_length` (the "huge" answer's size, and whether it declares it),
    `trickle_interval` (seconds between the bytes of the "trickle" answer).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        ca: TestCa | None = None,
        issuer_path: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="regauth-oidc-"))
        self.ca = ca or TestCa(self.directory / "ca")
        self.issuer_path = issuer_path.rstrip("/")
        self.clock = clock
        cert, key = self.ca.server_certificate(f"oidc-{uuid.uuid4().hex[:8]}")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(cert), str(key))
        first = [new_key("RS256"), new_key("ES256")]
        self._keys: dict[str, SigningKey] = {k.kid: k for k in first}
        self.current_kid = first[0].kid
        self.requests: collections.Counter[str] = collections.Counter()
        self.redirected: collections.Counter[str] = collections.Counter()
        self.discovery_overrides: dict[str, Any] = {}
        self.huge_bytes = HUGE_BYTES
        self.huge_content_length = False
        self.trickle_interval = 0.2
        self._lock = threading.RLock()
        self._mode: JwksMode = "ok"
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._retired: list[_Server] = []
        self._redirect: _Server | None = None
        self.port = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> OidcIssuer:
        """Listen on a free loopback port (kept across "down" and back); returns self."""
        with self._lock:
            if self._server is not None or self.port:
                raise RuntimeError("this issuer was already started")
            self._stopping.clear()
            self._server = _Server(0, self, self._context, redirect=False)
            self.port = self._server.port
            if self._mode == "down":
                self._go_down()
            if self._mode == "redirect":
                self._ensure_redirect()
        return self

    def stop(self) -> None:
        """Close every port and end every thread: serving loops, and connections held open by
        "hang", "trickle" or "huge", which are cut. Idempotent."""
        with self._lock:
            servers = [s for s in (self._server, self._redirect) if s is not None]
            retired, self._retired = self._retired, []
            self._server = self._redirect = None
        self._stopping.set()
        for server in servers:
            server.stop_listening()
        for server in servers + retired:
            server.cut_connections()
            server.server_close()  # joins the connection threads
            server.thread.join()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients see ---------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The `iss` of the tokens and the `issuer` of the discovery document."""
        return f"https://127.0.0.1:{self.port}{self.issuer_path}"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def discovery_path(self) -> str:
        return self.issuer_path + DISCOVERY_PATH

    @property
    def discovery_url(self) -> str:
        return self.url + self.discovery_path

    @property
    def jwks_path(self) -> str:
        return self.issuer_path + JWKS_PATH

    @property
    def jwks_uri(self) -> str:
        return self.url + self.jwks_path

    @property
    def ca_pem(self) -> bytes:
        return self.ca.pem

    @property
    def ca_path(self) -> Path:
        """The CA file that verifies this issuer's TLS certificate."""
        return self.ca.path

    @property
    def redirect_url(self) -> str:
        """Where the "redirect" mode points: another port of this process that serves a valid
        JWKS of this issuer (so a client that follows would succeed) and counts its requests
        in `redirected`."""
        with self._lock:
            server = self._ensure_redirect()
            return f"https://127.0.0.1:{server.port}{JWKS_PATH}"

    def discovery(self) -> dict[str, Any]:
        """The discovery document (OpenID Connect Discovery 1.0, section 3)."""
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": self.issuer + "/authorize",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "scopes_supported": ["openid"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf"],
        }
        doc.update(self.discovery_overrides)
        return doc

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of the keys not retired, oldest first."""
        with self._lock:
            return {"keys": [k.jwk() for k in self._keys.values()]}

    # -- hostile modes --------------------------------------------------------------------------

    @property
    def jwks_mode(self) -> JwksMode:
        return self._mode

    @jwks_mode.setter
    def jwks_mode(self, mode: JwksMode) -> None:
        """ "ok": the JWK Set. "hang": accept, read the request and never answer until `stop`.
        "trickle": 200 and the JWK Set one byte every `trickle_interval` seconds.
        "redirect": 302 to `redirect_url`. "garbage": 200 with a body that is not JSON.
        "huge": 200 streaming `huge_bytes` (50 MiB) of JSON-like bytes. "error": 500.
        "down": the whole issuer stops listening (connection refused) until another mode is
        set, when it listens again on the same port."""
        if mode not in JWKS_MODES:
            raise ValueError(f"unknown jwks mode {mode!r}; one of {sorted(JWKS_MODES)}")
        with self._lock:
            previous, self._mode = self._mode, mode
            if not self.port or self._stopping.is_set():
                return
            if mode == "down" and previous != "down":
                self._go_down()
            elif previous == "down" and mode != "down":
                self._server = _Server(self.port, self, self._context, redirect=False)
            if mode == "redirect":
                self._ensure_redirect()

    def _go_down(self) -> None:
        assert self._server is not None
        self._server.stop_listening()
        # Connections already accepted finish on their own; stop() joins their threads.
        self._retired.append(self._server)
        self._server = None

    def _ensure_redirect(self) -> _Server:
        if self._redirect is None:
            self._redirect = _Server(0, self, self._context, redirect=True)
        return self._redirect

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed, on every port of this issuer."""
        with self._lock:
            servers = [s for s in (self._server, self._redirect, *self._retired) if s]
        return sum(len(s.connections) for s in servers)

    def _count(self, counter: collections.Counter[str], path: str) -> None:
        with self._lock:
            counter[path] += 1

    # -- keys -----------------------------------------------------------------------------------

    @property
    def kids(self) -> list[str]:
        """The `kid`s in the JWKS, oldest first."""
        with self._lock:
            return list(self._keys)

    def key(self, kid: str | None = None) -> SigningKey:
        """The key `kid` (the current one if None); KeyError if retired or unknown."""
        with self._lock:
            return self._keys[kid or self.current_kid]

    def private_key(self, kid: str | None = None) -> PrivateKey:
        return self.key(kid).private

    def rotate(self, alg: SigningAlg = "RS256", kid: str | None = None) -> str:
        """Add a new key to the JWKS and make it the one `mint` signs with; returns its kid."""
        key = new_key(alg, kid)
        with self._lock:
            if key.kid in self._keys:
                raise ValueError(f"kid {key.kid!r} already in use")
            self._keys[key.kid] = key
            self.current_kid = key.kid
        return key.kid

    def retire(self, kid: str) -> None:
        """Remove `kid` from the JWKS (tokens it signed stop verifying). The current key can
        only be retired once another one was rotated in. KeyError if unknown."""
        with self._lock:
            if kid == self.current_kid:
                raise ValueError("rotate() a new key in before retiring the current one")
            del self._keys[kid]

    # -- tokens ---------------------------------------------------------------------------------

    def mint(
        self,
        claims: Mapping[str, Any] | bytes,
        *,
        kid: str | None = None,
        alg: str | None = None,
        lifetime: int = 300,
        now: float | None = None,
        key: object = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed ID token (JWS compact serialization).

        Claims: `iss` (this issuer), `iat` and `nbf` (`now`, default the clock), `exp`
        (`now + lifetime` seconds) and `jti` (random) are added unless `claims` sets them; a
        claim set to None is left out (a token without `exp`). `claims` given as bytes is the
        payload verbatim (malformed or deeply nested JSON), with no defaults added.

        Key: the key `kid` of this issuer, else the newest key of `alg` if `alg` is given, else
        the current key. With `key` (a private key object, or the HMAC secret bytes for `HS*`)
        that key signs instead, `alg` is then required and `kid` goes into the header as given
        (or no `kid` when None). `alg="none"` gives an unsigned token (`kid` as given).

        Header: `alg`, `typ: JWT` and `kid`, then `headers` (a value None removes the field).
        """
        signer: object
        if alg == "none":
            signer, header_kid, header_alg = None, kid, alg
        elif key is not None:
            if alg is None:
                raise ValueError("mint(key=...) needs alg")
            signer, header_kid, header_alg = key, kid, alg
        elif (alg or "").startswith("HS"):
            raise ValueError(f"alg {alg!r} needs the HMAC secret as key=")
        else:
            chosen = self._pick(kid, alg)
            signer, header_kid, header_alg = chosen.private, chosen.kid, chosen.alg
        header: dict[str, Any] = {"alg": header_alg, "typ": "JWT"}
        if header_kid is not None:
            header["kid"] = header_kid
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        if isinstance(claims, bytes):
            return sign(header, claims, signer)
        issued = int(self.clock() if now is None else now)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": uuid.uuid4().hex,
        }
        payload.update(claims)
        return sign(header, {k: v for k, v in payload.items() if v is not None}, signer)

    def _pick(self, kid: str | None, alg: str | None) -> SigningKey:
        with self._lock:
            if kid is not None:
                return self._keys[kid]
            if alg is None:
                return self._keys[self.current_kid]
            current = self._keys[self.current_kid]
            if current.alg == alg:
                return current
            for candidate in reversed(self._keys.values()):
                if candidate.alg == alg:
                    return candidate
        raise KeyError(f"no {alg} key; rotate(alg={alg!r}) first")


# -- claim shapes ---------------------------------------------------------------------------------


def _number(*parts: str) -> str:
    """A stable numeric id (as a string, like the CI systems send them) for a name."""
    return str(zlib.crc32("/".join(parts).encode()) % 900_000_000 + 100_000)


def _apply(claims: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def github_actions(
    repository: str = "acme/app",
    ref: str = "refs/heads/main",
    *,
    audience: str | list[str] = DEFAULT_AUDIENCE,
    environment: str | None = None,
    event_name: str = "push",
    workflow_file: str = "ci.yml",
    actor: str = "octocat",
    **overrides: Any,
) -> dict[str, Any]:
    """Claims shaped like a GitHub Actions OIDC token (docs.github.com, "OpenID Connect
    reference": the token claims, and the `sub` formats). `sub` is
    `repo:OWNER/REPO:environment:NAME` with an environment, `repo:OWNER/REPO:pull_request` for
    pull_request events, else `repo:OWNER/REPO:ref:REF`. Ids are strings, as GitHub sends
    them. `overrides` replace claims last; a None override removes the claim. `iss`, `iat`,
    `nbf`, `exp`, `jti` come from `OidcIssuer.mint`."""
    owner = repository.split("/", 1)[0]
    if environment is not None:
        sub = f"repo:{repository}:environment:{environment}"
    elif event_name in ("pull_request", "pull_request_target"):
        sub = f"repo:{repository}:pull_request"
    else:
        sub = f"repo:{repository}:ref:{ref}"
    sha = f"{zlib.crc32((repository + ref).encode()):08x}" * 5
    workflow_ref = f"{repository}/.github/workflows/{workflow_file}@{ref}"
    claims: dict[str, Any] = {
        "sub": sub,
        "aud": audience,
        "ref": ref,
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "ref_protected": "true" if ref == "refs/heads/main" else "false",
        "sha": sha,
        "repository": repository,
        "repository_id": _number(repository),
        "repository_owner": owner,
        "repository_owner_id": _number(owner),
        "repository_visibility": "private",
        "actor": actor,
        "actor_id": _number("actor", actor),
        "workflow": "CI",
        "workflow_ref": workflow_ref,
        "workflow_sha": sha,
        "job_workflow_ref": workflow_ref,
        "job_workflow_sha": sha,
        "event_name": event_name,
        "head_ref": "",
        "base_ref": "",
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "environment": environment,
    }
    return _apply(claims, overrides)


def gitlab_ci(
    project_path: str = "platform/app",
    ref: str = "main",
    *,
    ref_type: str = "branch",
    audience: str | list[str] = DEFAULT_AUDIENCE,
    environment: str | None = None,
    pipeline_source: str = "push",
    user_login: str = "alice",
    ref_protected: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Claims shaped like a GitLab CI/CD ID token (`id_tokens:`; docs.gitlab.com, "OpenID
    Connect (OIDC) Authentication Using ID Tokens", token payload). `sub` is
    `project_path:GROUP/PROJECT:ref_type:TYPE:ref:REF`; `ref` is the bare branch or tag name;
    ids and booleans are strings, as GitLab sends them. `overrides` as in `github_actions`."""
    namespace_path = project_path.rsplit("/", 1)[0]
    ref_path = f"refs/{'tags' if ref_type == 'tag' else 'heads'}/{ref}"
    sha = f"{zlib.crc32((project_path + ref).encode()):08x}" * 5
    claims: dict[str, Any] = {
        "sub": f"project_path:{project_path}:ref_type:{ref_type}:ref:{ref}",
        "aud": audience,
        "namespace_id": _number(namespace_path),
        "namespace_path": namespace_path,
        "project_id": _number(project_path),
        "project_path": project_path,
        "project_visibility": "private",
        "user_id": _number("user", user_login),
        "user_login": user_login,
        "user_email": f"{user_login}@example.com",
        "user_access_level": "developer",
        "pipeline_id": "1234567",
        "pipeline_source": pipeline_source,
        "job_id": "7654321",
        "ref": ref,
        "ref_type": ref_type,
        "ref_path": ref_path,
        "ref_protected": "true" if ref_protected else "false",
        "runner_id": "12",
        "runner_environment": "gitlab-hosted",
        "sha": sha,
        "ci_config_ref_uri": f"gitlab.example.com/{project_path}//.gitlab-ci.yml@{ref_path}",
        "ci_config_sha": sha,
        "environment": environment,
        "environment_protected": None if environment is None else "false",
        "deployment_tier": None if environment is None else "production",
    }
    return _apply(claims, overrides)


def kubernetes(
    namespace: str = "ci",
    service_account: str = "builder",
    *,
    audience: str | list[str] = DEFAULT_AUDIENCE,
    pod: str = "builder-7d9f8-abcde",
    node: str | None = "worker-1",
    **overrides: Any,
) -> dict[str, Any]:
    """Claims shaped like a Kubernetes projected service account token (TokenRequest API;
    kubernetes.io, "Managing Service Accounts", bound token claims): `sub`
    `system:serviceaccount:NAMESPACE:NAME`, `aud` a list, and the nested `kubernetes.io` claim
    with `namespace`, `serviceaccount{name,uid}`, `pod{name,uid}` and (1.30+) `node{name,uid}`.
    `overrides` as in `github_actions` (top-level claims only)."""
    nested: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {
            "name": service_account,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sa/{namespace}/{service_account}")),
        },
        "pod": {"name": pod, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{namespace}/{pod}"))},
    }
    if node is not None:
        nested["node"] = {"name": node, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"node/{node}"))}
    claims: dict[str, Any] = {
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "aud": [audience] if isinstance(audience, str) else audience,
        "kubernetes.io": nested,
    }
    return _apply(claims, overrides)
