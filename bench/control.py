"""Control path speed: token requests/s and the gate's latency, against bare mitmdump, in one run.

Usage (from the repository root):

    .venv/bin/python bench/control.py [--seconds 5] [--rounds 3] [--gets 2000] [--clients 8]

Setups (all HTTPS on loopback, mitmdump 12 underneath, each its own process):

  fixed     bare mitmdump with a one-line addon answering every request (`/v2/token`) with a
            fixed body: a real regauth token response of the same size. mitmproxy's cheapest
            possible answer.
  mitmdump  bare `mitmdump --mode reverse:REGISTRY`: the 1 KiB blob GET without any auth.
  regauth   `regauth serve` in enforce mode with its admin listener (metrics) on.
  regauth-nometrics  the same with `--admin-listen off` (the metrics observer is then idle).
  baseline  with `--baseline REGAUTH`: another regauth executable (an earlier commit, installed
            in a venv of its own), admin listener on, for a before/after ratio in one run.

Token throughput: `--clients` keep-alive HTTP/1.1 connections (an asyncio client in this
process) send `GET /v2/token?service=…&scope=repository:public/blob:pull` back to back for
`--seconds` after a one-second warm-up: anonymously, and with Basic credentials (the same
account and password every time: after the first request the login is cached, no bcrypt).
Gate latency: one keep-alive connection GETs a 1 KiB blob `--gets` times (regauth: with a
valid Bearer token; the token cache is warm); p50 and p99 of the wall time per request.

Setups are interleaved round by round; tables show medians over rounds, and every ratio is
taken within this run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from bench import MITMDUMP
from bench import REGAUTH
from bench import BenchError
from bench import Endpoint
from bench import ProxyProcess
from bench import peak_rss_kib
from bench import spawn
from bench import tls_context
from bench import versions
from bench import wait_ready
from bench import workspace
from measure import BLOB
from measure import REPO
from measure import Rate
from measure import blob_latencies
from measure import observer_cost
from measure import percentile
from measure import token_rate

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

SERVICE = "regauth-bench"
ACCOUNT = "bench"

FIXED_ADDON = """
from pathlib import Path
from mitmproxy import http

BODY = Path(__file__).with_name("token-body.json").read_bytes()
HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store",
           "Pragma": "no-cache"}


def requestheaders(flow: http.HTTPFlow) -> None:
    flow.response = http.Response.make(200, BODY, HEADERS)
"""


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
  - comment: anyone reads the public area
    account: any
    repository: "public/**"
    actions: [pull]
"""


# -- setup -----------------------------------------------------------------------------------


