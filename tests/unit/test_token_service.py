import base64
import dataclasses
import datetime as dt
import json
import time

import bcrypt
import pytest

from regauth.logins import credentials
from regauth.logins.credentials import Authenticator
from regauth.logins.limits import Limit
from regauth.logins.limits import LoginLimiter
from regauth.policy.model import Account
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from regauth.tokens.claims import InvalidToken
from tests.support.policies import ISSUER
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import BUILD_ID
from tests.unit.helpers import FakeClock
from tests.unit.helpers import build_runtime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(tmp_path_factory.mktemp("policy"), certs_dir, policy_text(password_hashes))


@pytest.fixture
def auth():
    return Authenticator(clock=FakeClock())


@pytest.fixture
def checkpw_calls(monkeypatch):
    calls = []
    original = bcrypt.checkpw

    def counting(password, hashed):
        calls.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(credentials.bcrypt, "checkpw", counting)
    return calls


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(runtime, auth, scopes=(), authorization=None, client_ip="192.0.2.10", **params):
    query = {"service": [SERVICE], "scope": list(scopes)}
    for key, value in params.items():
        query[key] = value if isinstance(value, list) else [value]
    return handle_token_request(
        runtime, auth, TokenRequest("GET", query, None, authorization, client_ip)
    )


def _post(runtime, auth, client_ip="192.0.2.10", **form):
    fields = {"service": [SERVICE], "client_id": ["unit-test"]}
    for key, value in form.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value if isinstance(value, list) else [value]
    return handle_token_request(runtime, auth, TokenRequest("POST", {}, fields, None, client_ip))


def _body(response):
    return json.loads(response.body)


def _grants(runtime, token):
    return [str(g) for g in runtime.verifier.verify_access(token).grants]


def test_get_anonymous(runtime, auth):
    response = _get(runtime, auth, ["repository:public/app:pull"])
    assert response.status == 200
    body = _body(response)
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 120
    issued_at = dt.datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert (
        abs(issued_at.replace(tzinfo=dt.UTC).timestamp() - dt.datetime.now(dt.UTC).timestamp()) < 60
    )
    assert body["scope"] == "repository:public/app:pull"
    assert "refresh_token" not in body
    assert _grants(runtime, body["token"]) == ["repository:public/app:pull"]
    verified = runtime.verifier.verify_access(body["token"])
    assert verified.subject == ""
    assert verified.issuer == ISSUER
    assert verified.audience == SERVICE
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    assert response.record["account"] == "anonymous"
    assert response.record["grant_type"] == "get"
    assert response.jti == verified.jti == response.record["jti"]
    assert verified.expires_at - body["expires_in"] == int(
        dt.datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=dt.UTC)
        .timestamp()
    )


def test_get_anonymous_push_is_not_granted(runtime, auth):
    response = _get(runtime, auth, ["repository:public/app:pull,push"])
    assert response.status == 200
    assert _body(response)["scope"] == "repository:public/app:pull"


def test_get_with_basic_credentials(runtime, auth):
    response = _get(
        runtime,
        auth,
        ["repository:demo/app:pull,push,delete"],
        _basic("ci", PASSWORDS["ci"]),
        account="ci",
    )
    assert response.status == 200
    body = _body(response)
    assert _grants(runtime, body["token"]) == ["repository:demo/app:pull,push,delete"]
    assert runtime.verifier.verify_access(body["token"]).subject == "ci"
    assert response.record["account"] == "ci"
    assert response.record["username"] == "ci"


def test_repeated_and_space_separated_scopes(runtime, auth):
    response = _get(
        runtime,
        auth,
        [
            "repository:cache/a:pull,push repository:public/x:pull",
            "repository:cache/a:delete",
            "registry:catalog:*",
        ],
        _basic("ci", PASSWORDS["ci"]),
    )
    assert response.status == 200
    assert _grants(runtime, _body(response)["token"]) == [
        "repository:cache/a:pull,push",
        "repository:public/x:pull",
        "registry:catalog:*",
    ]
    assert response.record["requested"] == [
        "repository:cache/a:pull,push,delete",
        "repository:public/x:pull",
        "registry:catalog:*",
    ]


