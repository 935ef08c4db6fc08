"""Soak: N clients for T minutes against a real regauth (enforce mode) and docker-registry.

Usage (from the repository root):

    .venv/bin/python bench/soak.py [--clients 50] [--minutes 10] [--interval 30] [--keep]

The script starts `regauth serve` itself (no --upstream: regauth starts its embedded
docker-registry in token mode), seeds demo/app:1 (a config blob, a 64 KiB layer, an OCI
manifest) through the proxy, then runs the clients, each on its own keep-alive HTTPS
connection from its own loopback address (127.1.x.y, so per-address limits see distinct
clients, as they would in production):

  users (90 %)    a random mix of: anonymous and Basic token requests (200); manifest and blob
                  GETs with a valid token (200); a manifest GET without a token (401 challenge);
                  a manifest GET outside the token's scope (401, error="insufficient_scope")
  guessers (10 %) Basic token requests with a wrong password (401, or 429 once rate-limited)

Every `--interval` seconds it prints, for that interval: requests/s, errors (any status other
than the expected one, a wrong challenge, or a connection failure) and p50/p99 latency per kind,
and the proxy's RSS (VmRSS of the regauth process). The summary covers the whole run: totals
per kind, the first distinct errors, RSS at start, half time and end, RSS growth over the last
half, tracebacks in regauth's output, and whether every line of the exchange log parses.
Latencies are measured by the client, a Python process sharing the machine's cores with the
proxy: they include client-side scheduling.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import FrameType
from urllib.parse import urlencode

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import free_port

REGAUTH = Path(sys.executable).parent / "regauth"
SERVICE = "regauth-soak"
ISSUER = "regauth-soak-issuer"
ACCOUNT = "ci"
REPO = "demo/app"
OUTSIDE = "public/other"  # pullable by anyone, but not covered by a demo/app token
TOKEN_LIFETIME = 300
START_TIMEOUT = 60.0
IO_TIMEOUT = 30.0
RSS_EVERY = 5.0
USER_KINDS = {  # kind: weight in a user's mix
    "manifest": 30,
    "blob": 20,
    "token_anon": 12,
    "token_basic": 12,
    "no_token": 13,
    "insufficient_scope": 13,
}
KINDS = [*USER_KINDS, "wrong_password"]
EXPECTED = {
    "manifest": {200},
    "blob": {200},
    "token_anon": {200},
    "token_basic": {200},
    "no_token": {401},
    "insufficient_scope": {401},
    "wrong_password": {401, 429},
}


class SoakError(Exception):
    pass


def policy_yaml(password_hash: str) -> str:
    return f"""version: 1
service: {SERVICE}
issuer: {ISSUER}
token:
  lifetime: {TOKEN_LIFETIME}
accounts:
  {ACCOUNT}:
    password_hash: "{password_hash}"
    groups: [ci]
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: CI publishes the demo area
    account: {ACCOUNT}
    repository: "demo/**"
    actions: [pull, push]
  - comment: anyone pulls the demo and public areas
    account: any
    repository: ["demo/**", "public/**"]
    actions: [pull]
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SoakError(f"no VmRSS for pid {pid}")


# -- the proxy -----------------------------------------------------------------------------------


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    port: int
    output: Path

    def tail(self, lines: int = 40) -> str:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise SoakError(f"regauth exited with {self.process.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # regauth stops its registry too
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_proxy(root: Path, certs: Path, policy: Path) -> Proxy:
    port = free_port()
    output = root / "regauth.out"
    command = [
        str(REGAUTH),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--certs-dir",
        str(certs),
        "--policy",
        str(policy),
        "--log",
        str(root / "exchange.jsonl"),
        "--registry-dir",
        str(root / "registry"),
    ]
    with output.open("wb") as out:
        # Own session: a Ctrl-C in the terminal reaches only this script, which stops it.
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proxy(process, port, output)


# -- HTTP ----------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTPS connection from a fixed loopback source address."""

    def __init__(self, port: int, tls: ssl.SSLContext, source: str) -> None:
        self.port, self.tls, self.source = port, tls, source
        self.conn: http.client.HTTPSConnection | None = None

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    "localhost",
                    self.port,
                    context=self.tls,
                    timeout=IO_TIMEOUT,
                    source_address=(self.source, 0),
                )
            try:
                self.conn.request(method, target, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, response.headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server may close an idle keep-alive connection between requests; a
                # request on a fresh connection that fails is an error.
                self.close()
                if attempt == 2 or body is not None:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"{ACCOUNT}:{password}".encode()).decode()


