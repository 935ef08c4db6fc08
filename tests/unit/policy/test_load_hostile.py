"""Broken and hostile policy files: only PolicyError escapes, always as file:line:col: message.

Each case here raised something else before (IndexError, RecursionError, a multi-line message
without a position) or blocked (a FIFO); the reload task only survives PolicyError.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

import pytest

from regauth.policy import load
from regauth.policy import yamlpos
from regauth.policy.load import load_policy
from regauth.policy.load import load_policy_text
from regauth.policy.reader import PolicyError

PROBLEM_RE = re.compile(r"[^\n]+:\d+:\d+: [^\n]+")
DEEP = 33  # yamlpos.MAX_DEPTH + 1


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, file="p.yaml")
    lines = str(e.value).splitlines()
    assert lines and all(PROBLEM_RE.fullmatch(line) for line in lines), lines
    return lines


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: !!int\n", "p.yaml:1:10: cannot read int value ''"),
        ("[" * 1000 + "]" * 1000, f"p.yaml:1:{DEEP}: YAML nesting deeper than 32 levels"),
        ("{a: " * 1000 + "}" * 1000, "p.yaml:1:126: YAML nesting deeper than 32 levels"),
        (
            "".join(" " * i + "a:\n" for i in range(1000)),
            "p.yaml:32:32: YAML nesting deeper than 32 levels",
        ),
        (
            "".join(" " * i + "-\n" for i in range(1000)),
            f"p.yaml:{DEEP}:{DEEP}: YAML nesting deeper than 32 levels",
        ),
        ("[" * 1_000_000, f"p.yaml:1:{DEEP}: YAML nesting deeper than 32 levels"),
        ("a: &a [*a]\n", "p.yaml:1:4: YAML nesting deeper than 32 levels (through aliases)"),
        (
            "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 40)),
            "p.yaml:1:10: YAML nesting deeper than 32 levels (through aliases)",
        ),
        (
            "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)),
            "values after alias expansion",
        ),
        ("[" + "a," * 150_000 + "]", "document too large: more than 100000 values"),
        ("x" * (1024 * 1024 + 1), "p.yaml:1:1048577: document larger than 1024 KiB"),
        ("version: !!set {a}\n", "p.yaml:1:10: YAML tag 'set' is not supported here"),
        ("version: !!omap [a: 1]\n", "p.yaml:1:10: YAML tag 'omap' is not supported here"),
        ("version: !!int [1]\n", "p.yaml:1:10: YAML tag 'int' is not supported here"),
        ("version: !!python/object/apply:os.system [true]\n", "p.yaml:1:10: YAML tag"),
        ("version: !!python/name:os.system x\n", "p.yaml:1:10: cannot read"),
        ("version: !local x\n", "p.yaml:1:10: cannot read !local value 'x'"),
        ("version: !!timestamp nope\n", "p.yaml:1:10: cannot read timestamp value 'nope'"),
        ("version: !!binary 'x'\n", "p.yaml:1:10: cannot read binary value 'x'"),
        ("version: " + "9" * 5000 + "\n", "p.yaml:1:10: cannot read int value '99999"),
        ("version: 1\n\x00\x01\x02", "p.yaml:2:1: character U+0000 is not allowed in YAML"),
        ("version: 1\nservice: \ud800\n", "p.yaml:2:10: character U+D800 is not allowed"),
        ("a: 1\n---\nb: 2\n", "p.yaml:2:1: YAML syntax error: but found another document"),
        ("a: *nowhere\n", "p.yaml:1:4: YAML syntax error: found undefined alias 'nowhere'"),
    ],
)
def test_hostile_texts_are_policy_errors_with_positions(text: str, expected: str) -> None:
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert len(problems[0]) < 300  # a 5,000-digit value is not echoed


def test_nesting_is_refused_long_before_the_recursion_limit() -> None:
    # The bound must hold when the loader is called from deep in a stack (an event loop, a
    # thread pool): run it with only 150 frames to spare.
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    text = "[" * 1000 + "]" * 1000
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 150)
    try:
        with pytest.raises(PolicyError, match="nesting deeper"):
            load_policy_text(text)
    finally:
        sys.setrecursionlimit(old)


def test_an_unexpected_loader_defect_is_a_policy_error_at_its_position(monkeypatch) -> None:
    def broken(self, root):  # a bug in one section reader, while it handles `token:`
        where = root.where("token")
        raise TypeError(f"unexpected {where}")

    monkeypatch.setattr(load._Loader, "token_settings", broken)
    problems = _problems("version: 1\nservice: s\ntoken:\n  lifetime: 300\nrules: []\n")
    assert any(
        p.startswith("p.yaml:4:3: cannot check this part of the policy (internal error TypeError")
        for p in problems
    ), problems


def test_a_recursion_error_inside_the_loader_is_a_policy_error(monkeypatch) -> None:
    def recurse(text):
        return recurse(text)

    monkeypatch.setattr(yamlpos, "load", recurse)
    problems = _problems("version: 1\n")
    assert problems == [
        "p.yaml:1:1: cannot check this part of the policy (internal error "
        "RecursionError: maximum recursion depth exceeded)"
    ]


# -- files -------------------------------------------------------------------------------------


def _file_problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    lines = str(e.value).splitlines()
    assert lines and all(PROBLEM_RE.fullmatch(line) for line in lines), lines
    return lines


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert _file_problems(tmp_path) == [f"{tmp_path}:1:1: cannot read policy: not a regular file"]


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert _file_problems(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}:1:1: cannot read policy: No such file or directory"
    ]


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(_file_problems(fifo)), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("load_policy blocked on a FIFO")
    assert result == [[f"{fifo}:1:1: cannot read policy: not a regular file"]]


def test_a_device_is_refused() -> None:
    assert _file_problems(Path("/dev/zero")) == [
        "/dev/zero:1:1: cannot read policy: not a regular file"
    ]


def test_non_utf8_bytes_are_reported_where_they_are(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"version: 1\nservice: caf\xc3\xa9 \xff\n")
    assert _file_problems(path) == [
        f"{path}:2:15: the policy is not UTF-8 text (byte 0xff: invalid start byte)"
    ]


def test_binary_junk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    assert len(_file_problems(path)) == 1


def test_a_huge_file_is_refused_after_reading_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    with path.open("wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of zeros, only the limit is read
    assert _file_problems(path) == [f"{path}:1:1048577: the policy is larger than 1024 KiB"]


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes("\ufeffversion: 2\n".encode())
    # read as YAML, not refused as a character: the problem found is the version
    assert f"{path}:1:10: `version: 1` is required" in " ".join(_file_problems(path))


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "huge"])
def test_secret_and_key_files_are_read_bounded_and_never_block(tmp_path, kind):
    # A *_file secret or key naming /dev/zero read until MemoryError; a FIFO blocked forever
    # (in the proxy, the reload task with it).
    target = {
        "device": Path("/dev/zero"),
        "fifo": tmp_path / "fifo",
        "directory": tmp_path,
        "huge": tmp_path / "huge",
    }[kind]
    if kind == "fifo":
        os.mkfifo(target)
    if kind == "huge":
        target.write_bytes(b"$2b$04$" + b"a" * (2 * 1024 * 1024))
    for text in (
        f"""version: 1
service: s
accounts:
  ci:
    password_hash_file: {target}
rules: []
""",
        f"""version: 1
service: s
rules: []
trusted_issuers:
  - issuer: x
    audience: s
    algorithm: ES256
    public_key_file: {target}
""",
    ):
        with pytest.raises(PolicyError) as raised:
            load_policy_text(text, "p.yaml", tmp_path)
        [problem] = raised.value.problems
        assert problem.line in (5, 8) and problem.column > 1
        assert "not a regular file" in problem.message or "larger than" in problem.message
