"""Fail closed: if regauth cannot decide, nothing is forwarded."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth import pki
from regauth.mitm import guard
from regauth.mitm.addon import RegistryAuth
from regauth.registry_process import free_port
from tests.support import httpclient
from tests.support.proxy import start_proxy

REPO = Path(__file__).resolve().parents[2]


def _serve(args: list[str], timeout: float = 60) -> tuple[subprocess.CompletedProcess, bool]:
    """Run `regauth serve`; report whether its port ever accepted a connection."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "regauth.cli", "serve", "--listen",
                                f"127.0.0.1:{port}", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    listened = False
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                listened = True
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), listened


def _requests(registry) -> int:
    time.sleep(0.3)
    return len(registry.requests_seen())


def test_invalid_policy_exits_before_listening(make_registry, certs_dir, tmp_path):
    registry = make_registry()
    before = _requests(registry)
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nservice: s\nrules:\n  - account: anonymous\n"
                      "    repository: 'cache/**'\n    actions: [push]\n")
    done, listened = _serve(["--upstream", registry.url, "--certs-dir", str(certs_dir),
                             "--policy", str(policy), "--log", str(tmp_path / "l.jsonl")])
    assert done.returncode != 0
    assert not listened
    assert f"{policy}:6:14: rule 1: grants push to anonymous" in done.stderr
    assert _requests(registry) == before


def test_missing_policy_file_exits(make_registry, certs_dir, tmp_path):
    registry = make_registry()
    done, listened = _serve(["--upstream", registry.url, "--certs-dir", str(certs_dir),
                             "--policy", str(tmp_path / "absent.yaml")])
    assert done.returncode != 0 and not listened
    assert "absent.yaml" in done.stderr


def test_unreadable_signing_key_exits(make_registry, write_policy, tmp_path):
    registry = make_registry()
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    (certs / "private" / "token-signing.key").write_text("not a key")
    done, listened = _serve(["--upstream", registry.url, "--certs-dir", str(certs), "--policy",
                             str(write_policy())])
    assert done.returncode != 0 and not listened


def test_world_readable_signing_key_exits(make_registry, write_policy, tmp_path):
    registry = make_registry()
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    (certs / "private" / "token-signing.key").chmod(0o644)
    done, listened = _serve(["--upstream", registry.url, "--certs-dir", str(certs), "--policy",
                             str(write_policy())])
    assert done.returncode != 0 and not listened
    assert "chmod 600" in done.stderr


def test_unparsable_option_value_exits_instead_of_dropping_the_addon(make_registry,
                                                                    write_policy, certs_dir,
                                                                    tmp_path):
    """mitmproxy#8013: with `-s script.py`, a bad value for a script option silently drops the
    script and the proxy forwards everything. regauth serve embeds its addons: it exits."""
    registry = make_registry()
    before = _requests(registry)
    args = ["--upstream", registry.url, "--certs-dir", str(certs_dir), "--policy",
            str(write_policy()), "--log", str(tmp_path / "l.jsonl")]
    done, listened = _serve([*args, "--", "--set", "regauth_stream_threshold=abc"])
    assert done.returncode != 0 and not listened
    assert "regauth_stream_threshold" in done.stderr + done.stdout
    refused, listened = _serve([*args, "--", "--set", "stream_large_bodies=1m"])
    assert refused.returncode != 0 and not listened
    assert _requests(registry) == before


@pytest.mark.parametrize("extra", [
    ["--ignore-hosts=.*"], ["--ignore-host", "."], ["--set=ignore_hosts=.*"],
    ["--tcp-hosts=.*"], ["--allow-hosts=nothing"], ["--set", "map_remote=|.*|http://x/"],
    ["--set", "modify_headers=|~q|Authorization|Basic eA=="], ["--set", "keep_host_header=true"],
    ["--set", "validate_inbound_headers=false"], ["-w", "/tmp/regauth-flows.bin"],
    ["--mode", "regular@127.0.0.1:0"],
    ["--mode", "socks5@127.0.0.1:0"],
])
def test_options_that_bypass_regauth_are_refused_however_spelled(make_registry, write_policy,
                                                                 certs_dir, tmp_path, extra):
    registry = make_registry()
    before = _requests(registry)
    done, listened = _serve(["--upstream", registry.url, "--certs-dir", str(certs_dir),
                             "--policy", str(write_policy()), "--log",
                             str(tmp_path / "l.jsonl"), "--", *extra])
    assert done.returncode != 0, done.stdout + done.stderr
    assert not listened
    assert _requests(registry) == before


