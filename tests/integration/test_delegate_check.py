"""Delegate mode checks the registry behind it (issue 20, A2): a real distribution 2.8.

In delegate mode regauth forwards registry requests and the registry alone checks regauth's
tokens. regauth therefore checks the registry, at start and every
`regauth_upstream_check_seconds`: an anonymous `GET /v2/` must be challenged with regauth's
realm and service, and a token regauth signs must be accepted. A registry that does not
challenge at all gets nothing forwarded (503, the record and `/readyz` say why); a registry
that challenges but disagrees with regauth (service, issuer, keys, clock) makes `/readyz` not
ready with the reason. `--delegate-unchecked` (test setups only) forwards anyway, loudly.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from urllib.parse import urlsplit

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.ops.registry_process import free_port
from tests.support.admin import get
from tests.support.admin import scrape
from tests.support.admin import wait_status
from tests.support.httpclient import get_token
from tests.support.httpclient import request
from tests.support.invariant import OWN_PROBE_AGENTS
from tests.support.policies import ISSUER
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import start_proxy

pytestmark = pytest.mark.integration
FAST_PROBE = ["--set", "regauth_upstream_check_seconds=1"]
ADMIN = "127.0.0.1:0"
BLOB = b"an anonymous push that must never be stored\n"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
OPEN_REASON = "the registry answered GET /v2/ without authentication (200)"


def _push(proxy, repository: str = "cache/poison", token: str | None = None):
    """Push one blob: POST starts the upload (202), PUT with the digest stores it (201 Created).
    Returns the first answer that is not a 202, or the PUT's."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = request(
        proxy.port,
        proxy.ca,
        "POST",
        f"/v2/{repository}/blobs/uploads/",
        {**headers, "Content-Length": "0"},
    )
    if started.status != 202:
        return started
    location = urlsplit(started.header("Location"))
    target = f"{location.path}?{location.query}&digest={DIGEST}"
    return request(
        proxy.port,
        proxy.ca,
        "PUT",
        target,
        {**headers, "Content-Type": "application/octet-stream"},
        BLOB,
    )


def _ci_token(proxy, repository: str = "cache/app") -> str:
    reply = get_token(
        proxy.port,
        proxy.ca,
        [f"repository:{repository}:pull,push"],
        SERVICE,
        ("ci", PASSWORDS["ci"]),
    )
    assert reply.status == 200, reply.body
    return reply.json()["token"]


def _only_own_probes(registry) -> list[str]:
    """The registry's access log, every line of which must be regauth's own GET /v2/."""
    from tests.support.invariant import parse_access_log

    time.sleep(0.3)  # the registry logs after answering
    entries = parse_access_log(registry.log_path.read_text(errors="replace"))
    foreign = [
        e.line
        for e in entries
        if e.user_agent not in OWN_PROBE_AGENTS or e.request_line != "GET /v2/ HTTP/1.1"
    ]
    assert not foreign, foreign
    return [e.user_agent for e in entries]


def _token_registry(make_registry, port: int, **kwargs) -> RegistryProcess:
    return make_registry("token", realm=f"https://localhost:{port}/v2/token", **kwargs)


def test_an_open_registry_behind_delegate_mode_gets_nothing_forwarded(
    write_policy, make_registry, make_proxy, registry_watches
):
    registry = make_registry()  # no auth of its own: anything forwarded would be stored
    proxy = make_proxy(
        write_policy(mode="delegate"), registry.url, admin_listen=ADMIN, extra=FAST_PROBE
    )
    # The anonymous push of the issue (201 before): refused, with a registry error naming the
    # misconfiguration.
    reply = _push(proxy)
    assert reply.status == 503, (reply.status, reply.body)
    [error] = reply.json()["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"].startswith(
        "delegate check failed: the registry behind regauth answers without authentication"
    ), error
    assert "auth.token" in error["message"]
    assert reply.header("Retry-After") == "1"
    # Every route that would be forwarded is refused: uploads, reads, the base, the catalog,
    # paths outside /v2/ (delegate mode forwards GETs there), with or without a token.
    ci = _ci_token(proxy)
    for method, target, headers in [
        (
            "POST",
            "/v2/cache/app/blobs/uploads/",
            {"Authorization": f"Bearer {ci}", "Content-Length": "0"},
        ),
        ("GET", "/v2/", {}),
        ("GET", "/v2/_catalog", {}),
        ("HEAD", f"/v2/cache/poison/blobs/{DIGEST}", {}),
        ("GET", "/metrics", {}),
    ]:
        refused = request(proxy.port, proxy.ca, method, target, headers)
        assert refused.status == 503, (method, target, refused.status)
    # Token requests are still answered (the token above), and so is the key set.
    assert request(proxy.port, proxy.ca, "GET", "/.well-known/jwks.json").status == 200
    # Nothing but regauth's own probes reached the registry; the blob is not there.
    agents = _only_own_probes(registry)
    assert "regauth-delegate-check" not in agents  # no token probe: the registry is open
    status, _, _ = registry_watches[registry.url].direct("HEAD", f"/v2/cache/poison/blobs/{DIGEST}")
    assert status == 404
    # The exchange records say why.
    records = [r for r in proxy.records() if r["kind"] == "registry"]
    assert records and all(r["status"] == 503 and r["answered_by"] == "regauth" for r in records), (
        records
    )
    push = next(r for r in records if r["method"] == "POST" and "poison" in r["path"])
    assert push["decision"]["reason"].startswith(
        "delegate check failed: the registry behind regauth answers without authentication"
    )
    # /readyz, the metrics and the log.
    body = wait_status(proxy.admin_port, "/readyz", 503)
    assert f"not ready: delegate check: {OPEN_REASON}" in body
    assert (
        f"realm https://localhost:{proxy.port}/v2/token, service {SERVICE}, issuer {ISSUER}" in body
    )
    metrics = scrape(proxy.admin_port)
    assert metrics.value("regauth_delegate_check", result="open") == 1
    assert metrics.total("regauth_delegate_check") == 1
    assert metrics.value("regauth_delegate_refusing") == 1
    assert metrics.value("regauth_delegate_unchecked") == 0
    assert metrics.value("regauth_upstream_up") == 1  # it answers; it just is not safe
    time.sleep(2.5)  # more check rounds: the log line is written once per state change
    assert proxy.output().count(OPEN_REASON) == 1, proxy.output()


