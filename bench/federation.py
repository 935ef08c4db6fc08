"""Federated logins (an OIDC ID token as the password) against password logins, in one run
(issue 24).

Usage (from the repository root):

    .venv/bin/python bench/federation.py [--seconds 5] [--rounds 5] [--clients 4]

One `regauth serve` (enforce mode) in front of a local distribution, with an account `ci`
(bcrypt cost 10) and a federated issuer whose key set is a local file (RS256, 2048-bit key; a
key set fetched over https is cached the same way, so the file takes the network out of the
measurement). Keep-alive clients send `GET /v2/token` back to back (measure.token_rate), 4 by
default: ID-token logins go through the login queue, which admits 4 at a time from one client
address (more get `429`, as a flooding client should):

- `password (cached)`: Basic `ci:PASSWORD`; after the first bcrypt check the authenticator's
  memo answers on the event loop (README "Login limits");
- `ID token`: Basic `oidc:ID_TOKEN`; every login verifies the token's RS256 signature and
  claims on the login queue's worker threads (nothing is memoized: each token is checked);
- `anonymous`: no credentials, for scale.

Variants alternate within each round (the order flips every round); the table shows medians
over rounds and the ratio to the cached password login, measured in the same run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import bcrypt
import jwt
import measure
from bench import BenchError
from bench import Endpoint
from bench import regauth_command
from bench import spawn
from bench import tls_context
from bench import versions
from bench import wait_ready
from bench import workspace
from control import SERVICE
from cryptography.hazmat.primitives.asymmetric import rsa
from measure import REPO

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port

ISSUER = "https://ci.bench.test"
AUDIENCE = "https://registry.bench.test"
PASSWORD = "bench-password-1"


def policy(hashed: str) -> str:
    return f"""version: 1
service: {SERVICE}
token:
  lifetime: 3600
accounts:
  ci:
    password_hash: "{hashed}"
federated_issuers:
  - name: ci
    issuer: {ISSUER}
    audience: {AUDIENCE}
    jwks_file: jwks.json
    subject: "ci:{{repository}}"
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: anyone reads the public area
    account: any
    repository: "public/**"
    actions: [pull]
  - comment: CI's own repository
    issuer: ci
    claims:
      repository: "acme/*"
    repository: "${{claims.repository}}"
    actions: [pull, push]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
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
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="bench", use="sig", alg="RS256")
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    id_token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "repo:acme/app", "repository": "acme/app",
         "iat": now, "nbf": now, "exp": now + 3600, "jti": uuid.uuid4().hex},
        key, algorithm="RS256", headers={"kid": "bench"},
    )  # fmt: skip
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    (root / "policy.yaml").write_text(policy(hashed))
    ca = certs / pki.CA_CERT
    target = "/v2/token?" + urlencode([("service", SERVICE), ("scope", f"repository:{REPO}:pull")])

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    variants = {
        "password (cached)": basic("ci", PASSWORD),
        "ID token": basic("oidc", id_token),
        "anonymous": None,
    }
    with contextlib.ExitStack() as stack:
        registry = RegistryProcess(root / "registry")
        registry.start()
        stack.callback(registry.stop)
        port = free_port()
        policy_file = root / "policy.yaml"
        command = regauth_command(registry.url, port, certs, policy_file, root / "regauth")
        command += ["--admin-listen", "off"]
        proxy = spawn("regauth", command, root / "regauth", port)
        stack.callback(proxy.stop)
        wait_ready(Endpoint(port, tls_context(ca), host="localhost"), proxy)
        rates: dict[str, list[tuple[float, float]]] = {}
        for round_no in range(args.rounds):
            order = list(variants) if round_no % 2 == 0 else list(reversed(variants))
            for name in order:
                rate = measure.token_rate(
                    port, proxy.pid, ca, target, variants[name], args.clients, args.seconds
                )
                rates.setdefault(name, []).append((rate.per_second, rate.cpu_us))
                print(
                    f"[{round_no + 1}/{args.rounds}] {name}: {rate.per_second:.0f} req/s "
                    f"{rate.cpu_us:.0f} us CPU/req",
                    flush=True,
                )
        print(report(args, rates))
    return 0


def report(args: argparse.Namespace, rates: dict[str, list[tuple[float, float]]]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    base_rate = med([r for r, _ in rates["password (cached)"]])
    base_cpu = med([c for _, c in rates["password (cached)"]])
    lines = [
        "",
        f"token requests, {args.clients} keep-alive clients, {args.seconds:g} s per sample, "
        f"medians of {args.rounds} rounds; CPU = regauth's CPU time per request",
        "",
        "| login | req/s | vs password (cached) | CPU us/req | vs password (CPU) |",
        "|---|---|---|---|---|",
    ]
    for name, samples in rates.items():
        rate = med([r for r, _ in samples])
        cpu = med([c for _, c in samples])
        lines.append(
            f"| {name} | {rate:.0f} | {rate / base_rate:.2f} | {cpu:.0f} | {base_cpu / cpu:.2f} |"
        )
    lines.append("\n(ratios > 1: faster than the cached password login)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
