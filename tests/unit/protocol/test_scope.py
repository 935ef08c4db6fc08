import pytest

from regauth.protocol import grammar
from regauth.protocol.scope import MAX_SCOPE_LENGTH
from regauth.protocol.scope import MAX_SCOPES
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import canonical_actions
from regauth.protocol.scope import covers
from regauth.protocol.scope import format_scopes
from regauth.protocol.scope import parse_scope
from regauth.protocol.scope import parse_scopes


@pytest.mark.parametrize(
    ("text", "type_", "name", "actions"),
    [
        ("repository:samalba/my-app:pull,push", "repository", "samalba/my-app", ("pull", "push")),
        (
            "repository:localhost:5000/foo/bar:pull",
            "repository",
            "localhost:5000/foo/bar",
            ("pull",),
        ),
        (
            "repository:registry.example.com/a:push",
            "repository",
            "registry.example.com/a",
            ("push",),
        ),
        ("repository:a/b/c:pull", "repository", "a/b/c", ("pull",)),
        ("repository:a:*", "repository", "a", ("*",)),
        ("registry:catalog:*", "registry", "catalog", ("*",)),
        # the deprecated resource class is accepted and ignored
        ("repository(plugin):x:pull", "repository", "x", ("pull",)),
        # unknown actions are kept (sorted after the known ones)
        ("repository:a:scannerpull,pull", "repository", "a", ("pull", "scannerpull")),
        # an unknown type with a header-safe name
        ("vendor:thing:read", "vendor", "thing", ("read",)),
    ],
)
def test_parse_scope_accepts(text, type_, name, actions):
    parsed = parse_scope(text)
    assert (parsed.type, parsed.name, parsed.actions) == (type_, name, actions)


def test_resource_class_is_dropped_from_the_rendering():
    assert str(parse_scope("repository(plugin):x:pull")) == "repository:x:pull"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("repository:a:push,pull", ("pull", "push")),
        ("repository:a:delete,push,pull", ("pull", "push", "delete")),
        ("repository:a:*,delete,pull", ("pull", "delete", "*")),
        ("repository:a:pull,pull,pull", ("pull",)),
    ],
)
def test_actions_are_deduplicated_in_canonical_order(given, canonical):
    assert parse_scope(given).actions == canonical


def test_canonical_actions_sorts_unknown_actions_after_known():
    assert canonical_actions(["zeta", "push", "alpha", "pull"]) == ("pull", "push", "alpha", "zeta")


@pytest.mark.parametrize(
    "text",
    [
        "repository:a:",  # empty action list
        "repository:a:pull,",  # empty action in the list
        "repository:a:,pull",
        "repository:A:pull",  # uppercase name
        "repository:a:PULL",  # uppercase action
        "Repository:a:pull",  # uppercase type
        "repository:a\r:pull",
        "repository:a:pull\n",
        "repository:a\nb:pull",
        'repository:a":pull',
        'repository:"a":pull',
        "repository:a b:pull",
        "repository:a:pull push",
        "repository:a:pu\tll",
        "repository:a\\b:pull",
        "repository:-a:pull",  # outside the OCI name grammar
        "repository:a//b:pull",
        "repository:a/:pull",
        "repository:a..b:pull",
        "repository:/a:pull",
        "repository::pull",
        "repository:a",  # only one ':'
        "repository",
        ":a:pull",
        "registry:other:*",  # the only registry resource is the catalog
        "repository(Plugin):x:pull",
        "repository():x:pull",
        'vendor:th"ing:read',
        "repository:ä:pull",
        "repository:a:pull1",
        "repository:a:**",
        "repository:host:99999999/a:pull",  # port too long for the hostname grammar
    ],
)
def test_parse_scope_rejects(text):
    with pytest.raises(ValueError):
        parse_scope(text)


