import json
import logging
import os

import pytest

from regauth.ops import exchange_log
from regauth.ops.exchange_log import ExchangeLog
from regauth.ops.exchange_log import scrub


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_object_per_line(tmp_path):
    path = tmp_path / "logs" / "exchange.jsonl"  # the directory is created on demand
    log = ExchangeLog(path)
    assert log.write({"kind": "challenge", "n": 1})
    assert log.write({"kind": "token", "nested": {"list": [1, 2, "three\nlines"]}})
    log.close()
    text = path.read_text()
    assert text.count("\n") == 2
    assert _lines(path) == [
        {"kind": "challenge", "n": 1},
        {"kind": "token", "nested": {"list": [1, 2, "three\nlines"]}},
    ]


def test_appends_to_an_existing_log(tmp_path):
    path = tmp_path / "exchange.jsonl"
    path.write_text('{"old":true}\n')
    log = ExchangeLog(path)
    log.write({"new": True})
    log.close()
    assert _lines(path) == [{"old": True}, {"new": True}]


def test_each_record_is_flushed_immediately(tmp_path):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    log.write({"a": 1})
    assert _lines(path) == [{"a": 1}]  # readable before close
    log.close()


def test_non_json_values_are_stringified(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    log.write({"path": tmp_path, "set": {1}})
    log.close()
    record = _lines(path)[0]
    assert record["path"] == str(tmp_path)
    assert record["set"] == "{1}"


def test_secret_keys_are_scrubbed_at_any_depth(tmp_path):
    path = tmp_path / "x.jsonl"
    log = ExchangeLog(path)
    log.write(
        {
            "password": "hunter2",
            "request": {
                "headers": {"Authorization": "Basic Y2k6aHVudGVyMg=="},
                "form": [{"refresh_token": "eyJr"}, {"client_secret": "cs"}],
            },
            "response": {"token": "eyJa", "access_token": "eyJb", "Secret": "s"},
            "refresh_token_issued": True,
            "token": None,
            "keep": "visible",
        }
    )
    log.close()
    text = path.read_text()
    for secret in ("hunter2", "Y2k6aHVudGVyMg", "eyJr", "eyJa", "eyJb", '"cs"', '"s"'):
        assert secret not in text
    record = _lines(path)[0]
    assert record["password"] == "<redacted>"
    assert record["request"]["headers"]["Authorization"] == "<redacted>"
    assert record["request"]["form"] == [
        {"refresh_token": "<redacted>"},
        {"client_secret": "<redacted>"},
    ]
    assert record["response"] == {
        "token": "<redacted>",
        "access_token": "<redacted>",
        "Secret": "<redacted>",
    }
    assert record["refresh_token_issued"] is True
    assert record["token"] is None
    assert record["keep"] == "visible"


def test_scrub_does_not_modify_its_input():
    record = {"password": "pw", "inner": {"token": "t"}}
    assert scrub(record) == {"password": "<redacted>", "inner": {"token": "<redacted>"}}
    assert record == {"password": "pw", "inner": {"token": "t"}}
    assert scrub({"password": False}) == {"password": False}
    assert scrub(["x", {"secret": "s"}]) == ["x", {"secret": "<redacted>"}]


def test_redact_callable_is_applied_to_each_line(tmp_path):
    path = tmp_path / "x.jsonl"
    seen = []

    def redact(line):
        seen.append(line)
        return line.replace("builds/0123456789", "builds/<id>")

    log = ExchangeLog(path, redact=redact)
    log.write({"path": "/v2/builds/0123456789/manifests/latest"})
    log.close()
    assert _lines(path) == [{"path": "/v2/builds/<id>/manifests/latest"}]
    assert len(seen) == 1 and "\n" not in seen[0]


def test_failing_write_returns_false_logs_and_recovers(tmp_path, caplog):
    path = tmp_path / "exchange.jsonl"
    path.mkdir()  # a directory where the log file should be
    log = ExchangeLog(path)
    with caplog.at_level(logging.WARNING, logger="regauth.ops.exchange_log"):
        assert log.write({"n": 1}) is False
        assert log.write({"n": 2}) is False
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1  # the same error is reported once
        assert "cannot write exchange log" in errors[0].getMessage()
        assert str(path) in errors[0].getMessage()
        path.rmdir()
        assert log.write({"n": 3}) is True
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "writable again after 2 failed writes" in warnings[0].getMessage()
    log.close()
    assert _lines(path) == [{"n": 3}]


def test_write_error_on_an_open_file_does_not_raise(tmp_path, caplog, monkeypatch):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    assert log.write({"n": 1})

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exchange_log, "_write", full)
    with caplog.at_level(logging.ERROR, logger="regauth.ops.exchange_log"):
        assert log.write({"n": 2}) is False
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert log.write({"n": 3}) is True  # the descriptor was dropped; the file is reopened
    log.close()
    assert _lines(path) == [{"n": 1}, {"n": 3}]
    assert (log.records_written, log.records_lost) == (2, 1)


