"""Password checks for the token endpoint.

- Only a password attempt runs bcrypt, and only a password attempt can count as a failed
  login: a credential that can never be valid (an empty or malformed account name, an empty
  password, one longer than bcrypt's 72 bytes) is refused at once and counts nothing, whatever
  the account. Refresh tokens never come here (token_service.py verifies them).
- Unknown accounts cost a bcrypt against a dummy hash of the same cost, so response time does not
  reveal which accounts exist.
- A verified (account, password) pair is cached briefly under a SHA-256 of the pair and the
  stored hash, so clients that log in per request do not pay a bcrypt each time, and a password
  change invalidates the entry by construction. A refused pair is remembered the same way for
  a minute: a client repeating a wrong password (containerd retries a refused POST grant as a
  GET) makes one guess, not several, and costs no further bcrypt.
- Failed logins are limited per account and network, per network, and per account across all
  networks (`logins.limits`); past a limit, requests are refused with a retry delay before any
  bcrypt runs. A login verified in the last minute still succeeds, so a guesser cannot lock the
  real client out.
- `needs_check` tells the token service which pairs it can answer from memory alone (cached,
  refused in the last minute, no password attempt at all): those never wait for a login
  thread, and never take a place in the login queue (`logins.queue`).
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

from regauth.federation.id_token import IssuerKeys
from regauth.logins.job_tokens import JobStore
from regauth.logins.limits import LoginLimiter
from regauth.policy.model import ACCOUNT_NAME_RE
from regauth.policy.model import Account

# Seconds a cached login must still hold to be answered from memory on the event loop; inside
# its last CACHE_MARGIN seconds it goes to the login queue and is checked (and renewed) again.
CACHE_MARGIN = 5.0
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, never truncated


class AuthenticationFailed(Exception):
    """Wrong credentials. `counted` says whether this was a new failed password attempt."""

    def __init__(self, counted: bool) -> None:
        super().__init__("invalid username or password")
        self.counted = counted


def hash_password(password: str, rounds: int = 12) -> str:
    raw = password.encode()
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(
            f"passwords longer than {MAX_PASSWORD_BYTES} bytes are not supported by bcrypt"
        )
    if not raw:
        raise ValueError("empty password")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode()


def _cost(password_hash: bytes) -> int:
    try:
        return int(password_hash.split(b"$")[2])
    except (IndexError, ValueError):
        return 12


def is_password_attempt(username: str, password: bytes) -> bool:
    """Whether (username, password) could ever be valid, judged without looking up the
    account (so the answer reveals nothing about which accounts exist)."""
    return (
        ACCOUNT_NAME_RE.fullmatch(username) is not None and 0 < len(password) <= MAX_PASSWORD_BYTES
    )


class _Memo:
    """Bounded, expiring set of credential digests (thread-safe)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, key: bytes, now: float) -> bool:
        with self._lock:
            expires = self._entries.get(key)
        return expires is not None and expires > now

    def add(self, key: bytes, expires: float) -> None:
        with self._lock:
            self._entries[key] = expires
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Authenticator:
    """Checks account passwords for the token service (blocking: bcrypt; call it off the
    event loop). Owns the verified and refused memos and, through `limiter`, the failed-login
    limits; never sees refresh tokens."""

    cache_ttl: float = 60.0
    refused_ttl: float = 60.0
    clock: Callable[[], float] = time.monotonic
    max_entries: int = 10000
    limiter: LoginLimiter | None = None
    # Where job tokens' revocations are read (logins/job_tokens.py); None: no job tokens
    # are revoked (tests), the proxy always sets one.
    job_store: JobStore | None = None
    # Where federated issuers' keys are found (federation/jwks.py IssuerKeySets; the mitm layer
    # keeps it across reloads); None: no ID token is accepted.
    federation: IssuerKeys | None = None
    _verified: _Memo = field(init=False)
    _refused: _Memo = field(init=False)
    _dummies: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._verified = _Memo(self.max_entries)
        self._refused = _Memo(self.max_entries)
        if self.limiter is None:
            self.limiter = LoginLimiter(clock=self.clock)

    def _dummy(self, cost: int) -> bytes:
        if cost not in self._dummies:
            self._dummies[cost] = bcrypt.hashpw(b"regauth-dummy-password", bcrypt.gensalt(cost))
        return self._dummies[cost]

    def _memo_key(self, username: str, raw: bytes, stored: bytes | None) -> bytes:
        return hashlib.sha256(b"\0".join([username.encode(), raw, stored or b""])).digest()

    def verified_recently(
        self,
        accounts: dict[str, Account],
        username: str,
        password: str,
        margin: float = CACHE_MARGIN,
    ) -> bool:
        """Whether `authenticate` would accept this pair from its memo (no bcrypt, no limit
        check, nothing blocking) for at least another `margin` seconds: the token service may
        then answer on the event loop without the entry expiring in between."""
        account = accounts.get(username)
        if account is None:
            return False
        key = self._memo_key(
            username, password.encode("utf-8", "surrogateescape"), account.password_hash
        )
        return self._verified.holds(key, self.clock() + margin)

    def needs_check(
        self,
        accounts: dict[str, Account],
        username: str,
        password: str,
        margin: float = CACHE_MARGIN,
    ) -> bool:
        """Whether `authenticate` may consult the login limits or run bcrypt for this pair
        within the next `margin` seconds. False when it decides from memory alone, nothing
        blocking and nothing counted: no password attempt at all, verified in the last
        `cache_ttl` s, or refused in the last `refused_ttl` s (the entry lasting `margin` s
        more, so it cannot expire before the answer). Such requests never wait in the login
        queue: a client repeating a refused password (containerd's GET after its POST) is
        answered at once, and so is one whose login is cached."""
        raw = password.encode("utf-8", "surrogateescape")
        if not is_password_attempt(username, raw):
            return False
        account = accounts.get(username)
        key = self._memo_key(username, raw, account.password_hash if account else None)
        later = self.clock() + margin
        if account is not None and self._verified.holds(key, later):
            return False
        return not self._refused.holds(key, later)

    def authenticate(
        self,
        accounts: dict[str, Account],
        username: str,
        password: str,
        client: str,
        renew_within: float = 0.0,
    ) -> Account:
        """Return the account, or raise AuthenticationFailed or `logins.limits.RateLimited`.

        Order: not a password attempt (refused, not counted) → verified in the last
        `cache_ttl` s (accepted, even while a limit is reached: a guesser sharing the client's
        address cannot lock it out) → refused in the last `refused_ttl` s (refused, not
        counted again) → limits (RateLimited) → bcrypt (a failure is counted).

        `renew_within` (seconds): a verified entry that expires sooner is checked again with
        bcrypt (no limit applies: it was verified) and renewed. The login queue passes
        `CACHE_MARGIN`, the margin `needs_check` sends logins to the queue with, so that the
        one check it runs renews the entry for every identical login waiting behind it.
        """
        raw = password.encode("utf-8", "surrogateescape")
        if not is_password_attempt(username, raw):
            raise AuthenticationFailed(counted=False)
        assert self.limiter is not None
        account = accounts.get(username)
        stored = account.password_hash if account else None
        memo_key = self._memo_key(username, raw, stored)
        now = self.clock()
        if account is not None and self._verified.holds(memo_key, now + renew_within):
            return account
        renewing = account is not None and self._verified.holds(memo_key, now)
        if not renewing and self._refused.holds(memo_key, now):
            raise AuthenticationFailed(counted=False)
        if not renewing:
            self.limiter.check(username, client)
        reference = (
            stored
            if stored is not None
            else self._dummy(max((_cost(a.password_hash) for a in accounts.values()), default=12))
        )
        ok = bcrypt.checkpw(raw, reference)
        now = self.clock()
        if account is None or not ok:
            self.limiter.failed(username, client)
            self._refused.add(memo_key, now + self.refused_ttl)
            raise AuthenticationFailed(counted=True)
        self.limiter.succeeded(username, client)
        self._verified.add(memo_key, now + self.cache_ttl)
        return account
