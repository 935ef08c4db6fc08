"""Repository name patterns used by policy rules.

Glob syntax, always anchored at both ends and matched against the whole name:

    *            a whole segment: exactly one segment; inside a segment (`app-*`): any run
                 of characters, possibly empty, that stays inside the segment
    **           one or more whole path segments (only as a segment of its own)
    ${account}   the requesting account's name
    ${group}     any of the account's groups
    ${labels.K}  any value of the account's label K
    ${build}     the build a verified client certificate names (`regauth:build:ID`); a pattern
                 with it matches only on such a connection
    {cap}        a capability id declared under `capabilities:` (only as a whole segment)

Regular expressions are allowed only when marked (`{regex: ...}`) and are always anchored.
Capability ids are secrets with a declared alphabet and length, whose strength is checked at load.

Every pattern is matched with RE2 (linear_regex.py), in time linear in the name: a client chooses
the name, and Python's backtracking `re` is exponential on `(a+)+b` and polynomial of degree k on
a glob segment with k stars (`*a*a*a*a*b`). Globs with placeholders are expanded once per set of
account values and cached, not rebuilt on every match.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from regauth.policy.linear_regex import Matcher
from regauth.policy.linear_regex import compile_linear
from regauth.policy.linear_regex import compile_policy_regex

# The placeholder names, one grammar for the matcher and the tools (tools/witnesses.py).
PLACEHOLDER_VARS = r"account|group|build|subject|labels\.[a-z0-9_-]+|claims\.[A-Za-z0-9_]+"
_PLACEHOLDER_RE = re.compile(r"\$\{(?P<var>" + PLACEHOLDER_VARS + r")\}")
_CAPABILITY_SEGMENT_RE = re.compile(r"\{(?P<cap>[a-z][a-z0-9_-]*)\}")
_LITERAL_RE = re.compile(r"[a-z0-9._-]+")
_CAPABILITY_PATTERN_RE = re.compile(r"\[(?P<cls>[a-z0-9-]+)\]\{(?P<min>\d+)(?:,(?P<max>\d+))?\}")
_CLASS_RANGE_RE = re.compile(r"([a-z0-9])-([a-z0-9])|([a-z0-9])")

MIN_CAPABILITY_BITS = 128


@dataclass(frozen=True)
class Capability:
    """A declared capability id: `[alphabet]{min,max}` over lower-case letters and digits."""

    name: str
    alphabet: frozenset[str]
    min_length: int
    max_length: int

    @property
    def bits(self) -> float:
        return self.min_length * math.log2(len(self.alphabet))

    @property
    def regex(self) -> str:
        chars = "".join(sorted(self.alphabet))
        return f"[{re.escape(chars)}]{{{self.min_length},{self.max_length}}}"


def parse_capability(name: str, pattern: str) -> Capability:
    """Parse `[a-z0-9]{26}` or `[0-9a-f]{32,64}`; refuse anything weaker than 128 bits."""
    m = _CAPABILITY_PATTERN_RE.fullmatch(pattern)
    if m is None:
        raise ValueError(
            "capability pattern must look like [a-z0-9]{26} or [0-9a-f]{32,64}: "
            "one character class of lower-case letters and digits and a length"
        )
    alphabet: set[str] = set()
    cls = m.group("cls")
    pos = 0
    for part in _CLASS_RANGE_RE.finditer(cls):
        if part.start() != pos:
            raise ValueError(f"cannot read character class [{cls}]")
        pos = part.end()
        if part.group(3):
            alphabet.add(part.group(3))
            continue
        lo, hi = part.group(1), part.group(2)
        if ord(lo) > ord(hi) or lo.isdigit() != hi.isdigit():
            raise ValueError(f"bad range {lo}-{hi} in character class")
        alphabet.update(chr(c) for c in range(ord(lo), ord(hi) + 1))
    if pos != len(cls):
        raise ValueError(f"cannot read character class [{cls}]")
    min_length = int(m.group("min"))
    max_length = int(m.group("max") or min_length)
    if max_length < min_length or max_length > 128:
        raise ValueError("capability length range is inverted or longer than 128")
    if len(alphabet) < 2:
        raise ValueError("capability alphabet needs at least two characters")
    cap = Capability(name, frozenset(alphabet), min_length, max_length)
    if cap.bits < MIN_CAPABILITY_BITS:
        raise ValueError(
            f"capability {name!r} is worth {cap.bits:.0f} bits ({min_length} characters from "
            f"an alphabet of {len(alphabet)}); at least {MIN_CAPABILITY_BITS} are required"
        )
    return cap


# literal: `cache`; star: `*`; globstar: `**`; capability: `{id}`; mixed: a literal with
# placeholders or `*` inside (`team-${group}`, `app-*`).
SegmentKind = Literal["literal", "star", "globstar", "capability", "mixed"]


@dataclass(frozen=True)
class Segment:
    """One `/`-separated segment of a glob pattern."""

    kind: SegmentKind
    text: str  # as written; for a capability, its regex


@dataclass(frozen=True)
class RepositoryPattern:
    """A compiled pattern; `matches(name, variables)` decides a name for one account."""

    source: str
    is_regex: bool
    segments: tuple[Segment, ...]
    # RE2; set when the pattern has no placeholders. Derived from the fields above, so left out
    # of ==/hash (RE2 objects compare by identity).
    compiled: Matcher | None = field(compare=False)
    capabilities: tuple[str, ...]
    placeholders: tuple[str, ...]

    def build_prefix_ok(self) -> bool:
        """True if a whole `${build}` segment comes after literal segments only (`builds/${build}`,
        `builds/${build}/**`): the pattern matches nothing without a verified build certificate,
        and each build only inside its own namespace, so anonymous writes are safe there too."""
        if self.is_regex:
            return False
        literal_prefix = False
        for segment in self.segments:
            if segment.text == "${build}":
                return literal_prefix
            if segment.kind != "literal":
                return False
            literal_prefix = True
        return False

    def capability_prefix_ok(self) -> bool:
        """True if a capability segment comes before anything but literal segments.

        Anonymous write access is only safe when the repository is unguessable *and* in a
        namespace the operator chose: `builds/{id}` or `builds/{id}/**`, never `**/{id}`.
        """
        if self.is_regex:
            return False
        literal_prefix = False
        for segment in self.segments:
            if segment.kind == "capability":
                return literal_prefix
            if segment.kind != "literal":
                return False
            literal_prefix = True
        return False

    def matches(self, name: str, variables: dict[str, list[str]] | None = None) -> bool:
        """Whether `name` matches the whole pattern, for an account's placeholder values
        (`{"account": [...], "group": [...], "labels.K": [...]}`). Linear in len(name)."""
        if self.compiled is not None:
            return self.compiled.fullmatch(name) is not None
        given = variables or {}
        # Only the values this pattern uses are in the key: accounts sharing them share an entry.
        bindings = tuple(
            (var, tuple(given.get(var, ()))) for var in dict.fromkeys(self.placeholders)
        )
        compiled = _expanded(self.segments, bindings)
        return compiled is not None and compiled.fullmatch(name) is not None

    def _expand(self, variables: dict[str, list[str]]) -> str | None:
        """Regex text with placeholders replaced by the alternatives of the account's values."""

        def substitute(m: re.Match[str]) -> str:
            values = variables.get(m.group("var"), [])
            if not values:
                raise _NoValue
            return "(?:" + "|".join(re.escape(v) for v in values) + ")"

        try:
            return "/".join(_segment_regex(s, substitute) for s in self.segments)
        except _NoValue:
            return None


