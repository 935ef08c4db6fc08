"""Reading `upstreams:` and `trusted_issuers:` (`regauth.policy.load_upstreams.UpstreamsReader`),
section by section: normalized URLs, modes, injected credentials (enforce mode only), realm
hosts, issuers' keys from files next to the policy, claim shapes and action mappings (delete and
`*` only when named), each problem at its position. The loader as a whole is test_load.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from regauth.policy import yamlpos
from regauth.policy.load_upstreams import UpstreamsReader

SECRET = "0123456789abcdef0123456789abcdef-hs256"


def _read(tmp_path: Path, text: str, section: str, environ: dict[str, str] | None = None):
    reader = UpstreamsReader("p.yaml", tmp_path, environ or {})
    doc = yamlpos.load(text)
    assert isinstance(doc, yamlpos.Map)
    read = reader.upstreams if section == "upstreams" else reader.trusted_issuers
    return read(doc), [str(p) for p in reader.problems]


def test_upstreams_are_normalized_with_their_mode_and_line(tmp_path):
    entries, problems = _read(
        tmp_path,
        """\
upstreams:
  - url: "HTTPS://Registry.Example:443/"
  - comment: the rest
    url: "*"
    mode: delegate
""",
        "upstreams",
    )
    assert problems == []
    assert [(e.url, e.mode, e.credentials, e.line) for e in entries] == [
        ("https://registry.example", "enforce", None, 2),
        ("*", "delegate", None, 3),
    ]


def test_injected_credentials_with_their_secret_and_realm_hosts(tmp_path):
    [entry], problems = _read(
        tmp_path,
        """\
upstreams:
  - url: https://registry.example
    credentials:
      type: bearer
      username: bot
      password_env: UPSTREAM_PASSWORD
      realm_hosts: [Auth.Example:8443, auth.example]
""",
        "upstreams",
        {"UPSTREAM_PASSWORD": "s3cret"},
    )
    assert problems == []
    credentials = entry.credentials
    assert (
        credentials.kind,
        credentials.username,
        credentials.password,
        credentials.password_source,
        credentials.realm_hosts,
    ) == ("bearer", "bot", "s3cret", "$UPSTREAM_PASSWORD", ("auth.example:8443", "auth.example"))
    assert "s3cret" not in repr(credentials)


def test_upstream_problems_are_reported_where_they_are_and_the_rest_still_loads(tmp_path):
    entries, problems = _read(
        tmp_path,
        """\
upstreams:
  - url: "ftp://registry.example"
  - url: https://a.example
    mode: proxy
  - url: https://b.example
    mode: delegate
    credentials: {username: bot, password: x}
  - url: https://c.example
    credentials: {type: oauth, username: bot, password: x}
  - url: https://d.example
    colour: blue
  - url: https://e.example
""",
        "upstreams",
    )
    assert [e.url for e in entries] == ["https://d.example", "https://e.example"]
    assert [p.split(": ", 1)[0] for p in problems] == [
        "p.yaml:2:10",
        "p.yaml:4:11",
        "p.yaml:7:5",
        "p.yaml:9:25",
        "p.yaml:11:5",
    ]
    assert "upstream mode must be 'enforce'" in problems[1]
    assert "requires mode: enforce" in problems[2]
    assert "credentials type must be 'basic' or 'bearer'" in problems[3]
    assert "unknown key 'colour' in upstream" in problems[4]


def test_trusted_issuers_with_a_secret_or_a_key_file_beside_the_policy(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ci.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (hs, es), problems = _read(
        tmp_path,
        f"""\
trusted_issuers:
  - issuer: ci-system
    audience: svc
    algorithm: HS256
    secret: "{SECRET}"
    claims: repos
    repos_actions: [pull, push]
  - issuer: other
    audience: svc
    algorithm: ES256
    public_key_file: keys/ci.pem
    actions: {{admin: [pull, push, delete], read: pull}}
    comment: the release pipeline
""",
        "trusted_issuers",
    )
    assert problems == []
    assert (
        hs.issuer,
        hs.audience,
        hs.algorithms,
        hs.keys,
        hs.key_ids,
        hs.claims,
        hs.repos_actions,
        hs.line,
    ) == ("ci-system", "svc", ("HS256",), (SECRET.encode(),), (None,), "repos", ("pull", "push"), 2)
    assert hs.action_map == {"pull": ("pull",), "push": ("push",)}  # never delete by default
    assert es.keys[0].public_numbers() == key.public_key().public_numbers()
    assert es.claims == "access" and es.comment == "the release pipeline"
    assert es.action_map == {
        "pull": ("pull",),
        "push": ("push",),
        "admin": ("pull", "push", "delete"),
        "read": ("pull",),
    }


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("algorithm: HS512\n    secret: x", "p.yaml:4:16: trusted issuer: algorithm must be HS256"),
        (
            'algorithm: HS256\n    secret: "short"',
            "p.yaml:2:5: trusted issuer: an HS256 secret needs at least 32 bytes",
        ),
        (
            f'algorithm: HS256\n    secret: "{SECRET}"\n    public_key_file: k.pem',
            "p.yaml:6:5: trusted issuer: public_key_file does not fit algorithm HS256",
        ),
        (
            "algorithm: ES256",
            "p.yaml:2:5: trusted issuer: ES256 needs exactly one of public_key_file or jwks_file",
        ),
        (
            "algorithm: ES256\n    public_key_file: absent.pem",
            "p.yaml:5:22: trusted issuer: cannot read {dir}/absent.pem",
        ),
        (
            "algorithm: RS256\n    jwks_file: empty.json",
            "p.yaml:5:16: trusted issuer: no keys in {dir}/empty.json",
        ),
        (
            f'algorithm: HS256\n    secret: "{SECRET}"\n    claims: groups',
            "p.yaml:6:13: trusted issuer: claims must be 'access', 'repos' or 'repo_access'",
        ),
        (
            f'algorithm: HS256\n    secret: "{SECRET}"\n    actions: {{admin: [own]}}',
            "p.yaml:6:22: trusted issuer: 'own' is not a registry action",
        ),
    ],
)
def test_trusted_issuer_problems(tmp_path, issuer, message):
    (tmp_path / "empty.json").write_text('{"keys": []}')
    _, problems = _read(
        tmp_path,
        f"trusted_issuers:\n  - issuer: x\n    audience: svc\n    {issuer}\n",
        "trusted_issuers",
    )
    assert problems and problems[0].startswith(message.format(dir=tmp_path))
