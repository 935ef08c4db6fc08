"""Terminal output for the tools: styled with rich on a terminal, plain text elsewhere, JSON.

Commands build lines out of segments (plain strings or `(text, style)` pairs) and never decide
how they are shown. On a terminal, rich renders the styles; anywhere else (a pipe, a file, CI
logs) the same text is printed without escape codes and without re-wrapping, so it stays
greppable and stable for tests.

Every segment is untrusted text: a log's paths, user names and token claims, a policy's
comments. Each is escaped here, at the one place tools print text (`safe_text.escape`: control,
bidi and format characters become visible escapes), on a terminal and elsewhere alike, and is
never read as rich markup (segments become `Text`, which rich shows literally). Callers
assemble raw text and never escape it themselves.
"""

from __future__ import annotations

import json
import sys
from typing import IO

from rich.console import Console
from rich.text import Text

from regauth.ops.safe_text import escape

Segment = str | tuple[str, str]


class Printer:
    """Writes styled lines to `stream` (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, soft_wrap=True, highlight=False)
        self.styled = self.console.is_terminal if color is None else color

    def line(self, *segments: Segment) -> None:
        """One line of segments, each escaped (see the module docstring)."""
        safe = [escape(s) if isinstance(s, str) else (escape(s[0]), s[1]) for s in segments]
        if self.styled:
            self.console.print(Text.assemble(*safe))
        else:
            self.stream.write("".join(s if isinstance(s, str) else s[0] for s in safe) + "\n")

    def flush(self) -> None:
        self.stream.flush()


def print_json(value: object, stream: IO[str] | None = None) -> None:
    """One JSON document, indented, with a trailing newline. Strings keep their text exactly
    (a program reads them); every control character is a JSON escape (`\\u001b`), and with
    `ensure_ascii` so is every non-ASCII character, bidi controls included."""
    out = stream or sys.stdout
    out.write(json.dumps(value, indent=2, default=str, ensure_ascii=True) + "\n")
