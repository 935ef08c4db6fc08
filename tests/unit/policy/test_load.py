import textwrap

import pytest

from regauth.policy.load import load_policy
from regauth.policy.load import load_policy_text
from regauth.policy.reader import PolicyError

HASH = "$2b$04$" + "N" * 53
FILE = "p.yaml"


def _load(text, **kwargs):
    return load_policy_text(textwrap.dedent(text), file=FILE, **kwargs)


def _errors(text, **kwargs):
    with pytest.raises(PolicyError) as e:
        _load(text, **kwargs)
    lines = str(e.value).splitlines()
    assert lines == [str(p) for p in e.value.problems]
    return lines


def _single(text, **kwargs):
    lines = _errors(text, **kwargs)
    assert len(lines) == 1, lines
    return lines[0]


HEAD = f"""\
version: 1
service: svc
accounts:
  ci:
    password_hash: "{HASH}"
    groups: [ci]
    labels:
      team: [web]
capabilities:
  build-id: "[a-z0-9]{{26}}"
rules:
"""  # the first rule starts on line 12


def test_a_minimal_policy_loads():
    policy = _load(HEAD + "  - account: ci\n    repository: a\n    actions: [pull]\n")
    assert policy.service == "svc"
    assert policy.issuer == "regauth"
    assert policy.token.lifetime == 300
    assert policy.token.kid_format == "libtrust"
    assert list(policy.accounts) == ["ci"]
    assert policy.accounts["ci"].password_hash == HASH.encode()
    assert policy.accounts["ci"].labels == {"team": ("web",)}
    assert policy.rules[0].line == 12
    assert policy.source == FILE


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "  - account: anonymous\n    repository: cache/**\n    actions: [pull, push]\n",
            "p.yaml:14:14: rule 1: grants push to anonymous outside a capability repository",
        ),
        (
            "  - account: any\n    repository: cache/**\n    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anyone (account: any) outside a capability "
            "repository",
        ),
        (
            "  - repository: cache/**\n    actions: [delete]\n",
            "p.yaml:13:14: rule 1: grants delete to anyone (account: any) outside a capability "
            "repository",
        ),
        (
            "  - account: anonymous\n    repository: cache/*\n    actions: ['*']\n",
            "p.yaml:14:14: rule 1: grants * to anonymous outside a capability repository",
        ),
        (
            "  - account: anonymous\n    repository: cache/*\n    actions: '*'\n",
            "p.yaml:14:14: rule 1: grants * to anonymous outside a capability repository",
        ),
        (
            "  - account: [anonymous, ci]\n    repository: '**/{build-id}'\n    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anonymous outside a capability repository",
        ),
        (
            "  - account: any\n    repository: '*/{build-id}'\n    actions: [pull, push]\n",
            "p.yaml:14:14: rule 1: grants push to anyone (account: any) outside a capability",
        ),
        (
            "  - account: any\n    repository: ['builds/{build-id}', 'other/**']\n"
            "    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anyone (account: any) outside a capability",
        ),
        (
            "  - account: any\n    repository: {regex: 'builds/[a-z0-9]{26}'}\n"
            "    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anyone (account: any) outside a capability",
        ),
        (
            "  - account: any\n    repository: 'b-${account}/{build-id}'\n    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anyone (account: any) outside a capability",
        ),
        # a capability needs a literal namespace before it
        (
            "  - account: any\n    repository: '{build-id}'\n    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anyone (account: any) outside a capability",
        ),
        (
            "  - account: anonymous\n    repository: '{build-id}/**'\n    actions: [push]\n",
            "p.yaml:14:14: rule 1: grants push to anonymous outside a capability",
        ),
    ],
)
def test_anonymous_writes_outside_capability_repositories(rule, expected):
    assert _single(HEAD + rule).startswith(expected)


