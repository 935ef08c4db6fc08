"""The exchange log read back: typed views of its records, grouped into conversations.

The log is JSONL written by the proxy (README "The exchange log"). Reading is tolerant: a line
that is not a JSON object (a torn last line, a foreign line) is counted and skipped, and every
field is optional, so logs from older and newer regauth versions both read.

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

from regauth.ops.safe_text import quote


@dataclass(frozen=True)
class Entry:
    """One exchange record with the fields the tools read."""

    raw: dict[str, object]
    line: int

    def _get(self, key: str) -> object:
        return self.raw.get(key)

    def _dict(self, key: str) -> dict[str, object]:
        value = self.raw.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def time(self) -> dt.datetime | None:
        value = self._get("time")
        if not isinstance(value, str):
            return None
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    @property
    def conversation(self) -> str:
        value = self._get("conversation")
        return value if isinstance(value, str) and value else f"line-{self.line}"

    @property
    def client_ip(self) -> str:
        value = self._get("client")
        if not isinstance(value, str):
            return ""
        host = value.rpartition(":")[0] if ":" in value else value
        return host.strip("[]")

    @property
    def via(self) -> str | None:
        """The load balancer whose PROXY protocol header named the client, if any."""
        value = self._get("via")
        return value if isinstance(value, str) else None

    @property
    def kind(self) -> str:
        return str(self._get("kind") or "")

    @property
    def status(self) -> int | None:
        value = self._get("status")
        return value if isinstance(value, int) else None

    @property
    def method(self) -> str:
        return str(self._get("method") or "")

    @property
    def path(self) -> str:
        return str(self._get("path") or "")

    @property
    def answered_by(self) -> str:
        return str(self._get("answered_by") or "")

    @property
    def repository(self) -> str | None:
        value = self._get("repository")
        return value if isinstance(value, str) else None

    @property
    def route(self) -> str:
        return str(self._get("route") or "")

    @property
    def required(self) -> list[str]:
        value = self._get("required")
        return [str(v) for v in value] if isinstance(value, list) else []

    @property
    def auth_scheme(self) -> str:
        return str(self._dict("auth").get("scheme") or "")

    @property
    def basic_username(self) -> str | None:
        value = self._dict("auth").get("username")
        return value if isinstance(value, str) else None

    @property
    def jwt_claims(self) -> dict[str, object]:
        jwt = self._dict("auth").get("jwt")
        claims = jwt.get("claims") if isinstance(jwt, dict) else None
        return claims if isinstance(claims, dict) else {}

    @property
    def presented_jti(self) -> str | None:
        value = self.jwt_claims.get("jti")
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str:
        return str(self._dict("decision").get("reason") or "")

    @property
    def challenges(self) -> list[dict[str, object]]:
        value = self._get("challenge")
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        return [c for c in items if isinstance(c, dict)]

    @property
    def bearer_challenge(self) -> dict[str, object] | None:
        for c in self.challenges:
            if str(c.get("scheme", "")).lower() == "bearer":
                return c
        return None

    @property
    def upstream_challenges(self) -> list[dict[str, object]]:
        value = self._get("upstream_challenge")
        return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []

    @property
    def token_request(self) -> dict[str, object]:
        return self._dict("token_request")

    @property
    def token_response(self) -> dict[str, object]:
        return self._dict("token_response")

    @property
    def requested(self) -> list[str]:
        value = self.token_request.get("requested")
        return [str(v) for v in value] if isinstance(value, list) else []

    @property
    def decisions(self) -> list[dict[str, object]]:
        value = self.token_response.get("decisions")
        return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []

    @property
    def token_account(self) -> str | None:
        value = self.token_response.get("account")
        return value if isinstance(value, str) else None

    @property
    def issued_jti(self) -> str | None:
        value = self.token_response.get("jti")
        return value if isinstance(value, str) and self.status == 200 else None

    @property
    def token_refused(self) -> str | None:
        value = self.token_response.get("refused")
        return value if isinstance(value, str) else None

    @property
    def error(self) -> str | None:
        """The flow's error, when it ended without a complete answer (mitmproxy's or regauth's
        words: a cut body, a reset stream, a lost connection)."""
        value = self._get("error")
        return value if isinstance(value, str) else None

    @property
    def injected(self) -> bool:
        return self._get("upstream_credentials") == "injected"

    @property
    def upstream_date(self) -> str | None:
        """The registry response's `Date` header, when the log records it."""
        value = self._get("upstream_date")
        return value if isinstance(value, str) else None

    @property
    def checked_by(self) -> str | None:
        """Who checked the credential this registry request presented: `regauth` (its gate
        verified the token), `registry` (delegate mode: regauth forwarded it unchecked) or None
        (nobody: refused as invalid, or a Basic credential on a registry route).

        Logs written before `auth.checked_by` existed say it by `decision.verified_token`, the
        gate's record of a token it verified; without one, nobody verified anything."""
        auth = self._dict("auth")
        if "checked_by" in auth:
            value = auth.get("checked_by")
            return value if value in ("regauth", "registry") else None
        return "regauth" if isinstance(self._dict("decision").get("verified_token"), dict) \
            else None

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
        verified = self._dict("decision").get("verified_token")
        if not isinstance(verified, dict):
            return None
        subject = verified.get("subject")
        name = subject if isinstance(subject, str) and subject else "anonymous"
        source = verified.get("source")
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
            user = _str(self.token_request.get("username")) or self.basic_username
            return f"user={quote(user, 64)} (unverified)" if user is not None else None
        how = "claimed, checked by the registry" if self.checked_by == "registry" \
            else "unverified"
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
        if by == "registry" and self.status is not None and (
                self.status != 401 or any(c.get("error") == "insufficient_scope"
                                          for c in self.upstream_challenges)):
            return jti
        return None

    @property
    def names(self) -> set[str]:
        """Repository names this record is about (route, requested or challenged scopes)."""
        names = {self.repository} if self.repository else set()
        scopes = list(self.requested) + self.required
        for c in self.challenges + self.upstream_challenges:
            scopes += str_list(c.get("scopes"))
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) >= 3 and parts[0] == "repository":
                names.add(":".join(parts[1:-1]))
        return names


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def str_list(value: object) -> list[str]:
    """A field that holds a JSON list (scopes, granted actions), as strings; anything else
    (absent, null, a foreign value) reads as empty, like every other field here."""
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass
class LogRead:
    entries: list[Entry]
    skipped: int  # lines that were not JSON objects


def parse_lines(lines: Iterable[str], first_line: int = 1) -> LogRead:
    entries, skipped = [], 0
    for number, text in enumerate(lines, first_line):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError:
            skipped += 1
            continue
        if isinstance(value, dict):
            entries.append(Entry(value, number))
        else:
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
