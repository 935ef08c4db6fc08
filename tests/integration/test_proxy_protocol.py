"""The PROXY protocol on the proxy listener, and what a connection's first bytes may be
(issue 21): real regauth, real registry, raw sockets standing in for a load balancer.

- from a trusted balancer (`--proxy-protocol`) the header is required and names the client for
  everything per client: `networks:` rules, the per-address cap, the exchange log and trace;
- from anyone else a header is refused, never parsed as an address; X-Forwarded-For,
  Forwarded and X-Real-IP stay ignored;
- bounded and timed: a huge declared length, a truncated header and one trickled byte by byte
  hold no connection past the head timeout;
- segmentation does not matter: a ClientHello whose first 1 or 2 bytes arrive alone, a header
  split anywhere;
- plain HTTP on the TLS port gets one 400 asking for TLS: never a challenge or a token.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import REGAUTH
from tests.support.proxyproto import closed_without_answer
from tests.support.proxyproto import exchange
from tests.support.proxyproto import open_tls
from tests.support.proxyproto import v1
from tests.support.proxyproto import v2

NETWORK_RULE = """  - comment: the office network pushes releases
    account: ci
    repository: "releases/**"
    networks: ["10.20.0.0/16"]
    actions: [pull, push]
"""
TOKEN = f"/v2/token?service={SERVICE}&scope=repository:releases/app:pull,push"


def basic() -> dict[str, str]:
    return {"Authorization": httpclient.basic("ci", PASSWORDS["ci"])}


@pytest.fixture
def balanced(write_policy, make_registry, make_proxy):
    """regauth trusting 127.0.0.1 as its load balancer (2 s head timeout)."""
    registry = make_registry()
    return make_proxy(
        write_policy(extra_rules=NETWORK_RULE),
        registry.url,
        extra=[
            "--set",
            "regauth_proxy_protocol=127.0.0.1/32",
            "--set",
            "regauth_head_timeout=2",
            "--set",
            "regauth_max_connections_per_address=2",
        ],
    )


@pytest.fixture
def direct(write_policy, make_registry, make_proxy):
    registry = make_registry()
    return make_proxy(
        write_policy(extra_rules=NETWORK_RULE),
        registry.url,
        extra=["--set", "regauth_head_timeout=2"],
    )


@pytest.mark.parametrize(
    "header", [v1("10.20.1.5"), v2("10.20.1.5"), v2("::ffff:10.20.1.5"), v1("::ffff:10.20.1.5")]
)
def test_the_balancer_names_the_client_for_networks_rules_and_the_log(balanced, header):
    reply = exchange(open_tls(balanced.port, balanced.ca, header), "GET", TOKEN, basic())
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["scope"] == "repository:releases/app:pull,push"
    elsewhere = exchange(
        open_tls(balanced.port, balanced.ca, v2("10.30.1.5")), "GET", TOKEN, basic()
    )
    assert json.loads(elsewhere.body)["scope"] == ""  # outside the office network
    records = [r for r in balanced.records() if r["kind"] == "token"]
    assert [r["client"].rsplit(":", 1)[0] for r in records] == ["10.20.1.5", "10.30.1.5"]
    assert all(r["via"].startswith("127.0.0.1:") for r in records)


def test_a_local_header_keeps_the_balancers_address(balanced):
    reply = exchange(
        open_tls(balanced.port, balanced.ca, v2("127.0.0.1", command=0x20)), "GET", "/v2/"
    )
    assert reply.status == 401
    [record] = balanced.records()
    assert record["client"].startswith("127.0.0.1:") and record["via"].startswith("127.0.0.1:")


@pytest.mark.parametrize("split", [[1], [2], [5, 13], list(range(1, 40))])
def test_how_tcp_splits_the_header_and_the_client_hello_does_not_matter(balanced, split):
    header = v2("10.20.1.5", tlvs=b"\x04\x00\x05abcde")  # a NOOP TLV, skipped
    started = time.monotonic()
    reply = exchange(
        open_tls(balanced.port, balanced.ca, header, split=split, pause=0.02), "GET", "/v2/"
    )
    assert reply.status == 401 and time.monotonic() - started < 1.5 + 0.02 * len(split)


def test_a_trusted_peer_without_a_header_is_refused(balanced):
    with pytest.raises(OSError):
        exchange(open_tls(balanced.port, balanced.ca), "GET", "/v2/")
    closed, _, answer = closed_without_answer(balanced.port, b"GET /v2/ HTTP/1.1\r\n\r\n")
    assert closed and answer == b""
    assert "closed connection from load balancer 127.0.0.1" in balanced.output()


@pytest.mark.parametrize(
    ("name", "data", "at_most"),
    [
        ("a huge declared length", v2("10.20.1.5", length=60000), 1.0),
        ("a truncated header", v2("10.20.1.5")[:20], 3.5),
        ("a v1 line without end", b"PROXY TCP4 10.20.1.5 127.0.0.1 4000 443", 3.5),
        ("garbage", b"\x16\x03\x01\x02\x00", 1.0),
    ],
)
def test_a_forged_header_holds_no_connection_past_the_head_timeout(balanced, name, data, at_most):
    closed, seconds, answer = closed_without_answer(balanced.port, data)
    assert closed and answer == b"", name
    assert seconds <= at_most, (name, seconds)


def test_a_header_trickled_byte_by_byte_is_cut_at_the_head_timeout(balanced):
    import socket

    sock = socket.create_connection(("127.0.0.1", balanced.port), timeout=10)
    started = time.monotonic()
    try:
        for byte in v1("10.20.1.5"):
            sock.sendall(bytes([byte]))
            time.sleep(0.3)
    except OSError:
        pass
    finally:
        sock.close()
    assert time.monotonic() - started < 3.5


@pytest.mark.parametrize(("setup", "source"), [("balanced", "127.0.0.2"), ("direct", "127.0.0.1")])
def test_a_header_from_an_untrusted_peer_is_refused_never_read(setup, source, request):
    proxy = request.getfixturevalue(setup)
    for header in (v1("10.20.1.5"), v2("10.20.1.5")):
        closed, seconds, answer = closed_without_answer(proxy.port, header, source)
        assert closed and answer == b"" and seconds < 1.0
    assert f"refused a PROXY protocol header from {source}" in proxy.output()
    assert not proxy.records()


def test_forwarding_headers_from_clients_are_ignored(direct):
    for name in ("X-Forwarded-For", "X-Real-IP"):
        reply = httpclient.request(
            direct.port, direct.ca, "GET", TOKEN, {**basic(), name: "10.20.1.5"}
        )
        assert json.loads(reply.body)["scope"] == ""
    reply = httpclient.request(
        direct.port, direct.ca, "GET", TOKEN, {**basic(), "Forwarded": "for=10.20.1.5;proto=https"}
    )
    assert json.loads(reply.body)["scope"] == ""
    assert {r["client"].rsplit(":", 1)[0] for r in direct.records()} == {"127.0.0.1"}


def test_the_per_address_cap_counts_the_named_client(balanced):
    held = [open_tls(balanced.port, balanced.ca, v2("10.20.9.9")) for _ in range(2)]
    try:
        with pytest.raises(OSError):
            exchange(open_tls(balanced.port, balanced.ca, v2("10.20.9.9")), "GET", "/v2/")
        other = exchange(open_tls(balanced.port, balanced.ca, v2("10.20.9.10")), "GET", "/v2/")
        assert other.status == 401
    finally:
        for sock in held:
            sock.close()
    assert "refused connections from 10.20.9.9: already 2 open" in balanced.output()


@pytest.mark.parametrize("split", [None, [1], [2]])
def test_a_client_hello_whose_first_bytes_arrive_alone_is_served_at_once(direct, split):
    """Before, 1 or 2 bytes alone made the connection plain HTTP: it stalled until the head
    timeout (3 of 3 tries). The ClientHello is sent in pieces through a raw socket."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(direct.ca))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection(("127.0.0.1", direct.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.monotonic()
    try:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        for piece in [hello[: split[0]], hello[split[0] :]] if split else [hello]:
            sock.sendall(piece)
            time.sleep(0.1)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        handshake = time.monotonic() - started
    finally:
        sock.close()
    assert handshake < 1.5, handshake


