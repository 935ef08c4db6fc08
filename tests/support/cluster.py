"""Two regauth replicas behind the shipped HAProxy config (`send-proxy-v2`, the replicas with
`--proxy-protocol 127.0.0.1/32` as the systemd example sets it), sharing one Redis, one certs
directory and one policy, in front of one real registry. For the operations tests that need
the whole deployment (log rotation, failover)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port
from tests.support.policies import CLIENT_RULES
from tests.support.proxy import ProxyProcess
from tests.support.services import HAProxy
from tests.support.services import Redis
from tests.support.services import Replica


@dataclass
class Cluster:
    registry: RegistryProcess
    redis: Redis
    replicas: list[ProxyProcess]
    haproxy: HAProxy

    @property
    def port(self) -> int:
        return self.haproxy.port

    @property
    def netloc(self) -> str:
        return f"localhost:{self.haproxy.port}"

    @property
    def certs_dir(self) -> Path:
        return self.replicas[0].certs_dir

    @property
    def ca(self) -> Path:
        return self.replicas[0].ca


def start_cluster(
    tmp_path: Path,
    write_policy: Callable[..., Path],
    make_registry: Callable[..., RegistryProcess],
    make_proxy: Callable[..., ProxyProcess],
    stop: list[Callable[[], None]],
    replica_extra: tuple[str, ...] = (),
) -> Cluster:
    """Start everything; `stop` receives what the caller must call at the end (Redis,
    HAProxy; the replicas and the registry are stopped by their fixtures)."""
    registry = make_registry()
    redis = Redis(tmp_path / "redis")
    redis.start()
    stop.append(redis.stop)
    front = free_port()  # the public URL names HAProxy: reserve its port first
    env = {
        "REGAUTH_PUBLIC_URL": f"https://localhost:{front}",
        "REGAUTH_STATE": redis.url,
        "REGAUTH_PROXY_PROTOCOL": "127.0.0.1/32",
    }
    policy = write_policy(extra_rules=CLIENT_RULES)
    replicas = [
        make_proxy(
            policy,
            registry.url,
            name=f"replica{i}",
            env=env,
            extra=["--set", "regauth_upstream_check_seconds=1", *replica_extra],
            admin_listen="127.0.0.1:0",
        )
        for i in (1, 2)
    ]
    haproxy = HAProxy(
        tmp_path / "haproxy",
        [Replica(p.port, p.admin_port) for p in replicas],  # type: ignore[arg-type]
        port=front,
        proxy_protocol=True,
    )
    haproxy.start()
    stop.append(haproxy.stop)
    haproxy.wait_for({"replica1": "UP", "replica2": "UP"})
    return Cluster(registry, redis, replicas, haproxy)
