"""Two regauth replicas behind a real HAProxy (the shipped deploy/haproxy/haproxy.cfg), sharing
one certs directory, one policy and one Redis, in front of one registry; real skopeo.

- pushes and pulls through HAProxy;
- a token issued by one replica is accepted by the other;
- five wrong passwords spread over both replicas lock the account on both;
- a replica killed during a series of pushes: HAProxy stops sending to it, every push completes
  (skopeo's own retries allowed) and every image is there afterwards;
- Redis stopped and started again: logins keep working with per-replica limits, the outage is
  logged once per replica and counted, nothing is forwarded that would not be otherwise, and
  the limits are shared again once Redis is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port
from tests.support.admin import scrape
from tests.support.httpclient import get_token
from tests.support.httpclient import request
from tests.support.oci import make_layout
from tests.support.policies import CLIENT_RULES
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import ProxyProcess
from tests.support.services import HAProxy
from tests.support.services import Redis
from tests.support.services import Replica

pytestmark = pytest.mark.integration


@dataclass
class Cluster:
    registry: RegistryProcess
    redis: Redis
    replicas: list[ProxyProcess]
    haproxy: HAProxy
    certs_dir: Path

    @property
    def netloc(self) -> str:
        return f"localhost:{self.haproxy.port}"

    def skopeo(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout)

    def push(self, layout: Path, ref: str) -> subprocess.CompletedProcess[str]:
        return self.skopeo(
            "copy",
            "--retry-times",
            "5",
            "--dest-creds",
            f"ci:{PASSWORDS['ci']}",
            "--dest-cert-dir",
            str(self.certs_dir),
            f"oci:{layout}:latest",
            f"docker://{self.netloc}/{ref}",
        )

    def pull(self, ref: str, layout: Path) -> subprocess.CompletedProcess[str]:
        return self.skopeo(
            "copy",
            "--retry-times",
            "5",
            "--src-creds",
            f"ci:{PASSWORDS['ci']}",
            "--src-cert-dir",
            str(self.certs_dir),
            f"docker://{self.netloc}/{ref}",
            f"oci:{layout}:latest",
        )


def login(proxy: ProxyProcess, user: str, password: str) -> int:
    return get_token(
        proxy.port, proxy.ca, ["repository:apps/x:pull"], SERVICE, (user, password)
    ).status


@pytest.fixture
def cluster(tmp_path: Path, write_policy, make_registry, make_proxy) -> Iterator[Cluster]:
    registry = make_registry()
    redis = Redis(tmp_path / "redis")
    redis.start()
    front = free_port()  # the public URL names HAProxy: reserve its port first
    env = {"REGAUTH_PUBLIC_URL": f"https://localhost:{front}", "REGAUTH_STATE": redis.url}
    policy = write_policy(extra_rules=CLIENT_RULES)
    replicas = [
        make_proxy(
            policy,
            registry.url,
            name=f"replica{i}",
            env=env,
            extra=["--set", "regauth_upstream_check_seconds=1"],
            admin_listen="127.0.0.1:0",
        )
        for i in (1, 2)
    ]
    haproxy = HAProxy(
        tmp_path / "haproxy", [Replica(p.port, p.admin_port) for p in replicas], port=front
    )
    haproxy.start()
    try:
        haproxy.wait_for({"replica1": "UP", "replica2": "UP"})
        yield Cluster(registry, redis, replicas, haproxy, replicas[0].certs_dir)
    finally:
        haproxy.stop()
        redis.stop()


def test_push_and_pull_through_haproxy(cluster, tmp_path):
    layout = tmp_path / "layout"
    make_layout(layout)
    for i in range(3):
        done = cluster.push(layout, f"apps/scale-{i}:1")
        assert done.returncode == 0, done.stderr
    for i in range(3):
        done = cluster.pull(f"apps/scale-{i}:1", tmp_path / f"pulled-{i}")
        assert done.returncode == 0, done.stderr
    # Connections were balanced: both replicas answered some of them.
    served = [len(p.records()) for p in cluster.replicas]
    assert all(served), served


def test_a_token_from_one_replica_works_on_the_other(cluster, tmp_path):
    a, b = cluster.replicas
    layout = tmp_path / "layout"
    make_layout(layout)
    assert cluster.push(layout, "apps/shared:1").returncode == 0
    token = get_token(
        a.port, a.ca, ["repository:apps/shared:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert request(b.port, b.ca, "GET", "/v2/apps/shared/tags/list", bearer).status == 200
    started = request(
        b.port, b.ca, "POST", "/v2/apps/shared/blobs/uploads/", {**bearer, "Content-Length": "0"}
    )
    assert started.status == 202
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert jti in {r["token_response"]["jti"] for r in a.records() if r["kind"] == "token"}
    used_on_b = [
        r
        for r in b.records()
        if r["kind"] == "registry"
        and r.get("auth", {}).get("jwt", {}).get("claims", {}).get("jti") == jti
    ]
    assert [(r["method"], r["status"]) for r in used_on_b] == [("GET", 200), ("POST", 202)]


def test_five_wrong_passwords_over_both_replicas_lock_the_account_on_both(cluster):
    a, b = cluster.replicas
    for i, replica in enumerate((a, b, a, b, a)):
        assert login(replica, "alice", f"wrong-{i}") == 401
    # Even the right password now waits (nobody logged in as alice before), on both.
    assert login(a, "alice", PASSWORDS["alice"]) == 429
    assert login(b, "alice", PASSWORDS["alice"]) == 429
    assert login(a, "ci", PASSWORDS["ci"]) == 200  # other accounts are not affected
    for replica in (a, b):
        metrics = scrape(replica.admin_port)
        assert metrics.value("regauth_state_store_up") == 1
        assert metrics.value("regauth_state_store_errors_total") == 0
    failures = [
        scrape(p.admin_port).value("regauth_login_failures_total") for p in cluster.replicas
    ]
    assert failures == [3, 2]


def test_a_killed_replica_loses_no_push(cluster, tmp_path):
    layouts = []
    for i in range(8):
        layout = tmp_path / f"layout-{i}"
        make_layout(layout, files={f"file-{i}": os.urandom(256 * 1024)})
        layouts.append(layout)
    results: list[subprocess.CompletedProcess[str]] = []
    pushed = threading.Event()

    def series() -> None:
        for i, layout in enumerate(layouts):
            results.append(cluster.push(layout, f"apps/killed-{i}:1"))
            if i == 1:
                pushed.set()

    worker = threading.Thread(target=series)
    worker.start()
    try:
        assert pushed.wait(120)
        victim = cluster.replicas[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        cluster.haproxy.wait_for({"replica1": "UP", "replica2": "DOWN"}, timeout=15)
    finally:
        worker.join(timeout=600)
    assert len(results) == 8
    for i, result in enumerate(results):
        assert result.returncode == 0, (i, result.stderr)
    # Nothing lost: every image reads back whole (skopeo verifies every digest).
    for i in range(8):
        done = cluster.pull(f"apps/killed-{i}:1", tmp_path / f"back-{i}")
        assert done.returncode == 0, (i, done.stderr)
    assert cluster.haproxy.server_states()["replica2"].startswith("DOWN")


def test_a_redis_outage_keeps_logins_working_with_per_replica_limits(cluster):
    a, b = cluster.replicas
    cluster.redis.stop()
    assert login(a, "ci", PASSWORDS["ci"]) == 200
    assert login(b, "ci", PASSWORDS["ci"]) == 200
    # Per replica during the outage: five failures on a lock alice there, not on b.
    for i in range(5):
        assert login(a, "alice", f"outage-wrong-{i}") == 401
    assert login(a, "alice", "outage-wrong-5") == 429
    assert login(b, "alice", PASSWORDS["alice"]) == 200
    # Nothing is forwarded that would not be otherwise.
    for replica in (a, b):
        assert request(replica.port, replica.ca, "GET", "/v2/apps/x/manifests/1").status == 401
        anonymous = get_token(replica.port, replica.ca, ["repository:apps/x:pull,push"], SERVICE)
        assert anonymous.status == 200 and anonymous.json()["scope"] == ""
    for replica in (a, b):
        metrics = scrape(replica.admin_port)
        assert metrics.value("regauth_state_store_up") == 0
        assert metrics.value("regauth_state_store_errors_total") > 0
        assert replica.output().count("unreachable") == 1, replica.output()
    # Ready all along: an outage of the shared store is no reason to stop serving.
    cluster.haproxy.wait_for({"replica1": "UP", "replica2": "UP"})

    cluster.redis.start()  # same port, empty (no persistence)
    deadline = time.monotonic() + 30
    while not all(
        scrape(p.admin_port).value("regauth_state_store_up") == 1 for p in cluster.replicas
    ):
        assert time.monotonic() < deadline, [p.output()[-2000:] for p in cluster.replicas]
        time.sleep(0.3)
    for replica in (a, b):
        assert replica.output().count("reachable again") == 1
    # Shared again: failures on both replicas add up.
    for i, replica in enumerate((b, a, b, a, b)):
        assert login(replica, "ci", f"after-wrong-{i}") == 401
    assert login(a, "ci", "after-wrong-5") == 429
    assert login(b, "ci", "after-wrong-6") == 429


def test_docker_logs_in_pushes_and_pulls_through_haproxy(cluster, docker_for):
    from types import SimpleNamespace

    front = SimpleNamespace(netloc=cluster.netloc, ca=cluster.certs_dir / "ca.crt")
    docker = docker_for(front)
    image = f"{cluster.netloc}/apps/docker-scale:1"
    assert docker.import_image(image, os.urandom(64)).ok
    login = docker.login(cluster.netloc, "ci", PASSWORDS["ci"])
    assert login.ok, login.output
    pushed = docker.run("push", image)
    assert pushed.ok, pushed.output
    assert docker.run("rmi", image).ok
    pulled = docker.run("pull", image)
    assert pulled.ok, pulled.output
    # The identity token docker got at login is honoured by whichever replica gets the
    # connection: refresh grants were answered by both.
    grants = [
        [
            r
            for r in p.records()
            if r["kind"] == "token"
            and r.get("token_response", {}).get("credential") == "refresh_token"
        ]
        for p in cluster.replicas
    ]
    assert all(g["status"] == 200 for replica in grants for g in replica)
    assert sum(len(g) for g in grants) >= 2
