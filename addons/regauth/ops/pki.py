"""Key material under the certs directory: the TLS CA and the token-signing keys.

Layout (``certs/`` itself must stay usable as skopeo's and docker's cert directory, which refuse
a ``*.key`` without a matching ``*.cert``, so every private key lives in ``private/``):

    certs/ca.crt                          CA clients trust for TLS
    certs/token-signing[-STAMP].crt       token-signing certificates (the registry's rootcertbundle)
    certs/private/mitmproxy-ca.pem        CA key + certificate, mitmproxy's confdir (0600)
    certs/private/token-signing[-STAMP].key
    certs/clients/, certs/private/client-ca.key   the client CA (ops/client_ca.py)

Nothing is ever overwritten: initialisation only fills in what is missing.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

from regauth.tokens.keyids import PublicKey

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_CERT = "ca.crt"
PRIVATE_DIR = "private"
MITMPROXY_CA = "mitmproxy-ca.pem"
SIGNING_STEM = "token-signing"
ALGORITHMS = ("ES256", "RS256")

_CA_LIFETIME = dt.timedelta(days=3650)
_SIGNING_LIFETIME = dt.timedelta(days=1825)
# Signing certificates start this long before their creation (clock skew between hosts); the
# creation time is therefore not-before + SIGNING_BACKDATE.
SIGNING_BACKDATE = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {algorithm!r} (choose from {ALGORITHMS})")


def algorithm_for(key: PublicKey) -> str:
    """The one JWS algorithm a key may sign with; nothing else is ever accepted for it."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"unsupported EC curve {key.curve.name}")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys below 2048 bits are refused")
        return "RS256"
    raise ValueError("unsupported key type")


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _private_dir(certs_dir: Path) -> Path:
    private = certs_dir / PRIVATE_DIR
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    return private