def test_a_registry_that_checks_regauths_tokens_works_as_before(
    write_policy, make_registry, make_proxy
):
    port = free_port()  # the registry's realm names the proxy's port: reserve it first
    registry = _token_registry(make_registry, port)
    proxy = make_proxy(
        write_policy(mode="delegate"), registry.url, port=port, admin_listen=ADMIN, extra=FAST_PROBE
    )
    assert _push(proxy).status == 401  # the registry challenges: forwarded
    assert _push(proxy, "cache/app", _ci_token(proxy)).status == 201
    assert wait_status(proxy.admin_port, "/readyz", 200) == "ready\n"
    metrics = scrape(proxy.admin_port)
    assert metrics.value("regauth_delegate_check", result="ok") == 1
    assert metrics.total("regauth_delegate_check") == 1
    assert metrics.value("regauth_delegate_refusing") == 0
    # regauth's probe token reached the registry with its own User-Agent and was accepted.
    from tests.support.invariant import parse_access_log

    probes = [
        e
        for e in parse_access_log(registry.log_path.read_text())
        if e.user_agent == "regauth-delegate-check"
    ]
    assert probes and all(e.request_line == "GET /v2/ HTTP/1.1" and e.status == 200 for e in probes)
    assert "delegate check passed" in proxy.output()


@pytest.mark.parametrize("case", ["service", "issuer", "bundle"])
def test_a_registry_that_disagrees_with_regauth_is_not_ready(
    case, tmp_path, write_policy, make_registry, make_proxy, certs_dir
):
    port = free_port()
    bundle = tmp_path / f"{case}-bundle.pem"
    service, issuer, certs = SERVICE, ISSUER, certs_dir
    if case == "service":
        service = "another-service"
    elif case == "issuer":
        issuer = "someone-else"
    else:
        certs = tmp_path / "other-certs"
        pki.init_certs(certs)
    bundle.write_text(pki.bundle_pem(pki.load_signing_keys(certs)))
    registry = RegistryProcess(
        tmp_path / f"registry-{case}",
        token=TokenAuth(f"https://localhost:{port}/v2/token", service, issuer, bundle),
    )
    registry.start()
    try:
        proxy = make_proxy(
            write_policy(mode="delegate"),
            registry.url,
            port=port,
            admin_listen=ADMIN,
            extra=FAST_PROBE,
        )
        body = wait_status(proxy.admin_port, "/readyz", 503)
        deadline = time.monotonic() + 30
        while "has not been checked yet" in body and time.monotonic() < deadline:
            # Not ready before the first check too: wait for its verdict.
            time.sleep(0.2)
            body = wait_status(proxy.admin_port, "/readyz", 503)
        expected = {
            "service": f"the registry's auth.token service is 'another-service', but regauth "
            f"issues tokens for '{SERVICE}'",
            "issuer": f"set its auth.token issuer to '{ISSUER}'",
            "bundle": "rootcertbundle",
        }[case]
        assert "not ready: delegate check: " in body and expected in body, body
        if case != "service":
            assert "the registry refused a token regauth signed (401, error=invalid_token)" in body
        metrics = scrape(proxy.admin_port)
        result = "service_mismatch" if case == "service" else "token_refused"
        assert metrics.value("regauth_delegate_check", result=result) == 1
        assert metrics.value("regauth_delegate_refusing") == 0
        # The registry does challenge: requests are still forwarded, and it refuses them.
        reply = _push(proxy, "cache/app", _ci_token(proxy))
        assert reply.status == 401
        assert [r for r in proxy.records() if r.get("answered_by") == "upstream"]
    finally:
        registry.stop()