@functools.lru_cache(maxsize=4096)
def _expanded(
    segments: tuple[Segment, ...], bindings: tuple[tuple[str, tuple[str, ...]], ...]
) -> Matcher | None:
    """The compiled expansion of a glob for one set of placeholder values (None: a placeholder
    has no value, so nothing matches). Keys come from policy accounts, never from clients, so
    the cache holds at most patterns × distinct value sets."""
    pattern = RepositoryPattern("", False, segments, None, (), ())
    regex = pattern._expand({var: list(values) for var, values in bindings})
    return None if regex is None else compile_linear(regex)


class _NoValue(Exception):
    """A placeholder has no value for this account, so the pattern cannot match."""


def _segment_regex(segment: Segment, substitute) -> str:
    if segment.kind == "literal":
        return re.escape(segment.text)
    if segment.kind == "star":
        return "[^/]+"
    if segment.kind == "globstar":
        return "[^/]+(?:/[^/]+)*"
    if segment.kind == "capability":
        return segment.text  # already a regex
    out = []
    pos = 0
    text = segment.text
    for m in re.finditer(r"\$\{[^}]*\}|\*", text):
        out.append(re.escape(text[pos : m.start()]))
        out.append("[^/]*" if m.group() == "*" else _PLACEHOLDER_RE.sub(substitute, m.group()))
        pos = m.end()
    out.append(re.escape(text[pos:]))
    return "".join(out)


