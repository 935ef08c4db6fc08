"""The console log (and mitmweb's event log, which shows the same records) as safe text.

Log records carry what clients sent: mitmproxy logs `Client closed connection before
completing request headers: {buf!r}`, regauth logs request targets of aborted requests, errors
quote what failed to parse. Two things must not reach the operator's terminal or mitmweb:

- capability ids (an anonymous write right while the build lives): hidden as `<id:HASH10>`,
  the exchange log's form (`shown.SHOWN`, which follows the policy in force);
- control characters: an escape sequence in a record would act on the terminal (OSC 52
  writes the clipboard, a carriage return and cursor movement paint a forged line). Each is
  written as a visible escape (`regauth.ops.safe_text`). A line break stays a line break (regauth's
  own messages list a policy's problems one per line, tracebacks span lines), but every line
  after a record's first is indented, so no text in a record can pass for a record of its own
  (records start with their `[time]`).

`SafeRecords` is a `logging.Filter` on every handler of the root logger (mitmproxy's console,
mitmweb's event store, the start-up error check): it rewrites each record once, in place (the
first handler to see it), with its formatted message and traceback. In place because
mitmproxy's handlers reduce a filter's answer to a bool, so a replacement record would be lost.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from regauth.mitm import shown
from regauth.ops.safe_text import escape_lines

# Set on a record once rewritten: every handler runs the filter, the record is rewritten once.
_DONE = "regauth_safe"


class SafeRecords(logging.Filter):
    """Hides capability ids and escapes control characters in every record (module docstring).
    Never refuses a record."""

    def __init__(self, hide: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.hide = hide or shown.SHOWN

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _DONE, False):
            return True
        setattr(record, _DONE, True)
        try:
            message = record.getMessage()
        except Exception:  # a broken format (a bug): still one safe line, never an exception
            message = f"unformattable log record: {record.msg!r} % {record.args!r}"
        # The traceback goes into the message (mitmproxy's formatter formats `exc_info` itself,
        # ignoring a prepared `exc_text`): the whole text is then made safe at once.
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        elif record.exc_text:
            message += "\n" + record.exc_text
        if record.stack_info:
            message += "\n" + record.stack_info
        record.msg = self.safe(message)
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        return True

    def safe(self, text: str) -> str:
        try:
            text = self.hide(text)
        except Exception:  # a log line is never lost to a redaction bug: escaped all the same
            pass
        return escape_lines(text)


def install(root: logging.Logger | None = None) -> SafeRecords:
    """Put one SafeRecords on every handler of the root logger (idempotent: a handler that
    already has one keeps it). Run once mitmproxy's master has installed its handlers (they
    are made with the master's addons: console, event store, error check)."""
    root = root or logging.getLogger()
    found = [f for h in root.handlers for f in h.filters if isinstance(f, SafeRecords)]
    safe = found[0] if found else SafeRecords()
    for handler in root.handlers:
        if not any(isinstance(f, SafeRecords) for f in handler.filters):
            handler.addFilter(safe)
    return safe
