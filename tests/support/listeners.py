"""Loopback endpoints a test owns: a TCP listener that only records who came, a recording TLS
relay in front of a real token service, and a server certificate for them."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regauth.ops import pki


def server_cert(ca_dir: Path, out_dir: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by the regauth CA in `ca_dir`
    (`pki.init_certs` layout); returns (cert, key) paths."""
    pem = (ca_dir / pki.PRIVATE_DIR / "mitmproxy-ca.pem").read_bytes()
    ca_key = serialization.load_pem_private_key(pem, password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / pki.CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TcpListener:
    """Listens on a loopback port and records every connection and every byte received; it
    never answers. A credential that must not be sent somewhere is sent here instead."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tcp-listener")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            try:
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += data
            except OSError:
                pass

    def stop(self) -> None:
        self._stopped = True
        self.sock.close()


class RecordingRelay:
    """An https endpoint that relays GET requests to a real token service and keeps every
    response body, so a test knows the tokens the service issued (their signatures are
    secrets that must never be shown)."""

    def __init__(self, target: str, target_ca: Path, cert: tuple[Path, Path]) -> None:
        self.target = target.rstrip("/")
        self.bodies: list[bytes] = []
        relay = self
        client_context = ssl.create_default_context(cafile=str(target_ca))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "accept", "user-agent")
                }
                request = urllib.request.Request(relay.target + self.path, headers=headers)
                try:
                    with urllib.request.urlopen(
                        request, context=client_context, timeout=15
                    ) as response:
                        status, body = response.status, response.read()
                        reply_headers = response.headers
                except urllib.error.HTTPError as e:
                    status, body, reply_headers = e.code, e.read(), e.headers
                relay.bodies.append(body)
                self.send_response(status)
                for name in ("content-type", "www-authenticate"):
                    if reply_headers.get(name):
                        self.send_header(name, reply_headers[name])
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.server.socket = server_context.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="recording-relay"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tokens(self) -> list[str]:
        """Every `token`/`access_token`/`refresh_token` the relayed service answered with."""
        found = []
        for body in self.bodies:
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if isinstance(data, dict):
                found += [
                    data[k]
                    for k in ("token", "access_token", "refresh_token")
                    if isinstance(data.get(k), str)
                ]
        return found

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
