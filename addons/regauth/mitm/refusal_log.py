"""Connection-level refusals: counted by reason, logged without flooding, in bounded memory.

A refused connection or request head has no flow and no exchange record (nothing was parsed
that could be decided), so the console and the metrics are where an operator sees it. One
line per address and reason per minute, with a count of the others; the state behind that is
bounded (`max_entries`): under a spray from 100,000 addresses the oldest entries are dropped
and their unlogged counts are reported in the next line instead of being kept per address
(issue 20: the earlier logger kept one entry per address for ever).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections import OrderedDict
from collections.abc import Callable

logger = logging.getLogger("regauth.mitm.conn_limits")

# Every reason a connection, a request head or a stream is refused for (metric labels: a closed
# vocabulary). Connections: head_timeout, idle_timeout (timeouts), cap (per address),
# overloaded (past the connection ceiling and its shedding margin), shed (past the ceiling:
# answered 503), upstream_limit (a registry connection past its ceiling). Request heads:
# head_too_large, request_line_too_long, bad_head, header_block_too_large (HTTP/2). HTTP/2:
# h2_rapid_reset (connection closed), h2_streams_cancelled (streams opened and reset in one
# read, dropped unseen). Bodies: body_too_slow. First bytes: plain_http (plain HTTP on the TLS
# port), proxy_header_untrusted (a PROXY header from a peer not named in
# regauth_proxy_protocol), proxy_header (a trusted balancer's header missing or invalid).
REASONS = (
    "head_timeout",
    "idle_timeout",
    "cap",
    "overloaded",
    "shed",
    "upstream_limit",
    "head_too_large",
    "request_line_too_long",
    "bad_head",
    "header_block_too_large",
    "h2_rapid_reset",
    "h2_streams_cancelled",
    "body_too_slow",
    "plain_http",
    "proxy_header_untrusted",
    "proxy_header",
)
INTERVAL = 60.0  # seconds between two lines for one address and reason
MAX_ENTRIES = 4096  # (address, reason) pairs remembered for the interval


class RefusalLog:
    """Counts refusals by reason (`counts`, read by the metrics) and logs them."""

    def __init__(
        self,
        interval: float = INTERVAL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_entries = max_entries
        self.clock = clock
        self.counts: Counter[str] = Counter()
        # (address, reason) -> [time of the last line, refusals since then not logged]
        self._entries: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._dropped = 0  # refusals counted in entries evicted before they were logged

    def __len__(self) -> int:
        return len(self._entries)

    def note(self, address: str, reason: str, message: str) -> None:
        """Count one refusal with `reason` (a closed vocabulary: metric label) and log
        `message` (regauth's own words plus the address: nothing a client wrote)."""
        self.counts[reason] += 1
        key = (address, reason)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        more = int(entry[1]) if entry is not None else 0
        self._entries.pop(key, None)
        self._entries[key] = [now, 0]
        while len(self._entries) > self.max_entries:
            _, (_, unlogged) = self._entries.popitem(last=False)
            self._dropped += int(unlogged)
        suffix = f" ({more} more like it in the last minute)" if more else ""
        if self._dropped:
            suffix += f" ({self._dropped} more from other addresses not shown)"
            self._dropped = 0
        logger.warning("regauth: %s%s", message, suffix)


# One per process: the connection-limits addon and the wire patches (which run inside
# mitmproxy's protocol layers, without an addon at hand) report here.
refusals = RefusalLog()
