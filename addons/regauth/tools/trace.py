"""`regauth trace LOG [--follow] [--conversation ID] [--repository NAME] [--account NAME]
[--since DURATION] [--json]`: conversations as readable sequences, with diagnoses.

A conversation reads client → challenge → token request → grant (with rule) → retry → result,
each step with its offset from the conversation's first record. The client is named by the
accounts regauth verified; names it did not verify (a token's `sub`, a Basic user name) are
shown as claims, `claims sub='alice' (unverified)`, and `--account` never matches them. Runs
of alike requests (the PATCHes of an upload) are one line with a count. Every conversation is
checked against the known failure patterns of `diagnosis`.

LOG is one or more files, directories, globs and `.gz` files (`log_sources`): their records
are merged in time order and each step names the replica whose log holds it when there are
several. Reading streams: a conversation is printed once it has closed (`CLOSE_AFTER` of log
time without a record of it), so memory holds the open conversations and the client records of
the last minutes, not the log.

A diagnosis that time decides (`diagnosis.pending`: a challenge whose token request may still
come) is shown as `waiting` with what it waits for and how long, never left out silently.

`--follow` prints what the log already holds, then waits for new records and prints each
conversation once it has been quiet for QUIET seconds (again, marked updated, if it grows or a
pending diagnosis is decided). It sleeps between reads (backing off to `poll` seconds when
nothing arrives), and reopens a file that was rotated (renamed or truncated).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import BinaryIO

from regauth.ops.exchange_record import TLS_KIND
from regauth.ops.exchange_record import ChallengeRecord
from regauth.tools.diagnosis import TOKEN_WAIT
from regauth.tools.diagnosis import Context
from regauth.tools.diagnosis import Diagnosis
from regauth.tools.diagnosis import Pending
from regauth.tools.diagnosis import diagnose
from regauth.tools.diagnosis import pending
from regauth.tools.log_records import CLOSE_AFTER
from regauth.tools.log_records import Conversation
from regauth.tools.log_records import ConversationStream
from regauth.tools.log_records import Entry
from regauth.tools.log_records import parse_entry
from regauth.tools.log_sources import open_log
from regauth.tools.log_sources import replica_names
from regauth.tools.render import Printer

QUIET = 2.0  # seconds without new records before a followed conversation is printed
FOLLOW_CHUNK = 1 << 20  # bytes `--follow` reads at a time: a large log's backlog streams too
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
    replica: str = ""  # the replica whose log holds the record ("" when unknown)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "offset_s": round(self.offset, 3),
            "step": self.kind,
            "text": self.text,
            "count": self.count,
            "failed": self.failed,
            "log_line": self.line,
        }
        if self.replica:
            out["replica"] = self.replica
        return out


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
    out.append(Step(0.0, "client", client_text(c), first.line, replica=first.replica))
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
                    replica=entry.replica,
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
                        replica=entry.replica,
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
                        replica=entry.replica,
                    )
                )
            if entry.issued_jti:
                issued.add(entry.issued_jti)
            continue
        if entry.kind == TLS_KIND:
            tls = entry.record.tls
            asked = f" for {tls.sni}" if tls is not None and tls.sni else " (no server name)"
            out.append(
                Step(
                    offset,
                    "tls",
                    f"handshake failed{asked}: {entry.error or 'unknown error'}",
                    entry.line,
                    failed=True,
                    replica=entry.replica,
                )
            )
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
                    replica=entry.replica,
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
        if (
            kind == "request"
            and previous.kind in ("request", "retry")
            and previous.text == text
            and previous.replica == entry.replica
        ):
            out[-1] = Step(
                previous.offset,
                previous.kind,
                text,
                previous.line,
                previous.count + 1,
                failed,
                previous.replica,
            )
            continue
        out.append(Step(offset, kind, text, entry.line, failed=failed, replica=entry.replica))
    return out


def result_of(c: Conversation) -> tuple[str, bool]:
    """(text, ok) for the conversation's outcome: its last registry answer."""
    registry = [e for e in c.entries if e.kind != "token"]
    last = registry[-1] if registry else c.entries[-1]
    if last.kind == TLS_KIND:
        return "TLS handshake failed: no request", False
    ok = (
        isinstance(last.status, int)
        and last.status < 400
        and not (last.kind == "token" and not last.decisions)
    )
    status = last.status if last.status is not None else "no response"
    return f"{status} for {last.method} {last.route or last.path}", ok


@dataclass
class Traced:
    """One conversation as trace shows it: its diagnoses, what it still waits for, and the
    time it was judged at (the latest record, or now if later)."""

    conversation: Conversation
    diagnoses: list[Diagnosis]
    pending: list[Pending] = field(default_factory=list)
    end: dt.datetime | None = None


