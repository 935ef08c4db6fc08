"""The witnesses `policy diff` decides (`regauth.tools.witnesses`): repository names covering
every combination of the patterns they match (a sample, said so, when a regex cannot be
analysed), address classes in which every network's membership is constant, and the subjects
who ask. Diffing with them against brute force is test_policy_diff.py."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest

from regauth.policy.load import load_policy_text
from regauth.tools.witnesses import SYMBOLIC_ACCOUNT
from regauth.tools.witnesses import address_classes
from regauth.tools.witnesses import merge_labels
from regauth.tools.witnesses import name_witnesses
from regauth.tools.witnesses import subjects

HASH = "$2b$04$" + "a" * 53


@pytest.mark.parametrize(
    "expressions",
    [
        [
            "cache/[^/]+(?:/[^/]+)*",
            "(?:public|demo)/[^/]+",
            "builds/[a-z0-9]{26}",
            "app-[^/]*",
            "[^/]+/(?:alice)-x",
            "a.*b",
        ],
    ],
)
def test_name_witnesses_cover_every_combination(expressions: list[str]) -> None:
    result = name_witnesses(expressions)
    vectors = {tuple(re.fullmatch(e, n) is not None for e in expressions) for n in result.names}
    assert len(vectors) == len(result.names)
    for name in itertools.product(
        ["cache", "public", "app-x", "a", "xb", "alice-x"], ["", "/x", "/alice-x"]
    ):
        text = "".join(name)
        assert tuple(re.fullmatch(e, text) is not None for e in expressions) in vectors


def test_unreadable_regex_makes_a_sample() -> None:
    result = name_witnesses([r"(a)\1", "cache/.*"])
    assert not result.exact and "sample" in result.notes[0]


def test_address_classes_split_the_space_where_a_network_begins_or_ends():
    networks = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16")]
    classes = address_classes(networks)
    assert [(str(c.first), str(c.last)) for c in classes] == [
        ("0.0.0.0", "9.255.255.255"),
        ("10.0.0.0", "10.0.255.255"),
        ("10.1.0.0", "10.1.255.255"),
        ("10.2.0.0", "10.255.255.255"),
        ("11.0.0.0", "255.255.255.255"),
    ]
    assert [c.witness for c in classes] == [str(c.first) for c in classes]
    assert [c.label() for c in classes][1:3] == ["10.0.0.0/16", "10.1.0.0/16"]
    assert classes[0].label() == "0.0.0.0-9.255.255.255"
    assert [str(c.first) for c in address_classes([])] == ["0.0.0.0"]
    six = address_classes([ipaddress.ip_network("fd00::/8")])
    assert [str(c.first) for c in six] == ["::", "fd00::", "fe00::"]


def test_merged_labels_join_adjacent_classes_and_say_nothing_for_everything():
    classes = address_classes(
        [ipaddress.ip_network("10.0.0.0/9"), ipaddress.ip_network("10.128.0.0/9")]
    )
    inside = [c for c in classes if str(c.first).startswith("10.")]
    assert merge_labels(inside, classes) == ("10.0.0.0/8",)
    assert merge_labels(classes, classes) == ()


def test_subjects_are_anonymous_every_declared_account_and_a_symbolic_one():
    old = load_policy_text(f"""version: 1
service: s
accounts: {{ci: {{password_hash: "{HASH}"}}}}
rules: []
""")
    new = load_policy_text(f"""version: 1
service: s
accounts: {{alice: {{password_hash: "{HASH}", groups: [dev]}}}}
rules:
  - account: authenticated
    group: dev
    repository: "dev/**"
    actions: [pull]
""")
    found = {s.name: s for s in subjects(old, new)}
    assert ["anonymous", "alice", "ci"] == list(found)[:3]
    assert found["ci"].old is not None and found["ci"].new is None  # cannot sign in any more
    assert found["alice"].old is None and found["alice"].new is not None
    symbolic = [s for s in found.values() if s.symbolic]
    assert symbolic and all(s.old is not None and s.new is not None for s in symbolic)
    assert all(s.new.account.name == SYMBOLIC_ACCOUNT for s in symbolic)
    assert any("dev" in s.new.account.groups for s in symbolic)
