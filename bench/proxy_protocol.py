"""The token path through HAProxy with the PROXY protocol against without, in one run.

Usage (from the repository root):

    .venv/bin/python bench/proxy_protocol.py [--seconds 5] [--rounds 5] [--clients 8]

Setups (each its own `regauth serve`, enforce mode, admin listener on for HAProxy's readiness
checks, and its own HAProxy running deploy/haproxy/haproxy.cfg with both server lines naming
that one replica, as bench/scale.py does for one replica):

  proxy-v2  the shipped config (`send-proxy-v2`) and `regauth serve --proxy-protocol
            127.0.0.1/32`: every connection starts with a PROXY v2 header naming the client
  plain     the shipped config with `send-proxy-v2` taken off its `default-server` line, and
            regauth without --proxy-protocol (the setup before issue 21)

Token throughput, as bench/control.py measures it (measure.token_rate): `--clients` keep-alive
HTTP/1.1 connections through HAProxy send `GET /v2/token?service=…&scope=repository:public/
blob:pull` back to back for `--seconds` after a one-second warm-up, anonymously and with Basic
credentials (one account and password per sample: cached after its first request, no bcrypt);
requests/s and regauth's CPU time per request. Each Basic sample logs in with an account of its
own, so every sample measures the same cached path (a login's first check is bcrypt).

The PROXY header costs once per connection, which keep-alive clients pay once: `--fresh` also
measures one new TLS connection per request (`Connection: close`), where every request pays it.

Setups alternate within each round (the order flips every round); the table shows medians over
rounds and the ratio proxy-v2 / plain of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import ssl
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from bench import REGAUTH
from bench import BenchError
from bench import Endpoint
from bench import ProxyProcess
from bench import spawn
from bench import tls_context
from bench import versions
from bench import wait_ready
from bench import workspace
from control import SERVICE
from measure import REPO
from measure import Rate
from measure import cpu_seconds
from measure import token_rate

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

HAPROXY_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"
SEND_PROXY = " send-proxy-v2"
SETUPS = ("plain", "proxy-v2")
KINDS = ("anonymous", "basic")


def policy_yaml(password_hash: str, accounts: int) -> str:
    """bench/control.py's policy, with `accounts` accounts bench-0, bench-1, ... sharing one
    password: one per Basic sample."""
    names = "".join(
        f'  bench-{i}:\n    password_hash: "{password_hash}"\n' for i in range(accounts)
    )
    return f"""version: 1
service: {SERVICE}
token:
  lifetime: 3600
accounts:
{names}upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: anyone reads the public area
    account: any
    repository: "public/**"
    actions: [pull]