@pytest.mark.parametrize(
    "rule",
    [
        "  - account: any\n    repository: 'builds/{build-id}'\n    actions: [pull, push]\n",
        "  - account: anonymous\n    repository: 'builds/{build-id}/**'\n    actions: ['*']\n",
        "  - account: any\n    repository: 'a/b/{build-id}/c'\n    actions: [delete]\n",
        "  - account: any\n    repository: cache/**\n    actions: [pull]\n",
        "  - account: authenticated\n    repository: cache/**\n    actions: [push]\n",
        "  - account: anonymous\n    repository: cache/**\n    deny: true\n",
        # a group or label condition can never hold for anonymous
        "  - account: any\n    group: ci\n    repository: cache/**\n    actions: [push]\n",
        "  - labels: {team: [web]}\n    repository: cache/**\n    actions: ['*']\n",
    ],
)
def test_allowed_write_rules(rule):
    _load(HEAD + rule)


@pytest.mark.parametrize(
    ("pattern", "column", "message"),
    [
        ("'a/**b'", 17, "capabilities and '**' must be whole segments"),
        ("'a/x{build-id}'", 17, "capabilities and '**' must be whole segments"),
        ("'a//b'", 17, "empty path segment"),
        ("'/a'", 17, "no leading or trailing '/'"),
        ("'a/'", 17, "no leading or trailing '/'"),
        ("''", 17, "empty repository pattern"),
        ("'a/{nope}'", 17, "unknown capability {nope}"),
        ("'A/b'", 17, "only lower-case letters"),
        ("'a b'", 17, "only lower-case letters"),
        ("'a/[ab]'", 17, "only lower-case letters"),
        ("'a/${user}'", 17, "unknown placeholder"),
        ("'a/${labels.Team}'", 17, "unknown placeholder"),
        ("{regex: 'a(('}", 17, "invalid regular expression"),
        ("{regex: '[z-a]'}", 17, "invalid regular expression"),
        ("[ok, 'a//b']", 22, "empty path segment"),
        ("42", 17, "repository must be a glob string"),
    ],
)
def test_bad_repository_patterns(pattern, column, message):
    line = _single(HEAD + f"  - account: ci\n    repository: {pattern}\n    actions: [pull]\n")
    assert line.startswith(f"p.yaml:13:{column}: rule 1: ")
    assert message in line


def test_unknown_regex_key():
    line = _single(
        HEAD + "  - account: ci\n    repository: {regex: a, flags: i}\n    actions: [pull]\n"
    )
    assert line.startswith("p.yaml:13:28: unknown key 'flags' in rule 1 repository")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("'[a-f]{20}'", "worth 52 bits"),
        ("'[0-9]{38}'", "worth 126 bits"),
        ("'[a-z0-9]{24}'", "worth 124 bits"),
        ("'[a-z0-9]{10,40}'", "worth 52 bits"),
        ("'[a]{200}'", "longer than 128"),
        ("'[aa]{128}'", "at least two characters"),
        ("'[z-a]{40}'", "bad range z-a"),
        ("'[a-9]{40}'", "bad range a-9"),
        ("'[A-Z]{40}'", "must look like"),
        ("'.{40}'", "must look like"),
        ("'[a-z0-9]{40,20}'", "inverted"),
        ("42", "the pattern must be a string"),
    ],
)
def test_weak_or_bad_capabilities(pattern, message):
    line = _single(f"version: 1\nservice: svc\ncapabilities:\n  id: {pattern}\nrules: []\n")
    assert line.startswith("p.yaml:4:7: capability 'id': ")
    assert message in line


@pytest.mark.parametrize("pattern", ["'[0-9a-f]{32}'", "'[a-z0-9]{25}'", "'[0-9]{39,64}'"])
def test_strong_capabilities_load(pattern):
    policy = _load(f"version: 1\nservice: svc\ncapabilities:\n  id: {pattern}\nrules: []\n")
    assert policy.capabilities["id"].bits >= 128


