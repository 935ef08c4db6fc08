"""Password checks for the token endpoint.

- Unknown accounts cost a bcrypt against a dummy hash of the same cost, so response time does not
  reveal which accounts exist.
- A verified (account, password) pair is cached briefly under a SHA-256 of the pair and the
  stored hash, so clients that log in per request do not pay a bcrypt each time, and a password
  change invalidates the entry by construction.
- Failed logins are counted per (account, client address) and per client address; past either
  limit, requests are refused with a retry delay before any bcrypt runs (a recently verified
  login still succeeds, so a guesser cannot lock the real client out).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

import bcrypt

from regauth.policy import Account

MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, never truncated


class AuthenticationFailed(Exception):
    pass


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after} s")
        self.retry_after = retry_after


def hash_password(password: str, rounds: int = 12) -> str:
    raw = password.encode()
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(f"passwords longer than {MAX_PASSWORD_BYTES} bytes are not supported "
                         "by bcrypt")
    if not raw:
        raise ValueError("empty password")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode()


def _cost(password_hash: bytes) -> int:
    try:
        return int(password_hash.split(b"$")[2])
    except (IndexError, ValueError):
        return 12


@dataclass
class Authenticator:
    cache_ttl: float = 60.0
    max_failures: int = 5
    max_client_failures: int = 30
    failure_window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    max_entries: int = 10000
    _verified: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    _failures: OrderedDict[tuple[str, str], list[float]] = field(default_factory=OrderedDict)
    _dummies: dict[int, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _dummy(self, cost: int) -> bytes:
        if cost not in self._dummies:
            self._dummies[cost] = bcrypt.hashpw(b"regauth-dummy-password", bcrypt.gensalt(cost))
        return self._dummies[cost]

    def check_rate(self, username: str, client: str) -> None:
        """Refuse before any bcrypt: per account and address, and per address for any name
        (unknown names cost a bcrypt too, and must not be free to spray)."""
        now = self.clock()
        with self._lock:
            for key, limit in (((username, client), self.max_failures),
                               (("", client), self.max_client_failures)):
                recent = [t for t in self._failures.get(key, []) if
                          t > now - self.failure_window]
                if len(recent) >= limit:
                    raise RateLimited(max(1, int(recent[0] + self.failure_window - now) + 1))

    def _record_failure(self, username: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            for key in ((username, client), ("", client)):
                entries = [t for t in self._failures.pop(key, []) if
                           t > now - self.failure_window]
                entries.append(now)
                self._failures[key] = entries
            while len(self._failures) > self.max_entries:
                self._failures.popitem(last=False)

    def authenticate(self, accounts: dict[str, Account], username: str, password: str,
                     client: str) -> Account:
        """Return the account or raise AuthenticationFailed / RateLimited. Blocking (bcrypt).

        A login verified moments ago succeeds even while its address is locked out, so a
        guesser sharing a NAT address cannot lock the real client out of its own account.
        """
        account = accounts.get(username)
        stored = account.password_hash if account else None
        raw = password.encode("utf-8", "surrogateescape")
        cache_key = hashlib.sha256(b"\0".join([username.encode(), raw, stored or b""])).digest()
        now = self.clock()
        if account is not None:
            with self._lock:
                expires = self._verified.get(cache_key)
            if expires is not None and expires > now:
                return account
        self.check_rate(username, client)
        reference = stored if stored is not None else self._dummy(
            max((_cost(a.password_hash) for a in accounts.values()), default=12))
        ok = False
        if raw and len(raw) <= MAX_PASSWORD_BYTES:
            ok = bcrypt.checkpw(raw, reference)
        else:
            bcrypt.checkpw(b"x", reference)  # same cost either way
        if account is None or not ok:
            self._record_failure(username, client)
            raise AuthenticationFailed()
        with self._lock:
            self._verified[cache_key] = now + self.cache_ttl
            self._verified.move_to_end(cache_key)
            while len(self._verified) > self.max_entries:
                self._verified.popitem(last=False)
        return account
