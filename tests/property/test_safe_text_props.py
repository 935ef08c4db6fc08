"""regauth.ops.safe_text.escape, for any text: nothing a terminal acts on survives, nothing is lost
(a reader can always tell what the input was), and plain text is left alone."""

from __future__ import annotations

import re

from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st

from regauth.ops.safe_text import escape
from regauth.ops.safe_text import must_escape

# Text biased towards what matters: controls, bidi and format characters, backslashes and the
# letters that follow a backslash in an escape.
_TRICKY = st.sampled_from(
    [
        "\x1b",
        "\x07",
        "\r",
        "\n",
        "\x00",
        "\x7f",
        "\x9b",
        "\u202e",
        "\u2066",
        "\u200b",
        "\u2028",
        "\udc80",
        "\U000e0041",
        "\\",
        "x",
        "u",
        "U",
        "1",
        "b",
        "f",
        "'",
    ]
)
TEXT = st.lists(st.one_of(_TRICKY, st.characters()), max_size=40).map("".join)
_ESCAPE = re.compile(r"\\(?:\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def unescape(shown: str) -> str:
    """The inverse the module docstring promises: `\\\\` is one backslash, `\\x`/`\\u`/`\\U`
    plus hex one character, any other backslash itself."""
    out, i = [], 0
    while i < len(shown):
        match = _ESCAPE.match(shown, i)
        if match is None:
            out.append(shown[i])
            i += 1
            continue
        token = match.group(0)
        out.append("\\" if token == "\\\\" else chr(int(token[2:], 16)))
        i = match.end()
    return "".join(out)


def _terminal_active(char: str) -> bool:
    code = ord(char)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or char
        in ("\u200e\u200f\u061c\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    )


@given(TEXT)
@example("\\x1b")
@example("\\\x1b")
@example("a\\")
def test_no_control_bidi_or_format_character_survives(text: str) -> None:
    shown = escape(text)
    assert not any(must_escape(c) for c in shown)
    assert not any(_terminal_active(c) for c in shown)


@given(TEXT)
@example("\\x1b")
@example("\\\\x1b")
def test_distinct_inputs_stay_distinct(text: str) -> None:
    assert unescape(escape(text)) == text


@given(TEXT, TEXT)
def test_no_two_inputs_look_alike(a: str, b: str) -> None:
    assert (escape(a) == escape(b)) == (a == b)


@given(
    st.text(
        st.characters(
            blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"), blacklist_characters="\\"
        )
    )
)
def test_plain_text_is_left_alone(text: str) -> None:
    assert escape(text) == text
