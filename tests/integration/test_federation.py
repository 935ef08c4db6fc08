"""Workload identity federation end to end (issue 24): three local OIDC issuers (HTTPS,
discovery, JWKS, rotation) minting GitHub Actions, GitLab CI and Kubernetes shaped ID tokens;
regauth in front of a real distribution 2.8; skopeo, podman and docker log in with an ID token
as the password and push where the claims grant, and are refused elsewhere. Every classic
forgery and every hostile key-set endpoint gets a 401 and nothing reaches the registry (the
`make_registry` invariant checks that the registry saw only requests regauth decided)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest

from tests.support import httpclient
from tests.support.oidc_issuer import DEFAULT_AUDIENCE
from tests.support.oidc_issuer import OidcIssuer
from tests.support.oidc_issuer import github_actions
from tests.support.oidc_issuer import gitlab_ci
from tests.support.oidc_issuer import kubernetes
from tests.support.policies import SERVICE
from tests.support.proxy import REGAUTH
from tests.support.services import free_port

RULES = """  - comment: a GitHub repository of acme pushes its own repository from main
    issuer: github
    claims:
      repository: "acme/*"
      ref: refs/heads/main
    repository: "${claims.repository}"
    actions: [pull, push]
  - comment: GitLab's platform group pushes from protected refs
    issuer: gitlab
    claims:
      namespace_path: platform
      ref_protected: "true"
    repository: "platform/**"
    actions: [pull, push]
  - comment: the builder service account of namespace ci
    issuer: k8s
    claims:
      kubernetes.io/namespace: ci
      kubernetes.io/serviceaccount/name: builder
    repository: "k8s/ci/**"
    actions: [pull, push]
"""


def _issuer_entry(name: str, issuer: OidcIssuer, subject: str) -> str:
    return f"""  - name: {name}
    issuer: {issuer.issuer}
    audience: {DEFAULT_AUDIENCE}
    jwks_uri: {issuer.jwks_uri}
    ca_file: {issuer.ca_path}
    algorithms: [RS256, ES256]
    subject: "{subject}"
    refetch_interval: 1
