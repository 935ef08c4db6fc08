"""A legitimate client measured while an attack runs: token latency and one whole push.

Issue 20's acceptance asks that a legitimate client keeps working during every attack, with
its token p99 and one push measured and printed. `LegitClient.during(...)` runs a token loop
in a thread (fresh TLS connection per request, as a new client would, from its own source
address) and, once, a push of a small image (two blobs and a manifest) with a token for its
repository; `report()` is the line the tests print.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlencode

from tests.support.httpclient import basic

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class _SourceHTTPS(http.client.HTTPSConnection):
    """HTTPS from a chosen loopback source address (127.0.0.0/8 all reach the proxy)."""

    def __init__(self, port: int, ca: Path, source: str, timeout: float) -> None:
        super().__init__(
            "localhost",
            port,
            timeout=timeout,
            context=ssl.create_default_context(cafile=str(ca)),
            source_address=(source, 0),
        )

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class LegitClient:
    port: int
    ca: Path
    service: str
    credentials: tuple[str, str]
    repository: str
    source: str = "127.0.0.200"
    timeout: float = 30.0
    token_seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    push_seconds: float | None = None
    push_error: str = ""

    def _request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = _SourceHTTPS(self.port, self.ca, self.source, self.timeout)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.headers), response.read()
        finally:
            conn.close()

    def token(self, scope: str) -> str:
        query = urlencode([("service", self.service), ("scope", scope)])
        started = time.monotonic()
        status, _, body = self._request(
            "GET", f"/v2/token?{query}", {"Authorization": basic(*self.credentials)}
        )
        self.token_seconds.append(time.monotonic() - started)
        if status != 200:
            raise RuntimeError(f"token request answered {status}: {body[:200]!r}")
        return str(json.loads(body)["token"])

    def push(self) -> None:
        """Push a small image: a layer, a config and a manifest (tag `legit`)."""
        started = time.monotonic()
        token = self.token(f"repository:{self.repository}:pull,push")
        auth = {"Authorization": f"Bearer {token}"}
        layer, config = b"legit layer " * 100, b'{"architecture":"amd64","os":"linux"}'
        for blob in (layer, config):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            status, headers, body = self._request(
                "POST", f"/v2/{self.repository}/blobs/uploads/", auth, b""
            )
            if status != 202:
                raise RuntimeError(f"upload start answered {status}: {body[:200]!r}")
            location = headers["Location"]
            separator = "&" if "?" in location else "?"
            status, _, body = self._request(
                "PUT",
                f"{location}{separator}digest={digest}",
                {**auth, "Content-Type": "application/octet-stream"},
                blob,
            )
            if status != 201:
                raise RuntimeError(f"blob PUT answered {status}: {body[:200]!r}")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        status, _, body = self._request(
            "PUT",
            f"/v2/{self.repository}/manifests/legit",
            {**auth, "Content-Type": MANIFEST_TYPE},
            manifest,
        )
        if status != 201:
            raise RuntimeError(f"manifest PUT answered {status}: {body[:200]!r}")
        self.push_seconds = time.monotonic() - started

    def _loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                self.token(f"repository:{self.repository}:pull")
            except Exception as e:  # every failure is a finding
                self.failures.append(f"{type(e).__name__}: {e}")
            stop.wait(interval)

    def during(self, attack: object, interval: float = 0.2) -> None:
        """Run `attack()` while the token loop runs; push once in the middle."""
        stop = threading.Event()
        loop = threading.Thread(target=self._loop, args=(stop, interval), daemon=True)
        attacker = threading.Thread(target=attack, daemon=True)  # type: ignore[arg-type]
        attacker.start()
        time.sleep(0.5)
        loop.start()
        try:
            try:
                self.push()
            except Exception as e:
                self.push_error = f"{type(e).__name__}: {e}"
            attacker.join()
        finally:
            stop.set()
            loop.join()

    @property
    def p99(self) -> float:
        samples = sorted(self.token_seconds)
        if not samples:
            return float("nan")
        return samples[min(len(samples) - 1, int(len(samples) * 0.99))]

    def report(self, what: str) -> str:
        median = statistics.median(self.token_seconds) if self.token_seconds else float("nan")
        push = (
            f"{self.push_seconds:.2f} s"
            if self.push_seconds is not None
            else f"failed ({self.push_error})"
        )
        return (
            f"legitimate client during {what}: {len(self.token_seconds)} token requests, "
            f"p50 {median * 1000:.0f} ms, p99 {self.p99 * 1000:.0f} ms, "
            f"{len(self.failures)} failed; one push {push}"
        )

    def assert_served(self, p99_bound: float = 2.0) -> None:
        assert not self.failures, self.failures[:3]
        assert self.push_seconds is not None, self.push_error
        assert self.p99 < p99_bound, self.report("the attack")
