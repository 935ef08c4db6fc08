"""A local distribution registry (Debian's `docker-registry`) on loopback.

Used by `./run_proxy.sh` as the embedded default upstream and by the test suite. The registry
runs either without auth, with htpasswd auth, or in token mode trusting regauth's signing
certificates, so the tokens regauth issues are checked by a real registry.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REGISTRY_BINARY = "docker-registry"
# The start-up readiness check's User-Agent: regauth's own request, told apart in the
# registry's access log from anything regauth forwards.
READY_AGENT = "regauth-registry-start"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary() -> str:
    path = shutil.which(REGISTRY_BINARY)
    if path is None:
        raise FileNotFoundError(
            "docker-registry is not installed: run `sudo apt-get install docker-registry` "
            "(Debian/Ubuntu) or pass --upstream URL"
        )
    return path


@dataclass(frozen=True)
class TokenAuth:
    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


def registry_config(
    storage: Path,
    port: int,
    token: TokenAuth | None = None,
    htpasswd: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    secret: str | None = None,
    drain_timeout: int = 0,
    host: str = "127.0.0.1",
) -> dict:
    """distribution's configuration (docs/configuration.md). `secret` signs upload state: every
    process serving the same storage needs the same one, or uploads started on one fail on the
    next. `drain_timeout` (seconds, 0: none) is `http.draintimeout`: on SIGTERM the registry
    closes its listener at once and finishes the requests it is serving for that long. `host`:
    the loopback address to listen on (an IPv6 one without brackets)."""
    config: dict = {
        "version": 0.1,
        "log": {
            "level": "info",
            "accesslog": {"disabled": False},
            "fields": {"service": "registry"},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": f"{_bracketed(host)}:{port}",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
            "secret": secret or os.urandom(16).hex(),
        },
    }
    if drain_timeout:
        config["http"]["draintimeout"] = f"{drain_timeout}s"
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    if token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.rootcertbundle),
            }
        }
    elif htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "staging-registry", "path": str(htpasswd)}}
    return config


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:
    # The registry must not outlive regauth (or a test) that started it, even on SIGKILL.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` (a bind with SO_REUSEADDR succeeds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RegistryProcess:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        token: TokenAuth | None = None,
        htpasswd: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        drain_timeout: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.tls = tls
        self.port = port or free_port()
        self.token = token
        self.htpasswd = htpasswd
        self.drain_timeout = drain_timeout
        self.secret = os.urandom(16).hex()  # the same across restarts (upload state)
        self.process: subprocess.Popen[bytes] | None = None
        self.draining: list[subprocess.Popen[bytes]] = []  # replaced, finishing their requests
        self.log_path = workdir / "registry.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{_bracketed(self.host)}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = find_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        storage = self.workdir / "data"
        storage.mkdir(exist_ok=True)
        config_path = self.workdir / "config.yml"
        config_path.write_text(
            yaml.safe_dump(
                registry_config(
                    storage,
                    self.port,
                    self.token,
                    self.htpasswd,
                    self.tls,
                    self.secret,
                    self.drain_timeout,
                    self.host,
                )
            )
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                context = ssl._create_unverified_context() if self.tls else None  # readiness only
                probe = urllib.request.Request(
                    f"{self.url}/v2/", headers={"User-Agent": READY_AGENT}
                )
                urllib.request.urlopen(probe, timeout=1, context=context).close()
                return
            except urllib.error.HTTPError:
                return  # 401 in token/htpasswd mode: it is up
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not come up on {self.url}; see {self.log_path}")

    def restart(self, timeout: float = 20.0) -> None:
        """Replace the process with a new one on the same port that reads its configuration
        (the rootcertbundle) afresh. The old one gets SIGTERM; with `drain_timeout` it closes
        its listener at once and finishes the requests it is serving while the new one starts
        (same storage, same upload secret), and is killed if it is still there after
        `drain_timeout` + 5 s. Raises RuntimeError if the new one does not come up."""
        old = self.process
        self.process = None
        deadline = time.monotonic() + timeout
        if old is not None and old.poll() is None:
            old.send_signal(signal.SIGTERM)
            self.draining.append(old)
            threading.Thread(
                target=self._reap, args=(old,), daemon=True, name="registry-reaper"
            ).start()
            while not _port_free(self.port):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"docker-registry (pid {old.pid}) still listens on "
                        f"port {self.port} {timeout:.0f} s after SIGTERM"
                    )
                time.sleep(0.01)
        self.start(max(1.0, deadline - time.monotonic()))

    def _reap(self, old: subprocess.Popen[bytes]) -> None:
        try:
            old.wait(timeout=self.drain_timeout + 5)
        except subprocess.TimeoutExpired:
            old.kill()
            old.wait()
        finally:
            if old in self.draining:
                self.draining.remove(old)

    def stop(self) -> None:
        for process in [self.process, *self.draining]:
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def requests_seen(self) -> list[str]:
        """Request lines from the registry's access log (one per HTTP request it received)."""
        if not self.log_path.exists():
            return []
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            # Access log lines look like Apache combined logs: ... "GET /v2/ HTTP/1.1" 401 ...
            if '" ' in line and " HTTP/" in line and not line.startswith("time="):
                start = line.find('"')
                lines.append(line[start + 1 : line.find('"', start + 1)])
        return lines
