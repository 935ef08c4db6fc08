"""Redis and HAProxy for the operations tests: real daemons on loopback, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from regauth.ops.registry_process import free_port

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Redis:
    """A private redis-server (no persistence) on a loopback port; `stop` and `start` again
    keep the port, as an outage and a recovery would."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_text = (self.workdir / "redis.log").read_text()
                raise RuntimeError(f"redis-server exited:\n{log_text}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


@dataclass
class Replica:
    """One backend server of the HAProxy config: the proxy port and its admin port."""

    port: int
    admin_port: int


SEND_PROXY = " send-proxy-v2"


def without_send_proxy(text: str) -> str:
    """The shipped config with `send-proxy-v2` taken off its `default-server` line: HAProxy
    then connects to the replicas without a PROXY protocol header (for replicas started
    without `--proxy-protocol`). Raises if the config no longer has that line."""
    lines = text.splitlines(keepends=True)
    found = [
        i
        for i, line in enumerate(lines)
        if line.lstrip().startswith("default-server") and SEND_PROXY in line
    ]
    if len(found) != 1:
        raise ValueError("haproxy.cfg: expected one `default-server ... send-proxy-v2` line")
    lines[found[0]] = lines[found[0]].replace(SEND_PROXY, "")
    return "".join(lines)


@dataclass
class HAProxy:
    """HAProxy running the shipped `deploy/haproxy/haproxy.cfg`, its addresses from the
    environment (as systemd or a container would set them).

    `proxy_protocol=True` runs the file as shipped: every connection to a replica starts with a
    PROXY v2 header, so the replicas must run with `--proxy-protocol 127.0.0.1/32`
    (REGAUTH_PROXY_PROTOCOL), and refuse connections from 127.0.0.1 without a header (tests
    then reach them through HAProxy, or send the header themselves). `False` (the default)
    runs it with `send-proxy-v2` taken out (`without_send_proxy`, written to the work
    directory), for replicas without the option that tests also call directly
    (test_scale_out.py)."""

    workdir: Path
    replicas: list[Replica]
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    proxy_protocol: bool = False

    @property
    def config(self) -> Path:
        """The config file HAProxy runs: the shipped one, or its copy without send-proxy-v2."""
        if self.proxy_protocol:
            return HAPROXY_CONFIG
        return self.workdir / "haproxy-no-proxy-protocol.cfg"

    def environment(self) -> dict[str, str]:
        env = {
            "REGAUTH_FRONTEND": f"127.0.0.1:{self.port}",
            "REGAUTH_STATS": f"127.0.0.1:{self.stats_port}",
            "REGAUTH_HAPROXY_PIDFILE": str(self.workdir / "haproxy.pid"),
        }
        for i, replica in enumerate(self.replicas, start=1):
            env[f"REGAUTH_REPLICA_{i}"] = f"127.0.0.1:{replica.port}"
            env[f"REGAUTH_REPLICA_{i}_ADMIN"] = str(replica.admin_port)
        return env

    def start(self) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.proxy_protocol:
            self.config.write_text(without_send_proxy(HAPROXY_CONFIG.read_text()))
        env = {**os.environ, **self.environment()}
        check = subprocess.run(
            [binary, "-c", "-f", str(self.config)], env=env, capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c failed:\n{check.stdout}{check.stderr}")
        log = (self.workdir / "haproxy.log").open("ab")
        # -db: stay in the foreground (this process is the one to stop).
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(self.config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"haproxy did not listen:\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def server_states(self) -> dict[str, str]:
        """Server name -> status (UP, DOWN, ...) from the stats socket page (CSV)."""
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5
        ) as response:
            lines = response.read().decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "regauth" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                states[row["svname"]] = row["status"]
        return states

    def wait_for(self, expected: dict[str, str], timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.server_states()
            if all(states.get(k, "").startswith(v) for k, v in expected.items()):
                return states
            time.sleep(0.2)
        raise AssertionError(f"HAProxy servers {states}, expected {expected}\n{self.log()}")

    def stop(self) -> None:
        _stop(self.process, signal.SIGUSR1)  # soft stop
        self.process = None
