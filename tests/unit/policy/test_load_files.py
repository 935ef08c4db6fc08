"""The shipped policy files, policies/policy.schema.json and the loader agree with each other.

Every policies/*.yaml validates against the schema and loads; documents the loader refuses for
structural reasons are refused by the schema too, and minimal valid documents pass both.
`regauth policy check` reports `file:line:column: message` and exits non-zero on problems.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import bcrypt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jsonschema import Draft202012Validator

from regauth.policy.load import load_policy
from regauth.policy.load import load_policy_text
from regauth.policy.model import Identity
from regauth.policy.reader import PolicyError
from regauth.protocol.scope import parse_scope

ROOT = Path(__file__).resolve().parents[3]
POLICIES = ROOT / "policies"
SCHEMA_PATH = POLICIES / "policy.schema.json"
SHIPPED = sorted(POLICIES.glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=policy.schema.json"
PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<column>\d+): (?P<message>.+)$")

HASH = bcrypt.hashpw(b"test-password", bcrypt.gensalt(4)).decode()
HS_SECRET = "0123456789abcdef0123456789abcdef-hs256"  # 38 bytes
BUILD_ID = "0123456789abcdefghijklmnop"  # 26 characters of [a-z0-9]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def schema_errors(validator: Draft202012Validator, text: str) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(text))
    ]


def environ_for(doc: object) -> dict[str, str]:
    """Values for every `*_env` reference in a policy document, fit for its key."""
    env: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                    if key == "password_hash_env":
                        env[value] = bcrypt.hashpw(
                            b"pw-" + value.encode(), bcrypt.gensalt(4)
                        ).decode()
                    elif key == "secret_env":
                        env[value] = secrets.token_urlsafe(48)
                    elif key == "password_env":
                        env[value] = "upstream-" + secrets.token_hex(8)
                    else:
                        pytest.fail(f"no test value for environment reference {key}: {value}")
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return env


# -- the schema itself ------------------------------------------------------------------------


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_every_schema_property_has_a_description() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    missing = []

    def walk(node: object, path: str, in_condition: bool) -> None:
        if isinstance(node, dict):
            if not in_condition:
                for name, prop in node.get("properties", {}).items():
                    if "description" not in prop:
                        missing.append(f"{path}/properties/{name}")
            for key, value in node.items():
                walk(value, f"{path}/{key}", in_condition or key == "if")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}/{i}", in_condition)

    walk(schema, "#", False)
    assert missing == []


# -- shipped policy files ---------------------------------------------------------------------


def test_the_shipped_policies_are_found() -> None:
    names = {p.name for p in SHIPPED}
    assert {"default.yaml", "example-staging.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_names_the_schema_on_its_first_line(path: Path) -> None:
    assert path.read_text().splitlines()[0] == MODELINE


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_validates_against_the_schema(
    path: Path, validator: Draft202012Validator
) -> None:
    assert schema_errors(validator, path.read_text()) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_loads(path: Path) -> None:
    environ = environ_for(yaml.safe_load(path.read_text()))
    policy = load_policy(path, environ=environ)
    assert policy.rules


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_without_its_environment_is_refused(path: Path) -> None:
    environ = environ_for(yaml.safe_load(path.read_text()))
    assert environ, "shipped policies take their secrets from the environment, never inline"
    with pytest.raises(PolicyError) as e:
        load_policy(path, environ={})
    unset = {
        m[1]
        for p in e.value.problems
        if (m := re.search(r"environment variable (\S+) is not set", p.message))
    }
    assert unset == set(environ)


# The staging example's comments make promises; hold it to them.
STAGING_DECISIONS = [
    # account, client ip, requested scope, outcome, granted, deciding rule (None: default deny)
    ("dave", None, "repository:internal/tools:pull", "denied", (), 1),
    ("alice", None, "repository:internal/tools:pull", "granted", ("pull",), 11),
    ("carol", None, "registry:catalog:*", "granted", ("*",), 2),
    ("alice", None, "registry:catalog:*", "default deny", (), None),
    ("carol", None, "repository:apps/shop:pull,push,delete", "partial", ("pull", "delete"), 3),
    ("ci", None, "repository:cache/go:pull,push", "granted", ("pull", "push"), 4),
    ("alice", None, "repository:cache/go:pull,push", "partial", ("pull",), 5),
    ("bob", None, "repository:cache/go:push", "denied", (), 5),
    (None, None, "repository:cache/go:pull,push", "default deny", (), None),
    ("alice", None, "repository:apps/shop:push", "denied", (), 11),
    ("ci", None, "repository:apps/shop:push", "granted", ("push",), 6),
    ("alice", None, "repository:teams/web/site:pull,push", "granted", ("pull", "push"), 7),
    ("alice", None, "repository:teams/payments/api:push", "default deny", (), None),
    ("bob", None, "repository:teams/payments/api:push", "granted", ("push",), 7),
    ("alice", None, "repository:users/alice/tmp:push", "granted", ("push",), 8),
    ("alice", None, "repository:users/bob/tmp:pull", "default deny", (), None),
    ("bob", "10.20.3.4", "repository:releases/shop:push", "granted", ("push",), 9),
    ("bob", "fd00:20::7", "repository:releases/shop:push", "granted", ("push",), 9),
    ("bob", "192.0.2.1", "repository:releases/shop:pull,push", "partial", ("pull",), 11),
    ("alice", "10.20.3.4", "repository:releases/shop:push", "denied", (), 11),
    (None, None, f"repository:builds/{BUILD_ID}:pull,push", "granted", ("pull", "push"), 10),
    (None, None, f"repository:builds/{BUILD_ID}/cache:push", "granted", ("push",), 10),
    (None, None, "repository:builds/short:push", "default deny", (), None),
    (None, None, "repository:public/base:pull", "granted", ("pull",), 12),
    (None, None, "repository:public/base:push", "denied", (), 12),
    (None, None, "repository:apps/shop:pull", "default deny", (), None),
]


@pytest.mark.parametrize(
    ("account", "ip", "scope", "outcome", "granted", "rule"), STAGING_DECISIONS
)
def test_staging_example_decides_as_its_comments_say(
    account: str | None,
    ip: str | None,
    scope: str,
    outcome: str,
    granted: tuple[str, ...],
    rule: int | None,
) -> None:
    path = POLICIES / "example-staging.yaml"
    policy = load_policy(path, environ=environ_for(yaml.safe_load(path.read_text())))
    identity = Identity(policy.accounts[account] if account else None)
    decision = policy.decide(identity, parse_scope(scope), ip)
    assert decision.outcome == outcome
    assert decision.granted == granted
    assert (decision.rule.index if decision.rule else None) == rule


def test_staging_example_exercises_the_documented_features() -> None:
    path = POLICIES / "example-staging.yaml"
    policy = load_policy(path, environ=environ_for(yaml.safe_load(path.read_text())))
    assert any(r.denies for r in policy.rules)
    assert any(r.networks for r in policy.rules)
    assert any(r.resource_type == "registry" for r in policy.rules)
    assert any(p.capabilities for r in policy.rules for p in r.repositories)
    assert any(p.placeholders for r in policy.rules for p in r.repositories)
    (upstream,) = policy.upstreams
    assert upstream.mode == "enforce"
    assert upstream.credentials is not None and upstream.credentials.kind == "basic"
    assert upstream.credentials.password_source.startswith("$")
    (issuer,) = policy.trusted_issuers
    assert issuer.algorithms == ("HS256",) and issuer.claims == "repo_access"


# -- schema and loader agree on inline documents ----------------------------------------------

BASE = f"""\
version: 1
service: regauth-test
accounts:
  ci:
    password_hash: "{HASH}"
    groups: [ci]
    labels:
      team: [web]
