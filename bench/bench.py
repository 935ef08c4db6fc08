"""Blob push/pull throughput: direct registry vs bare mitmdump vs regauth, in one run.

Usage (from the repository root):

    .venv/bin/python bench/bench.py [--size 1G] [--repeat N] [--keep] [--tmpdir DIR]

Each setup pushes one blob with a monolithic upload (POST /v2/<name>/blobs/uploads/, then PUT
<location>&digest=sha256:... with the body streamed from a file in 1 MiB chunks) and pulls it back
(GET /v2/<name>/blobs/<digest>, read in 1 MiB chunks, hashed and discarded):

  direct    plain HTTP straight to a docker-registry on loopback (no auth)
  mitmdump  HTTPS to a bare `mitmdump --mode reverse:...` with stream_large_bodies=1m
  regauth   HTTPS to `regauth serve` (enforce mode): Basic -> /v2/token, then Bearer

Every setup (and every repetition) gets its own fresh registry, so every upload is stored for
real. MB = 10^6 bytes; times are wall clock around each transfer (the upload from the first byte
of the PUT to its 201, the download from the GET to the last byte, sha256 included). The proxy's
peak RSS is VmHWM from /proc/<pid>/status, read after both transfers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import FrameType
from urllib.parse import urlencode
from urllib.parse import urlsplit

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

CHUNK = 1024 * 1024
BIN_DIR = Path(sys.executable).parent
MITMDUMP = BIN_DIR / "mitmdump"
REGAUTH = BIN_DIR / "regauth"
SERVICE = "regauth-bench"
ISSUER = "regauth-bench-issuer"
ACCOUNT = "bench"
SETUPS = ("direct", "mitmdump", "regauth")
START_TIMEOUT = 60.0
IO_TIMEOUT = 600.0

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KI": 1024,
    "KIB": 1024,
    "KB": 1000,
    "M": 1024**2,
    "MI": 1024**2,
    "MIB": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "GI": 1024**3,
    "GIB": 1024**3,
    "GB": 1000**3,
}


class BenchError(Exception):
    pass


def parse_size(text: str) -> int:
    """`1G`, `1GiB`, `256M`, `512MiB` (binary), `500MB` (decimal), or a byte count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (try 1G, 256M, 500MB or bytes)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return size


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for pid {pid}")


# -- processes -------------------------------------------------------------------------------


@dataclass
class ProxyProcess:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes]
    port: int
    output_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output_tail(self, lines: int = 40) -> str:
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n{self.output_tail()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def spawn(name: str, command: list[str], workdir: Path, port: int) -> ProxyProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    output_path = workdir / f"{name}.out"
    with output_path.open("wb") as output:
        # Own session: a Ctrl-C in the terminal reaches only this script, which stops it.
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return ProxyProcess(name, command, process, port, output_path)


def mitmdump_command(upstream: str, port: int, certs: Path) -> list[str]:
    return [
        str(MITMDUMP),
        "--mode",
        f"reverse:{upstream}",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={certs / pki.PRIVATE_DIR}",
        "--set",
        "connection_strategy=lazy",
        "--set",
        "stream_large_bodies=1m",
        "-q",
    ]


def regauth_command(
    upstream: str, port: int, certs: Path, policy: Path, workdir: Path
) -> list[str]:
    return [
        str(REGAUTH),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--certs-dir",
        str(certs),
        "--policy",
        str(policy),
        "--log",
        str(workdir / "exchange.jsonl"),
        "--registry-dir",
        str(workdir / "unused-registry"),
        "--upstream",
        upstream,
    ]


def policy_yaml(password_hash: str) -> str:
    return f"""version: 1
service: {SERVICE}
issuer: {ISSUER}
token:
  lifetime: 3600
accounts:
  {ACCOUNT}:
    password_hash: "{password_hash}"
    groups: [bench]
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: the benchmark account pushes and pulls its own area
    account: {ACCOUNT}
    repository: "bench/**"
    actions: [pull, push]
"""


# -- client ----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """Where the client connects: plain HTTP (direct) or HTTPS verified against our CA."""

    port: int
    tls: ssl.SSLContext | None
    host: str = "127.0.0.1"
    authorization: str | None = None

    def connect(self) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=IO_TIMEOUT)
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.tls, timeout=IO_TIMEOUT
        )

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers


