"""Signing-key lifecycle against a running regauth (issue 11).

A push loop runs through `regauth serve` with its embedded registry while the keys go through
rotate → activate → retire and a scheduled activation (`rotate --activate-after`): the registry
is restarted with each new bundle before a new key signs, and no request fails.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import free_port
from regauth.tokens import keystate
from regauth.tokens.keyids import libtrust_kid
from tests.support.httpclient import Reply
from tests.support.httpclient import get_token
from tests.support.httpclient import request
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import REGAUTH
from tests.support.proxy import ProxyProcess
from tests.support.proxy import start_proxy
from tests.support.pushloop import PushLoop


def certs_cli(
    certs: Path, *args: str, policy: Path | None = None, faketime: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [
        *(["faketime", "-f", faketime] if faketime else []),
        str(REGAUTH),
        "certs",
        *args,
        "--dir",
        str(certs),
        *(["--policy", str(policy)] if policy else []),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def wait_for_output(proxy: ProxyProcess, text: str, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.output().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} ×{count} not in regauth's output:\n{proxy.output()}")


def jwks_kids(proxy: ProxyProcess) -> set[str]:
    import ssl

    context = ssl.create_default_context(cafile=str(proxy.ca))
    with urllib.request.urlopen(f"{proxy.url}/.well-known/jwks.json", context=context) as r:
        return {k["kid"] for k in json.load(r)["keys"]}


def activation(certs: Path, name: str) -> float:
    at = keystate.read_activations(certs)[name]  # type: ignore[index]
    assert at is not None
    return at


def test_push_loop_across_rotate_activate_retire_with_the_embedded_registry(tmp_path, write_policy):
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    policy = write_policy(lifetime=60)
    proxy = start_proxy(tmp_path / "proxy", certs, policy, upstream=None)
    restarted = "embedded registry restarted with"
    try:
        first = keystate.lifecycle(certs, time.time()).signer
        loop = PushLoop(proxy.port, proxy.ca, SERVICE, ("ci", PASSWORDS["ci"]))
        loop.start()
        time.sleep(3)
        # 1. rotate: the new key is published (JWKS, bundle) and the registry restarted, but
        # tokens are still signed with the first key.
        out = certs_cli(certs, "rotate").stdout
        second_name = re.search(r"(token-signing-\S+) is published", out).group(1)
        second = next(k for k in pki.load_signing_keys(certs) if k.name == second_name)
        wait_for_output(proxy, f"{restarted} 2 trusted signing keys")
        assert libtrust_kid(second.public_key) in jwks_kids(proxy)
        time.sleep(3)
        # 2. activate: tokens are signed with the second key from now on.
        activate_started = time.time()
        certs_cli(certs, "activate", second_name, policy=policy)
        wait_for_output(proxy, f"tokens are signed with key {second_name}")
        activated = time.time()
        time.sleep(3)
        # 3. retire the first key (the CLI's clock is past its refresh tokens' lifetime: this loop
        # fetches a token per push, so none of them is older than a few seconds).
        certs_cli(certs, "retire", first.name, policy=policy, faketime="+8d")
        wait_for_output(proxy, f"{restarted} 1 trusted signing keys")
        assert libtrust_kid(first.public_key) not in jwks_kids(proxy)
        time.sleep(3)
        # 4. a scheduled activation: the running regauth switches by itself.
        out = certs_cli(certs, "rotate", "--activate-after", "4s").stdout
        third_name = re.search(r"(token-signing-\S+) is published", out).group(1)
        third = next(k for k in pki.load_signing_keys(certs) if k.name == third_name)
        third_at = activation(certs, third_name)
        wait_for_output(proxy, f"{restarted} 2 trusted signing keys", count=2)
        wait_for_output(proxy, f"tokens are signed with key {third_name}")
        time.sleep(3)
        result = loop.stop()
    finally:
        proxy.stop()
    longest = result.longest
    restarts = re.findall(rf"{restarted} \d+ trusted signing keys in ([0-9.]+) s", proxy.output())
    print(
        f"\npush loop: {len(result.samples)} requests, {len(result.failures)} failed, "
        f"longest {longest.seconds * 1000:.0f} ms ({longest.method} {longest.what}), median "
        f"{statistics.median(s.seconds for s in result.samples) * 1000:.1f} ms, "
        f"{len(result.tokens)} tokens; registry restarts (s): {', '.join(restarts)}"
    )
    assert not result.failures, result.failures[:5]
    assert len(result.samples) > 200
    kids = {libtrust_kid(k.public_key): k.name for k in (first, second, third)}
    for asked, got, kid in result.tokens:
        name = kids[kid]
        # A staged key never signs before its activation.
        if name == second_name:
            assert got >= activate_started, (asked, got, name)
        if name == third_name:
            assert got >= third_at, (asked, got, name)
        # Once a key is active (and regauth noticed), it signs.
        if asked >= activated + 1 and asked < third_at:
            assert name == second_name, (asked, name)
        if asked >= third_at + 2:
            assert name == third_name, (asked, name)
    assert {kids[kid] for _, _, kid in result.tokens} == {first.name, second_name, third_name}


def _upload_start(proxy: ProxyProcess, token: str) -> Reply:
    return request(
        proxy.port,
        proxy.ca,
        "POST",
        "/v2/demo/app/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
        b"",
    )


def _ci_token(proxy: ProxyProcess) -> str:
    reply = get_token(
        proxy.port, proxy.ca, ["repository:demo/app:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    )
    assert reply.status == 200, reply.body
    return reply.json()["token"]


@pytest.mark.parametrize("mode", ["delegate", "enforce"])
def test_a_registry_with_a_stale_bundle_names_the_key_it_does_not_trust(
    tmp_path, write_policy, make_registry, make_proxy, registry_watches, mode
):
    certs = tmp_path / "certs"
    pki.init_certs(certs)
    port = free_port()
    registry = make_registry(
        "token", realm=f"https://localhost:{port}/v2/token", signing_certs=certs
    )
    policy = write_policy(mode=mode)
    proxy = make_proxy(policy, registry.url, port=port, certs_dir=certs)
    assert _upload_start(proxy, _ci_token(proxy)).status == 202
    # A new key signs, and this registry was not told (it reads its bundle at start only).
    name = re.search(r"(token-signing-\S+) is published", certs_cli(certs, "rotate").stdout).group(
        1
    )
    certs_cli(certs, "activate", name, policy=policy)
    wait_for_output(proxy, f"tokens are signed with key {name}")
    kid = libtrust_kid(next(k for k in pki.load_signing_keys(certs) if k.name == name).public_key)
    refused = [_upload_start(proxy, _ci_token(proxy)) for _ in range(3)]
    # The client gets the registry's answer: its 401 and its error body.
    status, _, body = registry_watches[registry.url].direct(
        "POST", "/v2/demo/app/blobs/uploads/", b"", {"Authorization": "Bearer x"}
    )
    assert status == 401
    registry_body = json.loads(body)
    for reply in refused:
        assert reply.status == 401
        assert reply.json()["errors"][0]["code"] == registry_body["errors"][0]["code"]
        assert 'error="invalid_token"' in reply.header("www-authenticate")
    message = (
        f"the registry does not trust signing key {kid}: update its rootcertbundle "
        "(`regauth certs bundle`) and restart it"
    )
    wait_for_output(proxy, message)
    assert proxy.output().count(message) == 1  # once per key
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # a record is written once the response has gone out
        marked = [r for r in proxy.records() if r.get("upstream_refused_token")]
        if len(marked) >= 3:
            break
        time.sleep(0.05)
    assert len(marked) == 3 and {r["upstream_refused_token"] for r in marked} == {kid}
    assert all(r["status"] == 401 and r["answered_by"] == "upstream" for r in marked)
    # Once the registry trusts the key, it is no longer named.
    Path(registry.token.rootcertbundle).write_text(pki.bundle_pem(pki.load_signing_keys(certs)))
    registry.restart()
    assert _upload_start(proxy, _ci_token(proxy)).status == 202
    wait_for_output(proxy, f"the registry accepts signing key {kid} again")
