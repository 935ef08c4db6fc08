"""Who asks in `policy test` cases (`regauth.tools.identities`): each kind of identity parses
strictly and resolves to the `Identity` the token service would decide for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from regauth.policy.load import load_policy_text
from regauth.policy.model import Identity
from regauth.tools import identities
from regauth.tools.identities import CaseIdentity

HASH = "$2b$04$" + "a" * 53
POLICY = f"""version: 1
service: s
accounts:
  ci: {{password_hash: "{HASH}", groups: [ci], labels: {{team: [infra]}}}}
rules:
  - account: any
    repository: "public/**"
    actions: [pull]
"""


@pytest.fixture
def policy(tmp_path: Path):
    return load_policy_text(POLICY, "p.yaml", tmp_path, {}, secret_notes=[])


@pytest.mark.parametrize(
    ("value", "case", "shown"),
    [
        ("anonymous", CaseIdentity(), "anonymous"),
        ({"account": "ci"}, CaseIdentity(account="ci"), "ci"),
        (
            {"subject": "eve", "groups": ["release"], "labels": {"team": "web"}},
            CaseIdentity(subject="eve", groups=("release",), labels={"team": ("web",)}),
            "subject eve [group release; team=web]",
        ),
        (
            {"client_certificate": "regauth:build:b1"},
            CaseIdentity(client_certificate="regauth:build:b1"),
            "build b1",
        ),
        (
            {"client_certificate": "regauth:account:ci"},
            CaseIdentity(client_certificate="regauth:account:ci"),
            "ci (client certificate)",
        ),
    ],
)
def test_each_kind_parses(value, case, shown) -> None:
    parsed = identities.parse(value)
    assert parsed == case
    assert parsed.describe() == shown


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nobody", "identity must be `anonymous` or a mapping"),
        ({}, "exactly one of account, subject, client_certificate"),
        ({"account": "ci", "subject": "x"}, "exactly one of"),
        ({"acount": "ci"}, "unknown identity key 'acount'"),
        ({"account": "ci", "groups": ["x"]}, "groups and labels go with `subject:`"),
        ({"subject": "authenticated"}, "is not an account name"),
        ({"subject": "eve", "groups": [1]}, "groups must be a list of names"),
        ({"subject": "eve", "labels": ["x"]}, "labels must map each label"),
        ({"client_certificate": "regauth:build:../x"}, "build id"),
        ({"client_certificate": "spiffe://x"}, "not a regauth subject URI"),
    ],
)
def test_what_cannot_be_an_identity_is_refused(value, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        identities.parse(value)


def test_resolve_as_the_token_service_would(policy) -> None:
    ci = policy.accounts["ci"]
    assert identities.resolve(CaseIdentity(), policy) == Identity(None)
    assert identities.resolve(CaseIdentity(account="ci"), policy) == Identity(ci)
    certificate = CaseIdentity(client_certificate="regauth:account:ci")
    assert identities.resolve(certificate, policy) == Identity(ci)
    build = CaseIdentity(client_certificate="regauth:build:b1")
    assert identities.resolve(build, policy) == Identity(None, build="b1")
    eve = identities.resolve(CaseIdentity(subject="eve", groups=("release",)), policy)
    assert eve.account is not None and eve.account.name == "eve"
    assert eve.variables() == {"account": ["eve"], "group": ["release"]}
    for case, message in (
        (CaseIdentity(account="mallory"), "account 'mallory' is not in the policy"),
        (CaseIdentity(subject="ci"), "is an account of the policy"),
        (CaseIdentity(client_certificate="regauth:account:bob"), "names account 'bob'"),
    ):
        with pytest.raises(ValueError, match=message):
            identities.resolve(case, policy)


def test_as_json_names_the_kind() -> None:
    assert CaseIdentity().as_json() == {"anonymous": True}
    assert CaseIdentity(subject="eve", groups=("g",)).as_json() == {
        "subject": "eve",
        "groups": ["g"],
        "labels": {},
    }
    assert identities.build_certificate("b1") == "regauth:build:b1"
