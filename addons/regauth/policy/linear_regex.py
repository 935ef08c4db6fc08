"""Regular expressions matched in linear time (RE2), for everything a client can aim at.

A client chooses the repository name that policy patterns are matched against. Python's `re`
backtracks: `(a+)+b` against 28 `a`s costs seconds and a 255-character name never returns, which
would stall the proxy's single event loop. RE2 (https://github.com/google/re2/wiki/Syntax) runs
in time linear in the name, whatever the pattern.

Policy regexes (`repository: {regex: ...}`) are accepted in one dialect: **what RE2 and Python's
`re` both read, with the same meaning**. Earlier regauth versions matched with Python's `re`, so
an existing policy either keeps its exact meaning or is refused at load; never silently changed.
Refused, each with the offending character's offset and a hint:

- what RE2 lacks: backreferences (`\\1`, `(?P=n)`), lookahead/lookbehind (`(?=`, `(?!`, `(?<=`,
  `(?<!`), atomic groups `(?>...)`, possessive quantifiers (`*+`, `++`, `?+`, `{n}+`),
  conditionals `(?(1)...)`, comments `(?#...)`, the flags `x`, `a`, `u`, `L`, `\\Z`, `\\N{...}`,
  `\\u`/`\\U` escapes, `[\\b]`, counted repetition above 1000;
- what only RE2 reads: `\\z`, `\\pL`/`\\p{...}`, `\\Q...\\E`, `\\C`, `\\x{...}`, `(?<name>...)`,
  the flag `U`, flags after the start (`a(?i)b`), POSIX classes `[[:alpha:]]` (Python reads a
  nested set there), duplicate group names;
- what both read differently: `{,n}` and `{,}` (Python: 0 to n; RE2: the literal text),
  repetition counts with leading zeros (`{01}`), so any `{` outside a class must open a
  repetition written `{n}`, `{n,}` or `{n,m}` (write `\\{` for a literal brace);
- characters outside ASCII (repository names are ASCII, see grammar.py).

On the names these patterns see (the OCI name grammar, optionally `host[:port]/`-prefixed: ASCII
letters, digits, `._-:/`, never empty, never a newline or space), the remaining differences
between the engines cannot show: `\\d`, `\\w`, `\\s`, `\\b` are ASCII in RE2 and Unicode in
Python but agree on ASCII; `$` before a trailing newline and the `m`/`s` flags only differ on
newlines; case folding only differs outside ASCII.
"""

from __future__ import annotations

import re
import warnings
from typing import Protocol

import re2

# RE2 rejects repetition counts above this (kMaxRepeat in re2/parse.cc).
MAX_REPEAT = 1000


class Matcher(Protocol):
    """The part of a compiled RE2 expression regauth uses (compiled without captures: matches
    have only group 0)."""

    def fullmatch(self, text: str) -> object | None: ...

    def findall(self, text: str) -> list[str]: ...


class RegexError(ValueError):
    """A pattern outside the accepted dialect.

    `offset` is the 0-based character offset in the pattern of the offending construct (None
    when it cannot be told), `hint` what to write instead (may be empty). The message says
    "at position N" with the same 0-based offset, as Python's re does.
    """

    def __init__(self, reason: str, offset: int | None = None, hint: str = "") -> None:
        text = reason
        if offset is not None:
            text += f" at position {offset}"
        if hint:
            text += f"; {hint}"
        super().__init__(text)
        self.reason = reason
        self.offset = offset
        self.hint = hint


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    # Groups only group: nothing reads submatches. With captures, RE2 answers anchored matches
    # on short texts with its BitState backtracker (O(text × program), 200× slower on `(.*a){20}`)
    # instead of its DFA (one pass over the text).
    options.never_capture = True
    return options


_OPTIONS = _options()


def compile_linear(regex: str) -> Matcher:
    """Compile regex text that regauth generated itself (globs, capabilities) with RE2.

    Raises ValueError if RE2 cannot compile it (a bug in the generator, or a pattern too large
    for RE2's memory budget)."""
    try:
        return re2.compile(regex, _OPTIONS)
    except re2.error as e:
        raise ValueError(
            f"cannot compile {regex!r} for linear-time matching: {_re2_message(e)}"
        ) from None


