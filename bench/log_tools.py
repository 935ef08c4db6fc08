"""Memory, throughput and idle CPU of the log tools (`regauth trace`, `regauth replay`) on a
large exchange log, against an earlier commit in the same run.

    .venv/bin/python bench/log_tools.py                      # 100,000 records, baseline 1181ea0
    .venv/bin/python bench/log_tools.py --records 20000 --follow-seconds 5   # quick look

What it does:
- writes a synthetic exchange log of `--records` records (`--rate` records per second of log
  time, so 100,000 records at 10/s span 2.8 hours): clients that ping, get challenged, fetch a
  token (with per-scope decisions) and send registry requests with it, as `regauth serve` logs
  them (about 850 bytes a record, like a real log);
- runs `trace LOG` and `replay LOG --policy P` of this tree and of `--baseline` (a commit,
  extracted with `git archive` into a temp dir and run from there with the same venv), each in
  a child process whose peak RSS and CPU time come from `os.wait4` (`ru_maxrss`, `ru_utime` +
  `ru_stime`): records per CPU second is the throughput, which other load does not distort;
- runs `trace LOG --follow` of both, waits until it has read the log (as long as its `trace`
  run took, plus 3 s), then counts its CPU time (utime + stime from /proc) over
  `--follow-seconds` with nothing appended, and its peak RSS (VmHWM);
- this tree only: `trace` over the same records split into two replicas' files, one of them
  rotated and gzipped, to show that many files cost no more than one;
- prints a table, with ratios baseline / this tree (>1: this tree uses less).

Wrap it in `flock /tmp/regauth-heavy.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Replayed under a policy that differs (alice loses pull outside public/), so every record is
# re-decided and the changes are counted.
POLICY = """\
version: 1
service: regauth
issuer: regauth
accounts:
  ci: {password_hash_env: BENCH_UNSET_HASH}
  alice: {password_hash_env: BENCH_UNSET_HASH}
rules:
  - account: ci
    repository: "**"
    actions: [pull, push]
    comment: CI pushes everywhere
  - repository: "public/**"
    actions: [pull]
    comment: anyone pulls the public area
