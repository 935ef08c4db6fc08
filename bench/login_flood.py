"""Login flood: how long a correct password waits while wrong ones flood the bcrypt threads.

Usage (from the repository root):

    .venv/bin/python bench/login_flood.py [--cost 12] [--networks 8] [--per-network 30]
                                          [--rounds 3] [--idle 5] [--known] [--keep]

The attack of issue 20 item 7, against `regauth serve` (enforce mode) and a docker-registry
on loopback: each round, `--per-network` concurrent wrong-password logins (GET /v2/token with
Basic, a new unknown account name each) from each of `--networks` source addresses (a
fresh block per round, 127.0.R.2 onwards, so no network's own failed-login limit, 30 a
minute, ends the attack early). All attackers finish their TLS handshakes first and then
send at once. 0.5 s later the legitimate client (127.1.0.R) starts logging in, one login after
the other until the flood is answered, each with an account that has not logged in in the
last minute (so every login is a bcrypt check, never the 60 s cache). Before each round,
`--idle` logins of the same kind are timed with nothing else running. With `--known`, every
account first logs in once from the client's address, a minute before the rounds start: the
logins measured are then those of known pairs (the login queue's first lane); without it,
each account's first login ever (a new network: the round robin of the other lane).

The attack itself is tests/support/login_flood.py, shared with the acceptance test
(tests/integration/test_login_flood.py), so this prints what that test bounds: the test
asserts the wait behind at most one guess per network; here are the measurements.

Columns: the legitimate login's wait (request line to last byte, one keep-alive connection)
p50, p99 and max over all rounds, idle and under attack, and the ratio of the two p50s;
"guesses ahead" is how many of the attackers' bcrypt checks finished while a legitimate login
waited (median and max); "check" is one bcrypt in regauth during the flood (the flood's
duration × 2 threads / the checks made meanwhile, guesses and legitimate logins), and "in
checks" divides a wait by it (idle: by the idle p50), so a loaded machine's slower checks do
not hide the queue's effect. The attackers' statuses: 401 (checked, counted as a failed
login) and 429 (refused at once by the login queue, not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import ssl
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from bench import REGAUTH
from bench import BenchError
from bench import Endpoint
from bench import ProxyProcess
from bench import spawn
from bench import tls_context
from bench import versions
from bench import wait_ready
from bench import workspace

from regauth.logins.credentials import hash_password
from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

# The attack is the acceptance test's: import it from the repository's test support.
sys.path.append(str(Path(__file__).resolve().parents[1]))
from tests.support.login_flood import Flood
from tests.support.login_flood import Timed
from tests.support.login_flood import connect
from tests.support.login_flood import percentile
from tests.support.login_flood import timed_token

SERVICE = "regauth-bench"
SCOPE = "repository:public/app:pull"
WORKERS = 2  # regauth's login threads (regauth.login_queue.WORKERS)


def policy_yaml(password_hash: str, accounts: int) -> str:
    """`accounts` accounts with the same password (each logs in once: never cached)."""
    lines = [f'  legit-{n}:\n    password_hash: "{password_hash}"' for n in range(accounts)]
    return f"""version: 1
service: {SERVICE}
token:
  lifetime: 3600
accounts:
{chr(10).join(lines)}
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: anyone reads the public area
    account: any
    repository: "public/**"
    actions: [pull]
