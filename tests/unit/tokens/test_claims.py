"""The grants a token's claims carry (`regauth.tokens.claims`): distribution's `access` claim, and
trusted issuers' claim shapes mapped to registry actions (`delete` and `*` only when the
issuer's `actions` names them), every list bounded, anything else InvalidToken. Verifying the
tokens that carry them is test_verify.py."""

from __future__ import annotations

import pytest

from regauth.policy.load import load_policy_text
from regauth.policy.model import TrustedIssuer
from regauth.protocol.scope import parse_scope
from regauth.tokens.claims import CLAIM_READERS
from regauth.tokens.claims import MAX_ACCESS_ENTRIES
from regauth.tokens.claims import InvalidToken
from regauth.tokens.claims import access_claim
from regauth.tokens.claims import external_grants
from regauth.tokens.claims import map_actions


def _issuer(claims: str, extra: str = "") -> TrustedIssuer:
    [trusted] = load_policy_text(f"""\
version: 1
service: svc
rules: []
trusted_issuers:
  - issuer: ci-system
    audience: svc
    algorithm: HS256
    secret: "0123456789abcdef0123456789abcdef-hs256"
    claims: {claims}
{extra}""").trusted_issuers
    return trusted


def test_the_access_claim():
    assert access_claim(
        [
            {"type": "repository", "name": "a/b", "actions": ["push", "pull"]},
            {"type": "repository", "name": "c", "actions": []},  # grants nothing
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ]
    ) == (parse_scope("repository:a/b:pull,push"), parse_scope("registry:catalog:*"))
    assert access_claim([]) == ()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({}, "malformed access claim"),
        (
            [{"type": "repository", "name": "a", "actions": ["pull"]}] * (MAX_ACCESS_ENTRIES + 1),
            "malformed access claim",
        ),
        (["repository:a:pull"], "malformed access claim entry"),
        (
            [{"type": "repository", "name": "a", "actions": "pull"}],
            "malformed access claim actions",
        ),
        ([{"type": "repository", "name": "a", "actions": [1]}], "malformed access claim actions"),
        ([{"type": "repository", "name": "A", "actions": ["pull"]}], "outside the scope grammar"),
        ([{"type": "repository", "actions": ["pull"]}], "outside the scope grammar"),
    ],
)
def test_a_malformed_access_claim_is_an_invalid_token(value, reason):
    with pytest.raises(InvalidToken, match=reason):
        access_claim(value)


def test_actions_are_mapped_and_destructive_ones_need_naming():
    default = _issuer("repo_access")
    assert default.action_map == {"pull": ("pull",), "push": ("push",)}
    assert map_actions(["push", "read", "pull", "delete", "*", 7], default) == ["push", "pull"]
    explicit = _issuer("repo_access", "    actions: {admin: [pull, push, delete]}\n")
    assert map_actions(["admin"], explicit) == ["pull", "push", "delete"]


def test_each_shape_reads_its_own_claim():
    assert set(CLAIM_READERS) == {"access", "repos", "repo_access"}
    repos = _issuer("repos")
    assert external_grants({"repos": ["team/app"], "access": [{}]}, repos) == (
        parse_scope("repository:team/app:pull"),
    )
    repo_access = _issuer("repo_access")
    assert external_grants(
        {
            "repo_access": [
                "repository:team/app:pull,push",
                "registry:catalog:*",  # never a repository
                {"repository": "team/lib", "actions": ["pull"]},
            ]
        },
        repo_access,
    ) == (parse_scope("repository:team/app:pull,push"), parse_scope("repository:team/lib:pull"))
    access = _issuer("access")
    assert external_grants(
        {"access": [{"type": "repository", "name": "a", "actions": ["pull", "delete"]}]}, access
    ) == (parse_scope("repository:a:pull"),)


@pytest.mark.parametrize(
    ("shape", "claims", "reason"),
    [
        ("repos", {}, "malformed repos claim"),
        ("repos", {"repos": ["UPPER"]}, "repos claim outside the name grammar"),
        ("repos", {"repos": ["a"] * (MAX_ACCESS_ENTRIES + 1)}, "malformed repos claim"),
        ("repo_access", {"repo_access": "a"}, "malformed repo_access claim"),
        ("repo_access", {"repo_access": [7]}, "malformed repo_access entry"),
        ("repo_access", {"repo_access": ["repository:A:pull"]}, "outside the scope grammar"),
        (
            "repo_access",
            {"repo_access": [{"repository": "a", "actions": "pull"}]},
            "malformed repo_access actions",
        ),
        (
            "repo_access",
            {"repo_access": [{"repository": "A", "actions": ["pull"]}]},
            "outside the name grammar",
        ),
    ],
)
def test_malformed_claims_of_each_shape_are_invalid_tokens(shape, claims, reason):
    with pytest.raises(InvalidToken, match=reason):
        external_grants(claims, _issuer(shape))
