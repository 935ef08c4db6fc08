"""Enforce and inject modes in front of real registries, with skopeo and ctr."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from regauth.ops import pki
from regauth.ops.registry_process import free_port
from tests.support import httpclient
from tests.support.oci import archive
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import bcrypt_hash
from tests.support.policies import build_id
from tests.support.policies import htpasswd_file
from tests.support.policies import policy_text
from tests.support.tools import skopeo

CI = f"ci:{PASSWORDS['ci']}"
UPSTREAM_USER = "regauth-bot"
UPSTREAM_PASSWORD = "upstream-only-secret-5be"


def push(proxy, layout_path, ref, creds=None):
    args = ["copy", "--dest-cert-dir", str(proxy.certs_dir)]
    if creds:
        args += ["--dest-creds", creds]
    return skopeo(*args, f"oci:{layout_path}:latest", f"docker://{proxy.netloc}/{ref}")


def seen(registry, fragment: str, writes_only: bool = False) -> list[str]:
    time.sleep(0.3)  # the registry writes its access log asynchronously
    lines = [line for line in registry.requests_seen() if fragment in line]
    if writes_only:
        lines = [line for line in lines if line.split()[0] in ("POST", "PUT", "PATCH", "DELETE")]
    return lines


def test_enforce_mode_skopeo_and_ctr_with_regauth_tokens(
    write_policy, make_registry, make_proxy, layout, containerd, tmp_path
):
    registry = make_registry()  # no auth of its own: regauth is the only gate
    proxy = make_proxy(write_policy(), registry.url)
    path, digest = layout
    assert push(proxy, path, "public/app:1", CI).ok
    pulled = skopeo(
        "inspect", "--cert-dir", str(proxy.certs_dir), f"docker://{proxy.netloc}/public/app:1"
    )
    assert pulled.ok and digest in pulled.output
    build = f"builds/{build_id()}"
    assert push(proxy, path, f"{build}:1").ok
    # Anonymous push outside builds/{id}: refused by regauth, the registry never hears of it.
    refused = push(proxy, path, "cache/poisoned:1")
    assert not refused.ok
    assert seen(registry, "cache/poisoned") == []
    refused_ns = push(proxy, path, "builds/not-a-capability:1")
    assert not refused_ns.ok
    assert seen(registry, "builds/not-a-capability") == []
    # ctr: push with --user (POST password grant), anonymous pull.
    image = archive(path, tmp_path / "image.tar")
    ref = f"{proxy.netloc}/demo/enforced"
    tls = containerd.trusting(proxy.netloc, proxy.ca)
    assert containerd.ctr("images", "import", "--base-name", ref, str(image)).ok
    assert containerd.ctr("images", "push", *tls, "--user", CI, f"{ref}:latest").ok
    assert containerd.ctr("images", "rm", f"{ref}:latest").ok
    pulled_ctr = containerd.ctr("images", "pull", *tls, f"{ref}:latest")
    assert pulled_ctr.ok, pulled_ctr.output
    other = f"{proxy.netloc}/demo/anonymous-write"
    assert containerd.ctr("images", "tag", f"{ref}:latest", other).ok
    anonymous_push = containerd.ctr("images", "push", *tls, other)
    assert not anonymous_push.ok
    assert "Unsolicited response" not in anonymous_push.output + pulled_ctr.output
    # Anonymous clients may read demo/ (HEAD checks pass through); no write got through.
    assert seen(registry, "demo/anonymous-write", writes_only=True) == []
    records = proxy.records()
    refusals = [
        r
        for r in records
        if r["answered_by"] == "regauth"
        and r["status"] == 401
        and r.get("repository") == "cache/poisoned"
    ]
    assert refusals and refusals[0]["challenge"]["scheme"] == "Bearer"


def _inject_policy(hashes, kind="basic", realm_hosts=""):
    upstream = (
        "    credentials:\n"
        f"      type: {kind}\n"
        f"      username: {UPSTREAM_USER}\n"
        "      password_env: REGAUTH_TEST_UPSTREAM_PASSWORD\n" + realm_hosts
    )
    return policy_text(hashes, upstream_extra=upstream)


def test_inject_mode_with_htpasswd_registry(
    write_policy, make_registry, make_proxy, layout, tmp_path, password_hashes
):
    htpasswd = htpasswd_file(tmp_path / "htpasswd", {UPSTREAM_USER: UPSTREAM_PASSWORD})
    registry = make_registry("htpasswd", htpasswd=htpasswd)
    policy = write_policy(text=_inject_policy(password_hashes))
    proxy = make_proxy(
        policy, registry.url, env={"REGAUTH_TEST_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD}
    )
    path, digest = layout
    # A builder without any credential pushes to its build repository...
    build = f"builds/{build_id()}"
    pushed = push(proxy, path, f"{build}:1")
    assert pushed.ok, pushed.output
    # ...and nowhere else; the registry never sees the refused attempt.
    assert not push(proxy, path, "cache/app:1").ok
    assert seen(registry, "cache/app") == []  # not even a read: anonymous may not read it
    assert not push(proxy, path, "public/app:1").ok
    assert seen(registry, "public/app", writes_only=True) == []
    # The upstream credential never reaches a client or the log.
    reply = httpclient.request(proxy.port, proxy.ca, "GET", f"/v2/{build}/manifests/1")
    assert reply.status == 401  # still needs a regauth token
    token = httpclient.get_token(
        proxy.port, proxy.ca, [f"repository:{build}:pull"], SERVICE
    ).json()["token"]
    manifest = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        f"/v2/{build}/manifests/1",
        {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        },
    )
    assert manifest.status == 200
    assert UPSTREAM_PASSWORD.encode() not in manifest.body
    assert all(UPSTREAM_PASSWORD not in v for v in manifest.headers.values())
    log_text = proxy.log_path.read_text()
    assert UPSTREAM_PASSWORD not in log_text and "cmVnYXV0aC1ib3Q6" not in log_text
    assert UPSTREAM_PASSWORD not in proxy.output()
    injected = [r for r in proxy.records() if r.get("upstream_credentials") == "injected"]
    assert injected and all(
        r["auth"] is None or r["auth"]["scheme"] == "Bearer" for r in injected if "auth" in r
    )


def test_inject_mode_refuses_to_start_without_the_secret(
    write_policy, make_registry, tmp_path, certs_dir, password_hashes
):
    registry = make_registry()
    before = seen(registry, "/v2/")  # the readiness probe of make_registry
    policy = write_policy(text=_inject_policy(password_hashes))
    env = {k: v for k, v in os.environ.items() if k != "REGAUTH_TEST_UPSTREAM_PASSWORD"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "regauth.cli",
            "serve",
            "--upstream",
            registry.url,
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--certs-dir",
            str(certs_dir),
            "--policy",
            str(policy),
            "--log",
            str(tmp_path / "x.jsonl"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "REGAUTH_TEST_UPSTREAM_PASSWORD is not set" in done.stderr
    assert f"{policy}:" in done.stderr
    assert seen(registry, "/v2/") == before


def test_inject_mode_bearer_upstream_token_flow(
    write_policy, make_registry, make_proxy, layout, tmp_path, password_hashes
):
    """The upstream is a token-mode registry whose realm is a second, independent regauth."""
    upstream_certs = tmp_path / "upstream-certs"
    pki.init_certs(upstream_certs)
    realm_port = free_port()
    registry = make_registry(
        "token",
        name="bearer-registry",
        realm=f"https://localhost:{realm_port}/v2/token",
        signing_certs=upstream_certs,
    )
    bot_hash = bcrypt_hash(UPSTREAM_PASSWORD)
    realm_policy = write_policy(
        name="realm-policy.yaml",
        text=f"""version: 1
