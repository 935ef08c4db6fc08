"""Claim conditions of `issuer:` rules and the subject template (federation/claim_rules.py):
exact, glob (fnmatch, `*` crossing `/`) and one-of values; claim paths through nested objects
with the whole name tried first; list claims matching on any scalar item; booleans and
integers as text; floats, objects, absent and over-long claims never matching (fail closed)."""

from __future__ import annotations

import pytest

from regauth.federation.claim_rules import MAX_CLAIM_TEXT
from regauth.federation.claim_rules import ClaimCondition
from regauth.federation.claim_rules import TemplateError
from regauth.federation.claim_rules import claim_texts
from regauth.federation.claim_rules import claim_value
from regauth.federation.claim_rules import render_subject
from regauth.federation.claim_rules import template_claims
from regauth.federation.claim_rules import value_matches

GITHUB = {
    "sub": "repo:acme/app:ref:refs/heads/main",
    "repository": "acme/app",
    "ref": "refs/heads/main",
    "ref_protected": True,
    "run_attempt": 2,
    "groups": ["dev", "ops", 7, {"x": 1}],
    "weight": 1.5,
    "nested": {"a": {"b": "deep"}},
    "kubernetes.io": {"namespace": "platform", "serviceaccount": {"name": "builder"}},
    "kubernetes.io/namespace": "flat-wins",
}


@pytest.mark.parametrize(
    ("claim", "values", "holds"),
    [
        ("repository", ("acme/app",), True),
        ("repository", ("acme/App",), False),  # exact is case-sensitive
        ("repository", ("acme/ap",), False),  # and whole
        ("repository", ("acme/*",), True),
        ("repository", ("ACME/*",), False),  # globs are case-sensitive too
        ("ref", ("refs/heads/*",), True),  # `*` crosses `/` (fnmatch, not a path glob)
        ("ref", ("refs/tags/*",), False),
        ("repository", ("acme/ap?",), True),
        ("repository", ("acme/[a-b]pp",), True),
        ("repository", ("acme/[!a]pp",), False),
        ("repository", ("other/x", "acme/*"), True),  # one of
        ("repository", ("other/x", "acme/y"), False),
        ("ref_protected", ("true",), True),  # a boolean compares as true/false
        ("ref_protected", ("True",), False),
        ("run_attempt", ("2",), True),  # an integer as decimal text
        ("run_attempt", ("02",), False),
        ("weight", ("1.5",), False),  # floats never match
        ("weight", ("*",), False),
        ("groups", ("ops",), True),  # a list matches on any scalar item
        ("groups", ("7",), True),
        ("groups", ("admin",), False),
        ("groups", ("*x*",), False),  # the object item is never compared
        ("nested", ("*",), False),  # an object is not comparable
        ("nested/a/b", ("deep",), True),  # a path through objects
        ("nested/a/c", ("*",), False),
        ("nested/a/b/c", ("*",), False),  # through a string: absent
        ("kubernetes.io/namespace", ("flat-wins",), True),  # the whole name first
        ("kubernetes.io/serviceaccount/name", ("builder",), True),
        ("absent", ("*",), False),  # an absent claim never holds, not even for `*`
    ],
)
def test_condition_holds(claim, values, holds):
    assert ClaimCondition(claim, values).holds(GITHUB) is holds


def test_a_pattern_without_glob_characters_is_exact():
    # fnmatch would treat nothing here specially either, but the exact path is what runs.
    assert value_matches("refs/heads/main", "refs/heads/main")
    assert not value_matches("refs/heads/main", "refs/heads/main2")
    # A claim value holding glob characters is only text: it matches only itself exactly.
    assert value_matches("a*", "a*") and value_matches("a*", "abc")
    assert not value_matches("abc", "a*")


def test_over_long_claim_values_never_match():
    long = "a" * (MAX_CLAIM_TEXT + 1)
    assert not ClaimCondition("x", ("a*",)).holds({"x": long})
    assert ClaimCondition("x", ("a*",)).holds({"x": long[:-1]})


def test_claim_value_and_texts():
    assert claim_value(GITHUB, "nested/a") == {"b": "deep"}
    assert claim_value(GITHUB, "nested/zz") is None
    assert claim_value({"a": [{"b": 1}]}, "a/0/b") is None  # no indexing into lists
    assert claim_texts(GITHUB, "groups") == ["dev", "ops", "7"]
    assert claim_texts(GITHUB, "ref_protected") == ["true"]
    assert claim_texts({"g": [True, None, 1.0, "x"]}, "g") == ["true", "x"]
    assert claim_texts(GITHUB, "absent") == []


def test_describe_names_the_claim_and_values():
    assert ClaimCondition("ref", ("refs/heads/main",)).describe() == "ref: refs/heads/main"
    assert ClaimCondition("ref", ("a", "b*")).describe() == "ref: one of a, b*"


def test_render_subject():
    assert render_subject("ci:{repository}", GITHUB) == "ci:acme/app"
    assert render_subject("{repository}@{ref}#{run_attempt}", GITHUB) == (
        "acme/app@refs/heads/main#2"
    )
    assert render_subject("sa:{kubernetes.io/serviceaccount/name}", GITHUB) == "sa:builder"
    assert render_subject("{ref_protected}", GITHUB) == "true"
    assert template_claims("ci:{repository}:{ref}") == ["repository", "ref"]
    assert template_claims("no claims") == []


@pytest.mark.parametrize("template", ["ci:{absent}", "{weight}", "{nested}", "{groups}"])
def test_render_subject_refuses_absent_or_non_scalar_claims(template):
    with pytest.raises(TemplateError):
        render_subject(template, GITHUB)
