"""Key rotation: several keys trusted, the newest signs, retired keys stop verifying."""

from __future__ import annotations

import time

import pytest

from regauth.ops import pki
from regauth.policy.model import TokenSettings
from regauth.protocol.scope import parse_scope
from regauth.tokens.claims import InvalidToken
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyring import KeyRing
from regauth.tokens.verify import TokenVerifier


def _issuer(certs, pinned=None):
    ring = KeyRing(pki.load_signing_keys(certs), pinned)
    return ring, TokenIssuer(ring, TokenSettings(), "svc", "iss")


def test_newest_key_signs_and_older_tokens_stay_valid(tmp_path):
    pki.init_certs(tmp_path)
    old_ring, old_issuer = _issuer(tmp_path)
    old_token = old_issuer.issue_access("ci", [parse_scope("repository:a:pull")]).token
    time.sleep(1.1)  # distinct not-before second for the new certificate
    pki.rotate_signing_key(tmp_path)
    ring, issuer = _issuer(tmp_path)
    assert len(ring.keys) == 2
    assert ring.signer.name.startswith("token-signing-") and ring.signer is ring.keys[-1]
    new_token = issuer.issue_access("ci", [parse_scope("repository:a:pull")]).token
    verifier = TokenVerifier(ring, "svc", "iss")
    assert verifier.verify_access(old_token).subject == "ci"
    assert verifier.verify_access(new_token).subject == "ci"
    jwks_kids = {k["kid"] for k in ring.jwks("libtrust")["keys"]}
    assert len(jwks_kids) == 4  # two keys, each under both kid forms
    # Retiring the old key (deleting its files) stops its tokens.
    (tmp_path / "token-signing.crt").unlink()
    (tmp_path / "private" / "token-signing.key").unlink()
    retired = TokenVerifier(KeyRing(pki.load_signing_keys(tmp_path)), "svc", "iss")
    with pytest.raises(InvalidToken):
        retired.verify_access(old_token)
    assert retired.verify_access(new_token).subject == "ci"


def test_a_pinned_key_signs(tmp_path):
    pki.init_certs(tmp_path)
    time.sleep(1.1)
    pki.rotate_signing_key(tmp_path)
    ring, _ = _issuer(tmp_path, pinned="token-signing")
    assert ring.signer.name == "token-signing"
    with pytest.raises(ValueError, match="not found"):
        _issuer(tmp_path, pinned="token-signing-nope")


def test_policy_algorithm_must_match_the_signing_key(tmp_path):
    pki.init_certs(tmp_path)
    ring = KeyRing(pki.load_signing_keys(tmp_path))
    with pytest.raises(ValueError, match="RS256"):
        TokenIssuer(ring, TokenSettings(algorithm="RS256"), "svc", "iss")


def test_init_never_overwrites(tmp_path):
    first = pki.init_certs(tmp_path)
    assert {p.name for p in first} == {"mitmproxy-ca.pem", "ca.crt", "token-signing.key",
                                       "token-signing.crt"}
    before = {p: p.read_bytes() for p in first}
    assert pki.init_certs(tmp_path) == []
    assert all(p.read_bytes() == data for p, data in before.items())
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "private").iterdir())
    assert not list(tmp_path.glob("*.key"))  # certs/ stays usable as skopeo's cert dir
