"""Repository patterns decide client-chosen names in linear time (issue 16).

With Python's backtracking `re`, each name below took seconds to forever (`(a+)+b` doubles its
time with every extra character); these tests finish only because matching runs on RE2. No test
here measures time: bench/worst_case.py does.
"""

import re
import textwrap

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from regauth.policy.load import load_policy_text
from regauth.policy.model import Account
from regauth.policy.model import Identity
from regauth.policy.patterns import compile_glob
from regauth.policy.patterns import compile_regex
from regauth.protocol.jwt_inspect import JWT_RE
from regauth.protocol.jwt_inspect import find_jwts
from regauth.protocol.scope import parse_scope

HASH = "$2b$04$" + "N" * 53

# (pattern, a 255-character valid repository name it must not match, one it must match)
CATASTROPHIC = [
    ("(a+)+b", "a" * 255, "a" * 254 + "b"),
    ("(a|aa)+b", "a" * 255, "a" * 254 + "b"),
    ("([a-z0-9]+-?)+", "a" * 253 + "/b", "a-" * 127 + "a"),
    ("([a-z0-9]+-?)+", "a" * 253 + ".b", "a" * 255),
    ("(team-[a-z]+/)*app", "team-a/" * 36 + "apx", "team-" + "a" * 246 + "/app"),
    ("(team-[a-z]+/)*app", "team-" + "a" * 250, "team-a/" * 36 + "app"),
    ("(.*a){20}", "a" * 254 + "b", "a" * 255),
    ("(.*a){20}", "ab" * 18 + "b" * 219, "ba" * 20 + "b" * 214 + "a"),
]


def _policy(rules: str, accounts: str = ""):
    return load_policy_text(
        textwrap.dedent(f"""\
        version: 1
        service: svc
        {accounts}
        rules:
        """)
        + textwrap.dedent(rules),
        file="p.yaml",
    )


def _granted(policy, name, identity=None):
    requested = parse_scope(f"repository:{name}:pull")  # the name is a valid OCI name
    return policy.decide(identity or Identity(None), requested, None).granted == ("pull",)


@pytest.mark.parametrize(("pattern", "miss", "hit"), CATASTROPHIC)
def test_catastrophic_regexes_load_and_decide_255_character_names(pattern, miss, hit):
    assert len(miss) == len(hit) == 255
    policy = _policy(f"""\
        - repository: {{regex: '{pattern}'}}
          actions: [pull]
        """)
    assert not _granted(policy, miss)
    assert _granted(policy, hit)
    # The same answers Python's re gives, on names short enough for it to finish.
    python = re.compile(pattern)
    compiled = policy.rules[0].repositories[0]
    for name in (
        "ab",
        "aab",
        "a-b",
        "a--b",
        "team-a/app",
        "team-/app",
        "app",
        "a" * 16,
        "a" * 15 + "b",
        "ba" * 8,
        "a/b",
    ):
        assert compiled.matches(name) == (python.fullmatch(name) is not None), name


def test_patterns_are_compiled_for_linear_matching():
    # Python's re.Pattern is the backtracking engine this issue replaces.
    for pattern in (
        compile_regex("(a+)+b"),
        compile_glob("a*a*b", {}),
        compile_glob("builds/**", {}),
    ):
        assert pattern.compiled is not None
        assert not isinstance(pattern.compiled, re.Pattern)
    assert not isinstance(JWT_RE, re.Pattern)


# (glob, 255-character names it must not match, names it must match)
MANY_STARS = [
    (
        "a*a*a*a*a*a*b",
        ["a" * 255, "a" * 254 + "c", "a" * 100 + "/" + "a" * 153 + "b"],
        ["a" * 254 + "b", "aaaaaa" + "x" * 248 + "b"],
    ),
    ("*a*a*a*a*a*b", ["a" * 255, "b" * 250 + "aaaaa"], ["a" * 254 + "b", "ba" * 127 + "b"]),
    (
        "a*-*-*-*-*-*-*-*b",
        ["a" + "-" * 253 + "c", "a" + "-b" * 126 + "-c"],
        ["a" + "-" * 253 + "b", "a" + "-b" * 127],
    ),
    (
        "**/**/**/**/b",
        ["a/" * 127 + "a", "a/" * 127 + "c", "a/a/" + "a" * 250 + "b"],
        ["a/" * 126 + "a/b"],
    ),
    ("a/**/a/**/a/**/b", ["a/" * 127 + "a"], ["a/" * 126 + "a/b"]),
    ("x-*/**/*-y", ["x-" + "a/" * 126 + "a", "x-" + "a/" * 126 + "y"], ["x-" + "a/" * 125 + "a-y"]),
]


