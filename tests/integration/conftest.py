"""Integration fixtures: real registries, real regauth processes, real clients, on loopback only.

The fixtures unit tests share (`password_hashes`, `certs_dir`, `write_policy`) are in
tests/conftest.py; the test policy and its constants in tests/support/policies.py.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.ops.registry_process import free_port
from tests.support.docker import DockerClient
from tests.support.docker import Dockerd
from tests.support.docker import daemon_trust
from tests.support.docker import loopback_name
from tests.support.invariant import RegistryWatch
from tests.support.invariant import assert_registry_saw_only_decided
from tests.support.invariant import capability_redactor
from tests.support.oci import make_layout
from tests.support.podman import PodmanClient
from tests.support.podman import PodmanStorage
from tests.support.policies import CLIENT_RULES
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE
from tests.support.proxy import ProxyProcess
from tests.support.proxy import start_proxy
from tests.support.tools import Containerd


@pytest.fixture
def registry_watches() -> dict[str, RegistryWatch]:
    """Per test: a RegistryWatch (tests/support/invariant.py) for every registry `make_registry`
    started, by URL; `make_proxy` adds each regauth in front of one."""
    return {}


@pytest.fixture
def make_registry(
    tmp_path: Path,
    certs_dir: Path,
    registry_watches: dict[str, RegistryWatch],
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., RegistryProcess]]:
    """Start real registries; at the end of the test, every registry with a regauth in front of
    it must have seen only requests regauth decided (issue 14's invariant). Tests that talk to
    a registry directly on purpose use `registry_watches[url].direct(...)`, or are marked
    `no_invariant` with the reason."""
    started: list[RegistryProcess] = []

    def make(
        auth: str = "none",
        name: str = "registry",
        realm: str | None = None,
        signing_certs: Path | None = None,
        htpasswd: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        port: int | None = None,
    ) -> RegistryProcess:
        token = None
        if auth == "token":
            bundle = tmp_path / f"{name}-bundle.pem"
            bundle.write_text(pki.bundle_pem(pki.load_signing_keys(signing_certs or certs_dir)))
            assert realm is not None, "token mode needs the realm (the proxy's token URL)"
            token = TokenAuth(realm, SERVICE, ISSUER, bundle)
        registry = RegistryProcess(
            tmp_path / name,
            port=port,
            token=token,
            htpasswd=htpasswd if auth == "htpasswd" else None,
            tls=tls,
        )
        registry.start()
        started.append(registry)
        # Regauth's own upstream discovery (inject with Bearer credentials) is allowed: it
        # carries its own User-Agent.
        registry_watches[registry.url] = RegistryWatch(registry, upstream_probes=1000)
        return registry

    yield make
    try:
        if request.node.get_closest_marker("no_invariant") is None:
            for registry in started:
                watch = registry_watches[registry.url]
                if watch.exchange_logs:
                    assert_registry_saw_only_decided(watch)
    finally:
        for registry in started:
            registry.stop()


@pytest.fixture
def make_proxy(
    tmp_path: Path, certs_dir: Path, registry_watches: dict[str, RegistryWatch]
) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def make(
        policy: Path, upstream: str | None, name: str = "proxy", **kwargs: object
    ) -> ProxyProcess:
        kwargs.setdefault("certs_dir", certs_dir)
        proxy = start_proxy(tmp_path / name, policy=policy, upstream=upstream, **kwargs)  # type: ignore[arg-type]
        started.append(proxy)
        watch = registry_watches.get(upstream or "")
        if watch is not None:
            env = kwargs.get("env")
            watch.redact = capability_redactor(policy, env if isinstance(env, dict) else None)
            watch.add_exchange_log(proxy.log_path)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, str]:
    """A small OCI layout (one gzip tar layer) and its manifest digest."""
    path = tmp_path / "layout"
    return path, make_layout(path)


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def token_registry_proxy(
    write_policy: Callable[..., Path],
    make_registry: Callable[..., RegistryProcess],
    make_proxy: Callable[..., ProxyProcess],
) -> tuple[RegistryProcess, ProxyProcess]:
    """A real registry in token mode trusting regauth's key, behind regauth in delegate mode:
    the registry alone decides whether regauth's tokens are good."""
    port = free_port()
    policy = write_policy(mode="delegate")
    # The realm must name the proxy's port before the proxy starts: reserve it first.
    registry = make_registry("token", realm=f"https://localhost:{port}/v2/token")
    proxy = make_proxy(policy, registry.url, port=port)
    return registry, proxy


@dataclass
class Guarded:
    """A real registry behind a real regauth: `enforce` (the registry has no auth) or
    `delegate` (the registry runs in token mode and checks regauth's tokens itself)."""

    mode: str
    registry: RegistryProcess
    proxy: ProxyProcess


@pytest.fixture
def guarded(
    write_policy: Callable[..., Path],
    make_registry: Callable[..., RegistryProcess],
    make_proxy: Callable[..., ProxyProcess],
) -> Callable[..., Guarded]:
    def start(mode: str = "enforce", host: str = "localhost") -> Guarded:
        """`host`: the name clients use (`loopback_name` for clients that speak plain HTTP to
        `localhost`)."""
        policy = write_policy(f"policy-{mode}.yaml", mode=mode, extra_rules=CLIENT_RULES)
        port = free_port()  # the registry's realm names the proxy: reserve its port first
        public_url = f"https://{host}:{port}"
        if mode == "delegate":
            registry = make_registry(
                "token", name=f"registry-{mode}", realm=f"{public_url}/v2/token"
            )
        else:
            registry = make_registry(name=f"registry-{mode}")
        proxy = make_proxy(
            policy,
            registry.url,
            name=f"proxy-{mode}",
            port=port,
            public_url=public_url if host != "localhost" else None,
        )
        return Guarded(mode, registry, proxy)

    return start


@pytest.fixture(scope="session")
def registry_name() -> Iterator[str]:
    """A registry name resolving to loopback that is not `localhost` (tests/support/docker.py
    `loopback_name`): for BuildKit, which speaks plain HTTP to `localhost`."""
    with loopback_name() as name:
        yield name


@pytest.fixture(scope="session")
def dockerd(registry_name: str, certs_dir: Path) -> Iterator[Dockerd]:
    # The loopback name first: Go's resolver rereads /etc/hosts only every 5 s.
    daemon = Dockerd(ca=certs_dir / pki.CA_CERT)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def docker_for(
    dockerd: Dockerd, tmp_path: Path
) -> Iterator[Callable[[ProxyProcess, str], DockerClient]]:
    """`docker_for(proxy, name)`: a docker CLI with its own config directory, the daemon
    trusting the proxy's CA for as long as the test runs."""
    with ExitStack() as stack:
        trusted: set[str] = set()

        def make(proxy: ProxyProcess, name: str = "docker") -> DockerClient:
            if proxy.netloc not in trusted:
                stack.enter_context(daemon_trust(proxy.netloc, proxy.ca))
                trusted.add(proxy.netloc)
            return DockerClient(dockerd, tmp_path / f"{name}-config", proxy.ca)

        yield make


@pytest.fixture(scope="session")
def podman_storage(tmp_path_factory: pytest.TempPathFactory) -> PodmanStorage:
    return PodmanStorage(tmp_path_factory.mktemp("podman"))


@pytest.fixture
def podman_for(
    podman_storage: PodmanStorage, tmp_path: Path
) -> Callable[[ProxyProcess, str], PodmanClient]:
    """`podman_for(proxy, name)`: podman with its own auth file, trusting the proxy's CA."""

    def make(proxy: ProxyProcess, name: str = "podman") -> PodmanClient:
        return PodmanClient(podman_storage, tmp_path / f"{name}-auth.json", proxy.certs_dir)

    return make
