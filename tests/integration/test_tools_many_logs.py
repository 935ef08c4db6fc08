"""`regauth trace` and `regauth replay` over the logs of two replicas (issue 26, items 2 and 7):
two `regauth serve` behind the shipped HAProxy config, sharing certs, policy and Redis, in front of
one registry, driven by real skopeo as ci, alice and anonymous at once. Behind HAProxy every
client has HAProxy's address, as clients behind one NAT would.

- both logs, one of them rotated and gzipped, named as a directory, a glob and a file, read as one
  time-ordered stream: every record appears once, each step names its replica;
- `--account NAME` shows only that account's conversations: no conversation joins two accounts,
  also when a token issued by one replica is challenged on the other;
- replay re-decides every token request of both logs.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regauth.ops.registry_process import free_port
from tests.support.httpclient import get_token
from tests.support.httpclient import request
from tests.support.oci import make_layout
from tests.support.policies import CLIENT_RULES
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import REGAUTH
from tests.support.proxy import ProxyProcess
from tests.support.services import HAProxy
from tests.support.services import Redis
from tests.support.services import Replica

pytestmark = pytest.mark.integration


@dataclass
class Pair:
    replicas: list[ProxyProcess]
    haproxy: HAProxy
    certs_dir: Path
    policy: Path

    @property
    def netloc(self) -> str:
        return f"localhost:{self.haproxy.port}"

    def skopeo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def pair(tmp_path: Path, write_policy, make_registry, make_proxy) -> Iterator[Pair]:
    registry = make_registry()
    redis = Redis(tmp_path / "redis")
    redis.start()
    front = free_port()
    env = {"REGAUTH_PUBLIC_URL": f"https://localhost:{front}", "REGAUTH_STATE": redis.url}
    policy = write_policy(extra_rules=CLIENT_RULES)
    replicas = [
        make_proxy(policy, registry.url, name=f"replica{i}", env=env, admin_listen="127.0.0.1:0")
        for i in (1, 2)
    ]
    haproxy = HAProxy(
        tmp_path / "haproxy", [Replica(p.port, p.admin_port) for p in replicas], port=front
    )
    haproxy.start()
    try:
        haproxy.wait_for({"replica1": "UP", "replica2": "UP"})
        yield Pair(replicas, haproxy, replicas[0].certs_dir, policy)
    finally:
        haproxy.stop()
        redis.stop()


def regauth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REGAUTH), *args], capture_output=True, text=True, timeout=120)


def trace_json(*args: str) -> dict:
    done = regauth("trace", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rotated_copies(logs: list[Path], into: Path) -> list[Path]:
    """The replicas' logs as logrotate would leave them, copied under `into` (the originals
    stay for the suite's invariant check): the first replica's first half of the records in
    `exchange.jsonl.1.gz`, the rest in `exchange.jsonl`. The copies' paths, in that order."""
    copies = []
    for i, log in enumerate(logs):
        directory = into / log.parent.name
        directory.mkdir(parents=True)
        lines = log.read_text().splitlines(keepends=True)
        half = len(lines) // 2 if i == 0 else 0
        current = directory / log.name
        current.write_text("".join(lines[half:]))
        copies.append(current)
        if half:
            rotated = directory / (log.name + ".1.gz")
            with gzip.open(rotated, "wt") as f:
                f.writelines(lines[:half])
            copies.append(rotated)
    return copies


def test_trace_and_replay_read_both_replicas_logs_as_one(pair: Pair, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout)

    def push(i: int) -> None:
        done = pair.skopeo(
            "copy",
            "--retry-times",
            "3",
            "--dest-creds",
            f"ci:{PASSWORDS['ci']}",
            "--dest-cert-dir",
            str(pair.certs_dir),
            f"oci:{layout}:latest",
            f"docker://{pair.netloc}/apps/many-{i}:1",
        )
        assert done.returncode == 0, done.stderr

    def inspect(creds: str | None, ref: str) -> None:
        args = ["inspect", "--cert-dir", str(pair.certs_dir)]
        args += ["--creds", creds] if creds else ["--no-creds"]
        pair.skopeo(*args, f"docker://{pair.netloc}/{ref}")  # the image may not exist

    threads = [threading.Thread(target=push, args=(i,)) for i in range(3)]
    threads += [
        threading.Thread(target=inspect, args=(f"alice:{PASSWORDS['alice']}", f"public/a{i}:1"))
        for i in range(3)
    ]
    threads.append(threading.Thread(target=inspect, args=(None, "public/anon:1")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    written = sum(len(p.records()) for p in pair.replicas)
    assert all(p.records() for p in pair.replicas)  # HAProxy balanced the connections
    first, rotated, second = rotated_copies([p.log_path for p in pair.replicas], tmp_path / "l")

    # A directory (replica1: its current and its rotated file), and a glob naming replica2's.
    inputs = [str(first.parent), str(second.parent / "exchange.json*")]
    doc = trace_json(*inputs)
    assert doc["logs"] == [str(first), str(rotated), str(second)]
    assert doc["replicas"] == {
        str(first): "replica1/exchange.jsonl",
        str(rotated): "replica1/exchange.jsonl",
        str(second): "replica2/exchange.jsonl",
    }
    conversations = doc["conversations"]
    starts = [c["start"] for c in conversations]
    assert starts == sorted(starts)  # merged in time order
    assert sum(c["records"] for c in conversations) == written  # each record once
    replicas = {r for c in conversations for r in c["replicas"]}
    assert replicas == {"replica1/exchange.jsonl", "replica2/exchange.jsonl"}
    assert all(s.get("replica") for c in conversations for s in c["steps"])

    # One address for everyone (HAProxy's), three identities: never two in one conversation.
    assert all(len(c["accounts"]) <= 1 for c in conversations), [
        c["accounts"] for c in conversations
    ]
    for account in ("ci", "alice", "anonymous"):
        found = trace_json(*inputs, "--account", account)["conversations"]
        assert found and all(c["accounts"] == [account] for c in found), account

    # replay: every token request of both logs, however named.
    tokens = sum(1 for p in pair.replicas for r in p.records() if r["kind"] == "token")
    done = regauth("replay", *inputs, "--policy", str(pair.policy), "--json")
    assert done.returncode == 0, done.stdout + done.stderr  # the same policy: nothing changes
    result = json.loads(done.stdout)
    assert result["requests"] + result["not_decided"] == tokens


def test_a_challenge_on_the_other_replica_stays_with_the_tokens_account(pair: Pair) -> None:
    """alice's token comes from replica1; replica2 challenges it (she may not push), then ci
    logs in on replica2 from the same address: ci's conversation is not alice's."""
    first, second = pair.replicas
    token = get_token(
        first.port, first.ca, ["repository:public/x:pull"], SERVICE, ("alice", PASSWORDS["alice"])
    ).json()["token"]
    refused = request(
        second.port,
        second.ca,
        "POST",
        "/v2/public/x/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
        b"",
    )
    assert refused.status == 401
    ci = get_token(
        second.port,
        second.ca,
        ["repository:public/x:pull,push"],
        SERVICE,
        ("ci", PASSWORDS["ci"]),
    )
    assert ci.status == 200
    for proxy in pair.replicas:
        proxy.records()  # let the last records land
    logs = [str(p.log_path) for p in pair.replicas]
    for c in trace_json(*logs, "--account", "ci")["conversations"]:
        assert c["accounts"] == ["ci"], c
    [alice] = trace_json(*logs, "--account", "alice")["conversations"]
    assert alice["accounts"] == ["alice"]
    assert [s["step"] for s in alice["steps"]][-1] == "challenge"
