"""regauth's client CA under the certs directory: the CA, the certificates it issued, the
deny list.

    certs/clients/ca.crt            the client CA (what client certificates must chain to)
    certs/clients/issued.jsonl      one line per issued certificate: serial, subject, validity
    certs/clients/revoked.json      the deny list (`regauth.mtls.revocations`)
    certs/private/client-ca.key     its key (0600)

A CA of its own, apart from `certs/ca.crt` (which signs regauth's server certificate): a
certificate of the server CA is never a client identity, and `certs/` stays usable as skopeo's
and docker's cert directory (`clients/` is not read by them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

from regauth.mtls.identity import NOT_BEFORE_LEEWAY
from regauth.mtls.identity import ClientSubject
from regauth.mtls.identity import serial_hex
from regauth.mtls.revocations import Revocations
from regauth.mtls.revocations import parse_revocations
from regauth.ops import pki

CLIENTS_DIR = "clients"
CA_CERT = "clients/ca.crt"
ISSUED = "clients/issued.jsonl"
REVOKED = "clients/revoked.json"
CA_KEY = "private/client-ca.key"
MAX_TTL = dt.timedelta(days=30)
_CA_LIFETIME = dt.timedelta(days=3650)


@dataclass(frozen=True)
class ClientTrust:
    """What the proxy checks a client certificate against (part of the reloaded snapshot)."""

    ca: x509.Certificate
    revocations: Revocations


@dataclass(frozen=True)
class IssuedCertificate:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    serial: str
    not_after: dt.datetime


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regauth"),
        ]
    )


def init_client_ca(certs_dir: Path) -> list[Path]:
    """Create the client CA if it is missing; return the files written."""
    cert_path, key_path = certs_dir / CA_CERT, certs_dir / CA_KEY
    if key_path.exists():
        if not cert_path.exists():
            raise ValueError(f"{key_path} exists but {cert_path} is missing; restore it")
        return []
    if cert_path.exists():
        raise ValueError(
            f"{cert_path} exists but its key {key_path} is missing; "
            "restore the key or remove the certificate"
        )
    (certs_dir / pki.PRIVATE_DIR).mkdir(parents=True, exist_ok=True)
    (certs_dir / pki.PRIVATE_DIR).chmod(0o700)
    (certs_dir / CLIENTS_DIR).mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("regauth client CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pki._write_private(key_path, pki._pem_key(key))
    pki._write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return [key_path, cert_path]


def issue_client_certificate(
    certs_dir: Path, subject: ClientSubject, ttl: dt.timedelta, now: dt.datetime | None = None
) -> IssuedCertificate:
    """Issue a certificate for `subject`, valid for `ttl` (at most MAX_TTL), and record it in
    issued.jsonl. Raise ValueError for a bad ttl or a missing CA."""
    if ttl <= dt.timedelta(0) or ttl > MAX_TTL:
        raise ValueError(f"ttl must be more than 0 and at most {MAX_TTL.days} days")
    try:
        ca_key = serialization.load_pem_private_key((certs_dir / CA_KEY).read_bytes(), None)
        ca_pem = (certs_dir / CA_CERT).read_bytes()
    except OSError as e:
        raise ValueError(f"no client CA in {certs_dir} (run `regauth certs`): {e}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{certs_dir / CA_KEY}: not an EC key")
    ca = x509.load_pem_x509_certificate(ca_pem)
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = now + ttl
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{subject.kind}:{subject.name}"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - NOT_BEFORE_LEEWAY)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(subject.uri)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    serial = serial_hex(cert)
    line = {
        "serial": serial,
        "subject": subject.uri,
        "not_before": (now - NOT_BEFORE_LEEWAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (certs_dir / CLIENTS_DIR).mkdir(parents=True, exist_ok=True)
    with open(certs_dir / ISSUED, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return IssuedCertificate(
        pki._pem_key(key), cert.public_bytes(serialization.Encoding.PEM), ca_pem, serial, not_after
    )


def read_revocations(certs_dir: Path) -> Revocations:
    """The deny list (empty when the file does not exist); ValueError when it is unusable."""
    path = certs_dir / REVOKED
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Revocations()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    return parse_revocations(data, str(path))


def write_revocations(certs_dir: Path, revocations: Revocations) -> Path:
    """Replace the deny list atomically (a reader sees the old list or the new one)."""
    path = certs_dir / REVOKED
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(revocations.to_json())
    os.replace(tmp, path)
    return path


def load_client_trust(certs_dir: Path) -> ClientTrust | None:
    """The client CA and deny list, or None when there is no client CA (no client identities);
    ValueError when either is unusable (the reload keeps the last good snapshot)."""
    path = certs_dir / CA_CERT
    try:
        ca = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the client CA: {e}") from None
    return ClientTrust(ca, read_revocations(certs_dir))