def test_run_proxy_sh_uses_the_embedded_addons():
    """The supported start path never loads regauth as a reloadable script."""
    script = (REPO / "run_proxy.sh").read_text()
    assert "exec .venv/bin/regauth serve" in script
    assert "-s addons/registry_auth.py" not in script.split("exec .venv/bin/regauth serve")[1]


def test_policy_file_removed_at_runtime_keeps_the_last_good_policy(write_policy, make_registry,
                                                                   tmp_path, certs_dir):
    registry = make_registry()
    policy = write_policy()
    proxy = start_proxy(tmp_path / "proxy", certs_dir, policy, registry.url)
    try:
        policy.unlink()
        time.sleep(2.5)
        reply = httpclient.get_token(proxy.port, proxy.ca, ["repository:public/x:pull"],
                                     "regauth-test")
        assert reply.status == 200 and reply.json()["scope"] == "repository:public/x:pull"
        assert "policy change refused" in proxy.output()
    finally:
        proxy.stop()


def _registry_flow(path: str = "/v2/public/app/manifests/1", method: str = "GET"):
    flow = tflow.tflow(req=tutils.treq(method=method.encode(), path=path.encode(),
                                       host="127.0.0.1", port=5000, content=b""))
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:5000")
    return flow


def test_an_exception_in_a_hook_refuses_the_flow(write_policy, certs_dir, monkeypatch):
    addon = RegistryAuth()

    def explode(*_args, **_kwargs):
        raise RuntimeError("boom")

    async def run() -> http.HTTPFlow:
        with taddons.context(addon) as tctx:
            tctx.configure(addon, mode=["reverse:http://127.0.0.1:5000"],
                           regauth_policy=str(write_policy()), regauth_certs_dir=str(certs_dir),
                           regauth_public_url="https://localhost:5443",
                           regauth_log=os.devnull)
            monkeypatch.setattr("regauth.gate.decide", explode)
            flow = _registry_flow()
            await addon.requestheaders(flow)
            return flow

    flow = asyncio.run(run())
    assert flow.response is not None and flow.response.status_code == 500
    assert b"UNAVAILABLE" in flow.response.content
    assert guard.FORWARD_MARK not in flow.metadata


def test_the_guard_kills_requests_without_a_decision():
    undecided = _registry_flow()
    guard.RegauthGuard().requestheaders(undecided)
    assert undecided.error is not None and undecided.error.msg == "Connection killed."
    decided = _registry_flow()
    decided.metadata[guard.FORWARD_MARK] = True
    guard.RegauthGuard().requestheaders(decided)
    assert decided.error is None


def test_without_a_policy_every_request_is_refused(certs_dir):
    addon = RegistryAuth()

    async def run() -> http.HTTPFlow:
        with taddons.context(addon) as tctx:
            tctx.configure(addon, mode=["reverse:http://127.0.0.1:5000"])
            flow = _registry_flow()
            await addon.requestheaders(flow)
            return flow

    flow = asyncio.run(run())
    assert flow.response is not None and flow.response.status_code == 503


def _run_requestheaders(flow, policy: Path, certs_dir: Path) -> http.HTTPFlow:
    addon = RegistryAuth()

    async def run() -> http.HTTPFlow:
        with taddons.context(addon) as tctx:
            tctx.configure(addon, mode=["reverse:http://127.0.0.1:5000"],
                           regauth_policy=str(policy), regauth_certs_dir=str(certs_dir),
                           regauth_public_url="https://localhost:5443", regauth_log=os.devnull)
            await addon.requestheaders(flow)
            return flow

    return asyncio.run(run())


def test_replayed_and_foreign_destination_flows_are_refused(write_policy, certs_dir):
    replayed = _registry_flow("/v2/")
    replayed.is_replay = "request"
    elsewhere = _registry_flow("/v2/")
    elsewhere.request.host = "attacker.example"
    regular = _registry_flow("/v2/")
    regular.client_conn.proxy_mode = ProxyMode.parse("regular")
    for flow in (replayed, elsewhere, regular):
        done = _run_requestheaders(flow, write_policy(), certs_dir)
        assert done.response is not None and done.response.status_code == 403
        assert guard.FORWARD_MARK not in done.metadata


def test_the_guard_kills_connect_requests():
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", path=b"", authority=b"x:443"))
    guard.RegauthGuard().http_connect(flow)
    assert flow.error is not None and flow.error.msg == "Connection killed."
