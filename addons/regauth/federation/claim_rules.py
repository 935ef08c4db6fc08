"""Claim conditions of policy rules, and the subject template of a federated issuer.

A condition names a claim and what its value must be: one exact value, one shell glob
(`fnmatch`: `*` also crosses `/`, so `refs/heads/*` matches `refs/heads/a/b`), or one of
several (a YAML list, each exact or glob). A claim is a top-level claim name, or a path through
nested objects written with `/` (`kubernetes.io/namespace`), the whole name being tried first.

Values compare as text: a string as it is, `true`/`false` for booleans, decimal integers. A
list claim (`aud`, `groups`) matches when one of its scalar items does. Objects, floats and
absent claims never match: a condition that cannot be checked does not hold (fail closed).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_CLAIM_TEXT = 1024  # characters of a claim value compared; longer values never match
GLOB_CHARS = frozenset("*?[")
_TEMPLATE_RE = re.compile(r"\{([A-Za-z0-9_.:/-]{1,128})\}")


@dataclass(frozen=True)
class ClaimCondition:
    """`claim` must have one of `values` (each exact, or a glob when it holds `*?[`)."""

    claim: str
    values: tuple[str, ...]
    line: int = 0  # in the policy file, for explanations

    def holds(self, claims: Mapping[str, object]) -> bool:
        found = claim_texts(claims, self.claim)
        return any(value_matches(pattern, text) for pattern in self.values for text in found)

    def describe(self) -> str:
        if len(self.values) == 1:
            return f"{self.claim}: {self.values[0]}"
        return f"{self.claim}: one of {', '.join(self.values)}"


def value_matches(pattern: str, text: str) -> bool:
    """Exact unless `pattern` holds a glob character (`*`, `?`, `[`)."""
    if GLOB_CHARS.isdisjoint(pattern):
        return pattern == text
    return fnmatch.fnmatchcase(text, pattern)


def claim_value(claims: Mapping[str, object], name: str) -> object | None:
    """The claim `name`: a top-level member, else a `/`-separated path through objects."""
    if name in claims:
        return claims[name]
    node: object = claims
    for part in name.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def as_text(value: object) -> str | None:
    """A scalar claim value as the text conditions compare, or None (not comparable)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and len(value) <= MAX_CLAIM_TEXT:
        return value
    return None


def claim_texts(claims: Mapping[str, object], name: str) -> list[str]:
    """Every comparable text of the claim: one for a scalar, one per scalar item of a list."""
    value = claim_value(claims, name)
    items = value if isinstance(value, list) else [value]
    return [t for item in items if (t := as_text(item)) is not None]


class TemplateError(ValueError):
    """A subject template names a claim the token lacks (or one that is not a scalar)."""


def template_claims(template: str) -> list[str]:
    """The claim names a subject template uses (`{repository}` → `repository`)."""
    return _TEMPLATE_RE.findall(template)


def render_subject(template: str, claims: Mapping[str, object]) -> str:
    """`template` with each `{claim}` replaced by its value (`ci:{repository}` → `ci:acme/app`).
    Raises TemplateError when a claim is absent or not a scalar."""

    def substitute(m: re.Match[str]) -> str:
        text = as_text(claim_value(claims, m.group(1)))
        if text is None:
            raise TemplateError(f"the token has no usable claim {m.group(1)!r}")
        return text

    return _TEMPLATE_RE.sub(substitute, template)
