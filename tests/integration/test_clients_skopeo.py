"""skopeo (Debian's, containers/image) through regauth, scenario by scenario.

`skopeo login` keeps the password in its auth file and every token request is GET + Basic.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.oci import make_layout
from tests.support.policies import PASSWORDS
from tests.support.policies import build_id
from tests.support.scenarios import client_scenario
from tests.support.tools import Result

MODES = [
    pytest.param("enforce", marks=client_scenario("skopeo", "login", "push", "pull", "logout")),
    pytest.param("delegate", marks=client_scenario("skopeo", "delegate")),
]


class Skopeo:
    def __init__(self, proxy, auth_file):
        self.proxy = proxy
        self.auth_file = auth_file
        auth_file.write_text("{}")

    def run(self, *args, input=None) -> Result:
        done = subprocess.run(
            ["skopeo", *args],
            input=input,
            text=True,
            timeout=300,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return Result(done.returncode, done.stdout)

    def login(self, user, password):
        return self.run(
            "login",
            "--authfile",
            str(self.auth_file),
            "--cert-dir",
            str(self.proxy.certs_dir),
            "-u",
            user,
            "--password-stdin",
            self.proxy.netloc,
            input=password,
        )

    def push(self, layout, ref):
        return self.run(
            "copy",
            "--authfile",
            str(self.auth_file),
            "--dest-cert-dir",
            str(self.proxy.certs_dir),
            f"oci:{layout}:latest",
            f"docker://{self.proxy.netloc}/{ref}",
        )

    def pull(self, ref, layout):
        return self.run(
            "copy",
            "--authfile",
            str(self.auth_file),
            "--src-cert-dir",
            str(self.proxy.certs_dir),
            f"docker://{self.proxy.netloc}/{ref}",
            f"oci:{layout}:latest",
        )


def refused(result):
    text = result.output.lower()
    return not result.ok and (
        "denied" in text or "unauthorized" in text or "authentication required" in text
    )


@pytest.mark.parametrize("mode", MODES)
def test_skopeo_login_push_pull_logout(guarded, layout, tmp_path, mode):
    proxy = guarded(mode).proxy
    path, digest = layout
    skopeo = Skopeo(proxy, tmp_path / "auth.json")
    login = skopeo.login("ci", PASSWORDS["ci"])
    assert login.ok and "Login Succeeded" in login.output, login.output
    assert proxy.netloc in json.loads(skopeo.auth_file.read_text())["auths"]
    pushed = skopeo.push(path, "apps/skopeo:1")
    assert pushed.ok, pushed.output
    pulled = skopeo.pull("apps/skopeo:1", tmp_path / "pulled")
    assert pulled.ok, pulled.output
    assert digest in (tmp_path / "pulled" / "index.json").read_text()
    assert skopeo.run("logout", "--authfile", str(skopeo.auth_file), proxy.netloc).ok
    assert refused(skopeo.pull("apps/skopeo:1", tmp_path / "again"))


@client_scenario("skopeo", "login-refused")
def test_skopeo_wrong_password_is_refused(guarded, tmp_path):
    proxy = guarded("enforce").proxy
    skopeo = Skopeo(proxy, tmp_path / "auth.json")
    login = skopeo.login("ci", "not-the-password")
    assert not login.ok and "invalid username/password" in login.output, login.output
    (record,) = [r for r in proxy.records() if r["kind"] == "token" and r["status"] == 401]
    assert record["token_response"]["failed_login_counted"] is True


@client_scenario(
    "skopeo", "anon-pull-public", "anon-pull-refused", "anon-push-build", "anon-push-cache-refused"
)
def test_skopeo_anonymous(guarded, layout, tmp_path):
    registry, proxy = (g := guarded("enforce")).registry, g.proxy
    path, digest = layout
    ci = Skopeo(proxy, tmp_path / "ci.json")
    anonymous = Skopeo(proxy, tmp_path / "anonymous.json")
    assert ci.login("ci", PASSWORDS["ci"]).ok
    assert ci.push(path, "public/skopeo:1").ok
    assert ci.push(path, "apps/skopeo-secret:1").ok

    pulled = anonymous.pull("public/skopeo:1", tmp_path / "public")
    assert pulled.ok, pulled.output
    assert refused(anonymous.pull("apps/skopeo-secret:1", tmp_path / "secret"))
    other = tmp_path / "other"
    make_layout(other)
    pushed = anonymous.push(other, f"builds/{build_id()}:1")
    assert pushed.ok, pushed.output
    assert refused(anonymous.push(other, "cache/poison:1"))
    assert not any(
        line.startswith(("PUT /v2/cache/", "POST /v2/cache/", "PATCH /v2/cache/"))
        for line in registry.requests_seen()
    )
