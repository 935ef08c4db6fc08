"""Job tokens through `docker login`, `podman login` and `skopeo login` (issue 23): two regauth
replicas sharing Redis in front of one distribution 2.8. A job token works inside its ttl on
either replica, grants at most its scopes, and is refused after expiry and after
`regauth token revoke` (on the other replica too); nothing in the log holds the token."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from regauth.protocol.scope import parse_scopes
from regauth.runtime import build_runtime
from tests.integration.test_client_certificates import BUILD_RULES
from tests.support.services import Redis

REGAUTH = str(Path(".venv/bin/regauth").resolve())


@pytest.fixture
def cluster(tmp_path, certs_dir, write_policy, make_registry, make_proxy, registry_name):
    redis = Redis(tmp_path / "redis")
    redis.start()
    certs = tmp_path / "certs"
    shutil.copytree(certs_dir, certs)
    policy = write_policy(extra_rules=BUILD_RULES)
    registry = make_registry()
    state = ["--set", f"regauth_state={redis.url}"]
    first = make_proxy(policy, registry.url, name="first", certs_dir=certs, extra=state)
    second = make_proxy(policy, registry.url, name="second", certs_dir=certs, extra=state)
    from tests.support.services import free_port

    port = free_port()
    named = make_proxy(
        policy,
        registry.url,
        name="named",
        certs_dir=certs,
        extra=state,
        port=port,
        public_url=f"https://{registry_name}:{port}",
    )
    yield certs, policy, redis, registry, (first, second, named)
    redis.stop()


def _token(certs, policy, redis, *extra: str, prefix: tuple[str, ...] = ()) -> dict:
    done = subprocess.run(
        [*prefix, REGAUTH, "token", "issue", "--dir", str(certs), "--policy", str(policy),
         "--state", redis.url, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _stored(registry, repository: str) -> bool:
    return (registry.workdir / "data/docker/registry/v2/repositories" / repository).exists()


def _skopeo(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], input=input, capture_output=True, text=True, timeout=300
    )


def test_job_tokens_with_skopeo_podman_and_docker(
    cluster, tmp_path, layout, podman_for, docker_for
):
    certs, policy, redis, registry, (first, second, named) = cluster
    path, _ = layout
    job = _token(
        certs, policy, redis, "--build", "b1", "--scope", "repository:builds/b1/app:pull,push",
        "--ttl", "10m",
    )  # fmt: skip
    auth = tmp_path / "skopeo-auth.json"
    auth.write_text("{}")
    common = ["--authfile", str(auth)]
    login = _skopeo(
        "login", *common, "--cert-dir", str(first.certs_dir), "-u", "b1", "--password-stdin",
        first.netloc, input=job["token"],
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    push = _skopeo(
        "copy", *common, "--dest-cert-dir", str(first.certs_dir), f"oci:{path}:latest",
        f"docker://{first.netloc}/builds/b1/app:skopeo",
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    beyond = _skopeo(
        "copy", *common, "--dest-cert-dir", str(first.certs_dir), f"oci:{path}:latest",
        f"docker://{first.netloc}/builds/b1/other:skopeo",
    )  # fmt: skip
    assert beyond.returncode != 0  # the policy would allow it, the token's scopes do not
    assert not _stored(registry, "builds/b1/other")

    # The second replica accepts the same token (it shares the signing keys and Redis).
    podman = podman_for(second, "podman")
    assert podman.login(second.netloc, "b1", job["token"]).ok
    pulled = podman.run("pull", f"oci:{path}:latest")
    assert pulled.ok, pulled.output
    image = pulled.output.strip().splitlines()[-1]
    pushed = podman.remote("push", image, f"docker://{second.netloc}/builds/b1/app:podman")
    assert pushed.ok, pushed.output

    # docker login stores it; dockerd pushes with it.
    docker = docker_for(named, "docker")
    assert docker.login(named.netloc, "b1", job["token"]).ok
    ref = f"{named.netloc}/builds/b1/app:docker"
    assert docker.import_image(ref, b"pushed with a job token\n").ok
    assert docker.run("push", ref).ok

    # Revoked on the command line (through Redis): every replica refuses it from now on.
    done = subprocess.run(
        [REGAUTH, "token", "revoke", "--dir", str(certs), "--state", redis.url, job["jti"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for proxy in (first, second):
        again = _skopeo(
            "login", "--authfile", str(tmp_path / f"again-{proxy.port}.json"), "--cert-dir",
            str(proxy.certs_dir), "-u", "b1", "--password-stdin", proxy.netloc,
            input=job["token"],
        )  # fmt: skip
        assert again.returncode != 0, proxy.netloc
    refused = _skopeo(
        "copy", *common, "--dest-cert-dir", str(first.certs_dir), f"oci:{path}:latest",
        f"docker://{first.netloc}/builds/b1/app:after-revoke",
    )  # fmt: skip
    assert refused.returncode != 0

    # Issued an hour ago for ten minutes (signed with the replicas' key): expired.
    runtime = build_runtime(policy, certs, registry.url)
    runtime.issuer.clock = lambda: time.time() - 3600
    stale, _ = runtime.issuer.issue_job(
        "regauth:build:b1", list(parse_scopes(["repository:builds/b1/app:pull"])), 600
    )
    old = {"token": stale}
    expired = _skopeo(
        "login", "--authfile", str(tmp_path / "expired.json"), "--cert-dir", str(first.certs_dir),
        "-u", "b1", "--password-stdin", first.netloc, input=old["token"],
    )  # fmt: skip
    assert expired.returncode != 0

    # No log line of any replica holds a token; each login names the job token's id.
    ids = []
    for proxy in (first, second, named):
        text = proxy.log_path.read_text()
        for token in (job["token"], old["token"]):
            assert token not in text
            assert token.split(".")[2] not in text  # not even its signature
        for record in proxy.records():
            response = record.get("token_response") or {}
            if response.get("credential") == "job_token" and record["status"] == 200:
                ids.append(response["job_token"])
    assert ids and set(ids) == {job["jti"]}


def test_a_ci_controller_mints_over_the_admin_listener_only(
    tmp_path, certs_dir, write_policy, make_registry, make_proxy, layout
):
    import urllib.error
    import urllib.request

    certs = tmp_path / "certs"
    shutil.copytree(certs_dir, certs)
    policy = write_policy(extra_rules=BUILD_RULES)
    registry = make_registry()
    proxy = make_proxy(policy, registry.url, certs_dir=certs, admin_listen="127.0.0.1:0")
    assert proxy.admin_port is not None
    url = f"http://127.0.0.1:{proxy.admin_port}/job-tokens"
    body = json.dumps(
        {"build": "b7", "scope": ["repository:builds/b7/app:pull,push"], "ttl": "5m"}
    ).encode()

    def post(secret: str | None) -> tuple[int, dict]:
        request = urllib.request.Request(url, data=body, method="POST")
        if secret:
            request.add_header("Authorization", f"Bearer {secret}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    assert post(None)[0] == 404  # off until the operator creates the admin token
    done = subprocess.run(
        [REGAUTH, "token", "admin-secret", "--dir", str(certs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    secret = done.stdout.strip()
    assert done.returncode == 0 and len(secret) >= 40
    assert post("wrong")[0] == 401
    code, minted = post(secret)
    assert code == 200, minted
    # The token works for a login at the proxy port …
    path, _ = layout
    auth = tmp_path / "auth.json"
    auth.write_text("{}")
    login = _skopeo(
        "login", "--authfile", str(auth), "--cert-dir", str(certs), "-u", "b7",
        "--password-stdin", proxy.netloc, input=minted["token"],
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    push = _skopeo(
        "copy", "--authfile", str(auth), "--dest-cert-dir", str(certs), f"oci:{path}:latest",
        f"docker://{proxy.netloc}/builds/b7/app:1",
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    # … and is listed; the proxy port has no minting route.
    listed = subprocess.run(
        [REGAUTH, "token", "list", "--dir", str(certs), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [e["jti"] for e in json.loads(listed.stdout)] == [minted["jti"]]
    proxied = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(proxy.ca),
         "-X", "POST", "-H", f"Authorization: Bearer {secret}", "--data-binary", body.decode(),
         f"{proxy.url}/job-tokens"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proxied.stdout == "404"
    assert minted["token"] not in proxy.log_path.read_text()
