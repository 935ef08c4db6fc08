"""The token scope grammar (distribution docs/spec/auth/scope.md).

    scope         := resourcescope [ ' ' resourcescope ]*
    resourcescope := resourcetype ":" resourcename ":" action [ ',' action ]*

A resource name may itself contain one ':' (``host:port/name``), so the type is what precedes
the first ':' and the actions are what follows the last one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from regauth.protocol import grammar

ACTIONS = ("pull", "push", "delete", "*")
REPOSITORY = "repository"
REGISTRY = "registry"

_TYPE_RE = re.compile(r"(?P<type>[a-z0-9]+)(?:\((?P<cls>[a-z0-9]+)\))?")
_ACTION_RE = re.compile(r"[a-z]+|\*")
# Any resource type outside the two we know still needs a name that cannot break a header.
_GENERIC_NAME_RE = re.compile(r"[A-Za-z0-9._/:-]{1,255}")
# Bounds keep a hostile token request from costing more than parsing a few registry scopes.
MAX_SCOPE_LENGTH = 1024
MAX_SCOPES = 32


@dataclass(frozen=True, order=True)
class ResourceScope:
    """`type:name:actions`, as in a token request's `scope`, a challenge, or a token's
    `access` claim (distribution's auth/scope.md); `str()` gives it back in that form."""

    type: str  # REPOSITORY or REGISTRY (or another type a client names)
    name: str  # a repository name, or `catalog` for the registry
    actions: tuple[str, ...]  # canonical order (`canonical_actions`); `*` means all

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def with_actions(self, actions: Iterable[str]) -> ResourceScope:
        return ResourceScope(self.type, self.name, canonical_actions(actions))

    def as_claim(self) -> dict[str, object]:
        """The JWT `access` entry for this scope."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def canonical_actions(actions: Iterable[str]) -> tuple[str, ...]:
    """Deduplicated, in the fixed order of ACTIONS (unknown actions sorted after)."""
    unique = set(actions)
    known = [a for a in ACTIONS if a in unique]
    return tuple(known + sorted(unique - set(ACTIONS)))


def parse_scope(text: str) -> ResourceScope:
    """Parse one resource scope; raise ValueError naming what is wrong."""
    if len(text) > MAX_SCOPE_LENGTH:
        raise ValueError(f"scope longer than {MAX_SCOPE_LENGTH} characters")
    if not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError("scope contains characters outside the scope grammar")
    first = text.find(":")
    last = text.rfind(":")
    if first <= 0 or last == first:
        raise ValueError("expected resourcetype:resourcename:actions")
    type_text, name, action_text = text[:first], text[first + 1 : last], text[last + 1 :]
    type_match = _TYPE_RE.fullmatch(type_text)
    if type_match is None:
        raise ValueError(f"invalid resource type {type_text!r}")
    # The resource class (`repository(plugin)`) is deprecated and ignored by the spec.
    resource_type = type_match.group("type")
    _check_name(resource_type, name)
    actions = action_text.split(",")
    if not actions or any(_ACTION_RE.fullmatch(a) is None for a in actions):
        raise ValueError(f"invalid action list {action_text!r}")
    return ResourceScope(resource_type, name, canonical_actions(actions))


def _check_name(resource_type: str, name: str) -> None:
    if resource_type == REPOSITORY:
        if not grammar.is_scope_name(name):
            raise ValueError(f"invalid repository name {name!r}")
    elif resource_type == REGISTRY:
        if name != "catalog":
            raise ValueError(f"unknown registry resource {name!r}")
    elif _GENERIC_NAME_RE.fullmatch(name) is None:
        raise ValueError(f"invalid resource name {name!r}")


def parse_scopes(values: Iterable[str]) -> list[ResourceScope]:
    """Parse scope parameters, each of which may hold several space-separated scopes.

    Scopes naming the same resource are merged, so the result has one entry per resource.
    """
    merged: dict[tuple[str, str], set[str]] = {}
    for value in values:
        for item in value.split(" "):
            if not item:
                continue
            try:
                scope = parse_scope(item)
            except ValueError as e:
                shown = item if len(item) <= 200 else item[:200] + "…"
                raise ValueError(f"{shown!r}: {e}") from None
            merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
            if len(merged) > MAX_SCOPES:
                raise ValueError(f"more than {MAX_SCOPES} resources requested")
    return [ResourceScope(t, n, canonical_actions(a)) for (t, n), a in merged.items()]


def format_scopes(scopes: Iterable[ResourceScope]) -> str:
    """Space-separated scope string, as in a challenge's `scope` parameter."""
    return " ".join(str(s) for s in scopes)


def covers(granted: Iterable[ResourceScope], required: ResourceScope) -> bool:
    """True if the granted scopes include every action of `required` (`*` grants all)."""
    have: set[str] = set()
    for scope in granted:
        if scope.type == required.type and scope.name == required.name:
            have.update(scope.actions)
    return "*" in have or set(required.actions) <= have
