"""What each resource attack of issue 20 costs regauth, and what a legitimate client sees.

Usage (from the repository root):

    .venv/bin/python bench/attacks.py [--seconds 10] [--keep]

One `regauth serve` (enforce mode, `regauth_body_timeout=3`, `regauth_token_body_timeout=3`)
in front of a docker-registry on loopback. For each attack, from its own loopback addresses,
a legitimate client (tests/support/legit.py, from 127.0.0.200) asks for a token every 0.2 s
on a fresh TLS connection and pushes one small image (two blobs, a manifest) meanwhile:

  idle          nothing else (the baseline every ratio is taken against)
  head-lines    4 HTTP/1.1 connections sending header lines without end
  head-line     4 HTTP/1.1 connections sending one request line without end
  continuation  4 HTTP/2 connections sending CONTINUATION frames without end
  rapid-reset   3 addresses opening and resetting HTTP/2 streams, reconnecting when closed
  slow-bodies   20 connections trickling a token form or an upload chunk, 1 byte a second

Columns: the legitimate client's token p50 and p99 (ms) and the ratio of its p99 to the idle
one, its push time (s), regauth's RSS growth over the attack (MiB), regauth's CPU seconds
during the attack and in the 5 s after it (work left behind), and what the attack achieved
(bytes sent before regauth closed it, streams reset, connections closed).

The attacks are tests/support/dos.py, shared with tests/integration/test_resource_bounds.py:
the tests assert bounds with margins, this prints the measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.support

from bench import REGAUTH
from bench import ProxyProcess
from bench import spawn
from bench import versions
from bench import workspace
from tests.support import dos
from tests.support.legit import LegitClient

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

SERVICE = "regauth-bench"
PASSWORD = "bench-attack-password"


def policy(password_hash: str) -> str:
    return f"""version: 1
service: {SERVICE}
accounts:
  bench:
    password_hash: "{password_hash}"
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: the legitimate client's area
    account: bench
    repository: "bench/**"
    actions: [pull, push]
  - comment: anyone reads public/ (what the rapid-reset streams ask for)
    account: any
    repository: "public/**"
    actions: [pull]
"""


def _threads(targets: list[Callable[[], object]]) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def attacks(port: int, ca: Path, seconds: float) -> dict[str, Callable[[list[str]], None]]:
    def head(shape: str) -> Callable[[list[str]], None]:
        def run(notes: list[str]) -> None:
            sent: list[int] = []
            _threads(
                [
                    lambda n=n: sent.append(
                        dos.head_flood(port, ca, shape, seconds, f"127.0.11.{n + 1}")[0]
                    )
                    for n in range(4)
                ]
            )
            notes.append(f"{max(sent)} B sent at most before the close")

        return run

    def continuation(notes: list[str]) -> None:
        sent: list[int] = []
        _threads(
            [
                lambda n=n: sent.append(
                    dos.continuation_flood(port, ca, seconds, f"127.0.12.{n + 1}")[0]
                )
                for n in range(4)
            ]
        )
        notes.append(f"{max(sent)} B sent at most before GOAWAY")

    def rapid_reset(notes: list[str]) -> None:
        outcomes: list[dict[str, int]] = []
        _threads(
            [
                lambda n=n: outcomes.append(
                    dos.rapid_reset(port, ca, seconds, f"127.0.13.{n + 1}", SERVICE)
                )
                for n in range(3)
            ]
        )
        notes.append(
            f"{sum(o['streams'] for o in outcomes)} streams reset on "
            f"{sum(o['connections'] for o in outcomes)} connections"
        )

    def slow_bodies(notes: list[str]) -> None:
        head = (
            b"POST /v2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
        )
        closed: list[float | None] = []

        def one(n: int) -> None:
            sock = dos.tls_socket(port, ca, source=f"127.0.14.{n + 1}")
            try:
                closed.append(dos.trickle(sock, head, 1.0, seconds + 5))
            finally:
                sock.close()

        _threads([lambda n=n: one(n) for n in range(20)])
        done = [c for c in closed if c is not None]
        notes.append(
            f"{len(done)}/20 closed, after {statistics.median(done):.1f} s median"
            if done
            else "none closed"
        )

    return {
        "idle": lambda notes: time.sleep(seconds),
        "head-lines": head("header lines"),
        "head-line": head("one endless line"),
        "continuation": continuation,
        "rapid-reset": rapid_reset,
        "slow-bodies": slow_bodies,
    }


def measure(
    proxy: ProxyProcess, ca: Path, name: str, attack: Callable[[list[str]], None], round_: int
) -> list[str]:
    notes: list[str] = []
    client = LegitClient(proxy.port, ca, SERVICE, ("bench", PASSWORD), f"bench/{name}-{round_}")
    client.token(f"repository:{client.repository}:pull")  # the bcrypt check, outside the figures
    client.token_seconds.clear()
    rss, cpu = dos.rss_mib(proxy.pid), dos.cpu_seconds(proxy.pid)
    client.during(lambda: attack(notes))
    during = dos.cpu_seconds(proxy.pid) - cpu
    growth = dos.rss_mib(proxy.pid) - rss
    time.sleep(5)
    after = dos.cpu_seconds(proxy.pid) - cpu - during
    median = statistics.median(client.token_seconds) if client.token_seconds else float("nan")
    push = f"{client.push_seconds:.2f}" if client.push_seconds is not None else "failed"
    return [
        name,
        f"{median * 1000:.0f}",
        f"{client.p99 * 1000:.0f}",
        "",
        push,
        f"{growth:+.1f}",
        f"{during:.1f}",
        f"{after:.2f}",
        f"{len(client.failures)} failed; " + "; ".join(notes),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each attack")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    with workspace(None, args.keep) as root:
        certs = root / "certs"
        pki.init_certs(certs)
        policy_path = root / "policy.yaml"
        policy_path.write_text(policy(hash_password(PASSWORD, rounds=10)))
        registry = RegistryProcess(root / "registry")
        registry.start()
        port = free_port()
        proxy = spawn(
            "regauth",
            [
                str(REGAUTH),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--certs-dir",
                str(certs),
                "--policy",
                str(policy_path),
                "--log",
                str(root / "exchange.jsonl"),
                "--registry-dir",
                str(root / "unused"),
                "--upstream",
                registry.url,
                "--admin-listen",
                "off",
                "--",
                "--set",
                "regauth_body_timeout=3",
                "--set",
                "regauth_token_body_timeout=3",
            ],
            root,
            port,
        )
        try:
            deadline = time.monotonic() + 60
            while "listening at" not in proxy.output_tail(200):
                proxy.check_alive()
                if time.monotonic() > deadline:
                    raise SystemExit("regauth did not start")
                time.sleep(0.2)
            ca = certs / pki.CA_CERT
            rows = [
                measure(proxy, ca, name, attack, 0)
                for name, attack in attacks(port, ca, args.seconds).items()
            ]
        finally:
            proxy.stop()
            with contextlib.suppress(Exception):
                registry.stop()
    idle = float(rows[0][2]) or 1.0
    for row in rows:
        row[3] = f"{float(row[2]) / idle:.2f}"
    header = [
        "attack",
        "token p50 ms",
        "token p99 ms",
        "p99 vs idle",
        "push s",
        "RSS MiB",
        "CPU s during",
        "CPU s after",
        "notes",
    ]
    print(f"# {versions()}; {args.seconds:g} s per attack")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
