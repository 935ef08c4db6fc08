"""A real browser for tests that look at a page: headless Chromium (Debian's `chromium`).

Three ways to look, each in its own Chromium process group, stopped by its id when done:

- `dump_dom(url)`: the DOM after the page's scripts ran (`--dump-dom`), as text;
- `screenshot(url, path)`: a PNG of the window (`--screenshot`);
- `evaluate(url, expression)`: the JSON value of a JavaScript expression evaluated in the page
  once `ready` (another expression) is true, through the DevTools protocol (CDP,
  `Runtime.evaluate`) over tornado's websocket client: what `--dump-dom` cannot tell, such as
  whether a table cell shows its whole text (`scrollWidth <= clientWidth`).

`--virtual-time-budget` lets a page's timers and fetches run before the dump or screenshot;
it runs as root in the test machine, hence `--no-sandbox`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tornado.websocket import websocket_connect

from regauth.ops.registry_process import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = (1600, 900)


def _flags(profile: str, window: tuple[int, int]) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
    ]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: its helpers are stopped with it
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        _stop_group(process)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _stop_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def dump_dom(url: str, window: tuple[int, int] = WINDOW, budget_ms: int = 5000) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = _run(
            [*_flags(profile, window), f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(
    url: str, path: Path, window: tuple[int, int] = WINDOW, budget_ms: int = 5000
) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        result = _run(
            [
                *_flags(profile, window),
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={path}",
                url,
            ],
            timeout=60,
        )
    assert result.returncode == 0 and path.exists(), result.stderr[-2000:]
    return path


def evaluate(
    url: str, expression: str, ready: str, window: tuple[int, int] = WINDOW, timeout: float = 30
) -> object:
    """The value of `expression` in the page at `url`, once `ready` evaluates true."""
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [*_flags(profile, window), f"--remote-debugging-port={port}", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return asyncio.run(_evaluate(port, expression, ready, timeout))
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _page_socket(port: int, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("Chromium's DevTools endpoint did not come up")
        time.sleep(0.2)


async def _evaluate(port: int, expression: str, ready: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    socket = await websocket_connect(_page_socket(port, deadline))
    ids = iter(range(1, 1_000_000))

    async def call(expr: str) -> object:
        message_id = next(ids)
        socket.write_message(
            json.dumps(
                {
                    "id": message_id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expr, "returnByValue": True},
                }
            )
        )
        while True:
            raw = await socket.read_message()
            if raw is None:
                raise ConnectionError("Chromium closed the DevTools connection")
            reply = json.loads(raw)
            if reply.get("id") == message_id:
                result = reply["result"]
                if "exceptionDetails" in result:
                    raise RuntimeError(result["exceptionDetails"])
                return result["result"].get("value")

    try:
        while not await call(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never got ready ({ready})")
            await asyncio.sleep(0.25)
        return await call(expression)
    finally:
        socket.close()
