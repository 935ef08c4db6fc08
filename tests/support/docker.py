"""A private Docker engine for the client tests: Debian's dockerd 20.10 and its CLI.

The daemon runs as root with its own data root, exec root, pid file, socket and libtrust key,
vfs storage (works on any file system, no overlay mounts) and no network setup (no iptables,
no bridge): the tests pull, push and build images whose Dockerfiles never RUN anything. The
CLI is always `/usr/bin/docker` (Debian's, the daemon's version; `/usr/local/bin/docker` may
be another client) with a private `DOCKER_CONFIG` per test, so the credentials `docker login`
stores never touch the machine's or another test's.

Trust: the daemon (pull, push, and the registry requests of its embedded BuildKit) reads
`/etc/docker/certs.d/HOST:PORT/ca.crt` at each operation; with `DOCKER_BUILDKIT=1` the *CLI*
fetches the tokens (BuildKit's client-side token authority), so the CLI process gets the CA
through `SSL_CERT_FILE`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import Result

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
CERTS_D = Path("/etc/docker/certs.d")
HOSTS = Path("/etc/hosts")
# A registry name that resolves to loopback but is not `localhost`: BuildKit and containerd
# speak plain HTTP to `localhost`, `127.0.0.1` and `::1` (containerd's docker.MatchLocalhost),
# and regauth answers plain HTTP with a 400 asking for TLS. `.test` is reserved (RFC 2606).
LOOPBACK_NAME = "regauth.test"


# A registry name on IPv6 loopback: dockerd counts every registry resolving into 127.0.0.0/8
# as insecure and then presents no client certificate (moby registry.LoadInsecureRegistries);
# `::1` is not in that list.
IPV6_LOOPBACK_NAME = "regauth6.test"


@contextmanager
def loopback_name(name: str = LOOPBACK_NAME, address: str = "127.0.0.1") -> Iterator[str]:
    """Make `name` resolve to `address` for the processes of this machine (an /etc/hosts line,
    removed afterwards if this added it)."""
    line = f"{address} {name}  # regauth tests\n"
    text = HOSTS.read_text()
    added = not any(
        entry.split()[1:2] == [name]
        for entry in text.splitlines()
        if entry.strip() and not entry.lstrip().startswith("#")
    )
    if added:
        HOSTS.write_text(text + ("" if text.endswith("\n") else "\n") + line)
    try:
        yield name
    finally:
        if added:
            HOSTS.write_text(
                "".join(entry for entry in HOSTS.read_text().splitlines(True) if entry != line)
            )


class Dockerd:
    """One private dockerd. Start it once per session; clients are `DockerClient`s."""

    def __init__(self, ca: Path | None = None) -> None:
        """`ca`: a CA the daemon trusts besides the system's. Its embedded BuildKit (20.10)
        reads `certs.d` only for registries in the daemon's index configuration (insecure
        registries and mirrors); for any other registry it trusts the system's CAs, which Go
        reads from `SSL_CERT_FILE` when it is set (as a user would `update-ca-certificates`)."""
        # Unix socket paths are limited to 108 bytes: keep the daemon's directories short
        # (containerd's sockets live under the exec root).
        self.workdir = Path(tempfile.mkdtemp(prefix="regauth-dockerd-"))
        self.ca = ca
        self.socket = self.workdir / "docker.sock"
        self.log_path = self.workdir / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60.0) -> None:
        for binary in (DOCKERD, DOCKER):
            if not os.access(binary, os.X_OK):
                raise FileNotFoundError(f"{binary} is missing (apt-get install docker.io)")
        # 20.10 writes its libtrust identity to /etc/docker/key.json unless told otherwise.
        daemon_json = self.workdir / "daemon.json"
        daemon_json.write_text(json.dumps({"deprecated-key-path": str(self.workdir / "key.json")}))
        log = self.log_path.open("wb")
        env = dict(os.environ)
        if self.ca is not None:
            bundle = self.workdir / "ca-bundle.pem"
            system = Path("/etc/ssl/certs/ca-certificates.crt")
            bundle.write_bytes(
                (system.read_bytes() if system.exists() else b"") + self.ca.read_bytes()
            )
            env["SSL_CERT_FILE"] = str(bundle)
        self.process = subprocess.Popen(
            [
                DOCKERD,
                "--config-file",
                str(daemon_json),
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--data-root",
                str(self.workdir / "data"),
                "--exec-root",
                str(self.workdir / "x"),
                "--pidfile",
                str(self.workdir / "pid"),
                "-H",
                self.host,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        probe = DockerClient(self, self.workdir / "probe-config")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {self.process.returncode}:\n"
                    f"{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            if self.socket.exists() and probe.run("version").ok:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # dockerd stops its own containerd
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class DockerClient:
    """The docker CLI against one daemon, with its own `DOCKER_CONFIG` directory."""

    daemon: Dockerd
    config_dir: Path
    ca: Path | None = None  # for BuildKit's client-side token requests (SSL_CERT_FILE)

    def env(self, buildkit: bool = False) -> dict[str, str]:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DOCKER_HOST": self.daemon.host,
            "DOCKER_CONFIG": str(self.config_dir),
            "DOCKER_BUILDKIT": "1" if buildkit else "0",
        }
        if self.ca is not None:
            env["SSL_CERT_FILE"] = str(self.ca)
        return env

    def run(
        self, *args: str, buildkit: bool = False, input: str | None = None, timeout: float = 300
    ) -> Result:
        done = subprocess.run(
            [DOCKER, *args],
            input=input,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=self.env(buildkit),
        )
        return Result(done.returncode, done.stdout)

    def login(self, netloc: str, user: str, password: str) -> Result:
        return self.run("login", "-u", user, "--password-stdin", netloc, input=password)

    def build(self, context: Path, tag: str) -> Result:
        """`DOCKER_BUILDKIT=1 docker build`: the embedded BuildKit, tokens fetched by the CLI."""
        return self.run("build", "--progress", "plain", "-t", tag, str(context), buildkit=True)

    def config(self) -> dict:
        path = self.config_dir / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def import_image(self, ref: str, content: bytes) -> Result:
        """A one-layer image holding `/content.txt`, made from a tarball (no network, no base
        image, no build)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("content.txt")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        with tempfile.NamedTemporaryFile(suffix=".tar") as f:
            f.write(buf.getvalue())
            f.flush()
            return self.run("import", f.name, ref)


