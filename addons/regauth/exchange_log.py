"""The JSONL exchange log: one object per line, written and flushed per record.

A failing disk must not stop the proxy: write errors are reported (once per distinct error,
then every 100th failure) and the record is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

# Keys whose values are secrets wherever they appear in a record. Builders never put them in,
# this is the second line of defence.
SECRET_KEYS = frozenset({"password", "refresh_token", "access_token", "token", "secret",
                         "authorization", "client_secret"})


def scrub(value: object) -> object:
    """Drop any secret-named key at any depth (its presence is kept as '<redacted>')."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if k.lower() in SECRET_KEYS and not (
                    v is None or isinstance(v, bool)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


class ExchangeLog:
    def __init__(self, path: Path, redact: Callable[[str], str] | None = None) -> None:
        self.path = path
        self.redact = redact
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._last_error: str | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Records name accounts, repositories and token ids: owner-only, like the keys.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None

    def write(self, record: dict[str, object]) -> bool:
        line = json.dumps(scrub(record), separators=(",", ":"), default=str)
        if self.redact is not None:
            line = self.redact(line)
        with self._lock:
            try:
                if self._file is None:
                    self.open()
                assert self._file is not None
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as e:
                self._report(e)
                self._file = None
                return False
        if self._failures:
            logger.warning("exchange log %s is writable again after %d failed writes",
                           self.path, self._failures)
            self._failures = 0
            self._last_error = None
        return True

    def _report(self, error: OSError) -> None:
        self._failures += 1
        text = f"{type(error).__name__}: {error}"
        if text != self._last_error or self._failures % 100 == 1:
            logger.error("cannot write exchange log %s (%s); proxying continues, %d record(s) "
                         "lost so far", self.path, text, self._failures)
            self._last_error = text
