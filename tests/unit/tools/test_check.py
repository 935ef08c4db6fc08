"""`regauth policy check [--no-secrets] FILE...` (`regauth.tools.check`): each file is loaded
exactly as the proxy loads it; with `--no-secrets`, absent secrets are notes and everything else,
present secrets included, is still validated (in process and as a command, real files)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from regauth.cli import main
from regauth.tools.check import check_files
from regauth.tools.render import Printer

POLICIES = Path(__file__).resolve().parents[3] / "policies"
DEFAULT = POLICIES / "default.yaml"
STAGING = POLICIES / "example-staging.yaml"

pytestmark = pytest.mark.usefixtures("no_secrets")


def test_check_no_secrets_passes_the_shipped_policies_without_environment(capsys) -> None:
    assert main(["policy", "check", "--no-secrets", str(DEFAULT), str(STAGING)]) == 0
    out, err = capsys.readouterr()
    assert f"{DEFAULT}: ok" in out and "secrets not checked" in out
    assert "note: account 'ci': environment variable REGAUTH_CI_PASSWORD_HASH is not set" in err


def test_check_needs_secrets_without_the_flag(capsys) -> None:
    assert main(["policy", "check", str(DEFAULT)]) == 1
    assert "REGAUTH_CI_PASSWORD_HASH is not set" in capsys.readouterr().err


def test_check_no_secrets_still_validates_present_secrets_and_everything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("REGAUTH_CI_PASSWORD_HASH", "not-a-bcrypt-hash")
    assert main(["policy", "check", "--no-secrets", str(DEFAULT)]) == 1
    assert "is not a bcrypt hash" in capsys.readouterr().err
    monkeypatch.delenv("REGAUTH_CI_PASSWORD_HASH")
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        DEFAULT.read_text().replace(
            "actions: [pull, push]\n\n  - comment: CI publishes",
            "actions: [pull, pusj]\n\n  - comment: CI publishes",
        )
    )
    assert main(["policy", "check", "--no-secrets", str(broken)]) == 1
    assert "unknown action 'pusj'" in capsys.readouterr().err
    missing_file = tmp_path / "file.yaml"
    missing_file.write_text(
        DEFAULT.read_text().replace(
            "password_hash_env: REGAUTH_CI_PASSWORD_HASH", "password_hash_file: absent.bcrypt"
        )
    )
    assert main(["policy", "check", "--no-secrets", str(missing_file)]) == 0
    assert "note: account 'ci': cannot read" in capsys.readouterr().err


def test_check_no_secrets_in_a_fresh_clone(tmp_path: Path) -> None:
    """`policy check --no-secrets policies/*.yaml` with no environment at all."""
    clone = tmp_path / "policies"
    shutil.copytree(POLICIES, clone)
    regauth = Path(__import__("sys").executable).with_name("regauth")
    files = sorted(str(p) for p in clone.glob("*.yaml"))
    done = subprocess.run(
        [str(regauth), "policy", "check", "--no-secrets", *files],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok") == len(files)


def test_check_files_prints_a_summary_per_file_and_problems_on_err(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nservice: s\nrules: []\nsurprise: 1\n")
    out, err = io.StringIO(), io.StringIO()
    code = check_files(
        [str(DEFAULT), str(bad)], no_secrets=True, out=Printer(out, color=False), err=err
    )
    assert code == 1
    [summary] = out.getvalue().splitlines()
    assert summary.startswith(f"{DEFAULT}: ok (service ")
    assert summary.endswith(" secrets not checked)") and " accounts, " in summary
    problems = [line for line in err.getvalue().splitlines() if "note:" not in line]
    assert problems and all(line.startswith(f"{bad}:") for line in problems)
    assert any("surprise" in line for line in problems)
    assert (
        check_files(
            [str(DEFAULT)],
            no_secrets=True,
            out=Printer(io.StringIO(), color=False),
            err=io.StringIO(),
        )
        == 0
    )