"""


def config_without_send_proxy(text: str) -> str:
    """The shipped config with `send-proxy-v2` taken off its one `default-server` line."""
    lines = text.splitlines(keepends=True)
    found = [
        i
        for i, line in enumerate(lines)
        if line.lstrip().startswith("default-server") and SEND_PROXY in line
    ]
    if len(found) != 1:
        raise BenchError(f"{HAPROXY_CONFIG}: expected one `default-server ... send-proxy-v2` line")
    lines[found[0]] = lines[found[0]].replace(SEND_PROXY, "")
    return "".join(lines)


@dataclass
class Setup:
    name: str
    regauth: ProxyProcess
    haproxy: ProxyProcess
    ca: Path

    @property
    def port(self) -> int:
        return self.haproxy.port


def start_setup(
    name: str, root: Path, registry: RegistryProcess, certs: Path, policy: Path
) -> tuple[Setup, list[ProxyProcess]]:
    """One replica and its HAProxy; both processes are returned for stopping."""
    workdir = root / name
    workdir.mkdir(parents=True)
    port, admin, front = free_port(), free_port(), free_port()
    command = [
        str(REGAUTH),
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-listen",
        f"127.0.0.1:{admin}",
        "--public-url",
        f"https://localhost:{front}",
        "--certs-dir",
        str(certs),
        "--policy",
        str(policy),
        "--log",
        str(workdir / "exchange.jsonl"),
        "--upstream",
        registry.url,
    ]
    if name == "proxy-v2":
        command += ["--proxy-protocol", "127.0.0.1/32"]
        config = HAPROXY_CONFIG
    else:
        config = workdir / "haproxy.cfg"
        config.write_text(config_without_send_proxy(HAPROXY_CONFIG.read_text()))
    regauth = spawn(f"regauth-{name}", command, workdir, port)
    started = [regauth]
    os.environ.update(
        {"REGAUTH_FRONTEND": f"127.0.0.1:{front}", "REGAUTH_STATS": f"127.0.0.1:{free_port()}"}
    )
    for i in (1, 2):  # both server lines: the one replica
        os.environ[f"REGAUTH_REPLICA_{i}"] = f"127.0.0.1:{port}"
        os.environ[f"REGAUTH_REPLICA_{i}_ADMIN"] = str(admin)
    haproxy_binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    haproxy = spawn(f"haproxy-{name}", [haproxy_binary, "-db", "-f", str(config)], workdir, front)
    started.append(haproxy)
    ca = certs / pki.CA_CERT
    deadline = time.monotonic() + 60
    while "listening at" not in regauth.output_path.read_text(errors="replace"):
        regauth.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"regauth-{name} did not start:\n{regauth.output_tail()}")
        time.sleep(0.2)
    wait_ready(Endpoint(front, tls_context(ca), host="localhost"), haproxy)  # through HAProxy
    regauth.check_alive()
    return Setup(name, regauth, haproxy, ca), started


# -- one new connection per request ----------------------------------------------------------


async def _fresh_client(
    port: int,
    context: ssl.SSLContext,
    request: bytes,
    until: float,
    measure_from: float,
    statuses: Counter[int],
) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if started >= measure_from:
            statuses[int(head[9:12])] += 1


def fresh_rate(
    port: int,
    pid: int,
    ca: Path,
    target: str,
    authorization: str | None,
    clients: int,
    seconds: float,
) -> Rate:
    """Like measure.token_rate, but every request on a new TLS connection
    (`Connection: close`): requests/s and the server's CPU time per request."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: localhost:{port}",
        "User-Agent: regauth-bench",
        "Connection: close",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    statuses: Counter[int] = Counter()
    cpu: list[float] = []

    async def run() -> None:
        start = time.perf_counter()
        asyncio.get_running_loop().call_later(1, lambda: cpu.append(cpu_seconds(pid)))
        await asyncio.gather(
            *(
                _fresh_client(port, context, request, start + 1 + seconds, start + 1, statuses)
                for _ in range(clients)
            )
        )
        cpu.append(cpu_seconds(pid))

    asyncio.run(run())
    if set(statuses) != {200}:
        raise BenchError(f"token requests on port {port}: statuses {dict(statuses)}")
    count = sum(statuses.values())
    return Rate(count / seconds, (cpu[1] - cpu[0]) / max(1, count) * 1e6)


# -- the PROXY protocol code, timed in process -----------------------------------------------


def in_process_cost(repeat: int = 20000) -> tuple[float, float]:
    """Microseconds regauth's PROXY protocol code costs per connection (the trust check,
    reading a v2 header byte by byte through its fixed part as `proxy_header._accept` does,
    wrapping the writer) and per request (the `via` hook, and three writer calls through the
    wrapper), timed in this process: what the wall-clock columns cannot resolve."""
    from mitmproxy.test import tflow
    from mitmproxy.utils import human

    from regauth.mitm.patches import proxy_header

    header = (
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
        + bytes([127, 0, 0, 2, 127, 0, 0, 1])
        + (40000).to_bytes(2, "big")
        + (443).to_bytes(2, "big")
    )
    networks = proxy_header.parse_networks("127.0.0.1/32")

    class Writer:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 5000) if name == "peername" else default

        def write(self, data: bytes) -> None:
            pass

    async def connections() -> float:
        started = time.perf_counter()
        for _ in range(repeat):
            reader = asyncio.StreamReader()
            reader.feed_data(header + b"\x16\x03\x01")
            writer = Writer()
            peer = writer.get_extra_info("peername")
            assert proxy_header.is_trusted(str(peer[0]), networks)
            parsed = await proxy_header.read_header(reader)
            assert parsed.source is not None
            proxy_header._Peer(
                writer, (proxy_header.plain_address(parsed.source[0]), parsed.source[1])
            )
            proxy_header._via.set(human.format_address(peer))
        return (time.perf_counter() - started) / repeat * 1e6

    per_connection = asyncio.run(connections())
    addon = proxy_header.ProxyHeaders()
    flow = tflow.tflow()
    wrapped = proxy_header._Peer(Writer(), ("127.0.0.2", 40000))
    proxy_header._via.set("127.0.0.1:5000")
    started = time.perf_counter()
    for _ in range(repeat):
        addon.requestheaders(flow)
        for _ in range(3):
            wrapped.write(b"")
    per_request = (time.perf_counter() - started) / repeat * 1e6
    return per_connection, per_request