def test_parse_scope_rejects_overlong_text():
    name = "/".join(["abcdefgh"] * 130)  # about 1170 characters
    with pytest.raises(ValueError, match="longer than"):
        parse_scope(f"repository:{name}:pull")
    assert len(f"repository:{name}:pull") > MAX_SCOPE_LENGTH


def test_parse_scope_rejects_name_longer_than_distribution_allows():
    name = "a" * (grammar.MAX_NAME_LENGTH + 1)
    with pytest.raises(ValueError, match="invalid repository name"):
        parse_scope(f"repository:{name}:pull")
    assert (
        parse_scope(f"repository:{'a' * grammar.MAX_NAME_LENGTH}:pull").name
        == "a" * grammar.MAX_NAME_LENGTH
    )


def test_parse_scopes_splits_space_separated_values_and_repeated_params():
    scopes = parse_scopes(["repository:a:pull repository:b:push", "registry:catalog:*"])
    assert [str(s) for s in scopes] == [
        "repository:a:pull",
        "repository:b:push",
        "registry:catalog:*",
    ]


def test_parse_scopes_merges_duplicate_resources():
    scopes = parse_scopes(
        ["repository:a:push repository:b:pull", "repository:a:pull repository(x):a:delete"]
    )
    assert scopes == [
        ResourceScope("repository", "a", ("pull", "push", "delete")),
        ResourceScope("repository", "b", ("pull",)),
    ]


def test_parse_scopes_keeps_types_apart():
    scopes = parse_scopes(["repository:catalog:pull registry:catalog:*"])
    assert [str(s) for s in scopes] == ["repository:catalog:pull", "registry:catalog:*"]


def test_parse_scopes_ignores_empty_items_and_values():
    assert parse_scopes(["", "  repository:a:pull  "]) == [parse_scope("repository:a:pull")]
    assert parse_scopes([]) == []


def test_parse_scopes_rejects_a_bad_element_anywhere():
    with pytest.raises(ValueError):
        parse_scopes(["repository:a:pull repository:B:pull"])


def test_parse_scopes_limits_the_number_of_resources():
    many = " ".join(f"repository:r{i}:pull" for i in range(MAX_SCOPES))
    assert len(parse_scopes([many])) == MAX_SCOPES
    with pytest.raises(ValueError, match="more than"):
        parse_scopes([many + f" repository:r{MAX_SCOPES}:pull"])


def test_merged_duplicates_do_not_count_against_the_limit():
    same = " ".join("repository:a:pull" for _ in range(MAX_SCOPES * 2))
    assert len(parse_scopes([same])) == 1


def test_format_scopes_and_as_claim():
    scopes = parse_scopes(["repository:a:push,pull repository:b:pull"])
    assert format_scopes(scopes) == "repository:a:pull,push repository:b:pull"
    assert scopes[0].as_claim() == {"type": "repository", "name": "a", "actions": ["pull", "push"]}


def test_with_actions_canonicalizes():
    s = parse_scope("repository:a:pull")
    assert s.with_actions(["push", "pull", "push"]).actions == ("pull", "push")


def _s(text):
    return parse_scope(text)


@pytest.mark.parametrize(
    ("granted", "required", "expected"),
    [
        (["repository:a:pull"], "repository:a:pull", True),
        (["repository:a:pull"], "repository:a:pull,push", False),
        (["repository:a:pull", "repository:a:push"], "repository:a:pull,push", True),
        (["repository:a:pull,push"], "repository:a:delete", False),
        (["repository:a:*"], "repository:a:pull,push,delete", True),
        (["repository:a:*"], "repository:a:delete", True),
        (["repository:b:*"], "repository:a:pull", False),
        (["repository:a/b:pull"], "repository:a:pull", False),
        (["repository:catalog:*"], "registry:catalog:*", False),
        (["registry:catalog:*"], "registry:catalog:*", True),
        ([], "repository:a:pull", False),
        (["repository:a:pull"], "repository:a:*", False),
    ],
)
def test_covers(granted, required, expected):
    assert covers([_s(g) for g in granted], _s(required)) is expected