def seed_blob(registry: RegistryProcess) -> None:
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    try:
        conn.request("POST", f"/v2/{REPO}/blobs/uploads/", headers={"Content-Length": "0"})
        response = conn.getresponse()
        response.read()
        location = response.headers["Location"]
        separator = "&" if "?" in location else "?"
        conn.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            body=BLOB,
            headers={"Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise BenchError(f"seeding the blob: {response.status}")
    finally:
        conn.close()


@dataclass
class Setup:
    name: str
    proxy: ProxyProcess
    endpoint: Endpoint
    ca: Path


def start(name: str, command: list[str], root: Path, port: int, certs: Path) -> Setup:
    proxy = spawn(name, command, root / name, port)
    endpoint = Endpoint(port, tls_context(certs / pki.CA_CERT), host="localhost")
    wait_ready(endpoint, proxy)
    return Setup(name, proxy, endpoint, certs / pki.CA_CERT)


def regauth_command(
    name: str, upstream: str, port: int, certs: Path, policy: Path, root: Path, admin: str
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
        str(root / name / "exchange.jsonl"),
        "--upstream",
        upstream,
        "--admin-listen",
        admin,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput sample")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gets", type=int, default=2000, help="blob GETs per latency sample")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REGAUTH",
        help="another regauth executable (e.g. an earlier commit installed in "
        "its own venv) measured in the same run as `baseline`, with the "
        "ratio of this regauth to it",
    )
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
    password = secrets.token_urlsafe(18)
    policy = root / "policy.yaml"
    policy.write_text(policy_yaml(hash_password(password, rounds=4)))
    basic = "Basic " + base64.b64encode(f"{ACCOUNT}:{password}".encode()).decode()
    target = "/v2/token?" + urlencode([("service", SERVICE), ("scope", f"repository:{REPO}:pull")])
    with contextlib.ExitStack() as stack:
        registry = RegistryProcess(root / "registry")
        registry.start()
        stack.callback(registry.stop)
        seed_blob(registry)
        setups: dict[str, Setup] = {}
        regauths = [
            ("regauth", "127.0.0.1:0", str(REGAUTH)),
            ("regauth-nometrics", "off", str(REGAUTH)),
        ]
        if args.baseline:
            regauths.append(("baseline", "127.0.0.1:0", args.baseline))
        for name, admin, binary in regauths:
            port = free_port()
            command = regauth_command(name, registry.url, port, certs, policy, root, admin)
            command[0] = binary
            setups[name] = start(name, command, root, port, certs)
            stack.callback(setups[name].proxy.stop)
        # The fixed answer: a real regauth token response, byte for byte the same size.
        conn = setups["regauth"].endpoint.connect()
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        (root / "fixed").mkdir()
        (root / "fixed" / "token-body.json").write_bytes(body)
        (root / "fixed" / "fixed_token.py").write_text(FIXED_ADDON)
        for name, extra in (
            ("fixed", ["-s", str(root / "fixed" / "fixed_token.py")]),
            ("mitmdump", []),
        ):
            port = free_port()
            command = [
                str(MITMDUMP),
                "--mode",
                f"reverse:{registry.url}",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(port),
                "--set",
                f"confdir={certs / pki.PRIVATE_DIR}",
                "--set",
                "connection_strategy=lazy",
                "-q",
                *extra,
            ]
            setups[name] = start(name, command, root, port, certs)
            stack.callback(setups[name].proxy.stop)
        token = json.loads(body)["token"]
        for name in ("regauth", "regauth-nometrics", "baseline"):
            if name in setups:
                setups[name].endpoint.authorization = f"Bearer {token}"
        return measure(args, setups, target, basic)


def measure(args: argparse.Namespace, setups: dict[str, Setup], target: str, basic: str) -> int:
    extra = ("baseline",) if "baseline" in setups else ()
    token_setups = ("fixed", "regauth", "regauth-nometrics", *extra)
    gate_setups = ("mitmdump", "regauth", "regauth-nometrics", *extra)
    rates: dict[tuple[str, str], list[Rate]] = {}
    latency: dict[str, list[tuple[float, float, float]]] = {}
    for round_no in range(1, args.rounds + 1):
        for kind, authorization in (("anonymous", None), ("basic", basic)):
            for name in token_setups:
                setup = setups[name]
                rate = token_rate(
                    setup.proxy.port,
                    setup.proxy.pid,
                    setup.ca,
                    target,
                    authorization,
                    args.clients,
                    args.seconds,
                )
                rates.setdefault((name, kind), []).append(rate)
                print(
                    f"[{round_no}/{args.rounds}] {kind:9} {name:18} {rate.per_second:8.0f} "
                    f"req/s {rate.cpu_us:7.0f} us CPU/req",
                    flush=True,
                )
        for name in gate_setups:
            values, cpu = blob_latencies(setups[name].endpoint, args.gets, setups[name].proxy.pid)
            sample = (percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000, cpu)
            latency.setdefault(name, []).append(sample)
            print(
                f"[{round_no}/{args.rounds}] blob GET  {name:18} p50 {sample[0]:.3f} ms  "
                f"p99 {sample[1]:.3f} ms  {cpu:.0f} us CPU/GET",
                flush=True,
            )
        for setup in setups.values():
            setup.proxy.check_alive()
    print()
    print(report(args, rates, latency, setups))
    return 0


