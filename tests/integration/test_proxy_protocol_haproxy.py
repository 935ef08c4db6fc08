"""The PROXY protocol through a real HAProxy (issue 21's acceptance): the shipped
deploy/haproxy/haproxy.cfg (`send-proxy-v2`), Redis, two replicas started with
`--proxy-protocol 127.0.0.1/32` (REGAUTH_PROXY_PROTOCOL, as the systemd example sets it) and a
real registry; clients bind their source address (127.0.0.2, 127.0.0.3) so that HAProxy names
each of them, while HAProxy itself connects from 127.0.0.1.

- the shipped config sends a PROXY v2 header naming the client on every connection to a
  replica, and none on its liveness checks (which go to the admin port and still pass);
- a `networks:` rule for 127.0.0.2/32 grants 127.0.0.2 and not 127.0.0.3, on both replicas;
- ten wrong passwords from 127.0.0.2 (over both replicas, counted in Redis) lock that account
  for 127.0.0.2 only: 127.0.0.3 logs in with it;
- 200 idle connections from 127.0.0.2 fill that address's cap on both replicas (a 201st is
  refused) and 127.0.0.3 still pushes;
- a PROXY header sent straight to a replica from an untrusted address is refused; a connection
  from HAProxy's address without a header is refused (also through a HAProxy without
  `send-proxy-v2`, which the liveness checks do not notice);
- every exchange-log record and every `regauth trace` conversation names the real client, with
  HAProxy as `via`;
- plain HTTP through HAProxy gets one 400 asking for TLS: no challenge, no token, nothing
  forwarded (the registry invariant of tests/integration/conftest.py checks the registry's
  access log);
  containerd set up for a plain-http registry fails, and must show that message (it does not
  yet: its first request is a HEAD, and the message is only in the body);
- the control: without `send-proxy-v2` and `--proxy-protocol` every client is HAProxy, the
  networks rule grants nobody and one client's wrong passwords lock the other out.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from regauth.ops.registry_process import free_port
from tests.support import cluster
from tests.support.attacks import RawReply
from tests.support.httpclient import basic
from tests.support.legit import LegitClient
from tests.support.policies import CLIENT_RULES
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import REGAUTH
from tests.support.proxyproto import V2_SIGNATURE
from tests.support.proxyproto import closed_without_answer
from tests.support.proxyproto import exchange
from tests.support.proxyproto import open_tls
from tests.support.proxyproto import v1
from tests.support.proxyproto import v2
from tests.support.services import HAProxy
from tests.support.services import Redis
from tests.support.services import Replica

pytestmark = pytest.mark.integration

FIRST, SECOND = "127.0.0.2", "127.0.0.3"  # the two clients
HAPROXY_ADDRESS = "127.0.0.1"  # where HAProxy connects to the replicas from
NETWORK_RULE = f"""  - comment: only the office ({FIRST}) pushes releases
    account: ci
    repository: "releases/**"
    networks: ["{FIRST}/32"]
    actions: [pull, push]
