"""`regauth trace` names each known failure pattern, on logs written by a real `regauth serve`
in front of a real docker-registry, driven by real clients (skopeo, curl) or raw HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.ops.registry_process import free_port
from tests.support import httpclient
from tests.support.policies import ISSUER
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import htpasswd_file
from tests.support.policies import policy_text
from tests.support.proxy import REGAUTH
from tests.support.proxy import ProxyProcess
from tests.support.tools import run
from tests.support.tools import skopeo

CI = f"ci:{PASSWORDS['ci']}"


def trace(proxy: ProxyProcess, *args: str) -> dict:
    done = subprocess.run(
        [str(REGAUTH), "trace", str(proxy.log_path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def diagnoses(proxy: ProxyProcess) -> dict[str, dict]:
    """Diagnosis code -> the first diagnosis with that code, over every conversation."""
    time.sleep(0.3)  # records are flushed per request; let the last one land
    found: dict[str, dict] = {}
    for conversation in trace(proxy)["conversations"]:
        for d in conversation["diagnoses"]:
            found.setdefault(d["code"], d)
    return found


def inspect(proxy: ProxyProcess, ref: str, creds: str | None = None):  # type: ignore[no-untyped-def]
    args = ["inspect", "--cert-dir", str(proxy.certs_dir)]
    if creds:
        args += ["--creds", creds]
    return skopeo(*args, f"docker://{proxy.netloc}/{ref}", timeout=60)


def curl(proxy: ProxyProcess, target: str, *args: str, ca: bool = True):  # type: ignore[no-untyped-def]
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"]
    if ca:
        cmd += ["--cacert", str(proxy.ca)]
    return run([*cmd, *args, f"{proxy.url}{target}"], timeout=30)


@pytest.fixture
def enforce_proxy(write_policy: Callable[..., Path], make_registry, make_proxy) -> ProxyProcess:
    registry = make_registry()
    return make_proxy(write_policy(), registry.url)


def test_challenge_without_token_request(enforce_proxy: ProxyProcess) -> None:
    proxy = enforce_proxy
    assert curl(proxy, "/v2/public/app/tags/list").output == "401"
    # The process that would fetch the token does not trust regauth's CA: nothing reaches
    # regauth, so the log shows the challenge and no token request.
    untrusted = curl(
        proxy, f"/v2/token?service={SERVICE}&scope=repository:public/app:pull", ca=False
    )
    assert not untrusted.ok and "certificate" in untrusted.output
    assert curl(proxy, "/v2/public/app/tags/list").output == "401"
    found = diagnoses(proxy)
    assert "no-token-request" in found
    assert "CA" in found["no-token-request"]["hint"]
    # The failed handshake is in the log too (issue 26, item 7), with curl's own snippet.
    assert "its TLS handshake failed right after" in found["no-token-request"]["detail"]
    assert f"curl --cacert {proxy.ca.absolute()}" in found["tls-untrusted"]["hint"]


def test_bad_credentials(enforce_proxy: ProxyProcess) -> None:
    result = inspect(enforce_proxy, "public/app:1", "ci:not-the-password")
    assert not result.ok
    found = diagnoses(enforce_proxy)
    assert "'ci'" in found["bad-credentials"]["detail"]
    assert "rate-limited" not in found


def test_rate_limited(enforce_proxy: ProxyProcess) -> None:
    proxy = enforce_proxy
    statuses = [
        httpclient.get_token(
            proxy.port, proxy.ca, ["repository:public/app:pull"], SERVICE, ("ci", f"wrong-{i}")
        ).status
        for i in range(7)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429
    found = diagnoses(proxy)
    assert {"rate-limited", "bad-credentials"} <= set(found)


def test_partial_grant_then_insufficient_scope_with_skopeo(
    enforce_proxy: ProxyProcess, layout
) -> None:
    proxy = enforce_proxy
    path, _ = layout
    # Anonymous may pull public/, not push: the token is partial, the upload is refused.
    pushed = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        f"oci:{path}:latest",
        f"docker://{proxy.netloc}/public/app:1",
    )
    assert not pushed.ok
    found = diagnoses(proxy)
    assert "rule 3" in found["partial-grant"]["detail"]
    assert "anyone pulls the public area" in found["partial-grant"]["detail"]
    assert "granted less" in found["insufficient-scope"]["detail"]


def test_insufficient_scope_for_a_scope_never_asked(enforce_proxy: ProxyProcess) -> None:
    proxy = enforce_proxy
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:public/app:pull"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    # ci may push public/, but asked only for pull; the upload needs pull,push.
    reply = httpclient.request(
        proxy.port,
        proxy.ca,
        "POST",
        "/v2/public/app/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
        b"",
    )
    assert reply.status == 401
    found = diagnoses(proxy)
    assert "never asked" in found["insufficient-scope"]["detail"]
    assert "partial-grant" not in found


def test_basic_sent_to_a_registry_route(enforce_proxy: ProxyProcess) -> None:
    assert curl(enforce_proxy, "/v2/public/app/tags/list", "-u", CI).output == "401"
    found = diagnoses(enforce_proxy)
    assert "'ci'" in found["basic-on-registry"]["detail"]


def test_challenge_loop(enforce_proxy: ProxyProcess) -> None:
    proxy = enforce_proxy
    for _ in range(4):  # a client that keeps fetching a token that never covers the request
        token = httpclient.get_token(
            proxy.port, proxy.ca, ["repository:cache/go:pull"], SERVICE
        ).json()["token"]
        reply = httpclient.request(
            proxy.port,
            proxy.ca,
            "GET",
            "/v2/cache/go/tags/list",
            {"Authorization": f"Bearer {token}"},
        )
        assert reply.status == 401
    found = diagnoses(proxy)
    assert "4 times" in found["challenge-loop"]["detail"]
    assert "partial-grant" in found


def _token_registry(
    tmp_path: Path,
    name: str,
    realm_port: int,
    service: str = SERVICE,
    issuer: str = ISSUER,
    certs: Path | None = None,
    certs_dir: Path | None = None,
) -> RegistryProcess:
    bundle = tmp_path / f"{name}-bundle.pem"
    bundle.write_text(pki.bundle_pem(pki.load_signing_keys(certs or certs_dir)))  # type: ignore[arg-type]
    registry = RegistryProcess(
        tmp_path / name,
        token=TokenAuth(f"https://localhost:{realm_port}/v2/token", service, issuer, bundle),
    )
    registry.start()
    return registry


@pytest.fixture
def delegate(
    tmp_path: Path, certs_dir: Path, write_policy, make_proxy
) -> Callable[..., ProxyProcess]:
    """A token-mode registry (configured by the keywords) behind regauth in delegate mode."""
    registries: list[RegistryProcess] = []

    def start(prefix: list[str] | None = None, **registry: object) -> ProxyProcess:
        port = free_port()
        reg = _token_registry(tmp_path, "token-registry", port, certs_dir=certs_dir, **registry)  # type: ignore[arg-type]
        registries.append(reg)
        return make_proxy(write_policy(mode="delegate"), reg.url, port=port, prefix=prefix)

    yield start  # type: ignore[misc]
    for reg in registries:
        reg.stop()


def test_service_mismatch(delegate) -> None:
    proxy = delegate(service="another-service")
    assert not inspect(proxy, "public/app:1").ok
    found = diagnoses(proxy)
    detail = found["service-mismatch"]["detail"]
    assert "'another-service'" in detail and f"'{SERVICE}'" in detail
    assert "registry-refused-token" not in found


def test_registry_refuses_tokens_signed_by_a_key_not_in_its_bundle(
    delegate, tmp_path: Path
) -> None:
    other = tmp_path / "other-certs"
    pki.init_certs(other)
    proxy = delegate(certs=other)
    assert not inspect(proxy, "public/app:1").ok
    found = diagnoses(proxy)
    assert "rootcertbundle" in found["registry-refused-token"]["detail"]


def test_registry_refuses_tokens_from_another_issuer(delegate) -> None:
    proxy = delegate(issuer="someone-else")
    assert not inspect(proxy, "public/app:1").ok
    found = diagnoses(proxy)
    diagnosis = found["registry-refused-token"]
    assert "issuer" in diagnosis["detail"] and f"'{ISSUER}'" in diagnosis["hint"]


def test_registry_refuses_tokens_from_a_clock_two_hours_ahead(delegate) -> None:
    # regauth's clock runs two hours ahead of the registry's: its tokens are not valid yet
    # there (distribution allows 60 s of skew).
    proxy = delegate(prefix=["faketime", "-f", "+2h"])
    assert not inspect(proxy, "public/app:1").ok
    records = [
        r
        for r in proxy.records()
        if r.get("answered_by") == "upstream"
        and r.get("status") == 401
        and (r.get("auth") or {}).get("scheme") == "Bearer"
    ]
    assert records, "the registry never refused a token"
    found = diagnoses(proxy)
    detail = found["registry-refused-token"]["detail"]
    if "upstream_date" in records[0]:
        assert "clock skew" in detail
    else:  # the log cannot tell the registry's clock yet: the cause is one of three
        assert "clock" in detail and "rootcertbundle" in detail


def test_injected_credentials_refused(
    write_policy, make_registry, make_proxy, tmp_path: Path, password_hashes
) -> None:
    htpasswd = htpasswd_file(tmp_path / "htpasswd", {"regauth-bot": "the-right-one"})
    registry = make_registry("htpasswd", htpasswd=htpasswd)
    policy = write_policy(
        text=policy_text(
            password_hashes,
            upstream_extra=(
                "    credentials:\n      username: regauth-bot\n"
                "      password_env: REGAUTH_TEST_UPSTREAM_PASSWORD\n"
            ),
        )
    )
    proxy = make_proxy(policy, registry.url, env={"REGAUTH_TEST_UPSTREAM_PASSWORD": "wrong"})
    assert not inspect(proxy, "public/app:1").ok
    found = diagnoses(proxy)
    assert "client got 503" in found["upstream-credentials-refused"]["detail"]


def test_follow_prints_conversations_as_they_happen(enforce_proxy: ProxyProcess) -> None:
    proxy = enforce_proxy
    proxy.log_path.touch()
    follower = subprocess.Popen(
        [str(REGAUTH), "trace", str(proxy.log_path), "--follow"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert not inspect(proxy, "public/app:1", "ci:wrong-password").ok
        deadline = time.monotonic() + 20
        lines: list[str] = []
        assert follower.stdout is not None
        while time.monotonic() < deadline and not any("bad-credentials" in x for x in lines):
            lines.append(follower.stdout.readline())
        text = "".join(lines)
        assert "token request" in text and "bad-credentials" in text
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_filters_and_plain_text_output(enforce_proxy: ProxyProcess) -> None:
    proxy = enforce_proxy
    assert inspect(proxy, "public/app:1", CI).output  # ci asks (the image does not exist)
    assert not inspect(proxy, "cache/app:1").ok  # anonymous
    time.sleep(0.3)
    everything = trace(proxy)["conversations"]
    ci_only = trace(proxy, "--account", "ci")["conversations"]
    cache = trace(proxy, "--repository", "cache/app")["conversations"]
    assert ci_only and len(ci_only) < len(everything)
    assert all("ci" in c["accounts"] for c in ci_only)
    assert cache and all("cache/app" in c["repositories"] for c in cache)
    one = trace(proxy, "--conversation", cache[0]["id"][:8])["conversations"]
    assert [c["id"] for c in one] == [cache[0]["id"]]
    assert trace(proxy, "--since", "1h")["conversations"] == everything
    text = subprocess.run(
        [str(REGAUTH), "trace", str(proxy.log_path)], capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0 and "\x1b[" not in text.stdout
    for step in ("challenge", "token request", "grant", "result"):
        assert step in text.stdout
    bad = subprocess.run(
        [str(REGAUTH), "trace", str(proxy.log_path), "--since", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "duration" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "regauth.cli", "trace", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
