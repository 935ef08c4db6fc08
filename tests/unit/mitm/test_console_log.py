"""regauth.mitm.console_log: what the console shows of each flow and connection."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from regauth.mitm import console_log
from regauth.mitm.console_log import Kind
from regauth.mitm.console_log import classify


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    console_log.set_verbose(False)
    logging.getLogger(console_log.CHURN_LOGGER).removeFilter(console_log._CHURN)


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (("token", 200, False, None, False), Kind.DECISION),
        (("token", 401, False, None, False), Kind.DECISION),  # a refused login is decided
        (("registry", 200, False, None, False), Kind.ROUTINE),
        (("registry", 307, False, None, False), Kind.ROUTINE),
        (("registry", 401, False, None, True), Kind.ROUTINE),  # a conversation's first step
        (("registry", 401, False, "insufficient_scope", True), Kind.REFUSAL),
        (("registry", 401, False, "invalid_token", True), Kind.REFUSAL),
        (("registry", 403, False, None, False), Kind.REFUSAL),
        (("registry", 503, False, None, False), Kind.REFUSAL),
        (("registry", None, True, None, False), Kind.ERROR),
        (("token", 200, True, None, False), Kind.ERROR),
        (("jwks", 200, False, None, False), Kind.ROUTINE),
    ],
)
def test_classify(args, kind) -> None:
    assert classify(*args) is kind


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(console_log.CHURN_LOGGER, level, __file__, 1, message, (), None)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("client connect", False),
        ("client disconnect", False),
        ("server connect 127.0.0.1:5000", False),
        ("server disconnect 127.0.0.1:5000", False),
        ("error establishing server connection: refused", True),
        ("client connected to the wrong port", True),
    ],
)
def test_the_churn_filter_drops_only_connection_churn(message: str, shown: bool) -> None:
    assert console_log.ConnectionChurn().filter(_record(message)) is shown


def test_churn_above_info_is_never_dropped() -> None:
    assert console_log.ConnectionChurn().filter(_record("client connect", logging.WARNING))


def test_verbosity_installs_and_removes_the_filter(caplog) -> None:
    server = logging.getLogger(console_log.CHURN_LOGGER)
    caplog.set_level(logging.INFO)
    console_log.set_verbose(False)
    console_log.set_verbose(False)  # idempotent: one filter
    assert server.filters.count(console_log._CHURN) == 1
    server.info("client connect")
    assert "client connect" not in caplog.text
    console_log.set_verbose(True)
    assert console_log.is_verbose()
    server.info("client connect")
    assert "client connect" in caplog.text


def test_show_logs_routine_lines_only_when_verbose(caplog) -> None:
    caplog.set_level(logging.INFO, logger="regauth.console")
    console_log.set_verbose(False)
    console_log.show(Kind.ROUTINE, "10.0.0.1", "200 alice → pull")
    console_log.show(Kind.DECISION, "10.0.0.1", "token for alice: granted")
    console_log.show(Kind.ERROR, "", "error: reset")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("INFO", "regauth: 10.0.0.1 token for alice: granted"),
        ("WARNING", "regauth: - error: reset"),
    ]
    console_log.set_verbose(True)
    console_log.show(Kind.ROUTINE, "10.0.0.1", "200 alice → pull")
    assert caplog.records[-1].getMessage() == "regauth: 10.0.0.1 200 alice → pull"
