"""One anonymous client must not exhaust what every client shares (issue 20, items 4-6).

Each attack runs against a real regauth in front of a real distribution registry, from its own
loopback address, while a legitimate client (tests/support/legit.py) asks for tokens and pushes
one image from another address; its token p99 and push time are printed. Bounds are asserted
with wide margins (RSS growth, descriptors, time to close); the measurements themselves are in
bench/attacks.py.

- request heads: HTTP/1.1 header lines without end, one endless line, HTTP/2 CONTINUATION
  frames without end, an HTTP/2 head with too many fields;
- HTTP/2 rapid reset (CVE-2023-44487);
- slow bodies: token forms and upload chunks trickled in, on HTTP/1.1 and on one stream of an
  HTTP/2 connection whose other streams go on;
- the connection ceilings below the descriptor limit (regauth under `prlimit --nofile=256`).
"""

from __future__ import annotations

import threading
import time

import h2.config
import h2.connection
import h2.errors
import pytest

from tests.support import httpclient
from tests.support.admin import scrape
from tests.support.dos import continuation_flood
from tests.support.dos import cpu_seconds
from tests.support.dos import head_flood
from tests.support.dos import open_fds
from tests.support.dos import rapid_reset
from tests.support.dos import rss_mib
from tests.support.dos import tls_socket
from tests.support.dos import trickle
from tests.support.h2raw import H2Client
from tests.support.legit import LegitClient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE

MIB = 1024 * 1024


