"""The exchange log read back: typed views of its records, grouped into conversations.

The log is JSONL written by the proxy (README "The exchange log"), one
`ops.exchange_record.ExchangeRecord` a line: the tools read it with the same definition the
proxy writes it with. Reading is tolerant: a line that is not a JSON object (a torn last line,
a foreign line) is counted and skipped, and every field is optional
(`ExchangeRecord.from_json`), so logs from older and newer regauth versions both read.

Conversations: the proxy links a challenge, the token request that follows and every request
presenting the issued token under one `conversation` id. A later challenge that presents a token
(`insufficient_scope`) starts a new id in the log; here it is joined to the conversation that
issued the token (by its `jti`), so a client's retries read as one story. Only a token known to
be genuine joins (`Entry.verified_jti`): a forged token naming another conversation's `jti`
stays in its own.

Streaming: `ConversationStream` groups records as they are read and gives each conversation
back once it has closed (CLOSE_AFTER of log time without a record of it), so that `trace`
holds the open conversations and not the log; `conversations()` is the same over a list.
Entries read from files (`log_sources`) carry their file, line and replica.

Identity: `Entry.account` is who regauth verified a record acted as; a name a client merely
sent (a forged token's `sub`, a Basic user name, a refused login) is an `Entry.claim`, shown as
unverified and never matched by `trace --account`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from regauth.ops.exchange_record import ABSENT
from regauth.ops.exchange_record import AuthRecord
from regauth.ops.exchange_record import ChallengeRecord
from regauth.ops.exchange_record import CheckedBy
from regauth.ops.exchange_record import ExchangeRecord
from regauth.ops.exchange_record import ScopeDecisionRecord
from regauth.ops.exchange_record import TokenRequestRecord
from regauth.ops.exchange_record import TokenResponseRecord
from regauth.ops.exchange_record import VerifiedTokenRecord
from regauth.ops.safe_text import quote


@dataclass(frozen=True)
class Entry:
    """One exchange record (`ExchangeRecord`, read tolerantly) at its line of the log, with the
    views the tools derive from it: who it was (`account`, `claim`), which genuine token it
    presented (`verified_jti`), the repositories it is about (`names`). Absent fields read as
    empty strings and lists, so the tools format them without checks."""

    record: ExchangeRecord
    line: int  # 1-based line number in its file
    source: str = ""  # the file it was read from ("" when read from lines)
    replica: str = ""  # the replica that wrote it (`log_sources.replica_names`)
    file: int = 0  # the file's position among the inputs (orders equal times)

    @property
    def time(self) -> dt.datetime | None:
        return self.record.time

    @property
    def conversation(self) -> str:
        if self.record.conversation:
            return self.record.conversation
        return f"{self.replica}:line-{self.line}" if self.replica else f"line-{self.line}"

    @property
    def location(self) -> str:
        """Where the record is, for a reader: `line 12`, or `FILE:12` when read from a file."""
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"

    @property
    def client_ip(self) -> str:
        value = self.record.client
        if value is None:
            return ""
        host = value.rpartition(":")[0] if ":" in value else value
        return host.strip("[]")

    @property
    def via(self) -> str | None:
        """The load balancer whose PROXY protocol header named the client, if any."""
        return self.record.via

    @property
    def kind(self) -> str:
        return self.record.kind or ""

    @property
    def status(self) -> int | None:
        return self.record.status

    @property
    def method(self) -> str:
        return self.record.method or ""

    @property
    def path(self) -> str:
        return self.record.path or ""

    @property
    def answered_by(self) -> str:
        return self.record.answered_by or ""

    @property
    def repository(self) -> str | None:
        route = self.record.route
        return route.repository if route is not None else None

    @property
    def route(self) -> str:
        route = self.record.route
        return route.kind if route is not None else ""

    @property
    def required(self) -> list[str]:
        route = self.record.route
        return list(route.required) if route is not None else []

    @property
    def auth(self) -> AuthRecord:
        return self.record.auth or AuthRecord()

    @property
    def auth_scheme(self) -> str:
        return self.auth.scheme or ""

    @property
    def basic_username(self) -> str | None:
        return self.auth.username

    @property
    def jwt_claims(self) -> dict[str, object]:
        jwt = self.auth.jwt
        return jwt.claims if jwt is not None else {}

    @property
    def presented_jti(self) -> str | None:
        value = self.jwt_claims.get("jti")
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str:
        decision = self.record.decision
        return (decision.reason if decision is not None else None) or ""

    @property
    def challenges(self) -> list[ChallengeRecord]:
        return list(self.record.challenge)

    @property
    def bearer_challenge(self) -> ChallengeRecord | None:
        for c in self.record.challenge:
            if c.is_bearer:
                return c
        return None

    @property
    def upstream_challenges(self) -> list[ChallengeRecord]:
        return list(self.record.upstream_challenge)

    @property
    def token_request(self) -> TokenRequestRecord:
        return self.record.token_request or TokenRequestRecord()

    @property
    def token_response(self) -> TokenResponseRecord:
        return self.record.token_response or TokenResponseRecord()

    @property
    def requested(self) -> list[str]:
        return list(self.token_request.requested or ())

    @property
    def decisions(self) -> list[ScopeDecisionRecord]:
        return list(self.token_response.decisions or ())

    @property
    def token_account(self) -> str | None:
        return self.token_response.account

    @property
    def credential(self) -> str:
        """Which credential decided this record, for `trace`: `password`, `refresh token`,
        `client certificate SERIAL`, `job token ID`, `token` (a Bearer token regauth
        verified), `capability` (a build id in the path), or "" (anonymous or unknown)."""
        certificate = self.record.client_certificate
        if self.kind == "token":
            kind = self.token_response.credential or ""
            if kind == "client_certificate":
                return f"client certificate {self.token_response.certificate_serial or ''}".strip()
            if kind == "job_token":
                return f"job token {self.token_response.job_token or ''}".strip()
            return kind.replace("_", " ")
        if self.reason.startswith("client certificate (") and certificate is not None:
            return f"client certificate {certificate.serial or ''}".strip()
        if self.checked_by == "regauth":
            return "token"
        if "<id:" in self.path:
            return "capability"
        return ""

    @property
    def token_build(self) -> str | None:
        """The build a client certificate named on this token request (`${build}`), or None."""
        return self.token_response.build

    @property
    def issued_jti(self) -> str | None:
        return self.token_response.jti if self.status == 200 else None

    @property
    def token_refused(self) -> str | None:
        return self.token_response.refused

    @property
    def error(self) -> str | None:
        """The flow's error, when it ended without a complete answer (mitmproxy's or regauth's
        words: a cut body, a reset stream, a lost connection)."""
        return self.record.error

    @property
    def injected(self) -> bool:
        return self.record.upstream_credentials == "injected"

    @property
    def upstream_date(self) -> str | None:
        """The registry response's `Date` header, when the log records it."""
        return self.record.upstream_date

    @property
    def checked_by(self) -> CheckedBy | None:
        """Who checked the credential this registry request presented: `regauth` (its gate
        verified the token), `registry` (delegate mode: regauth forwarded it unchecked) or None
        (nobody: refused as invalid, or a Basic credential on a registry route).

        Logs written before `auth.checked_by` existed say it by `decision.verified_token`, the
        gate's record of a token it verified; without one, nobody verified anything."""
        checked_by = self.auth.checked_by
        if checked_by is not ABSENT:
            return checked_by
        return "regauth" if self._verified_token is not None else None

    @property
    def _verified_token(self) -> VerifiedTokenRecord | None:
        decision = self.record.decision
        return decision.verified_token if decision is not None else None

    @property
    def account(self) -> str | None:
        """Who this record acted as, only as far as regauth verified it: the account a token
        was issued to (`token_response.account`: regauth checked the password or refresh
        token), or the subject of a token regauth's gate verified (`anonymous` for an anonymous
        token; `ISSUER:SUBJECT` for a trusted issuer's, whose subjects are not regauth's
        accounts). Never a name a client merely sent: see `claim`."""
        if self.kind == "token":
            return self.token_account
        if self.checked_by != "regauth":
            return None
        verified = self._verified_token
        if verified is None:
            return None
        name = verified.subject or "anonymous"
        source = verified.source
        return name if source in (None, "regauth") else f"{source}:{name}"

    @property
    def claim(self) -> str | None:
        """A name this record carried that regauth did not verify, said as such:
        `sub='alice' (unverified)` (a token regauth did not verify, or refused), `sub='ci'
        (claimed, checked by the registry)` (delegate mode), `user='bob' (unverified)` (a Basic
        user name on a registry route, or a login the token endpoint did not accept). Raw text:
        the renderer escapes it; the quotes keep where the name ends beyond doubt."""
        if self.account is not None:
            return None
        if self.kind == "token":
            user = self.token_request.username or self.basic_username
            return f"user={quote(user, 64)} (unverified)" if user is not None else None
        how = "claimed, checked by the registry" if self.checked_by == "registry" else "unverified"
        sub = self.jwt_claims.get("sub")
        if isinstance(sub, str):
            return f"sub={quote(sub, 64)} ({how})"
        if self.basic_username is not None:
            return f"user={quote(self.basic_username, 64)} ({how})"
        return None

    @property
    def verified_jti(self) -> str | None:
        """The presented token's `jti` when the token is known to be genuine: regauth verified
        it, or (delegate mode) the registry accepted it (any answer but 401, or a 401 for
        insufficient scope, which it gives only to a valid token). Only such a jti joins a
        conversation: anyone can write a token naming someone else's jti."""
        jti = self.presented_jti
        if jti is None:
            return None
        by = self.checked_by
        if by == "regauth":
            return jti
        if (
            by == "registry"
            and self.status is not None
            and (
                self.status != 401
                or any(c.error == "insufficient_scope" for c in self.upstream_challenges)
            )
        ):
            return jti
        return None

    @property
    def names(self) -> set[str]:
        """Repository names this record is about (route, requested or challenged scopes)."""
        names = {self.repository} if self.repository else set()
        scopes = list(self.requested) + self.required
        for c in self.challenges + self.upstream_challenges:
            scopes += c.scopes or ()
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) >= 3 and parts[0] == "repository":
                names.add(":".join(parts[1:-1]))
        return names


