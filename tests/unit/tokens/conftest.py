"""Key rings for the token tests: ES256 (`keyring`, from `es_dir`) and RS256 (`rs_keyring`),
and an attacker's key with a self-signed certificate (`foreign`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from regauth.ops import pki
from regauth.tokens.keyring import KeyRing


@pytest.fixture(scope="module")
def es_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("es-certs")
    pki.init_certs(directory)
    return directory


@pytest.fixture(scope="module")
def keyring(es_dir: Path) -> KeyRing:
    return KeyRing(pki.load_signing_keys(es_dir))


@pytest.fixture(scope="module")
def rs_keyring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    directory = tmp_path_factory.mktemp("rs-certs")
    pki.init_certs(directory, "RS256")
    return KeyRing(pki.load_signing_keys(directory))


@pytest.fixture(scope="module")
def foreign() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An attacker's key and self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, pki.create_signing_cert(key, "not regauth")
