"""Exchange-log rotation under load (issue 26, item 1), on the whole deployment: two replicas
behind the shipped HAProxy config with Redis (tests/support/cluster.py), a real registry,
clients running all along.

The log of each replica is rotated 20 times while three httpclient threads and a skopeo loop
run: 17 times by hand (`mv`, then `SIGHUP`, `SIGUSR1` or `POST /log/reopen` with the admin
token, in turn), 3 times by `logrotate` running the shipped deploy/logrotate/regauth (its log
path moved to the test's directories and its `systemctl reload` replaced by the `kill -HUP`
that the unit's ExecReload= sends). Then:

- every line of every file (plain and `.gz`) parses as JSON;
- every request the httpclient threads made (a unique path each: challenges, token requests,
  forwarded GETs) is in exactly one record across all files of both replicas, and the number
  of such records equals the number of requests made;
- every skopeo push completed, and the registry saw only requests some file records as
  forwarded (the registry invariant of tests/integration/conftest.py, over all the files);
- both replicas are still the processes started at the beginning.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from regauth.mitm.admin_auth import admin_token_path
from tests.support.cluster import Cluster
from tests.support.cluster import start_cluster
from tests.support.httpclient import get_token
from tests.support.httpclient import request
from tests.support.oci import make_layout
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import ProxyProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOGROTATE = REPO / "deploy" / "logrotate" / "regauth"
ADMIN_SECRET = "rotation-admin-secret"
ROTATIONS = 20
BY_LOGROTATE = 3  # the last rotations
MARKER = re.compile(r"rot-\d+-\d+")


@pytest.fixture
def cluster(tmp_path, write_policy, make_registry, make_proxy) -> Iterator[Cluster]:
    stop: list = []
    try:
        yield start_cluster(tmp_path, write_policy, make_registry, make_proxy, stop)
    finally:
        for done in reversed(stop):
            done()


def _files(replica: ProxyProcess) -> list[Path]:
    return sorted(replica.log_path.parent.glob(replica.log_path.name + "*"))


def _lines(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    text = data.decode()
    assert not text or text.endswith("\n"), f"{path} ends inside a record"
    return text.splitlines()


def _admin_post(replica: ProxyProcess, target: str) -> dict:
    import urllib.request

    call = urllib.request.Request(
        f"http://127.0.0.1:{replica.admin_port}{target}",
        method="POST",
        data=b"",
        headers={"Authorization": f"Bearer {ADMIN_SECRET}"},
    )
    with urllib.request.urlopen(call, timeout=10) as response:
        return json.loads(response.read())


def _wait_for_file(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not reopened"
        time.sleep(0.01)


class Clients:
    """Three threads of single requests through HAProxy, each with a unique path (marker
    `rot-T-N`): an anonymous challenge, an anonymous token request, a forwarded GET with ci's
    token (the registry answers 404). `made` is every marker whose answer came back."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.made: list[str] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        token = get_token(
            cluster.port, cluster.ca, ["repository:apps/rot:pull"], SERVICE, ("ci", PASSWORDS["ci"])
        )
        assert token.status == 200, token.body
        self.bearer = {"Authorization": f"Bearer {token.json()['token']}"}
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(3)]

    def _one(self, marker: str, kind: int) -> tuple[int, int]:
        port, ca = self.cluster.port, self.cluster.ca
        if kind == 0:
            return request(port, ca, "GET", f"/v2/apps/rot/manifests/{marker}").status, 401
        if kind == 1:
            scope = f"repository:apps/{marker}:pull"
            return get_token(port, ca, [scope], SERVICE).status, 200
        reply = request(port, ca, "GET", f"/v2/apps/rot/manifests/{marker}", self.bearer)
        return reply.status, 404

    def _run(self, t: int) -> None:
        n = 0
        while not self.stop.is_set():
            marker = f"rot-{t}-{n}"
            try:
                status, expected = self._one(marker, n % 3)
            except OSError as e:
                with self._lock:
                    self.failures.append(f"{marker}: {e!r}")
            else:
                with self._lock:
                    self.made.append(marker)
                    if status != expected:
                        self.failures.append(f"{marker}: {status} (expected {expected})")
            n += 1

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _skopeo_loop(cluster: Cluster, tmp_path: Path, stop: threading.Event, results: list) -> None:
    i = 0
    while not stop.is_set():
        layout = tmp_path / f"layout-{i}"
        make_layout(layout, files={f"file-{i}": os.urandom(64 * 1024)})
        results.append(
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--retry-times",
                    "3",
                    "--dest-creds",
                    f"ci:{PASSWORDS['ci']}",
                    "--dest-cert-dir",
                    str(cluster.certs_dir),
                    f"oci:{layout}:latest",
                    f"docker://{cluster.netloc}/apps/rotated-{i}:1",
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
        )
        i += 1


