"""A push loop like CI's: small blobs and manifests pushed through regauth over and over.

Each worker keeps one HTTPS connection (keep-alive, as registry clients do) and repeats: fetch a
token for its repository (Basic credentials), upload a layer and a config blob (POST, then PUT
with the digest), check the layer (HEAD), put the manifest, and read it back. Every request is
timed; any status other than the expected one, and any exception, is a failure. The `kid` of
every token is kept with its time.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlencode

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Sample:
    started: float  # time.time()
    seconds: float
    method: str
    what: str
    status: int | None
    ok: bool
    error: str = ""


@dataclass
class LoopResult:
    samples: list[Sample] = field(default_factory=list)
    tokens: list[tuple[float, float, str]] = field(default_factory=list)  # asked, got, kid

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def longest(self) -> Sample:
        return max(self.samples, key=lambda s: s.seconds)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


class PushLoop:
    """`workers` threads pushing to `demo/loop-N` until `stop()`."""

    def __init__(
        self, port: int, ca: Path, service: str, credentials: tuple[str, str], workers: int = 2
    ) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.service = service
        self.basic = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        self.result = LoopResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> LoopResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        return self.result

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=60)

    def _call(
        self,
        conn: http.client.HTTPSConnection,
        method: str,
        target: str,
        what: str,
        expected: int,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> http.client.HTTPResponse | None:
        started, t0 = time.time(), time.monotonic()
        try:
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()  # the next request reconnects
            self._add(Sample(started, time.monotonic() - t0, method, what, None, False, repr(e)))
            return None
        ok = response.status == expected
        self._add(
            Sample(
                started,
                time.monotonic() - t0,
                method,
                what,
                response.status,
                ok,
                "" if ok else response.headers.get("www-authenticate", ""),
            )
        )
        return response if ok else None

    def _add(self, sample: Sample) -> None:
        with self._lock:
            self.result.samples.append(sample)

    def _run(self, worker: int) -> None:
        conn = self._connect()
        repo = f"demo/loop-{worker}"
        n = 0
        while not self._stop.is_set():
            n += 1
            self._push(conn, repo, n)
        conn.close()

    def _token(self, conn: http.client.HTTPSConnection, repo: str) -> str | None:
        query = urlencode({"service": self.service, "scope": f"repository:{repo}:pull,push"})
        asked = time.time()
        started, t0 = asked, time.monotonic()
        try:
            conn.request("GET", f"/v2/token?{query}", headers={"Authorization": self.basic})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self._add(Sample(started, time.monotonic() - t0, "GET", "token", None, False, repr(e)))
            return None
        ok = response.status == 200
        self._add(Sample(started, time.monotonic() - t0, "GET", "token", response.status, ok))
        if not ok:
            return None
        token = json.loads(body)["token"]
        with self._lock:
            self.result.tokens.append((asked, time.time(), _kid(token)))
        return token

    def _push(self, conn: http.client.HTTPSConnection, repo: str, n: int) -> None:
        token = self._token(conn, repo)
        if token is None:
            return
        auth = {"Authorization": f"Bearer {token}"}
        layer = os.urandom(512)
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
        for blob in (layer, config):
            started = self._call(
                conn, "POST", f"/v2/{repo}/blobs/uploads/", "upload-start", 202, auth
            )
            if started is None:
                return
            location = started.headers["Location"]
            separator = "&" if "?" in location else "?"
            if (
                self._call(
                    conn,
                    "PUT",
                    f"{location}{separator}digest={_digest(blob)}",
                    "upload-finish",
                    201,
                    {**auth, "Content-Type": "application/octet-stream"},
                    blob,
                )
                is None
            ):
                return
        if (
            self._call(conn, "HEAD", f"/v2/{repo}/blobs/{_digest(layer)}", "blob-head", 200, auth)
            is None
        ):
            return
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
        if (
            self._call(
                conn,
                "PUT",
                f"/v2/{repo}/manifests/{n}",
                "manifest-put",
                201,
                {**auth, "Content-Type": MANIFEST_TYPE},
                manifest,
            )
            is None
        ):
            return
        self._call(
            conn,
            "GET",
            f"/v2/{repo}/manifests/{n}",
            "manifest-get",
            200,
            {**auth, "Accept": MANIFEST_TYPE},
        )
