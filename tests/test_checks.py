"""The README's test command checks types and format, and both checks can fail (issue 22)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"


def test_the_test_command_runs_lint_format_and_types_before_pytest() -> None:
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "tests/run.sh").read_text().splitlines()
    ]
    order = [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        'exec .venv/bin/python -m pytest "$@"',
    ]
    assert [lines.index(step) for step in order] == sorted(lines.index(step) for step in order)


def test_ruff_format_check_fails_on_a_planted_misformat(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("x = {  'a':1}\n")
    run = subprocess.run(
        [VENV / "ruff", "format", "--check", "--config", ROOT / "pyproject.toml", planted],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 file would be reformatted" in run.stdout


def test_mypy_fails_on_a_planted_type_error(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def f(x: int) -> str:\n    return x\n")
    run = subprocess.run(
        [VENV / "mypy", "--config-file", ROOT / "pyproject.toml", "--no-incremental", planted],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'Incompatible return value type (got "int", expected "str")' in run.stdout