@dataclass
class LogRead:
    entries: list[Entry]
    skipped: int  # lines that were not JSON objects


def parse_entry(
    text: str, line: int, source: str = "", replica: str = "", file: int = 0
) -> Entry | None:
    """The record of one log line, or None when the line is not a JSON object."""
    try:
        return Entry(ExchangeRecord.from_json(json.loads(text)), line, source, replica, file)
    except ValueError:  # not JSON, or not a JSON object
        return None


def parse_lines(lines: Iterable[str], first_line: int = 1) -> LogRead:
    """The records of `lines` (numbered from `first_line`); blank lines are passed over, and
    a line that is not a JSON object is counted in `skipped`."""
    entries, skipped = [], 0
    for number, text in enumerate(lines, first_line):
        if not text.strip():
            continue
        entry = parse_entry(text, number)
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    return LogRead(entries, skipped)


def read_log(path: Path) -> LogRead:
    """Every record of a log file; raises OSError if it cannot be read."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return parse_lines(f)


@dataclass
class Conversation:
    id: str
    entries: list[Entry] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # log ids joined into this one
    # More records of a conversation already given back (`ConversationStream`): they arrived
    # after it had closed, and are given back as a conversation of their own, marked so.
    continued: bool = False
    last: dt.datetime | None = field(default=None, repr=False)  # its latest record's time

    @property
    def start(self) -> dt.datetime | None:
        times = [t for e in self.entries if (t := e.time) is not None]
        return min(times) if times else None

    @property
    def end(self) -> dt.datetime | None:
        times = [t for e in self.entries if (t := e.time) is not None]
        return max(times) if times else None

    @property
    def clients(self) -> list[str]:
        return list(dict.fromkeys(e.client_ip for e in self.entries if e.client_ip))

    @property
    def accounts(self) -> list[str]:
        """Accounts regauth verified in this conversation (Entry.account)."""
        return list(dict.fromkeys(a for e in self.entries if (a := e.account)))

    @property
    def claims(self) -> list[str]:
        """Names carried and not verified (Entry.claim), as shown."""
        return list(dict.fromkeys(c for e in self.entries if (c := e.claim)))

    @property
    def names(self) -> list[str]:
        return sorted({n for e in self.entries for n in e.names})

    @property
    def replicas(self) -> list[str]:
        """The replicas whose logs hold its records (empty when read from lines)."""
        return list(dict.fromkeys(e.replica for e in self.entries if e.replica))


def _sort_key(entry: Entry) -> tuple[dt.datetime, int, int]:
    return (entry.time or dt.datetime.min.replace(tzinfo=dt.UTC), entry.file, entry.line)


# A conversation with no record for this long (in the log's time) is closed: the proxy links a
# token request to a challenge within 300 s (`ops.conversations.Conversations.window`), and a
# token's later requests carry its conversation id from the proxy itself.
CLOSE_AFTER = dt.timedelta(seconds=300)
# Conversation ids and token ids remembered after their conversation closed, at most: enough
# to mark a late record `continued`, bounded so that memory does not grow with the log.
REMEMBERED = 100_000


class ConversationStream:
    """Entries grouped into conversations as they are read, each given back once it has
    closed, so that memory holds the open conversations and not the log.

    Feed entries in (nearly) time order with `add`; `closed()` gives back, in start order,
    the conversations with no record for `close_after` of log time (None: never; all come
    from `rest()`). A conversation whose first record presents a genuine token
    (`Entry.verified_jti`) issued in an open conversation is joined to that one. A record of a
    conversation already given back starts a new one marked `continued`."""

    def __init__(self, close_after: dt.timedelta | None = CLOSE_AFTER) -> None:
        self.close_after = close_after
        self.latest: dt.datetime | None = None  # the latest record time seen
        self._open: dict[str, Conversation] = {}  # every id (merged ones too) → conversation
        self._issued_in: OrderedDict[str, str] = OrderedDict()  # jti → conversation id
        self._seen: OrderedDict[str, None] = OrderedDict()  # ids whose first record was read

    def add(self, entry: Entry) -> Conversation:
        """Put `entry` in its conversation; return that conversation."""
        cid = entry.conversation
        conversation = self._open.get(cid)
        if conversation is None:
            continued = cid in self._seen
            jti = entry.verified_jti
            origin = self._issued_in.get(jti) if jti and not continued else None
            target = self._open.get(origin) if origin is not None else None
            if target is not None:
                conversation = target
                if cid not in conversation.merged:
                    conversation.merged.append(cid)
            else:
                conversation = Conversation(cid, continued=continued)
            self._open[cid] = conversation
            self._remember(self._seen, cid, None)
        conversation.entries.append(entry)
        at = entry.time
        if at is not None:
            if conversation.last is None or at > conversation.last:
                conversation.last = at
            if self.latest is None or at > self.latest:
                self.latest = at
        if entry.issued_jti and entry.issued_jti not in self._issued_in:
            self._remember(self._issued_in, entry.issued_jti, cid)
        return conversation

    @staticmethod
    def _remember[V](memory: OrderedDict[str, V], key: str, value: V) -> None:
        memory[key] = value
        if len(memory) > REMEMBERED:
            memory.popitem(last=False)

    def open_conversations(self) -> list[Conversation]:
        return list({id(c): c for c in self._open.values()}.values())

    def closed(self) -> list[Conversation]:
        """The conversations quiet for `close_after` before the latest record, removed from
        the stream, in start order."""
        if self.close_after is None or self.latest is None:
            return []
        horizon = self.latest - self.close_after
        done = [c for c in self.open_conversations() if c.last is not None and c.last < horizon]
        return self._give_back(done)

    def rest(self) -> list[Conversation]:
        """Every conversation still open, removed from the stream, in start order."""
        return self._give_back(self.open_conversations())

    def _give_back(self, done: list[Conversation]) -> list[Conversation]:
        for c in done:
            for cid in (c.id, *c.merged):
                self._open.pop(cid, None)
            c.entries.sort(key=_sort_key)
        return sorted(done, key=lambda c: _sort_key(c.entries[0]))


def conversations(entries: Iterable[Entry]) -> list[Conversation]:
    """Entries grouped by conversation, in time order; a conversation whose first record
    presents a token issued in another conversation is joined to that one."""
    stream = ConversationStream(close_after=None)
    for entry in sorted(entries, key=_sort_key):
        stream.add(entry)
    return stream.rest()
