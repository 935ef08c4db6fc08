"""Small helpers shared by the unit tests (no processes, no network)."""

from __future__ import annotations

from pathlib import Path

from regauth import runtime
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import parse_scope
from regauth.runtime import Runtime

DIGEST = "sha256:" + "a" * 64
BUILD_ID = "0123456789abcdefghijklmnop"  # 26 characters of [a-z0-9]


class FakeClock:
    """A settable time source: `clock()` returns `now`; `advance(s)` moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def scope(text: str) -> ResourceScope:
    return parse_scope(text)


def build_runtime(
    tmp_path: Path, certs_dir: Path, text: str, upstream: str = "http://127.0.0.1:5000"
) -> Runtime:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return runtime.build_runtime(path, certs_dir, upstream)