def compile_policy_regex(source: str) -> Matcher:
    """Compile an operator's `{regex: ...}` pattern, or raise RegexError (see module docstring).

    The result must be used with `fullmatch` (patterns are anchored at both ends)."""
    for offset, char in enumerate(source):
        if not char.isascii():
            raise RegexError(
                f"character {char!r} is outside ASCII",
                offset,
                "repository names are ASCII (lower-case letters, digits, ._-/)",
            )
    python_error, python_refusal = _python_reading(source)
    try:
        compiled = re2.compile(source, _OPTIONS)
    except re2.error as e:
        if python_error is not None:
            # Neither engine reads it: a plain syntax error, in Python's exact words.
            raise RegexError(f"invalid regular expression: {python_error}") from None
        raise _re2_refusal(source, _re2_message(e)) from None
    if python_refusal is not None:
        raise python_refusal
    _check_braces(source)
    return compiled


# -- refusals from RE2 -------------------------------------------------------------------------

_LOOKAROUND = (
    "describe the names you mean directly, or put a `deny: true` rule for the "
    "exceptions before this rule (the first matching rule decides)"
)
_NO_BACKTRACKING = (
    "RE2 never backtracks, so it is not needed against slow matching; write "
    "(?:...) or a plain quantifier if that means the same for your names"
)
_RE2_OPERATOR_HINTS = {
    "(?=": ("lookahead", _LOOKAROUND),
    "(?!": ("negative lookahead", _LOOKAROUND),
    "(?<=": ("lookbehind", _LOOKAROUND),
    "(?<!": ("negative lookbehind", _LOOKAROUND),
    "(?>": ("atomic group", _NO_BACKTRACKING),
    "(?(": ("conditional group", "RE2 has no conditionals; write the alternatives with |"),
    "(?#": ("inline comment", "RE2 has no (?#...) comments; use a YAML comment"),
    "(?x": ("verbose flag x", "RE2 has no verbose mode; remove the whitespace and comments"),
    "(?a": ("ASCII flag a", "drop it: repository names are ASCII already"),
    "(?u": ("Unicode flag u", "drop it: repository names are ASCII"),
    "(?L": ("locale flag L", "drop it"),
}
_RE2_ESCAPE_HINTS = {
    "\\Z": "matching is always anchored at both ends; drop \\Z",
    "\\b": "[\\b] (backspace) cannot occur in a repository name; drop it",
    "\\N": "repository names are ASCII; write the character itself",
    "\\u": "repository names are ASCII; write the character itself or \\xHH",
    "\\U": "repository names are ASCII; write the character itself or \\xHH",
}


def _re2_message(e: re2.error) -> str:
    arg = e.args[0] if e.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _re2_refusal(source: str, message: str) -> RegexError:
    """Turn RE2's `code: fragment` message into a refusal with the fragment's offset."""
    code, _, fragment = message.partition(": ")
    offset = _find(source, fragment) if fragment else None
    if code == "invalid perl operator":
        if fragment == "(?P":
            # RE2 reports every (?P...) it lacks as "(?P": find the named backreference.
            for named in ("(?P=", "(?P>"):
                if named in source:
                    return RegexError(
                        "RE2 has no named backreferences",
                        source.index(named),
                        "list the alternatives explicitly",
                    )
        if fragment in _RE2_OPERATOR_HINTS:
            what, hint = _RE2_OPERATOR_HINTS[fragment]
            return RegexError(f"RE2 has no {what} {fragment}", offset, hint)
        return RegexError(
            f"RE2 does not support {fragment}",
            offset,
            "see the README's Repository patterns for the accepted syntax",
        )
    if code == "invalid escape sequence":
        if len(fragment) == 2 and fragment[1] in "123456789":
            return RegexError(
                f"RE2 has no backreferences ({fragment})",
                offset,
                "list the alternatives explicitly",
            )
        if fragment in _RE2_ESCAPE_HINTS:
            return RegexError(
                f"RE2 does not support {fragment}", offset, _RE2_ESCAPE_HINTS[fragment]
            )
        return RegexError(f"RE2 does not support the escape {fragment}", offset)
    if code == "bad repetition operator" and len(fragment) >= 2 and fragment[-1] == "+":
        return RegexError(
            f"RE2 has no possessive quantifiers ({fragment})", offset, _NO_BACKTRACKING
        )
    if code == "invalid repetition size":
        return RegexError(
            f"invalid regular expression: repetition {fragment} (RE2 allows at "
            f"most {MAX_REPEAT}, nested counts multiplied)",
            offset,
            "use a smaller count, or + or * if any length will do",
        )
    if code.startswith("pattern too large"):
        return RegexError(
            "regular expression too large for RE2", None, "use fewer or smaller counted repetitions"
        )
    # Plain syntax errors (missing ), bad class range, ...): RE2's words are clear enough.
    return RegexError(f"invalid regular expression: {message}", offset)