def test_get_without_scope_is_a_login(runtime, auth):
    response = _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]))
    assert response.status == 200
    body = _body(response)
    assert body["scope"] == ""
    assert _grants(runtime, body["token"]) == []


def test_post_password_grant(runtime, auth):
    response = _post(
        runtime,
        auth,
        grant_type="password",
        username="alice",
        password=PASSWORDS["alice"],
        scope="repository:teams/web/app:pull,push repository:public/x:pull",
    )
    assert response.status == 200
    body = _body(response)
    assert body["access_token"] == body["token"]
    assert "refresh_token" not in body
    assert _grants(runtime, body["access_token"]) == [
        "repository:teams/web/app:pull,push",
        "repository:public/x:pull",
    ]
    assert response.record["grant_type"] == "password"
    assert response.record["client_id"] == "unit-test"


def test_post_offline_then_refresh_grant_returns_the_same_refresh_token(runtime, auth):
    first = _post(
        runtime,
        auth,
        grant_type="password",
        username="ci",
        password=PASSWORDS["ci"],
        access_type="offline",
        scope="repository:cache/x:pull",
    )
    assert first.status == 200
    refresh = _body(first)["refresh_token"]
    assert first.record["refresh_token_issued"] is True
    second = _post(
        runtime,
        auth,
        grant_type="refresh_token",
        refresh_token=refresh,
        scope="repository:cache/x:pull,push",
    )
    assert second.status == 200
    body = _body(second)
    assert body["refresh_token"] == refresh
    assert second.record["refresh_token_issued"] is False
    assert _grants(runtime, body["access_token"]) == ["repository:cache/x:pull,push"]
    assert runtime.verifier.verify_access(body["access_token"]).subject == "ci"


def test_get_offline_token_returns_a_refresh_token(runtime, auth):
    response = _get(
        runtime,
        auth,
        ["repository:cache/x:pull"],
        _basic("ci", PASSWORDS["ci"]),
        offline_token="true",
        client_id="docker",
    )
    body = _body(response)
    assert response.status == 200
    account = runtime.verifier.verify_refresh(
        body["refresh_token"], runtime.issuer.refresh_audience, runtime.policy.accounts
    )
    assert account.name == "ci"


def test_anonymous_gets_no_refresh_token(runtime, auth):
    response = _get(runtime, auth, ["repository:public/x:pull"], offline_token="true")
    assert response.status == 200
    assert "refresh_token" not in _body(response)


def test_refresh_token_is_not_accepted_as_an_access_token(runtime, auth):
    first = _post(
        runtime,
        auth,
        grant_type="password",
        username="ci",
        password=PASSWORDS["ci"],
        access_type="offline",
    )
    refresh = _body(first)["refresh_token"]
    with pytest.raises(InvalidToken):
        runtime.verifier.verify_access(refresh)


def _assert_refused(response, status, oauth_error=None, code=None):
    assert response.status == status, response.body
    body = _body(response)
    assert "token" not in body and "access_token" not in body
    if oauth_error:
        assert body["error"] == oauth_error
    if code:
        assert body["errors"][0]["code"] == code
    assert response.record["refused"] == body["error_description"]
    return body


def test_wrong_password_is_401_with_basic_challenge(runtime, auth):
    response = _get(runtime, auth, ["repository:cache/x:pull"], _basic("ci", "wrong"))
    _assert_refused(response, 401, "invalid_grant", "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"] == f'Basic realm="{SERVICE}"'