class ClientWindow:
    """The recent records of each client address, for the detectors that look beyond a
    conversation (`diagnosis.Context.of_client`); older ones are forgotten (`prune`)."""

    def __init__(self) -> None:
        self.clients: dict[str, deque[Entry]] = {}

    def add(self, entry: Entry) -> None:
        self.clients.setdefault(entry.client_ip, deque()).append(entry)

    def prune(self, horizon: dt.datetime) -> None:
        """Forget the records before `horizon` (and those without a time)."""
        for address in list(self.clients):
            records = self.clients[address]
            while records and (records[0].time is None or records[0].time < horizon):
                records.popleft()
            if not records:
                del self.clients[address]

    def context(self, end: dt.datetime) -> Context:
        return Context((), end, self.clients)


def _judge(
    conversations: Iterable[Conversation],
    window: ClientWindow,
    latest: dt.datetime | None,
    filters: Filters,
    now: dt.datetime,
) -> Iterator[Traced]:
    end = max(now, latest) if latest is not None else now
    ctx = window.context(end)
    for c in conversations:
        if filters.keep(c, now):
            yield Traced(c, diagnose(c, ctx), pending(c, ctx), end)


def analyse_stream(
    entries: Iterable[Entry],
    filters: Filters,
    now: dt.datetime | None = None,
    close_after: dt.timedelta | None = CLOSE_AFTER,
) -> Iterator[Traced]:
    """The conversations of `entries` (in nearly time order, as `log_sources.Sources`
    merges them), each once it has closed (`log_records.ConversationStream`), then the rest
    at the end; filtered and diagnosed. Memory: the open conversations, and each client's
    records of the last `close_after` + TOKEN_WAIT of log time."""
    now = now or dt.datetime.now(dt.UTC)
    stream = ConversationStream(close_after)
    window = ClientWindow()
    for n, entry in enumerate(entries, 1):
        stream.add(entry)
        window.add(entry)
        if close_after is not None and n % 1024 == 0 and stream.latest is not None:
            yield from _judge(stream.closed(), window, stream.latest, filters, now)
            window.prune(stream.latest - close_after - TOKEN_WAIT)
    yield from _judge(stream.rest(), window, stream.latest, filters, now)


def analyse(
    entries: Sequence[Entry], filters: Filters, now: dt.datetime | None = None
) -> list[tuple[Conversation, list[Diagnosis]]]:
    """Every conversation of `entries` at once (the whole list is in memory anyway), in start
    order, with its diagnoses."""
    ordered = sorted(entries, key=lambda e: e.time or dt.datetime.min.replace(tzinfo=dt.UTC))
    return [
        (t.conversation, t.diagnoses)
        for t in analyse_stream(ordered, filters, now, close_after=None)
    ]


def render(
    c: Conversation,
    diagnoses: list[Diagnosis],
    out: Printer,
    updated: bool = False,
    waiting: Sequence[Pending] = (),
    end: dt.datetime | None = None,
    replicas: bool = False,
) -> None:
    """The conversation as text: a header, its steps (each with the replica whose log holds
    it when `replicas`), the result, diagnoses, and what it still waits for (`waiting`,
    seconds counted from `end`)."""
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
        (" (continued)" if c.continued else ""),
        f"  {when}  {len(c.entries)} records, {duration:.3f} s  repositories {names}",
    )
    for step in steps(c):
        count = f" ×{step.count}" if step.count > 1 else ""
        style = "red" if step.failed else ("green" if step.kind == "grant" else "")
        where = f" [{step.replica}]" if replicas and step.replica else ""
        out.line(
            (f"  +{step.offset:7.3f}s ", "dim"),
            (f"{step.kind:<13} ", "bold"),
            (step.text + count, style),
            (where, "dim"),
        )
    out.line(("  result        ", "bold"), (result, "green" if ok else "bold red"))
    for d in diagnoses:
        out.line(
            ("  diagnosis     ", "bold yellow"),
            (f"{d.code}: {d.title}", "bold yellow"),
            f" (log line {d.line})",
        )
        out.line(f"                {d.detail}")
        first, *more = d.hint.split("\n")
        out.line(("                hint: ", "dim"), first)
        for text in more:  # each line escaped on its own: none can pass for trace's own
            out.line("                      ", text)
    for p in waiting:
        out.line(
            ("  waiting       ", "bold"),
            f"up to {p.seconds_left(end):.1f} s more for {p.waiting_for} "
            f"(else {p.code}; log line {p.line})",
        )
    out.line("")


def as_json(
    c: Conversation,
    diagnoses: list[Diagnosis],
    waiting: Sequence[Pending] = (),
    end: dt.datetime | None = None,
) -> dict[str, object]:
    start = c.start
    result, ok = result_of(c)
    return {
        "id": c.id,
        "merged": c.merged,
        "continued": c.continued,
        "clients": c.clients,
        "accounts": c.accounts,
        "claims": c.claims,
        "replicas": c.replicas,
        "repositories": c.names,
        "records": len(c.entries),
        "start": start.isoformat() if start else None,
        "duration_s": round((c.end - start).total_seconds(), 3) if c.end and start else None,
        "result": result,
        "ok": ok,
        "steps": [s.as_json() for s in steps(c)],
        "diagnoses": [d.as_json() for d in diagnoses],
        "waiting": [p.as_json(end) for p in waiting],
    }


