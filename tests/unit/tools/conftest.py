"""Fixtures of the tools' tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the shipped policies' secrets is in the environment (as in a policy
    repository's CI)."""
    for name in (
        "REGAUTH_CI_PASSWORD_HASH",
        "REGAUTH_ALICE_PASSWORD_HASH",
        "REGAUTH_UPSTREAM_PASSWORD",
        "REGAUTH_LEGACY_CI_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