def test_unknown_user_is_401(runtime, auth):
    response = _get(runtime, auth, ["repository:cache/x:pull"], _basic("mallory", "x"))
    _assert_refused(response, 401, "invalid_grant", "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_wrong_password_on_post_is_401(runtime, auth):
    response = _post(runtime, auth, grant_type="password", username="ci", password="nope")
    _assert_refused(response, 401, "invalid_grant")


@pytest.mark.parametrize(
    ("scope_value", "named"),
    [
        ("repository:Bad/Name:pull", "'Bad/Name'"),
        ("repository:a:pull,PUSH", "'pull,PUSH'"),
        ("repository:a", "resourcetype:resourcename:actions"),
        ('repository:a":pull', "'a\"'"),
        ("repository:a\r\nX-Evil: 1:pull", "outside the scope grammar"),
    ],
)
def test_malformed_scope_is_400(runtime, auth, scope_value, named):
    response = _get(runtime, auth, ["repository:public/x:pull", scope_value])
    body = _assert_refused(response, 400, "invalid_scope")
    assert named in body["error_description"]
    assert body["error_description"].startswith("malformed scope")


def test_service_mismatch_is_400(runtime, auth):
    response = _get(runtime, auth, ["repository:public/x:pull"], service="other-registry")
    body = _assert_refused(response, 400, "invalid_request", "DENIED")
    assert SERVICE in body["error_description"]


def test_service_given_twice_with_different_values_is_400(runtime, auth):
    response = _get(runtime, auth, [], service=[SERVICE, "other"])
    _assert_refused(response, 400, "invalid_request")


def test_missing_service_is_accepted(runtime, auth):
    query = {"scope": ["repository:public/x:pull"]}
    response = handle_token_request(runtime, auth, TokenRequest("GET", query, None, None, "::1"))
    assert response.status == 200
    assert runtime.verifier.verify_access(_body(response)["token"]).audience == SERVICE


def test_post_without_client_id_is_400(runtime, auth):
    response = _post(
        runtime,
        auth,
        client_id=None,
        grant_type="password",
        username="ci",
        password=PASSWORDS["ci"],
    )
    body = _assert_refused(response, 400, "invalid_request")
    assert "client_id" in body["error_description"]


@pytest.mark.parametrize("grant_type", ["authorization_code", "client_credentials", "PASSWORD"])
def test_unsupported_grant_type_is_400(runtime, auth, grant_type):
    response = _post(runtime, auth, grant_type=grant_type, username="ci", password=PASSWORDS["ci"])
    _assert_refused(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("grant_type", ["client_credentials", ""])
def test_the_log_names_only_grant_types_regauth_knows(runtime, auth, grant_type):
    # Neither the client's text nor, for an empty one, `get` (which is a GET without one).
    response = _post(runtime, auth, grant_type=grant_type, username="ci", password=PASSWORDS["ci"])
    _assert_refused(response, 400, "unsupported_grant_type")
    assert "grant_type" not in response.record and response.record["method"] == "POST"


def test_missing_grant_type_is_400(runtime, auth):
    response = _post(runtime, auth, username="ci", password=PASSWORDS["ci"])
    _assert_refused(response, 400, "invalid_request")


def test_password_grant_without_password_is_400(runtime, auth):
    response = _post(runtime, auth, grant_type="password", username="ci")
    _assert_refused(response, 400, "invalid_request")


def test_refresh_grant_without_token_is_400(runtime, auth):
    response = _post(runtime, auth, grant_type="refresh_token")
    _assert_refused(response, 400, "invalid_request")


def _refused_refresh_tokens(runtime, auth):
    """One refresh token per way of being wrong, each shaped like a real one."""
    access = _body(_get(runtime, auth, []))["token"]
    good_account = runtime.policy.accounts["ci"]
    long_ago = dataclasses.replace(runtime.issuer, clock=lambda: time.time() - 10**8)
    other_service = dataclasses.replace(runtime.issuer, service="another-registry")
    return {
        "malformed": "garbage",
        "three segments": "a.b.c",
        "expired": long_ago.issue_refresh(good_account),
        "revoked (password changed)": runtime.issuer.issue_refresh(
            Account("ci", b"$2b$04$" + b"x" * 53)
        ),
        "unknown account": runtime.issuer.issue_refresh(Account("bob", good_account.password_hash)),
        "access token (wrong typ)": access,
        "other audience": other_service.issue_refresh(good_account),
    }


def test_refused_refresh_grant_is_400_invalid_grant_without_a_challenge(runtime, auth):
    # RFC 6749 §5.2: an invalid, expired or revoked refresh token is invalid_grant, status 400.
    for case, token in _refused_refresh_tokens(runtime, auth).items():
        response = _post(runtime, auth, grant_type="refresh_token", refresh_token=token)
        _assert_refused(response, 400, "invalid_grant", "UNAUTHORIZED")
        assert "WWW-Authenticate" not in response.headers, case
        assert response.record["credential"] == "refresh_token"
        assert "failed_login_counted" not in response.record


def _refresh_token(runtime, auth):
    response = _get(
        runtime, auth, [], _basic("ci", PASSWORDS["ci"]), offline_token="true", client_id="docker"
    )
    return _body(response)["refresh_token"]


def test_buildkit_presents_the_identity_token_as_basic_with_an_empty_user(runtime):
    # BuildKit after `docker login`: GET /v2/token?scope=... with Basic base64(":" + token),
    # one request per repository. Each is a refresh grant; none is a failed login.
    auth = Authenticator(clock=FakeClock())
    refresh = _refresh_token(runtime, auth)
    for i in range(12):
        response = _get(
            runtime,
            auth,
            [f"repository:cache/base{i}:pull"],
            _basic("", refresh),
            client_ip="192.0.2.50",
        )
        assert response.status == 200, response.body
        body = _body(response)
        assert "refresh_token" not in body  # not asked for (offline_token)
        verified = runtime.verifier.verify_access(body["token"])
        assert verified.subject == "ci"
        assert [str(g) for g in verified.grants] == [f"repository:cache/base{i}:pull"]
        assert response.record["account"] == "ci"
        assert response.record["credential"] == "refresh_token (basic)"
        assert "failed_login_counted" not in response.record
    again = _get(runtime, auth, [], _basic("", refresh), offline_token="true")
    assert _body(again)["refresh_token"] == refresh  # the same token, as the POST grant does


def test_refused_refresh_token_as_basic_on_get_is_401_and_never_a_failed_login(runtime):
    # 401, not 400: BuildKit falls back from GET to the POST grant only on 401/404/405, and
    # the POST's 400 invalid_grant then tells it why. Nothing is counted, whatever the number.
    auth = Authenticator(clock=FakeClock())
    for _ in range(3):
        for case, token in _refused_refresh_tokens(runtime, auth).items():
            response = _get(
                runtime,
                auth,
                ["repository:cache/x:pull"],
                _basic("", token),
                client_ip="192.0.2.51",
            )
            _assert_refused(response, 401, "invalid_grant", "UNAUTHORIZED")
            assert response.headers["WWW-Authenticate"] == f'Basic realm="{SERVICE}"', case
            assert "failed_login_counted" not in response.record
    # ...so the address and the account are as free as before: the first wrong password from
    # there is an ordinary 401, and the right one works.
    wrong = _get(runtime, auth, [], _basic("ci", "wrong"), client_ip="192.0.2.51")
    _assert_refused(wrong, 401, "invalid_grant")
    assert wrong.record["failed_login_counted"] is True
    assert (
        _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="192.0.2.51").status == 200
    )


def test_an_empty_user_name_is_never_a_password_login(runtime, checkpw_calls):
    # Basic ":" + anything is a refresh token or nothing: no bcrypt, no count, no 429 ever.
    auth = Authenticator(clock=FakeClock())
    for i in range(40):
        response = _get(runtime, auth, [], _basic("", f"password-{i}"), client_ip="192.0.2.52")
        _assert_refused(response, 401, "invalid_grant")
    assert checkpw_calls == []


def test_refresh_token_as_basic_must_match_the_account_parameter(runtime, auth):
    refresh = _refresh_token(runtime, auth)
    assert _get(runtime, auth, [], _basic("", refresh), account="ci").status == 200
    response = _get(runtime, auth, [], _basic("", refresh), account="alice")
    _assert_refused(response, 400, "invalid_request")


def test_post_without_a_form_is_400(runtime, auth):
    response = handle_token_request(runtime, auth, TokenRequest("POST", {}, None, None, "::1"))
    _assert_refused(response, 400, "invalid_request")


def test_account_parameter_mismatching_basic_user_is_400(runtime, auth):
    response = _get(
        runtime, auth, ["repository:cache/x:pull"], _basic("ci", PASSWORDS["ci"]), account="alice"
    )
    body = _assert_refused(response, 400, "invalid_request")
    assert "account" in body["error_description"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer abc.def.ghi",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Digest username=x",
    ],
)
def test_unusable_authorization_is_401(runtime, auth, authorization):
    response = _get(runtime, auth, [], authorization)
    _assert_refused(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def _limited_auth(clock, **limits):
    return Authenticator(clock=clock, limiter=LoginLimiter(clock=clock, **limits))


def test_rate_limit_is_429_with_retry_after(runtime):
    clock = FakeClock()
    auth = _limited_auth(clock, per_account_network=Limit(3, 60))
    for i in range(3):
        _assert_refused(
            _get(runtime, auth, [], _basic("ci", f"wrong{i}"), client_ip="198.51.100.9"), 401
        )
    clock.advance(10)
    response = _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="198.51.100.9")
    _assert_refused(response, 429, "slow_down", "TOOMANYREQUESTS")
    assert response.headers["Retry-After"] == "51"
    assert response.record["rate_limited"] == "account and network"
    # other clients are not affected
    assert (
        _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="198.51.100.10").status
        == 200
    )
    # the POST grant shares the limit
    response = _post(
        runtime,
        auth,
        client_ip="198.51.100.9",
        grant_type="password",
        username="ci",
        password="still-wrong",
    )
    assert response.status == 429
    # a login verified moments ago (from .10) is not locked out by the guesses from .9
    assert (
        _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="198.51.100.9").status
        == 200
    )


