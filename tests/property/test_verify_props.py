"""JWTs (tokens.py, jwt_inspect.py): whatever a client sends as a token, or a trusted issuer
signs as claims, verification raises only InvalidToken and the log's reader only ValueError.

Three kinds of input: arbitrary text; well-formed compact JWS with arbitrary JSON (or bytes) in
their segments; and correctly signed tokens (regauth's own key, a trusted HS256 issuer for each
claim shape) with arbitrary headers and claims.
"""

from __future__ import annotations

import json
import math
import string
import time
from pathlib import Path

import jwt
import pytest
from hypothesis import event
from hypothesis import given
from hypothesis import strategies as st

from regauth.ops import pki
from regauth.policy.model import Account
from regauth.policy.model import TrustedIssuer
from regauth.protocol.jwt_inspect import decode_unverified
from regauth.tokens.claims import InvalidToken
from regauth.tokens.issue import ACCESS_TYP
from regauth.tokens.issue import REFRESH_TYP
from regauth.tokens.issue import credential_fingerprint
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyring import KeyRing
from regauth.tokens.verify import TokenVerifier
from regauth.tokens.verify import VerifiedToken
from regauth.tokens.verify import _split
from tests.property.strategies import any_text
from tests.property.strategies import b64url
from tests.property.strategies import json_bytes
from tests.property.strategies import json_scalars
from tests.property.strategies import json_values
from tests.property.strategies import text_from

SERVICE = "registry.test"
ISSUER = "regauth.test"
REFRESH_AUDIENCE = "regauth-refresh:" + SERVICE
SECRET = b"0123456789abcdef0123456789abcdef-hs256"
ACCOUNT = Account("ci", b"$2b$04$" + b"N" * 53, frozenset({"ci"}), {})


def _trusted(claims: str) -> TrustedIssuer:
    return TrustedIssuer(
        issuer=f"legacy-{claims}",
        audience=SERVICE,
        algorithms=("HS256",),
        keys=(SECRET,),
        key_ids=(None,),
        claims=claims,
        action_map={"read": ("pull",), "write": ("pull", "push"), "pull": ("pull",), "*": ("*",)},
        repos_actions=("pull",),
        comment="",
        line=1,
    )


TRUSTED = tuple(_trusted(c) for c in ("access", "repos", "repo_access"))


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    directory: Path = tmp_path_factory.mktemp("certs")
    pki.init_certs(directory)
    return KeyRing(pki.load_signing_keys(directory))


@pytest.fixture(scope="module")
def verifier(keyring: KeyRing) -> TokenVerifier:
    # A tiny cache: verification results must not hide later examples.
    return TokenVerifier(keyring, SERVICE, ISSUER, TRUSTED, cache_size=1)


# -- generators ----------------------------------------------------------------------------------

B64URL = string.ascii_letters + string.digits + "-_"
compact = st.builds(
    lambda segments, signature: ".".join([b64url(s) for s in segments] + [signature]),
    st.lists(json_bytes(), min_size=0, max_size=4),
    text_from(B64URL, 90),
)
token_text = st.one_of(compact, text_from(B64URL + ".=", 500), any_text)

names = st.sampled_from(["a", "public/app", "Bad Name", "", "host:5000/a", "a" * 300]) | text_from(
    string.ascii_lowercase + "/:._-*", 40
)
actions = st.lists(
    st.sampled_from(["pull", "push", "delete", "*", "read", "write", ""]) | json_scalars, max_size=4
)
access_entry = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["repository", "registry", "x"]) | json_scalars,
        "name": names | json_scalars,
        "actions": actions | json_scalars,
        "repository": names | json_scalars,
    },
)
claim_values = {
    "iss": st.sampled_from([ISSUER, *(t.issuer for t in TRUSTED)]) | json_scalars,
    "aud": st.sampled_from([SERVICE, REFRESH_AUDIENCE, [SERVICE]]) | json_values,
    "sub": st.sampled_from(["ci", "", "nobody"]) | json_scalars,
    "exp": st.sampled_from(
        [
            int(time.time()) + 300,
            time.time() + 300.5,
            0,
            253402300799,
            253402300800,
            math.inf,
            -math.inf,
            math.nan,
            10**30,
            "300",
            True,
        ]
    )
    | json_scalars,
    "nbf": st.sampled_from([int(time.time()) - 1, math.nan, math.inf, -1]) | json_scalars,
    "iat": st.sampled_from([int(time.time()), math.nan, 10**400]) | json_scalars,
    "jti": st.text(max_size=20) | json_scalars,
    "access": st.lists(access_entry | json_values, max_size=4) | json_values,
    "repos": st.lists(names | json_scalars, max_size=4) | json_values,
    "repo_access": st.lists(
        names.map(lambda n: f"repository:{n}:read") | access_entry | json_values, max_size=4
    )
    | json_values,
    "cfp": st.sampled_from([credential_fingerprint(ACCOUNT), "é"]) | json_scalars,
}
claims = st.fixed_dictionaries({}, optional=claim_values)
# Mostly past signature, issuer, audience and time checks, so the claim parsers get the input.
_now = int(time.time())
grant_claims = st.fixed_dictionaries(
    {"aud": st.just(SERVICE), "exp": st.just(_now + 300)},
    optional={
        "access": claim_values["access"],
        "repos": claim_values["repos"],
        "repo_access": claim_values["repo_access"],
        "nbf": claim_values["nbf"],
        "iat": claim_values["iat"],
        "sub": claim_values["sub"],
    },
)


