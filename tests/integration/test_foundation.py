"""Foundation: TLS in front of a real registry, skopeo through it, the exchange log."""

from __future__ import annotations

import json
import subprocess
import time

from regauth.ops import pki
from regauth.ops.registry_process import free_port
from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.tools import skopeo


def _creds() -> str:
    return f"ci:{PASSWORDS['ci']}"


def test_skopeo_round_trip_through_proxy_with_verified_tls(
    write_policy, make_registry, make_proxy, layout, tmp_path
):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    path, digest = layout
    copy_in = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        "--dest-creds",
        _creds(),
        f"oci:{path}:latest",
        f"docker://{proxy.netloc}/demo/app:1",
    )
    assert copy_in.ok, copy_in.output
    inspect = skopeo(
        "inspect",
        "--cert-dir",
        str(proxy.certs_dir),
        "--creds",
        _creds(),
        f"docker://{proxy.netloc}/demo/app:1",
    )
    assert inspect.ok, inspect.output
    assert json.loads(inspect.output[inspect.output.index("{") :])["Digest"] == digest
    out = tmp_path / "out"
    copy_out = skopeo(
        "copy",
        "--src-cert-dir",
        str(proxy.certs_dir),
        "--src-creds",
        _creds(),
        f"docker://{proxy.netloc}/demo/app:1",
        f"oci:{out}:latest",
    )
    assert copy_out.ok, copy_out.output
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest


def test_exchange_log_links_challenge_token_and_retry_and_holds_no_secret(
    write_policy, make_registry, make_proxy, layout
):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    path, _ = layout
    offline = httpclient.get_token(
        proxy.port, proxy.ca, [], SERVICE, ("ci", PASSWORDS["ci"]), offline_token="true"
    )
    refresh_token = offline.json()["refresh_token"]
    result = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        "--dest-creds",
        _creds(),
        f"oci:{path}:latest",
        f"docker://{proxy.netloc}/demo/app:1",
    )
    assert result.ok, result.output
    records = proxy.records()
    challenge = next(r for r in records if r["status"] == 401 and r["path"] == "/v2/")
    assert challenge["challenge"]["scheme"] == "Bearer"
    assert challenge["challenge"]["realm"] == f"{proxy.url}/v2/token"
    assert challenge["challenge"]["service"] == SERVICE
    token = next(
        r
        for r in records
        if r["kind"] == "token"
        and "repository:demo/app:pull,push" in r["token_request"]["requested"]
    )
    assert token["token_request"]["username"] == "ci"
    assert token["token_response"]["decisions"][0]["outcome"] == "granted"
    retry = [
        r
        for r in records
        if r.get("auth", {}).get("scheme") == "Bearer"
        and r["conversation"] == token["conversation"]
    ]
    assert retry, "the retried requests carry the token issued in the same conversation"
    assert challenge["conversation"] == token["conversation"]
    manifest_put = next(r for r in records if r["method"] == "PUT" and "/manifests/" in r["path"])
    assert manifest_put["required"] == ["repository:demo/app:pull,push"]
    assert manifest_put["repository"] == "demo/app"
    assert manifest_put["auth"]["jwt"]["claims"]["sub"] == "ci"
    assert "upstream_ms" in manifest_put and manifest_put["bytes"]["request"] > 0
    raw = proxy.log_path.read_text()
    assert PASSWORDS["ci"] not in raw
    assert refresh_token not in raw
    for line in raw.splitlines():
        for r in [json.loads(line)]:
            jwt = r.get("auth", {}).get("jwt")
            if jwt:
                assert "signature" not in jwt and "signature_bytes" in jwt
    # No token signature (third JWT segment) appears anywhere in the log.
    issued = httpclient.get_token(proxy.port, proxy.ca, ["repository:demo/app:pull"], SERVICE)
    signature = issued.json()["token"].split(".")[2]
    time.sleep(0.2)
    assert signature not in proxy.log_path.read_text()


