"""Client certificates (mutual TLS) against none, on one regauth, in one run (issue 23).

Usage (from the repository root):

    .venv/bin/python bench/client_certs.py [--seconds 5] [--rounds 5] [--clients 8] [--gets 2000]

One `regauth serve` (enforce mode, policy of bench/control.py plus `builds/${build}`) in front
of a local distribution; every client decides for itself whether it presents a certificate of
`regauth certs client --build b1`, so both variants meet the same process:

- token requests/s (measure.token_rate's load: `--clients` keep-alive HTTP/1.1 connections
  sending `GET /v2/token?…scope=repository:public/blob:pull` back to back), without and with a
  certificate, and the same with one new TLS connection per request (`fresh`: every request
  pays the handshake, and with a certificate its verification);
- blob GET latency on one keep-alive connection (measure.blob_latencies): with a Bearer token
  and no certificate (today), with a certificate and the same token, and with a certificate
  and no token (the certificate is the credential: `gate._by_certificate`).

Variants alternate within each round (the order flips every round); the table shows medians
over rounds and the ratio to the variant without a certificate, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import measure
from bench import REGAUTH
from bench import BenchError
from bench import Endpoint
from bench import spawn
from bench import versions
from bench import wait_ready
from bench import workspace
from control import SERVICE
from control import seed_blob
from measure import REPO
from measure import blob_latencies
from measure import cpu_seconds
from measure import percentile

from regauth.mtls.identity import parse_subject
from regauth.ops import client_ca
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

POLICY = f"""version: 1
service: {SERVICE}
token:
  lifetime: 3600
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: anyone reads the public area
    account: any
    repository: "public/**"
    actions: [pull]
  - comment: a build owns builds/ID
    account: any
    repository: ["builds/${{build}}", "builds/${{build}}/**"]
    actions: [pull, push]
