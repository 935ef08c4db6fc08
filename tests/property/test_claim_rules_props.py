"""Claim-rule matching (federation/claim_rules.py `ClaimCondition.holds`, and
`Rule.matches_identity` for an identity from an ID token) agrees with a simple reference on
random claims (nested objects, lists, booleans, integers, floats, strings holding `/*?[`) and
random rules (exact, glob and one-of values, several conditions, issuers, groups).

The reference does not share code with the implementation: patterns are generated as tokens
(literal, `*`, `?`, `[class]`, `[!class]`) and matched token by token with a small dynamic
program, claims are looked up by hand, and the rule semantics are written out from the README:
an `issuer:` rule applies to identities of the issuers it names, an `account: any` rule without
groups or labels to every identity, and then every condition must hold."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hypothesis import event
from hypothesis import given
from hypothesis import strategies as st

from regauth.federation.claim_rules import MAX_CLAIM_TEXT
from regauth.federation.claim_rules import ClaimCondition
from regauth.policy.model import ANY
from regauth.policy.model import AUTHENTICATED
from regauth.policy.model import REPOSITORY
from regauth.policy.model import Account
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import Identity
from regauth.policy.model import Rule

# Claim values draw from the characters that matter to globs and paths, so that literal text
# holding `*`, `?`, `[` or `/` meets patterns holding them as operators.
VALUE_CHARS = "abA/*?[]!.-"
LITERAL_CHARS = "abA/]!.-"  # a literal token: anything but the glob operators `*?[`
CLASS_CHARS = "abA/.*?"  # inside a class, `*` and `?` are plain characters
NAMES = ["a", "b", "a/b", "b/a", "a/b/c", "c"]
ISSUERS = ["github", "gitlab", "k8s"]
GROUPS = ["dev", "ops", "ci"]


# -- the reference ------------------------------------------------------------------------------

Token = tuple[str, str]  # ("lit", c) | ("any", "") | ("one", "") | ("in", chars) | ("out", chars)


def render(tokens: tuple[Token, ...]) -> str:
    out = []
    for kind, text in tokens:
        out.append(
            {"lit": text, "any": "*", "one": "?", "in": f"[{text}]", "out": f"[!{text}]"}[kind]
        )
    return "".join(out)


def token_matches(tokens: tuple[Token, ...], text: str) -> bool:
    if not any(kind != "lit" for kind, _ in tokens):
        return "".join(t for _, t in tokens) == text  # no operator: exact

    @cache
    def at(i: int, j: int) -> bool:
        if i == len(tokens):
            return j == len(text)
        kind, chars = tokens[i]
        if kind == "any":
            return at(i + 1, j) or (j < len(text) and at(i, j + 1))
        if j == len(text):
            return False
        c = text[j]
        ok = {
            "lit": c == chars,
            "one": True,
            "in": c in chars,
            "out": c not in chars,
        }[kind]
        return ok and at(i + 1, j + 1)

    return at(0, 0)


_MISSING = object()


def lookup(claims: dict, name: str) -> object:
    if name in claims:
        return claims[name]
    node: object = claims
    for part in name.split("/"):
        if type(node) is not dict or part not in node:
            return _MISSING
        node = node[part]
    return node


def texts(value: object) -> list[str]:
    items = value if type(value) is list else [value]
    out = []
    for item in items:
        if item is True or item is False:
            out.append("true" if item else "false")
        elif type(item) is int:
            out.append(str(item))
        elif type(item) is str and len(item) <= MAX_CLAIM_TEXT:
            out.append(item)
    return out


def reference_holds(claims: dict, name: str, patterns: tuple[tuple[Token, ...], ...]) -> bool:
    value = lookup(claims, name)
    if value is _MISSING:
        return False
    return any(token_matches(p, t) for p in patterns for t in texts(value))


@dataclass(frozen=True)
class RuleSpec:
    issuers: tuple[str, ...]
    accounts: tuple[str, ...]
    groups: tuple[str, ...]
    conditions: tuple[tuple[str, tuple[tuple[Token, ...], ...]], ...]

    def rule(self) -> Rule:
        return Rule(
            1,
            1,
            "",
            self.accounts,
            self.groups,
            {},
            REPOSITORY,
            (),
            (),
            ("pull",),
            self.issuers,
            tuple(
                ClaimCondition(name, tuple(render(p) for p in patterns))
                for name, patterns in self.conditions
            ),
        )


def reference_matches(spec: RuleSpec, issuer: str, groups: tuple[str, ...], claims: dict) -> bool:
    if spec.issuers:
        if issuer not in spec.issuers:
            return False
    elif ANY not in spec.accounts or spec.groups:
        return False  # `authenticated` and named accounts are the policy's own accounts
    if spec.groups and not any(g in groups for g in spec.groups):
        return False
    return all(reference_holds(claims, name, patterns) for name, patterns in spec.conditions)


# -- strategies ---------------------------------------------------------------------------------

value_text = st.text(st.sampled_from(VALUE_CHARS), max_size=6)
scalars = (
    st.booleans()
    | st.integers(min_value=-3, max_value=12)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.none()
    | value_text
    | st.just("a" * (MAX_CLAIM_TEXT + 1))
)


@st.composite
def claim_values(draw: st.DrawFn, depth: int = 2) -> object:
    kind = draw(st.integers(min_value=0, max_value=4 if depth > 0 else 1))
    if kind <= 1:
        return draw(scalars)
    if kind == 2:  # a list: scalars mostly, an object sometimes
        return draw(st.lists(scalars | claim_values(depth - 1), max_size=4))
    return draw(st.dictionaries(st.sampled_from(NAMES), claim_values(depth - 1), max_size=3))


claim_sets = st.dictionaries(st.sampled_from(NAMES), claim_values(), max_size=5)

tokens = (
    st.tuples(st.just("lit"), st.sampled_from(LITERAL_CHARS))
    | st.just(("any", ""))
    | st.just(("one", ""))
    | st.tuples(
        st.sampled_from(["in", "out"]),
        st.text(st.sampled_from(CLASS_CHARS), min_size=1, max_size=3),
    )
)


def from_text(text: str) -> tuple[Token, ...]:
    """A pattern that matches `text`: its characters as literals, each glob operator it holds
    (which a literal token cannot be) as `?`, which matches that character too."""
    return tuple(("one", "") if c in "*?[" else ("lit", c) for c in text)


@st.composite
def patterns(draw: st.DrawFn, claims: dict | None = None) -> tuple[Token, ...]:
    """A random glob, a random exact value, or (when there are claims) one built from a text
    of theirs, exact or with a few characters turned into `?`/`*`, so that matches are not
    left to chance."""
    kind = draw(st.integers(min_value=0, max_value=3))
    if kind == 0:
        return tuple(draw(st.lists(tokens, min_size=1, max_size=5)))
    known = [t for name in NAMES for t in texts(lookup(claims or {}, name)) if t]
    if kind >= 2 and known:
        built = list(from_text(draw(st.sampled_from(known))))
        for _ in range(draw(st.integers(min_value=0, max_value=2)) if kind == 3 else 0):
            i = draw(st.integers(min_value=0, max_value=len(built) - 1))
            built[i] = draw(st.sampled_from([("one", ""), ("any", "")]))
        return tuple(built)
    return tuple(
        ("lit", c) for c in draw(st.text(st.sampled_from(LITERAL_CHARS), min_size=1, max_size=4))
    )


@st.composite
def rules_and_claims(draw: st.DrawFn) -> tuple[RuleSpec, str, tuple[str, ...], dict]:
    claims = draw(claim_sets)
    present = [n for n in NAMES if lookup(claims, n) is not _MISSING] or NAMES
    conditions = tuple(
        (
            draw(st.sampled_from(present) | st.sampled_from(NAMES)),
            tuple(draw(st.lists(patterns(claims), min_size=1, max_size=3))),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    )
    issuers = tuple(draw(st.lists(st.sampled_from(ISSUERS), max_size=2, unique=True)))
    accounts: tuple[str, ...] = (draw(st.sampled_from([ANY, AUTHENTICATED, "ci"])),)
    bare: bool = draw(st.booleans())
    if issuers and bare:
        accounts = ()  # the usual `issuer:` rule: no `account:`
    groups = tuple(draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)))
    spec = RuleSpec(issuers, accounts, groups, conditions)
    issuer = draw(st.sampled_from(ISSUERS))
    identity_groups = tuple(draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)))
    return spec, issuer, identity_groups, claims


# -- properties ---------------------------------------------------------------------------------


@given(claim_sets, st.data())
def test_a_condition_holds_exactly_when_the_reference_says(claims, data):
    present = [n for n in NAMES if lookup(claims, n) is not _MISSING]
    name = data.draw(st.sampled_from(present) if present else st.sampled_from(NAMES))
    chosen = tuple(data.draw(st.lists(patterns(claims), min_size=1, max_size=3)))
    expected = reference_holds(claims, name, chosen)
    event(f"holds: {expected}")
    assert ClaimCondition(name, tuple(render(p) for p in chosen)).holds(claims) is expected


@given(rules_and_claims())
def test_a_rule_matches_a_federated_identity_exactly_when_the_reference_says(case):
    spec, issuer, groups, claims = case
    identity = Identity(None, federated=FederatedIdentity(issuer, "ci:x", groups, claims, 0.0))
    expected = reference_matches(spec, issuer, groups, claims)
    event(f"matches: {expected}")
    rule = spec.rule()
    assert rule.matches_identity(identity) is expected
    if spec.issuers:  # a rule for ID tokens never matches an account nor anonymous
        assert not rule.matches_anonymous()
        assert not rule.matches_identity(Identity(None))
        assert not rule.matches_identity(Identity(Account("ci", b"", tuple(GROUPS))))
