"""Real registry clients: skopeo and containerd's ctr."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(cmd: list[str], timeout: float = 300) -> Result:
    done = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, text=True
    )
    return Result(done.returncode, done.stdout)


def skopeo(*args: str, timeout: float = 300) -> Result:
    return run(["skopeo", "--debug", *args], timeout)


class Containerd:
    """A private containerd daemon (own root, state and socket) for ctr."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("containerd")
        if binary is None:
            raise FileNotFoundError("containerd is not installed (apt-get install containerd)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(f"""version = 2
root = "{self.workdir / "root"}"
state = "{self.workdir / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.socket}"
""")
        log = (self.workdir / "containerd.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.ctr("version").ok:
                return
            time.sleep(0.2)
        raise RuntimeError("containerd did not start")

    def ctr(self, *args: str, timeout: float = 300) -> Result:
        return run(
            ["ctr", "--address", str(self.socket), "--namespace", "regauth-tests", *args], timeout
        )

    def trusting(self, netloc: str, ca: Path) -> list[str]:
        """ctr options for a registry at `netloc` served over TLS with `ca`: a hosts.toml, as
        the README's containerd snippet has it. (`--tlscacert` alone is not enough for a
        `localhost` registry: containerd 1.6 speaks plain HTTP to localhost first, and regauth
        answers plain HTTP with a 400 asking for TLS.)"""
        hosts = self.workdir / "certs.d"
        directory = hosts / netloc
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(f"""server = "https://{netloc}"
[host."https://{netloc}"]
  capabilities = ["pull", "resolve", "push"]
  ca = "{ca}"
""")
        return ["--hosts-dir", str(hosts)]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
