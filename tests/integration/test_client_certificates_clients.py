"""Every client regauth serves, with a build's client certificate and no login, against
distribution 2.8 behind regauth (issue 23): podman and buildah (`--cert-dir`), ctr
(hosts.toml `client`), docker (`/etc/docker/certs.d/HOST:PORT/client.cert`) and BuildKit
inside dockerd (the same files; its token requests come from the CLI without a certificate,
so its registry requests are decided by the certificate itself, `gate._by_certificate`).
skopeo and curl are in test_client_certificates.py.

Each client pushes to its own `builds/ID`, and its push to another build's repository is
refused with nothing written. The registry is reached as `regauth6.test` on `::1`: dockerd
sends no client certificate to a registry that resolves into 127.0.0.0/8.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from regauth.mtls.identity import parse_subject
from regauth.ops import client_ca
from tests.integration.test_client_certificates import BUILD_RULES
from tests.support.docker import CERTS_D
from tests.support.docker import IPV6_LOOPBACK_NAME
from tests.support.docker import DockerClient
from tests.support.docker import Dockerd
from tests.support.docker import daemon_files
from tests.support.docker import loopback_name
from tests.support.oci import archive
from tests.support.oci import make_layout
from tests.support.podman import PodmanClient
from tests.support.services import free_port

BUILDAH = "/usr/bin/buildah"


@pytest.fixture(scope="module")
def ipv6_name():
    with loopback_name(IPV6_LOOPBACK_NAME, "::1") as name:
        time.sleep(5.5)  # Go rereads /etc/hosts every 5 s (dockerd may have read it already)
        yield name


@pytest.fixture
def setup(tmp_path, certs_dir, write_policy, make_registry, make_proxy, ipv6_name):
    certs = tmp_path / "certs"
    shutil.copytree(certs_dir, certs)
    policy = write_policy(extra_rules=BUILD_RULES)
    registry = make_registry()
    port = free_port()
    proxy = make_proxy(
        policy,
        registry.url,
        certs_dir=certs,
        port=port,
        listen_host="::1",
        public_url=f"https://{ipv6_name}:{port}",
    )
    regauth = str(Path(".venv/bin/regauth").resolve())

    def issue(build: str) -> Path:
        out = tmp_path / f"cert-{build}"
        done = subprocess.run(
            [
                regauth,
                "certs",
                "client",
                "--dir",
                str(certs),
                "--build",
                build,
                "--out",
                str(out),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return out

    def refused_dirs() -> dict[str, Path]:
        """Certificate directories every client must be refused with, for build b1: one of
        another client CA, one expired, one revoked by serial (applied within a second)."""
        out: dict[str, Path] = {}
        other = tmp_path / "other-ca"
        client_ca.init_client_ca(other)
        subject = parse_subject("build", "b1")
        now = dt.datetime.now(dt.UTC)
        made = {
            "another-ca": client_ca.issue_client_certificate(
                other, subject, dt.timedelta(minutes=30)
            ),
            "expired": client_ca.issue_client_certificate(
                certs, subject, dt.timedelta(minutes=1), now - dt.timedelta(hours=1)
            ),
            "revoked": client_ca.issue_client_certificate(certs, subject, dt.timedelta(minutes=30)),
        }
        for name, issued in made.items():
            directory = tmp_path / f"refused-{name}"
            directory.mkdir()
            (directory / "client.key").write_bytes(issued.key_pem)
            (directory / "client.key").chmod(0o600)
            (directory / "client.cert").write_bytes(issued.cert_pem)
            (directory / "ca.crt").write_bytes(proxy.ca.read_bytes())
            out[name] = directory
        done = subprocess.run(
            [regauth, "certs", "revoke", "--dir", str(certs), "--serial", made["revoked"].serial],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        time.sleep(2.5)  # the watcher checks every second
        return out

    return registry, proxy, issue, refused_dirs


def _stored(registry, repository: str) -> bool:
    return (registry.workdir / "data/docker/registry/v2/repositories" / repository).exists()


def _refused(output: str) -> bool:
    text = output.lower()
    words = ("denied", "unauthorized", "authentication required", "401", "insufficient_scope")
    return any(w in text for w in words)


def test_podman_pushes_with_a_client_certificate(setup, podman_storage, tmp_path, layout):
    registry, proxy, issue, refused_dirs = setup
    path, _ = layout
    mine = issue("b1")
    podman = PodmanClient(podman_storage, tmp_path / "auth.json", mine)
    pulled = podman.run("pull", f"oci:{path}:latest")
    assert pulled.ok, pulled.output
    image = pulled.output.strip().splitlines()[-1]
    ours = podman.remote("push", image, f"docker://{proxy.netloc}/builds/b1/podman:1")
    assert ours.ok, ours.output
    assert _stored(registry, "builds/b1/podman")
    theirs = podman.remote("push", image, f"docker://{proxy.netloc}/builds/b2/podman:1")
    assert not theirs.ok and _refused(theirs.output), theirs.output
    assert not _stored(registry, "builds/b2/podman")
    for name, directory in refused_dirs().items():
        bad = PodmanClient(podman_storage, tmp_path / f"auth-{name}.json", directory)
        done = bad.remote("push", image, f"docker://{proxy.netloc}/builds/b1/podman-{name}:1")
        assert not done.ok, (name, done.output)
        assert not _stored(registry, f"builds/b1/podman-{name}"), name


def test_buildah_pushes_with_a_client_certificate(setup, podman_storage, tmp_path, layout):
    registry, proxy, issue, refused_dirs = setup
    path, _ = layout
    mine = issue("b1")
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(podman_storage.containers_conf),
        "CONTAINERS_STORAGE_CONF": str(podman_storage.storage_conf),
        "CONTAINERS_REGISTRIES_CONF": str(podman_storage.registries_conf),
        "REGISTRY_AUTH_FILE": str(tmp_path / "buildah-auth.json"),
    }
    (tmp_path / "buildah-auth.json").write_text("{}")
    options = [
        "--root",
        str(podman_storage.root),
        "--runroot",
        str(podman_storage.runroot),
        "--storage-driver",
        "vfs",
    ]

    def buildah(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BUILDAH, *options, *args], env=env, capture_output=True, text=True, timeout=300
        )

    pulled = buildah("pull", f"oci:{path}:latest")
    assert pulled.returncode == 0, pulled.stderr
    image = pulled.stdout.strip().splitlines()[-1]
    ours = buildah(
        "push", "--cert-dir", str(mine), image, f"docker://{proxy.netloc}/builds/b1/buildah:1"
    )
    assert ours.returncode == 0, ours.stderr
    assert _stored(registry, "builds/b1/buildah")
    theirs = buildah(
        "push", "--cert-dir", str(mine), image, f"docker://{proxy.netloc}/builds/b2/buildah:1"
    )
    assert theirs.returncode != 0 and _refused(theirs.stderr), theirs.stderr
    assert not _stored(registry, "builds/b2/buildah")
    for name, directory in refused_dirs().items():
        done = buildah(
            "push", "--cert-dir", str(directory), image,
            f"docker://{proxy.netloc}/builds/b1/buildah-{name}:1",
        )  # fmt: skip
        assert done.returncode != 0, (name, done.stderr)
        assert not _stored(registry, f"builds/b1/buildah-{name}"), name


def _hosts(tmp_path: Path, netloc: str, cert_dir: Path) -> Path:
    """A containerd hosts directory whose hosts.toml presents the pair in `cert_dir`."""
    hosts = tmp_path / f"hosts-{cert_dir.name}"
    directory = hosts / netloc
    directory.mkdir(parents=True)
    ca, cert, key = (cert_dir / n for n in ("ca.crt", "client.cert", "client.key"))
    (directory / "hosts.toml").write_text(
        f'server = "https://{netloc}"\n'
        f'[host."https://{netloc}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        f'  ca = "{ca}"\n'
        f'  client = [["{cert}", "{key}"]]\n'
    )
    return hosts


def test_ctr_pushes_with_a_client_certificate(setup, containerd, tmp_path):
    registry, proxy, issue, refused_dirs = setup
    mine = issue("b1")
    hosts = _hosts(tmp_path, proxy.netloc, mine)
    layout = tmp_path / "ctr-layout"
    make_layout(layout)
    image = archive(layout, tmp_path / "ctr.tar")
    base = f"{proxy.netloc}/builds/b1/ctr"
    assert containerd.ctr("images", "import", "--base-name", base, str(image)).ok
    ours = containerd.ctr("images", "push", "--hosts-dir", str(hosts), f"{base}:latest")
    assert ours.ok, ours.output
    assert _stored(registry, "builds/b1/ctr")
    other = f"{proxy.netloc}/builds/b2/ctr:latest"
    assert containerd.ctr("images", "tag", "--force", f"{base}:latest", other).ok
    theirs = containerd.ctr("images", "push", "--hosts-dir", str(hosts), other)
    assert not theirs.ok and _refused(theirs.output), theirs.output
    assert not _stored(registry, "builds/b2/ctr")
    for name, directory in refused_dirs().items():
        ref = f"{proxy.netloc}/builds/b1/ctr-{name}:latest"
        assert containerd.ctr("images", "tag", "--force", f"{base}:latest", ref).ok
        done = containerd.ctr(
            "images", "push", "--hosts-dir", str(_hosts(tmp_path, proxy.netloc, directory)), ref
        )
        assert not done.ok, (name, done.output)
        assert not _stored(registry, f"builds/b1/ctr-{name}"), name


def test_docker_and_its_buildkit_with_a_client_certificate(setup, dockerd, tmp_path, certs_dir):
    """dockerd's BuildKit reads the list of `certs.d` directories when the daemon starts
    (moby 20.10 `Daemon.RegistryHosts`), so this test starts a daemon of its own after the
    files are in place; the session's daemon, started before, is the control without them."""
    registry, proxy, issue, refused_dirs = setup
    mine = issue("b1")
    files = {name: mine / name for name in ("ca.crt", "client.cert", "client.key")}
    bad_dirs = refused_dirs()
    ours = f"{proxy.netloc}/builds/b1/docker:1"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {ours}\nLABEL built-by=regauth-tests\n")
    with daemon_files(proxy.netloc, files):
        daemon = Dockerd(ca=certs_dir / "ca.crt")
        daemon.start()
        try:
            docker = DockerClient(daemon, tmp_path / "docker-config", proxy.ca)
            assert docker.import_image(ours, b"from a build with a client certificate\n").ok
            pushed = docker.run("push", ours)
            assert pushed.ok, pushed.output
            assert _stored(registry, "builds/b1/docker")
            theirs = f"{proxy.netloc}/builds/b2/docker:1"
            assert docker.run("tag", ours, theirs).ok
            refused = docker.run("push", theirs)
            assert not refused.ok and _refused(refused.output), refused.output
            assert not _stored(registry, "builds/b2/docker")
            # dockerd reads certs.d at each push: the refused certificates, one after another.
            for name, directory in bad_dirs.items():
                for file in ("client.cert", "client.key"):
                    shutil.copyfile(directory / file, CERTS_D / proxy.netloc / file)
                ref = f"{proxy.netloc}/builds/b1/docker-{name}:1"
                assert docker.run("tag", ours, ref).ok
                done = docker.run("push", ref)
                assert not done.ok, (name, done.output)
                assert not _stored(registry, f"builds/b1/docker-{name}"), name
            for file in ("client.cert", "client.key"):
                shutil.copyfile(files[file], CERTS_D / proxy.netloc / file)
            # BuildKit inside dockerd builds FROM the build's private image, no login anywhere.
            assert docker.run("rmi", ours, theirs).ok
            built = docker.build(context, "regauth-test/from-b1")
            assert built.ok, built.output
            assert "auths" not in docker.config()
        finally:
            daemon.stop()
        # The session's daemon started before the files existed: its BuildKit presents no
        # certificate, and the private base is refused to an anonymous build.
        control = DockerClient(dockerd, tmp_path / "control-config", proxy.ca)
        denied = control.build(context, "regauth-test/from-b1-anonymous")
        assert not denied.ok and _refused(denied.output), denied.output
    reasons = [(r.get("decision") or {}).get("reason") or "" for r in proxy.records()]
    assert any(
        "client certificate (build b1) grants repository:builds/b1/docker:pull" == r
        for r in reasons
    ), reasons