def _find(source: str, fragment: str) -> int | None:
    index = source.find(fragment)
    return index if index >= 0 else None


# -- refusals where Python's re disagrees ------------------------------------------------------

_PYTHON_HINTS = (
    ("\\z", "matching is always anchored at both ends; drop \\z"),
    ("\\p", "repository names are ASCII; write a class such as [a-z0-9]"),
    ("\\P", "repository names are ASCII; write a negated class such as [^a-z0-9]"),
    ("\\Q", "escape each special character with a backslash instead"),
    ("\\C", "write . instead"),
    ("\\x{", "write \\xHH"),
    ("(?<", "write a named group as (?P<name>...)"),
    ("(?U", "write lazy quantifiers (*?, +?) instead; whether a name matches does not change"),
)
_FLAGS_HINT = "flags go at the very start of the regex, or scope them: (?i:...)"
_AGREE = "regauth accepts what RE2 and Python's re both read alike"


def _python_reading(source: str) -> tuple[re.error | None, RegexError | None]:
    """Python's error, if its re refuses the pattern, and the refusal to raise if RE2 accepts
    it: RE2-only syntax, or a class Python reads another way than RE2 (Python warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            re.compile(source)
        except re.error as e:
            offset = e.pos
            if offset is not None and offset > 0 and source.startswith("(?", offset - 1):
                offset -= 1  # Python points at the '?' of a group opener: show its '('
            hint = _FLAGS_HINT if "flag" in e.msg else _AGREE
            if offset is not None:
                hint = next(
                    (text for prefix, text in _PYTHON_HINTS if source.startswith(prefix, offset)),
                    hint,
                )
            return e, RegexError(f"only RE2 reads this, Python's re says: {e.msg}", offset, hint)
        except (FutureWarning, DeprecationWarning) as w:
            what, _, where = str(w).partition(" at position ")
            offset = int(where) if where.isdigit() else None
            if "nested set" in what:
                hint = (
                    "write \\[ for a literal '[' in a class; POSIX classes such as "
                    "[[:alpha:]] are not accepted, write [a-zA-Z]"
                )
            else:
                hint = "escape the doubled character in the class (\\-\\-, \\&\\&, \\|\\|, \\~\\~)"
            return None, RegexError(
                f"RE2 and Python's re read this class differently ({what})", offset, hint
            )
    return None, None


_PYTHON_REPEAT_RE = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")
_COUNT_RE = re.compile(r"0|[1-9][0-9]*")


def _check_braces(source: str) -> None:
    """Refuse any `{` outside a class that is not a repetition both engines read alike.

    Python reads `{,n}` as 0..n and `{03}` as 3; RE2 reads both as literal text. Names never
    contain `{`, so a literal brace must be escaped (`\\{`), which both read alike."""
    pos = 0
    while pos < len(source):
        char = source[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "[":
            pos = _class_end(source, pos)
            continue
        if char == "{":
            m = _PYTHON_REPEAT_RE.match(source, pos)
            if m is None:
                raise RegexError(
                    "'{' that does not open a repetition",
                    pos,
                    "write \\{ for a literal brace (names never contain one)",
                )
            low, high = m.group(1), m.group(3) or ""
            if not low:
                raise RegexError(
                    f"repetition {m.group()} reads differently in RE2 (literal "
                    "text) and Python's re (from 0)",
                    pos,
                    f"write {{0,{high}}}",
                )
            if any(c and _COUNT_RE.fullmatch(c) is None for c in (low, high)):
                raise RegexError(
                    f"repetition {m.group()} reads differently in RE2 (literal "
                    "text) and Python's re",
                    pos,
                    "write counts without leading zeros",
                )
            pos = m.end()
            continue
        pos += 1


def _class_end(source: str, start: int) -> int:
    """Offset just past the class that opens at `start` (Python's reading: a `]` right after
    `[` or `[^` is literal). Both engines have accepted the pattern, so the class is closed."""
    pos = start + 1
    if pos < len(source) and source[pos] == "^":
        pos += 1
    if pos < len(source) and source[pos] == "]":
        pos += 1
    while pos < len(source) and source[pos] != "]":
        pos += 2 if source[pos] == "\\" else 1
    return pos + 1