def test_bad_capability_name():
    line = _single("version: 1\nservice: svc\ncapabilities:\n  Id: '[a-z0-9]{26}'\nrules: []\n")
    assert line.startswith("p.yaml:4:3: capability name 'Id'")


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (
            "version: 1\nservice: svc\ncolour: red\nrules: []\n",
            "p.yaml:3:1: unknown key 'colour' in the policy",
        ),
        (
            "version: 1\nservice: svc\ntoken:\n  lifetme: 100\nrules: []\n",
            "p.yaml:4:3: unknown key 'lifetme' in token",
        ),
        (
            f"version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash: '{HASH}'\n"
            "    group: [ci]\nrules: []\n",
            "p.yaml:6:5: unknown key 'group' in account 'ci'",
        ),
        (
            "version: 1\nservice: svc\nrules:\n  - repository: a\n    actions: [pull]\n"
            "    acount: ci\n",
            "p.yaml:6:5: unknown key 'acount' in rule 1",
        ),
        (
            "version: 1\nservice: svc\nupstreams:\n  - url: '*'\n    moed: enforce\nrules: []\n",
            "p.yaml:5:5: unknown key 'moed' in upstream",
        ),
    ],
)
def test_unknown_keys(text, prefix):
    assert _single(text).startswith(prefix)


@pytest.mark.parametrize(
    ("networks", "column", "message"),
    [
        ("['10.0.0.1/8']", 16, "has host bits set"),
        ("['10.0.0.0/33']", 16, "invalid network '10.0.0.0/33'"),
        ("['bogus']", 16, "invalid network 'bogus'"),
        ("['fd00::1/8']", 16, "has host bits set"),
        ("['10.0.0.0/8', '300.1.1.1']", 30, "invalid network '300.1.1.1'"),
        ("'10.0.0.0/8 '", 15, "invalid network"),
    ],
)
def test_bad_networks(networks, column, message):
    line = _single(
        HEAD + f"  - account: ci\n    repository: a\n    networks: {networks}\n"
        "    actions: [pull]\n"
    )
    assert line.startswith(f"p.yaml:14:{column}: rule 1: ")
    assert message in line


def test_single_host_networks_load():
    policy = _load(
        HEAD + "  - account: ci\n    repository: a\n"
        "    networks: [10.1.2.3, '::1', 192.168.0.0/16]\n    actions: [pull]\n"
    )
    assert [str(n) for n in policy.rules[0].networks] == [
        "10.1.2.3/32",
        "::1/128",
        "192.168.0.0/16",
    ]


@pytest.mark.parametrize(
    ("condition", "prefix"),
    [
        ("account: bob", "p.yaml:12:14: rule 1: unknown account 'bob'"),
        ("account: [ci, bob]", "p.yaml:12:19: rule 1: unknown account 'bob'"),
        ("group: devs", "p.yaml:12:12: rule 1: no account is in group 'devs'"),
        ("labels: {colour: [x]}", "p.yaml:12:14: rule 1: no account has label 'colour'"),
    ],
)
def test_unknown_accounts_groups_labels(condition, prefix):
    line = _single(HEAD + f"  - {condition}\n    repository: a\n    actions: [pull]\n")
    assert line.startswith(prefix)


@pytest.mark.parametrize(
    ("token", "prefix"),
    [
        (
            "lifetime: 59",
            "p.yaml:4:13: token lifetime must be between 60 and 86400 seconds, not 59",
        ),
        ("lifetime: 86401", "p.yaml:4:13: token lifetime must be between"),
        ("lifetime: '300'", "p.yaml:4:13: token: 'lifetime' must be an integer"),
        ("lifetime: true", "p.yaml:4:13: token: 'lifetime' must be an integer"),
        ("algorithm: HS256", "p.yaml:4:14: token algorithm must be ES256 or RS256"),
        ("kid: x5t", "p.yaml:4:8: token kid must be one of libtrust, rfc7638"),
        (
            "{lifetime: 600, refresh_lifetime: 300}",
            "p.yaml:3:42: refresh_lifetime must not be shorter than the token lifetime",
        ),
    ],
)
def test_token_settings(token, prefix):
    if token.startswith("{"):
        text = f"version: 1\nservice: svc\ntoken: {token}\nrules: []\n"
    else:
        text = f"version: 1\nservice: svc\ntoken:\n  {token}\nrules: []\n"
    assert _single(text).startswith(prefix)


