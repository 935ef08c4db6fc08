"""Podman (Debian's 4.3) with private storage and configuration, for the client tests.

Everything podman would read or write machine-wide is redirected: image storage (`--root`,
`--runroot`, vfs), its temporary directory, `containers.conf` (no systemd here: cgroupfs, file
events, a CNI network directory of its own), `storage.conf`, `registries.conf` (no search
registries) and the auth file (`REGISTRY_AUTH_FILE`, one per client). Trust is per command:
`--cert-dir` with regauth's CA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import Result

PODMAN = "/usr/bin/podman"


class PodmanStorage:
    """Storage and configuration shared by the session's podman clients."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which(PODMAN) is None:
            raise FileNotFoundError("podman is missing (apt-get install podman)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.root = workdir / "root"
        self.runroot = workdir / "run"
        self.tmpdir = workdir / "tmp"
        self.containers_conf = workdir / "containers.conf"
        self.containers_conf.write_text(
            '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
            f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{workdir / "net"}"\n'
        )
        self.storage_conf = workdir / "storage.conf"
        self.storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.runroot}"\ngraphroot = "{self.root}"\n'
        )
        self.registries_conf = workdir / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")

    def global_options(self) -> list[str]:
        return [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            str(self.tmpdir),
        ]


@dataclass
class PodmanClient:
    storage: PodmanStorage
    auth_file: Path
    cert_dir: Path  # regauth's certs directory (ca.crt, no keys)

    def run(self, *args: str, input: str | None = None, timeout: float = 300) -> Result:
        if not self.auth_file.exists():
            self.auth_file.parent.mkdir(parents=True, exist_ok=True)
            self.auth_file.write_text("{}")  # podman 4.3 refuses a missing REGISTRY_AUTH_FILE
        env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.storage.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage.storage_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.storage.registries_conf),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
        }
        done = subprocess.run(
            [PODMAN, *self.storage.global_options(), *args],
            input=input,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=env,
        )
        return Result(done.returncode, done.stdout)

    def remote(self, *args: str, input: str | None = None) -> Result:
        """A command that talks to a registry: `podman CMD --cert-dir CERTS ARGS...`."""
        return self.run(args[0], "--cert-dir", str(self.cert_dir), *args[1:], input=input)

    def login(self, netloc: str, user: str, password: str) -> Result:
        return self.remote("login", "-u", user, "--password-stdin", netloc, input=password)
