"""BuildKit (embedded in dockerd 20.10, `DOCKER_BUILDKIT=1 docker build`) through regauth.

regauth is reached as `regauth.test` (an /etc/hosts name for 127.0.0.1): BuildKit speaks plain
HTTP to a registry named `localhost`, which regauth refuses (its port speaks TLS only).

The docker CLI hands BuildKit a client-side token authority: token requests come from the CLI
process (trusting regauth's CA through SSL_CERT_FILE), registry requests from the daemon. After
`docker login`, each token request is first `GET /v2/token?scope=…` with
`Basic base64(":" + identity token)`, then, on 401, a POST refresh grant. Before regauth
honoured the GET form, it counted it as a failed login and the fourth build in a minute got
`failed to fetch oauth token: unexpected status: 429 Too Many Requests` (issue 7).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from tests.support.policies import PASSWORDS
from tests.support.scenarios import client_scenario

BUILDS = 10

MODES = [
    pytest.param(
        "enforce", marks=client_scenario("BuildKit", "pull", "build-private", "identity-token")
    ),
    pytest.param("delegate", marks=client_scenario("BuildKit", "delegate")),
]


def dockerfile(tmp_path, name, base):
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nLABEL built-by=regauth-tests\n")
    return context


def push_bases(docker, netloc, names):
    images = [f"{netloc}/{name}:1" for name in names]
    for image in images:
        assert docker.import_image(image, os.urandom(64)).ok
        pushed = docker.run("push", image)
        assert pushed.ok, pushed.output
        assert docker.run("rmi", image).ok  # BuildKit fetches it from the registry
    return images


def _timestamp(record):
    return dt.datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("mode", MODES)
def test_buildkit_builds_from_private_repositories_after_docker_login(
    guarded, docker_for, registry_name, tmp_path, mode
):
    proxy = guarded(mode, host=registry_name).proxy
    docker = docker_for(proxy)
    assert docker.login(proxy.netloc, "ci", PASSWORDS["ci"]).ok
    bases = push_bases(docker, proxy.netloc, [f"apps/base-{i}" for i in range(BUILDS)])
    contexts = [dockerfile(tmp_path, f"ctx{i}", base) for i, base in enumerate(bases)]

    before = len(proxy.records())
    started = time.time()
    results = [
        docker.build(context, f"regauth-test/out-{mode}-{i}") for i, context in enumerate(contexts)
    ]
    elapsed = time.time() - started
    failures = [r.output[-2000:] for r in results if not r.ok]
    assert not failures, failures[0]
    assert elapsed < 60, f"{BUILDS} builds took {elapsed:.1f} s"

    tokens = [r for r in proxy.records()[before:] if r["kind"] == "token"]
    statuses = sorted(r["status"] for r in tokens)
    counted = sum(1 for r in tokens if r["token_response"].get("failed_login_counted"))
    summary = (
        f"BuildKit {mode}: {BUILDS} builds in {elapsed:.1f} s, {len(tokens)} token "
        f"requests (statuses {statuses}), {counted} counted as failed logins, "
        f"credentials {sorted({r['token_response'].get('credential') for r in tokens})}"
    )
    print(summary)
    assert 429 not in statuses and counted == 0, summary
    assert all(r["status"] == 200 for r in tokens), summary
    assert {r["token_response"]["credential"] for r in tokens} == {"refresh_token (basic)"}
    assert {r["token_response"]["account"] for r in tokens} == {"ci"}
    requested = {s for r in tokens for s in r["token_request"]["requested"]}
    assert {f"repository:apps/base-{i}:pull" for i in range(BUILDS)} <= requested
    # Every base image was really read through regauth with those tokens.
    manifests = {
        r["repository"]
        for r in proxy.records()[before:]
        if r.get("route") == "manifest" and r["status"] == 200
    }
    assert manifests == {f"apps/base-{i}" for i in range(BUILDS)}


@client_scenario("BuildKit", "anon-pull-public", "anon-pull-refused")
def test_buildkit_anonymous_build_from_a_public_repository(
    guarded, docker_for, tmp_path, registry_name
):
    proxy = guarded("enforce", host=registry_name).proxy
    ci = docker_for(proxy, "ci")
    assert ci.login(proxy.netloc, "ci", PASSWORDS["ci"]).ok
    public, private = push_bases(ci, proxy.netloc, ["public/base", "apps/private-base"])

    anonymous = docker_for(proxy, "anonymous")
    built = anonymous.build(dockerfile(tmp_path, "public", public), "regauth-test/public")
    assert built.ok, built.output[-2000:]
    tokens = [
        r
        for r in proxy.records()
        if r["kind"] == "token"
        and "repository:public/base:pull" in r["token_request"].get("requested", [])
    ]
    assert tokens and {r["token_response"]["account"] for r in tokens} == {"anonymous"}

    denied = anonymous.build(dockerfile(tmp_path, "private", private), "regauth-test/private")
    assert not denied.ok
    text = denied.output.lower()
    assert "denied" in text or "unauthorized" in text or "authorization" in text, text[-2000:]


def test_buildkit_token_requests_come_from_the_client_process(
    guarded, docker_for, tmp_path, registry_name
):
    # The README's trust instructions for the BuildKit client host: dockerd trusting regauth
    # (certs.d) is not enough; the docker CLI process fetches the tokens and must trust it too.
    proxy = guarded("enforce", host=registry_name).proxy
    docker = docker_for(proxy)
    assert docker.login(proxy.netloc, "ci", PASSWORDS["ci"]).ok
    (base,) = push_bases(docker, proxy.netloc, ["apps/trust-base"])
    context = dockerfile(tmp_path, "trust", base)
    before = len(proxy.records())
    docker.ca = None
    untrusted = docker.build(context, "regauth-test/untrusted")
    assert not untrusted.ok
    assert "failed to fetch oauth token" in untrusted.output
    assert "x509: certificate signed by unknown authority" in untrusted.output
    assert not [r for r in proxy.records()[before:] if r["kind"] == "token"]
    # The documented fix: SSL_CERT_FILE with the system CAs plus regauth's CA.
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + proxy.ca.read_text())
    docker.ca = bundle
    trusted = docker.build(context, "regauth-test/trusted")
    assert trusted.ok, trusted.output[-2000:]
