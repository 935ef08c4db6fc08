"""Verifying tokens (`regauth.tokens.verify`): regauth's own access and refresh tokens, expiry
and leeway, every refusal, the verified-token cache, and trusted external issuers. Hostile
input (nesting, odd numbers, encodings): test_verify_hostile.py; issuing: test_issue.py."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from regauth.policy.load import load_policy_text
from regauth.policy.model import Account
from regauth.policy.model import TokenSettings
from regauth.tokens.claims import InvalidToken
from regauth.tokens.issue import ACCESS_TYP
from regauth.tokens.issue import REFRESH_TYP
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import public_jwk
from regauth.tokens.verify import DEFAULT_LEEWAY
from regauth.tokens.verify import MAX_TOKEN_LENGTH
from regauth.tokens.verify import TokenVerifier
from tests.unit.helpers import FakeClock
from tests.unit.helpers import scope
from tests.unit.tokens import jwts
from tests.unit.tokens.jwts import ISSUER
from tests.unit.tokens.jwts import SERVICE

HASH = b"$2b$04$" + b"N" * 53
SECRET = "0123456789abcdef0123456789abcdef-hs256"


# -- what regauth issues verifies ----------------------------------------------------------


def test_issue_and_verify_round_trip(keyring):
    issued = jwts.issuer(keyring).issue_access("ci", [scope("repository:a:pull,push")])
    verified = jwts.verifier(keyring).verify_access(issued.token)
    assert verified.issuer == ISSUER
    assert verified.subject == "ci"
    assert verified.audience == SERVICE
    assert verified.jti == issued.jti
    assert verified.expires_at == issued.issued_at + issued.expires_in
    assert verified.source == "regauth"
    assert verified.grants == (scope("repository:a:pull,push"),)
    assert verified.allows(scope("repository:a:pull"))
    assert not verified.allows(scope("repository:a:delete"))
    assert not verified.allows(scope("repository:b:pull"))


def test_empty_action_lists_grant_nothing(keyring):
    token = jwts.signed(
        keyring, jwts.claims(access=[{"type": "repository", "name": "a", "actions": []}])
    )
    assert jwts.verifier(keyring).verify_access(token).grants == ()


def test_rs256_token_cannot_be_replayed_as_hs256_with_the_public_key(rs_keyring):
    signer = rs_keyring.signer
    pem = signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": ACCESS_TYP, "kid": libtrust_kid(signer.public_key)}
    signing_input = f"{jwts.b64json(header)}.{jwts.b64json(jwts.claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="algorithm HS256 is not accepted"):
        jwts.verifier(rs_keyring).verify_access(token)


# -- expiry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expired_for", "accepted"),
    [
        (-20, True),  # still valid
        (DEFAULT_LEEWAY - 10, True),  # expired, within the leeway
        (DEFAULT_LEEWAY + 10, False),  # expired beyond the leeway
        (3600, False),
    ],
)
def test_expiry_with_leeway(keyring, expired_for, accepted):
    lifetime = 60
    clock = FakeClock(time.time() - lifetime - expired_for)
    token = jwts.issuer(keyring, clock=clock, lifetime=lifetime).issue_access("ci", []).token
    verifier = jwts.verifier(keyring)
    if accepted:
        assert verifier.verify_access(token).subject == "ci"
    else:
        with pytest.raises(InvalidToken, match="expired"):
            verifier.verify_access(token)


def test_leeway_is_configurable(keyring):
    clock = FakeClock(time.time() - 60 - 20)
    token = jwts.issuer(keyring, clock=clock, lifetime=60).issue_access("ci", []).token
    assert jwts.verifier(keyring, leeway=30).verify_access(token)
    with pytest.raises(InvalidToken, match="expired"):
        jwts.verifier(keyring, leeway=0).verify_access(token)


def test_token_from_the_future_is_refused(keyring):
    clock = FakeClock(time.time() + 3600)
    token = jwts.issuer(keyring, clock=clock).issue_access("ci", []).token
    with pytest.raises(InvalidToken, match="not valid yet"):
        jwts.verifier(keyring).verify_access(token)


def test_token_without_exp_is_refused(keyring):
    claims = jwts.claims()
    del claims["exp"]
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(jwts.signed(keyring, claims))


# -- refusals ------------------------------------------------------------------------------


def test_alg_none_is_refused(keyring):
    header = {"alg": "none", "typ": ACCESS_TYP, "kid": libtrust_kid(keyring.signer.public_key)}
    unsigned = f"{jwts.b64json(header)}.{jwts.b64json(jwts.claims())}."
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(unsigned)
    with pytest.raises(InvalidToken, match="algorithm none"):
        jwts.verifier(keyring).verify_access(unsigned + "AAAA")


def test_hs256_signed_with_the_public_key_pem_is_refused(keyring):
    signer = keyring.signer
    for encoding, fmt in [
        (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]:
        secret = signer.public_key.public_bytes(encoding, fmt)
        header = {
            "alg": "HS256",
            "typ": ACCESS_TYP,
            "kid": libtrust_kid(signer.public_key),
            "x5c": [jwts.b64der(signer.certificate)],
        }
        signing_input = f"{jwts.b64json(header)}.{jwts.b64json(jwts.claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        with pytest.raises(InvalidToken, match="algorithm HS256 is not accepted"):
            jwts.verifier(keyring).verify_access(token)


def test_wrong_audience_is_refused(keyring):
    token = (
        TokenIssuer(keyring, TokenSettings(), "another-service", ISSUER)
        .issue_access("ci", [])
        .token
    )
    with pytest.raises(InvalidToken, match="audience"):
        jwts.verifier(keyring).verify_access(token)


def test_audience_array_is_refused(keyring):
    token = jwts.signed(keyring, jwts.claims(aud=[SERVICE]))
    with pytest.raises(InvalidToken, match="audience"):
        jwts.verifier(keyring).verify_access(token)


def test_wrong_issuer_is_refused(keyring):
    token = (
        TokenIssuer(keyring, TokenSettings(), SERVICE, "someone-else").issue_access("ci", []).token
    )
    with pytest.raises(InvalidToken, match="issuer is not trusted"):
        jwts.verifier(keyring).verify_access(token)


def test_unknown_kid_is_refused(keyring):
    token = jwts.signed(
        keyring,
        jwts.claims(),
        kid="AAAA:BBBB:CCCC:DDDD:EEEE:FFFF:GGGG:HHHH:IIII:JJJJ:KKKK:LLLL",
        x5c=None,
    )
    with pytest.raises(InvalidToken, match="unknown key id"):
        jwts.verifier(keyring).verify_access(token)


def test_token_without_kid_or_x5c_is_refused(keyring):
    token = jwts.signed(keyring, jwts.claims(), kid=None, x5c=None)
    with pytest.raises(InvalidToken, match="unknown key id"):
        jwts.verifier(keyring).verify_access(token)


def test_either_kid_or_x5c_alone_is_enough(keyring):
    assert jwts.verifier(keyring).verify_access(jwts.signed(keyring, jwts.claims(), x5c=None))
    assert jwts.verifier(keyring).verify_access(jwts.signed(keyring, jwts.claims(), kid=None))


@pytest.mark.parametrize("header", ["jwk", "jku", "x5u", "crit"])
def test_key_carrying_headers_are_refused(keyring, foreign, header):
    key, _ = foreign
    value = {
        "jwk": {**public_jwk(key.public_key())},
        "jku": "https://evil.example/jwks.json",
        "x5u": "https://evil.example/cert.pem",
        "crit": ["exp"],
    }[header]
    token = jwt.encode(
        jwts.claims(),
        key,
        algorithm="ES256",
        headers={"typ": ACCESS_TYP, "kid": libtrust_kid(key.public_key()), header: value},
    )
    with pytest.raises(InvalidToken, match=header):
        jwts.verifier(keyring).verify_access(token)


def test_injected_jwk_with_a_trusted_kid_is_refused(keyring, foreign):
    key, _ = foreign
    token = jwt.encode(
        jwts.claims(),
        key,
        algorithm="ES256",
        headers={
            "typ": ACCESS_TYP,
            "kid": libtrust_kid(keyring.signer.public_key),
            "jwk": public_jwk(key.public_key()),
        },
    )
    with pytest.raises(InvalidToken, match="jwk"):
        jwts.verifier(keyring).verify_access(token)


def test_x5c_with_a_foreign_certificate_is_refused(keyring, foreign):
    key, cert = foreign
    for kid in (libtrust_kid(key.public_key()), libtrust_kid(keyring.signer.public_key)):
        token = jwt.encode(
            jwts.claims(),
            key,
            algorithm="ES256",
            headers={"typ": ACCESS_TYP, "kid": kid, "x5c": [jwts.b64der(cert)]},
        )
        with pytest.raises(InvalidToken, match="not a trusted signing certificate"):
            jwts.verifier(keyring).verify_access(token)


def test_trusted_x5c_does_not_make_a_foreign_signature_valid(keyring, foreign):
    key, _ = foreign
    token = jwt.encode(
        jwts.claims(),
        key,
        algorithm="ES256",
        headers={"typ": ACCESS_TYP, "x5c": [jwts.b64der(keyring.signer.certificate)]},
    )
    with pytest.raises(InvalidToken, match="signature"):
        jwts.verifier(keyring).verify_access(token)


@pytest.mark.parametrize("x5c", ["not-a-list", [], [42], ["%%%not-base64%%%"]])
def test_malformed_x5c_is_refused(keyring, x5c):
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(jwts.signed(keyring, jwts.claims(), x5c=x5c))


def test_tampered_payload_is_refused(keyring):
    token = jwts.issuer(keyring).issue_access("ci", [scope("repository:a:pull")]).token
    header, claims, signature = token.split(".")
    widened = jwts.segments(token)[1]
    widened["access"] = [{"type": "repository", "name": "a", "actions": ["*"]}]
    with pytest.raises(InvalidToken, match="signature"):
        jwts.verifier(keyring).verify_access(f"{header}.{jwts.b64json(widened)}.{signature}")


def test_tampered_signature_is_refused(keyring):
    token = jwts.issuer(keyring).issue_access("ci", []).token
    head, _, signature = token.rpartition(".")
    flipped = "B" if signature[10] == "A" else "A"
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(f"{head}.{signature[:10]}{flipped}{signature[11:]}")


def test_oversized_token_is_refused(keyring):
    token = jwts.signed(keyring, jwts.claims(padding="x" * MAX_TOKEN_LENGTH))
    assert len(token) > MAX_TOKEN_LENGTH
    with pytest.raises(InvalidToken, match="longer than"):
        jwts.verifier(keyring).verify_access(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJFUzI1NiJ9..sig",
        "!!!.???.***",
        "e30.e30.c2ln",
        "W10.W10.c2ln",
        "bm90anNvbg.bm90anNvbg.c2ln",
    ],
)
def test_malformed_tokens_are_refused(keyring, token):
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(token)


def test_foreign_typ_is_refused(keyring):
    with pytest.raises(InvalidToken, match="typ"):
        jwts.verifier(keyring).verify_access(jwts.signed(keyring, jwts.claims(), typ="JWT"))


def test_refresh_token_is_not_an_access_token(keyring):
    refresh = jwts.issuer(keyring).issue_refresh(Account("ci", HASH))
    assert jwts.segments(refresh)[0]["typ"] == REFRESH_TYP
    with pytest.raises(InvalidToken, match="not a regauth access token"):
        jwts.verifier(keyring).verify_access(refresh)


def test_refresh_token_with_access_typ_still_fails_on_audience(keyring):
    issuer = jwts.issuer(keyring)
    _, claims, _ = jwts.segments(issuer.issue_refresh(Account("ci", HASH)))
    forged = jwts.signed(keyring, claims)  # same claims, access typ
    with pytest.raises(InvalidToken, match="audience"):
        jwts.verifier(keyring).verify_access(forged)


@pytest.mark.parametrize(
    "access",
    [
        "not-a-list",
        [{"type": "repository", "name": "a", "actions": "pull"}],
        [{"type": "repository", "name": "A", "actions": ["pull"]}],
        [{"type": "repository", "name": "a b", "actions": ["pull"]}],
        [{"type": "repository", "name": "a", "actions": ["pull\r\n"]}],
        ["repository:a:pull"],
    ],
)
def test_malformed_access_claims_are_refused(keyring, access):
    with pytest.raises(InvalidToken):
        jwts.verifier(keyring).verify_access(jwts.signed(keyring, jwts.claims(access=access)))


# -- the verified-token cache --------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    calls = []
    original = TokenVerifier._verify_uncached

    def counting(self, token):
        calls.append(token)
        return original(self, token)

    monkeypatch.setattr(TokenVerifier, "_verify_uncached", counting)
    return calls


def test_second_verification_is_served_from_the_cache(keyring, counted):
    token = jwts.issuer(keyring).issue_access("ci", [scope("repository:a:pull")]).token
    verifier = jwts.verifier(keyring)
    first = verifier.verify_access(token)
    second = verifier.verify_access(token)
    assert first == second
    assert len(counted) == 1
    assert verifier.cache_entries == 1


def test_cache_is_never_used_past_exp(keyring, counted):
    issued = jwts.issuer(keyring, lifetime=60).issue_access("ci", [])
    clock = FakeClock(time.time())
    verifier = jwts.verifier(keyring, clock=clock)
    verifier.verify_access(issued.token)
    clock.now = issued.issued_at + issued.expires_in - 1
    verifier.verify_access(issued.token)
    assert len(counted) == 1
    clock.now = issued.issued_at + issued.expires_in
    verifier.verify_access(issued.token)  # verified afresh (PyJWT's own clock still accepts it)
    assert len(counted) == 2


def test_failures_are_not_cached(keyring, counted):
    verifier = jwts.verifier(keyring)
    for _ in range(3):
        with pytest.raises(InvalidToken):
            verifier.verify_access("a.b.c")
    assert len(counted) == 3
    assert verifier.cache_entries == 0


def test_cache_is_bounded(keyring):
    issuer = jwts.issuer(keyring)
    verifier = jwts.verifier(keyring, cache_size=2)
    for _ in range(5):
        verifier.verify_access(issuer.issue_access("ci", []).token)
    assert verifier.cache_entries == 2


# -- refresh tokens ------------------------------------------------------------------------


def test_refresh_token_claims_and_verification(keyring):
    issuer = jwts.issuer(keyring, refresh_lifetime=3600)
    account = Account("ci", HASH)
    refresh = issuer.issue_refresh(account)
    _, claims, _ = jwts.segments(refresh)
    assert claims["sub"] == "ci"
    assert claims["aud"] == f"regauth-refresh:{SERVICE}" == issuer.refresh_audience
    assert claims["exp"] - claims["iat"] == 3600
    assert "access" not in claims
    assert HASH.decode() not in refresh
    verifier = jwts.verifier(keyring)
    assert verifier.verify_refresh(refresh, issuer.refresh_audience, {"ci": account}) is account


def test_refresh_token_fails_after_a_password_change(keyring):
    issuer = jwts.issuer(keyring)
    refresh = issuer.issue_refresh(Account("ci", HASH))
    changed = {"ci": Account("ci", b"$2b$04$" + b"M" * 53)}
    with pytest.raises(InvalidToken, match="password changed"):
        jwts.verifier(keyring).verify_refresh(refresh, issuer.refresh_audience, changed)


def test_refresh_token_fails_after_the_account_is_removed(keyring):
    issuer = jwts.issuer(keyring)
    refresh = issuer.issue_refresh(Account("ci", HASH))
    with pytest.raises(InvalidToken, match="no longer exists"):
        jwts.verifier(keyring).verify_refresh(
            refresh, issuer.refresh_audience, {"alice": Account("alice", HASH)}
        )


def test_refresh_token_for_another_audience_is_refused(keyring):
    issuer = jwts.issuer(keyring)
    refresh = issuer.issue_refresh(Account("ci", HASH))
    with pytest.raises(InvalidToken, match="audience"):
        jwts.verifier(keyring).verify_refresh(
            refresh, "regauth-refresh:other", {"ci": Account("ci", HASH)}
        )


def test_access_token_is_not_a_refresh_token(keyring):
    issuer = jwts.issuer(keyring)
    access = issuer.issue_access("ci", []).token
    with pytest.raises(InvalidToken, match="not a regauth refresh token"):
        jwts.verifier(keyring).verify_refresh(
            access, issuer.refresh_audience, {"ci": Account("ci", HASH)}
        )


def test_expired_refresh_token_is_refused(keyring):
    clock = FakeClock(time.time() - 7200)
    issuer = jwts.issuer(keyring, clock=clock, lifetime=60, refresh_lifetime=3600)
    refresh = issuer.issue_refresh(Account("ci", HASH))
    with pytest.raises(InvalidToken, match="expired"):
        jwts.verifier(keyring).verify_refresh(
            refresh, issuer.refresh_audience, {"ci": Account("ci", HASH)}
        )


def test_refresh_token_with_a_jwk_header_is_refused(keyring, foreign):
    key, _ = foreign
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "sub": "ci", "aud": f"regauth-refresh:{SERVICE}", "exp": now + 60},
        key,
        algorithm="ES256",
        headers={"typ": REFRESH_TYP, "jwk": public_jwk(key.public_key())},
    )
    with pytest.raises(InvalidToken, match="jwk"):
        jwts.verifier(keyring).verify_refresh(
            token, f"regauth-refresh:{SERVICE}", {"ci": Account("ci", HASH)}
        )


# -- trusted external issuers --------------------------------------------------------------


def _trusted(claims_shape, extra=""):
    text = f"""\
