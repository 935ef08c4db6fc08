"""The command line (`regauth.cli`): it parses and dispatches, nothing else. Each subcommand
reaches its function in `regauth.tools.commands`, defaults come from REGAUTH_* variables,
mitmproxy's own arguments pass through after `--`, and a ValueError or OSError a command lets
through is one line and exit 1. What the commands do is tests/unit/tools/; the installed
`regauth` script runs in tests/integration."""

from __future__ import annotations

import pytest

from regauth import cli
from regauth.tools import commands


@pytest.mark.parametrize(
    ("argv", "func"),
    [
        (["certs", "init"], commands.certs_init),
        (["certs", "bundle"], commands.certs_bundle),
        (["certs", "list"], commands.certs_lifecycle),
        (["certs", "rotate"], commands.certs_lifecycle),
        (["certs", "activate", "k"], commands.certs_lifecycle),
        (["certs", "retire", "k"], commands.certs_lifecycle),
        (["passwd"], commands.passwd),
        (["policy", "check", "p.yaml"], commands.policy_check),
        (["policy", "test", "p.yaml", "t.yaml"], commands.policy_test),
        (["policy", "diff", "a.yaml", "b.yaml"], commands.policy_diff),
        (["policy", "explain", "p.yaml", "repository:a:pull"], commands.policy_explain),
        (["replay", "log", "--policy", "p.yaml"], commands.replay),
        (["trace", "log"], commands.trace),
        (["serve"], commands.serve),
    ],
)
def test_each_subcommand_reaches_its_command(argv, func):
    assert cli.build_parser().parse_args(argv).func is func


def test_defaults_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("REGAUTH_CERTS_DIR", "/srv/certs")
    monkeypatch.setenv("REGAUTH_LISTEN", "0.0.0.0:443")
    monkeypatch.setenv("REGAUTH_WEB", "yes")
    monkeypatch.setenv("REGAUTH_WEB_PORT", "9999")
    args = cli.build_parser().parse_args(["serve"])
    assert (args.certs_dir, args.listen, args.web, args.web_port) == (
        "/srv/certs",
        "0.0.0.0:443",
        True,
        9999,
    )
    monkeypatch.delenv("REGAUTH_CERTS_DIR")
    monkeypatch.setenv("REGAUTH_WEB", "0")
    args = cli.build_parser().parse_args(["serve"])
    assert args.certs_dir == "certs" and args.web is False


def test_mitmproxy_arguments_pass_through_after_a_double_dash(monkeypatch):
    seen = []  # build_parser reads commands.serve when main builds it
    monkeypatch.setattr(commands, "serve", lambda args: seen.append(args.extra) or 0)
    assert cli.main(["serve", "--", "--set", "connection_strategy=lazy"]) == 0
    assert cli.main(["serve"]) == 0
    assert seen == [["--set", "connection_strategy=lazy"], []]


@pytest.mark.parametrize("error", [ValueError("bad value"), FileNotFoundError(2, "gone")])
def test_an_error_a_command_lets_through_is_one_line_and_exit_1(monkeypatch, capsys, error):
    def failing(args):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(commands, "passwd", failing)
    assert cli.main(["passwd"]) == 1
    assert capsys.readouterr().err == f"regauth: {error}\n"


def test_a_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["policy", "frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
