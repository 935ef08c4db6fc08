"""The JSONL exchange log: one object per line, each record written whole or not at all.

A failing disk must not stop the proxy, nor leave a line that does not parse:

- A record is serialized first (strict JSON: no NaN or Infinity), then appended with one
  `write(2)` loop on an `O_APPEND` descriptor, never through a userspace buffer that could hold
  half a record for a later write.
- If the write fails part-way (ENOSPC, EIO), the file is truncated back to where the record
  began, provided it still ends where this record's bytes ended (nobody else appended).
- If that is impossible, or the file already ended in a partial line when it was opened (a crash
  mid-write), the next record starts with a newline, so only the damaged tail is unreadable and
  every later record is on a line of its own.
- A record that cannot be serialized or written is dropped and counted in `records_lost`; write
  errors are reported once per distinct error, then every 100th failure, and recovery is
  reported with the number of records lost.

Rotation (logrotate's rename, then a signal or the admin listener): `reopen` opens `path` afresh
between two whole records, so a record is in the old file or the new one, never split or
lost; if the new file cannot be opened, records keep going to the old one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# Keys whose values are secrets wherever they appear in a record. Builders never put them in,
# this is the second line of defence.
# The system calls a record goes through, named so tests can inject disk faults.
_write = os.write
_ftruncate = os.ftruncate

SECRET_KEYS = frozenset(
    {
        "password",
        "refresh_token",
        "access_token",
        "token",
        "secret",
        "authorization",
        "client_secret",
        "subject_token",
        "actor_token",
    }
)


def scrub(value: object) -> object:
    """Drop any secret-named key at any depth (its presence is kept as '<redacted>').

    Non-finite floats become strings ("nan", "inf"), which strict JSON readers accept.
    """
    if isinstance(value, dict):
        return {
            k: (
                "<redacted>"
                if k.lower() in SECRET_KEYS and not (v is None or isinstance(v, bool))
                else scrub(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class ExchangeLog:
    """Appends one JSON object per line to `path` (created 0600, with its directory).

    Thread-safe. `write` never raises: it returns False for a lost record. `records_written`
    and `records_lost` count records since this object was made (for metrics).
    """

    def __init__(self, path: Path, redact: Callable[[str], str] | None = None) -> None:
        self.path = path
        self.redact = redact
        self.records_written = 0
        self.records_lost = 0
        self.reopens = 0  # successful `reopen` calls
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._failures = 0  # consecutive failed records, for the recovery message
        self._last_error: str | None = None
        # The file ends inside a line we could not remove: start the next record on a new one.
        self._damaged_tail = False
        # (offset where a failed record began, offset where its bytes ended): truncate there.
        self._pending_truncate: tuple[int, int] | None = None

    def open(self) -> None:
        """Open `path` for appending (created 0600). Raises OSError."""
        self._fd, self._damaged_tail = self._open_path()
        self._pending_truncate = None

    def _open_path(self) -> tuple[int, bool]:
        """A new descriptor on `path`, and whether the file ends inside a line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Records name accounts, repositories and token ids: owner-only, like the keys.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            return fd, size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        except OSError:
            os.close(fd)
            raise

    def reopen(self) -> bool:
        """Open `path` afresh after the file was renamed (log rotation) and close the old
        descriptor. Holds the lock, so it happens between two whole records: every record is
        in the old file or the new one, whole. Returns False, logging why, if the new file
        cannot be opened: records then keep going to the old descriptor (none is lost); a
        later `reopen` tries again."""
        with self._lock:
            self._repair()  # a pending repair of the old file, while its descriptor is open
            try:
                fd, damaged = self._open_path()
            except OSError as e:
                logger.error(
                    "cannot reopen exchange log %s (%s: %s); still writing to the file open before",
                    self.path,
                    type(e).__name__,
                    e,
                )
                return False
            self._close()
            self._fd, self._damaged_tail = fd, damaged
            self._pending_truncate = None
            self.reopens += 1
        return True

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def write(self, record: dict[str, object]) -> bool:
        """Append `record` as one line; return False (and count it lost) if it was not."""
        try:
            line = json.dumps(scrub(record), separators=(",", ":"), default=str, allow_nan=False)
            if self.redact is not None:
                line = self.redact(line)
            data = (line + "\n").encode("utf-8", "backslashreplace")
        except (ValueError, TypeError, RecursionError) as e:
            with self._lock:
                self._lost(f"unserializable record ({type(e).__name__}: {e})")
            return False
        with self._lock:
            try:
                if self._fd is None:
                    self.open()
                self._append(data)
            except OSError as e:
                self._lost(f"{type(e).__name__}: {e}")
                if self._pending_truncate is None:
                    # Reopen for the next record (the file may have been replaced, or its disk
                    # remounted); a pending repair keeps the descriptor it must truncate.
                    self._close()
                return False
            self.records_written += 1
            if self._failures:
                logger.warning(
                    "exchange log %s is writable again after %d failed writes "
                    "(%d record(s) lost since start)",
                    self.path,
                    self._failures,
                    self.records_lost,
                )
                self._failures = 0
                self._last_error = None
        return True

    def _append(self, data: bytes) -> None:
        """Write all of `data` at the end of the file or, on failure, leave the file as it was
        (else mark its tail damaged). Raise OSError on failure. Caller holds the lock."""
        assert self._fd is not None
        fd = self._fd
        self._repair()
        if self._damaged_tail:
            data = b"\n" + data
        start = os.fstat(fd).st_size  # O_APPEND: this single writer's bytes go here
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += _write(fd, view[written:])
        except OSError:
            if written:
                self._pending_truncate = (start, start + written)
                self._damaged_tail = True
                self._repair()
            raise
        self._damaged_tail = False

    def _repair(self) -> None:
        """Cut a partly written record off the end of the file, if the file still ends with
        it; on failure try again before the next record."""
        if self._pending_truncate is None or self._fd is None:
            return
        start, end = self._pending_truncate
        try:
            if os.fstat(self._fd).st_size == end:
                _ftruncate(self._fd, start)
                # The file ends where the last whole record (or the old damaged tail) ended.
                self._damaged_tail = start > 0 and os.pread(self._fd, 1, start - 1) != b"\n"
            self._pending_truncate = None  # truncated, or someone appended: a newline it is
        except OSError:
            pass  # still damaged; the next record starts on a fresh line either way

    def _lost(self, reason: str) -> None:
        self.records_lost += 1
        self._failures += 1
        if reason != self._last_error or self._failures % 100 == 1:
            logger.error(
                "cannot write exchange log %s (%s); proxying continues, %d record(s) lost so far",
                self.path,
                reason,
                self.records_lost,
            )
            self._last_error = reason