# -- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput sample")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--fresh", action="store_true", help="also measure one new TLS connection per request"
    )
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("haproxy", "docker-registry"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            parser.error(f"{tool} not found (apt-get install haproxy docker-registry)")
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
    measures = [("keep-alive", token_rate)] + ([("fresh", fresh_rate)] if args.fresh else [])
    samples = args.rounds * len(measures) * len(SETUPS)  # Basic samples: an account each
    policy = root / "policy.yaml"
    policy.write_text(policy_yaml(hash_password(password, rounds=4), samples))
    accounts = iter(range(samples))
    target = "/v2/token?" + urlencode([("service", SERVICE), ("scope", f"repository:{REPO}:pull")])
    with contextlib.ExitStack() as stack:
        registry = RegistryProcess(root / "registry")
        registry.start()
        stack.callback(registry.stop)
        setups: dict[str, Setup] = {}
        for name in SETUPS:
            setup, started = start_setup(name, root, registry, certs, policy)
            for process in started:
                stack.callback(process.stop)
            setups[name] = setup
        rates: dict[tuple[str, str, str], list[Rate]] = {}
        for round_no in range(1, args.rounds + 1):
            order = SETUPS if round_no % 2 else tuple(reversed(SETUPS))
            for measure_name, measure in measures:
                for kind in KINDS:
                    for name in order:
                        setup = setups[name]
                        basic = None
                        if kind == "basic":
                            basic = (
                                "Basic "
                                + base64.b64encode(
                                    f"bench-{next(accounts)}:{password}".encode()
                                ).decode()
                            )
                        rate = measure(
                            setup.port,
                            setup.regauth.pid,
                            setup.ca,
                            target,
                            basic,
                            args.clients,
                            args.seconds,
                        )
                        rates.setdefault((measure_name, kind, name), []).append(rate)
                        print(
                            f"[{round_no}/{args.rounds}] {measure_name:10} {kind:9} "
                            f"{name:8} {rate.per_second:8.0f} req/s {rate.cpu_us:7.0f} us "
                            "regauth CPU/req",
                            flush=True,
                        )
            for setup in setups.values():
                setup.regauth.check_alive()
                setup.haproxy.check_alive()
        print()
        print(report(args, rates, [m for m, _ in measures]))
    per_connection, per_request = in_process_cost()
    print(
        f"\nPROXY protocol code, timed in process: {per_connection:.1f} us per connection "
        f"(trust check, v2 header read, writer wrapped), {per_request:.2f} us per request "
        "(the via hook, three writer calls through the wrapper)"
    )
    return 0


def report(
    args: argparse.Namespace, rates: dict[tuple[str, str, str], list[Rate]], measures: list[str]
) -> str:
    rps = {key: statistics.median(r.per_second for r in values) for key, values in rates.items()}
    cpu = {key: statistics.median(r.cpu_us for r in values) for key, values in rates.items()}
    lines = [
        f"token requests through HAProxy (TCP), {args.clients} clients, {args.seconds:g} s "
        f"per sample, medians of {args.rounds} rounds; CPU = regauth's CPU time per "
        "request; ratio = proxy-v2 / plain (req/s), plain / proxy-v2 (CPU), of the "
        "medians and (paired) the median of each round's ratio",
        "",
        "| connections | token request | plain req/s | proxy-v2 req/s | ratio | "
        "paired | plain CPU us/req | proxy-v2 CPU us/req | ratio (CPU) | paired (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for measure in measures:
        for kind in KINDS:
            plain, proxied = (measure, kind, "plain"), (measure, kind, "proxy-v2")
            pairs = list(zip(rates[plain], rates[proxied], strict=True))
            paired = statistics.median(b.per_second / a.per_second for a, b in pairs)
            paired_cpu = statistics.median(a.cpu_us / b.cpu_us for a, b in pairs)
            label = "Basic (cached)" if kind == "basic" else kind
            lines.append(
                f"| {measure} | {label} | {rps[plain]:.0f} | {rps[proxied]:.0f} | "
                f"{rps[proxied] / rps[plain]:.2f} | {paired:.2f} | {cpu[plain]:.0f} | "
                f"{cpu[proxied]:.0f} | {cpu[plain] / cpu[proxied]:.2f} | "
                f"{paired_cpu:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
