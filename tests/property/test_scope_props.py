"""Token scopes (scope.py, distribution's scope.md): parse_scope and parse_scopes raise only
ValueError, and what they accept is canonical and parses back to itself."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from regauth.protocol.scope import MAX_SCOPES
from regauth.protocol.scope import parse_scope
from regauth.protocol.scope import parse_scopes
from tests.property.strategies import any_text
from tests.property.strategies import text_from

NAME_CHARS = string.ascii_lowercase + string.digits + "._-/:"
parts = st.tuples(
    st.sampled_from(["repository", "registry", "repository(plugin)", "x", "", "Repository"])
    | text_from(string.ascii_lowercase + "()", 20),
    st.sampled_from(["a", "public/app", "catalog", "host:5000/a/b", "a" * 256, "A", "a//b"])
    | text_from(NAME_CHARS, 80),
    st.lists(st.sampled_from(["pull", "push", "delete", "*", "", "PULL", "x"]), max_size=5).map(
        ",".join
    )
    | text_from(string.ascii_lowercase + ",*", 30),
)
scope_text = st.one_of(parts.map(":".join), text_from(NAME_CHARS + ",* ", 200), any_text)


@given(scope_text)
def test_parse_scope_raises_only_value_error(text: str) -> None:
    try:
        scope = parse_scope(text)
    except ValueError:
        return
    assert parse_scope(str(scope)) == scope
    assert scope.actions and len(set(scope.actions)) == len(scope.actions)


@given(st.lists(st.lists(scope_text, max_size=6).map(" ".join) | any_text, max_size=8))
def test_parse_scopes_raises_only_value_error(values: list[str]) -> None:
    try:
        scopes = parse_scopes(values)
    except ValueError:
        return
    assert len(scopes) <= MAX_SCOPES
    assert len({(s.type, s.name) for s in scopes}) == len(scopes)  # one entry per resource
