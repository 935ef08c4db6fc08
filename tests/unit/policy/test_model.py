import pytest

from regauth.policy.load import load_policy_text
from regauth.policy.model import Identity
from tests.unit.helpers import BUILD_ID
from tests.unit.helpers import scope

# A syntactically valid bcrypt hash: matching never checks passwords.
HASH = "$2b$04$" + "N" * 53

POLICY = f"""\
version: 1
service: svc
accounts:
  ci:
    password_hash: "{HASH}"
    groups: [ci, builders]
  alice:
    password_hash: "{HASH}"
    groups: [dev]
    labels:
      team: [web, api]
  bob:
    password_hash: "{HASH}"
    groups: [dev]
    labels:
      team: [db]
capabilities:
  build-id: "[a-z0-9]{{26}}"
rules:
  - comment: nobody touches the vault
    repository: "vault/**"
    deny: true
  - comment: ci writes one level of cache
    account: ci
    repository: "cache/*"
    actions: [pull, push]
  - comment: own home
    account: authenticated
    repository: "home/${{account}}/**"
    actions: ["*"]
  - comment: group areas
    group: dev
    repository: "groups/${{group}}"
    actions: [pull, push]
  - comment: team areas
    account: authenticated
    repository: "teams/${{labels.team}}/**"
    actions: [pull]
  - comment: team leads by label
    labels:
      team: [api]
    repository: "leads/**"
    actions: [pull]
  - comment: builders
    account: any
    repository: ["builds/{{build-id}}", "builds/{{build-id}}/**"]
    actions: [pull, push]
  - comment: internal network only
    account: ci
    repository: "internal/**"
    networks: ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8"]
    actions: [pull, push]
  - comment: mixed globs
    account: any
    repository: "img-*/base"
    actions: [pull]
  - comment: regex
    account: any
    repository: {{regex: "re/[a-z]+-[0-9]+"}}
    actions: [pull]
  - comment: catalog for ci
    account: ci
    type: registry
    name: catalog
    actions: ["*"]
  - comment: alice and bob read everything else in public
    account: [alice, bob]
    repository: "public/**"
    actions: [pull]
  - comment: the first match decides, so this broader grant never applies to public/**
    account: authenticated
    repository: "**"
    actions: [pull, push]
  - comment: anonymous pull of the mirror
    account: anonymous
    repository: "mirror/**"
    actions: [pull]
"""


@pytest.fixture(scope="module")
def policy():
    return load_policy_text(POLICY)


def _who(policy, name):
    return Identity(None if name is None else policy.accounts[name])


def _decide(policy, who, text, ip="203.0.113.7"):
    return policy.decide(_who(policy, who), scope(text), ip)


