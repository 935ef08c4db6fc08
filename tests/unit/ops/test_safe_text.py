"""regauth.ops.safe_text: what untrusted text looks like once escaped (issue 20, item 10)."""

from __future__ import annotations

import pytest

from regauth.ops.safe_text import escape
from regauth.ops.safe_text import escape_lines
from regauth.ops.safe_text import is_safe
from regauth.ops.safe_text import quote

OSC52 = "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (OSC52, "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07"),  # clipboard write
        ("ok\r\x1b[2Kgranted", "ok\\x0d\\x1b[2Kgranted"),  # a line painted over
        ("a\nb\tc\x00d\x7f", "a\\x0ab\\x09c\\x00d\\x7f"),  # every C0 control, DEL
        ("\x9b2J\x85", "\\x9b2J\\x85"),  # C1: a one-character CSI, NEL
        (
            "user\u202eevil\u2066\u2069\u200e\u200f\u061c",
            "user\\u202eevil\\u2066\\u2069\\u200e\\u200f\\u061c",
        ),  # bidi
        ("a\u2028b\u2029c\u200bd\ufeffe\u00adf", "a\\u2028b\\u2029c\\u200bd\\ufeffe\\xadf"),
        ("tag\U000e0041", "tag\\U000e0041"),  # tag characters hide text
        ("lone \udc80 surrogate", "lone \\udc80 surrogate"),  # surrogateescape'd bytes
    ],
)
def test_controls_bidi_and_format_characters_become_visible(text: str, shown: str) -> None:
    assert escape(text) == shown
    assert is_safe(escape(text)) and not is_safe(text)


def test_plain_text_is_unchanged() -> None:
    for text in ("repository:public/app:pull → granted [pull]", "ünïcödé ✓ ×3 …", "日本語", ""):
        assert escape(text) == text and is_safe(text)
    assert escape("^a\\d+$") == "^a\\d+$"  # a regular expression reads as written


def test_a_backslash_that_would_read_as_an_escape_is_doubled() -> None:
    # Typed by an attacker, "\x1b" must not look like the ESC it is not.
    assert escape("\\x1b") == "\\\\x1b"
    assert escape("\\u202e \\U000e0041 \\\\") == "\\\\u202e \\\\U000e0041 \\\\\\"
    assert escape("\\\x1b") == "\\\\\\x1b"  # a backslash, then a real ESC
    assert escape("\\x1b") != escape("\x1b")


def test_max_len_cuts_before_escaping() -> None:
    assert escape("\x1b" * 10, max_len=3) == "\\x1b" * 3 + "…"
    assert escape("short", max_len=10) == "short"


def test_quote_keeps_where_a_value_ends() -> None:
    assert quote("alice") == "'alice'"
    assert quote("x' (verified)") == "'x\\' (verified)'"
    assert quote("a\\") == "'a\\\\'" and quote("a\\b") == "'a\\b'"
    assert quote("a" * 70, max_len=64) == "'" + "a" * 64 + "'…"
    assert escape(quote("\x1b")) == "'\\x1b'"


def test_escape_lines_keeps_line_breaks_and_indents_what_follows() -> None:
    assert (
        escape_lines("policy refused:\nfile:1:2: bad\x1b[2K")
        == "policy refused:\n    file:1:2: bad\\x1b[2K"
    )
    assert escape_lines("one line\r") == "one line\\x0d"