def test_plain_http_gets_one_400_asking_for_tls_and_nothing_else(direct):
    for target in ("/v2/", TOKEN, "/v2/public/app/manifests/1"):
        closed, _, answer = closed_without_answer(
            direct.port,
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: {basic()['Authorization']}\r\n\r\n".encode(),
        )
        assert closed and answer.startswith(b"HTTP/1.1 400 Bad Request: "), answer[:100]
        assert (
            b"WWW-Authenticate" not in answer
            and b"token" not in answer.lower().split(b"\r\n\r\n")[0]
        )
        assert b"TLS only" in answer and b"https://" in answer
    curl = subprocess.run(
        ["curl", "-sS", "-i", f"http://localhost:{direct.port}/v2/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "400 Bad Request" in curl.stdout and "TLS only" in curl.stdout
    assert not direct.records()  # nothing decided, nothing forwarded
    assert "refused plain HTTP from 127.0.0.1" in direct.output()


def test_plain_http_can_be_allowed_for_test_setups(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, extra=["--set", "regauth_plain_http=true"])
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://localhost:{proxy.port}/v2/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert curl.stdout == "401"
    assert "regauth serves plain HTTP on its proxy port" in proxy.output()


def test_serve_refuses_a_malformed_network(tmp_path, write_policy, certs_dir):
    done = subprocess.run(
        [
            str(REGAUTH),
            "serve",
            "--certs-dir",
            str(certs_dir),
            "--policy",
            str(write_policy()),
            "--upstream",
            "http://127.0.0.1:1",
            "--proxy-protocol",
            "10.0.0.1/8",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "'10.0.0.1/8' is not a network" in done.stderr
