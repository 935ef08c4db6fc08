"""ID token verification against one configured issuer (federation/id_token.py): a good token
gives the identity its subject template and groups claim name; every refusal carries its
reason (`IdTokenRefused.reason`, what `trace` shows), including the classic forgeries: alg
`none`, HS256 "signed" with the JWKS public key's bytes, an EC key under an RSA alg, a token of
issuer A signed with issuer B's key, oversized and deeply nested tokens.

pyjwt checks `exp`/`nbf`/`iat` against the wall clock, so tokens are minted relative to the
time each test runs (never to import time) and `now` is that same instant."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization

from regauth.federation.id_token import MAX_DEPTH
from regauth.federation.id_token import MAX_ID_TOKEN_BYTES
from regauth.federation.id_token import IdTokenRefused
from regauth.federation.id_token import issuer_for
from regauth.federation.id_token import peek
from regauth.federation.id_token import verify_id_token
from regauth.federation.jwks import JwksCache
from regauth.policy.model import FederatedIssuer
from tests.support.oidc_issuer import sign
from tests.unit.federation.idp import AUDIENCE
from tests.unit.federation.idp import ISSUER
from tests.unit.federation.idp import Idp
from tests.unit.federation.idp import github
from tests.unit.helpers import FakeClock


def _issuer(**kw: object) -> FederatedIssuer:
    fields: dict = {
        "name": "github",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_uri": "https://token.actions.example.test/.well-known/jwks",
        "jwks_file": None,
        "ca_file": None,
        "algorithms": ("RS256", "ES256"),
        "leeway": 60,
        "subject": "gh:{repository}",
        "groups_claim": None,
        "max_token_age": 3600,
        "line": 1,
    }
    fields.update(kw)
    return FederatedIssuer(**fields)


@pytest.fixture(scope="module")
def idp() -> Idp:
    idp = Idp()
    idp.add_key("RS256")
    idp.add_key("ES256")
    return idp


@pytest.fixture(scope="module")
def other() -> Idp:
    """Another issuer, with keys of its own."""
    other = Idp(issuer="https://gitlab.example.test")
    other.add_key("RS256")
    return other


class Keys:
    """The idp's key set through a real JwksCache (counting fetches)."""

    def __init__(self, idp: Idp) -> None:
        self.fetches = 0

        def fetch() -> bytes:
            self.fetches += 1
            return idp.jwks()

        self.cache = JwksCache("jwks", fetch, ("RS256", "ES256"), clock=FakeClock())

    def find(self, kid, alg):
        return self.cache.find(kid, alg)


def _rsa(idp: Idp) -> str:
    return next(iter(idp.keys))


def _ec(idp: Idp) -> str:
    return list(idp.keys)[1]


def _verify(token: str, idp: Idp, issuer: FederatedIssuer | None = None, now=None):
    return verify_id_token(token, issuer or _issuer(), Keys(idp), now or time.time)


def _refused(token: str, idp: Idp, issuer: FederatedIssuer | None = None, now=None) -> str:
    with pytest.raises(IdTokenRefused) as e:
        _verify(token, idp, issuer, now)
    assert e.value.issuer in (None, (issuer or _issuer()).name)
    assert token not in str(e.value)
    return e.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(idp: Idp, **claims: object) -> dict:
    issued = int(time.time())
    return {
        "iss": idp.issuer,
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + 300,
        **github(),
        **claims,
    }


def test_a_good_token_names_its_subject_and_groups(idp):
    token = idp.mint(github(teams=["platform", "web"]))
    identity = _verify(token, idp, _issuer(groups_claim="teams"))
    assert identity.issuer == "github"
    assert identity.subject == "gh:acme/app"
    assert identity.groups == ("platform", "web")
    assert identity.claims["repository"] == "acme/app"
    assert identity.expires_at == identity.claims["exp"]


def test_an_es256_token_and_an_audience_list(idp):
    # Several audiences: accepted only when this registry is the authorized party (OIDC Core
    # 3.1.3.7); one audience in a list (Kubernetes) is accepted.
    token = idp.mint({**github(), "aud": ["other", AUDIENCE], "azp": AUDIENCE}, kid=_ec(idp))
    assert _verify(token, idp).subject == "gh:acme/app"
    assert _verify(idp.mint({**github(), "aud": [AUDIENCE]}, kid=_ec(idp)), idp)
    other = idp.mint({**github(), "aud": ["other", AUDIENCE], "azp": "other"}, kid=_ec(idp))
    assert _refused(other, idp) == "wrong-audience"
    assert _refused(idp.mint({**github(), "aud": ["other", AUDIENCE]}, kid=_ec(idp)), idp) == (
        "wrong-audience"
    )