def mostly(value: object, other: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """`value` three times in four, else something from `other`."""
    return st.one_of(st.just(value), st.just(value), st.just(value), other)


good_headers = st.fixed_dictionaries(
    {
        "typ": mostly(ACCESS_TYP, st.sampled_from([REFRESH_TYP, "JWT"]) | json_scalars),
        "kid": mostly("own", json_scalars),
    },
    optional={"x5c": st.lists(any_text | json_scalars, max_size=2) | json_scalars | st.just("own")},
)
hostile_headers = st.fixed_dictionaries(
    {},
    optional={
        "typ": json_scalars,
        "kid": json_scalars,
        "x5c": json_values,
        "jwk": json_values,
        "crit": json_values,
        "jku": json_values,
        "x5u": json_values,
    },
)
header_values = st.one_of(good_headers, good_headers, good_headers, hostile_headers)


def _own_headers(keyring: KeyRing, header: dict[str, object]) -> dict[str, object]:
    import base64

    signer = keyring.signer
    out = dict(header)
    if out.get("kid") == "own":
        out["kid"] = libtrust_kid(signer.public_key)
    if out.get("x5c") == "own":
        out["x5c"] = [base64.b64encode(signer.certificate_der()).decode()]
    return out


def _encode(
    payload: dict[str, object], key: object, algorithm: str, headers: dict[str, object]
) -> str:
    """A correctly signed compact JWS of exactly these header and claims values.

    Signed here rather than with jwt.encode, which refuses odd headers (a non-string kid).
    Python's JSON dialect on purpose: NaN and Infinity reach the verifier as a peer could send
    them.
    """
    header = json.dumps({"alg": algorithm, **headers}).encode()
    signing_input = f"{b64url(header)}.{b64url(json.dumps(payload).encode())}"
    signer = jwt.get_algorithm_by_name(algorithm)
    signature = signer.sign(signing_input.encode(), signer.prepare_key(key))
    return f"{signing_input}.{b64url(signature)}"


def _outcome(verifier: TokenVerifier, token: str) -> VerifiedToken | None:
    try:
        return verifier.verify_access(token)
    except InvalidToken as e:
        event(f"refused: {str(e).split(':')[0][:40]}")
        return None


# -- properties -------------------------------------------------------------------------------


@given(token_text)
def test_split_raises_only_invalid_token(token: str) -> None:
    try:
        header, claims_ = _split(token)
    except InvalidToken:
        return
    assert isinstance(header, dict) and isinstance(claims_, dict)


@given(token_text)
def test_verify_access_of_any_text_raises_only_invalid_token(
    verifier: TokenVerifier, token: str
) -> None:
    assert _outcome(verifier, token) is None  # nothing unsigned passes


@given(claims | grant_claims.map(lambda c: {**c, "iss": ISSUER}), header_values)
def test_verify_access_of_signed_tokens_raises_only_invalid_token(
    keyring: KeyRing, verifier: TokenVerifier, payload: dict[str, object], header: dict[str, object]
) -> None:
    signer = keyring.signer
    token = _encode(payload, signer.private_key, signer.algorithm, _own_headers(keyring, header))
    verified = _outcome(verifier, token)
    event("verified" if verified else "refused")
    if verified is not None:
        assert verified.source == "regauth"
        assert isinstance(verified.expires_at, int)
        assert 0 <= verified.expires_at <= 253402300799


@given(grant_claims, st.sampled_from(TRUSTED))
def test_trusted_issuer_tokens_raise_only_invalid_token(
    verifier: TokenVerifier, payload: dict[str, object], trusted: TrustedIssuer
) -> None:
    payload = {**payload, "iss": trusted.issuer}
    verified = _outcome(verifier, _encode(payload, SECRET, "HS256", {}))
    event(f"{trusted.claims}: {'verified' if verified else 'refused'}")
    if verified is not None:
        assert verified.source == trusted.issuer
        assert (
            all(g.type in ("repository", "registry") for g in verified.grants)
            or trusted.claims == "access"
        )


@given(st.one_of(token_text, st.builds(lambda p, h: (p, h), claims, header_values)))
def test_verify_refresh_raises_only_invalid_token(
    keyring: KeyRing, verifier: TokenVerifier, value: object
) -> None:
    if isinstance(value, tuple):
        payload, header = value
        header = {**_own_headers(keyring, header), "typ": REFRESH_TYP}
        value = _encode(payload, keyring.signer.private_key, keyring.signer.algorithm, header)
    assert isinstance(value, str)
    try:
        account = verifier.verify_refresh(value, REFRESH_AUDIENCE, {"ci": ACCOUNT})
    except InvalidToken:
        return
    assert account is ACCOUNT


@given(token_text)
def test_decode_unverified_raises_only_value_error(token: str) -> None:
    try:
        decoded = decode_unverified(token)
    except ValueError:
        return
    assert set(decoded) == {"header", "claims", "signature_bytes"}
    json.dumps(decoded, allow_nan=False)  # fit for the exchange log as it is
