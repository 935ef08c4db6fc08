"""Client certificates (mutual TLS) as builder identities (issue 23), with real clients against
distribution 2.8 behind regauth: skopeo (`--dest-cert-dir`, no login) and curl (HTTP/1.1 and
HTTP/2, the token request without Authorization that BuildKit sends).

Every refused push must leave no byte in the registry (its storage has no such repository),
and a client without a certificate gets exactly what it got before.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from regauth.mtls.identity import parse_subject
from regauth.ops import client_ca
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import build_id

BUILD_RULES = """  - comment: a build with a client certificate owns builds/ID and below
    account: any
    repository: ["builds/${build}", "builds/${build}/**"]
    actions: [pull, push]
  - comment: CI owns its applications
    account: ci
    repository: "apps/**"
    actions: [pull, push]
"""


def _regauth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(".venv/bin/regauth").resolve()), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def setup(tmp_path, certs_dir, write_policy, make_registry, make_proxy):
    """A registry without auth behind regauth (enforce) with a certs directory of its own (the
    test revokes certificates), and a function that issues a certificate into a directory."""
    certs = tmp_path / "certs"
    shutil.copytree(certs_dir, certs)
    policy = write_policy(extra_rules=BUILD_RULES)
    registry = make_registry()
    proxy = make_proxy(policy, registry.url, certs_dir=certs)

    def issue(kind: str, name: str, ttl: str = "30m") -> Path:
        out = tmp_path / f"cert-{kind}-{name}-{time.monotonic_ns()}"
        flag = "--build" if kind == "build" else "--account"
        done = _regauth(
            "certs",
            "client",
            "--dir",
            str(certs),
            flag,
            name,
            "--ttl",
            ttl,
            "--out",
            str(out),
            "--host",
            proxy.netloc,
        )
        assert done.returncode == 0, done.stderr
        assert f'[host."https://{proxy.netloc}"]' in done.stdout  # the ctr snippet, host filled
        return out

    return certs, registry, proxy, issue


def _skopeo_push(layout: Path, proxy, cert_dir: Path | None, repository: str, auth: Path):
    args = ["skopeo", "copy", "--authfile", str(auth), "--retry-times", "0"]
    args += ["--dest-cert-dir", str(cert_dir if cert_dir else proxy.certs_dir)]
    args += [f"oci:{layout}:latest", f"docker://{proxy.netloc}/{repository}:1"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def _stored(registry, repository: str) -> bool:
    return (registry.workdir / "data/docker/registry/v2/repositories" / repository).exists()


@pytest.fixture
def auth_file(tmp_path) -> Path:
    path = tmp_path / "auth.json"
    path.write_text("{}")
    return path


def test_skopeo_with_a_build_certificate_pushes_to_its_own_repository_only(
    setup, layout, auth_file
):
    certs, registry, proxy, issue = setup
    path, _ = layout
    mine = issue("build", "b1")
    done = _skopeo_push(path, proxy, mine, "builds/b1/app", auth_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _stored(registry, "builds/b1/app")
    assert json.loads(auth_file.read_text()) == {}  # no login anywhere

    for repository in ("builds/b2/app", "apps/x", "public/x"):
        done = _skopeo_push(path, proxy, mine, repository, auth_file)
        assert done.returncode != 0, repository
        assert not _stored(registry, repository), repository

    records = proxy.records()
    # With a certificate `GET /v2/` is already answered (the certificate is the credential),
    # so skopeo asks for no token: every registry request is decided by the certificate.
    assert [r for r in records if r["kind"] == "token"] == []
    registry_requests = [r for r in records if r["kind"] == "registry"]
    assert registry_requests
    for record in registry_requests:
        assert record["client_certificate"]["subject"] == "regauth:build:b1"
    pushed = [r for r in registry_requests if r["status"] == 201]
    assert pushed
    assert all(
        r["decision"]["reason"].startswith("client certificate (build b1) grants ") for r in pushed
    )
    refused = [r for r in registry_requests if "builds/b2" in r["path"]]
    assert refused and all(r["status"] == 401 for r in refused)


def test_refused_certificates_write_nothing(setup, layout, auth_file, tmp_path):
    certs, registry, proxy, issue = setup
    path, _ = layout

    # A certificate of another client CA (same names, other key).
    other = tmp_path / "other-certs"
    client_ca.init_client_ca(other)
    foreign = client_ca.issue_client_certificate(
        other, parse_subject("build", "b1"), dt.timedelta(minutes=30)
    )
    foreign_dir = tmp_path / "foreign"
    foreign_dir.mkdir()
    (foreign_dir / "client.key").write_bytes(foreign.key_pem)
    (foreign_dir / "client.cert").write_bytes(foreign.cert_pem)
    (foreign_dir / "ca.crt").write_bytes(proxy.ca.read_bytes())

    # An expired certificate of regauth's own client CA.
    expired = client_ca.issue_client_certificate(
        certs,
        parse_subject("build", "b1"),
        dt.timedelta(minutes=1),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    expired_dir = tmp_path / "expired"
    expired_dir.mkdir()
    (expired_dir / "client.key").write_bytes(expired.key_pem)
    (expired_dir / "client.cert").write_bytes(expired.cert_pem)
    (expired_dir / "ca.crt").write_bytes(proxy.ca.read_bytes())

    for name, directory, reason in (
        ("b1/foreign", foreign_dir, "not issued by regauth's client CA"),
        ("b1/expired", expired_dir, "client certificate expired at"),
    ):
        done = _skopeo_push(path, proxy, directory, f"builds/{name}", auth_file)
        assert done.returncode != 0
        assert not _stored(registry, f"builds/{name}")
        refused = [r for r in proxy.records() if (r.get("client_certificate") or {}).get("refused")]
        assert any(reason in r["client_certificate"]["refused"] for r in refused), refused
        assert all(r["status"] == 401 for r in refused)

    # Revocation: a build's certificate works, then `certs revoke --build` refuses it without
    # a restart (also on connections the client keeps open).
    mine = issue("build", "b3")
    assert _skopeo_push(path, proxy, mine, "builds/b3/one", auth_file).returncode == 0
    done = _regauth("certs", "revoke", "--dir", str(certs), "--build", "b3")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10  # the watcher checks every second
    while time.monotonic() < deadline:
        status, _ = _curl(proxy, mine, f"{proxy.url}/v2/token?service={SERVICE}")
        if status.startswith("401"):
            break
        time.sleep(0.2)
    done = _skopeo_push(path, proxy, mine, "builds/b3/two", auth_file)
    assert done.returncode != 0
    assert not _stored(registry, "builds/b3/two")
    assert any(
        "client certificates of build b3 are revoked"
        in ((r.get("client_certificate") or {}).get("refused") or "")
        for r in proxy.records()
    )

    # By serial, too.
    other_build = issue("build", "b4")
    serial = (
        subprocess.run(
            ["openssl", "x509", "-noout", "-serial", "-in", str(other_build / "client.cert")],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .partition("=")[2]
    )
    assert _skopeo_push(path, proxy, other_build, "builds/b4/before", auth_file).returncode == 0
    assert _regauth("certs", "revoke", "--dir", str(certs), "--serial", serial).returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _curl(
        proxy, other_build, f"{proxy.url}/v2/token?service={SERVICE}"
    )[0].startswith("200"):
        time.sleep(0.2)
    assert _skopeo_push(path, proxy, other_build, "builds/b4/x", auth_file).returncode != 0
    assert not _stored(registry, "builds/b4/x")


def test_without_a_certificate_nothing_changes(setup, layout, auth_file):
    _, registry, proxy, _ = setup
    path, _ = layout
    done = _skopeo_push(path, proxy, None, "builds/b1/app", auth_file)
    assert done.returncode != 0  # `${build}` binds nothing for an anonymous client
    assert not _stored(registry, "builds/b1/app")
    capability = build_id()  # the capability repository works exactly as before
    done = _skopeo_push(path, proxy, None, f"builds/{capability}", auth_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all("client_certificate" not in r for r in proxy.records())


def _curl(proxy, cert_dir: Path | None, url: str, *extra: str, http2: bool = True):
    args = ["curl", "-sS", "--cacert", str(proxy.ca), "-w", "\\n%{http_code} %{http_version}"]
    args += ["--http2" if http2 else "--http1.1"]
    if cert_dir is not None:
        args += ["--cert", str(cert_dir / "client.cert"), "--key", str(cert_dir / "client.key")]
    done = subprocess.run([*args, *extra, url], capture_output=True, text=True, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    return status, body


@pytest.mark.parametrize("http2", [True, False], ids=["HTTP/2", "HTTP/1.1"])
def test_the_token_endpoint_grants_to_the_certificate_without_authorization(setup, http2):
    _, _, proxy, issue = setup
    mine = issue("build", "b7")
    scope = "repository:builds/b7/app:pull,push&scope=repository:builds/b8/app:pull,push"
    url = f"{proxy.url}/v2/token?service={SERVICE}&scope={scope}"
    status, body = _curl(proxy, mine, url, http2=http2)
    assert status == ("200 2" if http2 else "200 1.1"), body
    assert json.loads(body)["scope"] == "repository:builds/b7/app:pull,push"

    # Credentials of another identity on a certificate connection: refused, never merged.
    status, body = _curl(proxy, mine, url, "-u", f"ci:{PASSWORDS['ci']}", http2=http2)
    assert status.startswith("401"), body
    assert "credentials for another identity are refused" in body

    # An account certificate is that account, with the account's rules.
    ci = issue("account", "ci")
    status, body = _curl(
        proxy, ci, f"{proxy.url}/v2/token?service={SERVICE}&scope=repository:apps/x:push"
    )
    assert status.startswith("200"), body
    assert json.loads(body)["scope"] == "repository:apps/x:push"
    status, body = _curl(
        proxy,
        ci,
        f"{proxy.url}/v2/token?service={SERVICE}&scope=repository:apps/x:push",
        "-u",
        f"ci:{PASSWORDS['ci']}",
    )
    assert status.startswith("200"), body  # its own account's credentials are not a conflict


def test_garbage_and_hostile_certificates_get_a_clear_refusal(setup, tmp_path):
    certs, _, proxy, _ = setup
    # A certificate that names a path-traversing build cannot be issued …
    done = _regauth(
        "certs", "client", "--dir", str(certs), "--build", "../x", "--out", str(tmp_path / "x")
    )
    assert done.returncode == 2 and "build id '../x'" in done.stderr
    # … and one made by hand with regauth's client CA key is refused at the first request.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from cryptography.x509.oid import NameOID

    ca_key = serialization.load_pem_private_key((certs / client_ca.CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((certs / client_ca.CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(minutes=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("regauth:build:../x")]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "client.cert").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (hostile / "client.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    status, body = _curl(proxy, hostile, f"{proxy.url}/v2/token?service={SERVICE}")
    assert status.startswith("401"), body
    assert "client certificate subject refused: build id '../x'" in body
    # A self-signed certificate (garbage as far as regauth's CA goes).
    selfsigned = tmp_path / "selfsigned"
    selfsigned.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=x",
            "-days",
            "1",
            "-keyout",
            str(selfsigned / "client.key"),
            "-out",
            str(selfsigned / "client.cert"),
        ],
        check=True,
        capture_output=True,
    )
    status, body = _curl(proxy, selfsigned, f"{proxy.url}/v2/")
    assert status.startswith("401"), body
    assert "client certificate" in body
    # regauth still serves everyone else.
    status, _ = _curl(proxy, None, f"{proxy.url}/v2/token?service={SERVICE}")
    assert status.startswith("200")