def test_unknown_names_from_one_address_are_limited_too(runtime):
    auth = _limited_auth(FakeClock(), per_network=Limit(4, 60))
    for i in range(4):
        _assert_refused(
            _get(runtime, auth, [], _basic(f"nobody{i}", "x"), client_ip="198.51.100.20"), 401
        )
    response = _get(runtime, auth, [], _basic("nobody-else", "x"), client_ip="198.51.100.20")
    _assert_refused(response, 429, "slow_down", "TOOMANYREQUESTS")


def test_one_account_attacked_from_many_addresses_hits_a_ceiling(runtime):
    # issue 14: per-address limits alone give a /64 of IPv6 (or a botnet) a fresh allowance
    # per address. With the defaults, 20 failures per account in 5 minutes close it...
    clock = FakeClock()
    auth = Authenticator(clock=clock)
    assert (
        _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="198.51.100.77").status
        == 200
    )  # the real client, earlier
    clock.advance(3600)
    for i in range(20):
        response = _get(runtime, auth, [], _basic("ci", f"guess{i}"), client_ip=f"203.0.113.{i}")
        _assert_refused(response, 401, "invalid_grant")
    response = _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="203.0.113.99")
    _assert_refused(response, 429, "slow_down", "TOOMANYREQUESTS")
    assert response.record["rate_limited"] == "account"
    # ...except from where the account logged in successfully before: no lock-out.
    assert (
        _get(runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="198.51.100.77").status
        == 200
    )
    # Refresh tokens are not logins: clients holding one are never limited.
    refresh = _refresh_token(runtime, auth)
    assert _get(runtime, auth, [], _basic("", refresh), client_ip="203.0.113.99").status == 200


