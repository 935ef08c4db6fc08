"""Load generation and measurement for bench/control.py and bench/scale.py.

- `token_rate`: N keep-alive HTTP/1.1 clients (asyncio, this process) sending one request back
  to back; requests/s and the server's CPU time per request;
- `blob_latencies`: wall time of each GET on one keep-alive connection, and server CPU per GET;
- `observer_cost`: the metrics observer's time per request, timed in process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from bench import BenchError
from bench import Endpoint

BLOB = b"regauth control-path bench blob\n" * 32  # 1 KiB
REPO = "public/blob"
ACCOUNT = "bench"


@dataclass
class Load:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


async def _client(
    port: int,
    context: ssl.SSLContext,
    request: bytes,
    until: float,
    measure_from: float,
    load: Load,
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        while True:
            now = time.perf_counter()
            if now >= until:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if now >= measure_from:
                load.requests += 1
                load.statuses[status] += 1
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Rate:
    per_second: float  # requests/s, wall clock
    cpu_us: float  # the server's CPU time per request, microseconds


def token_rate(
    port: int,
    pid: int,
    ca: Path,
    target: str,
    authorization: str | None,
    clients: int,
    seconds: float,
    context: ssl.SSLContext | None = None,
) -> Rate:
    """Requests/s over `seconds` after a 1 s warm-up, and the server's CPU time per request
    (what a busy machine changes least); every answer must be 200. `context`: the clients' TLS
    (default: trusting `ca`, HTTP/1.1; bench/client_certs.py adds a client certificate)."""
    if context is None:
        context = ssl.create_default_context(cafile=str(ca))
        context.set_alpn_protocols(["http/1.1"])
    lines = [f"GET {target} HTTP/1.1", f"Host: localhost:{port}", "User-Agent: regauth-bench"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    load = Load()
    cpu: list[float] = []

    async def run() -> None:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        loop.call_later(1, lambda: cpu.append(cpu_seconds(pid)))
        await asyncio.gather(
            *(
                _client(port, context, request, start + 1 + seconds, start + 1, load)
                for _ in range(clients)
            )
        )
        cpu.append(cpu_seconds(pid))

    asyncio.run(run())
    if set(load.statuses) != {200}:
        raise BenchError(f"token requests on port {port}: statuses {dict(load.statuses)}")
    return Rate(load.requests / seconds, (cpu[1] - cpu[0]) / max(1, load.requests) * 1e6)


def blob_latencies(
    endpoint: Endpoint, gets: int, pid: int | None = None
) -> tuple[list[float], float]:
    """Seconds per GET of the 1 KiB blob on one keep-alive connection (after 50 warm-ups), and
    the server's CPU microseconds per GET (0 without `pid`)."""
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    conn = endpoint.connect()
    out = []
    cpu_start = 0.0
    try:
        for i in range(gets + 50):
            if i == 50 and pid is not None:
                cpu_start = cpu_seconds(pid)
            started = time.perf_counter()
            conn.request("GET", f"/v2/{REPO}/blobs/{digest}", headers=endpoint.headers())
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200 or body != BLOB:
                raise BenchError(f"blob GET on port {endpoint.port}: {response.status}")
            if i >= 50:
                out.append(elapsed)
        cpu = (cpu_seconds(pid) - cpu_start) / gets * 1e6 if pid is not None else 0.0
    finally:
        conn.close()
    return out, cpu


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def observer_cost(repeat: int = 20000) -> tuple[float, float]:
    """Microseconds the metrics observer spends on one token request and on one forwarded
    registry request (its requestheaders and response hooks), timed in this process: the
    whole per-request cost of metrics, measured without the noise of a busy machine."""
    from mitmproxy import http
    from mitmproxy.test import tflow

    from regauth.front import Forward
    from regauth.gate import GateDecision
    from regauth.mitm.flow_state import FlowStates
    from regauth.mitm.metrics_observer import MetricsObserver
    from regauth.ops.metrics import Metrics
    from regauth.protocol.routes import match_route

    states = FlowStates()
    observer = MetricsObserver(Metrics(), states)
    observer.enabled = True
    record = {
        "method": "GET",
        "grant_type": "get",
        "credential": "password",
        "failed_login_counted": False,
        "account": ACCOUNT,
        "decisions": [
            {
                "scope": f"repository:{REPO}:pull",
                "granted": ["pull"],
                "outcome": "granted",
                "rule": 2,
                "line": 20,
            }
        ],
    }
    route = match_route("GET", f"/v2/{REPO}/blobs/sha256:" + "0" * 64)
    results = []
    for kind in ("token", "registry"):
        flow = tflow.tflow(resp=True)
        flow.response = http.Response.make(200, b"{}")
        flow.request.timestamp_end = flow.response.timestamp_start = time.time()
        observer.client_connected(flow.client_conn)
        state = states.start(flow, time.time())
        state.kind = kind
        if kind == "token":
            state.token_record = record
            state.client_authorization = "Basic x"
        else:
            state.decision = Forward("registry", GateDecision(True, "ok", route))
            state.answered_by = "upstream"
        started = time.perf_counter()
        for _ in range(repeat):
            observer.requestheaders(flow)
            observer.response(flow)
        results.append((time.perf_counter() - started) / repeat * 1e6)
    return results[0], results[1]
