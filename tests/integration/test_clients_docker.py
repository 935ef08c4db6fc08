"""docker (Debian's docker.io 20.10: dockerd + CLI) through regauth in front of a real registry.

dockerd logs in with GET + Basic (`offline_token=true`, `client_id=docker`) and stores the
refresh token it gets as the identity token; every later token request is a POST refresh grant.
"""

from __future__ import annotations

import os

import pytest

from tests.support.policies import PASSWORDS
from tests.support.policies import build_id
from tests.support.scenarios import client_scenario

MODES = [
    pytest.param(
        "enforce",
        marks=client_scenario("docker", "login", "push", "pull", "logout", "identity-token"),
    ),
    pytest.param("delegate", marks=client_scenario("docker", "delegate")),
]


def token_records(proxy, since=0):
    return [r for r in proxy.records()[since:] if r["kind"] == "token"]


def refused(result):
    text = result.output.lower()
    return not result.ok and (
        "denied" in text or "unauthorized" in text or "authentication required" in text
    )


@pytest.mark.parametrize("mode", MODES)
def test_docker_login_push_pull_logout(guarded, docker_for, mode):
    proxy = guarded(mode).proxy
    docker = docker_for(proxy)
    image = f"{proxy.netloc}/apps/web:1"
    assert docker.import_image(image, os.urandom(32)).ok

    login = docker.login(proxy.netloc, "ci", PASSWORDS["ci"])
    assert login.ok and "Login Succeeded" in login.output, login.output
    entry = docker.config()["auths"][proxy.netloc]
    assert entry.get("identitytoken")  # the refresh token regauth issued at login
    assert PASSWORDS["ci"] not in (docker.config_dir / "config.json").read_text()
    after_login = len(proxy.records())

    pushed = docker.run("push", image)
    assert pushed.ok, pushed.output
    assert docker.run("rmi", image).ok
    pulled = docker.run("pull", image)
    assert pulled.ok, pulled.output
    assert docker.run("image", "inspect", image).ok

    # After login the password is never sent again: every token is a refresh grant.
    grants = token_records(proxy, after_login)
    assert grants and all(r["status"] == 200 for r in grants), grants
    assert {r["token_response"]["credential"] for r in grants} == {"refresh_token"}
    assert all(r["token_response"]["account"] == "ci" for r in grants)

    assert docker.run("logout", proxy.netloc).ok
    assert proxy.netloc not in docker.config().get("auths", {})
    assert docker.run("rmi", image).ok
    assert refused(docker.run("pull", image))


@client_scenario("docker", "login-refused")
def test_docker_wrong_password_is_refused(guarded, docker_for):
    proxy = guarded("enforce").proxy
    docker = docker_for(proxy)
    login = docker.login(proxy.netloc, "ci", "not-the-password")
    assert not login.ok and "unauthorized" in login.output.lower(), login.output
    assert proxy.netloc not in docker.config().get("auths", {})
    (record,) = [r for r in token_records(proxy) if r["status"] == 401]
    assert record["token_response"]["failed_login_counted"] is True


@client_scenario(
    "docker", "anon-pull-public", "anon-pull-refused", "anon-push-build", "anon-push-cache-refused"
)
def test_docker_anonymous(guarded, docker_for):
    registry, proxy = (g := guarded("enforce")).registry, g.proxy
    ci = docker_for(proxy, "ci")
    anonymous = docker_for(proxy, "anonymous")
    public, private = f"{proxy.netloc}/public/web:1", f"{proxy.netloc}/apps/secret:1"
    assert ci.login(proxy.netloc, "ci", PASSWORDS["ci"]).ok
    for image in (public, private):
        assert ci.import_image(image, os.urandom(32)).ok
        assert ci.run("push", image).ok
        assert ci.run("rmi", image).ok

    pulled = anonymous.run("pull", public)
    assert pulled.ok, pulled.output
    assert refused(anonymous.run("pull", private))

    build = f"{proxy.netloc}/builds/{build_id()}:1"
    assert anonymous.import_image(build, os.urandom(32)).ok
    pushed = anonymous.run("push", build)
    assert pushed.ok, pushed.output

    poison = f"{proxy.netloc}/cache/poison:1"
    assert anonymous.run("tag", build, poison).ok
    result = anonymous.run("push", poison)
    assert refused(result), result.output
    assert not any(
        line.startswith(("PUT /v2/cache/", "POST /v2/cache/", "PATCH /v2/cache/"))
        for line in registry.requests_seen()
    )
    anonymous_tokens = [
        r for r in token_records(proxy) if r["token_response"].get("account") == "anonymous"
    ]
    assert any(
        "repository:cache/poison:pull,push" in r["token_request"].get("requested", [])
        and "push" not in " ".join(r["token_response"]["granted"])
        for r in anonymous_tokens
    )