def test_lifetime_at_the_minimum_loads():
    policy = _load("version: 1\nservice: svc\ntoken:\n  lifetime: 60\n  kid: rfc7638\nrules: []\n")
    assert policy.token.lifetime == 60
    assert policy.token.kid_format == "rfc7638"


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("service: svc\nrules: []\n", "p.yaml:1:1: `version: 1` is required"),
        ("version: 2\nservice: svc\nrules: []\n", "p.yaml:1:10: `version: 1` is required"),
        ("version: '1'\nservice: svc\nrules: []\n", "p.yaml:1:10: `version: 1` is required"),
        ("version: true\nservice: svc\nrules: []\n", "p.yaml:1:10: `version: 1` is required"),
        ("version: 1.0\nservice: svc\nrules: []\n", "p.yaml:1:10: `version: 1` is required"),
        ("version: 1\nrules: []\n", "p.yaml:1:1: the policy needs 'service'"),
        ("version: 1\nservice: svc\n", "p.yaml:1:1: the policy has no `rules:`"),
        ("version: 1\nservice: svc\nrules: {}\n", "p.yaml:3:8: rules must be a list"),
        ("version: 1\nservice: 'a b'\nrules: []\n", "p.yaml:2:10: service 'a b' may only hold"),
        (
            "version: 1\nservice: svc\nissuer: 'x\"y'\nrules: []\n",
            "p.yaml:3:9: issuer 'x\"y' may only hold",
        ),
        ("", "p.yaml:1:1: the policy file is empty"),
        ("- a\n- b\n", "p.yaml:1:1: the policy must be a mapping"),
    ],
)
def test_document_level_problems(text, prefix):
    assert _single(text).startswith(prefix)


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (
            "version: 1\nservice: svc\nservice: other\nrules: []\n",
            "p.yaml:3:1: duplicate key 'service'",
        ),
        (
            f"version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash: '{HASH}'\n"
            f"  ci:\n    password_hash: '{HASH}'\nrules: []\n",
            "p.yaml:6:3: duplicate key 'ci'",
        ),
        ("version: 1\nservice: svc\nrules: [\n", "p.yaml:4:1: YAML syntax error"),
        ("version: 1\nservice: 'svc\nrules: []\n", "p.yaml:4:1: YAML syntax error"),
        ("version: 1\n  service: svc\n", "p.yaml:2:10: YAML syntax error"),
        ("version: 1\nservice: svc\nrules:\n\t- a\n", "p.yaml:4:1: YAML syntax error"),
        ("base: &b {a: 1}\nother:\n  <<: *b\n", "p.yaml:3:3: YAML merge keys"),
        ("version: 1\nservice: svc\n1: x\nrules: []\n", "p.yaml:3:1: mapping keys must be strings"),
    ],
)
def test_yaml_level_problems(text, prefix):
    assert _single(text).startswith(prefix)


@pytest.mark.parametrize("value", ["!!int abc", "!!float x", "!!timestamp nope"])
def test_unconstructible_tagged_values_are_policy_errors(value):
    # `regauth policy check` and the reload watcher only expect PolicyError (or ValueError).
    assert _single(f"version: 1\nservice: svc\nrules: []\ncomment: {value}\n").startswith(
        "p.yaml:4:10: "
    )


def test_password_hash_from_the_environment():
    text = "version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash_env: CI_HASH\nrules: []\n"
    policy = _load(text, environ={"CI_HASH": HASH + "\n"})
    assert policy.accounts["ci"].password_hash == HASH.encode()
    line = _single(text, environ={})
    assert line == "p.yaml:5:24: account 'ci': environment variable CI_HASH is not set"


def test_empty_secret_is_refused():
    text = "version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash_env: CI_HASH\nrules: []\n"
    assert (
        _single(text, environ={"CI_HASH": "  \n"})
        == "p.yaml:5:24: account 'ci': the secret from $CI_HASH is empty"
    )