version: 1
service: {SERVICE}
rules: []
trusted_issuers:
  - issuer: ci-system
    audience: {SERVICE}
    algorithm: HS256
    secret: "{SECRET}"
    claims: {claims_shape}
{extra}"""
    return load_policy_text(text).trusted_issuers


def _external(claims, secret=SECRET, algorithm="HS256", **headers):
    now = int(time.time())
    payload = {"iss": "ci-system", "aud": SERVICE, "sub": "job-7", "exp": now + 120, "iat": now}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers or None)


def test_trusted_issuer_with_repos_claim(keyring):
    verifier = jwts.verifier(keyring, _trusted("repos"))
    verified = verifier.verify_access(_external({"repos": ["team/app", "team/lib"]}))
    assert [str(g) for g in verified.grants] == [
        "repository:team/app:pull",
        "repository:team/lib:pull",
    ]
    assert verified.source == "ci-system"
    assert verified.subject == "job-7"


def test_trusted_issuer_with_repos_claim_and_repos_actions(keyring):
    verifier = jwts.verifier(keyring, _trusted("repos", "    repos_actions: [pull, push]\n"))
    verified = verifier.verify_access(_external({"repos": ["team/app"]}))
    assert [str(g) for g in verified.grants] == ["repository:team/app:pull,push"]


def test_trusted_issuer_with_repo_access_claim(keyring):
    extra = "    actions:\n      read: [pull]\n      write: [pull, push]\n      admin: ['*']\n"
    verifier = jwts.verifier(keyring, _trusted("repo_access", extra))
    verified = verifier.verify_access(
        _external(
            {
                "repo_access": [
                    "repository:team/app:read",
                    {"repository": "team/lib", "actions": ["write"]},
                    {"name": "team/doc", "actions": ["read", "unmapped"]},
                    {"repository": "team/none", "actions": ["unmapped"]},
                    "repository:team/own:admin",
                ]
            }
        )
    )
    assert [str(g) for g in verified.grants] == [
        "repository:team/app:pull",
        "repository:team/lib:pull,push",
        "repository:team/doc:pull",
        "repository:team/own:*",
    ]


def test_repo_access_keeps_only_pull_and_push_by_default(keyring):
    # delete and `*` are destructive: an issuer grants them only where `actions` names them.
    verifier = jwts.verifier(keyring, _trusted("repo_access"))
    verified = verifier.verify_access(
        _external(
            {
                "repo_access": [
                    {"repository": "a", "actions": ["pull", "push", "delete", "read"]},
                    "repository:b:*",
                ]
            }
        )
    )
    assert [str(g) for g in verified.grants] == ["repository:a:pull,push"]


@pytest.mark.parametrize(
    "shape,claim",
    [
        ("access", {"access": [{"type": "repository", "name": "a", "actions": ["delete", "*"]}]}),
        ("repo_access", {"repo_access": ["repository:a:delete,*"]}),
    ],
)
def test_issuer_delete_and_star_need_an_explicit_mapping(keyring, shape, claim):
    default = jwts.verifier(keyring, _trusted(shape)).verify_access(_external(claim))
    assert not default.allows(scope("repository:a:delete"))
    assert not default.allows(scope("repository:a:push"))
    mapped = jwts.verifier(keyring, _trusted(shape, '    actions: {delete: delete, "*": "*"}\n'))
    verified = mapped.verify_access(_external(claim))
    assert verified.allows(scope("repository:a:delete"))
    assert verified.allows(scope("repository:a:push"))


def test_repo_access_does_not_turn_other_resource_types_into_repositories(keyring):
    # A trusted issuer's "registry:catalog:*" allows listing the catalog; it must not become
    # full access (push, delete) to a repository that happens to be named "catalog".
    verifier = jwts.verifier(keyring, _trusted("repo_access"))
    try:
        verified = verifier.verify_access(_external({"repo_access": ["registry:catalog:*"]}))
    except InvalidToken:
        return  # refusing the entry is fine too
    assert not verified.allows(scope("repository:catalog:push"))
    assert not verified.allows(scope("repository:catalog:delete"))


def test_trusted_issuer_with_access_claim(keyring):
    verifier = jwts.verifier(keyring, _trusted("access"))
    verified = verifier.verify_access(
        _external({"access": [{"type": "repository", "name": "x", "actions": ["pull"]}]})
    )
    assert verified.grants == (scope("repository:x:pull"),)


def test_trusted_issuer_token_for_another_audience_is_refused(keyring):
    verifier = jwts.verifier(keyring, _trusted("repos"))
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify_access(_external({"repos": ["a"], "aud": "other-api"}))


def test_trusted_issuer_token_with_the_wrong_secret_is_refused(keyring):
    verifier = jwts.verifier(keyring, _trusted("repos"))
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify_access(_external({"repos": ["a"]}, secret="x" * 40))


def test_trusted_issuer_token_with_another_algorithm_is_refused(keyring, foreign):
    verifier = jwts.verifier(keyring, _trusted("repos"))
    key, _ = foreign
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify_access(_external({"repos": ["a"]}, secret=key, algorithm="ES256"))
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify_access(_external({"repos": ["a"]}, secret=SECRET * 2, algorithm="HS512"))


def test_trusted_issuer_expired_token_is_refused(keyring):
    verifier = jwts.verifier(keyring, _trusted("repos"))
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify_access(_external({"repos": ["a"], "exp": int(time.time()) - 3600}))


@pytest.mark.parametrize(
    ("shape", "claims"),
    [
        ("repos", {"repos": "a"}),
        ("repos", {"repos": ["A"]}),
        ("repos", {"repos": ["a:b:c"]}),
        ("repo_access", {"repo_access": {"a": "read"}}),
        ("repo_access", {"repo_access": [42]}),
        ("repo_access", {"repo_access": [{"repository": "a", "actions": "pull"}]}),
        ("repo_access", {"repo_access": [{"repository": "a b", "actions": ["pull"]}]}),
    ],
)
def test_trusted_issuer_malformed_claims_are_refused(keyring, shape, claims):
    verifier = jwts.verifier(keyring, _trusted(shape))
    with pytest.raises(InvalidToken):
        verifier.verify_access(_external(claims))


def test_unknown_issuer_is_refused(keyring):
    verifier = jwts.verifier(keyring, _trusted("repos"))
    with pytest.raises(InvalidToken, match="not trusted"):
        verifier.verify_access(_external({"repos": ["a"], "iss": "other-ci"}))


def _key_file_policy(tmp_path, algorithm, key_line):
    text = f"""\
