"""The login flood of issue 20 item 7, and a legitimate client measured while it lasts.

Shared by tests/integration/test_login_flood.py (which bounds the numbers) and
bench/login_flood.py (which prints them), so both measure the same attack:

- `Flood`: `per_source` concurrent wrong-password logins (GET /v2/token with Basic, a new
  account name and password each: unknown names cost a bcrypt like real ones, and the
  refused-password memo never shortcuts them) from each source address. Every attacker thread
  opens its own HTTPS connection from its source address (loopback accepts all of 127/8) and
  finishes the TLS handshake first; then all send at once (a barrier), so the requests reach
  regauth within milliseconds, as a botnet's would.
- `timed_token`: one token request, timed from the request line to the body's last byte.
- `push_image`: a small image (a layer, a config, a manifest) pushed with a token for the
  repository, over one keep-alive connection from a source address.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlencode
from urllib.parse import urlsplit

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
TIMEOUT = 180.0  # seconds: the old FIFO made a login wait tens of seconds; never time out first


def connect(port: int, context: ssl.SSLContext, source: str) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(
        "localhost", port, context=context, timeout=TIMEOUT, source_address=(source, 0)
    )
    conn.connect()
    return conn


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_target(service: str, scope: str) -> str:
    return "/v2/token?" + urlencode({"service": service, "scope": scope})


@dataclass
class FloodResult:
    """Statuses of the flood's requests (None: no answer), per source and in all."""

    by_source: dict[str, Counter[int | None]] = field(default_factory=dict)
    seconds: float = 0.0  # from the barrier to the last answer
    answered: list[tuple[float, int | None]] = field(default_factory=list)  # monotonic, status

    def between(self, start: float, end: float, status: int) -> int:
        """How many answers with `status` arrived within [start, end] (time.monotonic())."""
        return sum(1 for at, got in self.answered if got == status and start <= at <= end)

    @property
    def statuses(self) -> Counter[int | None]:
        total: Counter[int | None] = Counter()
        for counts in self.by_source.values():
            total.update(counts)
        return total


class Flood:
    """See the module docstring. `start()` returns once every request is sent."""

    def __init__(
        self,
        port: int,
        ca: Path,
        service: str,
        sources: list[str],
        per_source: int = 30,
        scope: str = "repository:demo/app:pull",
    ) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.target = token_target(service, scope)
        self.sources = sources
        self.per_source = per_source
        self.result = FloodResult({s: Counter() for s in sources})
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(len(sources) * per_source + 1)
        self._threads = [
            threading.Thread(target=self._attack, args=(source, n), daemon=True)
            for source in sources
            for n in range(per_source)
        ]
        self._released = 0.0
        self._last = 0.0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._barrier.wait(timeout=TIMEOUT)  # every connection is open: go
        self._released = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether some attacker still waits for its answer."""
        return any(thread.is_alive() for thread in self._threads)

    def join(self) -> FloodResult:
        for thread in self._threads:
            thread.join(timeout=TIMEOUT)
        self.result.seconds = self._last - self._released
        return self.result

    def _attack(self, source: str, n: int) -> None:
        status: int | None = None
        try:
            conn = connect(self.port, self.context, source)
        except OSError:
            conn = None
        try:
            self._barrier.wait(timeout=TIMEOUT)
            if conn is not None:
                name = f"spray-{source.replace('.', '-')}-{n}"
                conn.request(
                    "GET", self.target, headers={"Authorization": basic(name, f"guess-{n}")}
                )
                response = conn.getresponse()
                response.read()
                status = response.status
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError):
            status = None
        finally:
            if conn is not None:
                conn.close()
            with self._lock:
                self._last = time.monotonic()
                self.result.by_source[source][status] += 1
                self.result.answered.append((self._last, status))


@dataclass
class Timed:
    started: float  # time.monotonic()
    seconds: float
    status: int
    body: bytes

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def timed_token(
    conn: http.client.HTTPSConnection, service: str, scope: str, credentials: tuple[str, str]
) -> Timed:
    started = time.monotonic()
    conn.request(
        "GET", token_target(service, scope), headers={"Authorization": basic(*credentials)}
    )
    response = conn.getresponse()
    body = response.read()
    return Timed(started, time.monotonic() - started, response.status, body)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _call(
    conn: http.client.HTTPSConnection,
    method: str,
    target: str,
    expected: int,
    headers: dict[str, str],
    body: bytes | None = None,
) -> http.client.HTTPResponse:
    conn.request(method, target, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    if response.status != expected:
        raise AssertionError(f"{method} {target}: {response.status}, expected {expected}")
    return response


def push_image(
    conn: http.client.HTTPSConnection,
    service: str,
    credentials: tuple[str, str],
    repository: str,
    tag: str,
) -> float:
    """Push a one-layer image to `repository:tag`; the seconds it took, token included.
    Raises AssertionError when a step gets an unexpected status."""
    started = time.monotonic()
    token = timed_token(conn, service, f"repository:{repository}:pull,push", credentials)
    if token.status != 200:
        raise AssertionError(f"token for the push: {token.status} {token.body[:200]!r}")
    auth = {"Authorization": f"Bearer {json.loads(token.body)['token']}"}
    layer = os.urandom(4096)
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    for blob in (layer, config):
        response = _call(
            conn, "POST", f"/v2/{repository}/blobs/uploads/", 202, {**auth, "Content-Length": "0"}
        )
        location = urlsplit(response.headers["Location"])
        target = location.path + (f"?{location.query}&" if location.query else "?")
        _call(
            conn,
            "PUT",
            f"{target}digest={_digest(blob)}",
            201,
            {**auth, "Content-Type": "application/octet-stream"},
            blob,
        )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    _call(
        conn,
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        201,
        {**auth, "Content-Type": MANIFEST_TYPE},
        manifest,
    )
    _call(conn, "GET", f"/v2/{repository}/manifests/{tag}", 200, {**auth, "Accept": MANIFEST_TYPE})
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method; raises ValueError if empty."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]
