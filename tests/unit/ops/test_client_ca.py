"""regauth.ops.client_ca: the client CA's files, issuing, the deny list on disk."""

from __future__ import annotations

import datetime as dt
import json
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from regauth.mtls.identity import parse_subject
from regauth.mtls.revocations import Revocations
from regauth.ops import client_ca
from regauth.ops import pki


def test_regauth_certs_creates_a_client_ca_apart_from_the_server_ca(tmp_path):
    written = pki.init_certs(tmp_path)
    assert tmp_path / client_ca.CA_CERT in written
    assert tmp_path / client_ca.CA_KEY in written
    key_mode = stat.S_IMODE((tmp_path / client_ca.CA_KEY).stat().st_mode)
    assert key_mode == 0o600
    server = x509.load_pem_x509_certificate((tmp_path / pki.CA_CERT).read_bytes())
    client = x509.load_pem_x509_certificate((tmp_path / client_ca.CA_CERT).read_bytes())
    assert server.public_key() != client.public_key()
    # certs/ stays a cert directory for skopeo and docker: no new *.crt or *.key at its top.
    top = sorted(p.name for p in tmp_path.glob("*.crt"))
    assert top[0] == pki.CA_CERT and all(n.startswith(pki.SIGNING_STEM) for n in top[1:]), top
    assert not list(tmp_path.glob("*.key"))
    assert pki.init_certs(tmp_path) == []  # nothing is ever overwritten


def test_a_client_ca_certificate_without_its_key_is_an_error(tmp_path):
    client_ca.init_client_ca(tmp_path)
    (tmp_path / client_ca.CA_KEY).unlink()
    with pytest.raises(ValueError, match="restore the key"):
        client_ca.init_client_ca(tmp_path)


def test_issued_certificates_have_the_client_profile_and_are_recorded(tmp_path):
    client_ca.init_client_ca(tmp_path)
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    issued = client_ca.issue_client_certificate(
        tmp_path, parse_subject("build", "b1"), dt.timedelta(minutes=30), now
    )
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["regauth:build:b1"]
    assert cert.not_valid_after_utc == now + dt.timedelta(minutes=30)
    assert cert.not_valid_before_utc == now - dt.timedelta(minutes=5)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    line = json.loads((tmp_path / client_ca.ISSUED).read_text().splitlines()[-1])
    assert line == {
        "serial": issued.serial,
        "subject": "regauth:build:b1",
        "not_before": "2026-12-07T11:55:00Z",
        "not_after": "2026-12-07T12:30:00Z",
        "issued_at": "2026-12-07T12:00:00Z",
    }


@pytest.mark.parametrize("ttl", [dt.timedelta(0), dt.timedelta(days=31)])
def test_ttl_bounds(tmp_path, ttl):
    client_ca.init_client_ca(tmp_path)
    with pytest.raises(ValueError, match="ttl"):
        client_ca.issue_client_certificate(tmp_path, parse_subject("build", "b"), ttl)


def test_no_client_ca_no_trust_and_a_clear_error_when_issuing(tmp_path):
    assert client_ca.load_client_trust(tmp_path) is None
    with pytest.raises(ValueError, match="no client CA"):
        client_ca.issue_client_certificate(
            tmp_path, parse_subject("build", "b"), dt.timedelta(minutes=1)
        )


def test_the_deny_list_is_replaced_atomically_and_read_back(tmp_path):
    client_ca.init_client_ca(tmp_path)
    assert client_ca.load_client_trust(tmp_path).revocations == Revocations()
    revocations = Revocations(frozenset(["ab"]), frozenset(["b1"]))
    client_ca.write_revocations(tmp_path, revocations)
    assert client_ca.load_client_trust(tmp_path).revocations == revocations
    assert [p.name for p in (tmp_path / "clients").iterdir() if p.name.startswith(".")] == []
    (tmp_path / client_ca.REVOKED).write_text("{broken")
    with pytest.raises(ValueError, match="revoked.json: not JSON"):
        client_ca.load_client_trust(tmp_path)