def test_access_tokens_and_non_numeric_times_are_not_id_tokens(idp):
    assert _refused(idp.mint(github(), headers={"typ": "at+jwt"}), idp) == "malformed"
    assert _refused(idp.mint(github(iat="1700000000")), idp) == "malformed"
    assert _refused(idp.mint(github(exp=True)), idp) == "malformed"


def test_a_token_without_kid_verifies_when_the_set_has_one_key_of_its_type(idp):
    body = _payload(idp)
    token = sign({"alg": "RS256", "typ": "JWT"}, body, idp.keys[_rsa(idp)])
    assert _verify(token, idp).subject == "gh:acme/app"
    two = Idp()
    two.add_key("RS256")
    two.add_key("RS256")
    token = sign({"alg": "RS256"}, body, two.keys[_rsa(two)])
    assert _refused(token, two) == "unknown-kid"  # which of the two? refused


def test_not_a_jwt_and_bad_segments_are_malformed(idp):
    assert peek("hunter2") is None and peek("a.b.c") is None
    assert _refused("hunter2", idp) == "malformed"
    good = idp.mint(github())
    head, body, signature = good.split(".")
    assert _refused(f"{head}.{_b64(b'not json')}.{signature}", idp) == "malformed"
    duplicate = b'{"iss":"x","iss":"' + ISSUER.encode() + b'"}'
    assert _refused(f"{head}.{_b64(duplicate)}.{signature}", idp) == "malformed"
    assert _refused(f"{head}.{body}.!!!", idp) == "malformed"


def test_a_kid_that_is_not_a_short_string_is_malformed(idp):
    for kid in (7, "k" * 257, ["a"]):
        token = sign({"alg": "RS256", "kid": kid}, _payload(idp), idp.keys[_rsa(idp)])
        assert _refused(token, idp) == "malformed"


def test_missing_registered_claims_are_malformed(idp):
    key = idp.keys[_rsa(idp)]
    for claim in ("exp", "iat", "sub", "aud"):
        body = _payload(idp)
        del body[claim]
        token = sign({"alg": "RS256", "kid": _rsa(idp)}, body, key)
        assert _refused(token, idp) == "malformed", claim


def test_an_oversized_token_is_refused_before_anything_else(idp):
    token = idp.mint(github(padding="x" * MAX_ID_TOKEN_BYTES))
    with pytest.raises(IdTokenRefused) as e:
        peek(token)
    assert e.value.reason == "too-large"
    assert _refused(token, idp) == "too-large"
    just = idp.mint(github(padding="x" * 100))
    assert len(just) < MAX_ID_TOKEN_BYTES and _verify(just, idp)


def test_a_deeply_nested_token_is_malformed(idp):
    deep = json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)  # one level below the claims object
    token = idp.mint(github(deep=deep))
    assert _refused(token, idp) == "malformed"
    ok = json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert _verify(idp.mint(github(deep=ok)), idp)


def test_issuer_for_picks_the_exact_issuer(idp, other):
    github_issuer = _issuer()
    gitlab = _issuer(name="gitlab", issuer=other.issuer)
    assert issuer_for({"iss": other.issuer}, [github_issuer, gitlab]) is gitlab
    cases: list[dict[str, object]] = [
        {"iss": ISSUER + "/"},
        {"iss": ISSUER.upper()},
        {},
        {"iss": ["x"]},
    ]
    for claims in cases:
        with pytest.raises(IdTokenRefused) as e:
            issuer_for(claims, [github_issuer, gitlab])
        assert e.value.reason == "issuer-not-configured"


def test_a_token_of_another_issuer_is_refused(idp, other):
    assert _refused(other.mint(github()), idp) == "issuer-not-configured"


def test_issuer_a_claims_signed_with_issuer_bs_key(idp, other):
    # B's key under B's kid: A's key set has no such kid (after a refetch).
    forged = idp.mint(github(), kid=_rsa(other), key=other.keys[_rsa(other)])
    assert _refused(forged, idp) == "unknown-kid"
    # B's key under A's kid: the signature does not verify with A's key.
    forged = idp.mint(github(), kid=_rsa(idp), key=other.keys[_rsa(other)])
    assert _refused(forged, idp) == "bad-signature"


def test_alg_none_is_refused(idp):
    token = sign({"alg": "none", "kid": _rsa(idp)}, _payload(idp), None)
    assert token.endswith(".")
    assert _refused(token, idp) == "algorithm-not-allowed"