def report(
    args: argparse.Namespace,
    rates: dict[tuple[str, str], list[Rate]],
    latency: dict[str, list[tuple[float, float, float]]],
    setups: dict[str, Setup],
) -> str:
    rps = {key: statistics.median(r.per_second for r in values) for key, values in rates.items()}
    cpu = {key: statistics.median(r.cpu_us for r in values) for key, values in rates.items()}
    lines = [
        f"token requests, {args.clients} keep-alive clients, {args.seconds:g} s per sample, "
        f"medians of {args.rounds} rounds; CPU = the server process's CPU time per request",
        "",
        "| setup | anonymous req/s | vs fixed | CPU us/req | vs fixed (CPU) | "
        "Basic (cached) req/s | vs fixed | CPU us/req | vs fixed (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    token_names = [
        n for n in ("fixed", "regauth", "regauth-nometrics", "baseline") if (n, "anonymous") in rps
    ]
    for name in token_names:
        row = [name]
        for kind in ("anonymous", "basic"):
            row += [
                f"{rps[(name, kind)]:.0f}",
                f"{rps[(name, kind)] / rps[('fixed', kind)]:.2f}",
                f"{cpu[(name, kind)]:.0f}",
                f"{cpu[('fixed', kind)] / cpu[(name, kind)]:.2f}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"1 KiB blob GET, one keep-alive connection, {args.gets} GETs per sample "
        "(medians of the rounds' percentiles)",
        "",
        "| setup | p50 ms | p99 ms | p50 overhead vs mitmdump ms | CPU us/GET | "
        "CPU overhead vs mitmdump us | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]

    def med(name: str, i: int) -> float:
        return statistics.median(sample[i] for sample in latency[name])

    for name in [
        n for n in ("mitmdump", "regauth", "regauth-nometrics", "baseline") if n in latency
    ]:
        rss = peak_rss_kib(setups[name].proxy.pid) / 1024
        lines.append(
            f"| {name} | {med(name, 0):.3f} | {med(name, 1):.3f} | "
            f"{med(name, 0) - med('mitmdump', 0):+.3f} | {med(name, 2):.0f} | "
            f"{med(name, 2) - med('mitmdump', 2):+.0f} | {rss:.1f} |"
        )
    costs = []
    for kind in ("anonymous", "basic"):
        cost = cpu[("regauth", kind)] / cpu[("regauth-nometrics", kind)] - 1
        costs.append(f"{kind} {cost * 100:+.1f} %")
    costs.append(f"blob GET {(med('regauth', 2) / med('regauth-nometrics', 2) - 1) * 100:+.1f} %")
    lines += [
        "",
        "metrics cost (server CPU per request, admin listener on vs off): " + ", ".join(costs),
    ]
    if "baseline" in latency:
        ratios = [
            f"{kind} {rps[('regauth', kind)] / rps[('baseline', kind)]:.2f}x req/s, "
            f"{cpu[('baseline', kind)] / cpu[('regauth', kind)]:.2f}x CPU"
            for kind in ("anonymous", "basic")
        ]
        ratios.append(
            f"blob GET p50 {med('baseline', 0) / med('regauth', 0):.2f}x, "
            f"CPU {med('baseline', 2) / med('regauth', 2):.2f}x"
        )
        lines += ["", "this regauth against the baseline (>1: faster): " + "; ".join(ratios)]
    token_us, gate_us = observer_cost()
    lines += [
        f"metrics observer, timed in process: {token_us:.1f} us per token request "
        f"({token_us / cpu[('regauth', 'anonymous')] * 100:.1f} % of regauth's CPU per "
        f"anonymous token), {gate_us:.1f} us per forwarded GET "
        f"({gate_us / med('regauth', 2) * 100:.1f} % of its CPU per blob GET)"
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
