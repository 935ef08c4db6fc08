"""Clients that fail the TLS handshake are in the exchange log and `regauth trace` says how that
client trusts regauth's CA (issue 26, item 7): real skopeo (Go's crypto/tls) and curl (OpenSSL)
without the CA against a real `regauth serve`; a bare TCP connection (a health check) leaves no
record."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.proxy import REGAUTH
from tests.support.proxy import ProxyProcess
from tests.support.tools import run
from tests.support.tools import skopeo

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(write_policy: Callable[..., Path], make_registry, make_proxy) -> ProxyProcess:
    return make_proxy(write_policy(), make_registry().url)


def tls_records(proxy: ProxyProcess, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in proxy.records() if r["kind"] == "tls"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def diagnosis(proxy: ProxyProcess, code: str) -> dict:
    done = subprocess.run(
        [str(REGAUTH), "trace", str(proxy.log_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = [
        d
        for c in json.loads(done.stdout)["conversations"]
        for d in c["diagnoses"]
        if d["code"] == code
    ]
    assert found, done.stdout
    return found[0]


def test_skopeo_without_the_ca_is_recorded_and_told_its_snippets(proxy: ProxyProcess) -> None:
    refused = skopeo("inspect", "--no-creds", f"docker://{proxy.netloc}/public/app:1", timeout=60)
    assert not refused.ok and "certificate" in refused.output
    records = tls_records(proxy, 1)  # one per attempt: skopeo tries twice
    assert records and all(r["tls"] == records[0]["tls"] for r in records), records
    record = records[0]
    ca = str(proxy.ca.absolute())
    assert record["tls"]["cause"] == "untrusted"
    assert record["tls"]["sni"] == "localhost"
    assert record["tls"]["library"] == "go"
    assert record["tls"]["ca"] == ca
    assert record["client"].startswith("127.0.0.1:")
    found = diagnosis(proxy, "tls-untrusted")
    assert "a Go client (docker, podman, buildah, skopeo" in found["detail"]
    hint = found["hint"]
    assert f"--cert-dir {proxy.certs_dir.absolute()}" in hint
    assert f"/etc/containers/certs.d/{proxy.netloc}/ca.crt" in hint
    assert f"/etc/docker/certs.d/{proxy.netloc}/ca.crt" in hint
    assert f'[host."https://{proxy.netloc}"]' in hint
    # The snippet works: with it, skopeo gets through the handshake (the image is absent).
    trusted = skopeo(
        "inspect",
        "--no-creds",
        "--cert-dir",
        str(proxy.certs_dir),
        f"docker://{proxy.netloc}/public/app:1",
        timeout=60,
    )
    assert "certificate signed by unknown authority" not in trusted.output


def test_curl_without_the_ca_is_told_curl_cacert(proxy: ProxyProcess) -> None:
    refused = run(["curl", "-sS", f"{proxy.url}/v2/"], timeout=30)
    assert refused.returncode != 0
    records = tls_records(proxy, 1)
    assert records and all(r["tls"]["library"] == "openssl" for r in records)
    hint = diagnosis(proxy, "tls-untrusted")["hint"]
    assert f"curl --cacert {proxy.ca.absolute()} https://{proxy.netloc}/v2/" in hint
    assert "/etc/docker/certs.d" not in hint


def test_a_connection_without_a_handshake_is_not_recorded(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5):
        pass  # a TCP health check: connect, close
    ok = run(["curl", "-sS", "--cacert", str(proxy.ca), f"{proxy.url}/v2/"], timeout=30)
    assert ok.returncode == 0
    time.sleep(0.5)
    assert [r for r in proxy.records() if r["kind"] == "tls"] == []