@pytest.mark.parametrize(
    ("who", "requested", "granted", "rule"),
    [
        # first match wins, partial grants are the intersection
        ("ci", "repository:cache/a:pull,push", ("pull", "push"), 2),
        ("ci", "repository:cache/a:pull,push,delete", ("pull", "push"), 2),
        ("ci", "repository:cache/a:delete", (), 2),
        # `*` stays inside one segment and the pattern is anchored at both ends
        ("ci", "repository:cache/a/b:pull", ("pull",), 13),
        ("ci", "repository:xcache/a:pull", ("pull",), 13),
        ("ci", "repository:cache:pull", ("pull",), 13),
        # placeholders
        ("alice", "repository:home/alice/app:pull,push,delete", ("pull", "push", "delete"), 3),
        ("alice", "repository:home/alice/a/b/c:delete", ("delete",), 3),
        ("alice", "repository:home/bob/app:delete", (), 13),
        ("alice", "repository:home/alice:push", ("push",), 13),  # ** needs one segment
        ("alice", "repository:groups/dev:push", ("push",), 4),
        ("ci", "repository:groups/ci:push", ("push",), 13),  # ci is not in group dev
        ("alice", "repository:teams/web/x:pull,push", ("pull",), 5),
        ("alice", "repository:teams/api/x/y:pull", ("pull",), 5),
        ("alice", "repository:teams/db/x:push", ("push",), 13),
        ("bob", "repository:teams/db/x:pull", ("pull",), 5),
        ("ci", "repository:teams/web/x:delete", (), 13),  # ci has no team label
        ("alice", "repository:leads/x:pull", ("pull",), 6),
        ("bob", "repository:leads/x:pull", ("pull",), 13),
        # deny rules stop the search
        ("alice", "repository:vault/x:pull", (), 1),
        (None, "repository:vault/x:pull", (), 1),
        # glob in the middle of a segment
        (None, "repository:img-python/base:pull", ("pull",), 9),
        (None, "repository:img-python/base/x:pull", (), None),
        (None, "repository:img/base:pull", (), None),
        (None, "repository:ximg-a/base:pull", (), None),
        # anchored regexes
        (None, "repository:re/abc-12:pull", ("pull",), 10),
        (None, "repository:re/abc-12/x:pull", (), None),
        (None, "repository:x/re/abc-12:pull", (), None),
        (None, "repository:re/abc:pull", (), None),
        # registry catalog
        ("ci", "registry:catalog:*", ("*",), 11),
        ("alice", "registry:catalog:*", (), None),
        (None, "registry:catalog:*", (), None),
        # a `*` rule grants exactly what was asked
        ("alice", "repository:home/alice/x:*", ("*",), 3),
        # name lists
        ("bob", "repository:public/x:pull,push", ("pull",), 12),
        # anonymous
        (None, "repository:mirror/a/b:pull,push", ("pull",), 14),
        (None, "repository:public/x:pull", (), None),
        (None, "repository:anything:pull", (), None),
    ],
)
def test_decisions(policy, who, requested, granted, rule):
    decision = _decide(policy, who, requested)
    assert decision.granted == granted
    assert (decision.rule.index if decision.rule else None) == rule


def test_default_deny_without_rules():
    empty = load_policy_text("version: 1\nservice: svc\nrules: []\n")
    decision = empty.decide(Identity(None), scope("repository:a:pull"), "127.0.0.1")
    assert decision.granted == ()
    assert decision.rule is None
    assert decision.outcome == "default deny"
    assert decision.as_record() == {
        "scope": "repository:a:pull",
        "granted": [],
        "outcome": "default deny",
        "rule": "default deny",
    }


@pytest.mark.parametrize(
    ("build_id", "granted"),
    [
        (BUILD_ID, ("pull", "push")),
        (BUILD_ID[:25], ()),
        (BUILD_ID + "x", ()),
        (BUILD_ID[:12] + "-" + BUILD_ID[13:], ()),  # 26 characters, one outside the alphabet
        (BUILD_ID[:12] + "_" + BUILD_ID[13:], ()),
    ],
)
def test_capability_ids(policy, build_id, granted):
    decision = _decide(policy, None, f"repository:builds/{build_id}:pull,push")
    assert decision.granted == granted
    assert (decision.rule.index if decision.rule else None) == (7 if granted else None)


def test_capability_ids_are_lower_case_only(policy):
    # An upper-case id is not a repository name at all, and the pattern refuses it too.
    pattern = policy.rules[6].repositories[0]
    assert pattern.matches(f"builds/{BUILD_ID}")
    assert not pattern.matches(f"builds/{BUILD_ID.upper()}")
    assert not pattern.matches(f"builds/{BUILD_ID[:25]}A")


def test_capability_subrepositories(policy):
    assert _decide(policy, None, f"repository:builds/{BUILD_ID}/cache:push").granted == ("push",)
    assert _decide(policy, None, f"repository:builds/x/{BUILD_ID}:push").granted == ()


@pytest.mark.parametrize(
    ("ip", "granted"),
    [
        ("10.1.2.3", ("pull", "push")),
        ("10.255.255.255", ("pull", "push")),
        ("11.0.0.1", ()),
        ("192.168.1.200", ("pull", "push")),
        ("192.168.2.1", ()),
        ("::ffff:10.9.8.7", ("pull", "push")),  # IPv4-mapped IPv6
        ("::ffff:11.0.0.1", ()),
        ("fd12:3456::1", ("pull", "push")),
        ("fe80::1", ()),
        ("2001:db8::1", ()),
        (None, ()),
        ("not-an-ip", ()),
    ],
)
def test_networks_restrict_a_rule(policy, ip, granted):
    decision = _decide(policy, "ci", "repository:internal/app:pull,push", ip)
    # Outside the networks rule 8 does not apply; rule 13 (authenticated **) then grants.
    if granted:
        assert decision.rule.index == 8
        assert decision.granted == granted
    else:
        assert decision.rule.index == 13


