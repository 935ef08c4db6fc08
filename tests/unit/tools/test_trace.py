"""`regauth trace LOG` (`regauth.tools.trace`): durations, the filters (`--account` matches
only verified accounts), conversations as steps with runs of alike requests folded, the JSON
form, and `--follow` printing a conversation once it has gone quiet. The diagnoses are
test_diagnosis.py; untrusted text in trace's output is test_render.py."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import time
from pathlib import Path

import pytest

from regauth.cli import main
from regauth.tools import diagnosis
from regauth.tools import trace
from regauth.tools.log_records import conversations
from regauth.tools.log_records import parse_lines
from regauth.tools.render import Printer

T0 = "2026-01-01T00:00:0{}+00:00"
NOW = dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC)


def _log(tmp_path: Path, *records: dict[str, object]) -> Path:
    path = tmp_path / "exchange.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _registry(
    line: int,
    conversation: str,
    claims: dict[str, object],
    status: int = 200,
    decision: dict[str, object] | None = None,
    **extra: object,
) -> dict[str, object]:
    record: dict[str, object] = {
        "time": T0.format(line),
        "conversation": conversation,
        "client": "10.0.0.9:2000",
        "kind": "registry",
        "method": "GET",
        "path": f"/v2/x/a/tags/list?line={line}",
        "route": "tags",
        "repository": "x/a",
        "status": status,
        "answered_by": "upstream" if status == 200 else "regauth",
        "auth": {"scheme": "Bearer", "jwt": {"claims": claims}, **extra},
    }
    if decision is not None:
        record["decision"] = decision
    return record


def _conversations(*records: dict[str, object]):  # type: ignore[no-untyped-def]
    return conversations(parse_lines([json.dumps(r) for r in records]).entries)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert trace.parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "-1s", "1h 30m", "1w", "10m!"])
def test_durations_refused(text: str) -> None:
    with pytest.raises(ValueError, match="use a number and ms, s, m, h or d"):
        trace.parse_duration(text)


def test_filters() -> None:
    token = {
        "time": T0.format(0),
        "conversation": "abc-1",
        "kind": "token",
        "status": 200,
        "token_response": {"jti": "j1", "account": "alice"},
    }
    claimed = _registry(
        5, "def-2", {"sub": "alice"}, 401, {"forward": False, "reason": "invalid token"}
    )
    issued, forged = _conversations(token, claimed)
    assert trace.Filters(conversation="abc").keep(issued, NOW)
    assert not trace.Filters(conversation="abc").keep(forged, NOW)
    assert trace.Filters(repository="x/a").keep(forged, NOW)
    assert not trace.Filters(repository="x/b").keep(forged, NOW)
    assert trace.Filters(account="alice").keep(issued, NOW)
    assert not trace.Filters(account="alice").keep(forged, NOW)  # a claim is not an account
    assert trace.Filters(since=dt.timedelta(seconds=6)).keep(forged, NOW)
    assert not trace.Filters(since=dt.timedelta(seconds=6)).keep(issued, NOW)
    assert trace.Filters().keep(issued, NOW) and trace.Filters().keep(forged, NOW)


def test_alike_requests_are_one_step_with_a_count_and_the_result_is_the_last_answer() -> None:
    uploads = [
        {
            "time": T0.format(n),
            "conversation": "c",
            "client": "10.0.0.9:2000",
            "kind": "registry",
            "method": "PATCH",
            "path": "/v2/x/a/blobs/uploads/u",
            "route": "blob_upload",
            "repository": "x/a",
            "status": 202,
            "answered_by": "upstream",
        }
        for n in range(1, 5)
    ]
    refused = {
        **uploads[0],
        "time": T0.format(6),
        "method": "PUT",
        "status": 401,
        "answered_by": "regauth",
    }
    [c] = _conversations(*uploads, refused)
    folded = [s for s in trace.steps(c) if s.count > 1]
    assert len(folded) == 1 and folded[0].count == 4 and folded[0].offset == 0
    assert trace.result_of(c) == ("401 for PUT blob_upload", False)
    doc = trace.as_json(c, [])
    assert doc["id"] == "c" and doc["ok"] is False and doc["duration_s"] == 5.0
    assert doc["clients"] == ["10.0.0.9"] and doc["repositories"] == ["x/a"]
    assert doc["steps"] == [s.as_json() for s in trace.steps(c)]


def test_follow_prints_a_conversation_once_it_is_quiet(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trace, "QUIET", 0.0)
    log = _log(
        tmp_path,
        {
            "time": T0.format(0),
            "conversation": "first",
            "kind": "token",
            "status": 200,
            "client": "10.0.0.1:1",
        },
    )
    out = io.StringIO()
    polls = iter(range(4))

    def stop() -> bool:
        step = next(polls, None)
        if step == 2:  # a record arrives while following, the last line still unfinished
            with log.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "time": T0.format(1),
                            "conversation": "second",
                            "kind": "token",
                            "status": 200,
                        }
                    )
                    + '\n{"time"'
                )
        return step is None

    trace.follow(log, trace.Filters(), Printer(out, color=False), poll=0.0, stop=stop)
    headers = [line for line in out.getvalue().splitlines() if line.startswith("conversation ")]
    assert [h.split()[1] for h in headers] == ["first", "second"]


def test_trace_account_lists_only_verified_requests(tmp_path: Path, capsys) -> None:
    log = _log(
        tmp_path,
        {
            "time": T0.format(0),
            "conversation": "a",
            "kind": "token",
            "status": 200,
            "client": "10.0.0.1:1",
            "token_response": {"jti": "j1", "account": "alice"},
        },
        _registry(
            1,
            "b",
            {"sub": "alice", "jti": "j1"},
            401,
            {"forward": False, "reason": "invalid token"},
            checked_by=None,
        ),
        _registry(2, "c", {"sub": "alice"}, 401, {"forward": False, "reason": "invalid token"}),
    )
    assert main(["trace", str(log), "--json", "--account", "alice"]) == 0
    found = json.loads(capsys.readouterr().out)["conversations"]
    assert [c["id"] for c in found] == ["a"]
    assert main(["trace", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.count("10.0.0.9 claims sub='alice' (unverified)") == 2


def test_trace_names_the_credential_that_decided() -> None:
    certificate = {"subject": "regauth:build:b1", "serial": "5d69"}
    token = {
        "time": T0.format(1),
        "conversation": "c9",
        "client": "10.0.0.9:2000",
        "kind": "token",
        "method": "GET",
        "path": "/v2/token",
        "status": 200,
        "client_certificate": certificate,
        "token_request": {"method": "GET", "requested": ["repository:builds/b1:push"]},
        "token_response": {
            "credential": "client_certificate",
            "account": "anonymous",
            "build": "b1",
            "certificate_serial": "5d69",
            "decisions": [],
            "jti": "j9",
        },
    }
    job = {
        **token,
        "time": T0.format(2),
        "client_certificate": None,
        "token_response": {"credential": "job_token", "account": "ci", "job_token": "J1",
                           "decisions": []},
    }  # fmt: skip
    registry = {
        "time": T0.format(3),
        "conversation": "c9",
        "client": "10.0.0.9:2000",
        "kind": "registry",
        "method": "PUT",
        "path": "/v2/builds/b1/manifests/1",
        "status": 201,
        "answered_by": "upstream",
        "client_certificate": certificate,
        "decision": {"forward": True, "reason": "client certificate (build b1) grants x"},
    }
    [conversation] = _conversations(token, job, registry)
    texts = [step.text for step in trace.steps(conversation)]
    assert any("as build b1 by client certificate 5d69" in t for t in texts), texts
    assert any("as ci by job token J1" in t for t in texts), texts
    assert any(t.startswith("PUT") and t.endswith("by client certificate 5d69") for t in texts)


# -- many files, streaming, waiting, follow (issue 26, items 2 and 7) ---------------------------


def _challenge(at: dt.datetime, client: str = "10.0.0.9:2000") -> dict[str, object]:
    return {
        "time": at.isoformat(timespec="milliseconds"),
        "conversation": "ch",
        "client": client,
        "kind": "registry",
        "method": "GET",
        "path": "/v2/x/a/tags/list",
        "route": "tags",
        "repository": "x/a",
        "status": 401,
        "answered_by": "regauth",
        "challenge": {
            "scheme": "Bearer",
            "realm": "https://regauth.test/v2/token",
            "scopes": ["repository:x/a:pull"],
        },
    }


def test_several_logs_read_as_one_with_each_step_tagged_by_its_replica(
    tmp_path: Path, capsys
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    token = {
        "time": T0.format(0),
        "conversation": "c1",
        "client": "10.0.0.1:1",
        "kind": "token",
        "status": 200,
        "token_response": {"jti": "j1", "account": "alice"},
    }
    with gzip.open(tmp_path / "a" / "exchange.jsonl.1.gz", "wt") as f:
        f.write(json.dumps(token) + "\n")
    retry = _registry(1, "c1", {"sub": "alice", "jti": "j1"}, checked_by="regauth")
    retry["decision"] = {"verified_token": {"subject": "alice", "source": "regauth"}}
    (tmp_path / "b" / "exchange.jsonl").write_text(json.dumps(retry) + "\n")
    assert main(["trace", str(tmp_path / "a"), str(tmp_path / "b" / "*.jsonl"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [c] = doc["conversations"]
    assert c["replicas"] == ["a/exchange.jsonl", "b/exchange.jsonl"]
    assert [s.get("replica") for s in c["steps"]] == [
        "a/exchange.jsonl",
        "a/exchange.jsonl",
        "b/exchange.jsonl",
    ]
    assert main(["trace", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "[b/exchange.jsonl]" in out and "[a/exchange.jsonl]" in out


def test_trace_says_what_it_waits_for(tmp_path: Path) -> None:
    log = _log(tmp_path, _challenge(NOW - dt.timedelta(seconds=1)))
    [found] = list(
        trace.analyse_stream(
            parse_lines(log.read_text().splitlines()).entries, trace.Filters(), NOW
        )
    )
    assert found.diagnoses == []  # too early to tell
    [waiting] = found.pending
    assert waiting.code == "no-token-request"
    out = io.StringIO()
    trace.render(
        found.conversation, [], Printer(out, color=False), waiting=found.pending, end=found.end
    )
    assert (
        "waiting       up to 4.0 s more for a token request from 10.0.0.9 at "
        "https://regauth.test/v2/token (else no-token-request; log line 1)"
    ) in out.getvalue()
    assert trace.as_json(found.conversation, [], found.pending, found.end)["waiting"] == [
        {
            "code": "no-token-request",
            "waiting_for": "a token request from 10.0.0.9 at https://regauth.test/v2/token",
            "until": "2026-01-01T00:00:14.000+00:00",
            "seconds_left": 4.0,
            "log_line": 1,
        }
    ]
    later = list(
        trace.analyse_stream(
            parse_lines(log.read_text().splitlines()).entries,
            trace.Filters(),
            NOW + dt.timedelta(seconds=5),
        )
    )
    assert [d.code for d in later[0].diagnoses] == ["no-token-request"] and not later[0].pending


def test_follow_prints_the_diagnosis_once_the_wait_is_over(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trace, "QUIET", 0.0)
    monkeypatch.setattr(diagnosis, "TOKEN_WAIT", dt.timedelta(seconds=0.3))
    log = _log(tmp_path, _challenge(dt.datetime.now(dt.UTC)))
    out = io.StringIO()
    deadline = time.monotonic() + 5

    def stop() -> bool:
        return "no-token-request: challenge" in out.getvalue() or time.monotonic() > deadline

    trace.follow(log, trace.Filters(), Printer(out, color=False), poll=0.05, stop=stop)
    text = out.getvalue()
    assert "waiting       up to" in text.split("conversation ch (updated)")[0]
    assert "diagnosis     no-token-request" in text.split("conversation ch (updated)")[1]


def test_follow_sleeps_while_nothing_arrives(tmp_path: Path, monkeypatch) -> None:
    """The old loop re-read and re-diagnosed the whole log every half second."""
    log = _log(tmp_path, {"time": T0.format(0), "conversation": "a", "kind": "token"})
    monkeypatch.setattr(trace, "QUIET", 0.0)
    diagnosed: list[str] = []
    real = trace.diagnose
    monkeypatch.setattr(trace, "diagnose", lambda c, ctx: diagnosed.append(c.id) or real(c, ctx))
    sleeps: list[float] = []
    trace.follow(
        log,
        trace.Filters(),
        Printer(io.StringIO(), color=False),
        poll=1.0,
        stop=lambda: len(sleeps) >= 12,
        sleep=sleeps.append,
    )
    assert diagnosed == ["a"]  # once, when it was printed; never again while idle
    # Backing off from 50 ms to `poll`, and staying there.
    assert sleeps[0] <= 0.11 and sleeps[-3:] == pytest.approx([1.0] * 3, abs=0.01)


def test_follow_reopens_a_rotated_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trace, "QUIET", 0.0)
    log = _log(tmp_path, {"time": T0.format(0), "conversation": "before", "kind": "token"})
    out = io.StringIO()
    polls = iter(range(8))

    def stop() -> bool:
        step = next(polls, None)
        if step == 2:  # logrotate: rename, and regauth reopens a new file at the path
            log.rename(tmp_path / "exchange.jsonl.1")
            log.write_text(json.dumps({"time": T0.format(1), "conversation": "after"}) + "\n")
        return step is None

    trace.follow(log, trace.Filters(), Printer(out, color=False), poll=0.0, stop=stop)
    headers = [line.split()[1] for line in out.getvalue().splitlines() if line.startswith("conv")]
    assert headers == ["before", "after"]


def test_a_failed_handshake_reads_as_a_step_and_its_snippets_line_by_line() -> None:
    record = {
        "time": T0.format(0),
        "conversation": "t1",
        "client": "10.0.0.7:51000",
        "kind": "tls",
        "error": "The client does not trust the proxy's certificate (tlsv1 alert unknown ca)",
        "tls": {
            "cause": "untrusted",
            "sni": "regauth.test",
            "library": "openssl",
            "listen": "127.0.0.1:5443",
            "ca": "/srv/certs/ca.crt",
        },
    }
    [(c, diagnoses)] = trace.analyse(
        parse_lines([json.dumps(record)]).entries, trace.Filters(), NOW
    )
    out = io.StringIO()
    trace.render(c, diagnoses, Printer(out, color=False))
    text = out.getvalue().splitlines()
    assert (
        "  +  0.000s tls           handshake failed for regauth.test: The client does not trust "
        "the proxy's certificate (tlsv1 alert unknown ca)"
    ) in text
    assert "  result        TLS handshake failed: no request" in text
    assert "                hint: trust regauth's CA in the client (/srv/certs/ca.crt):" in text
    assert (
        "                          curl --cacert /srv/certs/ca.crt https://regauth.test:5443/v2/"
    ) in text
