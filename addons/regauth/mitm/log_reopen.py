"""Reopening the exchange log after rotation: `SIGHUP` (or `SIGUSR1`), and `POST /log/reopen`
on the admin listener.

logrotate (`deploy/logrotate/regauth`) renames `exchange.jsonl`, then asks regauth to reopen
it: `systemctl reload regauth@N` (the unit's `ExecReload=` sends `SIGHUP`), a `kill -HUP`, or
`POST /log/reopen` with the admin token (`mitm/admin_auth.py`). The reopen happens between two
whole records (`ExchangeLog.reopen`): every record lands in the renamed file or the new one.

`SIGHUP` is the signal daemons take for "reopen your files" (rsyslog, `systemctl reload`);
`SIGUSR1` is nginx's "reopen logs", accepted as well so that neither stops regauth (both
terminated it before). One exception keeps `SIGHUP`'s original meaning: when regauth was
started on a terminal and that terminal is gone (hung up), it stops as before, rather than
run on unseen.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tornado import web

from regauth.mitm.admin_auth import authorize
from regauth.mitm.recorder import Recorder

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGHUP, signal.SIGUSR1)


def terminal_hung_up(fd: int) -> bool:
    """True when `fd` is a terminal that has been hung up (its ioctls fail with EIO)."""
    try:
        os.tcgetpgrp(fd)
    except OSError as e:
        return e.errno == errno.EIO
    return False


class LogReopen:
    """Installs the signal handlers while mitmproxy runs; `reopen` is also what the admin
    listener's `POST /log/reopen` calls."""

    def __init__(self, recorder: Recorder, shutdown: Callable[[], None] | None = None) -> None:
        self.recorder = recorder
        self._shutdown = shutdown
        self._terminal: int | None = None  # stdin's fd, when regauth started on a terminal
        self._installed: list[signal.Signals] = []

    async def running(self) -> None:
        try:
            if sys.stdin is not None and sys.stdin.isatty():
                self._terminal = sys.stdin.fileno()
        except (ValueError, OSError):  # a closed or detached stdin
            self._terminal = None
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._installed.append(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP and self._terminal is not None and terminal_hung_up(self._terminal):
            logger.warning("regauth: terminal hung up (SIGHUP), shutting down")
            self.shutdown()
            return
        self.reopen(sig.name)

    def shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown()
            return
        from mitmproxy import ctx

        ctx.master.shutdown()

    def reopen(self, why: str) -> Path | None:
        """Reopen the exchange log; returns its path, or None if it could not be reopened
        (the reason is logged; records keep going to the file open before)."""
        log = self.recorder.exchange_log
        if log is None:
            return None
        if not log.reopen():
            return None
        logger.info("regauth: exchange log %s reopened (%s)", log.path, why)
        return log.path

    async def done(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed = []


class LogReopenHandler(web.RequestHandler):
    """`POST /log/reopen` (admin token required): 200 `{"reopened": PATH}`, or 500
    `{"error": …}` when the new file cannot be opened."""

    def initialize(self, reopener: LogReopen, certs_dir: Callable[[], Path]) -> None:
        self.reopener = reopener
        self.certs_dir = certs_dir

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")

    def post(self) -> None:
        if not authorize(self, self.certs_dir(), "reopening the exchange log over HTTP"):
            return
        path = self.reopener.reopen("POST /log/reopen")
        if path is None:
            self.set_status(500)
            self.finish(
                json.dumps({"error": "the exchange log could not be reopened (see the log)"})
            )
            return
        self.finish(json.dumps({"reopened": str(path)}))
