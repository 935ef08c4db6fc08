"""SIGHUP / SIGUSR1 and `POST /log/reopen` reopen the exchange log."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import httpclient
from tornado import netutil
from tornado import web
from tornado.httpserver import HTTPServer

from regauth.mitm.admin_auth import admin_token_path
from regauth.mitm.log_reopen import LogReopen
from regauth.mitm.log_reopen import LogReopenHandler
from regauth.mitm.log_reopen import terminal_hung_up
from regauth.ops.exchange_log import ExchangeLog


def _reopener(path: Path, shutdown=None) -> tuple[LogReopen, ExchangeLog]:
    log = ExchangeLog(path)
    return LogReopen(SimpleNamespace(exchange_log=log), shutdown), log  # type: ignore[arg-type]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_terminal_hung_up():
    leader, follower = pty.openpty()
    try:
        assert not terminal_hung_up(follower)
        os.close(leader)  # the terminal goes away
        assert terminal_hung_up(follower)
    finally:
        os.close(follower)
    read, write = os.pipe()
    try:
        assert not terminal_hung_up(read)  # not a terminal at all
    finally:
        os.close(read)
        os.close(write)


def test_reopen_moves_writing_to_a_new_file(tmp_path):
    path = tmp_path / "exchange.jsonl"
    reopener, log = _reopener(path)
    log.write({"n": 1})
    path.rename(tmp_path / "rotated")
    assert reopener.reopen("test") == path
    log.write({"n": 2})
    log.close()
    assert _records(tmp_path / "rotated") == [{"n": 1}]
    assert _records(path) == [{"n": 2}]


def test_reopen_without_a_log(tmp_path):
    assert LogReopen(SimpleNamespace(exchange_log=None)).reopen("test") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1])
def test_the_signals_reopen_and_do_not_stop(tmp_path, sig, caplog):
    path = tmp_path / "exchange.jsonl"
    stopped: list[bool] = []
    reopener, log = _reopener(path, lambda: stopped.append(True))

    async def run() -> None:
        await reopener.running()
        try:
            log.write({"n": 1})
            path.rename(tmp_path / "rotated")
            os.kill(os.getpid(), sig)
            for _ in range(100):  # the handler runs on the loop
                await asyncio.sleep(0.01)
                if path.exists():
                    break
            log.write({"n": 2})
        finally:
            await reopener.done()

    before = signal.getsignal(sig)
    with caplog.at_level("INFO"):
        asyncio.run(run())
    log.close()
    assert signal.getsignal(sig) == before  # the handler is gone with the addon
    assert not stopped
    assert _records(tmp_path / "rotated") == [{"n": 1}]
    assert _records(path) == [{"n": 2}]
    assert f"reopened ({sig.name})" in caplog.text


def test_sighup_from_a_hung_up_terminal_still_stops(tmp_path):
    stopped: list[bool] = []
    reopener, log = _reopener(tmp_path / "exchange.jsonl", lambda: stopped.append(True))
    leader, follower = pty.openpty()
    try:
        reopener._terminal = follower  # as if started on that terminal
        reopener._on_signal(signal.SIGHUP)
        assert not stopped and log.reopens == 1  # the terminal is there: a reopen
        os.close(leader)
        reopener._on_signal(signal.SIGUSR1)
        assert not stopped and log.reopens == 2  # USR1 never means hang-up
        reopener._on_signal(signal.SIGHUP)
        assert stopped == [True] and log.reopens == 2
    finally:
        os.close(follower)
        log.close()


def _post(reopener: LogReopen, certs: Path, secret: str | None):
    async def run():
        app = web.Application(
            [
                (
                    r"/log/reopen",
                    LogReopenHandler,
                    {"reopener": reopener, "certs_dir": lambda: certs},
                )
            ]
        )
        [sock] = netutil.bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets([sock])
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{sock.getsockname()[1]}/log/reopen",
                method="POST",
                body="",
                headers=headers,
                raise_error=False,
            )
            return response.code, json.loads(response.body)
        finally:
            server.stop()

    return asyncio.run(run())


def test_post_log_reopen_needs_the_admin_token(tmp_path):
    path = tmp_path / "logs" / "exchange.jsonl"
    reopener, log = _reopener(path)
    log.write({"n": 1})
    certs = tmp_path / "certs"
    code, body = _post(reopener, certs, "anything")
    assert code == 404 and "reopening the exchange log over HTTP is off" in body["error"]
    token = admin_token_path(certs)
    token.parent.mkdir(parents=True)
    token.write_text("s3cret")
    assert _post(reopener, certs, "wrong")[0] == 401
    assert log.reopens == 0
    path.rename(tmp_path / "rotated")
    assert _post(reopener, certs, "s3cret") == (200, {"reopened": str(path)})
    log.write({"n": 2})
    log.close()
    assert _records(path) == [{"n": 2}]


def test_post_log_reopen_reports_a_failure(tmp_path):
    directory = tmp_path / "logs"
    reopener, log = _reopener(directory / "exchange.jsonl")
    log.write({"n": 1})
    directory.rename(tmp_path / "moved")
    directory.write_text("not a directory")
    token = admin_token_path(tmp_path / "certs")
    token.parent.mkdir(parents=True)
    token.write_text("s3cret")
    code, body = _post(reopener, tmp_path / "certs", "s3cret")
    assert code == 500 and "could not be reopened" in body["error"]
    assert log.write({"n": 2})  # still writing to the file open before
    log.close()
    assert _records(tmp_path / "moved" / "exchange.jsonl") == [{"n": 1}, {"n": 2}]