def test_ipv6_addresses_of_one_64_share_one_allowance(runtime):
    auth = Authenticator(clock=FakeClock())
    for i in range(5):
        _assert_refused(
            _get(
                runtime, auth, [], _basic("ci", f"guess{i}"), client_ip=f"2001:db8:7:7::{i + 1:x}"
            ),
            401,
        )
    response = _get(
        runtime, auth, [], _basic("ci", PASSWORDS["ci"]), client_ip="2001:db8:7:7:ffff::1"
    )
    _assert_refused(response, 429, "slow_down", "TOOMANYREQUESTS")


def test_partial_grant_records_each_decision(runtime, auth):
    response = _get(
        runtime,
        auth,
        [
            "repository:public/x:pull,push",
            "repository:private/x:pull",
            f"repository:builds/{BUILD_ID}:pull,push,delete",
            "repository:teams/web/a:pull",
        ],
        _basic("alice", PASSWORDS["alice"]),
    )
    assert response.status == 200
    body = _body(response)
    assert body["scope"] == (
        f"repository:public/x:pull repository:builds/{BUILD_ID}:pull,push "
        "repository:teams/web/a:pull"
    )
    assert _grants(runtime, body["token"]) == body["scope"].split(" ")
    decisions = response.record["decisions"]
    assert decisions[0] == {
        "scope": "repository:public/x:pull,push",
        "granted": ["pull"],
        "outcome": "partial",
        "rule": 3,
        "line": decisions[0]["line"],
        "comment": "anyone pulls the public area",
    }
    assert decisions[1] == {
        "scope": "repository:private/x:pull",
        "granted": [],
        "outcome": "default deny",
        "rule": "default deny",
    }
    assert decisions[2]["rule"] == 4
    assert decisions[2]["granted"] == ["pull", "push"]
    assert decisions[2]["comment"] == "builders push their own build repository"
    assert decisions[3]["rule"] == 5
    assert decisions[3]["outcome"] == "granted"
    assert response.record["granted"] == body["scope"].split(" ")


