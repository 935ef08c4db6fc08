"""regauth.tools.usage: user-facing help on every command (issue 26 item 5)."""

from __future__ import annotations

import argparse

import pytest

from regauth import cli
from regauth.tools import commands
from regauth.tools import usage

# Phrases of developer docstrings (cli.py's, commands.py's, the tools') that must not reach
# a user's --help.
LEAKS = ("dispatches", "regauth.tools", "This module", "subcommand does", "Returns", "`regauth.")


def every_command() -> list[tuple[str, argparse.ArgumentParser]]:
    return list(usage.commands(cli.build_parser()))


def test_the_tree_is_walked() -> None:
    paths = [path for path, _ in every_command()]
    assert paths[0] == ""
    assert {"serve", "certs list", "certs client", "policy check", "token issue"} <= set(paths)


@pytest.mark.parametrize(("path", "parser"), every_command(), ids=lambda v: v or "regauth")
def test_help_is_for_users(path: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    for leak in LEAKS:
        assert leak not in text, (path, leak)
    assert cli.__doc__ is not None and cli.__doc__.strip()[:40] not in text
    assert commands.__doc__ is not None and commands.__doc__.strip()[:40] not in text
    assert "examples:\n  regauth" in text, path
    assert parser.description, path
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            assert action.help, (path, action.dest)


def test_top_level_and_serve_list_the_environment() -> None:
    parsers = dict(every_command())
    for path in ("", "serve"):
        text = parsers[path].format_help()
        for variable in ("REGAUTH_CERTS_DIR", "REGAUTH_STATE", "REGAUTH_ADMIN_LISTEN"):
            assert variable in text, (path, variable)


def test_every_example_names_an_existing_command() -> None:
    paths = {path for path, _ in every_command()}
    assert set(usage.EXAMPLES) <= paths
    for path, text in usage.EXAMPLES.items():
        for line in text.splitlines():
            if line.strip().startswith("regauth ") and path:
                assert line.strip().startswith(f"regauth {path}"), (path, line)


def test_certs_dir_is_one_spelling_with_a_hidden_alias() -> None:
    parser = argparse.ArgumentParser()
    usage.certs_dir_option(parser, "certs", "where")
    assert parser.parse_args([]).dir == "certs"
    assert parser.parse_args(["--certs-dir", "a"]).dir == "a"
    assert parser.parse_args(["--dir", "b"]).dir == "b"
    text = parser.format_help()
    assert "--certs-dir DIR" in text and "--dir" not in text.replace("--certs-dir", "")
