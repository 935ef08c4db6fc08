"""Ready-to-paste trust instructions (`regauth.ops.trust`): every client's recipe names the
public origin and the CA's absolute path; clients that need host:port get the port."""

from __future__ import annotations

from regauth.ops.trust import trust_instructions
from regauth.protocol.urls import parse_origin


def test_the_instructions_name_the_origin_and_the_absolute_ca_path(tmp_path, monkeypatch):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("")
    monkeypatch.chdir(tmp_path)
    text = trust_instructions(
        parse_origin("https://registry.example:5443"),
        tmp_path / "certs" / ".." / "certs" / "ca.crt",
    )
    ca = tmp_path / "certs" / "ca.crt"
    assert text.startswith(
        "regauth is serving https://registry.example:5443  "
        "(token realm https://registry.example:5443/v2/token)\n"
    )
    assert f"CA certificate: {ca}\n" in text
    assert f"curl --cacert {ca} https://registry.example:5443/v2/" in text
    assert f"--dest-cert-dir {tmp_path / 'certs'} " in text
    assert "/etc/docker/certs.d/registry.example:5443/ca.crt" in text
    assert '[registry."registry.example:5443"]' in text
    assert "clients that need host:port spell it registry.example:5443" in text


def test_the_default_port_is_spelt_out_where_a_client_needs_it(tmp_path):
    text = trust_instructions(parse_origin("https://registry.example"), tmp_path / "ca.crt")
    assert "regauth is serving https://registry.example  " in text
    assert "/etc/docker/certs.d/registry.example/ca.crt" in text
    assert "spell it registry.example:443" in text
