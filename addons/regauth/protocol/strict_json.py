"""JSON from untrusted peers (JWT segments, token responses), parsed within stated bounds.

Python's `json.loads` recurses once per nesting level and raises RecursionError past the
interpreter's limit (a 4 KB JWT can hold 1,500 nested arrays); it also accepts `NaN`,
`Infinity` and numbers like `1e400` that become non-finite floats, and keeps the last of
duplicate member names. Here, nesting is measured before parsing (strings skipped) and bounded,
only RFC 8259 numbers are accepted and they must be finite, and duplicate names are refused
(RFC 7515 §5.2 allows refusing them; a parser that kept the first would read another token).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

MAX_DEPTH = 16

# A JSON string, escapes included; what is left after removing strings is structure.
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NESTING = str.maketrans({"[": "+", "{": "+", "]": "-", "}": "-"})
_STRUCTURE_RE = re.compile(r"[^\[\]{}]+")


class JsonError(ValueError):
    """The text is not JSON within the bounds; the message is safe to log (no input quoted)."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, ignoring brackets inside strings.

    Counts brackets only (it does not validate), so unbalanced text gives a bound, not an
    error. Linear time; no recursion.
    """
    structure = _STRUCTURE_RE.sub("", _STRING_RE.sub("", text)).translate(_NESTING)
    depth = deepest = 0
    # Runs of '+' are the only places the depth grows: measure each run at once.
    for run in re.finditer(r"\++|-+", structure):
        if run.group()[0] == "+":
            depth += len(run.group())
            deepest = max(deepest, depth)
        else:
            depth -= len(run.group())
    return deepest


def _refuse_constant(name: str) -> object:
    raise JsonError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonError("number out of range")
    return value


def _unique_members(pairs: Sequence[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise JsonError("duplicate member name")
    return result


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> object:
    """Parse RFC 8259 JSON (UTF-8 when bytes); raise JsonError, and nothing else, when it is
    malformed, nested deeper than `max_depth`, holds a non-finite number or an integer of more
    than 4,300 digits (Python's int limit), or repeats a member name."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError:
        raise JsonError("not UTF-8") from None
    if nesting_depth(text) > max_depth:
        raise JsonError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_members,
        )
    except JsonError:
        raise
    except (ValueError, RecursionError) as e:
        # RecursionError cannot happen after the depth check unless the caller's own stack is
        # nearly exhausted; it is still malformed input from the caller's point of view.
        raise JsonError(f"malformed JSON ({type(e).__name__})") from None