def test_close_is_idempotent(tmp_path):
    log = ExchangeLog(tmp_path / "x.jsonl")
    log.close()
    log.write({"a": 1})
    log.close()
    log.close()
    assert log.write({"b": 2})  # reopened
    log.close()
    assert _lines(tmp_path / "x.jsonl") == [{"a": 1}, {"b": 2}]


def _short_then_full(limit):
    """A disk with `limit` bytes left: one short write, then ENOSPC (as tmpfs and ext4 do)."""
    state = {"left": limit}

    def write(fd, data):
        if state["left"] <= 0:
            raise OSError(28, "No space left on device")
        n = os.write(fd, bytes(data[: state["left"]]))
        state["left"] -= n
        return n

    return write, state


def test_a_record_cut_off_by_a_full_disk_is_removed(tmp_path, monkeypatch):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    assert log.write({"n": 1})
    write, disk = _short_then_full(100)
    monkeypatch.setattr(exchange_log, "_write", write)
    assert log.write({"n": 2, "pad": "x" * 1000}) is False  # 100 bytes got written
    assert path.read_text() == '{"n":1}\n'  # ... and were cut off again
    assert log.write({"n": 3}) is False
    disk["left"] = 10**9  # space freed
    assert log.write({"n": 4})
    log.close()
    assert _lines(path) == [{"n": 1}, {"n": 4}]
    assert (log.records_written, log.records_lost) == (2, 2)


def test_a_damaged_tail_that_cannot_be_cut_is_terminated(tmp_path, monkeypatch):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    assert log.write({"n": 1})
    write, disk = _short_then_full(5)

    def cannot_truncate(fd, length):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(exchange_log, "_write", write)
    monkeypatch.setattr(exchange_log, "_ftruncate", cannot_truncate)
    assert log.write({"n": 2}) is False
    disk["left"] = 10**9
    assert log.write({"n": 3})
    assert log.write({"n": 4})
    log.close()
    lines = path.read_text().splitlines()
    assert lines == ['{"n":1}', '{"n":', '{"n":3}', '{"n":4}']  # only the cut record is lost


def test_a_failed_cut_is_retried_before_the_next_record(tmp_path, monkeypatch):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    write, disk = _short_then_full(5)
    failures = iter([OSError(5, "Input/output error")])

    def truncate_later(fd, length):
        error = next(failures, None)
        if error:
            raise error
        os.ftruncate(fd, length)

    monkeypatch.setattr(exchange_log, "_write", write)
    monkeypatch.setattr(exchange_log, "_ftruncate", truncate_later)
    assert log.write({"n": 1}) is False
    disk["left"] = 10**9
    assert log.write({"n": 2})
    log.close()
    assert path.read_text() == '{"n":2}\n'


def test_a_file_ending_in_a_partial_line_gets_a_fresh_line(tmp_path):
    path = tmp_path / "exchange.jsonl"
    path.write_text('{"old":1}\n{"cut by a cra')  # a crash in the middle of a write
    log = ExchangeLog(path)
    assert log.write({"new": 2})
    log.close()
    assert path.read_text().splitlines() == ['{"old":1}', '{"cut by a cra', '{"new":2}']


def test_records_that_cannot_be_serialized_are_counted_not_raised(tmp_path, caplog):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    circular: dict[str, object] = {}
    circular["self"] = circular
    with caplog.at_level(logging.ERROR, logger="regauth.ops.exchange_log"):
        assert log.write(circular) is False
    assert "unserializable record" in caplog.records[0].getMessage()
    assert log.write({"nan": float("nan"), "inf": [float("-inf")]})
    log.close()
    # Strict JSON: no NaN/Infinity literals in the file.
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "nan": "nan",
        "inf": ["-inf"],
    }
    assert (log.records_written, log.records_lost) == (1, 1)


