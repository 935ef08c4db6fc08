"""regauth.tools.client_certs: `regauth certs client` and `regauth certs revoke`."""

from __future__ import annotations

import stat

from cryptography import x509

from regauth.cli import main
from regauth.ops import client_ca
from regauth.ops import pki


def test_client_writes_the_three_files_clients_read_and_prints_each_snippet(tmp_path, capsys):
    pki.init_certs(tmp_path / "certs")
    out = tmp_path / "out"
    code = main(
        [
            "certs",
            "client",
            "--dir",
            str(tmp_path / "certs"),
            "--build",
            "b1",
            "--ttl",
            "10m",
            "--out",
            str(out),
            "--host",
            "regauth.test:5443",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "client.cert", "client.key"]
    assert stat.S_IMODE((out / "client.key").stat().st_mode) == 0o600
    # ca.crt is the server CA the clients trust, not the client CA.
    assert (out / "ca.crt").read_bytes() == (tmp_path / "certs" / pki.CA_CERT).read_bytes()
    cert = x509.load_pem_x509_certificate((out / "client.cert").read_bytes())
    assert (
        cert.issuer
        == x509.load_pem_x509_certificate(
            (tmp_path / "certs" / client_ca.CA_CERT).read_bytes()
        ).subject
    )
    captured = capsys.readouterr()
    for needle in (
        "/etc/docker/certs.d/regauth.test:5443",
        "--dest-cert-dir",
        "--cert-dir",
        '[registry."regauth.test:5443"]',
        '[host."https://regauth.test:5443"]',
    ):
        assert needle in captured.out
    assert f"serial {format(cert.serial_number, 'x')}" in captured.err


def test_bad_input_is_exit_2_and_writes_nothing(tmp_path, capsys):
    pki.init_certs(tmp_path / "certs")
    for argv in (
        ["--build", "../x"],
        ["--build", "B"],
        ["--account", "a b"],
        ["--build", "b", "--ttl", "31d"],
        ["--build", "b", "--ttl", "soon"],
    ):
        code = main(
            [
                "certs",
                "client",
                "--dir",
                str(tmp_path / "certs"),
                "--out",
                str(tmp_path / "o"),
                *argv,
            ]
        )
        assert code == 2, argv
        assert not (tmp_path / "o" / "client.key").exists()
    assert "build id '../x'" in capsys.readouterr().err


def test_revoke_adds_to_the_list(tmp_path, capsys):
    pki.init_certs(tmp_path)
    assert main(["certs", "revoke", "--dir", str(tmp_path), "--serial", "0A:bc"]) == 0
    assert main(["certs", "revoke", "--dir", str(tmp_path), "--build", "b1"]) == 0
    revocations = client_ca.read_revocations(tmp_path)
    assert revocations.serials == {"abc"} and revocations.builds == {"b1"}
    assert main(["certs", "revoke", "--dir", str(tmp_path), "--serial", "xyz"]) == 2
    assert main(["certs", "revoke", "--dir", str(tmp_path)]) == 2
    assert "give --serial or --build" in capsys.readouterr().err