"""


ACCOUNTS_PER_ROUND = 40


class Accounts:
    """Hands out, per round, account names that have not logged in within the minute."""

    def __init__(self, password: str, rounds: int) -> None:
        self.password = password
        self.total = rounds * ACCOUNTS_PER_ROUND
        self.used = [0] * rounds

    def all_of(self, round_no: int) -> list[tuple[str, str]]:
        first = (round_no - 1) * ACCOUNTS_PER_ROUND
        return [(f"legit-{n}", self.password) for n in range(first, first + ACCOUNTS_PER_ROUND)]

    def next(self, round_no: int) -> tuple[str, str]:
        used = self.used[round_no - 1]
        if used >= ACCOUNTS_PER_ROUND:
            raise BenchError("out of fresh accounts: raise ACCOUNTS_PER_ROUND")
        self.used[round_no - 1] += 1
        return self.all_of(round_no)[used]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost of the accounts")
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--per-network", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=5, help="idle logins timed per round")
    parser.add_argument(
        "--known",
        action="store_true",
        help="measure known pairs (each account logged in from the client's "
        "address a minute before)",
    )
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.networks <= 250 or args.rounds < 1 or args.idle < 1:
        parser.error("--networks must be 1..250, --rounds and --idle at least 1")
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
    accounts = Accounts(password, args.rounds)
    policy = root / "policy.yaml"
    policy.write_text(policy_yaml(hash_password(password, rounds=args.cost), accounts.total))
    with contextlib.ExitStack() as stack:
        registry = RegistryProcess(root / "registry")
        registry.start()
        stack.callback(registry.stop)
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
                str(policy),
                "--log",
                str(root / "exchange.jsonl"),
                "--upstream",
                registry.url,
                "--admin-listen",
                "off",
            ],
            root / "regauth",
            port,
        )
        stack.callback(proxy.stop)
        wait_ready(Endpoint(port, tls_context(certs / pki.CA_CERT), host="localhost"), proxy)
        return measure(args, proxy, certs / pki.CA_CERT, accounts)


def measure(args: argparse.Namespace, proxy: ProxyProcess, ca: Path, accounts: Accounts) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    idle: list[float] = []
    attacked: list[float] = []
    ahead: list[int] = []
    checks: list[float] = []
    statuses: Counter[int | None] = Counter()
    if args.known:
        for round_no in range(1, args.rounds + 1):
            legit = connect(proxy.port, context, f"127.1.0.{round_no}")
            for credentials in accounts.all_of(round_no):
                _login(legit, credentials)
            legit.close()
        print(
            f"{accounts.total} accounts logged in once; waiting 61 s for the login cache to "
            "forget them (the networks stay known for 24 h)",
            flush=True,
        )
        time.sleep(61)
    for round_no in range(1, args.rounds + 1):
        legit = connect(proxy.port, context, f"127.1.0.{round_no}")
        try:
            for _ in range(args.idle):
                idle.append(_login(legit, accounts.next(round_no)).seconds)
            sources = [f"127.0.{round_no}.{2 + n}" for n in range(args.networks)]
            flood = Flood(proxy.port, ca, SERVICE, sources, args.per_network, SCOPE)
            flood.start()
            time.sleep(0.5)
            timed = []
            while flood.running:
                timed.append(_login(legit, accounts.next(round_no)))
            result = flood.join()
        finally:
            legit.close()
        proxy.check_alive()
        statuses.update(result.statuses)
        # Both threads were busy from the barrier to the last answer: with the guesses, and
        # with the legitimate logins made meanwhile.
        checks.append(result.seconds * WORKERS / (result.statuses[401] + len(timed)))
        attacked += [t.seconds for t in timed]
        ahead += [result.between(t.started, t.ended, 401) for t in timed]
        print(
            f"[{round_no}/{args.rounds}] idle p50 {percentile(idle, 0.5):.2f} s; under "
            f"attack {len(timed)} logins, max {max(t.seconds for t in timed):.2f} s, "
            f"at most {max(ahead)} guesses ahead; attackers {dict(result.statuses)} in "
            f"{result.seconds:.1f} s",
            flush=True,
        )
    print()
    print(report(args, idle, attacked, ahead, checks, statuses))
    return 0


def _login(conn: http.client.HTTPSConnection, credentials: tuple[str, str]) -> Timed:
    timed = timed_token(conn, SERVICE, SCOPE, credentials)
    if timed.status != 200:
        raise BenchError(f"a legitimate login got {timed.status}: {timed.body[:200]!r}")
    return timed


def report(
    args: argparse.Namespace,
    idle: list[float],
    attacked: list[float],
    ahead: list[int],
    checks: list[float],
    statuses: Counter[int | None],
) -> str:
    kind = (
        "known pairs (logged in from there before)"
        if args.known
        else "first logins (a new network)"
    )
    lines = [
        f"bcrypt cost {args.cost}; {args.networks} networks x {args.per_network} "
        f"concurrent wrong passwords per round, {args.rounds} rounds; legitimate logins: "
        f"{kind}; one check in regauth during the floods: "
        f"{statistics.median(checks):.3f} s (median)",
        "",
        "| legitimate login | samples | p50 s | p99 s | max s | vs idle (p50) | "
        "p50 / p99 in checks | guesses ahead (median / max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = percentile(idle, 0.5)
    for name, values, guesses, check in (
        ("idle", idle, None, base),
        ("under attack", attacked, ahead, statistics.median(checks)),
    ):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        ahead_text = f"{statistics.median(guesses):.0f} / {max(guesses)}" if guesses else "-"
        lines.append(
            f"| {name} | {len(values)} | {p50:.2f} | {p99:.2f} | {max(values):.2f} | "
            f"{p50 / base:.2f} | {p50 / check:.1f} / {p99 / check:.1f} | "
            f"{ahead_text} |"
        )
    lines += [
        "",
        f"attackers' answers: {dict(statuses)} (401: checked and counted; 429: "
        "refused at once by the login queue, not counted)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
