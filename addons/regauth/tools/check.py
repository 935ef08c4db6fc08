"""`regauth policy check [--no-secrets] [--json] FILE...`: load each file exactly as the proxy
does.

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
from regauth.tools.render import print_json


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


def _problem(problem: Problem) -> dict[str, object]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "message": problem.message,
    }


def check_files_json(files: list[str], no_secrets: bool, out: IO[str] | None = None) -> int:
    """`--json`: one document on `out`, `{"files": [{"file", "ok", "problems": [{"file",
    "line", "column", "message"}], "notes": [...], and when ok "service", "accounts",
    "rules"}]}`; notes are the secrets not checked (`no_secrets`). Exit code as check_files."""
    status = EXIT_OK
    results: list[dict[str, object]] = []
    for file in files:
        notes: list[Problem] | None = [] if no_secrets else None
        result: dict[str, object] = {"file": file}
        try:
            policy = load_policy(Path(file), secret_notes=notes)
        except PolicyError as e:
            result.update(ok=False, problems=[_problem(p) for p in e.problems], notes=[])
            status = EXIT_FINDING
        else:
            result.update(
                ok=True,
                problems=[],
                notes=[_problem(n) for n in notes or []],
                service=policy.service,
                accounts=len(policy.accounts),
                rules=len(policy.rules),
            )
        results.append(result)
    print_json({"files": results}, out)
    return status