"""
RELEASES = "repository:releases/app:pull,push"
TLS_ONLY = "this port speaks TLS only"


class Cluster(cluster.Cluster):
    """tests/support/cluster.py's, with requests from a chosen source address."""

    def request(
        self, source: str, target: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> RawReply:
        """One request through HAProxy on a new TLS connection from `source`."""
        return exchange(open_tls(self.port, self.ca, source=source), method, target, headers)

    def token(self, source: str, scope: str, password: str | None = PASSWORDS["ci"]) -> RawReply:
        """`GET /v2/token` as ci (`password=None`: anonymously) from `source`."""
        headers = {"Authorization": basic("ci", password)} if password is not None else {}
        return self.request(source, f"/v2/token?service={SERVICE}&scope={scope}", headers)

    def records(self) -> list[list[dict]]:
        """Each replica's exchange-log records."""
        return [replica.records() for replica in self.replicas]

    def output(self) -> str:
        return "\n".join(replica.output() for replica in self.replicas)


def host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def assert_real_clients(cluster: Cluster, clients: set[str]) -> None:
    """Every record of both exchange logs names one of `clients` (never HAProxy) and HAProxy
    as `via`; `regauth trace --json` shows the same clients for every conversation."""
    seen: set[str] = set()
    for replica, records in zip(cluster.replicas, cluster.records(), strict=True):
        for record in records:
            assert host(record["client"]) in clients, record
            assert host(record.get("via", "")) == HAPROXY_ADDRESS, record
            seen.add(host(record["client"]))
        done = subprocess.run(
            [str(REGAUTH), "trace", str(replica.log_path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        conversations = json.loads(done.stdout)["conversations"]
        assert len(conversations) >= 1 or not records
        for conversation in conversations:
            assert conversation["clients"] and set(conversation["clients"]) <= clients, conversation
            [step] = [s for s in conversation["steps"] if s["step"] == "client"]
            assert f"(via {HAPROXY_ADDRESS}:" in step["text"], step
    assert seen == clients, seen


@pytest.fixture
def make_cluster(
    tmp_path: Path, write_policy, make_registry, make_proxy
) -> Iterator[Callable[..., Cluster]]:
    """`make_cluster(proxy_protocol=True)`: registry, Redis, two replicas and HAProxy;
    `proxy_protocol=False`: the replicas without --proxy-protocol, HAProxy without
    send-proxy-v2 (the setup before issue 21)."""
    stop: list[Callable[[], None]] = []

    def make(proxy_protocol: bool = True, name: str = "cluster") -> Cluster:
        registry = make_registry(name=f"{name}-registry")
        redis = Redis(tmp_path / f"{name}-redis")
        redis.start()
        stop.append(redis.stop)
        front = free_port()  # the public URL names HAProxy: reserve its port first
        env = {"REGAUTH_PUBLIC_URL": f"https://localhost:{front}", "REGAUTH_STATE": redis.url}
        if proxy_protocol:
            env["REGAUTH_PROXY_PROTOCOL"] = f"{HAPROXY_ADDRESS}/32"
        policy = write_policy(f"{name}-policy.yaml", extra_rules=NETWORK_RULE + CLIENT_RULES)
        replicas = [
            make_proxy(
                policy,
                registry.url,
                name=f"{name}-replica{i}",
                env=env,
                extra=["--set", "regauth_upstream_check_seconds=1"],
                admin_listen="127.0.0.1:0",
            )
            for i in (1, 2)
        ]
        haproxy = HAProxy(
            tmp_path / f"{name}-haproxy",
            [Replica(p.port, p.admin_port) for p in replicas],
            port=front,
            proxy_protocol=proxy_protocol,
        )
        haproxy.start()
        stop.append(haproxy.stop)
        haproxy.wait_for({"replica1": "UP", "replica2": "UP"})
        return Cluster(registry, redis, replicas, haproxy)

    try:
        yield make
    finally:
        for done in reversed(stop):
            done()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


# -- the shipped config ----------------------------------------------------------------------


class _Listener:
    """A loopback listener that records the first bytes of each connection (until `complete`
    says they are all there, or 2 s) and answers `reply` (for the admin port: a 200 to
    HAProxy's liveness check)."""

    def __init__(self, complete: Callable[[bytes], bool], reply: bytes = b"") -> None:
        import threading

        self.complete = complete
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.first_bytes: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while not self.complete(data) and (chunk := conn.recv(4096)):
                        data += chunk
                except OSError:
                    pass
                self.first_bytes.append(data)
                if self.reply:
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def test_the_shipped_config_sends_a_v2_header_on_connections_and_none_on_checks(tmp_path):
    """HAProxy 2.6 sends the PROXY header on client connections only: a check with its own
    `port` gets none unless `check-send-proxy` asks for it. Raw listeners stand in for a
    replica's proxy and admin ports."""
    hello = b"\x16\x03\x01"  # the start of a ClientHello
    proxy_port = _Listener(lambda data: len(data) >= 16 + 12 + len(hello))  # IPv4 v2 header
    admin_port = _Listener(
        lambda data: b"\r\n\r\n" in data,
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nready\n",
    )
    haproxy = HAProxy(
        tmp_path / "haproxy", [Replica(proxy_port.port, admin_port.port)] * 2, proxy_protocol=True
    )
    haproxy.start()
    try:
        # Servers start UP: wait for 4 checks (2 per server), then they must still be UP.
        deadline = time.monotonic() + 10
        while len(admin_port.first_bytes) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert haproxy.server_states() == {"replica1": "UP", "replica2": "UP"}
        with socket.create_connection(
            ("127.0.0.1", haproxy.port), timeout=5, source_address=(FIRST, 0)
        ) as client:
            client.sendall(hello)
            deadline = time.monotonic() + 5
            while not proxy_port.first_bytes and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        haproxy.stop()
        proxy_port.close()
        admin_port.close()
    # Every connection starts with the v2 signature, PROXY command over TCP/IPv4, then source
    # and destination address (HAProxy.start's own probe names 127.0.0.1).
    assert all(c.startswith(V2_SIGNATURE + b"\x21\x11") for c in proxy_port.first_bytes)
    [connection] = [c for c in proxy_port.first_bytes if c[16:20] == socket.inet_aton(FIRST)]
    assert connection[28:] == hello
    assert len(admin_port.first_bytes) >= 4
    for check in admin_port.first_bytes:
        assert check.startswith(b"GET /healthz HTTP/1.1\r\n"), check


# -- acceptance ------------------------------------------------------------------------------


def test_a_networks_rule_grants_only_the_client_in_its_network(cluster):
    for client, scope in ((FIRST, RELEASES), (SECOND, ""), (FIRST, RELEASES), (SECOND, "")):
        for _ in range(2):  # leastconn takes turns: one connection to each replica
            reply = cluster.token(client, RELEASES)
            assert reply.status == 200, reply.body
            assert json.loads(reply.body)["scope"] == scope, client  # "": outside the network
    # Each replica decided for both clients, each by the client's own address.
    decided = [
        {
            (host(r["client"]), bool(r["token_response"]["granted"]))
            for r in records
            if r["kind"] == "token"
        }
        for records in cluster.records()
    ]
    assert decided == [{(FIRST, True), (SECOND, False)}] * 2, decided
    assert_real_clients(cluster, {FIRST, SECOND})


def test_ten_wrong_passwords_from_one_client_do_not_lock_out_another(cluster):
    statuses = [cluster.token(FIRST, RELEASES, f"wrong-{i}").status for i in range(10)]
    # 5 failures for (ci, 127.0.0.2) counted in Redis whichever replica took them, then 429.
    assert statuses == [401] * 5 + [429] * 5, statuses
    failures = [
        [r for r in records if r["kind"] == "token" and r["status"] == 401]
        for records in cluster.records()
    ]
    assert all(failures), "both replicas took wrong passwords"
    assert cluster.token(FIRST, RELEASES).status == 429  # the first itself is locked
    for _ in range(4):  # over both replicas
        second = cluster.token(SECOND, "repository:apps/x:pull")
        assert second.status == 200, second.body
        assert json.loads(second.body)["scope"] == "repository:apps/x:pull"
    served = [
        [
            r
            for r in records
            if r["kind"] == "token" and r["status"] == 200 and host(r["client"]) == SECOND
        ]
        for records in cluster.records()
    ]
    assert all(served), "both replicas let the second client in"
    assert_real_clients(cluster, {FIRST, SECOND})


def test_200_idle_connections_from_one_client_do_not_stop_anothers_pushes(cluster):
    idle: list[ssl.SSLSocket] = []
    try:
        for _ in range(200):
            idle.append(open_tls(cluster.port, cluster.ca, source=FIRST))
        # leastconn: 100 on each replica, the per-address cap (100) of both is reached for
        # 127.0.0.2, so its next connection is refused...
        with pytest.raises(OSError):
            exchange(open_tls(cluster.port, cluster.ca, source=FIRST), "GET", "/v2/")
        # ...and 127.0.0.3 is another address: its pushes go through.
        for i in range(2):
            client = LegitClient(
                cluster.port,
                cluster.ca,
                SERVICE,
                ("ci", PASSWORDS["ci"]),
                f"apps/idle-{i}",
                source=SECOND,
            )
            client.push()
            assert client.push_seconds is not None
    finally:
        for sock in idle:
            sock.close()
    assert f"refused connections from {FIRST}: already 100 open" in cluster.output()
    pushed = [
        {
            r["path"]
            for r in records
            if r["kind"] == "registry"
            and r["status"] == 201
            and r["method"] == "PUT"
            and "/manifests/" in r["path"]
        }
        for records in cluster.records()
    ]
    assert set().union(*pushed) == {f"/v2/apps/idle-{i}/manifests/legit" for i in range(2)}
    assert_real_clients(cluster, {SECOND})


def test_a_header_straight_to_a_replica_from_an_untrusted_address_is_refused(cluster):
    for replica in cluster.replicas:
        for header in (v1(SECOND), v2(SECOND)):
            closed, seconds, answer = closed_without_answer(replica.port, header, "127.0.0.5")
            assert closed and answer == b"" and seconds < 1.0
        with pytest.raises(OSError):  # a whole header, then TLS
            exchange(
                open_tls(replica.port, replica.ca, v2(FIRST), source="127.0.0.5"),
                "GET",
                f"/v2/token?service={SERVICE}&scope={RELEASES}",
                {"Authorization": basic("ci", PASSWORDS["ci"])},
            )
        assert "refused a PROXY protocol header from 127.0.0.5" in replica.output()
        assert not replica.records()


def test_a_connection_from_haproxys_address_without_a_header_is_refused(cluster, tmp_path):
    for replica in cluster.replicas:
        with pytest.raises(OSError):
            exchange(open_tls(replica.port, replica.ca, source=HAPROXY_ADDRESS), "GET", "/v2/")
        assert f"closed connection from load balancer {HAPROXY_ADDRESS}" in replica.output()
    # The same through a HAProxy left without send-proxy-v2: its liveness checks pass (they
    # go to the admin port), and every client connection is closed.
    bare = HAProxy(tmp_path / "haproxy-bare", cluster.haproxy.replicas, proxy_protocol=False)
    bare.start()
    try:
        bare.wait_for({"replica1": "UP", "replica2": "UP"})
        for _ in range(2):
            with pytest.raises(OSError):
                exchange(open_tls(bare.port, cluster.ca, source=FIRST), "GET", "/v2/")
    finally:
        bare.stop()
    assert all(not records for records in cluster.records())


def test_the_exchange_log_and_trace_name_the_real_client(cluster):
    assert cluster.request(FIRST, "/v2/").status == 401  # a challenge
    assert cluster.token(FIRST, RELEASES, password=None).status == 200  # anonymous
    assert cluster.token(FIRST, RELEASES, "wrong").status == 401  # a refused login
    assert cluster.token(SECOND, RELEASES).status == 200
    client = LegitClient(
        cluster.port, cluster.ca, SERVICE, ("ci", PASSWORDS["ci"]), "apps/traced", source=SECOND
    )
    client.push()
    assert (
        cluster.request(
            SECOND,
            "/v2/apps/traced/manifests/legit",
            {
                "Authorization": f"Bearer {client.token('repository:apps/traced:pull')}",
                "Accept": "application/vnd.oci.image.manifest.v1+json",
            },
        ).status
        == 200
    )
    assert all(len(records) >= 3 for records in cluster.records())
    assert_real_clients(cluster, {FIRST, SECOND})


def test_plain_http_gets_the_tls_only_answer_and_nothing_else(cluster):
    def curl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["curl", "-sS", "-i", "-4", "--interface", FIRST, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    front = f"http://localhost:{cluster.port}"
    for done in (
        curl(f"{front}/v2/"),
        curl("-u", f"ci:{PASSWORDS['ci']}", f"{front}/v2/token?service={SERVICE}&scope={RELEASES}"),
        curl(
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "x",
            f"{front}/v2/apps/x/blobs/uploads/1?digest=x",
        ),
    ):
        assert done.stdout.startswith("HTTP/1.1 400 Bad Request"), done.stdout + done.stderr
        assert TLS_ONLY in done.stdout and "https://" in done.stdout
        assert "www-authenticate" not in done.stdout.lower()
        assert '"token"' not in done.stdout and "access_token" not in done.stdout
    assert all(not records for records in cluster.records())  # nothing decided or forwarded
    assert f"refused plain HTTP from {FIRST}" in cluster.output()


def test_containerd_set_up_for_a_plain_http_registry_is_told_to_use_tls(cluster, containerd):
    """`ctr --plain-http` fails, and its error must ask for TLS. containerd's first request is
    a HEAD (of the manifest on pull, of each blob on push), whose answer has no body to show:
    ctr prints the status line only (`... failed with status code [manifests 1]: 400 Bad
    Request`; push: `unexpected status: 400 Bad Request`). It prints the reason phrase as sent,
    so the message has to be there too (first_bytes.ANSWER_400's status line)."""
    image = f"localhost:{cluster.port}/apps/plain:1"
    pulled = containerd.ctr(
        "images", "pull", "--plain-http", "--user", f"ci:{PASSWORDS['ci']}", image, timeout=120
    )
    assert not pulled.ok
    assert TLS_ONLY in pulled.output, pulled.output
    assert all(not records for records in cluster.records())


# -- the control -----------------------------------------------------------------------------


def test_without_the_proxy_protocol_every_client_is_haproxy(make_cluster):
    """What the tests above rule out: the replicas without --proxy-protocol behind HAProxy
    without send-proxy-v2 (the setup before issue 21) see HAProxy's address only."""
    cluster = make_cluster(proxy_protocol=False, name="bare")
    for _ in range(2):
        first = cluster.token(FIRST, RELEASES)
        assert first.status == 200 and json.loads(first.body)["scope"] == ""
    # ci logged in: its cached login would pass any limit; alice has not.
    statuses = [
        cluster.request(
            FIRST, f"/v2/token?service={SERVICE}", {"Authorization": basic("alice", f"wrong-{i}")}
        ).status
        for i in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    second = cluster.request(
        SECOND,
        f"/v2/token?service={SERVICE}",
        {"Authorization": basic("alice", PASSWORDS["alice"])},
    )
    assert second.status == 429  # locked out by the first's failures
    records = [r for records in cluster.records() for r in records]
    assert {host(r["client"]) for r in records} == {HAPROXY_ADDRESS}
    assert not any("via" in r for r in records)
