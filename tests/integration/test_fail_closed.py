"""Fail closed: if regauth cannot decide, nothing is forwarded."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import free_port
from tests.support import httpclient
from tests.support.proxy import start_proxy

REPO = Path(__file__).resolve().parents[2]


def _serve(args: list[str], timeout: float = 60) -> tuple[subprocess.CompletedProcess, bool]:
    """Run `regauth serve`; report whether its port ever accepted a connection."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "regauth.cli", "serve", "--listen", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    policy.write_text(
        "version: 1\nservice: s\nrules:\n  - account: anonymous\n"
        "    repository: 'cache/**'\n    actions: [push]\n"
    )
    done, listened = _serve(
        [
            "--upstream",
            registry.url,
            "--certs-dir",
            str(certs_dir),
            "--policy",
            str(policy),
            "--log",
            str(tmp_path / "l.jsonl"),
        ]
    )
    assert done.returncode != 0
    assert not listened
    assert f"{policy}:6:14: rule 1: grants push to anonymous" in done.stderr
    assert _requests(registry) == before


def test_missing_policy_file_exits(make_registry, certs_dir, tmp_path):
    registry = make_registry()
    done, listened = _serve(
        [
            "--upstream",
            registry.url,
            "--certs-dir",
            str(certs_dir),
            "--policy",
            str(tmp_path / "absent.yaml"),
        ]
    )
    assert done.returncode != 0 and not listened
    assert "absent.yaml" in done.stderr


def test_unreadable_signing_key_exits(make_registry, write_policy, tmp_path):
    registry = make_registry()
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    (certs / "private" / "token-signing.key").write_text("not a key")
    done, listened = _serve(
        ["--upstream", registry.url, "--certs-dir", str(certs), "--policy", str(write_policy())]
    )
    assert done.returncode != 0 and not listened


def test_world_readable_signing_key_exits(make_registry, write_policy, tmp_path):
    registry = make_registry()
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    (certs / "private" / "token-signing.key").chmod(0o644)
    done, listened = _serve(
        ["--upstream", registry.url, "--certs-dir", str(certs), "--policy", str(write_policy())]
    )
    assert done.returncode != 0 and not listened
    assert "chmod 600" in done.stderr


def test_unparsable_option_value_exits_instead_of_dropping_the_addon(
    make_registry, write_policy, certs_dir, tmp_path
):
    """mitmproxy#8013: with `-s script.py`, a bad value for a script option silently drops the
    script and the proxy forwards everything. regauth serve embeds its addons: it exits."""
    registry = make_registry()
    before = _requests(registry)
    args = [
        "--upstream",
        registry.url,
        "--certs-dir",
        str(certs_dir),
        "--policy",
        str(write_policy()),
        "--log",
        str(tmp_path / "l.jsonl"),
    ]
    done, listened = _serve([*args, "--", "--set", "regauth_stream_threshold=abc"])
    assert done.returncode != 0 and not listened
    assert "regauth_stream_threshold" in done.stderr + done.stdout
    refused, listened = _serve([*args, "--", "--set", "stream_large_bodies=1m"])
    assert refused.returncode != 0 and not listened
    assert _requests(registry) == before


@pytest.mark.parametrize(
    "extra",
    [
        ["--ignore-hosts=.*"],
        ["--ignore-host", "."],
        ["--set=ignore_hosts=.*"],
        ["--tcp-hosts=.*"],
        ["--allow-hosts=nothing"],
        ["--set", "map_remote=|.*|http://x/"],
        ["--set", "modify_headers=|~q|Authorization|Basic eA=="],
        ["--set", "keep_host_header=true"],
        ["--set", "validate_inbound_headers=false"],
        ["-w", "/tmp/regauth-flows.bin"],
        ["--mode", "regular@127.0.0.1:0"],
        ["--mode", "socks5@127.0.0.1:0"],
    ],
)
def test_options_that_bypass_regauth_are_refused_however_spelled(
    make_registry, write_policy, certs_dir, tmp_path, extra
):
    registry = make_registry()
    before = _requests(registry)
    done, listened = _serve(
        [
            "--upstream",
            registry.url,
            "--certs-dir",
            str(certs_dir),
            "--policy",
            str(write_policy()),
            "--log",
            str(tmp_path / "l.jsonl"),
            "--",
            *extra,
        ]
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert not listened
    assert _requests(registry) == before


def test_run_proxy_sh_uses_the_embedded_addons():
    """The supported start path never loads regauth as a reloadable script."""
    script = (REPO / "run_proxy.sh").read_text()
    assert "exec .venv/bin/regauth serve" in script
    assert "-s addons/registry_auth.py" not in script.split("exec .venv/bin/regauth serve")[1]


def test_policy_file_removed_at_runtime_keeps_the_last_good_policy(
    write_policy, make_registry, tmp_path, certs_dir
):
    registry = make_registry()
    policy = write_policy()
    proxy = start_proxy(tmp_path / "proxy", certs_dir, policy, registry.url)
    try:
        policy.unlink()
        time.sleep(2.5)
        reply = httpclient.get_token(
            proxy.port, proxy.ca, ["repository:public/x:pull"], "regauth-test"
        )
        assert reply.status == 200 and reply.json()["scope"] == "repository:public/x:pull"
        assert "policy change refused" in proxy.output()
    finally:
        proxy.stop()
