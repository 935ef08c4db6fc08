"""containerd (`ctr`, a private containerd daemon) through regauth, scenario by scenario.

ctr has no login command: credentials go with each command (`--user`). With credentials,
containerd's resolver first POSTs a password grant (`client_id=containerd-client`) and falls
back to GET + Basic on 400/401/404/405.
"""

from __future__ import annotations

import pytest

from tests.support import httpclient
from tests.support.oci import archive
from tests.support.oci import make_layout
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import build_id
from tests.support.scenarios import client_scenario

CI = f"ci:{PASSWORDS['ci']}"
MODES = [
    pytest.param("enforce", marks=client_scenario("containerd", "push", "pull")),
    pytest.param("delegate", marks=client_scenario("containerd", "delegate")),
]


def refused(result):
    text = result.output.lower()
    return not result.ok and (
        "denied" in text
        or "unauthorized" in text
        or "authorization" in text
        or "401" in text
        or "403" in text
    )


def imported(containerd, proxy, tmp_path, ref):
    """Import a fresh image from an OCI layout archive under `proxy.netloc/ref`."""
    layout = tmp_path / f"layout-{len(list(tmp_path.iterdir()))}"
    make_layout(layout)
    image = archive(layout, tmp_path / f"{layout.name}.tar")
    name, _, tag = ref.rpartition(":")
    base = f"{proxy.netloc}/{name}"
    done = containerd.ctr("images", "import", "--base-name", base, str(image))
    assert done.ok, done.output
    if tag != "latest":
        assert containerd.ctr("images", "tag", "--force", f"{base}:latest", f"{base}:{tag}").ok
    return f"{base}:{tag}"


def tls(containerd, proxy):
    return containerd.trusting(proxy.netloc, proxy.ca)


@pytest.mark.parametrize("mode", MODES)
def test_ctr_push_and_pull_with_credentials(guarded, containerd, tmp_path, mode):
    proxy = guarded(mode).proxy
    image = imported(containerd, proxy, tmp_path, f"apps/ctr-{mode}:1")
    pushed = containerd.ctr("images", "push", *tls(containerd, proxy), "--user", CI, image)
    assert pushed.ok, pushed.output
    assert containerd.ctr("images", "rm", image).ok
    pulled = containerd.ctr("images", "pull", *tls(containerd, proxy), "--user", CI, image)
    assert pulled.ok, pulled.output
    tokens = [r for r in proxy.records() if r["kind"] == "token"]
    assert tokens and all(r["status"] == 200 for r in tokens), tokens
    assert {r["token_request"]["client_id"] for r in tokens} == {"containerd-client"}


@client_scenario("containerd", "login-refused")
def test_ctr_wrong_password_is_refused(guarded, containerd, tmp_path):
    proxy = guarded("enforce").proxy
    image = imported(containerd, proxy, tmp_path, "apps/ctr-wrong:1")
    pushed = containerd.ctr(
        "images", "push", *tls(containerd, proxy), "--user", "ci:not-the-password", image
    )
    assert refused(pushed), pushed.output
    failures = [r for r in proxy.records() if r["kind"] == "token" and r["status"] == 401]
    # containerd retries the refused POST grant as GET + Basic: one guess, counted once.
    assert [r["token_response"]["failed_login_counted"] for r in failures].count(True) == 1


@client_scenario(
    "containerd",
    "anon-pull-public",
    "anon-pull-refused",
    "anon-push-build",
    "anon-push-cache-refused",
)
def test_ctr_anonymous(guarded, containerd, tmp_path):
    registry, proxy = (g := guarded("enforce")).registry, g.proxy
    public = imported(containerd, proxy, tmp_path, "public/ctr:1")
    private = imported(containerd, proxy, tmp_path, "apps/ctr-secret:1")
    for image in (public, private):
        assert containerd.ctr("images", "push", *tls(containerd, proxy), "--user", CI, image).ok
        assert containerd.ctr("images", "rm", image).ok

    pulled = containerd.ctr("images", "pull", *tls(containerd, proxy), public)
    assert pulled.ok, pulled.output
    assert refused(containerd.ctr("images", "pull", *tls(containerd, proxy), private))

    build = imported(containerd, proxy, tmp_path, f"builds/{build_id()}:1")
    pushed = containerd.ctr("images", "push", *tls(containerd, proxy), build)
    assert pushed.ok, pushed.output
    poison = f"{proxy.netloc}/cache/poison:1"
    assert containerd.ctr("images", "tag", build, poison).ok
    assert refused(containerd.ctr("images", "push", *tls(containerd, proxy), poison))
    assert not any(
        line.startswith(("PUT /v2/cache/", "POST /v2/cache/", "PATCH /v2/cache/"))
        for line in registry.requests_seen()
    )


@client_scenario("containerd", "identity-token")
def test_ctr_pull_with_a_refresh_token(guarded, containerd, tmp_path):
    # ctr --refresh: containerd POSTs grant_type=refresh_token (no user name), as it does
    # with an identity token from a docker config in CRI.
    proxy = guarded("enforce").proxy
    image = imported(containerd, proxy, tmp_path, "apps/ctr-refresh:1")
    assert containerd.ctr("images", "push", *tls(containerd, proxy), "--user", CI, image).ok
    assert containerd.ctr("images", "rm", image).ok
    login = httpclient.get_token(
        proxy.port,
        proxy.ca,
        [],
        SERVICE,
        ("ci", PASSWORDS["ci"]),
        offline_token="true",
        client_id="tests",
    )
    refresh = login.json()["refresh_token"]
    before = len(proxy.records())
    pulled = containerd.ctr("images", "pull", *tls(containerd, proxy), "--refresh", refresh, image)
    assert pulled.ok, pulled.output
    tokens = [r for r in proxy.records()[before:] if r["kind"] == "token"]
    assert tokens and all(r["status"] == 200 for r in tokens), tokens
    assert {r["token_response"]["credential"] for r in tokens} == {"refresh_token"}
    assert {r["token_request"]["grant_type"] for r in tokens} == {"refresh_token"}
    assert refresh not in proxy.log_path.read_text()