"""


@pytest.fixture
def idps(tmp_path):
    with (
        OidcIssuer(tmp_path / "gh") as gh,
        OidcIssuer(tmp_path / "gl") as gl,
        OidcIssuer(tmp_path / "k8s") as k8s,
    ):
        yield gh, gl, k8s


@pytest.fixture
def federated(idps, write_policy, make_registry, make_proxy, registry_name):
    gh, gl, k8s = idps
    top = (
        "federated_issuers:\n"
        + _issuer_entry("github", gh, "gh:{repository}")
        + _issuer_entry("gitlab", gl, "gl:{project_path}")
        + _issuer_entry("k8s", k8s, "{sub}")
    )
    policy = write_policy(extra_rules=RULES, top_extra=top)
    registry = make_registry()
    port = free_port()
    proxy = make_proxy(
        policy, registry.url, port=port, public_url=f"https://{registry_name}:{port}"
    )
    plain = make_proxy(policy, registry.url, name="plain")  # https://localhost:PORT
    return registry, proxy, plain


def _stored(registry, repository: str) -> bool:
    return (registry.workdir / "data/docker/registry/v2/repositories" / repository).exists()


def _skopeo(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], input=input, capture_output=True, text=True, timeout=300
    )


def test_ci_systems_push_with_their_id_tokens(
    federated, idps, tmp_path, layout, podman_for, docker_for
):
    registry, proxy, plain = federated
    gh, gl, k8s = idps
    path, _ = layout

    # GitHub Actions: skopeo login with the ID token as the password.
    token = gh.mint(github_actions("acme/app"))
    auth = tmp_path / "skopeo-auth.json"
    auth.write_text("{}")
    common = ["--authfile", str(auth)]
    login = _skopeo(
        "login", *common, "--cert-dir", str(plain.certs_dir), "-u", "github",
        "--password-stdin", plain.netloc, input=token,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    push = _skopeo(
        "copy", *common, "--dest-cert-dir", str(plain.certs_dir), f"oci:{path}:latest",
        f"docker://{plain.netloc}/acme/app:gh",
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    assert _stored(registry, "acme/app")
    other = _skopeo(
        "copy", *common, "--dest-cert-dir", str(plain.certs_dir), f"oci:{path}:latest",
        f"docker://{plain.netloc}/acme/other:gh",
    )  # fmt: skip
    assert other.returncode != 0  # the claim names acme/app, not acme/other
    assert not _stored(registry, "acme/other")
    feature = gh.mint(github_actions("acme/app", ref="refs/heads/feature"))
    denied = _skopeo(
        "copy", "--dest-creds", f"github:{feature}", "--dest-cert-dir", str(plain.certs_dir),
        f"oci:{path}:latest", f"docker://{plain.netloc}/acme/app:feature",
    )  # fmt: skip
    assert denied.returncode != 0  # ref is not refs/heads/main

    # GitLab CI: podman login, push within platform/, refused in acme/.
    podman = podman_for(plain, "podman")
    assert podman.login(plain.netloc, "gitlab-ci-token", gl.mint(gitlab_ci("platform/app"))).ok
    pulled = podman.run("pull", f"oci:{path}:latest")
    assert pulled.ok, pulled.output
    image = pulled.output.strip().splitlines()[-1]
    pushed = podman.remote("push", image, f"docker://{plain.netloc}/platform/app:gl")
    assert pushed.ok, pushed.output
    refused = podman.remote("push", image, f"docker://{plain.netloc}/acme/app:gl")
    assert not refused.ok

    # Kubernetes: docker login (dockerd stores what the token endpoint gives it) and push.
    docker = docker_for(proxy, "docker")
    assert docker.login(proxy.netloc, "k8s", k8s.mint(kubernetes("ci", "builder"))).ok
    ref = f"{proxy.netloc}/k8s/ci/app:docker"
    assert docker.import_image(ref, b"pushed with a service account token\n").ok
    assert docker.run("push", ref).ok
    outside = f"{proxy.netloc}/platform/app:docker"
    assert docker.run("tag", ref, outside).ok
    assert not docker.run("push", outside).ok

    # The log names issuer, subject and the deciding claims; no ID token is ever written.
    subjects = set()
    for p in (proxy, plain):
        text = p.log_path.read_text()
        assert token.split(".")[2] not in text and feature.split(".")[2] not in text
        for record in p.records():
            response = record.get("token_response") or {}
            if response.get("credential") == "id_token" and record["status"] == 200:
                subjects.add((response["federated_issuer"], response["federated_subject"]))
    assert {
        ("github", "gh:acme/app"),
        ("gitlab", "gl:platform/app"),
        ("k8s", "system:serviceaccount:ci:builder"),
    } <= subjects


def _token_status(proxy, token: str, scope: str = "repository:acme/app:pull") -> tuple[int, dict]:
    if len(token) > 8000:  # larger than a header regauth reads: RFC 8693 token exchange
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "service": SERVICE,
            "scope": scope,
        }
        reply = httpclient.post_token(proxy.port, proxy.ca, form)
    else:
        reply = httpclient.get_token(proxy.port, proxy.ca, [scope], SERVICE, ("oidc", token))
    body = json.loads(reply.body) if reply.body else {}
    return reply.status, body


def _forge(header: dict, claims: dict, signature: bytes = b"x") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    parts = [json.dumps(header).encode(), json.dumps(claims).encode(), signature]
    return ".".join(b64(p) for p in parts)


def test_forgeries_and_hostile_key_sets_get_a_401(federated, idps, tmp_path):
    registry, _, proxy = federated
    gh, gl, _ = idps
    now = time.time()
    claims = github_actions("acme/app")
    good = gh.mint(claims)
    assert _token_status(proxy, good)[0] == 200  # the key set is fetched and works
    unsigned = gh.mint(claims, alg="none", kid=gh.kids[0])
    hs = _forge({"alg": "HS256", "kid": gh.kids[0]}, {**claims, "iss": gh.issuer,
                "iat": int(now), "exp": int(now) + 300})  # fmt: skip
    head, body, _ = hs.split(".")
    mac = hmac.new(gh.key().public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    hs = f"{head}.{body}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    nested = b'{"iss":"' + gh.issuer.encode() + b'","a":' + b"[" * 200 + b"]" * 200 + b"}"
    cases = {
        "wrong-audience": gh.mint(github_actions("acme/app", audience="https://other.test")),
        "issuer-not-configured": gh.mint({**claims, "iss": "https://evil.test"}),
        "expired": gh.mint(claims, now=now - 3600, lifetime=300),
        "not-yet-valid": gh.mint({**claims, "nbf": int(now) + 900}),
        "unknown-kid": gh.mint(claims, key=gl.private_key(), alg="RS256", kid="no-such-kid"),
        "algorithm-not-allowed": unsigned,
        "algorithm-not-allowed (HS256 with the public key)": hs,
        "bad-signature": gh.mint(claims, key=gl.private_key(), alg="RS256", kid=gh.kids[0]),
        "too-large": gh.mint({**claims, "padding": "x" * 9000}),
        "malformed": gh.mint(nested),
    }  # fmt: skip
    for reason, token in cases.items():
        status, body = _token_status(proxy, token)
        # Basic and the password grant: 401 like a wrong password; token exchange (the only
        # way to send a token larger than a header): 400 invalid_request (RFC 8693 §2.2.2).
        expected = (400, "invalid_request") if len(token) > 8000 else (401, "invalid_grant")
        assert (status, body["error"]) == expected, (reason, body)
        assert body["errors"][0]["code"] == "UNAUTHORIZED", reason
    refused = {
        r["token_response"].get("id_token_refused")
        for r in proxy.records()
        if r.get("kind") == "token" and r["status"] in (400, 401)
    }
    assert {r.split(" ")[0] for r in cases} <= refused, refused
    # A good token whose claims miss the rule: granted what else allows, and the log says
    # which rule and claim; `regauth trace` diagnoses both kinds.
    feature = gh.mint(github_actions("acme/app", ref="refs/heads/feature"))
    status, body = _token_status(proxy, feature, "repository:acme/app:push")
    assert status == 200 and body["scope"] == ""
    [mismatch] = [
        m
        for r in proxy.records()
        if r.get("kind") == "token"
        for m in r["token_response"].get("claim_mismatches") or []
    ]
    assert mismatch["claim"] == "ref" and mismatch["got"] == "refs/heads/feature"
    time.sleep(0.3)  # the last record lands
    done = subprocess.run(
        [str(REGAUTH), "trace", str(proxy.log_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    codes = {
        d["code"]: d
        for conversation in json.loads(done.stdout)["conversations"]
        for d in conversation["diagnoses"]
    }
    assert "id-token-refused" in codes and "bad-credentials" not in codes, codes.keys()
    assert (
        "rule 1" in codes["claim-mismatch"]["detail"]
        or "needs claim" in (codes["claim-mismatch"]["detail"])
    )
    assert "'ref'" in codes["claim-mismatch"]["detail"]
    # replay: the same log under a policy that lets any branch push decides the feature
    # branch's push again from the claims the log kept, and finds it granted now.
    draft = tmp_path / "draft.yaml"
    policy = (tmp_path / "policy.yaml").read_text()  # the `federated` fixture's
    draft.write_text(policy.replace("ref: refs/heads/main", 'ref: "refs/heads/*"'))
    done = subprocess.run(
        [str(REGAUTH), "replay", str(proxy.log_path), "--policy", str(draft), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # something changed
    changes = json.loads(done.stdout)["changes"]
    assert any(c["account"] == "gh:acme/app" and c["kind"] == "denied→granted" for c in changes), (
        changes
    )
    # An ID token is never a registry Bearer.
    reply = httpclient.request(
        proxy.port, proxy.ca, "GET", "/v2/acme/app/tags/list", {"Authorization": f"Bearer {good}"}
    )
    assert reply.status == 401

    # Hostile key-set endpoints: a new kid makes regauth refetch, each refetch fails closed,
    # within the fetch deadline, and the last good keys keep working.
    fetches = gh.requests["/jwks"]
    for mode in ("hang", "redirect", "garbage", "huge"):
        new_kid = gh.rotate()
        gh.jwks_mode = mode
        started = time.monotonic()
        status, body = _token_status(proxy, gh.mint(claims, kid=new_kid))
        took = time.monotonic() - started
        assert status == 401 and took < 8, (mode, status, took)
        assert _token_status(proxy, gh.mint(claims, kid=gh.kids[0]))[0] == 200, mode
        gh.jwks_mode = "ok"
        time.sleep(1.1)  # refetch_interval: the next unknown kid fetches again
    assert gh.redirected["/jwks"] == 0  # the redirect was never followed
    assert gh.requests["/jwks"] > fetches


def test_rotation_is_followed_and_an_outage_keeps_known_keys(federated, idps):
    _, _, proxy = federated
    gh, _, _ = idps
    claims = github_actions("acme/app")
    assert _token_status(proxy, gh.mint(claims))[0] == 200
    new_kid = gh.rotate()
    assert _token_status(proxy, gh.mint(claims, kid=new_kid))[0] == 200  # no restart
    gh.jwks_mode = "down"
    assert _token_status(proxy, gh.mint(claims, kid=new_kid))[0] == 200  # known key
    gh.jwks_mode = "ok"