"""


def context(ca: Path, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["http/1.1"])
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def token_rate(
    port: int, pid: int, ctx: ssl.SSLContext, target: str, clients: int, seconds: float
) -> tuple[float, float]:
    """Keep-alive clients (measure.token_rate with this context): req/s, CPU µs per request."""
    rate = measure.token_rate(port, pid, Path(), target, None, clients, seconds, ctx)
    return rate.per_second, rate.cpu_us


def fresh_rate(
    port: int, pid: int, ctx: ssl.SSLContext, target: str, clients: int, seconds: float
) -> tuple[float, float]:
    """One new TLS connection per request (`Connection: close`), `clients` in parallel."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    ).encode()
    done = 0
    statuses: set[int] = set()

    async def one(until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            writer.write(request)
            data = await reader.read()
            statuses.add(int(data[9:12]))
            writer.close()
            done += 1

    async def run() -> tuple[float, float]:
        await asyncio.gather(*(one(time.perf_counter() + 1) for _ in range(clients)))  # warm-up
        nonlocal done
        done = 0
        before = cpu_seconds(pid)
        await asyncio.gather(*(one(time.perf_counter() + seconds) for _ in range(clients)))
        return done / seconds, (cpu_seconds(pid) - before) / max(1, done) * 1e6

    rate = asyncio.run(run())
    if statuses != {200}:
        raise BenchError(f"fresh token requests: statuses {statuses}")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
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
    issued = client_ca.issue_client_certificate(
        certs, parse_subject("build", "b1"), dt.timedelta(hours=2)
    )
    (root / "client.cert").write_bytes(issued.cert_pem)
    (root / "client.key").write_bytes(issued.key_pem)
    pair = (root / "client.cert", root / "client.key")
    ca = certs / pki.CA_CERT
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    target = "/v2/token?" + urlencode([("service", SERVICE), ("scope", f"repository:{REPO}:pull")])
    with contextlib.ExitStack() as stack:
        registry = RegistryProcess(root / "registry")
        registry.start()
        stack.callback(registry.stop)
        seed_blob(registry)
        port = free_port()
        command = [
            str(REGAUTH), "serve", "--listen", f"127.0.0.1:{port}", "--certs-dir", str(certs),
            "--policy", str(policy), "--log", str(root / "exchange.jsonl"), "--upstream",
            registry.url, "--admin-listen", "off",
        ]  # fmt: skip
        proxy = spawn("regauth", command, root / "regauth", port)
        stack.callback(proxy.stop)
        plain = Endpoint(port, context(ca, None), host="localhost")
        wait_ready(plain, proxy)
        conn = plain.connect()
        conn.request("GET", target)
        token = json.loads(conn.getresponse().read())["token"]
        conn.close()
        bearer = f"Bearer {token}"
        contexts = {"none": context(ca, None), "certificate": context(ca, pair)}
        endpoints = {
            "token, no certificate": Endpoint(port, contexts["none"], "localhost", bearer),
            "token + certificate": Endpoint(port, contexts["certificate"], "localhost", bearer),
            "certificate only": Endpoint(port, contexts["certificate"], "localhost", None),
        }
        rates: dict[str, list[tuple[float, float]]] = {}
        latency: dict[str, list[tuple[float, float, float]]] = {}
        for round_no in range(args.rounds):
            order = list(contexts) if round_no % 2 == 0 else list(reversed(contexts))
            for name in order:
                for kind, measure in (("keep-alive", token_rate), ("fresh", fresh_rate)):
                    value = measure(
                        port, proxy.pid, contexts[name], target, args.clients, args.seconds
                    )
                    rates.setdefault(f"{kind} {name}", []).append(value)
                    print(
                        f"[{round_no + 1}/{args.rounds}] tokens {kind} {name}: "
                        f"{value[0]:.0f} req/s {value[1]:.0f} us CPU/req",
                        flush=True,
                    )
            names = list(endpoints) if round_no % 2 == 0 else list(reversed(endpoints))
            for name in names:
                values, cpu = blob_latencies(endpoints[name], args.gets, proxy.pid)
                sample = (percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3, cpu)
                latency.setdefault(name, []).append(sample)
                print(
                    f"[{round_no + 1}/{args.rounds}] blob GET {name}: p50 {sample[0]:.3f} ms "
                    f"p99 {sample[1]:.3f} ms {cpu:.0f} us CPU",
                    flush=True,
                )
        print(report(args, rates, latency))
    return 0


def report(
    args: argparse.Namespace,
    rates: dict[str, list[tuple[float, float]]],
    latency: dict[str, list[tuple[float, float, float]]],
) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    lines = [
        "",
        f"token requests, {args.clients} clients, {args.seconds:g} s per sample, medians of "
        f"{args.rounds} rounds; CPU = regauth's CPU time per request",
        "",
        "| connection | certificate | req/s | vs none | CPU us/req | vs none (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("keep-alive", "fresh"):
        base_rate = med([r for r, _ in rates[f"{kind} none"]])
        base_cpu = med([c for _, c in rates[f"{kind} none"]])
        for name in ("none", "certificate"):
            rate = med([r for r, _ in rates[f"{kind} {name}"]])
            cpu = med([c for _, c in rates[f"{kind} {name}"]])
            lines.append(
                f"| {kind} | {name} | {rate:.0f} | {rate / base_rate:.2f} | {cpu:.0f} | "
                f"{base_cpu / cpu:.2f} |"
            )
    lines += [
        "",
        f"1 KiB blob GET, one keep-alive connection, {args.gets} GETs per sample (medians)",
        "",
        "| credential | p50 ms | p99 ms | p50 vs token only | CPU us/GET |",
        "|---|---|---|---|---|",
    ]
    base = med([p50 for p50, _, _ in latency["token, no certificate"]])
    for name, samples in latency.items():
        p50 = med([s[0] for s in samples])
        p99 = med([s[1] for s in samples])
        cpu = med([s[2] for s in samples])
        lines.append(f"| {name} | {p50:.3f} | {p99:.3f} | {base / p50:.2f} | {cpu:.0f} |")
    lines.append("\n(ratios > 1: faster than without a certificate)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