def _logrotate_config(cluster: Cluster, tmp_path: Path) -> Path:
    """The shipped file, for the replicas' logs in the test's directories, reloading them as
    `systemctl reload` would (the unit's ExecReload= is `kill -HUP $MAINPID`)."""
    text = LOGROTATE.read_text()
    shipped_pattern = "/var/log/regauth/exchange-*.jsonl"
    shipped_reload = "systemctl reload 'regauth@*.service' >/dev/null 2>&1 || true"
    assert shipped_pattern in text and shipped_reload in text
    pattern = str(tmp_path / "replica*" / "exchange.jsonl")
    pids = " ".join(str(r.pid) for r in cluster.replicas)
    config = tmp_path / "logrotate.conf"
    config.write_text(
        text.replace(shipped_pattern, pattern).replace(shipped_reload, f"kill -HUP {pids}")
    )
    return config


def test_rotating_20_times_under_load_loses_and_splits_nothing(cluster, tmp_path, registry_watches):
    token_file = admin_token_path(cluster.certs_dir)
    token_file.write_text(ADMIN_SECRET + "\n")
    token_file.chmod(0o600)
    config = _logrotate_config(cluster, tmp_path)
    clients = Clients(cluster)
    pushes: list[subprocess.CompletedProcess[str]] = []
    stop_pushes = threading.Event()
    pusher = threading.Thread(target=_skopeo_loop, args=(cluster, tmp_path, stop_pushes, pushes))
    clients.start()
    pusher.start()
    try:
        time.sleep(1.0)
        for k in range(ROTATIONS - BY_LOGROTATE):
            for replica in cluster.replicas:
                replica.log_path.rename(replica.log_path.with_name(f"exchange.jsonl.{k:02d}"))
                how = k % 3
                if how == 0:
                    os.kill(replica.pid, signal.SIGHUP)
                elif how == 1:
                    os.kill(replica.pid, signal.SIGUSR1)
                else:
                    assert _admin_post(replica, "/log/reopen") == {
                        "reopened": str(replica.log_path)
                    }
                _wait_for_file(replica.log_path)
            time.sleep(0.3)
        for _ in range(BY_LOGROTATE):
            time.sleep(1.1)  # logrotate's rotated names carry the second (dateformat %s)
            done = subprocess.run(
                ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(config)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            for replica in cluster.replicas:
                _wait_for_file(replica.log_path)
        time.sleep(0.5)
    finally:
        clients.join()
        stop_pushes.set()
        pusher.join(timeout=600)
    time.sleep(1.0)  # the last flows are recorded when they end

    assert not clients.failures, clients.failures[:10]
    assert len(clients.made) > 200, len(clients.made)
    assert pushes and all(p.returncode == 0 for p in pushes), [p.stderr for p in pushes][:3]
    for replica in cluster.replicas:
        assert replica.process.poll() is None, replica.output()[-3000:]
        output = replica.output()
        for how in ("SIGHUP", "SIGUSR1", "POST /log/reopen"):
            assert f"reopened ({how})" in output

    markers: Counter[str] = Counter()
    records = 0
    for replica in cluster.replicas:
        files = _files(replica)
        # 20 rotated files per replica and the current one, all written to: the rotations
        # happened while requests flowed (logrotate's older ones are compressed).
        assert len(files) == ROTATIONS + 1, [f.name for f in files]
        assert sum(f.suffix == ".gz" for f in files) == BY_LOGROTATE - 1
        for path in files:
            for line in _lines(path):
                record = json.loads(line)  # every line parses
                records += 1
                marker = next((m for m in _markers(record["path"])), None)
                if marker is not None:
                    markers[marker] += 1
    assert sorted(markers) == sorted(clients.made)
    duplicated = {m: n for m, n in markers.items() if n != 1}
    assert not duplicated, duplicated
    print(
        f"rotation: {ROTATIONS} rotations x 2 replicas, {len(clients.made)} httpclient requests, "
        f"{len(pushes)} skopeo pushes, {records} records in {2 * (ROTATIONS + 1)} files"
    )

    # The registry saw only what some file records as forwarded (the conftest invariant).
    watch = registry_watches[cluster.registry.url]
    for replica in cluster.replicas:
        for path in _files(replica):
            if path != replica.log_path and path.suffix != ".gz":
                watch.add_exchange_log(path)
    if any(path.suffix == ".gz" for r in cluster.replicas for path in _files(r)):
        for replica in cluster.replicas:
            for path in _files(replica):
                if path.suffix == ".gz":
                    plain = path.with_name(path.name.removesuffix(".gz") + ".unpacked")
                    plain.write_bytes(gzip.decompress(path.read_bytes()))
                    watch.add_exchange_log(plain)


def _markers(path: str) -> Iterator[str]:
    """The client marker in a logged path (`rot-T-N`), if any (token scopes are
    percent-encoded in the query)."""
    yield from MARKER.findall(unquote(path))
