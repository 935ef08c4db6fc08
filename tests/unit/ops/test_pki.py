"""The certs directory (`regauth.ops.pki`): what `certs init` writes and never overwrites, the
one algorithm each key may sign with, signing keys loaded oldest first with their private keys
checked (permissions, match), rotation names, fingerprints and the registry's bundle."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from regauth.ops import pki


def test_init_never_overwrites(tmp_path):
    first = pki.init_certs(tmp_path)
    assert {p.name for p in first} == {
        "mitmproxy-ca.pem",
        "ca.crt",
        "token-signing.key",
        "token-signing.crt",
        "client-ca.key",  # the client CA (ops/client_ca.py): certs/private/, certs/clients/
    }
    assert tmp_path / "clients" / "ca.crt" in first
    before = {p: p.read_bytes() for p in first}
    assert pki.init_certs(tmp_path) == []
    assert all(p.read_bytes() == data for p, data in before.items())
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "private").iterdir())
    assert not list(tmp_path.glob("*.key"))  # certs/ stays usable as skopeo's cert dir


def test_a_ca_certificate_without_its_key_is_refused(tmp_path):
    pki.init_certs(tmp_path)
    (tmp_path / "private" / pki.MITMPROXY_CA).unlink()
    with pytest.raises(ValueError, match="exists but its key .* is missing"):
        pki.init_certs(tmp_path)


def test_a_missing_ca_crt_is_written_again_from_the_key_file(tmp_path):
    pki.init_certs(tmp_path)
    before = (tmp_path / pki.CA_CERT).read_bytes()
    (tmp_path / pki.CA_CERT).unlink()
    assert pki.init_certs(tmp_path) == [tmp_path / pki.CA_CERT]
    assert (tmp_path / pki.CA_CERT).read_bytes() == before


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(), "RS256"),
    ],
)
def test_each_key_signs_with_one_algorithm(key, algorithm):
    assert pki.algorithm_for(key) == algorithm


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (ec.generate_private_key(ec.SECP384R1()).public_key(), "unsupported EC curve secp384r1"),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
            "RSA keys below 2048 bits",
        ),
    ],
)
def test_other_keys_are_refused(key, message):
    with pytest.raises(ValueError, match=message):
        pki.algorithm_for(key)


def test_keys_load_oldest_first_with_their_private_keys(tmp_path):
    pki.init_certs(tmp_path)
    time.sleep(1.1)  # a distinct not-before second
    pki.rotate_signing_key(tmp_path, "RS256")
    old, new = pki.load_signing_keys(tmp_path)
    assert old.name == "token-signing" and re.fullmatch(r"token-signing-\d{8}T\d{6}Z", new.name)
    assert (old.algorithm, new.algorithm) == ("ES256", "RS256")
    assert old.private_key is not None and old.not_before < new.not_before
    assert abs(new.created - time.time()) < 60
    bundle = pki.bundle_pem([old, new])
    assert bundle.count("BEGIN CERTIFICATE") == 2 and "PRIVATE" not in bundle
    (tmp_path / "private" / f"{new.name}.key").unlink()
    assert pki.load_signing_keys(tmp_path)[1].private_key is None  # verifies only


def test_the_fingerprint_is_what_openssl_shows(tmp_path):
    pki.init_certs(tmp_path)
    [key] = pki.load_signing_keys(tmp_path)
    shown = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            str(tmp_path / "token-signing.crt"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown == f"sha256 Fingerprint={key.fingerprint()}"


def test_a_key_readable_by_others_or_not_matching_its_certificate_is_refused(tmp_path):
    pki.init_certs(tmp_path)
    key_file = tmp_path / "private" / "token-signing.key"
    key_file.chmod(0o640)
    with pytest.raises(ValueError, match="accessible by other users"):
        pki.load_signing_keys(tmp_path)
    key_file.chmod(0o600)
    other = tmp_path / "other"
    pki.init_certs(other)
    key_file.write_bytes((other / "private" / "token-signing.key").read_bytes())
    with pytest.raises(ValueError, match="does not match"):
        pki.load_signing_keys(tmp_path)
    (tmp_path / "token-signing.crt").write_text("not a certificate")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        pki.load_signing_keys(tmp_path)


def test_new_names_never_collide_and_removal_takes_both_files(tmp_path, monkeypatch):
    pki.init_certs(tmp_path)
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    monkeypatch.setattr(pki, "_now", lambda: moment)
    first = pki.new_signing_name(tmp_path)
    assert first == "token-signing-20260102T030405Z"
    pki.write_signing_pair(tmp_path, first, "ES256")
    assert pki.new_signing_name(tmp_path) == "token-signing-20260102T030405Z-2"
    removed = pki.remove_signing_key(tmp_path, first)
    assert removed == [tmp_path / f"{first}.crt", tmp_path / "private" / f"{first}.key"]
    assert pki.remove_signing_key(tmp_path, first) == []
    assert pki.new_signing_name(tmp_path) == first
    with pytest.raises(ValueError, match="unsupported signing algorithm"):
        pki.rotate_signing_key(tmp_path, "HS256")
