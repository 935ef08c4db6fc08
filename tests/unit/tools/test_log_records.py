"""The exchange log read back (`regauth.tools.log_records`): tolerant reading (torn and foreign
lines are counted and skipped), conversations joined by a genuine token's `jti`, and who a
record is attributed to: only identities regauth verified are accounts, names a client merely
sent are claims (issue 20, item 11), and conversations given back as they close, so that memory
holds the open ones and not the log (issue 26, item 2). The record itself is
ops/test_exchange_record.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from regauth.tools.log_records import ConversationStream
from regauth.tools.log_records import Entry
from regauth.tools.log_records import conversations
from regauth.tools.log_records import parse_lines
from regauth.tools.log_records import read_log

T0 = "2026-01-01T00:00:0{}+00:00"


def test_lines_that_are_not_json_objects_are_counted_and_skipped(tmp_path: Path) -> None:
    record = {"time": T0.format(0), "conversation": "a", "kind": "token", "status": 200}
    log = tmp_path / "exchange.jsonl"
    log.write_text(
        "\n".join(
            [
                json.dumps(record),
                "",
                "[1, 2]",
                "not json",
                json.dumps({**record, "conversation": "b"}),
                '{"time": "2026-01-01T00:00:0',
            ]
        )
    )  # a torn last line
    read = read_log(log)
    assert [(e.line, e.conversation) for e in read.entries] == [(1, "a"), (5, "b")]
    assert read.skipped == 3
    assert [e.line for e in parse_lines([json.dumps(record)], first_line=41).entries] == [41]


def test_conversations_are_in_time_order_whatever_the_line_order() -> None:
    late = {"time": T0.format(5), "conversation": "late", "kind": "token", "status": 200}
    early = {"time": T0.format(1), "conversation": "early", "kind": "token", "status": 200}
    again = {"time": T0.format(7), "conversation": "early", "kind": "token", "status": 401}
    found = conversations(_entries(late, early, again))
    assert [(c.id, [e.line for e in c.entries]) for c in found] == [
        ("early", [2, 3]),
        ("late", [1]),
    ]
    assert found[0].start is not None and found[0].end is not None
    assert (found[0].end - found[0].start).total_seconds() == 6


VERIFIED = {
    "forward": True,
    "reason": "token grants repository:x/a:pull",
    "verified_token": {"issuer": "regauth", "subject": "alice", "source": "regauth"},
}


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


def _entries(*records: dict[str, object]):  # type: ignore[no-untyped-def]
    return parse_lines([json.dumps(r) for r in records]).entries


def test_only_verified_identities_are_accounts() -> None:
    token = {
        "time": T0.format(0),
        "conversation": "a",
        "kind": "token",
        "status": 200,
        "token_response": {"jti": "j1", "account": "alice"},
    }
    refused = {
        "time": T0.format(1),
        "conversation": "b",
        "kind": "token",
        "status": 401,
        "token_request": {"username": "alice"},
        "token_response": {"refused": "x"},
    }
    genuine = _registry(
        2, "a", {"sub": "alice", "jti": "j1"}, decision=VERIFIED, checked_by="regauth"
    )
    old_log = _registry(3, "a", {"sub": "alice", "jti": "j1"}, decision=VERIFIED)
    forged = _registry(
        4,
        "c",
        {"sub": "alice", "jti": "j1"},
        401,
        {"forward": False, "reason": "invalid token"},
        checked_by=None,
    )
    forged_old = _registry(
        5, "d", {"sub": "alice"}, 401, {"forward": False, "reason": "invalid token"}
    )
    delegated = _registry(6, "e", {"sub": "alice"}, checked_by="registry")
    trusted = _registry(
        7,
        "f",
        {"sub": "bob"},
        checked_by="regauth",
        decision={**VERIFIED, "verified_token": {"subject": "bob", "source": "legacy-ci"}},
    )
    by_line = {
        e.line: e
        for e in _entries(token, refused, genuine, old_log, forged, forged_old, delegated, trusted)
    }
    assert [by_line[n].account for n in range(1, 9)] == [
        "alice",
        None,
        "alice",
        "alice",
        None,
        None,
        None,
        "legacy-ci:bob",
    ]
    assert [by_line[n].claim for n in range(1, 9)] == [
        None,
        "user='alice' (unverified)",
        None,
        None,
        "sub='alice' (unverified)",
        "sub='alice' (unverified)",
        "sub='alice' (claimed, checked by the registry)",
        None,
    ]


def test_a_forged_token_naming_an_issued_jti_joins_nothing() -> None:
    token = {
        "time": T0.format(0),
        "conversation": "a",
        "kind": "token",
        "status": 200,
        "token_response": {"jti": "j1", "account": "alice"},
    }
    forged = _registry(
        1,
        "b",
        {"sub": "alice", "jti": "j1"},
        401,
        {"forward": False, "reason": "invalid token"},
        checked_by=None,
    )
    refused_by_registry = _registry(
        2,
        "c",
        {"sub": "alice", "jti": "j1"},
        401,
        checked_by="registry",
        upstream_challenge=[{"error": "invalid_token"}],
    )
    found = conversations(_entries(token, forged, refused_by_registry))
    assert [c.id for c in found] == ["a", "b", "c"]
    assert found[0].accounts == ["alice"] and found[1].accounts == []
    assert found[1].claims == ["sub='alice' (unverified)"]
    # A token the registry accepted is genuine: it joins (delegate mode).
    accepted = _registry(3, "d", {"sub": "alice", "jti": "j1"}, checked_by="registry")
    accepted["answered_by"] = "upstream"
    assert [c.id for c in conversations(_entries(token, accepted))] == ["a"]


def _at(seconds: int, conversation: str, **extra: object) -> Entry:
    record = {
        "time": (START + dt.timedelta(seconds=seconds)).isoformat(),
        "conversation": conversation,
        "client": "10.0.0.1:1",
        "kind": "registry",
        "status": 200,
        **extra,
    }
    [entry] = parse_lines([json.dumps(record)], first_line=seconds + 1).entries
    return entry


START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_conversation_is_given_back_once_it_has_closed() -> None:
    stream = ConversationStream(close_after=dt.timedelta(seconds=300))
    stream.add(_at(0, "a"))
    stream.add(_at(10, "b"))
    stream.add(_at(250, "a"))  # a is active again
    assert stream.closed() == []
    stream.add(_at(311, "c"))  # b has been quiet for 301 s, a for 61 s
    assert [c.id for c in stream.closed()] == ["b"]
    stream.add(_at(600, "c"))
    [a] = stream.closed()
    assert a.id == "a" and [e.line for e in a.entries] == [1, 251]
    # A late record of a conversation already given back starts a new one, marked so.
    stream.add(_at(20, "b"))
    rest = stream.rest()
    assert [(c.id, c.continued) for c in rest] == [("b", True), ("c", False)]
    assert stream.rest() == []


def test_the_stream_holds_the_open_conversations_not_the_log() -> None:
    stream = ConversationStream(close_after=dt.timedelta(seconds=300))
    given_back, most_open = 0, 0
    for second in range(0, 100_000, 10):  # a conversation every 10 s, one record each
        stream.add(_at(second, f"c{second}"))
        given_back += len(stream.closed())
        most_open = max(most_open, len(stream.open_conversations()))
    assert most_open <= 32  # 300 s of them, whatever the log's length
    assert given_back + len(stream.rest()) == 10_000


def test_joining_by_token_happens_while_the_issuing_conversation_is_open() -> None:
    issued = _at(0, "t", kind="token", token_response={"jti": "j1", "account": "alice"})
    presented = {
        "auth": {"scheme": "Bearer", "jwt": {"claims": {"jti": "j1"}}, "checked_by": "regauth"},
        "decision": {"verified_token": {"subject": "alice", "source": "regauth"}},
    }
    stream = ConversationStream(close_after=dt.timedelta(seconds=300))
    stream.add(issued)
    stream.add(_at(5, "retry", **presented))
    [joined] = stream.rest()
    assert joined.id == "t" and joined.merged == ["retry"]
