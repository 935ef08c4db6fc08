"""The session-end check (tests/support/leftovers.py) fails a session that leaves a process
running, whether it is still the session's child or was orphaned (issue 26 item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LEAKY = """
import subprocess, time
from pathlib import Path

def test_leaks():
    {body}
"""
# A direct child the test never stops.
CHILD = "p = subprocess.Popen(['sleep', '60']); Path('{pids}').write_text(str(p.pid))"
# A grandchild whose parent exited: re-parented to init, as `faketime regauth serve` left
# regauth when the wrapper alone was stopped.
ORPHAN = (
    "out = subprocess.run(['sh', '-c', 'sleep 60 >/dev/null 2>&1 & echo $!'], "
    "capture_output=True, text=True, check=True).stdout; Path('{pids}').write_text(out.strip())"
)
# The same child, stopped and reaped by the test.
CLEAN = "p = subprocess.Popen(['sleep', '60']); p.terminate(); p.wait()"


def run_session(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess[str], int | None]:
    pids = tmp_path / "pids"
    test = tmp_path / "test_leaky.py"
    test.write_text(LEAKY.format(body=body.format(pids=pids)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.leftovers",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(test),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "REGAUTH_TEST_LEFTOVER_GRACE": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    pid = int(pids.read_text()) if pids.exists() else None
    return done, pid


def stop(pid: int | None) -> None:
    """Stop the `sleep` the inner session leaked (this test started it, through that session)."""
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("leak", [CHILD, ORPHAN], ids=["child", "orphan"])
def test_a_leftover_process_fails_the_session(tmp_path: Path, leak: str) -> None:
    started = time.monotonic()
    done, pid = run_session(tmp_path, leak)
    try:
        assert pid is not None, done.stdout + done.stderr
        assert "1 passed" in done.stdout, done.stdout
        assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
        assert f"pid {pid} " in done.stdout and "sleep 60" in done.stdout, done.stdout
        # It only reports: the leaked process is still there, for its owner to see.
        assert Path(f"/proc/{pid}").exists()
        assert time.monotonic() - started > 2  # it gave the process time to exit
    finally:
        stop(pid)


def test_a_clean_session_passes(tmp_path: Path) -> None:
    done, _ = run_session(tmp_path, CLEAN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "leftover" not in done.stdout
