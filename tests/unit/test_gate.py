import json

import pytest

from regauth import gate
from regauth.protocol.challenge import parse_challenges
from regauth.tokens.issue import TokenIssuer
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import DIGEST
from tests.unit.helpers import build_runtime
from tests.unit.helpers import scope

REALM = "https://proxy.test:5443/v2/token"


@pytest.fixture(scope="module")
def enforce(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("enforce"), certs_dir, policy_text(password_hashes)
    )


@pytest.fixture(scope="module")
def delegate(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("delegate"),
        certs_dir,
        policy_text(password_hashes, mode="delegate"),
    )


def _token(runtime, *scopes, subject="ci"):
    return "Bearer " + runtime.issuer.issue_access(subject, [scope(s) for s in scopes]).token


def _decide(runtime, method, target, authorization=None):
    return gate.decide(runtime, method, target, authorization, REALM)


def _error(decision):
    return json.loads(decision.body)["errors"][0]


def test_no_token_gets_a_challenge_with_the_scope(enforce):
    decision = _decide(enforce, "GET", "/v2/demo/app/manifests/latest")
    assert not decision.forward
    assert decision.status == 401
    assert decision.headers["WWW-Authenticate"] == (
        f'Bearer realm="{REALM}",service="{SERVICE}",scope="repository:demo/app:pull"'
    )
    assert decision.headers["Content-Type"] == "application/json"
    assert decision.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert _error(decision) == {
        "code": "UNAUTHORIZED",
        "message": "authentication required",
        "detail": [{"Type": "repository", "Name": "demo/app", "Action": "pull"}],
    }
    [challenge] = parse_challenges(decision.headers["WWW-Authenticate"])
    assert challenge.params["scope"] == "repository:demo/app:pull"
    assert decision.route.kind == "manifest"


def test_push_challenge_names_pull_and_push(enforce):
    decision = _decide(enforce, "PUT", "/v2/demo/app/manifests/v1")
    assert decision.headers["WWW-Authenticate"].endswith('scope="repository:demo/app:pull,push"')
    assert [d["Action"] for d in _error(decision)["detail"]] == ["pull", "push"]


def test_ping_challenge_has_no_scope(enforce):
    decision = _decide(enforce, "GET", "/v2/")
    assert decision.status == 401
    assert decision.headers["WWW-Authenticate"] == f'Bearer realm="{REALM}",service="{SERVICE}"'
    assert "detail" not in _error(decision)


def test_ping_with_any_valid_token_is_forwarded(enforce):
    decision = _decide(enforce, "GET", "/v2/", _token(enforce, subject=""))
    assert decision.forward
    assert decision.status == 0
    assert decision.reason == "token grants registry access"


def test_catalog_challenge_and_grant(enforce):
    decision = _decide(enforce, "GET", "/v2/_catalog")
    assert decision.headers["WWW-Authenticate"].endswith('scope="registry:catalog:*"')
    assert _decide(
        enforce, "GET", "/v2/_catalog?n=10", _token(enforce, "registry:catalog:*")
    ).forward


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Bearer ",
        "Bearer a.b.c",
        "bearer eyJhbGciOiJub25lIn0.e30.",
        "Bearer " + "x" * 9000,
    ],
)
def test_invalid_token(enforce, authorization):
    decision = _decide(enforce, "GET", "/v2/demo/app/tags/list", authorization)
    assert decision.status == 401
    assert decision.headers["WWW-Authenticate"] == (
        f'Bearer realm="{REALM}",service="{SERVICE}",scope="repository:demo/app:pull",'
        'error="invalid_token"'
    )
    assert _error(decision)["code"] == "UNAUTHORIZED"


def test_tampered_or_foreign_tokens_are_invalid(enforce):
    tampered = _token(enforce, "repository:demo/app:pull")[:-4] + "AAAA"
    foreign = (
        TokenIssuer(enforce.keyring, enforce.policy.token, "another-service", enforce.policy.issuer)
        .issue_access("ci", [scope("repository:demo/app:pull")])
        .token
    )
    refresh = enforce.issuer.issue_refresh(enforce.policy.accounts["ci"])
    for authorization in (tampered, "Bearer " + foreign, "Bearer " + refresh):
        decision = _decide(enforce, "GET", "/v2/demo/app/tags/list", authorization)
        assert decision.status == 401
        assert decision.headers["WWW-Authenticate"].endswith(',error="invalid_token"')
        assert decision.token is None


