"""Connection-level refusals (`regauth.mitm.refusal_log`): counted by reason, logged once per
address and reason a minute with a count of the others, in bounded memory."""

from __future__ import annotations

import logging

from regauth.mitm import conn_limits
from regauth.mitm.refusal_log import REASONS
from regauth.mitm.refusal_log import RefusalLog
from tests.unit.helpers import FakeClock


def test_one_line_per_address_and_reason_a_minute_then_the_count_of_the_others(caplog):
    clock = FakeClock()
    log = RefusalLog(clock=clock)
    with caplog.at_level(logging.WARNING, logger=conn_limits.__name__):
        for _ in range(3):
            log.note("10.0.0.1", "cap", "10.0.0.1: too many connections")
        log.note("10.0.0.1", "head_timeout", "10.0.0.1: no request head")
        log.note("10.0.0.2", "cap", "10.0.0.2: too many connections")
        clock.advance(59)
        log.note("10.0.0.1", "cap", "10.0.0.1: too many connections")
        clock.advance(1)
        log.note("10.0.0.1", "cap", "10.0.0.1: too many connections")
    assert caplog.messages == [
        "regauth: 10.0.0.1: too many connections",
        "regauth: 10.0.0.1: no request head",
        "regauth: 10.0.0.2: too many connections",
        "regauth: 10.0.0.1: too many connections (3 more like it in the last minute)",
    ]
    assert log.counts == {"cap": 6, "head_timeout": 1}
    assert len(log) == 3


def test_the_reasons_are_a_closed_vocabulary_of_metric_labels():
    assert len(set(REASONS)) == len(REASONS)
    assert all(r.replace("_", "").isalnum() and r.islower() for r in REASONS)
    assert {"cap", "head_too_large", "h2_rapid_reset", "plain_http"} <= set(REASONS)


def test_the_refusal_log_is_bounded_whatever_the_number_of_addresses(caplog):
    log = RefusalLog(max_entries=100)
    with caplog.at_level(logging.ERROR, logger=conn_limits.__name__):
        for n in range(100_000):
            log.note(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", "cap", "refused")
            log.note(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", "cap", "refused")
    assert len(log) == 100 and log.counts["cap"] == 200_000
    log.note("192.0.2.1", "cap", "refused")
    # the entry it evicted had one refusal not logged yet: it is said, not kept
    assert caplog.messages[-1] == "regauth: refused (1 more from other addresses not shown)"
    assert len(log) == 100