def test_password_hash_from_a_file(tmp_path):
    (tmp_path / "ci.hash").write_text(HASH + "\n")
    text = (
        "version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash_file: ci.hash\nrules: []\n"
    )
    policy = load_policy_text(text, file=FILE, base_dir=tmp_path)
    assert policy.accounts["ci"].password_hash == HASH.encode()
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, file=FILE, base_dir=tmp_path / "elsewhere")
    assert str(e.value).startswith("p.yaml:5:25: account 'ci': cannot read ")


@pytest.mark.parametrize(
    "value",
    [
        "plaintext",
        "$2b$04$tooshort",
        "$1$abc$" + "N" * 53,  # md5-crypt prefix
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "$argon2id$v=19$m=65536,t=3,p=4$" + "N" * 40,
    ],
)
def test_non_bcrypt_password_hash(value):
    line = _single(
        f"version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash: '{value}'\nrules: []\n"
    )
    assert line.startswith(
        "p.yaml:5:20: account 'ci': the password hash from inline is not a bcrypt hash"
    )


def test_two_password_sources():
    line = _single(
        f"version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash: '{HASH}'\n"
        "    password_hash_env: X\nrules: []\n",
        environ={"X": HASH},
    )
    assert line.startswith(
        "p.yaml:6:5: account 'ci': give only one of password_hash, password_hash_env"
    )


@pytest.mark.parametrize("name", ["anonymous", "authenticated", "any"])
def test_reserved_account_names(name):
    line = _single(
        f"version: 1\nservice: svc\naccounts:\n  {name}:\n    password_hash: '{HASH}'\nrules: []\n"
    )
    assert line == f"p.yaml:4:3: {name!r} is a reserved word, not an account name"


def test_label_names_must_work_as_placeholders():
    line = _single(
        f"version: 1\nservice: svc\naccounts:\n  ci:\n    password_hash: '{HASH}'\n"
        "    labels:\n      team.x: [a]\nrules: []\n"
    )
    assert line.startswith("p.yaml:7:7: account 'ci': label name 'team.x' must be")


def test_label_placeholder_nobody_has():
    line = _single(
        HEAD + "  - account: ci\n    repository: 'teams/${labels.site}/**'\n    actions: [pull]\n"
    )
    assert line == "p.yaml:13:17: rule 1: ${labels.site} names a label no account has"


@pytest.mark.parametrize("who", ["anonymous", "any"])
def test_catalog_is_never_granted_to_anonymous(who):
    line = _single(
        HEAD + f"  - account: {who}\n    type: registry\n    name: catalog\n    actions: ['*']\n"
    )
    assert line.startswith(
        "p.yaml:15:14: rule 1: the catalog lists every repository, "
        "capability ids included; it cannot be granted to "
    )


def test_catalog_rule_for_an_account_loads():
    policy = _load(HEAD + "  - account: ci\n    type: registry\n    actions: ['*']\n")
    assert policy.rules[0].resource_type == "registry"
    assert policy.rules[0].repositories == ()


def test_credentials_with_delegate_mode():
    text = """\
        version: 1
        service: svc
        upstreams:
          - url: https://registry.example
            mode: delegate
            credentials:
              username: u
              password: p
        rules: []
        """
    assert _single(text).startswith(
        "p.yaml:6:5: injecting upstream credentials requires mode: enforce"
    )


def test_upstream_credentials_load_and_normalize():
    text = """\
        version: 1
        service: svc
        upstreams:
          - url: HTTPS://Registry.Example:443/
            credentials:
              type: bearer
              username: u
              password_env: UP_PW
              realm_hosts: [Auth.Example]
        rules: []
        """
    policy = _load(text, environ={"UP_PW": "s3cret"})
    [upstream] = policy.upstreams
    assert upstream.url == "https://registry.example"
    assert upstream.mode == "enforce"
    assert upstream.credentials.kind == "bearer"
    assert upstream.credentials.password == "s3cret"
    assert upstream.credentials.password_source == "$UP_PW"
    assert upstream.credentials.realm_hosts == ("auth.example",)
    assert "s3cret" not in repr(upstream)
    assert policy.upstream_entry_for("https://registry.example") is upstream
    assert policy.upstream_entry_for("https://other.example") is None


