"""podman (Debian's 4.3, containers/image) through regauth in front of a real registry.

podman pings `/v2/`, reuses the ping's challenge, and fetches tokens with GET + Basic (the
stored password: containers/image keeps no identity token unless the registry gives one to a
`podman login` that asks for it, which it does not).
"""

from __future__ import annotations

import json

import pytest

from tests.support.oci import make_layout
from tests.support.policies import PASSWORDS
from tests.support.policies import build_id
from tests.support.scenarios import client_scenario

MODES = [
    pytest.param("enforce", marks=client_scenario("podman", "login", "push", "pull", "logout")),
    pytest.param("delegate", marks=client_scenario("podman", "delegate")),
]


def refused(result):
    text = result.output.lower()
    return not result.ok and (
        "denied" in text or "unauthorized" in text or "authentication required" in text
    )


def local_image(podman, tmp_path, ref):
    """Import a fresh one-layer image from an OCI layout and tag it `ref`."""
    layout = tmp_path / ref.replace("/", "_").replace(":", "_")
    make_layout(layout)
    pulled = podman.run("pull", "-q", f"oci:{layout}:latest")
    assert pulled.ok, pulled.output
    image_id = pulled.output.split()[-1]
    assert podman.run("tag", image_id, ref).ok, ref
    return ref


@pytest.mark.parametrize("mode", MODES)
def test_podman_login_push_pull_logout(guarded, podman_for, tmp_path, mode):
    proxy = guarded(mode).proxy
    podman = podman_for(proxy)
    image = local_image(podman, tmp_path, f"{proxy.netloc}/apps/podman:1")

    login = podman.login(proxy.netloc, "ci", PASSWORDS["ci"])
    assert login.ok and "Login Succeeded" in login.output, login.output
    assert proxy.netloc in json.loads(podman.auth_file.read_text())["auths"]

    pushed = podman.remote("push", image)
    assert pushed.ok, pushed.output
    assert podman.run("rmi", image).ok
    pulled = podman.remote("pull", image)
    assert pulled.ok, pulled.output
    assert podman.run("image", "exists", image).ok
    tokens = [r for r in proxy.records() if r["kind"] == "token"]
    assert all(r["status"] == 200 for r in tokens), tokens
    assert any(
        "repository:apps/podman:pull,push" in r["token_request"]["requested"]
        and r["token_response"]["granted"] == ["repository:apps/podman:pull,push"]
        for r in tokens
    )

    assert podman.run("logout", proxy.netloc).ok
    assert podman.run("rmi", image).ok
    assert refused(podman.remote("pull", image))


@client_scenario("podman", "login-refused")
def test_podman_wrong_password_is_refused(guarded, podman_for):
    proxy = guarded("enforce").proxy
    podman = podman_for(proxy)
    login = podman.login(proxy.netloc, "ci", "not-the-password")
    assert not login.ok and "invalid username/password" in login.output, login.output
    assert proxy.netloc not in json.loads(podman.auth_file.read_text()).get("auths", {})
    (record,) = [r for r in proxy.records() if r["kind"] == "token" and r["status"] == 401]
    assert record["token_response"]["failed_login_counted"] is True


@client_scenario(
    "podman", "anon-pull-public", "anon-pull-refused", "anon-push-build", "anon-push-cache-refused"
)
def test_podman_anonymous(guarded, podman_for, tmp_path):
    registry, proxy = (g := guarded("enforce")).registry, g.proxy
    ci = podman_for(proxy, "ci")
    anonymous = podman_for(proxy, "anonymous")
    public, private = f"{proxy.netloc}/public/podman:1", f"{proxy.netloc}/apps/podman-secret:1"
    assert ci.login(proxy.netloc, "ci", PASSWORDS["ci"]).ok
    for image in (public, private):
        local_image(ci, tmp_path, image)
        assert ci.remote("push", image).ok
        assert ci.run("rmi", image).ok

    pulled = anonymous.remote("pull", public)
    assert pulled.ok, pulled.output
    assert refused(anonymous.remote("pull", private))

    build = local_image(anonymous, tmp_path, f"{proxy.netloc}/builds/{build_id()}:1")
    pushed = anonymous.remote("push", build)
    assert pushed.ok, pushed.output

    poison = f"{proxy.netloc}/cache/poison:1"
    assert anonymous.run("tag", build, poison).ok
    result = anonymous.remote("push", poison)
    assert refused(result), result.output
    assert not any(
        line.startswith(("PUT /v2/cache/", "POST /v2/cache/", "PATCH /v2/cache/"))
        for line in registry.requests_seen()
    )
