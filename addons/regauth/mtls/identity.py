"""Subjects of regauth's client certificates, and the verification of a presented chain.

A client certificate names one subject in a SAN URI (RFC 5280 §4.2.1.6):

    regauth:build:ID        a build; ID is one repository path component ([a-z0-9._-], at most
                            64 characters, starting and ending with a letter or digit), bound to
                            `${build}` in policy patterns
    regauth:account:NAME    an account of the policy (the account name grammar of `accounts:`)

Verification (`verify_client_chain`) uses cryptography's X.509 client verifier (the WebPKI
path-building rules of RFC 5280 with the CA/B baseline profile) with the client CA as its only
trust anchor, then regauth's own rules: exactly one `regauth:` URI, EKU clientAuth and nothing
else, not a CA, not revoked. The certificates regauth issues are backdated by
`NOT_BEFORE_LEEWAY`, which is the leeway for a client clock behind regauth's; expiry has none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store
from cryptography.x509.verification import VerificationError

from regauth.mtls.revocations import Revocations
from regauth.policy.model import ACCOUNT_NAME_RE

SubjectKind = Literal["build", "account"]

URI_SCHEME = "regauth"
BUILD_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
NOT_BEFORE_LEEWAY = dt.timedelta(minutes=5)
MAX_CHAIN_CERTIFICATES = 4  # the leaf and what a client might add; regauth's CA signs leaves
MAX_CERTIFICATE_BYTES = 16 * 1024  # DER, each
MAX_CHAIN_BYTES = 32 * 1024


class CertificateRefused(ValueError):
    """A presented client certificate is not an identity; `reason` says why (for the exchange
    log and the client's 401, never containing the certificate itself)."""

    def __init__(self, reason: str, serial: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.serial = serial


@dataclass(frozen=True)
class ClientSubject:
    """Whom a client certificate names."""

    kind: SubjectKind
    name: str

    @property
    def uri(self) -> str:
        return f"{URI_SCHEME}:{self.kind}:{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def parse_subject(kind: str, name: str) -> ClientSubject:
    """A subject from its parts; raise ValueError naming the grammar it breaks."""
    if kind == "build":
        if BUILD_ID_RE.fullmatch(name) is None:
            raise ValueError(
                f"build id {name[:80]!r} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit (it becomes a repository path "
                "component)"
            )
        return ClientSubject("build", name)
    if kind == "account":
        if ACCOUNT_NAME_RE.fullmatch(name) is None:
            raise ValueError(
                f"account name {name[:80]!r} must be 1-64 letters, digits, '.', '_', '@' or '-'"
            )
        return ClientSubject("account", name)
    raise ValueError(f"unknown subject kind {kind!r} (build or account)")


def parse_subject_uri(uri: str) -> ClientSubject:
    """`regauth:build:ID` or `regauth:account:NAME`; raise ValueError otherwise."""
    scheme, _, rest = uri.partition(":")
    kind, _, name = rest.partition(":")
    if scheme != URI_SCHEME or not name:
        raise ValueError(f"not a regauth subject URI: {uri[:80]!r}")
    return parse_subject(kind, name)


@dataclass(frozen=True)
class ClientCertificate:
    """A verified client certificate: the identity it names, for how long, and how to find it
    again (serial as lower-case hex, as `regauth certs revoke --serial` takes it)."""

    subject: ClientSubject
    serial: str
    not_after: float  # epoch seconds
    fingerprint: str  # SHA-256 of the DER, hex (RFC 8705's x5t#S256 is its base64url)

    def as_record(self) -> dict[str, object]:
        return {"subject": self.subject.uri, "serial": self.serial, "not_after": self.not_after}


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def verify_client_chain(
    chain: Sequence[bytes],
    client_ca: x509.Certificate,
    revocations: Revocations,
    now: dt.datetime,
) -> ClientCertificate:
    """Verify a chain as presented (leaf first, DER) and return the identity it carries.

    Raise CertificateRefused for anything else: no certificate, too many or too large ones,
    unparsable DER, a chain that does not end at `client_ca`, outside its validity at `now`,
    the wrong key usage, a CA certificate, no or several `regauth:` subjects, a malformed
    subject, a revoked serial or build."""
    if not chain:
        raise CertificateRefused("no client certificate")
    if len(chain) > MAX_CHAIN_CERTIFICATES:
        raise CertificateRefused(f"a chain of {len(chain)} certificates (at most 4)")
    if any(len(c) > MAX_CERTIFICATE_BYTES for c in chain) or sum(map(len, chain)) > (
        MAX_CHAIN_BYTES
    ):
        raise CertificateRefused("client certificate chain too large")
    try:
        certificates = [x509.load_der_x509_certificate(c) for c in chain]
    except ValueError:
        raise CertificateRefused("client certificate is not valid DER X.509") from None
    leaf = certificates[0]
    serial = serial_hex(leaf)
    verifier = (
        PolicyBuilder().store(Store([client_ca])).time(now).max_chain_depth(1)
    ).build_client_verifier()
    try:
        verifier.verify(leaf, certificates[1:])
    except VerificationError as e:
        raise CertificateRefused(_verification_reason(leaf, client_ca, now, e), serial) from None
    except ValueError as e:  # malformed extensions the verifier cannot read
        raise CertificateRefused(f"client certificate refused: {e}", serial) from None
    _check_profile(leaf, serial)
    subject = _subject_of(leaf, serial)
    revoked = revocations.why_revoked(serial, subject.kind, subject.name)
    if revoked:
        raise CertificateRefused(revoked, serial)
    return ClientCertificate(
        subject,
        serial,
        leaf.not_valid_after_utc.timestamp(),
        hashlib.sha256(chain[0]).hexdigest(),
    )


def _verification_reason(
    leaf: x509.Certificate, ca: x509.Certificate, now: dt.datetime, error: Exception
) -> str:
    """Name the classic failures plainly; fall back to the verifier's own words (bounded)."""
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "client certificate is not issued by regauth's client CA"
    if now >= leaf.not_valid_after_utc:
        return f"client certificate expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    if now < leaf.not_valid_before_utc:
        return (
            "client certificate not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} (client or regauth clock wrong?)"
        )
    return f"client certificate refused: {str(error)[:200]}"


def _check_profile(leaf: x509.Certificate, serial: str) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRefused("client certificate has no extended key usage", serial) from None
    if list(eku) != [ExtendedKeyUsageOID.CLIENT_AUTH]:
        raise CertificateRefused(
            "client certificate must have extended key usage clientAuth only", serial
        )
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise CertificateRefused("a CA certificate is not a client identity", serial)


def _subject_of(leaf: x509.Certificate, serial: str) -> ClientSubject:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateRefused("client certificate names no subject", serial) from None
    uris = [
        u
        for u in names.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(URI_SCHEME + ":")
    ]
    if len(uris) != 1:
        raise CertificateRefused(
            f"client certificate must name exactly one regauth: subject ({len(uris)} found)",
            serial,
        )
    try:
        return parse_subject_uri(uris[0])
    except ValueError as e:
        raise CertificateRefused(f"client certificate subject refused: {e}", serial) from None
