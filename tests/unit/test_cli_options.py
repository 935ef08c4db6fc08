"""The command line's shared conventions (issue 26 item 5): `--version`, `--certs-dir` on every
command that reads the certs directory (the old `--dir` still works), and `--json` output that
parses on the commands a script reads."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest

from regauth import cli
from regauth.tools import usage
from tests.support.policies import policy_text


def test_version_comes_from_the_package_metadata(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"regauth {version('regauth')}\n"


def commands_with_a_certs_directory() -> list[str]:
    found = []
    for path, parser in usage.commands(cli.build_parser()):
        if any("--dir" in a.option_strings for a in parser._actions):
            found.append(path)
    return found


def test_every_certs_directory_option_is_spelled_like_serve() -> None:
    found = commands_with_a_certs_directory()
    assert {"certs init", "certs list", "certs client", "token list"} <= set(found)
    for path, parser in usage.commands(cli.build_parser()):
        if path in found:
            assert any("--certs-dir" in a.option_strings for a in parser._actions), path
            assert "--certs-dir DIR" in parser.format_help(), path
    serve = dict(usage.commands(cli.build_parser()))["serve"]
    assert any("--certs-dir" in a.option_strings for a in serve._actions)


@pytest.mark.parametrize("spelling", ["--certs-dir", "--dir"])
def test_both_spellings_reach_the_command(spelling: str, tmp_path: Path, capsys) -> None:
    certs = tmp_path / "certs"
    assert cli.main(["certs", "init", spelling, str(certs)]) == 0
    assert (certs / "ca.crt").exists()
    capsys.readouterr()
    assert cli.main(["certs", "bundle", spelling, str(certs)]) == 0
    assert "BEGIN CERTIFICATE" in capsys.readouterr().out


def test_json_outputs_parse(tmp_path: Path, password_hashes, capsys) -> None:
    certs = tmp_path / "certs"
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(password_hashes))
    base = ["--certs-dir", str(certs)]

    def run(*argv: str) -> object:
        assert cli.main(list(argv)) == 0, argv
        return json.loads(capsys.readouterr().out)

    created = run("certs", "init", *base, "--json")
    assert isinstance(created, dict) and str(certs / "ca.crt") in created["created"]
    assert run("certs", "init", *base, "--json") == {"certs_dir": str(certs), "created": []}
    listed = run("certs", "list", *base, "--policy", str(policy), "--json")
    assert isinstance(listed, (dict, list)) and listed
    client = run("certs", "client", *base, "--build", "b1", "--out", str(tmp_path / "c"), "--json")
    assert isinstance(client, dict)
    assert client["subject"] == "regauth:build:b1" and Path(client["cert"]).exists()
    checked = run("policy", "check", "--json", str(policy))
    assert isinstance(checked, dict)
    [one] = checked["files"]
    assert one["ok"] is True and one["rules"] > 0 and one["problems"] == []
    assert run("token", "list", *base, "--json") == []


def test_policy_check_json_lists_problems_and_exits_1(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("service: x\nrules: 7\n")
    assert cli.main(["policy", "check", "--json", str(broken)]) == 1
    [one] = json.loads(capsys.readouterr().out)["files"]
    assert one["ok"] is False and one["problems"]
    assert {"file", "line", "column", "message"} <= set(one["problems"][0])
