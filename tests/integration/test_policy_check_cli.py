"""`regauth policy check` on broken and hostile files: `file:line:col: message`, exit 1, no
traceback (it printed IndexError and RecursionError tracebacks before)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REGAUTH = Path(sys.executable).with_name("regauth")
PROBLEM_RE = re.compile(r"(?P<file>[^\n:]+):(?P<line>\d+):(?P<col>\d+): (?P<message>[^\n]+)")

HOSTILE = {
    "int-tag.yaml": "version: !!int\n",
    "brackets.yaml": "[" * 1000 + "]" * 1000,
    "deep-mapping.yaml": "".join(" " * i + "a:\n" for i in range(1000)),
    "odd-tags.yaml": "version: !!python/object/apply:os.system ['true']\n",
    "set-tag.yaml": "version: 1\nservice: !!set {a}\n",
    "aliases.yaml": "a: &a [*a]\n",
    "huge.yaml": "# " + "x" * (2 * 1024 * 1024) + "\n",
}


def _check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REGAUTH), "policy", "check", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_loader_failure_is_one_positioned_line_and_exit_1(tmp_path: Path) -> None:
    files = []
    for name, text in HOSTILE.items():
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)) * 16)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\nservice: café\n".encode("latin-1"))
    directory = tmp_path / "a-directory.yaml"
    directory.mkdir()
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    files += [junk, latin1, directory, fifo]

    result = _check(*files)

    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    matches = [PROBLEM_RE.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert {m["file"] for m in matches if m} == {str(f) for f in files}
    by_file = {m["file"]: m.group(0) for m in matches if m}
    assert by_file[str(tmp_path / "int-tag.yaml")].endswith(
        ":1:10: cannot read int value '': IndexError: string index out of range"
    )
    assert ":1:33: YAML nesting deeper than 32 levels" in by_file[str(tmp_path / "brackets.yaml")]
    assert ":2:13: the policy is not UTF-8 text" in by_file[str(latin1)]
    assert by_file[str(directory)].endswith(":1:1: cannot read policy: not a regular file")


def test_a_valid_policy_still_passes(tmp_path: Path) -> None:
    policy = tmp_path / "ok.yaml"
    policy.write_text("version: 1\nservice: svc\nrules: []\n")
    result = _check(policy)
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"{policy}: ok")
