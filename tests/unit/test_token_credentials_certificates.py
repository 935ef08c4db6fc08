"""The token endpoint on a client-certificate connection (issue 23): the certificate decides,
with or without Authorization; credentials for another identity are refused, never merged."""

from __future__ import annotations

import base64
import json

import pytest

from regauth.logins.credentials import Authenticator
from regauth.mtls.identity import ClientCertificate
from regauth.mtls.identity import parse_subject
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import FakeClock
from tests.unit.helpers import build_runtime

RULES = """  - comment: a build owns builds/ID
    account: any
    repository: ["builds/${build}", "builds/${build}/**"]
    actions: [pull, push]
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("policy"),
        certs_dir,
        policy_text(password_hashes, extra_rules=RULES),
    )


def _certificate(kind: str, name: str) -> ClientCertificate:
    return ClientCertificate(parse_subject(kind, name), "abc1", 4e9, "00" * 32)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _ask(runtime, certificate, scopes, authorization=None, method="GET", form=None):
    query = {"service": [SERVICE], "scope": list(scopes)} if method == "GET" else {}
    request = TokenRequest(method, query, form, authorization, "192.0.2.10", certificate)
    return handle_token_request(runtime, Authenticator(clock=FakeClock()), request)


def test_a_build_certificate_gets_its_own_repositories_without_authorization(runtime):
    response = _ask(
        runtime,
        _certificate("build", "b1"),
        ["repository:builds/b1/app:pull,push", "repository:builds/b2/app:pull,push"],
    )
    assert response.status == 200
    body = json.loads(response.body)
    assert body["scope"] == "repository:builds/b1/app:pull,push"
    record = response.record
    assert record["credential"] == "client_certificate"
    assert record["build"] == "b1"
    assert record["certificate_serial"] == "abc1"
    assert record["account"] == "anonymous"


def test_the_same_scopes_without_a_certificate_get_nothing(runtime):
    response = _ask(runtime, None, ["repository:builds/b1/app:pull,push"])
    assert response.status == 200
    assert json.loads(response.body)["scope"] == ""


def test_an_account_certificate_is_the_account(runtime):
    response = _ask(runtime, _certificate("account", "ci"), ["repository:cache/x:push"])
    assert response.status == 200
    assert json.loads(response.body)["scope"] == "repository:cache/x:push"
    assert response.record["account"] == "ci"


def test_an_account_certificate_for_an_account_the_policy_lacks_is_refused(runtime):
    response = _ask(runtime, _certificate("account", "mallory"), ["repository:cache/x:pull"])
    assert response.status == 401
    assert "names account 'mallory', which the policy does not have" in response.body.decode()


@pytest.mark.parametrize(
    ("certificate", "authorization"),
    [
        (("build", "b1"), _basic("ci", PASSWORDS["ci"])),
        (("account", "alice"), _basic("ci", PASSWORDS["ci"])),
        (("account", "ci"), _basic("", "a-refresh-token")),
        (("build", "b1"), "Bearer something"),
    ],
)
def test_credentials_for_another_identity_are_refused_not_merged(
    runtime, certificate, authorization
):
    response = _ask(runtime, _certificate(*certificate), ["repository:cache/x:push"], authorization)
    assert response.status == 401
    assert "credentials for another identity are refused" in response.body.decode()
    assert "granted" not in response.record


def test_the_password_grant_of_another_account_is_refused_too(runtime):
    form = {
        "grant_type": ["password"],
        "client_id": ["containerd"],
        "username": ["ci"],
        "password": [PASSWORDS["ci"]],
        "service": [SERVICE],
        "scope": ["repository:cache/x:push"],
    }
    response = _ask(runtime, _certificate("build", "b1"), [], method="POST", form=form)
    assert response.status == 401
    form["username"] = ["alice"]
    response = _ask(runtime, _certificate("account", "alice"), [], method="POST", form=form)
    assert response.status == 200  # its own name: the certificate decides, nothing is merged
    assert response.record["account"] == "alice"


def test_the_certificates_own_account_in_basic_is_not_a_conflict(runtime):
    response = _ask(
        runtime, _certificate("account", "ci"), ["repository:cache/x:push"], _basic("ci", "wrong")
    )
    # The certificate decides: a password it does not need is not checked (and not counted).
    assert response.status == 200
    assert response.record.get("failed_login_counted") is None