"""


def _time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def records(count: int, rate: float, seed: int = 1) -> list[dict[str, object]]:
    """`count` records in time order: sessions of ping → challenge → token → requests."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    t = 1_780_000_000.0
    session = 0
    while len(out) < count:
        session += 1
        conv = f"{rng.getrandbits(64):016x}"
        client = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        port = rng.randrange(30000, 60000)
        account = rng.choice(["ci", "alice", "anonymous"])
        repo = f"{rng.choice(['public', 'cache', 'team'])}/app{rng.randrange(50)}"
        scope = f"repository:{repo}:pull,push"
        jti = f"{rng.getrandbits(96):024x}"
        granted = ["pull", "push"] if account == "ci" else ["pull"]
        base = {
            "version": 2,
            "conversation": conv,
            "client": f"{client}:{port}",
            "http_version": "HTTP/1.1",
        }
        out.append(
            {
                **base,
                "time": _time(t),
                "flow": f"{rng.getrandbits(128):032x}",
                "method": "GET",
                "path": "/v2/",
                "kind": "registry",
                "status": 401,
                "answered_by": "regauth",
                "repository": None,
                "route": "base",
                "required": [],
                "decision": {"forward": False, "reason": "no token"},
                "challenge": {
                    "scheme": "Bearer",
                    "realm": "https://regauth.example:5443/v2/token",
                    "service": "regauth",
                },
                "bytes": {"request": 0, "response": 87},
            }
        )
        t += 0.004
        out.append(
            {
                **base,
                "time": _time(t),
                "flow": f"{rng.getrandbits(128):032x}",
                "method": "GET",
                "path": f"/v2/token?scope={scope}&service=regauth",
                "kind": "token",
                "status": 200,
                "answered_by": "regauth",
                "auth": {"scheme": "Basic", "username": account} if account != "anonymous" else {},
                "token_request": {
                    "method": "GET",
                    "grant_type": "get",
                    "service": "regauth",
                    "requested": [scope],
                },
                "token_response": {
                    "credential": "password" if account != "anonymous" else None,
                    "account": account,
                    "decisions": [
                        {
                            "scope": scope,
                            "granted": granted,
                            "outcome": "granted" if len(granted) == 2 else "partial",
                            "rule": 1 if account == "ci" else 2,
                            "line": 9 if account == "ci" else 13,
                            "comment": "CI pushes everywhere"
                            if account == "ci"
                            else "anyone pulls the public area",
                        }
                    ],
                    "granted": [f"repository:{repo}:{','.join(granted)}"],
                    "expires_in": 300,
                    "issued_at": _time(t),
                    "jti": jti,
                },
                "bytes": {"request": 0, "response": 1020},
            }
        )
        for _ in range(rng.randrange(2, 12)):
            t += rng.expovariate(rate)
            digest = f"sha256:{rng.getrandbits(256):064x}"
            out.append(
                {
                    **base,
                    "time": _time(t),
                    "flow": f"{rng.getrandbits(128):032x}",
                    "method": "HEAD",
                    "path": f"/v2/{repo}/blobs/{digest}",
                    "kind": "registry",
                    "status": 200,
                    "answered_by": "upstream",
                    "repository": repo,
                    "route": "blob",
                    "required": [f"repository:{repo}:pull"],
                    "auth": {
                        "scheme": "Bearer",
                        "jwt": {
                            "header": {"alg": "ES256", "typ": "JWT", "kid": "ABCD:EFGH:IJKL"},
                            "claims": {
                                "iss": "regauth",
                                "sub": "" if account == "anonymous" else account,
                                "aud": "regauth",
                                "exp": int(t) + 300,
                                "nbf": int(t) - 10,
                                "iat": int(t),
                                "jti": jti,
                            },
                            "signature_bytes": 64,
                        },
                        "checked_by": "regauth",
                    },
                    "decision": {
                        "forward": True,
                        "reason": "token grants pull",
                        "verified_token": {
                            "issuer": "regauth",
                            "subject": "" if account == "anonymous" else account,
                            "source": "regauth",
                        },
                    },
                    "bytes": {"request": 0, "response": 0},
                    "upstream_ms": round(rng.uniform(0.5, 4.0), 3),
                }
            )
        t += rng.expovariate(rate)
    return out[:count]


def write_logs(directory: Path, count: int, rate: float) -> tuple[Path, list[Path], int]:
    """(one log, [replica a's current + gzipped rotated file, replica b's log], bytes)."""
    lines = [json.dumps(r, separators=(",", ":")) + "\n" for r in records(count, rate)]
    single = directory / "exchange.jsonl"
    single.write_text("".join(lines))
    a: list[str] = []
    b: list[str] = []
    for i, line in enumerate(lines):
        (a if i % 2 == 0 else b).append(line)
    (directory / "a").mkdir()
    (directory / "b").mkdir()
    half = len(a) // 2
    with gzip.open(directory / "a" / "exchange.jsonl.1.gz", "wt") as f:
        f.writelines(a[:half])
    (directory / "a" / "exchange.jsonl").write_text("".join(a[half:]))
    (directory / "b" / "exchange.jsonl").write_text("".join(b))
    split = [directory / "a" / "exchange.jsonl.1.gz", directory / "a" / "exchange.jsonl"]
    return single, [*split, directory / "b" / "exchange.jsonl"], single.stat().st_size


@dataclass
class Run:
    seconds: float  # wall clock
    cpu_seconds: float  # user + system: what a loaded machine does not distort
    peak_rss_mib: float
    returncode: int