def test_the_count_of_lost_records_is_reported_on_recovery(tmp_path, caplog, monkeypatch):
    log = ExchangeLog(tmp_path / "x.jsonl")
    write, disk = _short_then_full(0)
    monkeypatch.setattr(exchange_log, "_write", write)
    with caplog.at_level(logging.WARNING, logger="regauth.ops.exchange_log"):
        for n in range(3):
            assert log.write({"n": n}) is False
        disk["left"] = 10**9
        assert log.write({"n": 3})
    log.close()
    warning = [r for r in caplog.records if r.levelno == logging.WARNING][0].getMessage()
    assert "after 3 failed writes (3 record(s) lost since start)" in warning


@pytest.mark.parametrize("key", ["PASSWORD", "Token", "Refresh_Token", "AUTHORIZATION"])
def test_secret_key_match_is_case_insensitive(key):
    assert scrub({key: "x"}) == {key: "<redacted>"}


def test_scrub_redacts_secret_values_that_equal_zero_or_one():
    assert scrub({"password": 1, "token": 0, "refresh_token": True, "secret": None}) == {
        "password": "<redacted>",
        "token": "<redacted>",
        "refresh_token": True,
        "secret": None,
    }


# -- reopen (log rotation) ----------------------------------------------------------------------


def test_after_a_rename_records_go_to_the_renamed_file_until_reopen(tmp_path):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    log.write({"n": 1})
    rotated = tmp_path / "exchange.jsonl.1"
    path.rename(rotated)
    log.write({"n": 2})  # the descriptor still names the renamed file
    assert log.reopen()
    log.write({"n": 3})
    log.close()
    assert _lines(rotated) == [{"n": 1}, {"n": 2}]
    assert _lines(path) == [{"n": 3}]
    assert path.stat().st_mode & 0o777 == 0o600
    assert log.reopens == 1


def test_reopen_before_the_first_record_and_after_close(tmp_path):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    assert log.reopen()  # nothing open yet: it opens
    log.write({"n": 1})
    log.close()
    assert log.reopen()
    log.write({"n": 2})
    log.close()
    assert _lines(path) == [{"n": 1}, {"n": 2}]


def test_a_reopen_that_fails_keeps_writing_to_the_old_file(tmp_path, caplog):
    directory = tmp_path / "logs"
    path = directory / "exchange.jsonl"
    log = ExchangeLog(path)
    log.write({"n": 1})
    moved = tmp_path / "moved"
    directory.rename(moved)
    directory.write_text("a file where the directory was")  # the path cannot be opened
    with caplog.at_level(logging.ERROR):
        assert not log.reopen()
    assert "cannot reopen exchange log" in caplog.text
    assert log.write({"n": 2})
    directory.unlink()
    directory.mkdir()
    assert log.reopen()  # a later reopen tries again
    log.write({"n": 3})
    log.close()
    assert _lines(moved / "exchange.jsonl") == [{"n": 1}, {"n": 2}]
    assert _lines(path) == [{"n": 3}]
    assert log.records_lost == 0


def test_reopen_after_a_crash_mid_write_in_the_new_file(tmp_path):
    """The new file (someone else's partial line at its end) gets the next record on a line of
    its own, as at start-up."""
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    log.write({"n": 1})
    path.rename(tmp_path / "old")
    path.write_text('{"partial":')
    assert log.reopen()
    log.write({"n": 2})
    log.close()
    assert path.read_text().splitlines()[1] == '{"n":2}'


def test_rotating_while_threads_write_loses_and_splits_nothing(tmp_path):
    """Four writers, 50 renames each followed by reopen: every record is in exactly one file,
    whole, and each file parses line by line."""
    import threading

    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    stop = threading.Event()
    written: list[list[int]] = [[] for _ in range(4)]

    def writer(i: int) -> None:
        n = 0
        while not stop.is_set() or n < 200:
            # A record large enough that a write could be split if the lock did not hold it.
            assert log.write({"writer": i, "n": n, "pad": "x" * 4000})
            written[i].append(n)
            n += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for k in range(50):
        if path.exists():
            path.rename(tmp_path / f"exchange.jsonl.{k}")
        assert log.reopen()
    stop.set()
    for t in threads:
        t.join()
    log.close()
    seen: list[tuple[int, int]] = []
    for file in tmp_path.glob("exchange.jsonl*"):
        seen += [(r["writer"], r["n"]) for r in _lines(file)]
    assert sorted(seen) == sorted((i, n) for i in range(4) for n in written[i])
    assert log.reopens == 50
