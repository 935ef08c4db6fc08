"""Large bodies stream with flat memory; refused uploads are answered without being read.

Peak RSS is read from /proc (VmHWM of the regauth process, which hosts mitmproxy); nothing
here is timed.
"""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import time

import pytest

from tests.support.oci import make_layout
from tests.support.oci import random_gzip_file
from tests.support.policies import PASSWORDS
from tests.support.policies import build_id
from tests.support.tools import skopeo

MiB = 1024 * 1024
RSS_LIMIT_KIB = 200 * 1000  # 200 MB

pytestmark = pytest.mark.slow


def test_256_mib_blob_push_and_pull_keep_proxy_memory_flat(
    write_policy, make_registry, make_proxy, tmp_path
):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    blob = tmp_path / "blob.bin"
    random_gzip_file(blob, 256 * MiB)
    layout = tmp_path / "big-layout"
    digest = make_layout(layout, big_layer=blob)
    creds = f"ci:{PASSWORDS['ci']}"
    pushed = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        "--dest-creds",
        creds,
        f"oci:{layout}:latest",
        f"docker://{proxy.netloc}/demo/big:1",
        timeout=900,
    )
    assert pushed.ok, pushed.output[-2000:]
    out = tmp_path / "pulled"
    pulled = skopeo(
        "copy",
        "--src-cert-dir",
        str(proxy.certs_dir),
        "--src-creds",
        creds,
        f"docker://{proxy.netloc}/demo/big:1",
        f"oci:{out}:latest",
        timeout=900,
    )
    assert pulled.ok, pulled.output[-2000:]
    assert digest in (out / "index.json").read_text()
    peak = proxy.peak_rss_kib()
    print(f"regauth peak RSS after 256 MiB push+pull: {peak / 1024:.1f} MiB")
    assert peak < RSS_LIMIT_KIB
    puts = [
        r
        for r in proxy.records()
        if r["method"] in ("PUT", "PATCH")
        and r["route"] == "upload"
        and (r["bytes"]["request"] or 0) >= 256 * MiB
    ]
    assert puts, "the exchange log counts the streamed upload's bytes"


def _raw_upload(
    port: int, ca, target: str, total: int, expect: bool, chunked: bool
) -> tuple[bytes, int]:
    """Send a large PUT, stop as soon as a response arrives; return (response head, sent)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        head = [
            f"PUT {target} HTTP/1.1",
            f"Host: localhost:{port}",
            "Content-Type: application/octet-stream",
        ]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
        if expect:
            head.append("Expect: 100-continue")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if expect:
            ready, _, _ = select.select([sock], [], [], 10)
            assert ready, "no interim or final response to Expect: 100-continue"
            first = sock.recv(65536)
            if not first.startswith(b"HTTP/1.1 100"):
                return _finish(sock, first), 0
        chunk = b"\0" * MiB
        sent = 0
        response = b""
        while sent < total:
            ready, _, _ = select.select([sock], [], [], 0)
            if ready:
                response = sock.recv(65536)
                break
            piece = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            sent += len(chunk)
        sock.settimeout(30)
        try:
            while not _complete(response):
                more = sock.recv(65536)
                if not more:
                    break
                response += more
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            pass
        return response, sent


def _finish(sock: ssl.SSLSocket, response: bytes) -> bytes:
    sock.settimeout(30)
    while not _complete(response):
        more = sock.recv(65536)
        if not more:
            break
        response += more
    return response


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


@pytest.mark.parametrize("expect,chunked", [(False, False), (True, False), (False, True)])
def test_unauthorized_1_gib_upload_is_refused_without_buffering(
    write_policy, make_registry, make_proxy, expect, chunked
):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    time.sleep(0.3)
    before = len(registry.requests_seen())
    target = f"/v2/builds/{build_id()}/blobs/uploads/0c4a8383-50dd-4220-a903-1eb356601697"
    response, sent = _raw_upload(proxy.port, proxy.ca, target, 1024 * MiB, expect, chunked)
    assert response.startswith(b"HTTP/1.1 401"), response[:200]
    assert b"WWW-Authenticate: Bearer realm=" in response
    assert b'"UNAUTHORIZED"' in response
    peak = proxy.peak_rss_kib()
    print(
        f"refused 1 GiB upload (expect={expect}, chunked={chunked}): {sent / MiB:.0f} MiB "
        f"sent before the 401, regauth peak RSS {peak / 1024:.1f} MiB"
    )
    assert peak < RSS_LIMIT_KIB
    time.sleep(0.3)
    assert len(registry.requests_seen()) == before
    records = [r for r in proxy.records() if r["method"] == "PUT"]
    assert records and records[0]["status"] == 401 and records[0]["body_discarded"]


def test_unauthorized_1_gib_upload_over_http2_with_curl(
    write_policy, make_registry, make_proxy, tmp_path
):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    blob = tmp_path / "zero.bin"
    with blob.open("wb") as f:
        f.truncate(1024 * MiB)  # sparse: costs no disk
    target = f"{proxy.url}/v2/builds/{build_id()}/blobs/uploads/abc"
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            str(proxy.ca),
            "-T",
            str(blob),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_upload}",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    status, uploaded = out.stdout.split()
    assert status == "401", out.stderr
    peak = proxy.peak_rss_kib()
    print(
        f"refused 1 GiB HTTP/2 upload: {int(uploaded) / MiB:.0f} MiB sent, regauth peak RSS "
        f"{peak / 1024:.1f} MiB"
    )
    assert peak < RSS_LIMIT_KIB
    time.sleep(0.3)
    assert not [line for line in registry.requests_seen() if line.startswith("PUT")]
