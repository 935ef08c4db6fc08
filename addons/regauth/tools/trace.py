"""`regauth trace LOG [--follow] [--conversation ID] [--repository NAME] [--account NAME]
[--since DURATION] [--json]`: conversations as readable sequences, with diagnoses.

A conversation reads client → challenge → token request → grant (with rule) → retry → result,
each step with its offset from the conversation's first record. The client is named by the
accounts regauth verified; names it did not verify (a token's `sub`, a Basic user name) are
shown as claims, `claims sub='alice' (unverified)`, and `--account` never matches them. Runs
of alike requests (the PATCHes of an upload) are one line with a count. Every conversation is
checked against the known failure patterns of `diagnosis`.

`--follow` prints what the log already holds, then waits for new records and prints each
conversation once it has been quiet for QUIET seconds (again, marked updated, if it grows).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from regauth.ops.exchange_record import ChallengeRecord
from regauth.tools.diagnosis import Context
from regauth.tools.diagnosis import Diagnosis
from regauth.tools.diagnosis import diagnose
from regauth.tools.log_records import Conversation
from regauth.tools.log_records import Entry
from regauth.tools.log_records import conversations
from regauth.tools.log_records import parse_lines
from regauth.tools.render import Printer

QUIET = 2.0  # seconds without new records before a followed conversation is printed
_DURATION_RE = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `10m`, `2h`, `1d`, `1h30m`; raise ValueError otherwise."""
    pos, seconds = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group("n")) * _UNITS[m.group("unit")]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"duration {text!r}: use a number and ms, s, m, h or d (e.g. 10m)")
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class Filters:
    conversation: str | None = None
    repository: str | None = None
    account: str | None = None
    since: dt.timedelta | None = None

    def keep(self, c: Conversation, now: dt.datetime) -> bool:
        """`account` matches only accounts regauth verified (Conversation.accounts), never a
        name a client merely sent."""
        if self.conversation and not any(
            i.startswith(self.conversation) for i in [c.id, *c.merged]
        ):
            return False
        if self.repository and self.repository not in c.names:
            return False
        if self.account and self.account not in c.accounts:
            return False
        if self.since is not None:
            end = c.end
            if end is None or end < now - self.since:
                return False
        return True


@dataclass(frozen=True)
class Step:
    offset: float  # seconds since the conversation's first record
    kind: str  # client, challenge, token request, grant, refused, retry, request, result
    text: str
    line: int
    count: int = 1
    failed: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "offset_s": round(self.offset, 3),
            "step": self.kind,
            "text": self.text,
            "count": self.count,
            "failed": self.failed,
            "log_line": self.line,
        }


def _offset(entry: Entry, start: dt.datetime | None) -> float:
    return (entry.time - start).total_seconds() if entry.time and start else 0.0


def _challenge_text(entry: Entry) -> str:
    challenge = entry.bearer_challenge or ChallengeRecord()
    scopes = " ".join(challenge.scopes or ()) or "(no scope)"
    error = challenge.error
    by = "registry" if entry.answered_by == "upstream" else "regauth"
    text = f"{entry.method} {entry.path} → 401 from {by}, Bearer scope {scopes}"
    if error:
        text += f" error={error}"
    if entry.auth_scheme:
        text += f" (sent {entry.auth_scheme})"
    if entry.answered_by != "upstream" and entry.reason:
        text += f": {entry.reason}"
    return text


def client_text(c: Conversation) -> str:
    """`ADDRESS as ACCOUNT, claims sub='x' (unverified)`: the accounts regauth verified, then
    the names sent that it did not (Entry.account, Entry.claim)."""
    text = c.entries[0].client_ip or "?"
    via = c.entries[0].via
    if via:
        text += f" (via {via})"
    if c.accounts:
        text += f" as {', '.join(c.accounts)}"
    if c.claims:
        text += ("," if c.accounts else "") + f" claims {', '.join(c.claims)}"
    return text


def steps(c: Conversation) -> list[Step]:
    start = c.start
    out: list[Step] = []
    issued: set[str] = set()
    retried: set[str] = set()
    first = c.entries[0]
    out.append(Step(0.0, "client", client_text(c), first.line))
    for entry in c.entries:
        offset = _offset(entry, start)
        if entry.kind == "token":
            # Only a login regauth accepted names an account; a refused one is a claim.
            account = entry.token_account
            if account == "anonymous" and entry.token_build:
                account = f"build {entry.token_build}"
            who = (
                f"as {account}"
                if account
                else f"claims {entry.claim}"
                if entry.claim
                else "as anonymous"
            )
            if account and entry.credential:
                who += f" by {entry.credential}"
            grant_type = entry.token_request.grant_type or entry.method
            out.append(
                Step(
                    offset,
                    "token request",
                    f"{entry.method} ({grant_type}) {who} for "
                    f"{' '.join(entry.requested) or '(no scope)'}",
                    entry.line,
                )
            )
            if entry.status != 200:
                out.append(
                    Step(
                        offset,
                        "refused",
                        f"{entry.status}: {entry.token_refused or entry.reason or 'refused'}",
                        entry.line,
                        failed=True,
                    )
                )
                continue
            for d in entry.decisions:
                granted = ",".join(d.granted) or "-"
                out.append(
                    Step(
                        offset,
                        "grant",
                        f"{d.scope} → {d.outcome} [{granted}] by {d.rule_label()}",
                        entry.line,
                        failed=d.outcome != "granted",
                    )
                )
            if entry.issued_jti:
                issued.add(entry.issued_jti)
            continue
        if entry.status == 401 and (entry.bearer_challenge or entry.upstream_challenges):
            bearer = entry.bearer_challenge
            out.append(
                Step(
                    offset,
                    "challenge",
                    _challenge_text(entry),
                    entry.line,
                    failed=bool(bearer is not None and bearer.error),
                )
            )
            continue
        jti = entry.verified_jti  # a forged token naming an issued jti is no retry
        kind = "request"
        if jti and jti in issued and jti not in retried:
            kind = "retry"  # the first request presenting a token issued here
            retried.add(jti)
        status = entry.status if entry.status is not None else "no response"
        text = f"{entry.method} {entry.route or entry.path} → {status}"
        if entry.route:
            text += f" ({entry.repository})" if entry.repository else ""
        if entry.injected:
            text += " with injected upstream credentials"
        elif entry.credential.startswith("client certificate"):
            text += f" by {entry.credential}"
        if entry.error:
            text += f" error: {entry.error}"
        failed = not isinstance(entry.status, int) or entry.status >= 400
        previous = out[-1]
        if kind == "request" and previous.kind in ("request", "retry") and previous.text == text:
            out[-1] = Step(
                previous.offset, previous.kind, text, previous.line, previous.count + 1, failed
            )
            continue
        out.append(Step(offset, kind, text, entry.line, failed=failed))
    return out


