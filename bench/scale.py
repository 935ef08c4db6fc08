"""Scale-out: 4 parallel blob pushes and pulls through HAProxy to 1 vs 2 regauth replicas.

Usage (from the repository root):

    .venv/bin/python bench/scale.py [--size 256M] [--parallel 4] [--repeat 1]

Each round starts a fresh registry (docker-registry, storage under the work directory), a
Redis, two `regauth serve` replicas (enforce mode, one certs directory, one policy, shared
state in Redis) and HAProxy running deploy/haproxy/haproxy.cfg. In the "1 replica" setup both
HAProxy server lines name replica 1 (same path through HAProxy, one regauth process doing the
work); in "2 replicas" each names its own. `--parallel` client processes then each push one
blob (POST + monolithic PUT streamed from a file, Bearer token from a Basic login) at the same
time, and afterwards pull them back at the same time (GET, hashed and discarded). Aggregate
throughput = all bytes / wall time from the first request to the last byte; MB = 10^6 bytes.
The CPU seconds each process used during the transfers show where the time went.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from bench import REGAUTH
from bench import BenchError
from bench import Blob
from bench import Endpoint
from bench import make_blob
from bench import parse_size
from bench import pull
from bench import push
from bench import spawn
from bench import tls_context
from bench import versions
from bench import wait_ready
from bench import workspace
from measure import cpu_seconds

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

SERVICE = "regauth-scale"
ACCOUNT = "bench"
HAPROXY_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"


def policy_yaml(password_hash: str) -> str:
    return f"""version: 1
service: {SERVICE}
token:
  lifetime: 3600
accounts:
  {ACCOUNT}:
    password_hash: "{password_hash}"
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: the bench account writes its area
    account: {ACCOUNT}
    repository: "bench/**"
    actions: [pull, push]
