"""regauth.mtls.identity: subjects and the verification of presented chains."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

from regauth.mtls.identity import CertificateRefused
from regauth.mtls.identity import parse_subject
from regauth.mtls.identity import parse_subject_uri
from regauth.mtls.identity import verify_client_chain
from regauth.mtls.revocations import Revocations
from regauth.ops import client_ca
from regauth.ops import pki

# Taken when the module is imported, which can be half an hour before these tests run: every
# certificate below is issued at NOW, not at the test's own clock.
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("client-ca")
    client_ca.init_client_ca(directory)
    return directory


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _ca(certs: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((certs / client_ca.CA_CERT).read_bytes())


def _issue(certs: Path, kind="build", name="b1", ttl=dt.timedelta(minutes=30), now=None):
    return client_ca.issue_client_certificate(certs, parse_subject(kind, name), ttl, now or NOW)


def _hand_made(
    certs: Path, *, uris=("regauth:build:b1",), eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), ca=False
) -> bytes:
    ca_key = serialization.load_pem_private_key((certs / client_ca.CA_KEY).read_bytes(), None)
    issuer = _ca(certs)
    key = ec.generate_private_key(ec.SECP256R1())
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(minutes=30))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_a_certificate_regauth_issued_names_its_subject(certs):
    issued = _issue(certs, "build", "b1")
    verified = verify_client_chain([_der(issued.cert_pem)], _ca(certs), Revocations(), NOW)
    assert verified.subject == parse_subject("build", "b1")
    assert verified.serial == issued.serial
    assert verified.not_after == pytest.approx(issued.not_after.timestamp(), abs=1)
    assert verified.as_record()["subject"] == "regauth:build:b1"


def test_an_account_certificate_names_the_account(certs):
    issued = _issue(certs, "account", "ci")
    verified = verify_client_chain([_der(issued.cert_pem)], _ca(certs), Revocations(), NOW)
    assert (verified.subject.kind, verified.subject.name) == ("account", "ci")


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (NOW + dt.timedelta(hours=1), "client certificate expired at"),
        (NOW - dt.timedelta(hours=1), "client certificate not valid before"),
    ],
)
def test_validity_is_checked_with_the_backdated_start_as_the_only_leeway(certs, when, reason):
    issued = _issue(certs)
    with pytest.raises(CertificateRefused, match=reason):
        verify_client_chain([_der(issued.cert_pem)], _ca(certs), Revocations(), when)
    # Issued now, it is already valid for a client clock up to five minutes behind.
    verify_client_chain(
        [_der(issued.cert_pem)], _ca(certs), Revocations(), NOW - dt.timedelta(minutes=4)
    )


def test_no_other_ca_is_an_identity(certs, tmp_path):
    client_ca.init_client_ca(tmp_path)  # same names, another key
    foreign = _issue(tmp_path)
    with pytest.raises(CertificateRefused, match="not issued by regauth's client CA"):
        verify_client_chain([_der(foreign.cert_pem)], _ca(certs), Revocations(), NOW)
    # Nor regauth's own server CA (or a certificate it signs).
    pki.init_certs(tmp_path / "server")
    server_ca = x509.load_pem_x509_certificate((tmp_path / "server" / pki.CA_CERT).read_bytes())
    with pytest.raises(CertificateRefused):
        verify_client_chain(
            [server_ca.public_bytes(serialization.Encoding.DER)], _ca(certs), Revocations(), NOW
        )


def test_revoked_by_serial_or_build(certs):
    issued = _issue(certs, "build", "b9")
    chain = [_der(issued.cert_pem)]
    with pytest.raises(CertificateRefused, match=f"{issued.serial} is revoked") as e:
        verify_client_chain(chain, _ca(certs), Revocations(frozenset([issued.serial])), NOW)
    assert e.value.serial == issued.serial
    with pytest.raises(CertificateRefused, match="build b9 are revoked"):
        verify_client_chain(chain, _ca(certs), Revocations(builds=frozenset(["b9"])), NOW)
    verify_client_chain(chain, _ca(certs), Revocations(builds=frozenset(["b8"])), NOW)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"uris": ()}, "names no subject|refused"),
        ({"uris": ("regauth:build:a", "regauth:build:b")}, "exactly one regauth: subject"),
        ({"uris": ("regauth:build:../x",)}, "build id '../x'"),
        ({"uris": ("regauth:build:A",)}, "build id 'A'"),
        ({"uris": ("regauth:root:x",)}, "unknown subject kind"),
        ({"uris": ("https://example.com/",)}, "exactly one regauth: subject"),
        ({"eku": (ExtendedKeyUsageOID.SERVER_AUTH,)}, "refused|clientAuth"),
        (
            {"eku": (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)},
            "clientAuth only",
        ),
        ({"eku": ()}, "refused|extended key usage"),
        ({"ca": True}, "refused|CA certificate"),
    ],
)
def test_certificates_outside_the_profile_are_refused(certs, kwargs, reason):
    with pytest.raises(CertificateRefused, match=reason):
        verify_client_chain([_hand_made(certs, **kwargs)], _ca(certs), Revocations(), NOW)


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        ([], "no client certificate"),
        ([b"garbage"], "not valid DER"),
        ([b"\x30" * 20_000], "too large"),
        ([b"x"] * 5, "a chain of 5 certificates"),
    ],
)
def test_garbage_chains_are_refused_before_parsing_anything_large(certs, chain, reason):
    with pytest.raises(CertificateRefused, match=reason):
        verify_client_chain(chain, _ca(certs), Revocations(), NOW)


@pytest.mark.parametrize(
    "uri",
    ["regauth:build:", "regauth:build", "x:build:a", "regauth:account:-x", "regauth:build:a/b"],
)
def test_subject_uris_outside_the_grammar(uri):
    with pytest.raises(ValueError):
        parse_subject_uri(uri)


def test_subject_uris_round_trip():
    for kind, name in (("build", "b1"), ("build", "a.b_c-d"), ("account", "alice@example")):
        subject = parse_subject(kind, name)
        assert parse_subject_uri(subject.uri) == subject
