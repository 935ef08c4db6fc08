"""The key ring (`regauth.tokens.keyring`): which key signs (the newest, or the pinned one),
every key indexed under both kid forms and published as JWKS; rotation: several keys trusted,
the newest signs, retired keys stop verifying."""

from __future__ import annotations

import time

import pytest

from regauth.ops import pki
from regauth.policy.model import TokenSettings
from regauth.protocol.scope import parse_scope
from regauth.tokens.claims import InvalidToken
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import rfc7638_thumbprint
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


def test_key_ring_indexes_both_kid_forms_and_publishes_jwks(keyring):
    signer = keyring.signer
    assert keyring.by_kid[libtrust_kid(signer.public_key)] is signer
    assert keyring.by_kid[rfc7638_thumbprint(signer.public_key)] is signer
    jwks = keyring.jwks("rfc7638")
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids == [rfc7638_thumbprint(signer.public_key), libtrust_kid(signer.public_key)]
    assert all(k["alg"] == "ES256" and k["use"] == "sig" and "d" not in k for k in jwks["keys"])


def test_key_ring_errors(es_dir):
    keys = pki.load_signing_keys(es_dir)
    with pytest.raises(ValueError, match="no token-signing keys"):
        KeyRing([])
    with pytest.raises(ValueError, match="not found"):
        KeyRing(keys, pinned="nope")
    assert KeyRing(keys, pinned=keys[0].name).signer is keys[0]
    public_only = [pki.SigningKey(k.name, k.certificate, None) for k in keys]
    with pytest.raises(ValueError, match="no token-signing private key"):
        KeyRing(public_only)