"""


def token(endpoint: Endpoint, repo: str, password: str) -> str:
    conn = endpoint.connect()
    try:
        query = urlencode([("service", SERVICE), ("scope", f"repository:{repo}:pull,push")])
        basic = base64.b64encode(f"{ACCOUNT}:{password}".encode()).decode()
        conn.request("GET", f"/v2/token?{query}", headers={"Authorization": f"Basic {basic}"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise BenchError(f"token: {response.status} {body[:200]!r}")
    return str(json.loads(body)["token"])


@dataclass(frozen=True)
class Job:
    port: int
    ca: Path
    repo: str
    blob: Blob
    password: str
    direction: str  # push or pull


def run_job(job: Job) -> tuple[float, float]:
    """In a client process: one transfer through HAProxy; returns its seconds and the CPU
    seconds this client used for it (TLS, and hashing on pulls)."""
    endpoint = Endpoint(job.port, tls_context(job.ca), host="localhost")
    endpoint.authorization = f"Bearer {token(endpoint, job.repo, job.password)}"
    cpu = time.process_time()
    if job.direction == "push":
        seconds = push(endpoint, job.repo, job.blob)[0]
    else:
        seconds = pull(endpoint, job.repo, job.blob)
    return seconds, time.process_time() - cpu


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def start_haproxy(
    workdir: Path, front: int, backends: list[tuple[int, int]]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REGAUTH_FRONTEND": f"127.0.0.1:{front}",
        "REGAUTH_STATS": f"127.0.0.1:{free_port()}",
    }
    for i, (port, admin) in enumerate(backends, start=1):
        env[f"REGAUTH_REPLICA_{i}"] = f"127.0.0.1:{port}"
        env[f"REGAUTH_REPLICA_{i}_ADMIN"] = str(admin)
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    time.sleep(3)  # two successful readiness checks (rise 2, inter 1 s)
    if process.poll() is not None:
        raise BenchError(f"haproxy exited:\n{(workdir / 'haproxy.log').read_text()}")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Result:
    push_mbps: float
    pull_mbps: float
    cpu: dict[str, tuple[float, float]]  # process -> (push CPU s, pull CPU s)


def one_setup(
    root: Path, replicas_used: int, blobs: list[Blob], certs: Path, policy: Path, password: str
) -> Result:
    with contextlib.ExitStack() as stack:
        registry = RegistryProcess(root / "registry")
        registry.start()
        stack.callback(shutil.rmtree, root / "registry" / "data", True)
        stack.callback(registry.stop)
        redis_port = free_port()
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        stack.callback(stop, redis)
        front = free_port()
        replicas = []
        for i in (1, 2):
            port, admin = free_port(), free_port()
            command = [
                str(REGAUTH),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--admin-listen",
                f"127.0.0.1:{admin}",
                "--public-url",
                f"https://localhost:{front}",
                "--state",
                f"redis://127.0.0.1:{redis_port}/0",
                "--certs-dir",
                str(certs),
                "--policy",
                str(policy),
                "--log",
                str(root / f"replica{i}" / "exchange.jsonl"),
                "--upstream",
                registry.url,
                # haproxy.cfg sends a PROXY v2 header (send-proxy-v2) from 127.0.0.1
                "--proxy-protocol",
                "127.0.0.1/32",
            ]
            proxy = spawn(f"replica{i}", command, root, port)
            stack.callback(proxy.stop)
            # Not wait_ready: a replica refuses connections from 127.0.0.1 without a header.
            deadline = time.monotonic() + 60
            while "listening at" not in proxy.output_path.read_text(errors="replace"):
                proxy.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"replica{i} did not start:\n{proxy.output_tail()}")
                time.sleep(0.2)
            replicas.append((proxy, port, admin))
        backends = (
            [(replicas[0][1], replicas[0][2])] * 2
            if replicas_used == 1
            else [(port, admin) for _, port, admin in replicas]
        )
        haproxy = start_haproxy(root, front, backends)
        stack.callback(stop, haproxy)
        wait_ready(
            Endpoint(front, tls_context(certs / pki.CA_CERT), host="localhost"), replicas[0][0]
        )  # through HAProxy, with the header
        pids = {
            "registry": registry.process.pid if registry.process else 0,  # type: ignore[union-attr]
            "haproxy": haproxy.pid,
            "replica1": replicas[0][0].pid,
            "replica2": replicas[1][0].pid,
        }
        rates = []
        cpu: dict[str, list[float]] = {
            name: [] for name in (*pids, "clients", "machine cores busy")
        }
        for direction in ("push", "pull"):
            jobs = [
                Job(front, certs / pki.CA_CERT, f"bench/scale-{i}", blob, password, direction)
                for i, blob in enumerate(blobs)
            ]
            with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
                pool.map(time.sleep, [0.5] * len(jobs))  # workers up before the clock starts
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                busy_before, total_before = machine_busy()
                started = time.perf_counter()
                outcomes = pool.map(run_job, jobs)
                elapsed = time.perf_counter() - started
                busy_after, total_after = machine_busy()
            for name, pid in pids.items():
                cpu[name].append(cpu_seconds(pid) - before[name])
            cpu["clients"].append(sum(c for _, c in outcomes))
            # Cores busy on the whole machine (everything running on it, not only this bench).
            cpu["machine cores busy"].append(
                (busy_after - busy_before) / (total_after - total_before) * (os.cpu_count() or 1)
            )
            rates.append(sum(b.size for b in blobs) / elapsed / 1e6)
        for proxy, _, _ in replicas:
            proxy.check_alive()
        return Result(rates[0], rates[1], {k: (v[0], v[1]) for k, v in cpu.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=256 * 1024**2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("haproxy", "redis-server", "docker-registry"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            parser.error(f"{tool} not found (apt-get install haproxy redis-server docker-registry)")
    try:
        with workspace(args.tmpdir, args.keep) as root:
            return run(args, root)
    except BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, root: Path) -> int:
    print(f"workdir {root}; {versions()}; {os.cpu_count()} CPUs", flush=True)
    certs = root / "certs"
    pki.init_certs(certs)
    password = secrets.token_urlsafe(18)
    policy = root / "policy.yaml"
    policy.write_text(policy_yaml(hash_password(password, rounds=4)))
    blobs = [make_blob(root / f"blob-{i}.bin", args.size) for i in range(args.parallel)]
    print(f"{args.parallel} blobs of {args.size / 1024**2:.0f} MiB", flush=True)
    results: dict[int, list[Result]] = {1: [], 2: []}
    for round_no in range(1, args.repeat + 1):
        for used in (1, 2):
            result = one_setup(
                root / f"round{round_no}-{used}", used, blobs, certs, policy, password
            )
            results[used].append(result)
            cpu = ", ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}" for k, v in result.cpu.items())
            print(
                f"[{round_no}/{args.repeat}] {used} replica(s): push {result.push_mbps:.1f} "
                f"MB/s, pull {result.pull_mbps:.1f} MB/s; CPU s push/pull: {cpu}",
                flush=True,
            )
    print()
    med = {
        used: (
            statistics.median(r.push_mbps for r in rs),
            statistics.median(r.pull_mbps for r in rs),
        )
        for used, rs in results.items()
    }
    print(
        f"{args.parallel} parallel transfers of {args.size / 1024**2:.0f} MiB through HAProxy "
        f"(TCP), aggregate MB/s, {args.repeat} round(s){', medians' if args.repeat > 1 else ''}"
    )
    print()
    print("| replicas | push MB/s | pull MB/s | push vs 1 replica | pull vs 1 replica |")
    print("|---|---|---|---|---|")
    for used in (1, 2):
        print(
            f"| {used} | {med[used][0]:.1f} | {med[used][1]:.1f} | "
            f"{med[used][0] / med[1][0]:.2f} | {med[used][1] / med[1][1]:.2f} |"
        )
    print()
    print(
        "CPU seconds per process during the transfers, push/pull, last round (machine cores "
        "busy: the whole machine's average over the transfer, of "
        f"{os.cpu_count()}):"
    )
    for used in (1, 2):
        cpu = results[used][-1].cpu
        print(
            f"  {used} replica(s): "
            + ", ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}" for k, v in cpu.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
