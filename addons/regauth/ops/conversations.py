"""Conversations: linking a client's challenge, token request and retries (the `conversation`
id of every exchange record, `ops.exchange_record`).

A conversation starts with a 401 challenge (or with a token request nobody challenged, as when a
BuildKit client fetches tokens for its daemon). The token request that follows from the same
client address and asks for the challenged scopes joins it; every later request that presents a
token issued in it (matched by `jti`) joins it too.

Conversations are keyed by client address **and identity**: the first token request that joins
an anonymous challenge and gets a token binds the conversation to its account, and a token
request for another account from the same address (two accounts behind one NAT address) does
not join it but starts its own. A challenge to a request that presented a token regauth issued
belongs to that token's account from the start.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field


def new_id() -> str:
    return secrets.token_hex(8)


@dataclass
class _Challenge:
    conversation: str
    client: str
    scopes: frozenset[str]
    at: float
    identity: str | None = None  # the account it belongs to, once known


@dataclass
class Conversations:
    """Bounded in memory and time; forgets what is older than `window` seconds."""

    window: float = 300.0
    # A challenge without a scope (`GET /v2/`) says nothing about what comes next: it joins a
    # token request only if that follows within this many seconds, not any later one.
    ping_window: float = 10.0
    max_entries: int = 10000
    clock: Callable[[], float] = time.monotonic
    _challenges: list[_Challenge] = field(default_factory=list)
    _by_jti: OrderedDict[str, tuple[str, str | None]] = field(default_factory=OrderedDict)

    def _expire(self) -> None:
        horizon = self.clock() - self.window
        self._challenges = [c for c in self._challenges if c.at >= horizon][-self.max_entries :]
        while len(self._by_jti) > self.max_entries:
            self._by_jti.popitem(last=False)

    def challenged(
        self,
        client: str,
        scopes: list[str],
        conversation: str | None = None,
        identity: str | None = None,
    ) -> str:
        """Record a challenge sent to `client` (whose request carried a token of `identity`,
        when regauth knows it); return its conversation id."""
        self._expire()
        cid = conversation or new_id()
        self._challenges.append(_Challenge(cid, client, frozenset(scopes), self.clock(), identity))
        return cid

    def token_requested(self, client: str, scopes: list[str], identity: str | None = None) -> str:
        """The conversation a token request belongs to: the latest matching challenge of the
        same client that is not another identity's, or new. `identity` is the account a token
        was issued to (None when none was): it then owns the challenge it joined."""
        self._expire()
        requested = frozenset(scopes)
        best: _Challenge | None = None
        now = self.clock()
        for c in reversed(self._challenges):
            if c.client != client or not c.scopes <= requested:
                continue
            if identity is not None and c.identity not in (None, identity):
                continue
            if not c.scopes and now - c.at > self.ping_window:
                continue
            if best is None or len(c.scopes) > len(best.scopes):
                best = c
            if c.scopes == requested:
                break
        if best is None:
            return new_id()
        if identity is not None:
            for c in self._challenges:  # every challenge of that conversation is now theirs
                if c.conversation == best.conversation and c.identity is None:
                    c.identity = identity
        return best.conversation

    def token_issued(self, jti: str, conversation: str, identity: str | None = None) -> None:
        self._by_jti[jti] = (conversation, identity)
        self._by_jti.move_to_end(jti)
        self._expire()

    def for_token(self, jti: str | None) -> str | None:
        if not jti:
            return None
        entry = self._by_jti.get(jti)
        return entry[0] if entry is not None else None

    def identity_of_token(self, jti: str | None) -> str | None:
        """The account the token `jti` was issued to, if this process issued it."""
        entry = self._by_jti.get(jti) if jti else None
        return entry[1] if entry is not None else None
