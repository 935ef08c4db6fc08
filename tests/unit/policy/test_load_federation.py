"""The `federated_issuers:` section and the `issuer:` / `claims:` keys of rules
(policy/load_federation.py, through the whole loader): every problem at its file:line:column,
and a valid policy read into the expected model (FederatedIssuer, Rule.issuers/claims)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from regauth.federation.claim_rules import ClaimCondition
from regauth.policy.load import load_policy_text
from regauth.policy.model import FederatedIssuer
from regauth.policy.reader import PolicyError

HASH = "$2b$04$" + "N" * 53
FILE = "p.yaml"
BASE = Path("/policies")

HEAD = f"""\
version: 1
service: svc
accounts:
  ci:
    password_hash: "{HASH}"
"""  # federated_issuers starts on line 6


def issuer_block(**fields: str | None) -> str:
    """One issuer entry (line 7 is `- name:`, then one line per field, in this order)."""
    values: dict[str, str | None] = {
        "name": "github",
        "issuer": "https://token.actions.githubusercontent.com",
        "audience": "https://registry.example.com",
        "jwks_uri": "https://token.actions.githubusercontent.com/.well-known/jwks",
    }
    values.update(fields)
    lines = [f"    {k}: {v}" for k, v in values.items() if v is not None]
    lines[0] = "  - " + lines[0].lstrip()
    return "\n".join(lines) + "\n"


RULE = """\
rules:
  - issuer: github
    repository: "ci/**"
    actions: [pull]
