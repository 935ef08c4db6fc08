"""Where job tokens are recorded and revoked (`regauth token issue|list|revoke`).

A job token is self-contained (a JWT regauth signs, `tokens.issue.TokenIssuer.issue_job`), so
every replica holding the signing keys can verify it; what replicas must share is the list of
issued tokens (for `regauth token list`) and the revocations. Two stores:

- `FileJobStore` (no `--state`): `certs/jobs/issued.jsonl` and `certs/jobs/revoked.json`
  (`{"version": 1, "revoked": {"JTI": EXP, …}}`), read again when the file changes.
- `RedisJobStore` (`--state redis://…`, `logins.redis_store`): one key per issued token and one
  per revocation, each expiring with its token, so Redis forgets them by itself.

`is_revoked` raises `JobStoreUnavailable` when it cannot answer: the token endpoint then refuses
the job token (fail closed), it never assumes "not revoked". Entries carry no secret: a job
token's id, subject, scopes and times, never the token.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from regauth.mtls.identity import ClientSubject
from regauth.mtls.identity import parse_subject
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import parse_scopes
from regauth.tokens.issue import MAX_JOB_LIFETIME
from regauth.tokens.issue import TokenIssuer

MAX_REVOKED_BYTES = 4 * 1024 * 1024


class JobStoreUnavailable(Exception):
    """The store cannot say whether a job token is revoked."""


@dataclass(frozen=True)
class JobRecord:
    jti: str
    subject: str  # regauth:build:ID or regauth:account:NAME
    scopes: tuple[str, ...]
    issued_at: int
    exp: int

    def to_json(self) -> dict[str, object]:
        return {
            "jti": self.jti,
            "subject": self.subject,
            "scopes": list(self.scopes),
            "issued_at": self.issued_at,
            "exp": self.exp,
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> JobRecord:
        scopes = obj.get("scopes")
        issued_at, exp = obj.get("issued_at"), obj.get("exp")
        if not (
            isinstance(obj.get("jti"), str)
            and isinstance(obj.get("subject"), str)
            and isinstance(scopes, list)
            and isinstance(issued_at, int)
            and isinstance(exp, int)
        ):
            raise ValueError("not a job token record")
        return cls(
            str(obj["jti"]), str(obj["subject"]), tuple(str(s) for s in scopes), issued_at, exp
        )


@dataclass(frozen=True)
class JobRequest:
    """What a job token is asked for (`regauth token issue`, `POST /job-tokens`), checked."""

    subject: ClientSubject
    scopes: tuple[ResourceScope, ...]
    lifetime: int  # seconds


def parse_job_request(kind: str, name: str, scopes: list[str], lifetime: int) -> JobRequest:
    """Check a request's parts; ValueError naming what is wrong (the caller's input error)."""
    subject = parse_subject(kind, name)
    if not scopes:
        raise ValueError("at least one scope is required")
    parsed = tuple(parse_scopes(scopes))
    if not 0 < lifetime <= MAX_JOB_LIFETIME:
        raise ValueError(f"ttl must be more than 0 and at most {MAX_JOB_LIFETIME // 3600}h")
    return JobRequest(subject, parsed, lifetime)


def mint(issuer: TokenIssuer, request: JobRequest) -> tuple[str, JobRecord]:
    """The signed job token and its record (what a store keeps: never the token)."""
    token, claims = issuer.issue_job(request.subject.uri, list(request.scopes), request.lifetime)
    record = JobRecord(
        str(claims["jti"]),
        request.subject.uri,
        tuple(str(s) for s in request.scopes),
        int(str(claims["iat"])),
        int(str(claims["exp"])),
    )
    return token, record


class JobStore(Protocol):
    def record(self, entry: JobRecord) -> None: ...
    def entries(self) -> list[JobRecord]: ...
    def revoke(self, jti: str, exp: int) -> None: ...
    def is_revoked(self, jti: str) -> bool: ...


class FileJobStore:
    """The store in the certs directory (one host; replicas need Redis to share revocations)."""

    def __init__(self, certs_dir: Path) -> None:
        self.directory = certs_dir / "jobs"
        self.issued = self.directory / "issued.jsonl"
        self.revoked = self.directory / "revoked.json"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._revoked: dict[str, int] = {}

    def record(self, entry: JobRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.issued, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry.to_json()) + "\n")

    def entries(self) -> list[JobRecord]:
        try:
            lines = self.issued.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(JobRecord.from_json(json.loads(line)))
            except (ValueError, AttributeError):
                continue  # a torn line: skipped, the others still count
        return out

    def _read_revoked(self) -> dict[str, int]:
        try:
            st = self.revoked.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp == self._stamp:
                return self._revoked
        try:
            data = self.revoked.read_bytes()
            if len(data) > MAX_REVOKED_BYTES:
                raise ValueError("too large")
            doc = json.loads(data)
            revoked = doc["revoked"] if doc.get("version") == 1 else None
            if not isinstance(revoked, dict):
                raise ValueError("no revoked object")
            parsed = {str(k): int(v) for k, v in revoked.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise JobStoreUnavailable(f"{self.revoked}: {e}") from None
        with self._lock:
            self._stamp, self._revoked = stamp, parsed
        return parsed

    def revoke(self, jti: str, exp: int) -> None:
        now = int(time.time())
        revoked = {k: v for k, v in self._read_revoked().items() if v > now}  # expired: dropped
        revoked[jti] = exp
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.revoked.with_name(f".{self.revoked.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "revoked": revoked}, indent=1) + "\n")
        os.replace(tmp, self.revoked)

    def is_revoked(self, jti: str) -> bool:
        return jti in self._read_revoked()
