"""OIDC ID tokens at the token endpoint (issue 24): as the password of Basic and of the
password grant, and as the subject token of RFC 8693 token exchange; refused with a 401 and a
reason for every classic failure; the identity's claims decide through `issuer:` rules."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from regauth.federation.jwks import IssuerKeySets
from regauth.logins.credentials import Authenticator
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from regauth.token_service import may_block
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.federation.idp import AUDIENCE
from tests.unit.federation.idp import ISSUER
from tests.unit.federation.idp import Idp
from tests.unit.federation.idp import github
from tests.unit.helpers import build_runtime

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"

FEDERATION = f"""federated_issuers:
  - name: github
    issuer: {ISSUER}
    audience: {AUDIENCE}
    jwks_file: jwks.json
    algorithms: [RS256, ES256]
    subject: "gh:{{repository}}"
"""
RULES = """  - comment: acme's main branches push their own repository
    issuer: github
    claims:
      repository: "acme/*"
      ref: refs/heads/main
    repository: "${claims.repository}"
    actions: [pull, push]
  - comment: acme's other branches pull
    issuer: github
    claims:
      repository_owner: acme
    repository: "acme/**"
    actions: [pull]
"""


@pytest.fixture(scope="module")
def idp():
    idp = Idp()
    idp.add_key("RS256")
    return idp


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes, idp):
    directory = tmp_path_factory.mktemp("policy")
    (directory / "jwks.json").write_bytes(idp.jwks())
    return build_runtime(
        directory, certs_dir, policy_text(password_hashes, extra_rules=RULES, top_extra=FEDERATION)
    )


@pytest.fixture
def keys(idp):
    return IssuerKeySets(lambda issuer: idp.jwks)


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(runtime, keys, scopes, authorization):
    auth = Authenticator(federation=keys)
    query = {"service": [SERVICE], "scope": list(scopes)}
    request = TokenRequest("GET", query, None, authorization, "192.0.2.1")
    return handle_token_request(runtime, auth, request), may_block(runtime, auth, request)


def _post(runtime, keys, form):
    auth = Authenticator(federation=keys)
    request = TokenRequest("POST", {}, {k: [v] for k, v in form.items()}, None, "192.0.2.1")
    return handle_token_request(runtime, auth, request)


def test_an_id_token_as_the_basic_password_logs_in_its_subject(runtime, keys, idp):
    token = idp.mint(github())
    response, blocking = _get(
        runtime,
        keys,
        ["repository:acme/app:pull,push", "repository:acme/other:pull,push"],
        _basic("oidc", token),
    )
    assert blocking  # may fetch the key set: off the event loop
    assert response.status == 200, response.body
    body = json.loads(response.body)
    assert body["scope"] == "repository:acme/app:pull,push repository:acme/other:pull"
    access = jwt.decode(body["token"], options={"verify_signature": False})
    assert access["sub"] == "gh:acme/app" and access["aud"] == SERVICE
    record = response.record
    assert record["credential"] == "id_token" and record["username"] == "oidc"
    assert record["federated_issuer"] == "github"
    assert record["federated_subject"] == "gh:acme/app"
    assert record["federated_claims"] == {
        "repository": "acme/app",
        "ref": "refs/heads/main",
        "repository_owner": "acme",
    }
    assert token not in json.dumps(record) and token.split(".")[2] not in json.dumps(record)


def test_the_password_grant_and_token_exchange_accept_it(runtime, keys, idp):
    token = idp.mint(github())
    scope = "repository:acme/app:push"
    password = _post(
        runtime,
        keys,
        {"grant_type": "password", "client_id": "c", "username": "x", "password": token,
         "service": SERVICE, "scope": scope},
    )  # fmt: skip
    assert password.status == 200 and json.loads(password.body)["scope"] == scope
    exchange = _post(
        runtime,
        keys,
        {"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN_TYPE,
         "service": SERVICE, "scope": scope},
    )  # fmt: skip
    body = json.loads(exchange.body)
    assert exchange.status == 200 and body["scope"] == scope
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert exchange.record["grant_type"] == "token_exchange"


def test_token_exchange_needs_an_id_token_type(runtime, keys, idp):
    response = _post(
        runtime,
        keys,
        {"grant_type": EXCHANGE, "subject_token": idp.mint(github()),
         "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"},
    )  # fmt: skip
    assert response.status == 400
    assert json.loads(response.body)["error"] == "invalid_request"


def test_claims_that_match_no_rule_get_nothing_but_public_pulls(runtime, keys, idp):
    token = idp.mint(github(repository="evil/app"))
    response, _ = _get(
        runtime, keys, ["repository:evil/app:push", "repository:public/x:pull"], _basic("o", token)
    )
    assert response.status == 200
    # `account: any` rules apply to everyone; `authenticated` and issuer rules do not.
    assert json.loads(response.body)["scope"] == "repository:public/x:pull"


def test_a_branch_other_than_main_only_pulls(runtime, keys, idp):
    token = idp.mint(github(ref="refs/heads/feature"))
    response, _ = _get(runtime, keys, ["repository:acme/app:pull,push"], _basic("o", token))
    assert json.loads(response.body)["scope"] == "repository:acme/app:pull"


def _refused(runtime, keys, token):
    response, _ = _get(runtime, keys, ["repository:acme/app:pull"], _basic("oidc", token))
    assert response.status == 401, response.body
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    body = json.loads(response.body)
    assert body["errors"][0]["code"] == "UNAUTHORIZED" and body["error"] == "invalid_grant"
    return response.record["id_token_refused"], body["error_description"]


def _forge(header: dict, claims: dict, signature: bytes = b"sig") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def _claims(**extra):
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **github(), **extra}


def test_classic_failures_are_refused_with_their_reason(runtime, keys, idp):
    now = time.time()
    other = Idp(issuer="https://gitlab.example.test")
    other.add_key()
    cases = {
        "wrong-audience": idp.mint(github(aud="https://elsewhere.test")),
        "expired": idp.mint(github(), now=now - 1000, lifetime=300),
        "not-yet-valid": idp.mint(github(nbf=int(now) + 600)),
        "issuer-not-configured": other.mint(github()),
        "unknown-kid": idp.mint(github(), key=other.keys[next(iter(other.keys))], kid="nope"),
        # Issuer A's claims signed with issuer B's key, under A's kid.
        "bad-signature": idp.mint(github(), key=other.keys[next(iter(other.keys))]),
        "algorithm-not-allowed": _forge({"alg": "none", "kid": next(iter(idp.keys))}, _claims()),
        "too-large": idp.mint(github(padding="x" * 9000)),
        "malformed": _forge({"alg": "RS256"}, {"a": [[[[[[[[[[[[1]]]]]]]]]]]], "iss": ISSUER}),
    }
    for reason, token in cases.items():
        got, message = _refused(runtime, keys, token)
        assert got == reason, (reason, got, message)


def test_hs256_signed_with_the_public_key_bytes_is_refused(runtime, keys, idp):
    kid = next(iter(idp.keys))
    public_pem = (
        idp.keys[kid]
        .public_key()
        .public_bytes(  # type: ignore[attr-defined]
            encoding=__import__("cryptography").hazmat.primitives.serialization.Encoding.PEM,
            format=__import__(
                "cryptography"
            ).hazmat.primitives.serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    import hashlib
    import hmac

    header = {"alg": "HS256", "kid": kid, "typ": "JWT"}
    unsigned = _forge(header, _claims()).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    token = unsigned + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert _refused(runtime, keys, token)[0] == "algorithm-not-allowed"


def test_an_unknown_kid_refetches_once_per_interval(runtime, idp):
    fetches = []

    def fetch():
        fetches.append(1)
        return idp.jwks()

    keys = IssuerKeySets(lambda issuer: fetch)
    good = idp.mint(github())
    assert _get(runtime, keys, ["repository:acme/app:pull"], _basic("o", good))[0].status == 200
    assert len(fetches) == 1
    stranger = Idp(issuer=ISSUER)
    stranger.add_key()
    for _ in range(5):
        assert _refused(runtime, keys, stranger.mint(github()))[0] == "unknown-kid"
    assert len(fetches) == 2  # one refetch for five tokens with unknown kids
    assert _get(runtime, keys, ["repository:acme/app:pull"], _basic("o", good))[0].status == 200


def test_without_federated_issuers_a_jwt_password_is_a_password(certs_dir, tmp_path, idp,
                                                               password_hashes):  # fmt: skip
    runtime = build_runtime(tmp_path, certs_dir, policy_text(password_hashes))
    response, _ = _get(runtime, None, ["repository:acme/app:pull"], _basic("ci", idp.mint()))
    assert response.status == 401
    assert response.record["credential"] == "password"


def test_a_refresh_token_lives_no_longer_than_the_id_token(runtime, keys, idp):
    token = idp.mint(github(), lifetime=120)
    auth = Authenticator(federation=keys)
    query = {"service": [SERVICE], "scope": ["repository:acme/app:push"], "offline_token": ["true"]}
    response = handle_token_request(
        runtime, auth, TokenRequest("GET", query, None, _basic("o", token), "192.0.2.1")
    )
    body = json.loads(response.body)
    refresh = body["refresh_token"]
    claims = jwt.decode(refresh, options={"verify_signature": False})
    id_exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert claims["exp"] == id_exp  # not the policy's 7-day refresh lifetime
    # The refresh grant gives the same identity back, without the ID token or its keys.
    form = {"grant_type": ["refresh_token"], "refresh_token": [refresh], "service": [SERVICE],
            "scope": ["repository:acme/app:push"], "client_id": ["c"]}  # fmt: skip
    again = handle_token_request(
        runtime, Authenticator(), TokenRequest("POST", {}, form, None, "192.0.2.1")
    )
    assert again.status == 200, again.body
    assert json.loads(again.body)["scope"] == "repository:acme/app:push"
    assert again.record["federated_subject"] == "gh:acme/app"
    # A password-account refresh path never accepts it as an account's.
    with pytest.raises(Exception, match="identity from an ID token"):
        runtime.verifier.verify_refresh(refresh, runtime.issuer.refresh_audience, {})


def test_a_login_the_queue_refused_is_refused_before_any_verification(runtime, idp):
    """The login queue's refusal holds for ID tokens too (it answers on the event loop:
    nothing there may wait for a key set)."""
    from regauth.logins.limits import RateLimited

    fetched = []
    keys = IssuerKeySets(lambda issuer: lambda: fetched.append(1) or idp.jwks())
    request = TokenRequest(
        "GET",
        {"service": [SERVICE], "scope": ["repository:acme/app:pull"]},
        None,
        _basic("o", idp.mint(github())),
        "192.0.2.1",
    )
    refused = handle_token_request(
        runtime,
        Authenticator(federation=keys),
        request,
        refuse_login=RateLimited(2, "login queue", "the login queue is full; retry after 2 s"),
    )
    assert refused.status == 429 and refused.headers["Retry-After"] == "2"
    assert fetched == [] and refused.record["credential"] == "id_token"


def test_token_exchange_refusals_follow_rfc_8693(runtime, keys, idp):
    token = idp.mint(github())
    base = {"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ID_TOKEN_TYPE}
    bad = _post(runtime, keys, {**base, "subject_token": idp.mint(github(aud="x"))})
    assert bad.status == 400 and json.loads(bad.body)["error"] == "invalid_request"
    assert "WWW-Authenticate" not in bad.headers
    actor = _post(runtime, keys, {**base, "actor_token": token})
    assert json.loads(actor.body)["error"] == "invalid_request"
    kind = _post(runtime, keys, {**base, "requested_token_type": "urn:x"})
    assert json.loads(kind.body)["error"] == "invalid_request"
    target = _post(runtime, keys, {**base, "audience": "https://elsewhere"})
    assert json.loads(target.body)["error"] == "invalid_target"
    ok = _post(runtime, keys, {**base, "audience": SERVICE, "scope": "repository:acme/app:pull"})
    assert ok.status == 200


def test_a_refresh_token_keeps_only_the_claims_the_policy_reads(runtime, keys, idp):
    token = idp.mint(github(padding="x" * 5000))  # a large ID token
    query = {"service": [SERVICE], "scope": ["repository:acme/app:push"], "offline_token": ["true"]}
    response = handle_token_request(
        runtime,
        Authenticator(federation=keys),
        TokenRequest("GET", query, None, _basic("o", token), "192.0.2.1"),
    )
    refresh = json.loads(response.body)["refresh_token"]
    fed = jwt.decode(refresh, options={"verify_signature": False})["fed"]
    assert set(fed["claims"]) == {"repository", "ref", "repository_owner"}
    assert fed["url"] == ISSUER and len(refresh) < 2000


def test_claim_values_that_are_not_repository_paths_bind_nothing(runtime, keys, idp):
    for repository in ("Acme/App", "acme//app", "acme/../x"):
        token = idp.mint(github(repository=repository, repository_owner="acme"))
        response, _ = _get(runtime, keys, ["repository:acme/app:push"], _basic("o", token))
        assert json.loads(response.body)["scope"] == "", repository