def test_a_registry_whose_clock_differs_is_not_ready(
    tmp_path, write_policy, make_registry, make_proxy
):
    port = free_port()
    registry = _token_registry(make_registry, port)
    # regauth's clock runs two hours ahead: its tokens are not valid yet at the registry.
    proxy = make_proxy(
        write_policy(mode="delegate"),
        registry.url,
        port=port,
        admin_listen=ADMIN,
        extra=FAST_PROBE,
        prefix=["faketime", "-f", "+2h"],
    )
    body = wait_status(proxy.admin_port, "/readyz", 503)
    assert "the registry refused a token regauth signed (401, error=invalid_token)" in body
    # The registry's Date header has a resolution of one second.
    assert re.search(r"its clock is 7(199|200|201) s behind regauth's", body), body


def test_a_registry_that_becomes_open_is_detected_within_the_check_interval(
    write_policy, make_registry, make_proxy, registry_watches, tmp_path
):
    port = free_port()
    registry = _token_registry(make_registry, port)
    proxy = make_proxy(
        write_policy(mode="delegate"), registry.url, port=port, admin_listen=ADMIN, extra=FAST_PROBE
    )
    assert wait_status(proxy.admin_port, "/readyz", 200) == "ready\n"
    # The registry is restarted on the same port without auth.
    registry.stop()
    reopened = make_registry(name="reopened", port=registry.port)
    registry_watches[reopened.url].add_exchange_log(proxy.log_path)
    started = time.monotonic()
    body = wait_status(proxy.admin_port, "/readyz", 503, timeout=15)
    detected = time.monotonic() - started
    assert OPEN_REASON in body
    print(f"an open registry detected {detected:.2f} s after its restart")
    assert detected < 3 * 1 + 2, detected  # three check intervals of 1 s, and some slack
    assert _push(proxy).status == 503
    assert _push(proxy, "cache/app", _ci_token(proxy)).status == 503
    _only_own_probes(reopened)
    assert scrape(proxy.admin_port).value("regauth_delegate_refusing") == 1


def test_the_opt_out_forwards_and_says_so_loudly(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(
        write_policy(mode="delegate"),
        registry.url,
        admin_listen=ADMIN,
        extra=FAST_PROBE,
        env={"REGAUTH_DELEGATE_UNCHECKED": "1"},
    )
    assert _push(proxy).status == 201  # what the opt-out is for: nothing checked
    output = proxy.output()
    assert "WARNING: delegate mode runs UNCHECKED" in output
    assert "for test setups only" in output
    status, body = get(proxy.admin_port, "/readyz")
    deadline = time.monotonic() + 10
    while "warning: " not in body and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = get(proxy.admin_port, "/readyz")
    assert status == 200
    assert body.startswith("ready\nwarning: the delegate check is off (--delegate-unchecked)"), body
    assert OPEN_REASON in body
    metrics = scrape(proxy.admin_port)
    assert metrics.value("regauth_delegate_unchecked") == 1
    assert metrics.value("regauth_delegate_refusing") == 0
    assert metrics.value("regauth_delegate_check", result="open") == 1
    forwarded = [r for r in proxy.records() if r.get("answered_by") == "upstream"]
    assert [r["status"] for r in forwarded] == [202, 201]


def test_the_embedded_registry_passes_the_check(tmp_path, certs_dir, write_policy):
    proxy = start_proxy(
        tmp_path / "embedded",
        certs_dir,
        write_policy(mode="delegate"),
        upstream=None,
        admin_listen=ADMIN,
        extra=FAST_PROBE,
    )
    try:
        assert wait_status(proxy.admin_port, "/readyz", 200) == "ready\n"
        assert _push(proxy).status == 401
        assert _push(proxy, "cache/app", _ci_token(proxy)).status == 201
        assert scrape(proxy.admin_port).value("regauth_delegate_check", result="ok") == 1
    finally:
        proxy.stop()


def test_enforce_mode_sends_no_check(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, admin_listen="off", extra=FAST_PROBE)
    assert _push(proxy, "cache/app", _ci_token(proxy)).status == 201
    time.sleep(1.5)
    lines = registry.requests_seen()
    assert not [line for line in lines if line.startswith("GET /v2/ ")][1:], lines
    assert json.dumps(lines).count("POST") == 1


def test_run_proxy_passes_the_opt_out_through(write_policy, make_registry, certs_dir, tmp_path):
    import os
    import signal
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    registry = make_registry()
    port = free_port()
    output = tmp_path / "run_proxy.out"
    env = {
        **os.environ,
        "REGAUTH_LOG": str(tmp_path / "exchange.jsonl"),
        "REGAUTH_ADMIN_LISTEN": "off",
    }
    env.pop("REGAUTH_DELEGATE_UNCHECKED", None)
    process = subprocess.Popen(
        [
            str(repo / "run_proxy.sh"),
            "--upstream",
            registry.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--certs-dir",
            str(certs_dir),
            "--policy",
            str(write_policy(mode="delegate")),
            "--delegate-unchecked",
        ],
        cwd=repo,
        env=env,
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not all(
            text in output.read_text(errors="replace")
            for text in (f"listening at 127.0.0.1:{port}", "WARNING: delegate mode runs UNCHECKED")
        ):
            assert process.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
