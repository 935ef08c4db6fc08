"""Terminal output for the tools: styled with rich on a terminal, plain text elsewhere, JSON.

Commands build lines out of segments (plain strings or `(text, style)` pairs) and never decide
how they are shown. On a terminal, rich renders the styles; anywhere else (a pipe, a file, CI
logs) the same text is printed without escape codes and without re-wrapping, so it stays
greppable and stable for tests.
"""

from __future__ import annotations

import json
import sys
from typing import IO

from rich.console import Console
from rich.text import Text

Segment = str | tuple[str, str]


class Printer:
    """Writes styled lines to `stream` (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, soft_wrap=True, highlight=False)
        self.styled = self.console.is_terminal if color is None else color

    def line(self, *segments: Segment) -> None:
        if self.styled:
            self.console.print(Text.assemble(*segments))
        else:
            self.stream.write("".join(s if isinstance(s, str) else s[0] for s in segments) + "\n")

    def flush(self) -> None:
        self.stream.flush()


def print_json(value: object, stream: IO[str] | None = None) -> None:
    """One JSON document, indented, with a trailing newline."""
    out = stream or sys.stdout
    out.write(json.dumps(value, indent=2, default=str) + "\n")