def tls_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context


def simple_request(
    conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str]
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn.request(method, target, headers=headers)
    response = conn.getresponse()
    return response.status, response.headers, response.read()


def wait_ready(endpoint: Endpoint, proxy: ProxyProcess) -> None:
    """Until an HTTPS GET /v2/ through the proxy gets any HTTP answer (TLS included)."""
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        proxy.check_alive()
        conn = endpoint.connect()
        try:
            conn.timeout = 5
            simple_request(conn, "GET", "/v2/", {})
            return
        except (OSError, http.client.HTTPException) as e:
            last = e
            time.sleep(0.2)
        finally:
            conn.close()
    raise BenchError(
        f"{proxy.name} did not answer on port {proxy.port}: {last}\n{proxy.output_tail()}"
    )


def fetch_token(endpoint: Endpoint, repo: str, password: str) -> str:
    query = urlencode([("service", SERVICE), ("scope", f"repository:{repo}:pull,push")])
    basic = base64.b64encode(f"{ACCOUNT}:{password}".encode()).decode()
    conn = endpoint.connect()
    try:
        status, _, body = simple_request(
            conn, "GET", f"/v2/token?{query}", {"Authorization": f"Basic {basic}"}
        )
    finally:
        conn.close()
    if status != 200:
        raise BenchError(f"GET /v2/token: {status} {body[:500]!r}")
    reply = json.loads(body)
    granted = set(str(reply.get("scope", "")).split(" "))
    if (
        f"repository:{repo}:pull,push" not in granted
        and f"repository:{repo}:push,pull" not in granted
    ):
        raise BenchError(f"token does not grant pull,push on {repo}: scope={reply.get('scope')!r}")
    return str(reply["token"])


@dataclass
class Blob:
    path: Path
    size: int
    digest: str


def make_blob(path: Path, size: int) -> Blob:
    """Random content written in chunks (memory stays flat), hashed as it is written."""
    sha = hashlib.sha256()
    remaining = size
    with path.open("wb") as f:
        while remaining:
            chunk = os.urandom(min(CHUNK, remaining))
            sha.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return Blob(path, size, f"sha256:{sha.hexdigest()}")


