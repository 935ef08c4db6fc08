"""The gate in enforce mode on a client-certificate connection (issue 23): the certificate's
identity is a credential of its own on every request, decided by the policy, never merged with
a token's grants; delegate mode leaves every decision to the registry's token check."""

from __future__ import annotations

import pytest

from regauth import gate
from regauth.gate import CertifiedIdentity
from regauth.mtls.identity import ClientCertificate
from regauth.mtls.identity import parse_subject
from regauth.policy.model import Identity
from tests.support.policies import policy_text
from tests.unit.helpers import DIGEST
from tests.unit.helpers import build_runtime
from tests.unit.helpers import scope

REALM = "https://regauth.example/v2/token"
RULES = """  - comment: a build owns builds/ID
    account: any
    repository: ["builds/${build}", "builds/${build}/**"]
    actions: [pull, push]
"""


@pytest.fixture(scope="module")
def enforce(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("enforce"),
        certs_dir,
        policy_text(password_hashes, extra_rules=RULES),
    )


@pytest.fixture(scope="module")
def delegate(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(
        tmp_path_factory.mktemp("delegate"),
        certs_dir,
        policy_text(password_hashes, mode="delegate", extra_rules=RULES),
    )


def _build(name: str) -> CertifiedIdentity:
    certificate = ClientCertificate(parse_subject("build", name), "ab", 4e9, "00")
    return CertifiedIdentity(Identity(None, build=name), certificate)


def _decide(runtime, method, target, authorization=None, certified=None):
    return gate.decide(runtime, method, target, authorization, REALM, None, certified, "10.0.0.1")


def test_a_build_certificate_is_a_credential_for_its_own_repositories(enforce):
    decision = _decide(enforce, "PUT", "/v2/builds/b1/app/manifests/1", None, _build("b1"))
    assert decision.forward
    assert decision.reason == (
        "client certificate (build b1) grants repository:builds/b1/app:pull,push"
    )


def test_not_for_another_builds_and_without_it_nothing_changes(enforce):
    for certified in (_build("b2"), None):
        decision = _decide(enforce, "PUT", "/v2/builds/b1/app/manifests/1", None, certified)
        assert not decision.forward and decision.status == 401
        assert "WWW-Authenticate" in decision.headers


def test_a_token_and_a_certificate_are_never_merged(enforce):
    # A cross-repository mount needs pull on the source and push on the target: the token
    # covers one, the certificate the other, neither both.
    token = "Bearer " + enforce.issuer.issue_access("", [scope("repository:cache/src:pull")]).token
    target = f"/v2/builds/b1/app/blobs/uploads/?mount={DIGEST}&from=cache/src"
    assert not _decide(enforce, "POST", target, token, _build("b1")).forward
    assert not _decide(enforce, "POST", target, None, _build("b1")).forward
    both = enforce.issuer.issue_access(
        "", [scope("repository:cache/src:pull"), scope("repository:builds/b1/app:pull,push")]
    )
    assert _decide(enforce, "POST", target, "Bearer " + both.token, None).forward


def test_delegate_mode_leaves_it_to_the_registry(delegate):
    decision = _decide(delegate, "PUT", "/v2/builds/b2/app/manifests/1", None, _build("b1"))
    assert decision.forward and decision.reason == "delegated to the upstream registry"
