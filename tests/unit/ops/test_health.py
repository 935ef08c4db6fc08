"""Readiness (`regauth.ops.health`): which reasons make a replica unready, and how `/readyz`
words them (one `not ready: REASON` line each; warnings never make it unready)."""

from __future__ import annotations

import pytest

from regauth.ops import health

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "args, ready, reason",
    [
        ((True, NOW + 86400, NOW - 1, None), True, None),
        ((False, None, NOW - 1, None), False, "no valid policy and signing key loaded"),
        ((True, None, NOW - 1, None), False, "no signing key loaded"),
        ((True, NOW - 1, NOW - 1, None), False, "the token-signing certificate has expired"),
        (
            (True, NOW + 86400, None, "ConnectionRefusedError"),
            False,
            "the upstream registry has not answered yet (ConnectionRefusedError)",
        ),
        (
            (True, NOW + 86400, NOW - 7, "TimeoutError"),
            False,
            "the upstream registry has not answered for 7 s (TimeoutError)",
        ),
    ],
)
def test_readiness(args, ready, reason):
    state = health.readiness(*args, now=NOW, window=6.0)
    assert state.ready is ready
    assert state.body() == ("ready\n" if ready else f"not ready: {reason}\n")


def test_every_reason_is_listed_and_the_delegate_check_counts():
    state = health.readiness(
        False,
        None,
        None,
        "TimeoutError",
        now=NOW,
        window=6.0,
        delegate="the registry does not check regauth's tokens",
    )
    assert not state.ready
    assert state.reasons == (
        "no valid policy and signing key loaded",
        "the upstream registry has not answered yet (TimeoutError)",
        "the registry does not check regauth's tokens",
    )
    assert state.body().count("not ready: ") == 3


def test_warnings_are_shown_but_do_not_make_it_unready():
    state = health.readiness(
        True,
        NOW + 60,
        NOW,
        None,
        now=NOW,
        window=6.0,
        warnings=["the delegate check is not enforced"],
    )
    assert state.ready and state.reasons == ()
    assert state.body() == "ready\nwarning: the delegate check is not enforced\n"
    unready = health.readiness(True, None, NOW, None, now=NOW, window=6.0, warnings=["w"])
    assert unready.body() == "not ready: no signing key loaded\nwarning: w\n"


def test_the_upstream_window_is_inclusive():
    assert health.readiness(True, NOW + 60, NOW - 6, None, now=NOW, window=6.0).ready
    assert not health.readiness(True, NOW + 60, NOW - 6.5, None, now=NOW, window=6.0).ready
