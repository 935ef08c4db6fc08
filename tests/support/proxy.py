"""Start the real regauth (`regauth serve`, the launcher run_proxy.sh uses) for tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from regauth.ops.registry_process import free_port

REGAUTH = Path(sys.executable).with_name("regauth")


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    certs_dir: Path
    log_path: Path
    output_path: Path
    admin_port: int | None = None  # the admin listener (/metrics, /healthz, /readyz)
    host: str = "localhost"  # the name clients use (the public URL's host)

    @property
    def url(self) -> str:
        return f"https://{self.netloc}"

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.certs_dir / "ca.crt"

    @property
    def pid(self) -> int:
        return self.process.pid

    def records(self, settle: float = 0.1, timeout: float = 3.0) -> list[dict]:
        """The exchange log's records once it stopped growing for `settle` seconds.

        A flow is recorded when it ends, and a streamed response ends after the client has
        read its last byte: a test that reads the log right after a reply must wait for it.
        """
        deadline = time.monotonic() + timeout
        text = self._log_text()
        while time.monotonic() < deadline:
            time.sleep(settle)
            again = self._log_text()
            if again == text:
                break
            text = again
        return [json.loads(line) for line in text.splitlines() if line]

    def _log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def peak_rss_kib(self) -> int:
        return peak_rss_kib(self.pid)

    def stop(self) -> int:
        """SIGTERM to the whole process group (the process was started in a session of its
        own): a wrapper such as `faketime` forks regauth as its child, and signalling the
        wrapper alone left regauth running after the test."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            try:  # the wrapper is gone; its child may not be
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return self.process.returncode


def start_proxy(
    workdir: Path,
    certs_dir: Path,
    policy: Path,
    upstream: str | None,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
    upstream_ca: Path | None = None,
    wait: bool = True,
    timeout: float = 30.0,
    port: int | None = None,
    web_port: int | None = None,
    prefix: list[str] | None = None,
    listen_host: str = "127.0.0.1",
    public_url: str | None = None,
    admin_listen: str = "off",
) -> ProxyProcess:
    # The admin listener is off unless a test asks for it (`127.0.0.1:0`: any free port): its
    # readiness probe sends GET /v2/ to the upstream, which tests that count what reaches the
    # upstream must not see.
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = workdir / "exchange.jsonl"
    output_path = workdir / "regauth.out"
    # `prefix` wraps the process, e.g. ["faketime", "-f", "+2h"] for a skewed clock.
    listen = f"[{listen_host}]" if ":" in listen_host else listen_host  # "": every address
    cmd = [
        *(prefix or []),
        str(REGAUTH),
        "serve",
        "--listen",
        f"{listen}:{port}",
        "--certs-dir",
        str(certs_dir),
        "--policy",
        str(policy),
        "--log",
        str(log_path),
        "--registry-dir",
        str(workdir / "registry"),
        "--admin-listen",
        admin_listen,
    ]
    if upstream:
        cmd += ["--upstream", upstream]
    if public_url:
        cmd += ["--public-url", public_url]
    if upstream_ca:
        cmd += ["--upstream-ca", str(upstream_ca)]
    if web_port:
        cmd += ["--web", "--web-port", str(web_port)]
    if extra:
        cmd += ["--", *extra]
    process = subprocess.Popen(
        cmd,
        stdout=output_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    proxy = ProxyProcess(process, port, workdir, certs_dir, log_path, output_path)
    if public_url:
        proxy.host = urlsplit(public_url).hostname or "localhost"
    if not wait:
        return proxy
    deadline = time.monotonic() + timeout
    # mitmproxy prints the wildcard addresses (0.0.0.0, ::) as `*`.
    pattern = re.compile(rf"listening at (?:{re.escape(listen)}|\*):{port}")
    admin = re.compile(r"regauth admin listening at http://[^ ]*:(\d+)/")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"regauth exited with {process.returncode}:\n{proxy.output()}")
        output = proxy.output()
        found = admin.search(output)
        if pattern.search(output) and (found or admin_listen == "off"):
            proxy.admin_port = int(found.group(1)) if found else None
            return proxy
        time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"regauth did not start listening:\n{proxy.output()}")