def token_target(scope: str) -> str:
    return "/v2/token?" + urlencode([("service", SERVICE), ("scope", scope)])


def get_token(client: Client, scope: str, password: str | None) -> str:
    headers = {"Authorization": basic(password)} if password else {}
    status, _, body = client.request("GET", token_target(scope), headers)
    if status != 200:
        raise SoakError(f"token request for {scope}: {status} {body[:300]!r}")
    return str(json.loads(body)["token"])


def seed(client: Client, password: str) -> tuple[str, str]:
    """Push a config blob, a 64 KiB layer and an OCI manifest to demo/app:1.
    Returns (manifest reference, layer digest)."""
    token = get_token(client, f"repository:{REPO}:pull,push", password)
    auth = {"Authorization": f"Bearer {token}"}
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = secrets.token_bytes(64 * 1024)
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, headers, body = client.request("POST", f"/v2/{REPO}/blobs/uploads/", auth, b"")
        if status != 202:
            raise SoakError(f"upload start: {status} {body[:300]!r}")
        location = headers["Location"]
        target = location.split("://", 1)[-1].split("/", 1)[-1]
        target = "/" + target + ("&" if "?" in target else "?") + f"digest={digest}"
        status, _, body = client.request(
            "PUT", target, {**auth, "Content-Type": "application/octet-stream"}, blob
        )
        if status != 201:
            raise SoakError(f"blob upload: {status} {body[:300]!r}")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
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
    status, _, body = client.request(
        "PUT",
        f"/v2/{REPO}/manifests/1",
        {**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        manifest,
    )
    if status != 201:
        raise SoakError(f"manifest upload: {status} {body[:300]!r}")
    return "1", "sha256:" + hashlib.sha256(layer).hexdigest()


# -- measurements --------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, int] = field(default_factory=dict)  # distinct error text -> count

    def add(self, kind: str, seconds: float, error: str | None) -> None:
        self.latencies[kind].append(seconds)
        if error is not None:
            self.errors[kind] += 1
            key = f"{kind}: {error}"
            self.examples[key] = self.examples.get(key, 0) + 1

    def merge(self, other: Stats) -> None:
        for kind, values in other.latencies.items():
            self.latencies[kind].extend(values)
        for kind, count in other.errors.items():
            self.errors[kind] += count
        for key, count in other.examples.items():
            self.examples[key] = self.examples.get(key, 0) + count


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def table(stats: Stats, seconds: float, rss: int | None) -> str:
    header = ["kind", "requests", "req/s", "errors", "p50 ms", "p99 ms"]
    rows = [header, ["---"] * len(header)]
    total = errors = 0
    every: list[float] = []
    for kind in KINDS:
        values = stats.latencies.get(kind, [])
        total += len(values)
        errors += stats.errors.get(kind, 0)
        every += values
        rows.append(
            [
                kind,
                str(len(values)),
                f"{len(values) / seconds:.1f}",
                str(stats.errors.get(kind, 0)),
                f"{1000 * percentile(values, 0.5):.1f}",
                f"{1000 * percentile(values, 0.99):.1f}",
            ]
        )
    rows.append(
        [
            "all",
            str(total),
            f"{total / seconds:.1f}",
            str(errors),
            f"{1000 * percentile(every, 0.5):.1f}",
            f"{1000 * percentile(every, 0.99):.1f}",
        ]
    )
    text = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return text + (f"\nproxy RSS {rss / 1024:.1f} MiB" if rss is not None else "")


class Soak:
    def __init__(
        self, port: int, tls: ssl.SSLContext, password: str, layer: str, deadline: float
    ) -> None:
        self.port, self.tls, self.password, self.layer = port, tls, password, layer
        self.deadline = deadline
        self.lock = threading.Lock()
        self.window = Stats()
        self.total = Stats()
        self.stop = threading.Event()

    def record(self, kind: str, started: float, error: str | None) -> None:
        elapsed = time.perf_counter() - started
        with self.lock:
            self.window.add(kind, elapsed, error)

    def take_window(self) -> Stats:
        with self.lock:
            window, self.window = self.window, Stats()
        self.total.merge(window)
        return window

    def run_user(self, index: int) -> None:
        client = Client(self.port, self.tls, f"127.1.{index // 250}.{index % 250 + 2}")
        rng = random.Random(index)
        kinds, weights = list(USER_KINDS), list(USER_KINDS.values())
        token, token_at = None, 0.0
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                if token is None or time.monotonic() - token_at > TOKEN_LIFETIME / 2:
                    token = self.call(
                        client,
                        "token_basic",
                        "GET",
                        token_target(f"repository:{REPO}:pull"),
                        {"Authorization": basic(self.password)},
                        want_token=True,
                    )
                    token_at = time.monotonic()
                    continue
                kind = rng.choices(kinds, weights)[0]
                bearer = {"Authorization": f"Bearer {token}"}
                if kind == "manifest":
                    self.call(
                        client,
                        kind,
                        "GET",
                        f"/v2/{REPO}/manifests/1",
                        {**bearer, "Accept": "application/vnd.oci.image.manifest.v1+json"},
                    )
                elif kind == "blob":
                    self.call(client, kind, "GET", f"/v2/{REPO}/blobs/{self.layer}", bearer)
                elif kind == "token_anon":
                    self.call(client, kind, "GET", token_target(f"repository:{REPO}:pull"), {})
                elif kind == "token_basic":
                    token = (
                        self.call(
                            client,
                            kind,
                            "GET",
                            token_target(f"repository:{REPO}:pull"),
                            {"Authorization": basic(self.password)},
                            want_token=True,
                        )
                        or token
                    )
                    token_at = time.monotonic()
                elif kind == "no_token":
                    self.call(client, kind, "GET", f"/v2/{REPO}/manifests/1", {}, challenge="")
                else:
                    self.call(
                        client,
                        kind,
                        "GET",
                        f"/v2/{OUTSIDE}/manifests/1",
                        bearer,
                        challenge='error="insufficient_scope"',
                    )
        finally:
            client.close()

    def run_guesser(self, index: int) -> None:
        client = Client(self.port, self.tls, f"127.2.{index // 250}.{index % 250 + 2}")
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                self.call(
                    client,
                    "wrong_password",
                    "GET",
                    token_target(f"repository:{REPO}:pull"),
                    {"Authorization": basic("wrong-" + self.password)},
                )
        finally:
            client.close()

    def call(
        self,
        client: Client,
        kind: str,
        method: str,
        target: str,
        headers: dict[str, str],
        want_token: bool = False,
        challenge: str | None = None,
    ) -> str | None:
        started = time.perf_counter()
        try:
            status, response_headers, body = client.request(method, target, headers)
        except (OSError, http.client.HTTPException) as e:
            client.close()
            self.record(kind, started, f"{type(e).__name__}: {e}")
            return None
        error = None
        if status not in EXPECTED[kind]:
            error = f"status {status} {body[:120]!r}"
        elif challenge is not None and challenge not in (
            response_headers.get("WWW-Authenticate") or ""
        ):
            error = f"challenge {response_headers.get('WWW-Authenticate')!r}"
        self.record(kind, started, error)
        if want_token and error is None:
            return str(json.loads(body)["token"])
        return None


# -- main ----------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="regauth-soak-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def check_log(path: Path) -> tuple[int, int]:
    """(lines, lines that do not parse as JSON) of the exchange log."""
    lines = bad = 0
    with path.open("rb") as f:
        for line in f:
            lines += 1
            try:
                json.loads(line)
            except ValueError:
                bad += 1
    return lines, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (10)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between tables (30)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (policy, logs, registry)"
    )
    args = parser.parse_args(argv)
    if args.clients < 2 or args.minutes <= 0 or args.interval <= 0:
        parser.error("--clients must be at least 2; --minutes and --interval positive")
    if not REGAUTH.exists():
        parser.error(f"{REGAUTH} not found: run with the project's .venv/bin/python")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        with workspace(args.keep) as root:
            return run(args, root)
    except KeyboardInterrupt:
        print("interrupted; all processes stopped", file=sys.stderr)
        return 130
    except SoakError as e:
        print(f"soak failed: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, root: Path) -> int:
    certs = root / "certs"
    pki.init_certs(certs)
    password = secrets.token_urlsafe(18)
    policy = root / "policy.yaml"
    policy.write_text(policy_yaml(hash_password(password, rounds=10)))
    proxy = start_proxy(root, certs, policy)
    try:
        return soak(args, root, proxy, password)
    finally:
        proxy.stop()


def soak(args: argparse.Namespace, root: Path, proxy: Proxy, password: str) -> int:
    tls = ssl.create_default_context(cafile=str(certs_ca(root)))
    tls.set_alpn_protocols(["http/1.1"])
    setup = Client(proxy.port, tls, "127.0.0.1")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        proxy.check_alive()
        try:
            setup.request("GET", "/v2/")
            break
        except (OSError, http.client.HTTPException) as e:
            setup.close()
            if time.monotonic() > deadline:
                raise SoakError(f"regauth did not answer: {e}\n{proxy.tail()}") from None
            time.sleep(0.3)
    _, layer = seed(setup, password)
    setup.close()

    guessers = max(1, args.clients // 10)
    users = args.clients - guessers
    duration = args.minutes * 60
    print(
        f"workdir {root}; regauth pid {proxy.process.pid} on port {proxy.port}; {users} users "
        f"+ {guessers} guessers for {args.minutes:g} min; {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()
    run_ = Soak(proxy.port, tls, password, layer, started + duration)
    threads = [threading.Thread(target=run_.run_user, args=(i,), daemon=True) for i in range(users)]
    threads += [
        threading.Thread(target=run_.run_guesser, args=(i,), daemon=True) for i in range(guessers)
    ]
    rss: list[tuple[float, int]] = [(0.0, rss_kib(proxy.process.pid))]
    for thread in threads:
        thread.start()
    window_started = started
    try:
        while any(t.is_alive() for t in threads):
            next_table = window_started + args.interval
            time.sleep(max(0.1, min(RSS_EVERY, next_table - time.monotonic())))
            proxy.check_alive()
            now = time.monotonic()
            rss.append((now - started, rss_kib(proxy.process.pid)))
            if now >= next_table:
                print(f"\n[{now - started:5.0f} s]")
                print(table(run_.take_window(), now - window_started, rss[-1][1]), flush=True)
                window_started = now
    finally:
        run_.stop.set()
        for thread in threads:
            thread.join(IO_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    run_.take_window()  # the requests in flight at the deadline count in the summary only
    return summary(run_.total, elapsed, rss, proxy, root)


def certs_ca(root: Path) -> Path:
    return root / "certs" / "ca.crt"


def summary(
    total: Stats, elapsed: float, rss: list[tuple[float, int]], proxy: Proxy, root: Path
) -> int:
    print(f"\n== summary: {elapsed:.0f} s ==")
    print(table(total, elapsed, None))
    errors = sum(total.errors.values())
    for key, count in sorted(total.examples.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {count} x {key}")
    half = elapsed / 2
    at_half = min(rss, key=lambda s: abs(s[0] - half))
    start_rss, end_rss = rss[0][1], rss[-1][1]
    peak = max(r for _, r in rss)
    print(
        f"proxy RSS: start {start_rss / 1024:.1f} MiB, at {at_half[0]:.0f} s "
        f"{at_half[1] / 1024:.1f} MiB, end {end_rss / 1024:.1f} MiB, peak {peak / 1024:.1f} "
        f"MiB; growth over the last half {(end_rss - at_half[1]) / 1024:+.1f} MiB"
    )
    output = proxy.output.read_text(errors="replace")
    tracebacks = output.count("Traceback (most recent call last)")
    log = root / "exchange.jsonl"
    lines, bad = check_log(log) if log.exists() else (0, 0)
    print(
        f"regauth output: {tracebacks} traceback(s); exchange log: {lines} lines, "
        f"{bad} not parsing, {log.stat().st_size / 1e6 if log.exists() else 0:.0f} MB"
    )
    return 0 if errors == 0 and tracebacks == 0 and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