@pytest.mark.parametrize("allowed", [("RS256", "ES256"), ("HS256", "RS256", "ES256")])
def test_hs256_signed_with_the_public_key_bytes_is_refused(idp, allowed):
    """Even an allow-list that (wrongly) names HS256 finds no HMAC key in a JWK Set."""
    kid = _rsa(idp)
    public = idp.keys[kid].public_key()
    for encoding, fmt in [
        (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]:
        secret = public.public_bytes(encoding, fmt)
        token = sign({"alg": "HS256", "kid": kid}, _payload(idp), secret)
        reason = _refused(token, idp, _issuer(algorithms=allowed))
        assert reason == ("algorithm-not-allowed" if "HS256" not in allowed else "unknown-kid")


def test_an_algorithm_outside_the_allow_list_is_refused(idp):
    token = idp.mint(github(), kid=_rsa(idp), alg="RS512")
    assert _refused(token, idp) == "algorithm-not-allowed"
    token = idp.mint(github(), kid=_ec(idp))
    assert _refused(token, idp, _issuer(algorithms=("RS256",))) == "algorithm-not-allowed"
    no_alg = idp.mint(github()).split(".")
    header = _b64(json.dumps({"kid": _rsa(idp), "typ": "JWT"}).encode())
    assert _refused(f"{header}.{no_alg[1]}.{no_alg[2]}", idp) == "algorithm-not-allowed"


def test_an_es256_key_under_an_rs256_alg_is_refused(idp):
    # The EC key's kid with alg RS256: no RSA key of that kid (key-type confusion).
    token = sign({"alg": "RS256", "kid": _ec(idp)}, _payload(idp), idp.keys[_rsa(idp)])
    assert _refused(token, idp) == "unknown-kid"
    # And the other way round: ES256 under the RSA key's kid.
    token = sign({"alg": "ES256", "kid": _rsa(idp)}, _payload(idp), idp.keys[_ec(idp)])
    assert _refused(token, idp) == "unknown-kid"


def test_an_unknown_kid_refetches_once_then_refuses(idp):
    keys = Keys(idp)
    keys.cache.refresh()  # the background prefetch
    token = idp.mint(github(), headers={"kid": "rotated-away"})
    with pytest.raises(IdTokenRefused) as e:
        verify_id_token(token, _issuer(), keys, time.time)
    assert e.value.reason == "unknown-kid" and "rotated-away" in str(e.value)
    assert keys.fetches == 2  # the prefetch, and one refetch for the unknown kid
    with pytest.raises(IdTokenRefused):
        verify_id_token(token, _issuer(), keys, time.time)
    assert keys.fetches == 2


def test_a_tampered_token_has_a_bad_signature(idp):
    head, _, signature = idp.mint(github()).split(".")
    body = _b64(json.dumps(_payload(idp, repository="acme/other")).encode())
    assert _refused(f"{head}.{body}.{signature}", idp) == "bad-signature"


def test_the_audience_must_be_the_configured_one(idp):
    for aud in ("https://other.example.test", [AUDIENCE + "/"], "sts.amazonaws.com"):
        assert _refused(idp.mint({**github(), "aud": aud}), idp) == "wrong-audience"


def test_expired_and_not_yet_valid_within_the_leeway(idp):
    now = time.time()
    expired = idp.mint(github(), now=now - 400, lifetime=300)  # exp 100 s ago
    assert _refused(expired, idp) == "expired"
    assert _verify(expired, idp, _issuer(leeway=120))  # within a 120 s leeway
    early = idp.mint({**github(), "nbf": int(now) + 100})
    assert _refused(early, idp) == "not-yet-valid"
    assert _verify(early, idp, _issuer(leeway=120))
    future = idp.mint(github(), now=now + 100)  # iat and nbf in the future
    assert _refused(future, idp) == "not-yet-valid"


def test_a_token_issued_too_long_ago_is_too_old(idp):
    now = time.time()
    token = idp.mint(github(), now=now - 3000, lifetime=6000)  # iat 3,000 s ago, still valid
    assert _verify(token, idp, _issuer(max_token_age=3600))
    assert _refused(token, idp, _issuer(max_token_age=2900)) == "too-old"
    assert _verify(token, idp, _issuer(max_token_age=2900, leeway=120))
    # The age counts from the `now` given.
    assert _refused(token, idp, now=lambda: now + 700) == "too-old"


def test_a_subject_template_claim_the_token_lacks(idp):
    token = idp.mint({"sub": "system:serviceaccount:ci:builder"})
    assert _refused(token, idp) == "missing-claim"
    assert _verify(token, idp, _issuer(subject="k8s:{sub}")).subject == (
        "k8s:system:serviceaccount:ci:builder"
    )


def test_verify_checks_the_issuer_it_was_given(idp, other):
    # issuer_for picked `github`, yet the token says otherwise: refused, not verified.
    assert _refused(other.mint(github()), idp, _issuer()) == "issuer-not-configured"
