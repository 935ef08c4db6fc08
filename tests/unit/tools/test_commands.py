"""What each `regauth` subcommand does with its parsed arguments (`regauth.tools.commands`):
exit codes (0 fine, 1 the finding or a failure, 2 unusable input) and the one-line messages of
the commands without a module of their own (`certs init|bundle`, `passwd`, `policy explain`)
and of each command's input checks. The tools behind the others have their own tests."""

from __future__ import annotations

import io
from pathlib import Path

import bcrypt
import pytest

from regauth.cli import build_parser
from regauth.tools import commands
from tests.support.policies import policy_text


def _args(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(list(argv))


def test_certs_init_then_bundle(tmp_path, capsys):
    certs = tmp_path / "certs"
    assert commands.certs_init(_args("certs", "init", "--dir", str(certs))) == 0
    created = capsys.readouterr().out.splitlines()
    assert len(created) == 6 and all(line.startswith("created ") for line in created)
    assert commands.certs_init(_args("certs", "init", "--dir", str(certs))) == 0
    assert "already present, nothing changed" in capsys.readouterr().out
    assert commands.certs_bundle(_args("certs", "bundle", "--dir", str(certs))) == 0
    bundle = capsys.readouterr().out
    assert bundle.count("BEGIN CERTIFICATE") == 1 and "PRIVATE" not in bundle
    empty = tmp_path / "empty"
    empty.mkdir()
    assert commands.certs_bundle(_args("certs", "bundle", "--dir", str(empty))) == 1
    assert "no token-signing certificates" in capsys.readouterr().err


def test_passwd_from_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert commands.passwd(_args("passwd", "--stdin", "--rounds", "4")) == 0
    hashed = capsys.readouterr().out.strip()
    assert bcrypt.checkpw(b"hunter2", hashed.encode()) and hashed.startswith("$2b$04$")
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert commands.passwd(_args("passwd", "ci", "--stdin", "--rounds", "4")) == 0
    snippet = capsys.readouterr().out
    assert snippet.startswith('  ci:\n    password_hash: "$2b$04$')
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert commands.passwd(_args("passwd", "--stdin")) == 1
    assert "regauth passwd: empty password" in capsys.readouterr().err


def test_passwd_asks_twice(monkeypatch, capsys):
    answers = iter(["one", "two"])
    monkeypatch.setattr(commands.getpass, "getpass", lambda prompt: next(answers))
    assert commands.passwd(_args("passwd")) == 1
    assert capsys.readouterr().err == "passwords differ\n"


@pytest.fixture
def policy(tmp_path: Path, password_hashes: dict[str, str]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(password_hashes))
    return path


def test_policy_explain_names_the_deciding_rule(policy, capsys):
    assert (
        commands.policy_explain(
            _args(
                "policy",
                "explain",
                str(policy),
                "--account",
                "ci",
                "repository:cache/go:pull,push",
                "repository:secret/x:pull",
            )
        )
        == 0
    )
    # Near misses of a denial are indented under its line (tests/unit/tools/test_explain.py).
    first, second = [
        line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")
    ]
    assert first.startswith("repository:cache/go:pull,push: granted [pull,push] by rule 1")
    assert second == "repository:secret/x:pull: default deny [-] by default deny"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--account", "mallory", "repository:a:pull"], 2, "unknown account 'mallory'"),
        (["repository:A:pull"], 2, "regauth policy explain: "),
    ],
)
def test_policy_explain_refuses_what_it_cannot_use(policy, capsys, argv, code, message):
    assert commands.policy_explain(_args("policy", "explain", str(policy), *argv)) == code
    assert message in capsys.readouterr().err


def test_policy_explain_with_an_invalid_policy_is_an_input_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    assert commands.policy_explain(_args("policy", "explain", str(bad), "repository:a:pull")) == 2
    assert capsys.readouterr().err.startswith(f"{bad}:1:")


def test_replay_and_trace_refuse_what_they_cannot_read(policy, tmp_path, capsys):
    absent = str(tmp_path / "absent.jsonl")
    assert commands.replay(_args("replay", absent, "--policy", str(policy))) == 2
    assert f"regauth replay: cannot read {absent}: No such file" in capsys.readouterr().err
    assert commands.trace(_args("trace", absent)) == 2
    assert f"regauth trace: cannot read {absent}" in capsys.readouterr().err
    assert commands.trace(_args("trace", absent, "--since", "soon")) == 2
    assert "regauth trace: duration 'soon'" in capsys.readouterr().err
    assert commands.trace(_args("trace", absent, "--follow", "--json")) == 2
    assert "--follow prints conversations as text" in capsys.readouterr().err


def test_lines_that_are_not_records_are_counted(policy, tmp_path, capsys):
    log = tmp_path / "exchange.jsonl"
    log.write_text("not json\n[]\n")
    assert commands.replay(_args("replay", str(log), "--policy", str(policy))) == 0
    assert "2 lines of" in capsys.readouterr().err
    assert commands.trace(_args("trace", str(log))) == 0
    out, err = capsys.readouterr()
    assert "2 lines of" in err and "0 conversations, 0 with a diagnosis" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "nowhere"], "regauth serve: "),
        (["--admin-listen", "127.0.0.1:99999"], "regauth serve: "),
        (["--state", "memcached://x"], "regauth serve: "),
        (["--proxy-protocol", "10.0.0.1/8"], "is not a network"),
        (["--upstream", "ftp://registry.example"], "regauth serve: "),
        (["--public-url", "https://registry.example:0"], "port 0"),
    ],
)
def test_serve_refuses_unusable_arguments_before_starting_anything(tmp_path, capsys, argv, message):
    certs = tmp_path / "certs"
    assert commands.serve(_args("serve", "--certs-dir", str(certs), *argv)) == 2
    assert message in capsys.readouterr().err
    assert not certs.exists()  # nothing was created