def result_of(c: Conversation) -> tuple[str, bool]:
    """(text, ok) for the conversation's outcome: its last registry answer."""
    registry = [e for e in c.entries if e.kind != "token"]
    last = registry[-1] if registry else c.entries[-1]
    ok = (
        isinstance(last.status, int)
        and last.status < 400
        and not (last.kind == "token" and not last.decisions)
    )
    status = last.status if last.status is not None else "no response"
    return f"{status} for {last.method} {last.route or last.path}", ok


def context(entries: list[Entry], now: dt.datetime) -> Context:
    ordered = sorted(entries, key=lambda e: (e.time or now, e.line))
    times = [e.time for e in ordered if e.time]
    end = max([now, *times]) if times else now
    return Context(ordered, end)


def render(
    c: Conversation, diagnoses: list[Diagnosis], out: Printer, updated: bool = False
) -> None:
    start = c.start
    duration = (c.end - start).total_seconds() if c.end and start else 0.0
    result, ok = result_of(c)
    ids = c.id + (f" (+{', '.join(c.merged)})" if c.merged else "")
    names = ", ".join(c.names) or "-"
    when = start.isoformat(timespec="milliseconds") if start else "?"
    out.line(
        ("conversation ", "bold"),
        (ids, "bold cyan"),
        (" (updated)" if updated else ""),
        f"  {when}  {len(c.entries)} records, {duration:.3f} s  repositories {names}",
    )
    for step in steps(c):
        count = f" ×{step.count}" if step.count > 1 else ""
        style = "red" if step.failed else ("green" if step.kind == "grant" else "")
        out.line(
            (f"  +{step.offset:7.3f}s ", "dim"),
            (f"{step.kind:<13} ", "bold"),
            (step.text + count, style),
        )
    out.line(("  result        ", "bold"), (result, "green" if ok else "bold red"))
    for d in diagnoses:
        out.line(
            ("  diagnosis     ", "bold yellow"),
            (f"{d.code}: {d.title}", "bold yellow"),
            f" (log line {d.line})",
        )
        out.line(f"                {d.detail}")
        out.line(("                hint: ", "dim"), d.hint)
    out.line("")


def as_json(c: Conversation, diagnoses: list[Diagnosis]) -> dict[str, object]:
    start = c.start
    result, ok = result_of(c)
    return {
        "id": c.id,
        "merged": c.merged,
        "clients": c.clients,
        "accounts": c.accounts,
        "claims": c.claims,
        "repositories": c.names,
        "start": start.isoformat() if start else None,
        "duration_s": round((c.end - start).total_seconds(), 3) if c.end and start else None,
        "result": result,
        "ok": ok,
        "steps": [s.as_json() for s in steps(c)],
        "diagnoses": [d.as_json() for d in diagnoses],
    }


def analyse(
    entries: list[Entry], filters: Filters, now: dt.datetime | None = None
) -> list[tuple[Conversation, list[Diagnosis]]]:
    now = now or dt.datetime.now(dt.UTC)
    ctx = context(entries, now)
    out = []
    for c in conversations(entries):
        if filters.keep(c, now):
            out.append((c, diagnose(c, ctx)))
    return out


def follow(
    path: Path,
    filters: Filters,
    out: Printer,
    poll: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Print existing conversations, then new ones as they settle; returns when `stop()`."""
    entries: list[Entry] = []
    shown: dict[str, int] = {}  # conversation id -> records when last printed
    seen: dict[str, tuple[int, float]] = {}  # conversation id -> (records, when first seen)
    line_number = 1
    pending = ""
    with path.open(encoding="utf-8", errors="replace") as stream:
        while not stop():
            chunk = stream.read()
            if chunk:
                pending += chunk
                complete, _, pending = pending.rpartition("\n")
                if complete:
                    lines = complete.split("\n")
                    entries += parse_lines(lines, line_number).entries
                    line_number += len(lines)
            now = time.monotonic()
            for c, diagnoses in analyse(entries, filters):
                size = len(c.entries)
                if shown.get(c.id) == size:
                    continue
                if seen.get(c.id, (None, 0.0))[0] != size:
                    seen[c.id] = (size, now)
                if now - seen[c.id][1] < QUIET:
                    continue
                render(c, diagnoses, out, updated=c.id in shown)
                out.flush()
                shown[c.id] = size
            time.sleep(poll)
