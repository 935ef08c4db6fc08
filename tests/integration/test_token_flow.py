"""Token service against a real registry in token mode (the registry alone judges the tokens).

regauth runs in delegate mode here: it issues tokens and rewrites challenges, and every
registry request is accepted or refused by distribution's own token validation.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from regauth.ops import pki
from regauth.tokens import keyids
from tests.support import httpclient
from tests.support.oci import archive
from tests.support.policies import ISSUER
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import build_id
from tests.support.policies import policy_text
from tests.support.tools import skopeo

CI = f"ci:{PASSWORDS['ci']}"


def push(proxy, layout_path, ref, creds=None):
    args = ["copy", "--dest-cert-dir", str(proxy.certs_dir)]
    if creds:
        args += ["--dest-creds", creds]
    return skopeo(*args, f"oci:{layout_path}:latest", f"docker://{proxy.netloc}/{ref}")


def test_skopeo_matrix(token_registry_proxy, layout, tmp_path):
    registry, proxy = token_registry_proxy
    path, digest = layout
    # ci publishes; anonymous clients may pull the public area.
    assert push(proxy, path, "public/app:1", CI).ok
    pulled = skopeo(
        "copy",
        "--src-cert-dir",
        str(proxy.certs_dir),
        f"docker://{proxy.netloc}/public/app:1",
        f"oci:{tmp_path / 'anon'}:latest",
    )
    assert pulled.ok, pulled.output
    assert digest in (tmp_path / "anon" / "index.json").read_text()
    # A builder pushes anonymously to its own build repository.
    builder = push(proxy, path, f"builds/{build_id()}:1")
    assert builder.ok, builder.output
    # Nobody anonymous can write the shared cache (cache poisoning).
    poison = push(proxy, path, "cache/app:1")
    assert not poison.ok
    assert "denied" in poison.output or "unauthorized" in poison.output.lower()
    # ci can.
    assert push(proxy, path, "cache/app:1", CI).ok
    # Wrong password: the token endpoint refuses, skopeo fails.
    wrong = push(proxy, path, "cache/app:2", "ci:not-the-password")
    assert not wrong.ok
    assert "401" in wrong.output or "unauthorized" in wrong.output.lower()
    # The anonymous cache attempt was decided by the policy, and the log says why.
    records = proxy.records()
    anon_cache = [
        r
        for r in records
        if r["kind"] == "token"
        and r["token_response"].get("account") == "anonymous"
        and any("cache/app" in s for s in r["token_request"].get("requested", []))
    ]
    assert anon_cache
    decision = anon_cache[-1]["token_response"]["decisions"][0]
    assert decision["outcome"] in ("denied", "default deny")
    assert "push" not in decision["granted"]


def test_ctr_push_with_user_and_anonymous_pull(token_registry_proxy, layout, containerd, tmp_path):
    registry, proxy = token_registry_proxy
    path, digest = layout
    image = archive(path, tmp_path / "image.tar")
    source = f"{proxy.netloc}/public/ctr-src"
    tls = containerd.trusting(proxy.netloc, proxy.ca)
    assert containerd.ctr("images", "import", "--base-name", source, str(image)).ok
    pushed = containerd.ctr("images", "push", *tls, "--user", CI, f"{source}:latest")
    assert pushed.ok, pushed.output
    # Anonymous pull (unpacks, so the layer really arrived intact).
    assert containerd.ctr("images", "rm", f"{source}:latest").ok
    pulled = containerd.ctr("images", "pull", *tls, f"{source}:latest")
    assert pulled.ok, pulled.output
    # Push the same image elsewhere: containerd mounts blobs from the source repository, so
    # its POST grant asks (space-separated) for the mount source's pull scope too.
    target = f"{proxy.netloc}/cache/ctr:1"
    assert containerd.ctr("images", "tag", f"{source}:latest", target).ok
    mounted = containerd.ctr("images", "push", *tls, "--user", CI, target)
    assert mounted.ok, mounted.output
    records = proxy.records()
    grants = [
        r
        for r in records
        if r["kind"] == "token" and r["token_request"].get("grant_type") == "password"
    ]
    assert grants and all(r["token_request"]["client_id"] == "containerd-client" for r in grants)
    assert any(
        {"repository:cache/ctr:pull,push", "repository:public/ctr-src:pull"}
        <= set(r["token_request"]["requested"])
        for r in grants
    ), grants
    mounts = [r for r in records if r["method"] == "POST" and "mount=" in r["path"]]
    assert mounts and all(r["status"] == 201 for r in mounts)
    assert all("repository:public/ctr-src:pull" in r["required"] for r in mounts)


def test_refresh_token_grant_and_revocation(
    write_policy, token_registry_proxy, tmp_path, password_hashes
):
    registry, proxy = token_registry_proxy
    first = httpclient.post_token(
        proxy.port,
        proxy.ca,
        {
            "grant_type": "password",
            "username": "ci",
            "password": PASSWORDS["ci"],
            "client_id": "tests",
            "service": SERVICE,
            "access_type": "offline",
            "scope": "repository:cache/x:pull,push repository:demo/x:pull",
        },
    )
    assert first.status == 200, first.body
    body = first.json()
    assert body["token"] == body["access_token"] and "refresh_token" in body
    assert body["scope"] == "repository:cache/x:pull,push repository:demo/x:pull"
    refresh = body["refresh_token"]
    again = httpclient.post_token(
        proxy.port,
        proxy.ca,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": "tests",
            "service": SERVICE,
            "scope": "repository:cache/x:pull",
        },
    )
    assert again.status == 200, again.body
    assert again.json()["refresh_token"] == refresh
    claims = jwt.decode(again.json()["token"], options={"verify_signature": False})
    assert claims["sub"] == "ci" and claims["access"][0]["name"] == "cache/x"
    # The registry accepts the refreshed access token.
    reply = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/cache/x/tags/list",
        {"Authorization": f"Bearer {again.json()['token']}"},
    )
    assert reply.status == 404  # authorized; the repository does not exist yet
    # A refresh token is not an access token: the registry refuses it.
    misuse = httpclient.request(
        proxy.port, proxy.ca, "GET", "/v2/cache/x/tags/list", {"Authorization": f"Bearer {refresh}"}
    )
    assert misuse.status == 401
    # Changing the account's password revokes the refresh token (hot reload picks it up).
    policy_path = proxy.workdir.parent / "policy.yaml"
    changed = dict(password_hashes, ci=_bcrypt("a-new-password"))
    policy_path.write_text(policy_text(changed, mode="delegate"))
    _wait_for(
        lambda: (
            httpclient.post_token(
                proxy.port,
                proxy.ca,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                    "client_id": "tests",
                    "service": SERVICE,
                },
            ).status
            == 400
        )
    )  # invalid_grant, RFC 6749 §5.2
    # Removing the account also revokes it.
    policy_path.write_text(policy_text(password_hashes, mode="delegate"))
    _wait_for(
        lambda: (
            httpclient.post_token(
                proxy.port,
                proxy.ca,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                    "client_id": "tests",
                    "service": SERVICE,
                },
            ).status
            == 200
        )
    )
    without_ci = (
        policy_text(password_hashes, mode="delegate")
        .replace("  ci:\n", "  ci-renamed:\n")
        .replace("account: ci\n", "account: ci-renamed\n")
    )
    policy_path.write_text(without_ci)
    _wait_for(
        lambda: (
            httpclient.post_token(
                proxy.port,
                proxy.ca,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                    "client_id": "tests",
                    "service": SERVICE,
                },
            ).status
            == 400
        )
    )


def _bcrypt(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def _wait_for(condition, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError("condition not met within the reload window")


def test_expires_in_is_honoured(write_policy, make_registry, make_proxy, certs_dir):
    from regauth.ops.registry_process import free_port

    port = free_port()
    registry = make_registry("token", realm=f"https://localhost:{port}/v2/token")
    proxy = make_proxy(write_policy(mode="delegate", lifetime=60), registry.url, port=port)
    reply = httpclient.get_token(proxy.port, proxy.ca, ["repository:demo/x:pull"], SERVICE)
    body = reply.json()
    assert body["expires_in"] == 60
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60
    assert time.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
    ok = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/demo/x/tags/list",
        {"Authorization": f"Bearer {body['token']}"},
    )
    assert ok.status == 404
    # The same token, minted with regauth's key but already past exp (+ the registry's 60 s
    # leeway), is refused by the registry itself.
    expired = _mint(
        certs_dir,
        {
            **claims,
            "iat": claims["iat"] - 600,
            "nbf": claims["nbf"] - 600,
            "exp": claims["iat"] - 300,
        },
    )
    refused = httpclient.request(
        proxy.port, proxy.ca, "GET", "/v2/demo/x/tags/list", {"Authorization": f"Bearer {expired}"}
    )
    assert refused.status == 401
    assert 'error="invalid_token"' in refused.header("WWW-Authenticate")


def _mint(certs_dir, claims):
    key = serialization.load_pem_private_key(
        (certs_dir / "private" / "token-signing.key").read_bytes(), password=None
    )
    cert = x509.load_pem_x509_certificate((certs_dir / "token-signing.crt").read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    return jwt.encode(
        claims,
        key,
        algorithm="ES256",
        headers={
            "typ": "registry-access+jwt",
            "kid": keyids.libtrust_kid(cert.public_key()),
            "x5c": [base64.b64encode(der).decode()],
        },
    )


def test_jwks_and_bundle_agree_with_the_signing_key(token_registry_proxy, certs_dir):
    registry, proxy = token_registry_proxy
    jwks = httpclient.request(proxy.port, proxy.ca, "GET", "/.well-known/jwks.json").json()
    bundle = subprocess.run(
        [sys.executable, "-m", "regauth.cli", "certs", "bundle", "--dir", str(certs_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bundle_keys = [
        x509.load_pem_x509_certificate(block.encode()).public_key() for block in _pem_blocks(bundle)
    ]
    signing = pki.load_signing_keys(certs_dir)
    assert [k.public_numbers() for k in bundle_keys] == [
        k.public_key.public_numbers() for k in signing
    ]
    token = httpclient.get_token(proxy.port, proxy.ca, [], SERVICE).json()["token"]
    header = jwt.get_unverified_header(token)
    entry = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(entry).key
    assert public.public_numbers() == signing[-1].public_key.public_numbers()
    assert entry["alg"] == "ES256"
    # The token verifies with the JWKS key alone.
    claims = jwt.decode(token, public, algorithms=["ES256"], audience=SERVICE, issuer=ISSUER)
    assert claims["aud"] == SERVICE
    # x5c carries the very certificate of the bundle.
    der = base64.b64decode(header["x5c"][0])
    assert (
        x509.load_der_x509_certificate(der).public_key().public_numbers()
        == bundle_keys[-1].public_numbers()
    )


def _pem_blocks(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [block + end for block in text.split(end) if "BEGIN" in block]


def test_hot_reload_changes_a_decision_and_an_invalid_edit_does_not(
    token_registry_proxy, password_hashes
):
    registry, proxy = token_registry_proxy
    policy_path = proxy.workdir.parent / "policy.yaml"

    def granted() -> list[str]:
        reply = httpclient.get_token(proxy.port, proxy.ca, ["repository:reload/app:pull"], SERVICE)
        return reply.json()["scope"].split()

    assert granted() == []
    opened = policy_text(
        password_hashes,
        mode="delegate",
        extra_rules=(
            "  - comment: reload test\n    account: any\n    repository: reload/**\n"
            "    actions: [pull]\n"
        ),
    )
    started = time.monotonic()
    policy_path.write_text(opened)
    _wait_for(lambda: granted() == ["repository:reload/app:pull"], timeout=4)
    assert time.monotonic() - started < 4
    # An invalid edit (anonymous push to the cache, line 25) keeps the last good policy.
    broken = opened.replace(
        "    actions: [pull]\n  - comment: CI writes",
        "    actions: [pull, push]\n  - comment: CI writes",
        1,
    )
    broken = broken.replace("repository: reload/**", "repository: cache/**")
    policy_path.write_text(broken)
    time.sleep(3)
    assert granted() == ["repository:reload/app:pull"]
    output = proxy.output()
    assert f"{policy_path}:" in output and "anonymous writes are only allowed" in output
    line = next(i + 1 for i, text in enumerate(broken.splitlines()) if "[pull, push]" in text)
    assert f"{policy_path}:{line}:" in output


@pytest.mark.parametrize("service", ["other-registry", ""])
def test_the_client_never_chooses_the_audience(token_registry_proxy, service):
    registry, proxy = token_registry_proxy
    reply = httpclient.get_token(proxy.port, proxy.ca, ["repository:public/app:pull"], service)
    if service:
        assert reply.status == 400
        assert reply.json()["errors"][0]["code"] == "DENIED"
    else:
        assert reply.status == 200
        claims = jwt.decode(reply.json()["token"], options={"verify_signature": False})
        assert claims["aud"] == SERVICE


def test_wrong_password_gets_basic_challenge_on_token_endpoint_only(token_registry_proxy):
    registry, proxy = token_registry_proxy
    reply = httpclient.get_token(proxy.port, proxy.ca, [], SERVICE, ("ci", "wrong"))
    assert reply.status == 401
    assert reply.header("WWW-Authenticate").startswith("Basic ")
    api = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/demo/x/tags/list")
    assert api.header("WWW-Authenticate").startswith("Bearer ")
    body = json.loads(api.body)
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