@pytest.mark.parametrize(
    ("upstream", "prefix"),
    [
        ("url: ftp://x", "p.yaml:4:10: upstream url: "),
        ("url: https://x/path", "p.yaml:4:10: upstream url: "),
        ("url: https://user:pw@x", "p.yaml:4:10: upstream url: "),
        ("{url: '*', mode: passthrough}", "p.yaml:4:22: upstream mode must be 'enforce'"),
    ],
)
def test_bad_upstreams(upstream, prefix):
    assert _single(f"version: 1\nservice: svc\nupstreams:\n  - {upstream}\nrules: []\n").startswith(
        prefix
    )


@pytest.mark.parametrize(
    ("rule", "prefix"),
    [
        ("  - account: ci\n    repository: a\n", "p.yaml:12:5: rule 1 needs `actions:`"),
        (
            "  - account: ci\n    repository: a\n    actions: [pull, fly]\n",
            "p.yaml:14:21: rule 1: unknown action 'fly'",
        ),
        (
            "  - account: ci\n    repository: a\n    deny: true\n    actions: [pull]\n",
            "p.yaml:15:5: rule 1: a deny rule has no actions",
        ),
        (
            "  - account: ci\n    repository: a\n    deny: 'yes'\n",
            "p.yaml:14:11: rule 1: deny must be true or false",
        ),
        ("  - account: ci\n    actions: [pull]\n", "p.yaml:12:5: rule 1 needs `repository:`"),
        (
            "  - account: ci\n    repository: []\n    actions: [pull]\n",
            "p.yaml:13:17: rule 1: empty repository list",
        ),
        (
            "  - account: ci\n    type: registry\n    repository: a\n    actions: ['*']\n",
            "p.yaml:14:5: rule 1: a registry rule has `name: catalog`",
        ),
        (
            "  - account: ci\n    type: registry\n    name: other\n    actions: ['*']\n",
            "p.yaml:14:11: rule 1: the only registry resource is 'catalog'",
        ),
        (
            "  - account: ci\n    type: blob\n    repository: a\n    actions: [pull]\n",
            "p.yaml:13:11: rule 1: type must be 'repository' or 'registry'",
        ),
        (
            "  - account: ci\n    name: a\n    actions: [pull]\n",
            "p.yaml:13:5: rule 1: repository rules use `repository:`",
        ),
        ("  - just a string\n", "p.yaml:12:5: rule 1 must be a mapping"),
        (
            "  - comment: [a]\n    account: ci\n    repository: a\n    actions: [pull]\n",
            "p.yaml:12:14: rule 1: 'comment' must be a non-empty string",
        ),
    ],
)
def test_bad_rules(rule, prefix):
    assert _single(HEAD + rule).startswith(prefix)


def test_all_problems_are_reported_at_once():
    text = """\
        version: 2
        service: svc
        token:
          lifetime: 10
        accounts:
          ci:
            password_hash: nope
          bob:
            password_hash_env: BOB_HASH
            groups: [dev]
        capabilities:
          weak: "[a-f]{20}"
        rules:
          - account: anonymous
            repository: cache/**
            actions: [push]
          - account: carol
            repository: "a//b"
            networks: [10.0.0.1/8]
            actions: [pull]
          - group: ops
            repository: {regex: "(("}
            actions: [pull]
            extra: 1
        """
    lines = _errors(text, environ={})
    assert lines == [
        "p.yaml:1:10: `version: 1` is required (the only policy format this regauth reads)",
        "p.yaml:4:13: token lifetime must be between 60 and 86400 seconds, not 10",
        "p.yaml:7:20: account 'ci': the password hash from inline is not a bcrypt hash "
        "(create one with `regauth passwd`)",
        "p.yaml:9:24: account 'bob': environment variable BOB_HASH is not set",
        "p.yaml:12:9: capability 'weak': capability 'weak' is worth 52 bits (20 characters "
        "from an alphabet of 6); at least 128 are required",
        "p.yaml:16:14: rule 1: grants push to anonymous outside a capability repository; "
        "anonymous writes are only allowed in repositories such as 'builds/{id}' whose id is a "
        "declared capability, or 'builds/${build}' bound to a build's client certificate",
        "p.yaml:17:14: rule 2: unknown account 'carol' (not under `accounts:`)",
        "p.yaml:18:17: rule 2: bad repository pattern: empty path segment ('//') in pattern",
        "p.yaml:19:16: rule 2: invalid network '10.0.0.1/8' (10.0.0.1/8 has host bits set)",
        "p.yaml:21:12: rule 3: no account is in group 'ops'",
        "p.yaml:22:17: rule 3: bad repository pattern: invalid regular expression: missing ), "
        "unterminated subpattern at position 1",
        "p.yaml:24:5: unknown key 'extra' in rule 3 (allowed: account, actions, claims, "
        "comment, deny, group, issuer, labels, name, networks, repository, type)",
    ]


