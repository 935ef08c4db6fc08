import json
import logging

import pytest

from regauth.exchange_log import ExchangeLog
from regauth.exchange_log import scrub


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
    assert _lines(path) == [{"kind": "challenge", "n": 1},
                            {"kind": "token", "nested": {"list": [1, 2, "three\nlines"]}}]


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
    log.write({
        "password": "hunter2",
        "request": {"headers": {"Authorization": "Basic Y2k6aHVudGVyMg=="},
                    "form": [{"refresh_token": "eyJr"}, {"client_secret": "cs"}]},
        "response": {"token": "eyJa", "access_token": "eyJb", "Secret": "s"},
        "refresh_token_issued": True,
        "token": None,
        "keep": "visible",
    })
    log.close()
    text = path.read_text()
    for secret in ("hunter2", "Y2k6aHVudGVyMg", "eyJr", "eyJa", "eyJb", '"cs"', '"s"'):
        assert secret not in text
    record = _lines(path)[0]
    assert record["password"] == "<redacted>"
    assert record["request"]["headers"]["Authorization"] == "<redacted>"
    assert record["request"]["form"] == [{"refresh_token": "<redacted>"},
                                         {"client_secret": "<redacted>"}]
    assert record["response"] == {"token": "<redacted>", "access_token": "<redacted>",
                                  "Secret": "<redacted>"}
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
    with caplog.at_level(logging.WARNING, logger="regauth.exchange_log"):
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


class _BrokenFile:
    def __init__(self, error):
        self.error = error

    def write(self, text):
        raise self.error

    def flush(self):
        raise self.error

    def close(self):
        raise self.error


def test_write_error_on_an_open_file_does_not_raise(tmp_path, caplog):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    assert log.write({"n": 1})
    log._file.close()
    log._file = _BrokenFile(OSError(28, "No space left on device"))
    with caplog.at_level(logging.ERROR, logger="regauth.exchange_log"):
        assert log.write({"n": 2}) is False
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
    # the broken handle was dropped; the next write reopens the file
    assert log.write({"n": 3}) is True
    log.close()
    assert _lines(path) == [{"n": 1}, {"n": 3}]


def test_distinct_errors_are_each_reported(tmp_path, caplog, monkeypatch):
    path = tmp_path / "exchange.jsonl"
    log = ExchangeLog(path)
    errors = iter([OSError(5, "I/O error"), OSError(28, "No space left on device")])

    def failing_open():
        raise next(errors)

    monkeypatch.setattr(log, "open", failing_open)
    with caplog.at_level(logging.ERROR, logger="regauth.exchange_log"):
        assert log.write({"n": 1}) is False
        assert log.write({"n": 2}) is False
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 2
    assert "I/O error" in messages[0] and "No space left" in messages[1]
    assert "2 record(s) lost" in messages[1]


def test_close_is_idempotent_and_tolerates_errors(tmp_path):
    log = ExchangeLog(tmp_path / "x.jsonl")
    log.close()
    log.write({"a": 1})
    log._file.close()
    log._file = _BrokenFile(OSError("boom"))
    log.close()
    assert log._file is None


@pytest.mark.parametrize("key", ["PASSWORD", "Token", "Refresh_Token", "AUTHORIZATION"])
def test_secret_key_match_is_case_insensitive(key):
    assert scrub({key: "x"}) == {key: "<redacted>"}


def test_scrub_redacts_secret_values_that_equal_zero_or_one():
    assert scrub({"password": 1, "token": 0, "refresh_token": True, "secret": None}) == {
        "password": "<redacted>", "token": "<redacted>", "refresh_token": True, "secret": None}