@pytest.fixture
def bounded(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(
        write_policy(),
        registry.url,
        extra=["--set", "regauth_body_timeout=3", "--set", "regauth_token_body_timeout=3"],
    )
    return proxy


def legit(proxy, repository: str = "cache/legit") -> LegitClient:
    return LegitClient(proxy.port, proxy.ca, SERVICE, ("ci", PASSWORDS["ci"]), repository)


# -- item 4: request heads -----------------------------------------------------------------


@pytest.mark.parametrize("shape", ["header lines", "one endless line"])
def test_an_endless_request_head_is_refused_and_costs_no_memory(bounded, shape):
    proxy = bounded
    before = rss_mib(proxy.pid)
    results: list[tuple[int, bytes]] = []

    def attack() -> None:
        threads = [
            threading.Thread(
                target=lambda n=n: results.append(
                    head_flood(proxy.port, proxy.ca, shape, 5, f"127.0.1.{n + 1}")
                )
            )
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    client = legit(proxy)
    client.during(attack)
    print(client.report(f"4 connections sending {shape}"))
    status = b"431" if shape == "header lines" else b"414"
    for sent, answer in results:
        # Refused after at most the 64 KiB head bound plus what was in flight, not after 5 s.
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b'"UNSUPPORTED"' in answer and b"Connection: close" in answer
        assert sent < 8 * MIB
    growth = rss_mib(proxy.pid) - before
    print(f"RSS growth {growth:.1f} MiB; sent {[s for s, _ in results]} bytes")
    assert growth < 40
    client.assert_served()
    assert "refused a request head from 127.0.1." in proxy.output()


def test_endless_http2_continuation_frames_end_the_connection(bounded):
    proxy = bounded
    before = rss_mib(proxy.pid)
    sent, codes = continuation_flood(proxy.port, proxy.ca, 5)
    print(f"sent {sent} bytes of CONTINUATION before the close; GOAWAY {codes}")
    assert codes and codes[0] == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM  # hyper-h2's
    assert sent < 8 * MIB
    assert rss_mib(proxy.pid) - before < 30


def test_an_http2_head_over_the_bounds_gets_431_on_its_stream_only(bounded):
    proxy = bounded
    with H2Client(proxy.port, proxy.ca) as client:
        many = client.request("GET", "/v2/", [(f"x-field-{n}", "v") for n in range(101)])
        long_path = client.request("GET", "/v2/" + "a" * 9000 + "/tags/list")
        fine = client.request("GET", "/v2/")
    assert many.status == 431 and many.error_codes() == ["UNSUPPORTED"]
    assert long_path.status == 414
    assert fine.status == 401  # the same connection still serves
    records = [r for r in proxy.records() if r["status"] in (414, 431)]
    assert len(records) == 2
    assert "more than 100 header fields" in records[0]["decision"]["reason"]


# -- item 5: HTTP/2 rapid reset ------------------------------------------------------------


def test_http2_rapid_reset_is_cut_off_and_leaves_no_work_behind(bounded):
    proxy = bounded
    before_rss = rss_mib(proxy.pid)
    outcomes: list[dict[str, int]] = []

    def attack() -> None:
        threads = [
            threading.Thread(
                target=lambda n=n: outcomes.append(
                    rapid_reset(proxy.port, proxy.ca, 10, f"127.0.2.{n + 1}", SERVICE)
                )
            )
            for n in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    client = legit(proxy)
    client.during(attack)
    attacked_cpu = cpu_seconds(proxy.pid)
    time.sleep(5)
    after_cpu = cpu_seconds(proxy.pid) - attacked_cpu
    streams = sum(o["streams"] for o in outcomes)
    connections = sum(o["connections"] for o in outcomes)
    records = [
        r
        for r in proxy.records()
        if r.get("kind") == "token" and not r["client"].startswith("127.0.0.200")
    ]
    growth = rss_mib(proxy.pid) - before_rss
    print(client.report("HTTP/2 rapid reset from 3 addresses for 10 s"))
    print(
        f"attack: {streams} streams reset on {connections} connections "
        f"({sum(o['enhance_your_calm'] for o in outcomes)} ended by GOAWAY ENHANCE_YOUR_CALM);"
        f" {len(records)} exchange records; RSS +{growth:.1f} MiB; "
        f"{after_cpu:.2f} s CPU in the 5 s after the attack"
    )
    ended = sum(o["enhance_your_calm"] + o["closed"] for o in outcomes)
    assert ended >= connections - 3  # every connection but the last of each attacker
    assert sum(o["enhance_your_calm"] for o in outcomes) >= 1
    assert after_cpu < 1.0
    assert growth < 60
    # At most the streams regauth looked at before it closed each connection.
    assert len(records) <= connections * 2 * 110
    client.assert_served(p99_bound=3.0)


# -- item 6: slow bodies and the connection ceilings ----------------------------------------


def test_slow_token_forms_and_uploads_are_cut(bounded):
    proxy = bounded
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:cache/slow:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    start = httpclient.request(
        proxy.port,
        proxy.ca,
        "POST",
        "/v2/cache/slow/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
    )
    location = start.header("Location")
    form_head = (
        b"POST /v2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
        b"application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
    )
    patch_head = (
        f"PATCH {location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
        f"{token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {MIB}\r\n\r\n"
    ).encode()
    closed: list[float | None] = []

    def attack() -> None:
        threads = []
        for n in range(20):
            head = form_head if n % 2 else patch_head
            sock = tls_socket(proxy.port, proxy.ca, source=f"127.0.3.{n + 1}")
            threads.append(
                threading.Thread(
                    target=lambda s=sock, h=head: closed.append(trickle(s, h, 1.0, 15))
                )
            )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    client = legit(proxy)
    client.during(attack)
    print(client.report("20 slow bodies (10 token forms, 10 upload chunks)"))
    print(f"slow bodies closed after {sorted(round(c or -1, 1) for c in closed)} s")
    assert all(c is not None and c < 9 for c in closed), closed
    records = proxy.records()
    reasons = [r.get("error", "") for r in records if r.get("client", "").startswith("127.0.3.")]
    assert sum("token request body incomplete" in r for r in reasons) == 10, reasons
    assert sum("request body too slow" in r for r in reasons) == 10, reasons
    client.assert_served()


def test_a_slow_http2_upload_loses_its_stream_not_the_connection(bounded):
    proxy = bounded
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:cache/slow2:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    bearer = [("authorization", f"Bearer {token}")]
    location = httpclient.request(
        proxy.port,
        proxy.ca,
        "POST",
        "/v2/cache/slow2/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
    ).header("Location")
    with H2Client(proxy.port, proxy.ca, timeout=20) as client:
        slow = client.new_stream()
        client.send_headers(
            slow,
            "PATCH",
            location,
            [*bearer, ("content-length", str(MIB)), ("content-type", "application/octet-stream")],
        )
        started = time.monotonic()
        for _ in range(8):
            client.send_data(slow, b"a")
            fine = client.request("GET", "/v2/cache/slow2/tags/list", bearer)
            assert fine.status in (200, 404), fine.outcome
            if client.replies[slow].reset:
                break
            time.sleep(1)
        reply = client.reply(slow, timeout=5)
        assert reply.reset == "CANCEL", reply.outcome
        assert time.monotonic() - started < 9
        assert client.goaway is None and not client.closed
        assert client.request("GET", "/v2/").status == 401


def test_connections_past_the_descriptor_budget_are_shed_not_failed(
    write_policy, make_registry, make_proxy
):
    """regauth under a 256-descriptor limit (ceilings: 32 client and 32 registry connections,
    64 more shed): connections past the ceiling get 503 to their request, those past the
    shedding margin are closed at once, accept() never fails, and once the flood is gone the
    legitimate client is served again."""
    registry = make_registry()
    proxy = make_proxy(
        write_policy(),
        registry.url,
        prefix=["prlimit", "--nofile=256:256"],
        admin_listen="127.0.0.1:0",
    )
    held = [
        tls_socket(proxy.port, proxy.ca, source=f"127.0.4.{n % 5 + 1}", timeout=5)
        for n in range(40)
    ]
    shed = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/", timeout=10)
    refused = 0
    for n in range(210):
        try:
            held.append(tls_socket(proxy.port, proxy.ca, source=f"127.0.4.{n % 5 + 1}", timeout=5))
        except OSError:
            refused += 1
    peak = open_fds(proxy.pid)
    for sock in held:
        sock.close()
    time.sleep(1)
    served = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/", timeout=10)
    print(
        f"250 connections: {refused} closed at once; peak {peak} descriptors of 256; "
        f"past the ceiling: {shed.status}, after the flood: {served.status}"
    )
    assert peak < 256
    assert refused >= 150
    assert shed.status == 503 and shed.header("Retry-After") == "1"
    assert "connection limit" in shed.json()["errors"][0]["message"]
    assert served.status == 401
    output = proxy.output()
    assert "Too many open files" not in output
    assert "shedding load" in output and "refused connections:" in output
    metrics = scrape(proxy.admin_port)
    assert metrics.value("regauth_connections_refused_total", reason="shed") >= 1
    assert metrics.value("regauth_connections_refused_total", reason="overloaded") >= 150