@dataclass
class _Followed:
    """One file under `follow`: its open handle, and the line it has reached."""

    path: Path
    replica: str
    index: int
    handle: BinaryIO | None = None
    raw: BinaryIO | None = None
    inode: int | None = None
    line: int = 0
    pending: bytes = b""

    def open(self) -> None:
        self.handle, self.raw = open_log(self.path)
        self.inode = os.fstat(self.raw.fileno()).st_ino
        self.line, self.pending = 0, b""

    def close(self) -> None:
        for stream in (self.handle, self.raw):
            if stream is not None:
                stream.close()
        self.handle = self.raw = None

    def read(self) -> list[Entry]:
        """The complete lines appended since the last read; at the end of the data, a file
        renamed away (rotation) or truncated is reopened at its path."""
        if self.handle is None:
            try:
                self.open()
            except FileNotFoundError:
                return []  # rotated away and not yet recreated
        assert self.handle is not None and self.raw is not None
        chunk = self.handle.read(FOLLOW_CHUNK)
        if not chunk:
            if self._replaced():
                self.close()
                return self.read()
            return []
        data = self.pending + chunk
        complete, newline, self.pending = data.rpartition(b"\n")
        entries = []
        if newline:
            for text in complete.decode("utf-8", "replace").split("\n"):
                self.line += 1
                if text.strip():
                    entry = parse_entry(text, self.line, str(self.path), self.replica, self.index)
                    if entry is not None:
                        entries.append(entry)
        return entries

    def _replaced(self) -> bool:
        assert self.raw is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False  # keep the old handle until a new file appears
        return now.st_ino != self.inode or now.st_size < self.raw.tell()


def follow(
    paths: Path | Sequence[Path],
    filters: Filters,
    out: Printer,
    poll: float = 1.0,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print existing conversations, then new ones as they settle; returns when `stop()`.

    Nothing is computed while nothing arrives: it reads FOLLOW_CHUNK bytes at a time without
    pausing while there is more, then sleeps from 50 ms up to `poll` seconds (doubling while
    the files stay idle), never past the moment a conversation becomes quiet or a pending
    diagnosis is due. A conversation that closes (`ConversationStream`) is printed at once
    and forgotten, so a long backlog is held no more than `trace` without `--follow` holds it."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    names = replica_names(files)
    followed = [_Followed(p, names[p], i) for i, p in enumerate(files)]
    for f in followed:
        f.open()  # raises OSError for a file that cannot be read
    several = len(set(names.values())) > 1
    stream = ConversationStream(CLOSE_AFTER)
    window = ClientWindow()
    # conversation (by identity) → [records when last printed, wall time it last grew,
    # wall time a pending diagnosis is due]
    state: dict[int, list[float]] = {}
    changed: dict[int, Conversation] = {}
    idle = 0.0
    try:
        while not stop():
            arrived = [e for f in followed for e in f.read()]
            wall = time.monotonic()
            for entry in arrived:
                c = stream.add(entry)
                window.add(entry)
                key = id(c)
                mark = state.setdefault(key, [0, wall, 0.0])
                mark[1] = wall
                changed[key] = c
            now = dt.datetime.now(dt.UTC)
            next_due = wall + poll
            for key, c in list(changed.items()):
                mark = state[key]
                grown = len(c.entries) != mark[0]
                if not grown and not (mark[2] and wall >= mark[2]):
                    if mark[2]:  # a pending diagnosis: look again when it is due
                        next_due = min(next_due, mark[2])
                    else:
                        del changed[key]
                    continue
                if grown and wall < mark[1] + QUIET:
                    next_due = min(next_due, mark[1] + QUIET)
                    continue
                traced = next(_judge([c], window, stream.latest, filters, now), None)
                if traced is not None:
                    render(
                        c,
                        traced.diagnoses,
                        out,
                        updated=mark[0] > 0,
                        waiting=traced.pending,
                        end=traced.end,
                        replicas=several,
                    )
                    out.flush()
                mark[0] = len(c.entries)
                mark[2] = 0.0
                waits = traced.pending if traced is not None else []
                if waits:  # print it again, decided, when the wait is over
                    left = max(p.seconds_left(traced.end if traced else None) for p in waits)
                    mark[2] = wall + left + 0.05
                    next_due = min(next_due, mark[2])
                else:
                    del changed[key]
            for c in stream.closed():  # no more records will join it: print it now
                mark = state.pop(id(c), [0, 0.0, 0.0])
                changed.pop(id(c), None)
                if len(c.entries) != mark[0]:
                    for traced in _judge([c], window, stream.latest, filters, now):
                        render(
                            c,
                            traced.diagnoses,
                            out,
                            updated=mark[0] > 0,
                            end=traced.end,
                            replicas=several,
                        )
                        out.flush()
            if arrived:
                if stream.latest is not None:
                    window.prune(stream.latest - CLOSE_AFTER - TOKEN_WAIT)
                idle = 0.0  # read on at once: more may be there (a backlog, a burst)
                continue
            idle = min(max(idle * 2, 0.05), poll)
            sleep(max(0.0, min(idle, next_due - time.monotonic())))
    finally:
        for f in followed:
            f.close()
