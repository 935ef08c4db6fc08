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

Identity: `Entry.account` is who regauth verified a record acted as; a name a client merely
sent (a forged token's `sub`, a Basic user name, a refused login) is an `Entry.claim`, shown as
unverified and never matched by `trace --account`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import IO

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
    line: int  # 1-based line number in the log

    @property
    def time(self) -> dt.datetime | None:
        return self.record.time

    @property
    def conversation(self) -> str:
        return self.record.conversation or f"line-{self.line}"

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


def parse_lines(lines: Iterable[str], first_line: int = 1) -> LogRead:
    """The records of `lines` (numbered from `first_line`); blank lines are passed over, and
    a line that is not a JSON object is counted in `skipped`."""
    entries, skipped = [], 0
    for number, text in enumerate(lines, first_line):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError:
            skipped += 1
            continue
        try:
            entries.append(Entry(ExchangeRecord.from_json(value), number))
        except ValueError:  # not a JSON object
            skipped += 1
    return LogRead(entries, skipped)


def read_log(path: Path) -> LogRead:
    """Every record of a log file; raises OSError if it cannot be read."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return parse_lines(f)


def follow_lines(stream: IO[str]) -> Iterator[str | None]:
    """Complete lines appended to `stream`; None when nothing new arrived (poll again)."""
    pending = ""
    while True:
        chunk = stream.readline()
        if not chunk:
            yield None
            continue
        pending += chunk
        if pending.endswith("\n"):
            yield pending
            pending = ""


@dataclass
class Conversation:
    id: str
    entries: list[Entry] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # log ids joined into this one

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


def _sort_key(entry: Entry) -> tuple[dt.datetime, int]:
    return (entry.time or dt.datetime.min.replace(tzinfo=dt.UTC), entry.line)


def conversations(entries: Iterable[Entry]) -> list[Conversation]:
    """Entries grouped by conversation, in time order; a conversation whose first record
    presents a token issued in another conversation is joined to that one."""
    ordered = sorted(entries, key=_sort_key)
    parent: dict[str, str] = {}

    def find(cid: str) -> str:
        while parent.get(cid, cid) != cid:
            cid = parent[cid]
        return cid

    issued_in: dict[str, str] = {}
    first_seen: dict[str, Entry] = {}
    for entry in ordered:
        cid = entry.conversation
        if cid not in first_seen:
            first_seen[cid] = entry
            jti = entry.verified_jti
            origin = issued_in.get(jti) if jti else None
            if origin is not None and find(origin) != find(cid):
                parent[find(cid)] = find(origin)
        if entry.issued_jti:
            issued_in.setdefault(entry.issued_jti, cid)
    groups: dict[str, Conversation] = {}
    for entry in ordered:
        root = find(entry.conversation)
        conversation = groups.setdefault(root, Conversation(root))
        conversation.entries.append(entry)
        if entry.conversation != root and entry.conversation not in conversation.merged:
            conversation.merged.append(entry.conversation)
    return sorted(groups.values(), key=lambda c: _sort_key(c.entries[0]))
