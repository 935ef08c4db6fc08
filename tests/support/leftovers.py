"""Session-end check: no process the test session started may outlive it (issue 26 item 10).

A process counts as started by this session when, at the session's end, it is

- a descendant of the pytest process (by parent pid, from /proc), or
- carrying this session's marker in its environment: `REGAUTH_TEST_SESSION=<pid>-<random>` is
  put into `os.environ` at session start, so every process a test starts inherits it, and it
  stays there after its parent died and it was re-parented to init (the `faketime` wrapper
  leak: the wrapper exited, the `regauth serve` it forked kept listening).

and it did not exist before the session started. Zombies are not alive. The check waits up to
`GRACE` seconds for such processes to exit (a SIGTERM'd server may take a moment), then fails
the session: pytest's exit status becomes 1 (`pytest.ExitCode.TESTS_FAILED`) and the processes
are listed. It never signals a process: what a test leaked is the test's bug to fix, and a
check that killed could kill something a concurrent session on the same machine owns.

The hooks are imported by tests/conftest.py. /proc is read directly (Linux only, like the
suite): psutil is not a dependency.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MARKER = "REGAUTH_TEST_SESSION"
# Seconds a leftover may take to exit after its test stopped it (tests of the check shorten it).
GRACE = float(os.environ.get("REGAUTH_TEST_LEFTOVER_GRACE", "10"))
_PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str  # /proc/PID/stat's state letter: R, S, D, Z, ...
    start: int  # clock ticks after boot: with the pid, identifies the process
    command: str


def read_proc(pid: int) -> Proc | None:
    """One process from /proc/PID/stat and cmdline; None once it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces and ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip() or stat.split(" ", 1)[1]
    return Proc(pid, int(fields[1]), fields[0], int(fields[19]), command)


def all_processes() -> list[Proc]:
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                found.append(proc)
    return found


def has_marker(pid: int, marker: str) -> bool:
    """Whether the process's environment has MARKER=marker (a process of another user, whose
    environment cannot be read, is not ours)."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={marker}".encode() in environ.split(b"\0")


def session_processes(root: int, marker: str, before: set[tuple[int, int]]) -> list[Proc]:
    """The live processes started by the session of pytest process `root` (see the module
    docstring), `root` itself and its ancestors aside."""
    processes = all_processes()
    children: dict[int, list[Proc]] = {}
    for proc in processes:
        children.setdefault(proc.ppid, []).append(proc)
    descendants: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child.pid not in descendants:
                descendants.add(child.pid)
                stack.append(child.pid)
    return [
        proc
        for proc in processes
        if proc.pid != root
        and proc.state != "Z"
        and (proc.pid, proc.start) not in before
        and (proc.pid in descendants or has_marker(proc.pid, marker))
    ]


_state: dict[str, object] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    marker = f"{os.getpid()}-{secrets.token_hex(8)}"
    os.environ[MARKER] = marker
    _state["marker"] = marker
    _state["before"] = {(p.pid, p.start) for p in all_processes()}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    marker = _state.get("marker")
    before = _state.get("before")
    if not isinstance(marker, str) or not isinstance(before, set):
        return
    deadline = time.monotonic() + GRACE
    left = session_processes(os.getpid(), marker, before)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes(os.getpid(), marker, before)
    if not left:
        return
    lines = [f"{len(left)} process(es) started by this test session are still running:"]
    lines += [f"  pid {p.pid} (parent {p.ppid}): {p.command[:200]}" for p in left]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "leftover processes", red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