def _self_signed(
    key: PrivateKey, common_name: str, lifetime: dt.timedelta, backdate: dt.timedelta, is_ca: bool
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regauth"),
        ]
    )
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if is_ca:
        # mitmproxy's own CA carries serverAuth too; some TLS stacks check it on the chain.
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def create_ca(common_name: str = "regauth local CA") -> tuple[PrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _self_signed(key, common_name, _CA_LIFETIME, dt.timedelta(days=1), is_ca=True)


def create_signing_cert(key: PrivateKey, common_name: str) -> x509.Certificate:
    """A self-signed certificate that carries the token-signing key (for x5c and rootcertbundle)."""
    return _self_signed(key, common_name, _SIGNING_LIFETIME, SIGNING_BACKDATE, is_ca=False)


def init_certs(certs_dir: Path, algorithm: str = "ES256") -> list[Path]:
    """Create whatever is missing; return the files written (empty when all existed)."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    private = _private_dir(certs_dir)
    written: list[Path] = []
    ca_pem = private / MITMPROXY_CA
    ca_crt = certs_dir / CA_CERT
    if not ca_pem.exists():
        if ca_crt.exists():
            raise ValueError(
                f"{ca_crt} exists but its key {ca_pem} is missing; "
                "restore the key or remove the certificate"
            )
        key, cert = create_ca()
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        _write_private(ca_pem, _pem_key(key) + cert_pem)
        _write_public(ca_crt, cert_pem)
        written += [ca_pem, ca_crt]
    elif not ca_crt.exists():
        cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        _write_public(ca_crt, cert.public_bytes(serialization.Encoding.PEM))
        written.append(ca_crt)
    if not list(certs_dir.glob(f"{SIGNING_STEM}*.crt")):
        written += write_signing_pair(certs_dir, SIGNING_STEM, algorithm)
    from regauth.ops import client_ca  # it builds on this module's helpers

    written += client_ca.init_client_ca(certs_dir)
    return written


def new_signing_name(certs_dir: Path) -> str:
    """A file stem for a new signing key, `token-signing-YYYYMMDDTHHMMSSZ`, not yet taken."""
    stamp = _now().strftime("%Y%m%dT%H%M%SZ")
    name = f"{SIGNING_STEM}-{stamp}"
    n = 1
    while (certs_dir / f"{name}.crt").exists() or (
        certs_dir / PRIVATE_DIR / f"{name}.key"
    ).exists():
        n += 1
        name = f"{SIGNING_STEM}-{stamp}-{n}"
    return name


def rotate_signing_key(certs_dir: Path, algorithm: str = "ES256") -> list[Path]:
    """Add a signing key's files and nothing else (`regauth.tokens.keystate` stages rotations)."""
    return write_signing_pair(certs_dir, new_signing_name(certs_dir), algorithm)


def write_signing_pair(certs_dir: Path, stem: str, algorithm: str) -> list[Path]:
    """Write `private/STEM.key`, then `STEM.crt` in one step (a reader never sees half a
    certificate, and the key is there before the certificate that makes it count)."""
    private = _private_dir(certs_dir)
    key = _new_key(algorithm)
    cert = create_signing_cert(key, f"regauth token signing {stem}")
    key_path = private / f"{stem}.key"
    crt_path = certs_dir / f"{stem}.crt"
    _write_private(key_path, _pem_key(key))
    tmp = certs_dir / f".{stem}.crt.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    _write_public(tmp, cert.public_bytes(serialization.Encoding.PEM))
    try:
        os.link(tmp, crt_path)  # fails if it exists: never overwrite
    finally:
        tmp.unlink()
    return [key_path, crt_path]


def remove_signing_key(certs_dir: Path, name: str) -> list[Path]:
    """Delete a signing key's certificate, then its private key; return the files removed."""
    removed = []
    for path in (certs_dir / f"{name}.crt", certs_dir / PRIVATE_DIR / f"{name}.key"):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


@dataclass(frozen=True)
class SigningKey:
    """A token-signing certificate of the certs directory, and its private key if present."""

    name: str  # the file stem (`token-signing-<timestamp>`)
    certificate: x509.Certificate
    private_key: PrivateKey | None  # None: a key that only verifies (its key file is gone)

    @property
    def public_key(self) -> PublicKey:
        key = self.certificate.public_key()
        assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))
        return key

    @property
    def algorithm(self) -> str:
        return algorithm_for(self.public_key)

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def created(self) -> float:
        """When regauth made the key (epoch seconds): its certificate's not-before + backdate."""
        return (self.not_before + SIGNING_BACKDATE).timestamp()

    def fingerprint(self) -> str:
        """SHA-256 of the certificate, as `openssl x509 -noout -fingerprint -sha256` shows it."""
        digest = self.certificate.fingerprint(hashes.SHA256()).hex().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def load_signing_keys(certs_dir: Path) -> list[SigningKey]:
    """Every trusted signing certificate, oldest first, with its private key when present.

    Raises ValueError for unreadable material, a key that does not match its certificate, or a
    key file readable by others.
    """
    keys: list[SigningKey] = []
    for crt_path in sorted(certs_dir.glob(f"{SIGNING_STEM}*.crt")):
        name = crt_path.stem
        try:
            cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        except ValueError as e:
            raise ValueError(f"{crt_path}: not a PEM certificate ({e})") from None
        public_key = cert.public_key()
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise ValueError("unsupported key type")  # as algorithm_for says it
        algorithm_for(public_key)
        key_path = certs_dir / PRIVATE_DIR / f"{name}.key"
        private_key = None
        if key_path.exists():
            if key_path.stat().st_mode & 0o077:
                raise ValueError(
                    f"{key_path}: private key is accessible by other users (chmod 600 it)"
                )
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(loaded, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
                raise ValueError(f"{key_path}: unsupported key type")
            if loaded.public_key().public_numbers() != public_key.public_numbers():
                raise ValueError(f"{key_path} does not match {crt_path}")
            private_key = loaded
        keys.append(SigningKey(name, cert, private_key))
    keys.sort(key=lambda k: (k.not_before, k.name))
    return keys


def bundle_pem(keys: list[SigningKey]) -> str:
    """What a registry's auth.token.rootcertbundle must contain."""
    return "".join(k.certificate.public_bytes(serialization.Encoding.PEM).decode() for k in keys)