def test_http2_and_http11_clients_get_registry_challenges(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        out = subprocess.run(
            [
                "curl",
                "-sS",
                flag,
                "--cacert",
                str(proxy.ca),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                f"{proxy.url}/v2/demo/app/manifests/1",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out == f"401 {version}"


def test_upload_location_keeps_the_client_on_the_proxy(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:demo/app:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    reply = httpclient.request(
        proxy.port,
        proxy.ca,
        "POST",
        "/v2/demo/app/blobs/uploads/",
        {"Authorization": f"Bearer {token}"},
        b"",
    )
    assert reply.status == 202, reply.body
    location = reply.header("Location")
    # Relative: resolved against the URL the client used, so it stays on the proxy.
    assert location.startswith("/v2/demo/app/blobs/uploads/"), location
    assert "_state=" in location


def test_https_upstream_with_private_ca_and_mixed_case_url(
    write_policy, make_registry, make_proxy, tmp_path, layout
):
    upstream_certs = tmp_path / "upstream-ca"
    pki.init_certs(upstream_certs)
    cert, key = _server_cert(upstream_certs, tmp_path)
    registry = make_registry(tls=(cert, key))
    mixed = registry.url.replace("https://", "HTTPS://").replace("127.0.0.1", "127.0.0.1")
    proxy = make_proxy(write_policy(), mixed, upstream_ca=upstream_certs / "ca.crt")
    path, digest = layout
    result = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        "--dest-creds",
        _creds(),
        f"oci:{path}:latest",
        f"docker://{proxy.netloc}/demo/tls:1",
    )
    assert result.ok, result.output
    inspect = skopeo(
        "inspect",
        "--cert-dir",
        str(proxy.certs_dir),
        "--creds",
        _creds(),
        f"docker://{proxy.netloc}/demo/tls:1",
    )
    assert inspect.ok and digest in inspect.output


def _server_cert(ca_dir, tmp_path):
    """A server certificate for 127.0.0.1 signed by the CA in ca_dir."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pem = (ca_dir / "private" / "mitmproxy-ca.pem").read_bytes()
    ca_key = serialization.load_pem_private_key(pem, password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "upstream.crt", tmp_path / "upstream.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_token_endpoint_works_while_upstream_is_down(write_policy, make_proxy):
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy(write_policy(), dead)
    reply = httpclient.get_token(proxy.port, proxy.ca, ["repository:public/app:pull"], SERVICE)
    assert reply.status == 200
    token = reply.json()["token"]
    down = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/public/app/manifests/1",
        {"Authorization": f"Bearer {token}"},
    )
    # Issue 26: distribution's 503 UNAVAILABLE with Retry-After (was 502), which clients retry.
    assert down.status == 503
    assert down.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert down.header("Retry-After") == "1"


def test_served_certificate_covers_localhost_and_ip(write_policy, make_registry, make_proxy):
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    for host in ("localhost", "127.0.0.1"):
        reply = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/", host=host)
        assert reply.status == 401


def test_upstream_challenges_get_regauth_realm_and_service(write_policy, make_registry, make_proxy):
    foreign = "https://auth.elsewhere.invalid/token"
    registry = make_registry("token", realm=foreign)
    proxy = make_proxy(write_policy(mode="delegate"), registry.url)
    reply = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/demo/app/tags/list")
    assert reply.status == 401
    assert reply.header("WWW-Authenticate") == (
        f'Bearer realm="{proxy.url}/v2/token",service="{SERVICE}",scope="repository:demo/app:pull"'
    )
    ping = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/")
    assert ping.header("WWW-Authenticate") == (
        f'Bearer realm="{proxy.url}/v2/token",service="{SERVICE}"'
    )
    time.sleep(0.2)
    upstream = next(r for r in proxy.records() if r["path"] == "/v2/demo/app/tags/list")
    assert upstream["answered_by"] == "upstream"
    assert upstream["upstream_challenge"][0]["realm"] == foreign
    assert upstream["challenge"]["realm"] == f"{proxy.url}/v2/token"