def compile_glob(source: str, capabilities: dict[str, Capability]) -> RepositoryPattern:
    if not source:
        raise ValueError("empty repository pattern")
    if source.startswith("/") or source.endswith("/"):
        raise ValueError("repository patterns have no leading or trailing '/'")
    segments: list[Segment] = []
    used_caps: list[str] = []
    placeholders: list[str] = []
    for text in source.split("/"):
        if not text:
            raise ValueError("empty path segment ('//') in pattern")
        if text == "**":
            segments.append(Segment("globstar", text))
            continue
        if text == "*":
            segments.append(Segment("star", text))
            continue
        cap = _CAPABILITY_SEGMENT_RE.fullmatch(text)
        if cap is not None:
            name = cap.group("cap")
            if name not in capabilities:
                raise ValueError(
                    f"unknown capability {{{name}}} (declare it under `capabilities:`)"
                )
            used_caps.append(name)
            segments.append(Segment("capability", capabilities[name].regex))
            continue
        if "{" in text.replace("${", "") or "**" in text:
            raise ValueError(f"segment {text!r}: capabilities and '**' must be whole segments")
        rest = _PLACEHOLDER_RE.sub("", text).replace("*", "")
        if "$" in rest or "}" in rest:
            raise ValueError(
                f"segment {text!r}: unknown placeholder (use ${{account}}, "
                "${group}, ${build}, ${labels.NAME}, ${subject} or ${claims.NAME})"
            )
        if rest and _LITERAL_RE.fullmatch(rest) is None:
            raise ValueError(
                f"segment {text!r}: only lower-case letters, digits, '.', '_' "
                "and '-' may appear in repository names"
            )
        found = [m.group("var") for m in _PLACEHOLDER_RE.finditer(text)]
        placeholders += found
        segments.append(Segment("literal" if not found and "*" not in text else "mixed", text))
    pattern = RepositoryPattern(
        source, False, tuple(segments), None, tuple(used_caps), tuple(placeholders)
    )
    if not placeholders:
        regex = pattern._expand({})
        assert regex is not None
        pattern = RepositoryPattern(
            source, False, tuple(segments), compile_linear(regex), tuple(used_caps), ()
        )
    return pattern


def compile_regex(source: str) -> RepositoryPattern:
    """A `{regex: ...}` pattern, matched anchored at both ends with RE2.

    Raises linear_regex.RegexError (a ValueError, with the offending character's offset and a
    hint) for anything outside the dialect RE2 and Python's re read alike."""
    return RepositoryPattern(source, True, (), compile_policy_regex(source), (), ())