def test_nothing_granted_is_still_200(runtime, auth):
    response = _get(runtime, auth, ["repository:private/x:pull,push"])
    assert response.status == 200
    body = _body(response)
    assert body["scope"] == ""
    assert _grants(runtime, body["token"]) == []


def test_record_never_holds_the_password_or_tokens(runtime, auth):
    response = _post(
        runtime,
        auth,
        grant_type="password",
        username="ci",
        password=PASSWORDS["ci"],
        access_type="offline",
    )
    text = json.dumps(response.record)
    body = _body(response)
    assert PASSWORDS["ci"] not in text
    assert body["access_token"] not in text
    assert body["refresh_token"] not in text


def test_malformed_scope_message_names_the_whole_scope(runtime, auth):
    response = _get(runtime, auth, ["repository:public/x:pull repository:Bad/Name:pull"])
    body = _assert_refused(response, 400, "invalid_scope")
    assert "'repository:Bad/Name:pull'" in body["error_description"]


def test_only_password_checks_may_block_the_event_loop(runtime, auth):
    from regauth.token_service import may_block

    def get(authorization=None):
        return TokenRequest(
            "GET", {"scope": ["repository:public/a:pull"]}, None, authorization, "10.0.0.1"
        )

    password = _basic("ci", PASSWORDS["ci"])
    assert not may_block(runtime, auth, get())  # anonymous
    assert may_block(runtime, auth, get(password))  # bcrypt to come
    assert handle_token_request(runtime, auth, get(password)).status == 200
    assert not may_block(runtime, auth, get(password))  # cached login
    assert may_block(runtime, auth, get(_basic("ci", "wrong")))  # may run bcrypt
    assert may_block(runtime, auth, get(_basic("nobody", "x")))  # unknown: dummy bcrypt
    assert not may_block(runtime, auth, get(_basic("", "a.b.c")))  # refresh token as Basic
    assert not may_block(runtime, auth, get("Bearer abc"))  # refused, no check
    assert not may_block(runtime, auth, get("Basic !!!"))  # malformed, refused
    form = {"grant_type": ["password"], "username": ["ci"], "password": ["x"], "client_id": ["t"]}
    assert may_block(runtime, auth, TokenRequest("POST", {}, form, None, "10.0.0.1"))
    refresh = {"grant_type": ["refresh_token"], "refresh_token": ["a.b.c"], "client_id": ["t"]}
    assert not may_block(runtime, auth, TokenRequest("POST", {}, refresh, None, "10.0.0.1"))
