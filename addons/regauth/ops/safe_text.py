"""Untrusted text made safe to show on a terminal, in a log line or in a UI: control and
bidi characters become visible escapes.

Anything a client wrote (a path, a query value, a Basic user name, a token's claims) or an
upstream answered reaches operators through the tools (`regauth trace`, `replay`, the policy
tools), the console log and mitmweb. Printed as is, an escape sequence in it acts on the
operator's terminal: OSC 52 writes the clipboard, a carriage return or cursor movement paints
a forged line over a real one, a bidi override reorders what is read. `escape` turns every
such character into a visible escape, so the text reads as what it is.

Escaped (all of them, whatever the context: a tab or a newline in a user name is as
suspicious as an escape character):

- C0 controls U+0000–U+001F (NUL, BEL, BS, TAB, LF, CR, ESC, …) and DEL U+007F;
- C1 controls U+0080–U+009F (U+009B is a one-character CSI on some terminals);
- format characters (Unicode category Cf): the bidi controls U+200E/U+200F, U+202A–U+202E,
  U+2066–U+2069 and U+061C, zero-width characters, soft hyphen, tag characters U+E0000–…;
- the line and paragraph separators U+2028 and U+2029 (category Zl, Zp);
- lone surrogates (category Cs: bytes decoded with `surrogateescape`), which a UTF-8
  stream could not even encode.

Characters up to U+00FF are written `\\xNN`, up to U+FFFF `\\uNNNN`, above `\\UNNNNNNNN` (the
Python spellings), so `\\x1b` in the output is always an ESC the input held.

Backslashes: a backslash of the input is doubled when what follows it in the *output* would
make it read as an escape (`\\`, `x`, `u`, `U`, or an escaped character, which starts with a
backslash); any other backslash stays single, so a regular expression like `^a\\d+$` in a
policy reads as written. The mapping is thereby unambiguous: distinct inputs give distinct
outputs (reading `\\\\` as one backslash, `\\x`/`\\u`/`\\U` plus hex as the character, and any
other backslash as itself gives the input back), and a string without any character to escape
is returned unchanged.

`escape` is applied once, where text is rendered (tools/render.py for every tool, the
mitmweb comment, the console log filter); text is assembled raw before that. `quote` puts an
untrusted value between quotes at that raw level, so where it ends is never in doubt.

Pure functions, no I/O.
"""

from __future__ import annotations

import unicodedata

# Categories escaped besides the explicit ranges: format, line and paragraph separators,
# surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Cs"})
# Characters after which a backslash would read as the start of an escape.
_ESCAPE_STARTS = frozenset("\\xuU")
ELLIPSIS = "…"


def must_escape(char: str) -> bool:
    """True for a character `escape` writes as an escape sequence."""
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return True
    if code < 0xA0:
        return False  # printable ASCII: the common case, decided without a table lookup
    return unicodedata.category(char) in _ESCAPED_CATEGORIES


def _escape_char(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_safe(text: str) -> bool:
    """True when `text` holds no character `escape` would escape (backslashes aside)."""
    return not any(must_escape(c) for c in text)


def escape(text: str, max_len: int | None = None) -> str:
    """`text` with every control, bidi and format character written as a visible escape
    (see the module docstring for the exact rules). Apply it once, where text is rendered.

    `max_len`: at most this many characters of `text` are shown, then `…` (cut before
    escaping, so an escape is never cut in half; cut text is no longer unambiguous).
    """
    if max_len is not None and len(text) > max_len:
        return escape(text[:max_len]) + ELLIPSIS
    if "\\" not in text and is_safe(text):
        return text
    out: list[str] = []
    length = len(text)
    for i, char in enumerate(text):
        if char == "\\":
            following = text[i + 1] if i + 1 < length else ""
            doubled = following and (following in _ESCAPE_STARTS or must_escape(following))
            out.append("\\\\" if doubled else "\\")
        elif must_escape(char):
            out.append(_escape_char(char))
        else:
            out.append(char)
    return "".join(out)


def quote(text: str, max_len: int | None = None) -> str:
    """`'text'` with any `'` inside written `\\'` (and a backslash before a quote, or at the
    end, doubled): where an untrusted value ends is never in doubt, whatever it holds (a
    forged `sub` of `x' (verified)` stays inside its quotes). Not escaped: the result is text
    to render like any other, through `escape`."""
    if max_len is not None and len(text) > max_len:
        return quote(text[:max_len]) + ELLIPSIS
    out: list[str] = []
    length = len(text)
    for i, char in enumerate(text):
        if char == "'":
            out.append("\\'")
        elif char == "\\" and (i + 1 == length or text[i + 1] in "\\'"):
            out.append("\\\\")
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


def escape_lines(text: str, indent: str = "    ") -> str:
    """For multi-line messages of code-made text with untrusted parts (a console log record):
    each line escaped, line breaks (LF) kept, and every line after the first indented by
    `indent`, so that no line of it can pass for the start of a record of its own."""
    return ("\n" + indent).join(escape(line) for line in text.split("\n"))


__all__ = ["ELLIPSIS", "escape", "escape_lines", "is_safe", "must_escape", "quote"]
