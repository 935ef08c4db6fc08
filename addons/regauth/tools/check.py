"""`regauth policy check [--no-secrets] FILE...`: load each file exactly as the proxy does.

With `no_secrets`, absent secrets (unset `*_env` variables, unreadable `*_file` files) are
listed as notes instead of problems; a secret that is present is still validated (a bcrypt
hash must look like one, an HS256 secret must be long enough), and so is everything else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from regauth.ops.safe_text import escape
from regauth.policy.load import load_policy
from regauth.policy.reader import PolicyError
from regauth.policy.reader import Problem
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_OK
from regauth.tools.render import Printer


def check_files(
    files: list[str], no_secrets: bool, out: Printer | None = None, err: IO[str] | None = None
) -> int:
    """Print `FILE: ok (…)` per valid file and `file:line:column: message` per problem (on
    `err`); notes go to `err` as `file:line:column: note: …`. Exit code 1 if any file has
    problems, else 0."""
    out = out or Printer()
    err = err or sys.stderr
    status = EXIT_OK
    for file in files:
        notes: list[Problem] | None = [] if no_secrets else None
        try:
            policy = load_policy(Path(file), secret_notes=notes)
        except PolicyError as e:
            for problem in e.problems:
                err.write(escape(str(problem)) + "\n")  # quotes the file: untrusted
            status = EXIT_FINDING
            continue
        for note in notes or []:
            err.write(
                escape(
                    f"{note.file}:{note.line}:{note.column}: note: {note.message} "
                    "(not checked: --no-secrets)"
                )
                + "\n"
            )
        skipped = f", {len(notes)} secrets not checked" if notes else ""
        out.line(
            (f"{file}: ok", "green"),
            f" (service {policy.service}, {len(policy.accounts)} accounts, "
            f"{len(policy.rules)} rules{skipped})",
        )
    return status