"""


def _load(text: str):
    return load_policy_text(text, file=FILE, base_dir=BASE)


def _errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        _load(text)
    return str(e.value).splitlines()


def _single(text: str) -> str:
    errors = _errors(text)
    assert len(errors) == 1, errors
    return errors[0]


def _with_issuer(**fields: str | None) -> str:
    return HEAD + "federated_issuers:\n" + issuer_block(**fields) + RULE


def test_a_valid_policy_loads_with_the_expected_model():
    text = HEAD + textwrap.dedent("""\
        federated_issuers:
          - name: github
            issuer: https://token.actions.githubusercontent.com
            audience: https://registry.example.com
            jwks_uri: https://token.actions.githubusercontent.com/.well-known/jwks
            algorithms: [RS256, ES256, RS256]
            leeway: 30
            subject: "gh:{repository}@{ref}"
            groups_claim: teams
            max_token_age: 900
            comment: GitHub Actions
          - name: k8s
            issuer: https://kubernetes.default.svc.cluster.local
            audience: regauth
            jwks_file: keys/k8s-jwks.json
            ca_file: /etc/ssl/k8s-ca.pem
        rules:
          - comment: main branches push their own repository
            issuer: github
            claims:
              repository: "acme/*"
              ref: refs/heads/main
              ref_protected: true
              run_attempt: 1
              environment: [prod, "stage-*"]
            repository: "${claims.repository}"
            actions: [pull, push]
          - issuer: [github, k8s]
            claims:
              kubernetes.io/namespace: platform
            repository: "ci/${subject}"
            actions: [pull]
          - account: ci
            repository: "cache/**"
            actions: [pull]
        """)
    policy = _load(text)
    github, k8s = policy.federated_issuers
    assert github == FederatedIssuer(
        "github",
        "https://token.actions.githubusercontent.com",
        "https://registry.example.com",
        "https://token.actions.githubusercontent.com/.well-known/jwks",
        None,
        None,
        ("RS256", "ES256"),
        30,
        "gh:{repository}@{ref}",
        "teams",
        900,
        7,
    )
    assert github.source == github.jwks_uri
    assert (k8s.jwks_uri, k8s.jwks_file, k8s.ca_file) == (
        None,
        str(BASE / "keys/k8s-jwks.json"),
        "/etc/ssl/k8s-ca.pem",
    )
    assert (k8s.algorithms, k8s.leeway, k8s.subject, k8s.groups_claim, k8s.max_token_age) == (
        ("RS256",),
        60,
        "{sub}",
        None,
        3600,
    )
    first, second, third = policy.rules
    assert first.issuers == ("github",) and first.accounts == ()
    assert first.claims == (
        ClaimCondition("repository", ("acme/*",), 26),
        ClaimCondition("ref", ("refs/heads/main",), 27),
        ClaimCondition("ref_protected", ("true",), 28),
        ClaimCondition("run_attempt", ("1",), 29),
        ClaimCondition("environment", ("prod", "stage-*"), 30),
    )
    assert second.issuers == ("github", "k8s")
    assert second.claims == (ClaimCondition("kubernetes.io/namespace", ("platform",), 35),)
    assert (third.issuers, third.claims, third.accounts) == ((), (), ("ci",))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"audience": None},
            "p.yaml:7:5: federated issuer 'github' needs `audience:` (what the ID token's aud "
            "must contain; a token minted for another service must not log in here)",
        ),
        (
            {"issuer": "http://token.actions.githubusercontent.com"},
            "p.yaml:8:13: federated issuer 'github': issuer must be an https URL (the exact iss)",
        ),
        (
            {"jwks_uri": "http://token.actions.githubusercontent.com/jwks"},
            "p.yaml:10:15: federated issuer 'github': jwks_uri must be an https URL",
        ),
        (
            {"jwks_file": "jwks.json"},
            "p.yaml:7:5: federated issuer 'github' needs exactly one of `jwks_uri:` or "
            "`jwks_file:`",
        ),
        (
            {"jwks_uri": None},
            "p.yaml:7:5: federated issuer 'github' needs exactly one of `jwks_uri:` or "
            "`jwks_file:`",
        ),
        (
            {"algorithms": "[RS256, HS256]"},
            "p.yaml:11:25: federated issuer 'github': algorithm 'HS256' is not allowed "
            "(asymmetric only: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, "
            "EdDSA; never none or HMAC)",
        ),
        (
            {"algorithms": "none"},
            "p.yaml:11:17: federated issuer 'github': algorithm 'none' is not allowed "
            "(asymmetric only: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, "
            "EdDSA; never none or HMAC)",
        ),
        (
            {"leeway": "301"},
            "p.yaml:11:13: federated issuer 'github': leeway must be 0-300 seconds",
        ),
        (
            {"leeway": "-1"},
            "p.yaml:11:13: federated issuer 'github': leeway must be 0-300 seconds",
        ),
        (
            {"max_token_age": "59"},
            "p.yaml:11:20: federated issuer 'github': max_token_age must be 60-86400 s",
        ),
        (
            {"subject": "ci"},
            "p.yaml:11:14: federated issuer 'github': subject must name at least one claim, "
            "such as 'ci:{repository}'",
        ),
        (
            {"name": "GitHub"},
            "p.yaml:7:11: federated issuer 'GitHub': the name must be lower-case letters, "
            "digits, '_' or '-'",
        ),
        (
            {"jwks": "https://x.test/jwks"},
            # The allowed keys follow (the list grows with the section).
            "p.yaml:11:5: unknown key 'jwks' in federated issuer 'github' (allowed: algorithms, "
            "audience, ca_file, comment, groups_claim, issuer, jwks_file, jwks_uri, leeway, ",
        ),
    ],
)
def test_issuer_problems_at_their_position(fields, expected):
    first, *rest = _errors(_with_issuer(**fields))
    assert first == expected or expected.endswith(", ") and first.startswith(expected)
    # An entry that cannot be read is not declared: the rule naming it is refused too.
    assert all(r.endswith("unknown issuer 'github' (not under federated_issuers)") for r in rest)


def test_duplicate_issuer_names():
    text = (
        HEAD
        + "federated_issuers:\n"
        + issuer_block()
        + issuer_block(issuer="https://gitlab.example.com")
        + RULE
    )
    assert _single(text) == ("p.yaml:11:1: federated issuer 'github' is declared twice (line 7)")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "  - issuer: github\n    account: ci\n    repository: a\n    actions: [pull]\n",
            "p.yaml:13:5: rule 1: a rule for federated identities (`issuer:`) has no `account:`",
        ),
        (
            "  - account: ci\n    claims: {ref: main}\n    repository: a\n    actions: [pull]\n",
            "p.yaml:13:5: rule 1: `claims:` needs `issuer:` in the same rule",
        ),
        (
            "  - issuer: gitlab\n    repository: a\n    actions: [pull]\n",
            "p.yaml:12:13: rule 1: unknown issuer 'gitlab' (not under federated_issuers)",
        ),
        (
            "  - issuer: [github, gitlab]\n    repository: a\n    actions: [pull]\n",
            "p.yaml:12:22: rule 1: unknown issuer 'gitlab' (not under federated_issuers)",
        ),
        (
            "  - account: ci\n    repository: 'ci/${claims.repository}'\n    actions: [pull]\n",
            "p.yaml:13:17: rule 1: ${claims.repository} needs `issuer:` in the same rule (only "
            "identities from an ID token have claims)",
        ),
        (
            "  - account: any\n    repository: 'ci/${subject}'\n    actions: [pull]\n",
            "p.yaml:13:17: rule 1: ${subject} needs `issuer:` in the same rule (only "
            "identities from an ID token have claims)",
        ),
        (
            "  - issuer: github\n    claims: {'bad claim': x}\n    repository: a\n"
            "    actions: [pull]\n",
            "p.yaml:13:14: rule 1: claim name 'bad claim' is malformed",
        ),
        (
            "  - issuer: github\n    claims: {ref: {a: b}}\n    repository: a\n"
            "    actions: [pull]\n",
            "p.yaml:13:19: rule 1: claim 'ref' must be a value, a glob or a list of them",
        ),
        (
            "  - issuer: github\n    claims: {ref: []}\n    repository: a\n    actions: [pull]\n",
            "p.yaml:13:19: rule 1: claim 'ref' needs 1-64 values",
        ),
        (
            "  - issuer: github\n    claims: [ref]\n    repository: a\n    actions: [pull]\n",
            "p.yaml:13:13: rule 1 claims must be a mapping",
        ),
    ],
)
def test_rule_problems_at_their_position(rule, expected):
    text = HEAD + "federated_issuers:\n" + issuer_block() + "rules:\n" + rule
    assert _single(text) == expected


def test_a_rule_naming_an_issuer_in_a_policy_without_federated_issuers():
    text = HEAD + "rules:\n  - issuer: github\n    repository: a\n    actions: [pull]\n"
    assert _single(text) == (
        "p.yaml:7:13: rule 1: unknown issuer 'github' (not under federated_issuers)"
    )


def _with_rule(rule: str) -> str:
    return HEAD + "federated_issuers:\n" + issuer_block() + "rules:\n" + rule


def test_an_issuer_rule_without_claims_may_not_write_or_read_the_catalog():
    """Every workload of a shared issuer can get a token: such a rule is like anonymous."""
    open_write = '  - issuer: github\n    repository: "ci/**"\n    actions: [pull, push]\n'
    message = _single(_with_rule(open_write))
    assert message.startswith("p.yaml:14:") and "every workload of github" in message
    catalog = "  - issuer: github\n    type: registry\n    name: catalog\n    actions: [pull]\n"
    assert "every workload of github" in _single(_with_rule(catalog))
    # A claim condition, or a pattern bound to the token, makes it specific.
    _load(_with_rule(open_write + "    claims: {repository_owner: acme}\n"))
    bound = '  - issuer: github\n    repository: "${claims.repository}"\n    actions: [push]\n'
    _load(_with_rule(bound))


def test_labels_on_an_issuer_rule_and_two_entries_for_one_issuer_are_refused():
    labelled = (
        "  - issuer: github\n    labels: {team: [web]}\n    claims: {repository_owner: acme}\n"
        '    repository: "web/**"\n    actions: [push]\n'
    )
    assert "labels are accounts'" in " ".join(_errors(_with_rule(labelled)))
    twice = HEAD + "federated_issuers:\n" + issuer_block() + issuer_block(name="again") + RULE
    assert "is also 'github''s" in _single(twice)
