"""./run_proxy.sh from the repository: the embedded default (local registry in token mode)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from regauth.registry_process import free_port
from tests.conftest import build_id
from tests.support.tools import skopeo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_proxy(tmp_path):
    port = free_port()
    certs = tmp_path / "certs"
    env = {**os.environ, "REGAUTH_REGISTRY_DIR": str(tmp_path / "registry"),
           "REGAUTH_LOG": str(tmp_path / "exchange.jsonl")}
    env.pop("REGAUTH_CI_PASSWORD_HASH", None)
    output = tmp_path / "run_proxy.out"
    process = subprocess.Popen([str(REPO / "run_proxy.sh"), "--listen", f"127.0.0.1:{port}",
                                "--certs-dir", str(certs)], cwd=REPO, env=env,
                               stdout=output.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        if f"listening at 127.0.0.1:{port}" in text:
            break
        if process.poll() is not None:
            pytest.fail(f"run_proxy.sh exited {process.returncode}:\n{text}")
        time.sleep(0.2)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("run_proxy.sh did not come up:\n" + output.read_text(errors="replace"))
    yield {"process": process, "port": port, "certs": certs, "output": output,
           "log": tmp_path / "exchange.jsonl"}
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_run_proxy_embedded_default(run_proxy, layout, tmp_path):
    port, certs = run_proxy["port"], run_proxy["certs"]
    text = run_proxy["output"].read_text()
    # Trust instructions for every client are printed.
    for needle in ("curl --cacert", "--dest-cert-dir", "/etc/docker/certs.d/localhost:",
                   "hosts.toml", "buildkitd.toml", f'[registry."localhost:{port}"]'):
        assert needle in text, needle
    registry_url = re.search(r"embedded registry: (http://127\.0\.0\.1:\d+)", text).group(1)
    # The embedded registry runs in token mode: without a token it refuses.
    try:
        urllib.request.urlopen(f"{registry_url}/v2/")
        raise AssertionError("the embedded registry must require tokens")
    except urllib.error.HTTPError as e:
        assert e.code == 401
    path, digest = layout
    netloc = f"localhost:{port}"
    # A builder pushes anonymously to its build repository.
    builder = skopeo("copy", "--dest-cert-dir", str(certs), f"oci:{path}:latest",
                     f"docker://{netloc}/builds/{build_id()}:1")
    assert builder.ok, builder.output
    # The README quick start: the ci account (random password made on first run).
    password = (certs / "private" / "ci-password").read_text().strip()
    assert (certs / "private" / "ci-password").stat().st_mode & 0o077 == 0
    demo = skopeo("copy", "--dest-cert-dir", str(certs), "--dest-creds", f"ci:{password}",
                  f"oci:{path}:latest", f"docker://{netloc}/demo/app:1")
    assert demo.ok, demo.output
    anonymous = skopeo("copy", "--dest-cert-dir", str(certs), f"oci:{path}:latest",
                       f"docker://{netloc}/demo/app:2")
    assert not anonymous.ok
    records = [json.loads(line) for line in run_proxy["log"].read_text().splitlines()]
    assert any(r["kind"] == "token" for r in records)
    assert any(r.get("repository") == "demo/app" and r["method"] == "PUT" and
               r["status"] == 201 for r in records)
    assert password not in run_proxy["log"].read_text()
    # Stopping the proxy stops the embedded registry.
    os.killpg(run_proxy["process"].pid, signal.SIGTERM)
    run_proxy["process"].wait(timeout=30)
    registry_port = int(registry_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", registry_port)) != 0:
                break
        time.sleep(0.2)
    else:
        raise AssertionError("the embedded registry outlived the proxy")


def test_run_proxy_rejects_unknown_options():
    done = subprocess.run([str(REPO / "run_proxy.sh"), "--no-such-option"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown option --no-such-option" in done.stderr