def test_insufficient_scope_names_the_full_access_the_request_needs(enforce):
    # distribution's answer: every challenge names all the access the route needs (RFC 6750
    # §3), so a client asking for exactly the challenge's scopes gets a token that works.
    target = f"/v2/dst/app/blobs/uploads/?mount={DIGEST}&from=src/app"
    decision = _decide(enforce, "POST", target, _token(enforce, "repository:dst/app:pull,push"))
    assert decision.status == 401
    assert decision.headers["WWW-Authenticate"] == (
        f'Bearer realm="{REALM}",service="{SERVICE}",'
        'scope="repository:dst/app:pull,push repository:src/app:pull",'
        'error="insufficient_scope"'
    )
    assert _error(decision)["detail"] == [
        {"Type": "repository", "Name": "dst/app", "Action": "pull"},
        {"Type": "repository", "Name": "dst/app", "Action": "push"},
        {"Type": "repository", "Name": "src/app", "Action": "pull"},
    ]
    assert decision.token is not None
    assert decision.token.subject == "ci"
    # with both grants it passes
    both = _token(enforce, "repository:dst/app:pull,push", "repository:src/app:pull")
    assert _decide(enforce, "POST", target, both).forward


def test_insufficient_scope_for_push_with_a_pull_token(enforce):
    decision = _decide(
        enforce, "PUT", "/v2/demo/app/manifests/v1", _token(enforce, "repository:demo/app:pull")
    )
    assert decision.headers["WWW-Authenticate"].endswith(
        'scope="repository:demo/app:pull,push",error="insufficient_scope"'
    )


def test_token_for_another_repository_is_insufficient(enforce):
    decision = _decide(
        enforce, "GET", "/v2/demo/app/tags/list", _token(enforce, "repository:demo/other:pull")
    )
    assert 'error="insufficient_scope"' in decision.headers["WWW-Authenticate"]


def test_sufficient_token_is_forwarded(enforce):
    authorization = _token(enforce, "repository:demo/app:pull,push")
    decision = _decide(enforce, "PATCH", "/v2/demo/app/blobs/uploads/abc-123", authorization)
    assert decision.forward
    assert decision.route.repository == "demo/app"
    assert decision.token.subject == "ci"
    assert decision.reason == "token grants repository:demo/app:pull,push"
    assert (decision.token.issuer, decision.token.source) == (enforce.policy.issuer, "regauth")


def test_star_grant_allows_delete(enforce):
    decision = _decide(
        enforce,
        "DELETE",
        f"/v2/demo/app/manifests/{DIGEST}",
        _token(enforce, "repository:demo/app:*"),
    )
    assert decision.forward


@pytest.mark.parametrize("scheme", ["Basic Y2k6cGFzcw==", "Digest x", "Token abc", "Basic"])
def test_non_bearer_authorization_gets_a_plain_challenge(enforce, scheme):
    decision = _decide(enforce, "GET", "/v2/demo/app/tags/list", scheme)
    assert decision.status == 401
    assert decision.headers["WWW-Authenticate"] == (
        f'Bearer realm="{REALM}",service="{SERVICE}",scope="repository:demo/app:pull"'
    )
    assert "error" not in parse_challenges(decision.headers["WWW-Authenticate"])[0].params


@pytest.mark.parametrize(
    "path", ["/", "/v1/search", "/token", "/v2x", "/metrics", "/V2/demo/app/tags/list"]
)
def test_non_registry_paths_are_404_in_enforce_mode(enforce, path):
    decision = _decide(enforce, "GET", path)
    assert not decision.forward
    assert decision.status == 404
    assert "WWW-Authenticate" not in decision.headers
    assert _error(decision)["code"] == "UNSUPPORTED"


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("GET", "/v2/demo%2Fapp/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/demo/../app/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/_catalog/", 404, "UNSUPPORTED"),
        ("POST", "/v2/demo/app/manifests/latest", 405, "UNSUPPORTED"),
        ("PUT", "/v2/a/blobs/uploads/x?digest=nope", 400, "DIGEST_INVALID"),
    ],
)
def test_bad_paths_are_refused_before_authentication(enforce, method, target, status, code):
    decision = _decide(enforce, method, target, _token(enforce, "repository:demo/app:*"))
    assert not decision.forward
    assert decision.status == status
    assert _error(decision)["code"] == code
    assert "WWW-Authenticate" not in decision.headers
    assert decision.token is None