version: 1
service: {SERVICE}
rules: []
trusted_issuers:
  - issuer: ci-system
    audience: {SERVICE}
    algorithm: {algorithm}
    {key_line}
    claims: repos
"""
    return load_policy_text(text, base_dir=tmp_path).trusted_issuers


def test_trusted_rs256_issuer_from_a_public_key_file(keyring, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "ci.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = jwts.verifier(
        keyring, _key_file_policy(tmp_path, "RS256", "public_key_file: ci.pem")
    )
    token = _external({"repos": ["team/app"]}, secret=key, algorithm="RS256")
    assert [str(g) for g in verifier.verify_access(token).grants] == ["repository:team/app:pull"]
    # the public key is never usable as an HMAC secret
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{jwts.b64json(header)}.{jwts.b64json(jwts.segments(token)[1])}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="algorithm HS256 is not accepted"):
        verifier.verify_access(forged)


def test_trusted_es256_issuer_from_a_jwks_file_selects_by_kid(keyring, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**public_jwk(key.public_key()), "kid": "k1"},
            {**public_jwk(other.public_key()), "kid": "k2"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    verifier = jwts.verifier(keyring, _key_file_policy(tmp_path, "ES256", "jwks_file: jwks.json"))
    good = _external({"repos": ["a"]}, secret=key, algorithm="ES256", kid="k1")
    assert verifier.verify_access(good).source == "ci-system"
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify_access(_external({"repos": ["a"]}, secret=key, algorithm="ES256", kid="k2"))
    with pytest.raises(InvalidToken, match="unknown key id"):
        verifier.verify_access(_external({"repos": ["a"]}, secret=key, algorithm="ES256", kid="k3"))


def test_expiry_follows_the_verifiers_own_clock(keyring):
    clock = FakeClock(float(int(time.time())))
    token = (
        jwts.issuer(keyring, clock=clock, lifetime=60)
        .issue_access("ci", [scope("repository:a:pull")])
        .token
    )
    verifier = jwts.verifier(keyring, clock=clock)
    clock.advance(60 + DEFAULT_LEEWAY)
    assert verifier.verify_access(token).subject == "ci"  # at the edge of the leeway
    fresh = jwts.verifier(keyring, clock=clock)
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        fresh.verify_access(token)
    early = jwts.verifier(keyring, clock=FakeClock(time.time() - 600))
    with pytest.raises(InvalidToken, match="not valid yet"):
        early.verify_access(token)