@pytest.mark.parametrize(("glob", "misses", "hits"), MANY_STARS)
def test_globs_with_many_stars_decide_255_character_names(glob, misses, hits):
    policy = _policy(f"""\
        - repository: '{glob}'
          actions: [pull]
        """)
    for name in misses:
        assert len(name) == 255
        assert not _granted(policy, name), name
    for name in hits:
        assert len(name) == 255
        assert _granted(policy, name), name


def test_placeholder_globs_with_many_stars():
    policy = _policy(
        """\
        - repository: '${group}*${group}*${group}*${group}*${group}*b'
          actions: [pull]
        - repository: 'teams/${labels.team}/**/${account}-*'
          actions: [pull]
        """,
        accounts=f"""accounts:
          alice:
            password_hash: "{HASH}"
            groups: [a, aa, a-a]
            labels:
              team: [web, a]
          bob:
            password_hash: "{HASH}"
            groups: [b]
        """,
    )
    alice = Identity(policy.accounts["alice"])
    bob = Identity(policy.accounts["bob"])
    assert not _granted(policy, "a" * 255, alice)
    assert _granted(policy, "a" * 254 + "b", alice)
    assert _granted(policy, "a-a" + "x" * 247 + "aaaab", alice)
    assert not _granted(policy, "a" * 254 + "b", bob)  # bob's group is b, not a
    assert _granted(policy, "b" * 255, bob)
    assert not _granted(policy, "b" * 255, alice)
    assert _granted(policy, "teams/web/" + "x/" * 118 + "alice-1", alice)
    assert not _granted(policy, "teams/web/" + "x/" * 118 + "bob-1", alice)
    assert not _granted(policy, "teams/web/" + "x/" * 118 + "alice", alice)
    assert not _granted(policy, "teams/web/x/bob-1", bob)  # bob has no team label


def test_placeholder_expansions_are_per_account_values():
    # The expansion cache is keyed by the values a pattern uses: accounts with the same values
    # share an entry, accounts with different values never see each other's.
    pattern = compile_glob("home/${account}/${group}-*", {})
    alice = Identity(Account("alice", b"", ("dev",))).variables()
    alice_again = Identity(Account("alice", b"", ("dev",), {"x": ("y",)})).variables()
    bob = Identity(Account("bob", b"", ("ops",))).variables()
    for _ in range(2):
        assert pattern.matches("home/alice/dev-1", alice)
        assert pattern.matches("home/alice/dev-1", alice_again)
        assert not pattern.matches("home/alice/dev-1", bob)
        assert pattern.matches("home/bob/ops-1", bob)
        assert not pattern.matches("home/bob/ops-1", alice)
        assert not pattern.matches("home/alice/dev-1", {})  # anonymous: no values


_GLOB_SEGMENT = (
    st.lists(
        st.sampled_from(["a", "b", "-", "*", "${group}", "${account}"]), min_size=1, max_size=5
    )
    .map("".join)
    .filter(lambda s: "**" not in s)
)
_GLOB = st.lists(st.one_of(_GLOB_SEGMENT, st.just("**"), st.just("*")), min_size=1, max_size=4).map(
    "/".join
)
_NAME = st.lists(st.text("ab-", min_size=1, max_size=6), min_size=1, max_size=5).map("/".join)


@settings(max_examples=300, deadline=None)
@given(
    _GLOB,
    st.lists(_NAME, min_size=1, max_size=8),
    st.lists(st.text("ab-", min_size=1, max_size=3), max_size=3),
)
def test_globs_decide_like_the_python_regex_they_used_to_be(glob, names, groups):
    pattern = compile_glob(glob, {})
    variables = {"account": ["ab"], "group": groups}
    regex = pattern._expand(variables)  # the regex text Python's re used to match
    for name in names:
        expected = regex is not None and re.fullmatch(regex, name) is not None
        assert pattern.matches(name, variables) == expected, (glob, name, regex)


_OLD_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["eyJ", "a", "Z9", ".", "-", "_", " ", "\n", "=", "é", '"']), max_size=40
    ).map("".join)
)
def test_find_jwts_finds_what_it_found_before(text):
    assert find_jwts(text) == _OLD_JWT_RE.findall(text)


def test_find_jwts_on_a_body_of_jwt_prefixes():
    # Python's re rescanned the rest of the text from every "eyJ": quadratic, 2 s for 64 KiB.
    assert find_jwts("eyJ" * 20000) == []
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln"
    assert find_jwts("eyJ" * 20000 + " " + token) == [token]