service: {SERVICE}
issuer: regauth-test-issuer
accounts:
  {UPSTREAM_USER}:
    password_hash: "{bot_hash}"
upstreams:
  - url: "*"
    mode: delegate
rules:
  - comment: the proxy's own account may do anything upstream
    account: {UPSTREAM_USER}
    repository: "**"
    actions: ["*"]
""",
    )
    realm = make_proxy(
        realm_policy, registry.url, name="realm", certs_dir=upstream_certs, port=realm_port
    )
    # The realm is not on the upstream's host and port: it must be listed (host:port) before
    # regauth sends it the upstream credential.
    policy = write_policy(
        text=_inject_policy(
            password_hashes,
            kind="bearer",
            realm_hosts=f"      realm_hosts: ['localhost:{realm_port}']\n",
        )
    )
    proxy = make_proxy(
        policy,
        registry.url,
        upstream_ca=upstream_certs / "ca.crt",
        env={"REGAUTH_TEST_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD},
    )
    path, digest = layout
    build = f"builds/{build_id()}"
    pushed = push(proxy, path, f"{build}:1")
    assert pushed.ok, pushed.output
    assert not push(proxy, path, "cache/app:1").ok
    assert seen(registry, "cache/app") == []
    # regauth fetched upstream tokens from the realm with its own account, per scope.
    upstream_grants = [r for r in realm.records() if r["kind"] == "token"]
    assert upstream_grants
    assert all(r["token_request"]["username"] == UPSTREAM_USER for r in upstream_grants)
    assert any(
        f"repository:{build}:pull,push" in r["token_request"]["requested"] for r in upstream_grants
    )
    # Tokens are cached: far fewer upstream token requests than forwarded requests.
    forwarded = [r for r in proxy.records() if r.get("upstream_credentials") == "injected"]
    assert len(upstream_grants) < len(forwarded)
