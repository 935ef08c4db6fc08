"""Issuing access tokens (`regauth.tokens.issue`): the header (alg, typ, both kid forms, x5c),
the claims distribution reads, unique ids, and the signing key's algorithm. Refresh tokens are
issued and checked in test_verify.py (their verification is the interesting half)."""

import pytest

from regauth.ops import pki
from regauth.policy.model import TokenSettings
from regauth.tokens.claims import InvalidToken
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import rfc7638_thumbprint
from regauth.tokens.keyring import KeyRing
from tests.unit.helpers import FakeClock
from tests.unit.helpers import scope
from tests.unit.tokens import jwts
from tests.unit.tokens.jwts import ISSUER
from tests.unit.tokens.jwts import SERVICE


def test_access_token_header(keyring):
    issued = jwts.issuer(keyring).issue_access("ci", [scope("repository:a:pull")])
    header, _, _ = jwts.segments(issued.token)
    signer = keyring.signer
    assert header["alg"] == "ES256"
    assert header["typ"] == "registry-access+jwt"
    assert header["kid"] == libtrust_kid(signer.public_key)
    assert header["x5c"] == [jwts.b64der(signer.certificate)]
    assert "jwk" not in header


def test_kid_is_the_rfc7638_thumbprint_when_configured(keyring):
    issued = jwts.issuer(keyring, kid_format="rfc7638").issue_access("ci", [])
    header, _, _ = jwts.segments(issued.token)
    assert header["kid"] == rfc7638_thumbprint(keyring.signer.public_key)
    assert jwts.verifier(keyring).verify_access(issued.token).subject == "ci"


def test_access_token_claims(keyring):
    clock = FakeClock(1_700_000_000)
    issued = jwts.issuer(keyring, clock=clock, lifetime=120).issue_access(
        "ci", [scope("repository:a/b:push,pull"), scope("registry:catalog:*")]
    )
    _, claims, _ = jwts.segments(issued.token)
    assert claims == {
        "iss": ISSUER,
        "sub": "ci",
        "aud": SERVICE,
        "exp": 1_700_000_120,
        "nbf": 1_699_999_999,
        "iat": 1_700_000_000,
        "jti": issued.jti,
        "access": [
            {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ],
    }
    assert isinstance(claims["aud"], str)
    assert len(issued.jti) >= 16
    assert issued.issued_at == 1_700_000_000
    assert issued.expires_in == 120
    assert issued.claims == claims


def test_jti_is_unique(keyring):
    issuer = jwts.issuer(keyring)
    assert len({issuer.issue_access("ci", []).jti for _ in range(20)}) == 20


def test_anonymous_token_has_an_empty_subject(keyring):
    issued = jwts.issuer(keyring).issue_access("", [])
    assert jwts.segments(issued.token)[1]["sub"] == ""
    assert jwts.verifier(keyring).verify_access(issued.token).subject == ""


def test_issuer_refuses_a_key_of_the_wrong_algorithm(keyring, rs_keyring):
    with pytest.raises(ValueError, match="RS256"):
        jwts.issuer(keyring, algorithm="RS256")
    with pytest.raises(ValueError, match="ES256"):
        jwts.issuer(rs_keyring)


def test_rs256_key_ring(rs_keyring, keyring):
    issued = jwts.issuer(rs_keyring, algorithm="RS256").issue_access(
        "ci", [scope("repository:a:pull")]
    )
    header, _, _ = jwts.segments(issued.token)
    assert header["alg"] == "RS256"
    assert header["kid"] == libtrust_kid(rs_keyring.signer.public_key)
    assert jwts.verifier(rs_keyring).verify_access(issued.token).grants == (
        scope("repository:a:pull"),
    )
    # and the two key rings do not trust each other
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(issued.token)
    es_token = jwts.issuer(keyring).issue_access("ci", []).token
    with pytest.raises(InvalidToken):
        jwts.verifier(rs_keyring).verify_access(es_token)


def test_policy_algorithm_must_match_the_signing_key(tmp_path):
    pki.init_certs(tmp_path)
    ring = KeyRing(pki.load_signing_keys(tmp_path))
    with pytest.raises(ValueError, match="RS256"):
        TokenIssuer(ring, TokenSettings(algorithm="RS256"), "svc", "iss")
