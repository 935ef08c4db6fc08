"""IPv6 everywhere an address is taken: --listen, --public-url, upstream URLs, policy networks."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import build_id
from tests.support.proxy import start_proxy
from tests.support.tools import skopeo


def _copy(proxy_netloc, certs_dir, layout_path, ref, creds=None):
    args = ["copy", "--dest-cert-dir", str(certs_dir)]
    if creds:
        args += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    return skopeo(*args, f"oci:{layout_path}:latest", f"docker://{proxy_netloc}/{ref}")


@pytest.fixture
def ipv6_only_name():
    """A host name that resolves to ::1 only, for the duration of the test.

    skopeo 1.9's image-reference grammar has no IPv6 literals (`docker://[::1]:5443/...` is
    an invalid reference), so skopeo reaches [::1] by a name; everything else (the realm the
    token is fetched from, the upstream, regauth's listener) uses the literal.
    """
    name = f"regauth-ip6-{os.getpid()}.test"
    hosts = Path("/etc/hosts")
    original = hosts.read_text()
    hosts.write_text(original + f"\n::1 {name}\n")
    try:
        yield name
    finally:
        current = hosts.read_text()
        hosts.write_text(
            "\n".join(line for line in current.splitlines() if not line.endswith(f" {name}")) + "\n"
        )


def test_skopeo_pushes_and_pulls_over_ipv6_loopback(
    write_policy, certs_dir, layout, tmp_path, ipv6_only_name
):
    # regauth listens on [::1] only, and its upstream registry is on [::1] too.
    registry = RegistryProcess(tmp_path / "registry6", host="::1")
    registry.start()
    port = free_port()
    proxy = start_proxy(
        tmp_path / "proxy6",
        certs_dir,
        write_policy(),
        registry.url,
        listen_host="::1",
        public_url=f"https://[::1]:{port}",
        port=port,
    )
    netloc = f"{ipv6_only_name}:{port}"
    try:
        path, digest = layout
        pushed = _copy(netloc, certs_dir, path, "demo/v6:1", ("ci", PASSWORDS["ci"]))
        assert pushed.ok, pushed.output
        build = f"builds/{build_id()}"
        assert _copy(netloc, certs_dir, path, f"{build}:1").ok  # anonymous, capability
        pulled = skopeo("inspect", "--cert-dir", str(certs_dir), f"docker://{netloc}/demo/v6:1")
        assert pulled.ok, pulled.output
        assert json.loads(pulled.output[pulled.output.index("{") :])["Digest"] == digest
        # The realm keeps the brackets and the port.
        records = proxy.records()
        realms = {
            r["challenge"]["realm"]
            for r in records
            if isinstance(r.get("challenge"), dict) and "realm" in r["challenge"]
        }
        assert realms == {f"https://[::1]:{port}/v2/token"}
        assert all(r["client"].startswith("::1:") for r in records)
        assert any(
            line.startswith("PUT /v2/demo/v6/manifests/1 ") for line in registry.requests_seen()
        )
    finally:
        proxy.stop()
        registry.stop()


def test_policy_networks_match_ipv6_clients(write_policy, make_registry, certs_dir, tmp_path):
    registry = make_registry()
    rules = """  - comment: pushes to v6only/ from the IPv6 loopback only
    account: ci
    repository: "v6only/**"
    networks: ["::1/128"]
    actions: [pull, push]
"""
    policy = write_policy(extra_rules=rules)
    port = free_port()
    proxy = start_proxy(
        tmp_path / "proxy",
        certs_dir,
        policy,
        registry.url,
        listen_host="",
        public_url=f"https://localhost:{port}",
        port=port,
    )
    try:
        context = ssl.create_default_context(cafile=str(certs_dir / "ca.crt"))
        context.check_hostname = False

        def scope_from(host: str) -> str:
            url = (
                f"https://{host}:{port}/v2/token?service={SERVICE}"
                "&scope=repository:v6only/app:pull,push"
            )
            request = urllib.request.Request(url, headers={"Authorization": _basic("ci")})
            with urllib.request.urlopen(request, context=context, timeout=20) as response:
                return json.loads(response.read())["scope"]

        assert scope_from("[::1]") == "repository:v6only/app:pull,push"
        assert scope_from("127.0.0.1") == ""  # the rule is skipped: default deny
    finally:
        proxy.stop()


def _basic(user: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


def test_brackets_are_required_for_ipv6_listen_addresses(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "regauth.cli",
            "serve",
            "--listen",
            "::1:5443",
            "--upstream",
            "http://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "write an IPv6 address in brackets" in done.stderr