def push(endpoint: Endpoint, repo: str, blob: Blob) -> tuple[float, str]:
    """Monolithic upload; returns (seconds for the PUT, the Location the POST returned)."""
    conn = endpoint.connect()
    try:
        status, headers, body = simple_request(
            conn, "POST", f"/v2/{repo}/blobs/uploads/", endpoint.headers({"Content-Length": "0"})
        )
        location = headers.get("Location")
        if status != 202 or not location:
            raise BenchError(f"POST /v2/{repo}/blobs/uploads/: {status} {body[:500]!r}")
        # Use only path and query: behind bare mitmdump the registry names itself (mitmdump
        # rewrote Host), and the client must keep talking to the proxy.
        parts = urlsplit(location)
        target = (
            parts.path
            + "?"
            + "&".join(p for p in (parts.query, urlencode({"digest": blob.digest})) if p)
        )
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        started = time.perf_counter()
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        for name, value in endpoint.headers(
            {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        ).items():
            conn.putheader(name, value)
        conn.endheaders()
        sent = 0
        with blob.path.open("rb", buffering=0) as f:
            while n := f.readinto(buffer):
                conn.send(view[:n])
                sent += n
        response = conn.getresponse()
        reply = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if sent != blob.size:
        raise BenchError(f"sent {sent} bytes, expected {blob.size}")
    if response.status != 201:
        raise BenchError(f"PUT {target}: {response.status} {reply[:500]!r}")
    stored = response.headers.get("Docker-Content-Digest")
    if stored != blob.digest:
        raise BenchError(f"registry stored {stored}, expected {blob.digest}")
    return elapsed, location


def pull(endpoint: Endpoint, repo: str, blob: Blob) -> float:
    """GET the blob, hash and discard it chunk by chunk; returns seconds."""
    conn = endpoint.connect()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    sha = hashlib.sha256()
    received = 0
    try:
        started = time.perf_counter()
        conn.putrequest("GET", f"/v2/{repo}/blobs/{blob.digest}", skip_accept_encoding=True)
        for name, value in endpoint.headers().items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        if response.status != 200:
            raise BenchError(f"GET blob: {response.status} {response.read()[:500]!r}")
        while n := response.readinto(buffer):
            sha.update(view[:n])
            received += n
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if received != blob.size or f"sha256:{sha.hexdigest()}" != blob.digest:
        raise BenchError(
            f"pulled {received} bytes with sha256:{sha.hexdigest()}, "
            f"expected {blob.size} bytes with {blob.digest}"
        )
    return elapsed


# -- one measurement -------------------------------------------------------------------------


@dataclass
class Sample:
    upload_mbps: float
    download_mbps: float
    proxy_rss_kib: int | None
    registry_rss_kib: int


@dataclass
class Bench:
    root: Path
    certs: Path
    policy: Path
    password: str
    blob: Blob
    keep: bool
    commands: dict[str, list[str]] = field(default_factory=dict)

    def run(self, setup: str, round_no: int) -> Sample:
        workdir = self.root / f"{setup}-{round_no}"
        repo = f"bench/{setup}-{round_no}"
        with contextlib.ExitStack() as stack:
            registry = RegistryProcess(workdir / "registry")
            registry.start()
            stack.callback(self._discard_registry, registry)
            assert registry.process is not None
            registry_pid = registry.process.pid
            proxy: ProxyProcess | None = None
            if setup == "direct":
                endpoint = Endpoint(registry.port, None)
            else:
                port = free_port()
                if setup == "mitmdump":
                    command = mitmdump_command(registry.url, port, self.certs)
                else:
                    command = regauth_command(registry.url, port, self.certs, self.policy, workdir)
                self.commands.setdefault(setup, command)
                proxy = spawn(setup, command, workdir, port)
                stack.callback(proxy.stop)
                endpoint = Endpoint(port, tls_context(self.certs / pki.CA_CERT), host="localhost")
                wait_ready(endpoint, proxy)
                if setup == "regauth":
                    token = fetch_token(endpoint, repo, self.password)
                    endpoint.authorization = f"Bearer {token}"
            try:
                upload_s, location = push(endpoint, repo, self.blob)
                download_s = pull(endpoint, repo, self.blob)
            except (OSError, http.client.HTTPException, BenchError) as e:
                detail = (
                    f"\n--- {proxy.name} output (tail) ---\n{proxy.output_tail()}"
                    if proxy is not None
                    else ""
                )
                raise BenchError(f"{setup}: {type(e).__name__}: {e}{detail}") from e
            netloc = urlsplit(location).netloc  # empty: relative, resolved against the proxy
            if setup == "regauth" and netloc not in ("", f"localhost:{endpoint.port}"):
                print(
                    f"  warning: regauth returned upload Location {location!r}, outside the "
                    "proxy's public URL",
                    flush=True,
                )
            proxy_rss = None
            if proxy is not None:
                proxy.check_alive()
                proxy_rss = peak_rss_kib(proxy.pid)
            return Sample(
                self.blob.size / upload_s / 1e6,
                self.blob.size / download_s / 1e6,
                proxy_rss,
                peak_rss_kib(registry_pid),
            )

    def _discard_registry(self, registry: RegistryProcess) -> None:
        registry.stop()
        if not self.keep:
            shutil.rmtree(registry.workdir / "data", ignore_errors=True)
        os.sync()  # the next setup should not pay for this one's write-back


# -- report ----------------------------------------------------------------------------------


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def fmt_mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def report(samples: dict[str, list[Sample]]) -> str:
    med: dict[str, dict[str, float | None]] = {}
    for setup, runs in samples.items():
        proxy = [s.proxy_rss_kib for s in runs if s.proxy_rss_kib is not None]
        med[setup] = {
            "up": statistics.median(s.upload_mbps for s in runs),
            "down": statistics.median(s.download_mbps for s in runs),
            "proxy": statistics.median(proxy) if proxy else None,
            "registry": statistics.median(s.registry_rss_kib for s in runs),
        }
    header = [
        "setup",
        "upload MB/s",
        "download MB/s",
        "proxy peak RSS MiB",
        "upload vs direct",
        "download vs direct",
        "upload vs mitmdump",
        "download vs mitmdump",
        "registry peak RSS MiB",
    ]
    rows = [header, ["---"] * len(header)]
    for setup, m in med.items():
        up, down = float(m["up"] or 0), float(m["down"] or 0)
        row = [setup, f"{up:.1f}", f"{down:.1f}", fmt_mib(m["proxy"])]
        for base in ("direct", "mitmdump"):
            ref = med.get(base)
            row += [
                fmt_ratio(up / float(ref["up"] or 1)) if ref else "-",
                fmt_ratio(down / float(ref["down"] or 1)) if ref else "-",
            ]
        row.append(fmt_mib(m["registry"]))
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def versions() -> str:
    parts = [f"python {sys.version.split()[0]}"]
    for name, command in (
        ("mitmdump", [str(MITMDUMP), "--version"]),
        ("docker-registry", ["docker-registry", "--version"]),
    ):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
            parts.append(f"{name}: {out.splitlines()[0].strip()}" if out else name)
        except (OSError, subprocess.SubprocessError):
            parts.append(f"{name}: ?")
    return "; ".join(parts)


def sha256_rate(blob: Blob) -> float:
    """MB/s of hashlib.sha256 over the blob file on this machine (the pull verifies inline)."""
    sha = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    limit = min(blob.size, 256 * CHUNK)
    done = 0
    with blob.path.open("rb", buffering=0) as f:
        started = time.perf_counter()
        while done < limit and (n := f.readinto(buffer)):
            sha.update(view[:n])
            done += n
        return done / (time.perf_counter() - started) / 1e6


# -- main ------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workspace(base: str | None, keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="regauth-bench-", dir=base))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=parse_size,
        default=1024**3,
        help="blob size: 1G (default), 256M, 512MiB, 500MB or bytes",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all three setups; the table shows medians"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (blob, registries, logs)"
    )
    parser.add_argument(
        "--tmpdir", default=None, help="where to create the temporary directory (default: $TMPDIR)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for tool in (MITMDUMP, REGAUTH):
        if not tool.exists():
            parser.error(f"{tool} not found: run with the project's .venv/bin/python")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    try:
        with workspace(args.tmpdir, args.keep) as root:
            return _run(args, root)
    except KeyboardInterrupt:
        print("interrupted; all processes stopped", file=sys.stderr)
        return 130
    except BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, root: Path) -> int:
    size: int = args.size
    print(f"workdir {root}; {versions()}; {os.cpu_count()} CPUs", flush=True)
    certs = root / "certs"
    pki.init_certs(certs)
    password = secrets.token_urlsafe(18)
    policy = root / "policy.yaml"
    policy.write_text(policy_yaml(hash_password(password, rounds=4)))
    started = time.perf_counter()
    blob = make_blob(root / "blob.bin", size)
    print(
        f"blob: {size} bytes ({size / 1024**2:.0f} MiB), {blob.digest}, generated in "
        f"{time.perf_counter() - started:.1f} s; client sha256 {sha256_rate(blob):.0f} MB/s",
        flush=True,
    )
    bench = Bench(root, certs, policy, password, blob, args.keep)
    samples: dict[str, list[Sample]] = {setup: [] for setup in SETUPS}
    for round_no in range(1, args.repeat + 1):
        for setup in SETUPS:
            sample = bench.run(setup, round_no)
            samples[setup].append(sample)
            print(
                f"[{round_no}/{args.repeat}] {setup:8}  upload {sample.upload_mbps:8.1f} MB/s"
                f"  download {sample.download_mbps:8.1f} MB/s  proxy peak RSS "
                f"{fmt_mib(sample.proxy_rss_kib)} MiB  registry peak RSS "
                f"{fmt_mib(sample.registry_rss_kib)} MiB",
                flush=True,
            )
    print()
    print(
        f"{size} bytes ({size / 1024**2:.0f} MiB) per transfer, {args.repeat} round(s)"
        f"{', medians' if args.repeat > 1 else ''}; MB = 10^6 bytes; chunk {CHUNK} bytes"
    )
    print()
    print(report(samples))
    print()
    for setup, command in bench.commands.items():
        print(f"{setup}: {' '.join(command)}")
    print(f"client peak RSS: {fmt_mib(peak_rss_kib(os.getpid()))} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
