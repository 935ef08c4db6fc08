"""The admin listener of a real `regauth serve`: metrics after real traffic, health, readiness.

Every count is checked exactly: raw HTTP requests whose outcome is known one by one, and a
skopeo push whose requests are counted from the exchange log of the same process.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from tests.support.admin import get
from tests.support.admin import scrape
from tests.support.admin import wait_status
from tests.support.httpclient import basic
from tests.support.httpclient import get_token
from tests.support.httpclient import post_token
from tests.support.httpclient import request
from tests.support.oci import make_layout
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE

pytestmark = pytest.mark.integration
FAST_PROBE = ["--set", "regauth_upstream_check_seconds=1"]
ADMIN = "127.0.0.1:0"  # any free port, read back from the log


def _token(proxy, scopes, credentials=None) -> str:
    reply = get_token(proxy.port, proxy.ca, scopes, SERVICE, credentials)
    assert reply.status == 200, reply.body
    return reply.json()["token"]


def _get(proxy, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request(proxy.port, proxy.ca, "GET", path, headers)


def test_metrics_count_each_decision_exactly(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, admin_listen=ADMIN)
    before = scrape(proxy.admin_port)

    _token(proxy, ["repository:public/a:pull"])  # anonymous, rule 3
    anon_cache = _token(proxy, ["repository:cache/x:pull"])  # anonymous, default deny
    ci = _token(proxy, ["repository:cache/x:pull,push"], ("ci", PASSWORDS["ci"]))  # rule 1
    for password in ("wrong-1", "wrong-2", "wrong-2"):  # the repeat is not a new guess
        assert get_token(proxy.port, proxy.ca, [], SERVICE, ("alice", password)).status == 401
    assert (
        post_token(
            proxy.port,
            proxy.ca,
            {"grant_type": "refresh_token", "client_id": "t", "refresh_token": "not-a-token"},
        ).status
        == 400
    )
    assert _get(proxy, "/v2/public/a/tags/list").status == 401  # no token
    assert _get(proxy, "/v2/public/a/tags/list", "abc").status == 401  # invalid token
    assert _get(proxy, "/v2/cache/x/tags/list", anon_cache).status == 401  # insufficient
    assert _get(proxy, "/v2/cache/x/tags/list", ci).status == 404  # forwarded
    assert _get(proxy, "/v2/cache/x/manifests/1", ci).status == 404  # forwarded
    assert _get(proxy, "/v2/a/../b/tags/list").status == 400  # path refused
    for password in ("wrong-3", "wrong-4", "wrong-5"):  # five failures: the limit
        assert get_token(proxy.port, proxy.ca, [], SERVICE, ("alice", password)).status == 401
    assert get_token(proxy.port, proxy.ca, [], SERVICE, ("alice", "wrong-6")).status == 429

    after = scrape(proxy.admin_port)
    expected = {
        ("regauth_token_requests_total", ("anonymous", "issued")): 2,
        ("regauth_token_requests_total", ("password", "issued")): 1,
        ("regauth_token_requests_total", ("password", "invalid_credentials")): 6,
        ("regauth_token_requests_total", ("password", "rate_limited")): 1,
        ("regauth_token_requests_total", ("refresh_token", "invalid_grant")): 1,
    }
    for (name, (grant_type, outcome)), count in expected.items():
        assert after.delta(before, name, grant_type=grant_type, outcome=outcome) == count, (
            grant_type,
            outcome,
        )
    assert (
        after.total("regauth_token_requests_total") - before.total("regauth_token_requests_total")
        == 11
    )
    assert after.delta(before, "regauth_scope_decisions_total", rule="3", result="granted") == 1
    assert after.delta(before, "regauth_scope_decisions_total", rule="1", result="granted") == 1
    assert (
        after.delta(before, "regauth_scope_decisions_total", rule="default", result="denied") == 1
    )
    assert after.delta(before, "regauth_login_failures_total") == 5
    assert after.delta(before, "regauth_rate_limited_total") == 1
    gate = {
        ("tags", "challenged"): 1,
        ("tags", "invalid_token"): 1,
        ("tags", "insufficient_scope"): 1,
        ("tags", "forwarded"): 1,
        ("manifest", "forwarded"): 1,
        ("none", "refused"): 1,
    }
    for (route, outcome), count in gate.items():
        assert (
            after.delta(before, "regauth_gate_requests_total", route=route, outcome=outcome)
            == count
        ), (route, outcome)
    assert after.delta(before, "regauth_upstream_request_duration_seconds_count", route="tags") == 1
    assert (
        after.delta(before, "regauth_upstream_request_duration_seconds_count", route="manifest")
        == 1
    )
    # Labels never carry names, scopes or secrets.
    for secret in ("public/a", "cache/x", "alice", "wrong-", PASSWORDS["ci"]):
        assert secret not in after.text
    not_after = pki.load_signing_keys(proxy.certs_dir)[-1].certificate.not_valid_after_utc
    assert after.value("regauth_signing_key_not_after_timestamp_seconds") == not_after.timestamp()
    assert after.has("regauth_log_records_dropped_total")
    assert after.value("regauth_upstream_up") == 1
    # Upstream responses with a body stream through; mitmproxy's per-request notice about it
    # is dropped (it cost two writes and a loop wake-up per request).
    assert "Streaming response from" not in proxy.output()


def test_metrics_match_the_exchange_log_after_a_skopeo_push(
    write_policy, make_registry, make_proxy, tmp_path
):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, admin_listen=ADMIN)
    layout = tmp_path / "layout"
    make_layout(layout)
    before = scrape(proxy.admin_port)
    done = subprocess.run(
        [
            "skopeo",
            "copy",
            "--dest-creds",
            f"ci:{PASSWORDS['ci']}",
            "--dest-cert-dir",
            str(proxy.certs_dir),
            f"oci:{layout}:latest",
            f"docker://{proxy.netloc}/cache/app:1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    after = scrape(proxy.admin_port)
    records = proxy.records()
    tokens = [r for r in records if r["kind"] == "token"]
    registry_records = [r for r in records if r["kind"] == "registry"]
    forwarded = [r for r in registry_records if r.get("answered_by") == "upstream"]
    challenged = [r for r in registry_records if r["status"] == 401]
    assert tokens and forwarded and challenged
    assert after.delta(
        before, "regauth_token_requests_total", grant_type="password", outcome="issued"
    ) == len(tokens)
    assert after.total("regauth_gate_requests_total", outcome="forwarded") - before.total(
        "regauth_gate_requests_total", outcome="forwarded"
    ) == len(forwarded)
    assert after.total("regauth_gate_requests_total", outcome="challenged") - before.total(
        "regauth_gate_requests_total", outcome="challenged"
    ) == len(challenged)
    assert after.total("regauth_upstream_request_duration_seconds_count") - before.total(
        "regauth_upstream_request_duration_seconds_count"
    ) == len(forwarded)
    by_route: dict[str, int] = {}
    for r in forwarded:
        by_route[r["route"]] = by_route.get(r["route"], 0) + 1
    for route, count in by_route.items():
        assert (
            after.delta(before, "regauth_gate_requests_total", route=route, outcome="forwarded")
            == count
        ), route


def test_connections_by_state(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, admin_listen=ADMIN)
    ci = _token(proxy, ["repository:cache/x:pull,push"], ("ci", PASSWORDS["ci"]))
    context = ssl.create_default_context(cafile=str(proxy.ca))
    idle = http.client.HTTPSConnection("localhost", proxy.port, context=context, timeout=30)
    busy = http.client.HTTPSConnection("localhost", proxy.port, context=context, timeout=30)
    try:
        idle.request("GET", "/v2/")
        idle.getresponse().read()  # answered; the connection stays open
        busy.request(
            "POST",
            "/v2/cache/x/blobs/uploads/",
            headers={"Authorization": f"Bearer {ci}", "Content-Length": "0"},
        )
        reply = busy.getresponse()
        reply.read()
        location = reply.headers["Location"]
        # A blob upload whose body has only begun: a request in flight.
        busy.putrequest("PATCH", location)
        busy.putheader("Authorization", f"Bearer {ci}")
        busy.putheader("Content-Length", str(10 * 1024 * 1024))
        busy.endheaders()
        busy.send(b"x" * 65536)
        deadline = time.monotonic() + 10
        while True:
            now = scrape(proxy.admin_port)
            states = (
                now.value("regauth_client_connections", state="active"),
                now.value("regauth_client_connections", state="idle"),
            )
            if states == (1, 1) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert states == (1, 1)
    finally:
        idle.close()
        busy.close()
    deadline = time.monotonic() + 10
    while (
        scrape(proxy.admin_port).total("regauth_client_connections") and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert scrape(proxy.admin_port).total("regauth_client_connections") == 0


def test_policy_reloads_are_counted(write_policy, make_registry, make_proxy):
    registry = make_registry()
    policy = write_policy()
    proxy = make_proxy(policy, registry.url, admin_listen=ADMIN)
    before = scrape(proxy.admin_port)
    loaded = before.value("regauth_policy_last_reload_success_timestamp_seconds")
    assert 0 < loaded <= time.time()
    text = policy.read_text()
    policy.write_text(text + "# an edit\n")
    deadline = time.monotonic() + 15
    while scrape(proxy.admin_port).delta(before, "regauth_policy_reloads_total", result="ok") < 1:
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.2)
    policy.write_text(text + "rules: []\n")  # a duplicate key: refused
    while (
        scrape(proxy.admin_port).delta(before, "regauth_policy_reloads_total", result="refused") < 1
    ):
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.2)
    after = scrape(proxy.admin_port)
    assert after.delta(before, "regauth_policy_reloads_total", result="ok") == 1
    assert after.delta(before, "regauth_policy_reloads_total", result="refused") == 1
    assert after.value("regauth_policy_last_reload_success_timestamp_seconds") > loaded


def test_health_and_readiness_follow_the_upstream(write_policy, tmp_path, make_proxy):
    registry = RegistryProcess(tmp_path / "registry")
    registry.start()
    try:
        proxy = make_proxy(write_policy(), registry.url, extra=FAST_PROBE, admin_listen=ADMIN)
        assert get(proxy.admin_port, "/healthz") == (200, "ok\n")
        assert wait_status(proxy.admin_port, "/readyz", 200) == "ready\n"
        registry.stop()
        body = wait_status(proxy.admin_port, "/readyz", 503, timeout=15)
        assert body.startswith("not ready: the upstream registry has not answered for")
        assert "ConnectionRefusedError" in body or "Connect call failed" in body
        assert get(proxy.admin_port, "/healthz") == (200, "ok\n")  # alive, just not ready
        assert scrape(proxy.admin_port).value("regauth_upstream_up") == 0
        registry.start()  # same port
        assert wait_status(proxy.admin_port, "/readyz", 200, timeout=15) == "ready\n"
    finally:
        registry.stop()


def test_readiness_waits_for_an_upstream_that_never_answered(write_policy, make_proxy):
    from regauth.ops.registry_process import free_port

    proxy = make_proxy(
        write_policy(), f"http://127.0.0.1:{free_port()}", extra=FAST_PROBE, admin_listen=ADMIN
    )
    body = wait_status(proxy.admin_port, "/readyz", 503)
    assert body.startswith("not ready: the upstream registry has not answered yet")


@pytest.mark.parametrize("mode", ["enforce", "delegate"])
def test_the_admin_routes_are_not_reachable_through_the_proxy_port(
    write_policy, make_registry, make_proxy, mode
):
    from regauth.ops.registry_process import free_port

    if mode == "delegate":
        # Delegate mode forwards only to a registry that checks regauth's tokens (else 503).
        port = free_port()
        registry = make_registry("token", realm=f"https://localhost:{port}/v2/token")
        proxy = make_proxy(write_policy(mode=mode), registry.url, admin_listen=ADMIN, port=port)
    else:
        registry = make_registry()
        proxy = make_proxy(write_policy(mode=mode), registry.url, admin_listen=ADMIN)
    assert get(proxy.admin_port, "/metrics")[0] == 200
    for path in ("/metrics", "/healthz", "/readyz"):
        reply = request(proxy.port, proxy.ca, "GET", path)
        assert reply.status == 404, (path, reply.status)
        assert b"regauth_" not in reply.body and b"ready" not in reply.body
        # Not even when the client names the admin listener as the host.
        reply = request(
            proxy.port, proxy.ca, "GET", path, {"Host": f"127.0.0.1:{proxy.admin_port}"}
        )
        assert reply.status in (403, 404) and b"regauth_" not in reply.body


def test_an_admin_port_in_use_stops_regauth_at_start(write_policy, make_registry, make_proxy):
    import socket

    registry = make_registry()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proxy = make_proxy(
            write_policy(), registry.url, wait=False, admin_listen=f"127.0.0.1:{port}"
        )
        assert proxy.process.wait(timeout=30) == 1
    assert f"admin listener 127.0.0.1:{port}" in proxy.output()


def test_admin_off(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, admin_listen="off")
    assert proxy.admin_port is None
    assert "admin listening" not in proxy.output()
    assert _get(proxy, "/v2/").status == 401


def test_metrics_labels_stay_closed_for_hostile_input(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, admin_listen=ADMIN)
    hostile = 'x"} 1\nregauth_injected 2\n'
    reply = request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/token?service=" + SERVICE + "&scope=repository:a:pull",
        {"Authorization": basic(hostile.replace("\n", ""), "pw")},
    )
    assert reply.status == 401
    text = scrape(proxy.admin_port).text
    assert "regauth_injected" not in text
    json.dumps(text)  # plain text