def test_networks_are_never_sufficient_on_their_own():
    text = f"""\
version: 1
service: svc
accounts:
  ci:
    password_hash: "{HASH}"
rules:
  - account: ci
    repository: "a/**"
    networks: ["127.0.0.0/8"]
    actions: [pull]
"""
    policy = load_policy_text(text)
    assert policy.decide(Identity(None), scope("repository:a/b:pull"), "127.0.0.1").granted == ()
    assert policy.decide(
        Identity(policy.accounts["ci"]), scope("repository:a/b:pull"), "127.0.0.1"
    ).granted == ("pull",)


def test_ipv6_network_with_ipv4_client():
    text = """\
version: 1
service: svc
rules:
  - repository: "a/**"
    networks: ["::/0"]
    actions: [pull]
  - repository: "b/**"
    networks: ["0.0.0.0/0"]
    actions: [pull]
"""
    policy = load_policy_text(text)
    anon = Identity(None)
    assert policy.decide(anon, scope("repository:a/x:pull"), "10.0.0.1").granted == ()
    assert policy.decide(anon, scope("repository:b/x:pull"), "2001:db8::1").granted == ()
    assert policy.decide(anon, scope("repository:a/x:pull"), "2001:db8::1").granted == ("pull",)
    assert policy.decide(anon, scope("repository:b/x:pull"), "::ffff:1.2.3.4").granted == ("pull",)


@pytest.mark.parametrize(
    ("who", "requested", "outcome"),
    [
        ("ci", "repository:cache/a:pull,push", "granted"),
        ("ci", "repository:cache/a:pull,push,delete", "partial"),
        ("ci", "repository:cache/a:delete", "denied"),
        ("alice", "repository:vault/a:pull", "denied"),
        (None, "repository:nowhere:pull", "default deny"),
        ("alice", "repository:home/alice/x:*", "granted"),
    ],
)
def test_outcomes_and_records(policy, who, requested, outcome):
    decision = _decide(policy, who, requested)
    assert decision.outcome == outcome
    record = decision.as_record()
    assert record["scope"] == requested
    assert record["outcome"] == outcome
    if decision.rule is not None:
        assert record["rule"] == decision.rule.index
        assert record["line"] == decision.rule.line
        assert record["comment"] == decision.rule.comment


def test_rule_lines_point_at_the_rule(policy):
    lines = POLICY.splitlines()
    for rule in policy.rules:
        assert lines[rule.line - 1].lstrip().startswith("- ")
        assert rule.comment in lines[rule.line - 1]


def test_granted_scope(policy):
    partial = _decide(policy, "ci", "repository:cache/a:pull,push,delete")
    assert str(partial.granted_scope()) == "repository:cache/a:pull,push"
    assert _decide(policy, None, "repository:x:pull").granted_scope() is None


def test_describe_rule(policy):
    assert (
        policy.rules[0].describe()
        == f"rule 1 (line {policy.rules[0].line}): nobody touches the vault"
    )


def test_globstar_patterns():
    text = """\
version: 1
service: svc
rules:
  - repository: "**/mirror"
    actions: [pull]
  - repository: "a/**/z"
    actions: [pull]
"""
    policy = load_policy_text(text)
    anon = Identity(None)

    def granted(name):
        return policy.decide(anon, scope(f"repository:{name}:pull"), None).granted == ("pull",)

    assert granted("x/mirror")
    assert granted("x/y/z/mirror")
    assert not granted("mirror")
    assert not granted("x/mirrorx")
    assert granted("a/b/z")
    assert granted("a/b/c/d/z")
    assert not granted("a/z")
    assert not granted("a/b/zz")


def test_a_star_request_gets_everything_the_rule_allows(policy):
    # skopeo asks for `*` to delete; the grant is what the matching rule allows, no more.
    decision = _decide(policy, "ci", "repository:cache/a:*")
    assert decision.granted == ("pull", "push")
    assert "*" not in decision.granted