def test_delegate_mode_forwards_without_a_token(delegate):
    decision = _decide(delegate, "PUT", "/v2/demo/app/manifests/latest")
    assert decision.forward
    assert decision.route.required_strings == ["repository:demo/app:pull,push"]
    assert decision.reason == "delegated to the upstream registry"


def test_delegate_mode_forwards_non_registry_paths(delegate):
    decision = _decide(delegate, "GET", "/healthz")
    assert decision.forward
    assert decision.route is None


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/v2/demo%2Fapp/manifests/latest", 400),
        ("/v2/demo//app/manifests/latest", 400),
        ("/v2/demo/./app/manifests/latest", 400),
        ("/v2/demo\\app/manifests/latest", 400),
        ("/v2/x/tags/list/", 404),
    ],
)
def test_delegate_mode_still_refuses_non_canonical_paths(delegate, target, status):
    decision = _decide(delegate, "GET", target)
    assert not decision.forward
    assert decision.status == status
    assert "WWW-Authenticate" not in decision.headers


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "Application/X-WWW-Form-Urlencoded ; charset=utf-8",
    ],
)
@pytest.mark.parametrize("runtime_name", ["enforce", "delegate"])
def test_form_bodies_are_refused_on_registry_routes(request, runtime_name, content_type):
    # distribution reads `mount`/`from` with r.FormValue, where a form body wins over the query:
    # a body could name another mount source than the one that was authorized.
    runtime = request.getfixturevalue(runtime_name)
    target = f"/v2/dst/app/blobs/uploads/?mount={DIGEST}&from=dst/other"
    authorization = _token(runtime, "repository:dst/app:pull,push", "repository:dst/other:pull")
    decision = gate.decide(
        runtime,
        "POST",
        target,
        authorization,
        REALM,
        content_types=[content_type] if content_type else [],
    )
    assert not decision.forward
    assert decision.status == 415
    assert _error(decision)["code"] == "UNSUPPORTED"


@pytest.mark.parametrize(
    ("method", "content_type"),
    [
        ("POST", "application/octet-stream"),
        ("POST", None),
        ("PATCH", "application/octet-stream"),
        ("GET", "application/x-www-form-urlencoded"),
    ],
)
def test_other_bodies_pass_the_body_check(enforce, method, content_type):
    target = (
        "/v2/dst/app/blobs/uploads/"
        if method == "POST"
        else "/v2/dst/app/blobs/uploads/abc"
        if method == "PATCH"
        else "/v2/dst/app/tags/list"
    )
    decision = gate.decide(
        enforce,
        method,
        target,
        _token(enforce, "repository:dst/app:pull,push"),
        REALM,
        content_types=[content_type] if content_type else [],
    )
    assert decision.forward


@pytest.mark.parametrize(
    "content_types",
    [
        # mitmproxy would join these into one string that hides the form type from a naive check;
        # Go reads the first.
        ["application/x-www-form-urlencoded", "text/plain"],
        ["text/plain", "application/x-www-form-urlencoded"],
        # Go lower-cases U+0130 to 'i': this is application/x-www-form-urlencoded to Go.
        ["appl\u0130cation/x-www-form-urlencoded"],
    ],
)
def test_content_type_parsing_differences_are_refused(enforce, content_types):
    decision = gate.decide(
        enforce,
        "POST",
        f"/v2/builds/{'a' * 26}/blobs/uploads/",
        None,
        REALM,
        content_types=content_types,
    )
    assert not decision.forward
    assert decision.status == 400


@pytest.mark.parametrize("path", ["/v2%2F_catalog", "/v2%2f", "/%2E%2E/v2/_catalog"])
def test_delegate_mode_refuses_encoded_paths_outside_v2(delegate, path):
    decision = _decide(delegate, "GET", path)
    assert not decision.forward and decision.status == 400
