"""The exchange log on a real full filesystem: a 256 KiB tmpfs mounted by the test itself."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from regauth.ops.exchange_log import ExchangeLog


def _privileged(*command: str) -> list[str]:
    return list(command) if os.geteuid() == 0 else ["sudo", "-n", *command]


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir()
    subprocess.run(
        _privileged(
            "mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "regauth-test", str(path)
        ),
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(_privileged("umount", str(path)), check=True)
        path.rmdir()


def _fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem is full."""
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return


def _record(n: int) -> dict[str, object]:
    # ~1.5 KB, odd sizes so records straddle the filesystem's 4 KiB pages
    return {"n": n, "kind": "token", "pad": "x" * (1400 + 37 * (n % 7))}


def test_every_line_parses_after_a_full_disk_episode(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        log_path = disk / "exchange.jsonl"
        log = ExchangeLog(log_path)
        written, lost = [], []
        for n in range(3):
            assert log.write(_record(n))
            written.append(n)
        _fill(disk / "filler")
        for n in range(3, 23):  # the log's last page has room for about two; then it is full
            (written if log.write(_record(n)) else lost).append(n)
        (disk / "filler").unlink()
        for n in range(23, 43):
            (written if log.write(_record(n)) else lost).append(n)
        log.close()

        lines = log_path.read_bytes().split(b"\n")
        assert lines[-1] == b""  # the file ends with a whole line
        parsed = [json.loads(line) for line in lines[:-1]]  # every line parses
        assert [r["n"] for r in parsed] == written
        assert parsed == [_record(n) for n in written]
        assert lost and set(range(3, 23)) >= set(lost)
        assert (log.records_written, log.records_lost) == (len(written), len(lost))