capabilities:
  build-id: "[a-z0-9]{{26}}"
rules:
  - account: ci
    repository: "cache/**"
    actions: [pull, push]
"""


def with_rule(rule: str) -> str:
    return BASE + textwrap.indent(textwrap.dedent(rule).strip(), "  ") + "\n"


def with_top(text: str) -> str:
    return BASE + textwrap.dedent(text)


def public_key_file(directory: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = directory / "issuer.pem"
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path.name


ACCEPTED = {
    "empty rules": "version: 1\nservice: svc\nrules: []\n",
    "base": BASE,
    "all token settings": with_top("""\
        token: {lifetime: 60, refresh_lifetime: 60, algorithm: RS256, kid: rfc7638,
                signing_key: token-signing}
        """),
    "deny rule": with_rule("""\
        - comment: nobody touches quarantine
          repository: quarantine/**
          deny: true
        """),
    "deny false with actions": with_rule("""\
        - repository: public/**
          deny: false
          actions: pull
        """),
    "catalog rule": with_rule("""\
        - group: ci
          type: registry
          name: catalog
          actions: ["*"]
        """),
    "catalog rule without name": with_rule("""\
        - account: ci
          type: registry
          actions: "*"
        """),
    "placeholders, networks, regex, lists": with_rule("""\
        - account: [ci, authenticated]
          group: ci
          labels: {team: web}
          repository: ["teams/${labels.team}/**", "users/${account}/*-dev", {regex: "x/[a-z]+"}]
          networks: ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
          actions: [pull, push, delete]
        """),
    "anonymous push to a capability repository": with_rule("""\
        - account: anonymous
          repository: ["builds/{build-id}", "builds/{build-id}/**"]
          actions: [pull, push]
        """),
    "upstreams": with_top("""\
        upstreams:
          - url: https://registry.example.com:5000/
            mode: enforce
            credentials: {type: bearer, username: u, password: p, realm_hosts: auth.example.com}
          - url: "*"
            mode: delegate
            comment: everything else checks regauth's tokens itself
        """),
    "trusted issuer HS256": with_top(f"""\
        trusted_issuers:
          - issuer: legacy
            audience: regauth-test
            algorithm: HS256
            secret: "{HS_SECRET}"
            claims: repo_access
            actions: {{read: pull, write: [pull, push]}}
          - issuer: other
            audience: regauth-test
            algorithm: HS256
            secret_env: HS_SECRET
            claims: repos
            repos_actions: [pull]
        """),
    "trusted issuer ES256": with_top("""\
        trusted_issuers:
          - issuer: idp
            audience: regauth-test
            algorithm: ES256
            public_key_file: issuer.pem
            comment: the identity provider
        """),
    "account from env, labels and comment": """\
version: 1
service: svc
issuer: svc-issuer
accounts:
  alice@example.com:
    password_hash_env: ALICE_HASH
    groups: dev
    labels: {team: [web, api], site: berlin}
    comment: a person
rules:
  - account: alice@example.com
    repository: "teams/${labels.team}/**"
    actions: [pull]
""",
}

REFUSED = {
    "unknown top-level key": with_top("mirrors: []\n"),
    "no version": BASE.replace("version: 1\n", ""),
    "version 2": BASE.replace("version: 1", "version: 2"),
    "no service": BASE.replace("service: regauth-test\n", ""),
    "service with a space": BASE.replace("service: regauth-test", "service: regauth test"),
    "no rules": BASE.split("rules:")[0],
    "rules not a list": BASE.split("rules:")[0] + "rules: {a: 1}\n",
    "accounts as a list": "version: 1\nservice: s\naccounts: [ci]\nrules: []\n",
    "lifetime 30": with_top("token: {lifetime: 30}\n"),
    "lifetime over a day": with_top("token: {lifetime: 86401}\n"),
    "lifetime as a string": with_top("token: {lifetime: '300'}\n"),
    "token algorithm HS256": with_top("token: {algorithm: HS256}\n"),
    "token kid x5t": with_top("token: {kid: x5t}\n"),
    "unknown token key": with_top("token: {audience: x}\n"),
    "unknown rule key": with_rule("""\
        - account: ci
          repository: a/**
          actions: [pull]
          priority: 1
        """),
    "unknown action": with_rule("""\
        - account: ci
          repository: a/**
          actions: [pull, write]
        """),
    "empty action list": with_rule("""\
        - account: ci
          repository: a/**
          actions: []
        """),
    "actions and deny": with_rule("""\
        - account: ci
          repository: a/**
          actions: [pull]
          deny: true
        """),
    "neither actions nor deny": with_rule("""\
        - account: ci
          repository: a/**
        """),
    "deny not a boolean": with_rule("""\
        - account: ci
          repository: a/**
          deny: 1
        """),
    "unknown resource type": with_rule("""\
        - account: ci
          type: image
          repository: a/**
          actions: [pull]
        """),
    "registry rule with a repository": with_rule("""\
        - account: ci
          type: registry
          repository: a/**
          actions: ["*"]
        """),
    "registry resource other than catalog": with_rule("""\
        - account: ci
          type: registry
          name: tags
          actions: ["*"]
        """),
    "repository rule with a name": with_rule("""\
        - account: ci
          repository: a/**
          name: catalog
          actions: [pull]
        """),
    "repository rule without a repository": with_rule("""\
        - account: ci
          actions: [pull]
        """),
    "upper-case pattern": with_rule("""\
        - account: ci
          repository: Cache/**
          actions: [pull]
        """),
    "globstar inside a segment": with_rule("""\
        - account: ci
          repository: cache/a**
          actions: [pull]
        """),
    "leading slash": with_rule("""\
        - account: ci
          repository: /cache/**
          actions: [pull]
        """),
    "unknown placeholder": with_rule("""\
        - account: ci
          repository: "users/${user}/**"
          actions: [pull]
        """),
    "capability inside a segment": with_rule("""\
        - account: ci
          repository: "builds/x-{build-id}"
          actions: [pull]
        """),
    "regex with an extra key": with_rule("""\
        - account: ci
          repository: {regex: "a/.*", flags: i}
          actions: [pull]
        """),
    "empty repository list": with_rule("""\
        - account: ci
          repository: []
          actions: [pull]
        """),
    "network that is a name": with_rule("""\
        - account: ci
          repository: a/**
          networks: [office-vpn]
          actions: [pull]
        """),
    "account with two password sources": BASE.replace(
        f'password_hash: "{HASH}"', f'password_hash: "{HASH}"\n    password_hash_env: X'
    ),
    "account without a password": BASE.replace(f'    password_hash: "{HASH}"\n', ""),
    "account with an unknown key": BASE.replace("groups: [ci]", "groups: [ci]\n    role: x"),
    "inline hash that is not bcrypt": BASE.replace(HASH, "secret"),
    "reserved account name": BASE.replace("  ci:", "  anonymous:").replace(
        "account: ci", "account: authenticated"
    ),
    "account name with a space": BASE.replace("  ci:", "  c i:").replace(
        "account: ci", "account: authenticated"
    ),
    "upper-case group": BASE.replace("groups: [ci]", "groups: [CI]"),
    "empty group list": BASE.replace("groups: [ci]", "groups: []"),
    "upper-case capability name": BASE.replace("build-id:", "Build:"),
    "capability that is not a class and length": BASE.replace('"[a-z0-9]{26}"', '"[A-Z]+"'),
    "upstream without url": with_top("upstreams:\n  - mode: enforce\n"),
    "upstream url with a path": with_top("upstreams:\n  - url: https://r.example.com/v2\n"),
    "upstream mode inject": with_top("upstreams:\n  - url: '*'\n    mode: inject\n"),
    "credentials in delegate mode": with_top("""\
        upstreams:
          - url: "*"
            mode: delegate
            credentials: {username: u, password: p}
        """),
    "credentials without username": with_top("""\
        upstreams:
          - url: "*"
            credentials: {password: p}
        """),
    "credentials without password": with_top("""\
        upstreams:
          - url: "*"
            credentials: {username: u}
        """),
    "credentials type digest": with_top("""\
        upstreams:
          - url: "*"
            credentials: {type: digest, username: u, password: p}
        """),
    "trusted issuer HS512": with_top(f"""\
        trusted_issuers:
          - {{issuer: x, audience: y, algorithm: HS512, secret: "{HS_SECRET}"}}
        """),
    "trusted issuer HS256 without secret": with_top("""\
        trusted_issuers:
          - {issuer: x, audience: y, algorithm: HS256}
        """),
    "trusted issuer RS256 without keys": with_top("""\
        trusted_issuers:
          - {issuer: x, audience: y, algorithm: RS256}
        """),
    "trusted issuer without audience": with_top(f"""\
        trusted_issuers:
          - {{issuer: x, algorithm: HS256, secret: "{HS_SECRET}"}}
        """),
    "trusted issuer claims shape unknown": with_top(f"""\
        trusted_issuers:
          - {{issuer: x, audience: y, algorithm: HS256, secret: "{HS_SECRET}", claims: scopes}}
        """),
    "trusted issuer action mapped to a non-action": with_top(f"""\
        trusted_issuers:
          - {{issuer: x, audience: y, algorithm: HS256, secret: "{HS_SECRET}",
              claims: repo_access, actions: {{read: fetch}}}}
        """),
    "trusted issuer unknown key": with_top(f"""\
        trusted_issuers:
          - {{issuer: x, audience: y, algorithm: HS256, secret: "{HS_SECRET}", leeway: 30}}
        """),
}

# What only the loader can see: the schema describes structure, not meaning.
SEMANTIC_ONLY = {
    "anonymous push outside a capability repository": with_rule("""\
        - account: anonymous
          repository: cache/**
          actions: [push]
        """),
    "anyone may push (account defaults to any)": with_rule("""\
        - repository: "**"
          actions: [pull, push]
        """),
    "weak capability": BASE.replace('"[a-z0-9]{26}"', '"[a-z0-9]{20}"'),
    "unknown account in a rule": with_rule("""\
        - account: nobody
          repository: a/**
          actions: [pull]
        """),
    "undeclared capability": with_rule("""\
        - account: ci
          repository: "builds/{run-id}"
          actions: [pull]
        """),
    "unset environment variable": BASE.replace(
        f'password_hash: "{HASH}"', "password_hash_env: NOT_SET_ANYWHERE"
    ),
    "refresh lifetime shorter than lifetime": with_top(
        "token: {lifetime: 600, refresh_lifetime: 300}\n"
    ),
    "host bits in a network": with_rule("""\
        - account: ci
          repository: a/**
          networks: 10.0.0.1/8
          actions: [pull]
        """),
}


def loader_problems(text: str, directory: Path) -> list[str]:
    environ = {"HS_SECRET": HS_SECRET, "ALICE_HASH": HASH, "X": HASH}
    try:
        load_policy_text(text, "policy.yaml", directory, environ)
    except PolicyError as e:
        return [str(p) for p in e.problems]
    return []


@pytest.mark.parametrize("name", ACCEPTED)
def test_schema_and_loader_both_accept(
    name: str, tmp_path: Path, validator: Draft202012Validator
) -> None:
    public_key_file(tmp_path)
    text = ACCEPTED[name]
    assert loader_problems(text, tmp_path) == []
    assert schema_errors(validator, text) == []


@pytest.mark.parametrize("name", REFUSED)
def test_schema_and_loader_both_refuse(
    name: str, tmp_path: Path, validator: Draft202012Validator
) -> None:
    text = REFUSED[name]
    assert loader_problems(text, tmp_path) != []
    assert schema_errors(validator, text) != []


@pytest.mark.parametrize("name", SEMANTIC_ONLY)
def test_semantic_problems_are_left_to_the_loader(
    name: str, tmp_path: Path, validator: Draft202012Validator
) -> None:
    text = SEMANTIC_ONLY[name]
    assert loader_problems(text, tmp_path) != []
    assert schema_errors(validator, text) == []


# -- regauth policy check ---------------------------------------------------------------------


def policy_check(
    *files: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regauth.cli", "policy", "check", *map(str, files)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


BROKEN = f"""\
version: 1
service: regauth-test
token:
  lifetime: 30
accounts:
  ci:
    password_hash: "{HASH}"
rules:
  - comment: anonymous builders push the cache, so anyone could poison it
    account: anonymous
    repository: "cache/**"
    actions: [pull, push]
"""


def test_policy_check_reports_file_line_column_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = policy_check(path)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert lines, result.stdout
    for line in lines:
        m = PROBLEM_LINE.match(line)
        assert m is not None, line
        assert m["file"] == str(path)
    assert f"{path}:4:13: token lifetime must be between 60 and 86400 seconds, not 30" in lines
    assert any(
        line.startswith(
            f"{path}:12:14: rule 1: grants push to anonymous outside a capability repository"
        )
        for line in lines
    ), lines
    assert "ok" not in result.stdout


def test_policy_check_accepts_the_default_policy() -> None:
    env = {**os.environ, "REGAUTH_CI_PASSWORD_HASH": HASH}
    result = policy_check(POLICIES / "default.yaml", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "default.yaml: ok" in result.stdout


def test_policy_check_refuses_the_default_policy_without_its_hash() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REGAUTH_CI_PASSWORD_HASH"}
    path = POLICIES / "default.yaml"
    result = policy_check(path, env=env)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    m = PROBLEM_LINE.match(lines[0])
    assert m is not None
    assert m["file"] == str(path)
    assert "environment variable REGAUTH_CI_PASSWORD_HASH is not set" in m["message"]
    line = int(m["line"])
    assert "REGAUTH_CI_PASSWORD_HASH" in path.read_text().splitlines()[line - 1]