def test_load_policy_reads_a_file_and_names_it(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nservice: svc\nrules: []\ncolour: x\n")
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert str(e.value).startswith(f"{path}:4:1: unknown key 'colour'")
    with pytest.raises(PolicyError) as e:
        load_policy(tmp_path / "missing.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'missing.yaml'}:1:1: cannot read policy")


TRUSTED_HEAD = "version: 1\nservice: svc\nrules: []\ntrusted_issuers:\n"


@pytest.mark.parametrize(
    ("issuer", "prefix"),
    [
        (
            "  - {issuer: x, audience: svc, algorithm: HS256, secret: short}\n",
            "p.yaml:5:5: trusted issuer: an HS256 secret needs at least 32 bytes",
        ),
        (
            "  - {issuer: x, audience: svc, algorithm: none, secret: short}\n",
            "p.yaml:5:43: trusted issuer: algorithm must be HS256, RS256 or ES256",
        ),
        (
            "  - {issuer: x, audience: svc, algorithm: RS256}\n",
            "p.yaml:5:5: trusted issuer: RS256 needs exactly one of public_key_file or jwks_file",
        ),
        (
            "  - {issuer: x, audience: svc, algorithm: HS256, secret_env: NOPE}\n",
            "p.yaml:5:62: trusted issuer: environment variable NOPE is not set",
        ),
        (
            f"  - {{issuer: x, audience: svc, algorithm: HS256, secret: '{'k' * 32}', "
            "claims: groups}\n",
            "p.yaml:5:102: trusted issuer: claims must be 'access', 'repos' or 'repo_access'",
        ),
        (
            f"  - {{issuer: x, audience: svc, algorithm: HS256, secret: '{'k' * 32}', "
            "actions: {read: [fly]}}\n",
            "p.yaml:5:110: trusted issuer: 'fly' is not a registry action",
        ),
    ],
)
def test_bad_trusted_issuers(issuer, prefix):
    assert _single(TRUSTED_HEAD + issuer, environ={}).startswith(prefix)


@pytest.mark.parametrize(
    ("issuer", "prefix"),
    [
        (
            f"  - {{issuer: x, audience: svc, algorithm: RS256, secret: '{'k' * 40}'}}\n",
            "p.yaml:5:50: trusted issuer: secret does not fit algorithm RS256",
        ),
        (
            f"  - {{issuer: x, audience: svc, algorithm: HS256, secret: '{'k' * 40}', "
            "jwks_file: x.json}\n",
            "p.yaml:5:102: trusted issuer: jwks_file does not fit algorithm HS256",
        ),
    ],
)
def test_trusted_issuer_key_material_must_fit_the_algorithm(issuer, prefix):
    assert _single(TRUSTED_HEAD + issuer, environ={}).startswith(prefix)


def test_label_values_stand_for_one_segment():
    text = (
        HEAD.replace("team: [web]", "team: [web/internal]")
        + "  - account: ci\n    repository: a\n    actions: [pull]\n"
    )
    line = _single(text)
    assert "label value 'web/internal'" in line and line.startswith(f"{FILE}:8:")