def run(pythonpath: Path, args: list[str]) -> Run:
    """One `regauth` command in a child process: wall time and peak RSS (wait4's
    ru_maxrss, KiB on Linux)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "regauth.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        time.monotonic() - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        child.returncode,
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def follow_cpu(pythonpath: Path, log: Path, warmup: float, seconds: float) -> tuple[float, float]:
    """(CPU seconds `trace LOG --follow` uses over `seconds` with nothing appended, after
    `warmup` seconds to read what the log holds; its peak RSS in MiB by then)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    child = subprocess.Popen(
        [sys.executable, "-m", "regauth.cli", "trace", str(log), "--follow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        time.sleep(warmup)
        before = cpu_seconds(child.pid)
        time.sleep(seconds)
        return cpu_seconds(child.pid) - before, peak_rss_mib(child.pid)
    finally:
        child.terminate()
        child.wait(timeout=30)


def extract(ref: str, into: Path) -> Path:
    """The tree's `addons/` at commit `ref`, extracted under `into`; its path."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "addons/regauth"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "addons"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=10.0, help="records per second of log time")
    parser.add_argument(
        "--baseline",
        default="1181ea0",
        metavar="REF",
        help="the commit to compare with (default: the last one before streaming)",
    )
    parser.add_argument("--follow-seconds", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="regauth-logbench-"))
    try:
        # In a child: this process stays small, and the children it forks start small (a
        # forked child's peak RSS counts the parent's pages until it execs).
        subprocess.run(
            [sys.executable, __file__, "--write-logs", str(tmp), str(args.records), str(args.rate)],
            check=True,
        )
        log = tmp / "exchange.jsonl"
        split = [tmp / "a" / "exchange.jsonl.1.gz", tmp / "a" / "exchange.jsonl"]
        split.append(tmp / "b" / "exchange.jsonl")
        size = log.stat().st_size
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        old = extract(args.baseline, tmp)
        new = ROOT / "addons"
        rows: list[tuple[str, str, Run | None, float | None]] = []
        for name, path in (("this tree", new), (f"baseline {args.baseline}", old)):
            traced = run(path, ["trace", str(log)])
            replayed = run(path, ["replay", str(log), "--policy", str(policy)])
            cpu, rss = follow_cpu(path, log, traced.seconds + 3, args.follow_seconds)
            rows += [
                (name, "trace", traced, None),
                (name, "replay", replayed, None),
                (
                    name,
                    f"trace --follow, idle {args.follow_seconds:.0f} s",
                    Run(args.follow_seconds, cpu, rss, 0),
                    cpu,
                ),
            ]
        rows.append(
            (
                "this tree",
                "trace, 3 files (2 replicas, 1 .gz)",
                run(new, ["trace", *map(str, split)]),
                None,
            )
        )
        print(
            f"{args.records} records, {size / 2**20:.1f} MiB, {args.rate:g} records/s of log "
            f"time; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
        )
        print("| code | command | wall s | CPU s | records per CPU s | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for name, command, result, idle_cpu in rows:
            assert result is not None
            if idle_cpu is None:
                print(
                    f"| {name} | {command} | {result.seconds:.1f} | {result.cpu_seconds:.1f} | "
                    f"{args.records / result.cpu_seconds:,.0f} | {result.peak_rss_mib:.0f} |"
                )
            else:
                print(
                    f"| {name} | {command} | {args.follow_seconds:.0f} | {idle_cpu:.2f} | | "
                    f"{result.peak_rss_mib:.0f} |"
                )
        by = {(n[:4], c): (r, cpu) for n, c, r, cpu in rows}
        print("\nbaseline / this tree (>1: this tree uses less):")
        for command in ("trace", "replay"):
            new_run, old_run = by[("this", command)][0], by[("base", command)][0]
            assert new_run is not None and old_run is not None
            print(
                f"  {command}: peak RSS {old_run.peak_rss_mib / new_run.peak_rss_mib:.1f}x, "
                f"CPU {old_run.cpu_seconds / new_run.cpu_seconds:.2f}x"
                + (f" (exit codes {new_run.returncode}/{old_run.returncode})")
            )
        follow_key = f"trace --follow, idle {args.follow_seconds:.0f} s"
        new_cpu, old_cpu = by[("this", follow_key)][1], by[("base", follow_key)][1]
        assert new_cpu is not None and old_cpu is not None
        print(f"  trace --follow idle CPU: {old_cpu:.2f} s vs {new_cpu:.2f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-logs"]:
        write_logs(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