@contextmanager
def daemon_files(netloc: str, files: dict[str, Path]) -> Iterator[Path]:
    """Put `files` (name in certs.d → source) into `/etc/docker/certs.d/HOST:PORT/` for the
    docker daemons on this machine (`ca.crt`, `client.cert`, `client.key`); remove exactly
    what was created."""
    created: list[Path] = []
    for directory in (CERTS_D.parent, CERTS_D, CERTS_D / netloc):
        if not directory.exists():
            directory.mkdir()
            created.append(directory)
    targets = [CERTS_D / netloc / name for name in files]
    for target in targets:
        if target.exists():
            raise FileExistsError(f"{target} exists already: another registry uses {netloc}")
    for name, source in files.items():
        shutil.copyfile(source, CERTS_D / netloc / name)
    try:
        yield CERTS_D / netloc
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass  # someone else put something there meanwhile: leave it


@contextmanager
def daemon_trust(netloc: str, ca: Path) -> Iterator[Path]:
    """Install `ca` as the CA of registry `netloc` for the docker daemons on this machine
    (`/etc/docker/certs.d/HOST:PORT/ca.crt`); remove exactly what was created."""
    created: list[Path] = []
    for directory in (CERTS_D.parent, CERTS_D, CERTS_D / netloc):
        if not directory.exists():
            directory.mkdir()
            created.append(directory)
    target = CERTS_D / netloc / "ca.crt"
    if target.exists():
        raise FileExistsError(f"{target} exists already: another registry uses {netloc}")
    shutil.copyfile(ca, target)
    try:
        yield target
    finally:
        target.unlink(missing_ok=True)
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass  # someone else put something there meanwhile: leave it
