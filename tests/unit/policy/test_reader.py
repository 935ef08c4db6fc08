"""The policy reader's tools (`regauth.policy.reader`): typed reads that record a problem at its
`file:line:column` and go on, secrets from the policy, `*_env` or `*_file` (absent ones as
notes with well-formed stand-ins under `--no-secrets`), and bounded reads of files that never
block on a FIFO. The sections are read by test_load_rules.py and test_load_upstreams.py's
readers; the whole loader is test_load.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regauth.policy import yamlpos
from regauth.policy.reader import MAX_SECRET_BYTES
from regauth.policy.reader import Invalid
from regauth.policy.reader import PolicyError
from regauth.policy.reader import Problem
from regauth.policy.reader import Reader
from regauth.policy.reader import read_regular_file
from regauth.policy.reader import read_small


def _reader(
    tmp_path: Path, environ: dict[str, str] | None = None, notes: list[Problem] | None = None
) -> Reader:
    return Reader("p.yaml", tmp_path, environ or {}, notes)


def _map(text: str) -> yamlpos.Map:
    doc = yamlpos.load(text)
    assert isinstance(doc, yamlpos.Map)
    return doc


def test_problems_read_file_line_column_and_a_policy_error_lists_them_all():
    problems = [Problem("p.yaml", 3, 5, "first"), Problem("p.yaml", 9, 1, "second")]
    assert str(problems[0]) == "p.yaml:3:5: first"
    error = PolicyError(problems)
    assert isinstance(error, ValueError) and error.problems == problems
    assert str(error) == "p.yaml:3:5: first\np.yaml:9:1: second"


def test_typed_reads_record_the_problem_where_it_is(tmp_path):
    reader = _reader(tmp_path)
    m = _map("a: text\nn: 3\nflag: true\nlist: [x, y]\nempty: []\nodd: 1\n")
    assert reader.string(m, "a", "thing") == "text"
    assert reader.string(m, "missing", "thing", default="d") == "d"
    assert reader.integer(m, "n", "thing", 0) == 3
    assert reader.string_list(m, "list", "thing") == [
        ("x", m["list"].where(0)),
        ("y", m["list"].where(1)),
    ]
    assert [v for v, _ in reader.string_list(m, "a", "thing")] == ["text"]
    for read in (
        lambda: reader.integer(m, "flag", "thing", 0),  # a bool is no integer
        lambda: reader.string(m, "n", "thing"),
        lambda: reader.string_list(m, "empty", "thing"),
        lambda: reader.string(m, "missing", "thing", required=True),
        lambda: reader.mapping(m["list"], m.where("list"), "thing"),
    ):
        with pytest.raises(Invalid):
            read()
    reader.check_keys(m, {"a", "n", "flag", "list", "empty"}, "thing")
    assert [str(p) for p in reader.problems] == [
        "p.yaml:3:7: thing: 'flag' must be an integer",
        "p.yaml:2:4: thing: 'n' must be a non-empty string",
        "p.yaml:5:8: thing: 'empty' must be a string or a non-empty list of strings",
        "p.yaml:1:1: thing needs 'missing'",
        "p.yaml:4:7: thing must be a mapping",
        "p.yaml:6:1: unknown key 'odd' in thing (allowed: a, empty, flag, list, n)",
    ]


def test_a_list_section_keeps_the_valid_items_and_reports_the_others(tmp_path):
    reader = _reader(tmp_path)
    root = _map("items: [1, two, 3]\nnot_a_list: x\n")

    def parse(spec: object, where: yamlpos.Position) -> int:
        if not isinstance(spec, int):
            raise reader.fail(where, "not a number")
        return spec

    assert reader.items(root, "items", parse) == [1, 3]
    assert reader.items(root, "absent", parse) == []
    assert reader.items(root, "not_a_list", parse) == []
    assert [p.message for p in reader.problems] == ["not a number", "not_a_list must be a list"]


def test_secrets_inline_from_the_environment_or_a_file(tmp_path):
    (tmp_path / "hash.txt").write_text("  from-file\n")
    reader = _reader(tmp_path, {"HASH": " from-env \n"})
    assert reader.secret(_map("h: inline\n"), "h", "it") == ("inline", "inline")
    assert reader.secret(_map("h_env: HASH\n"), "h", "it") == ("from-env", "$HASH")
    assert reader.secret(_map("h_file: hash.txt\n"), "h", "it") == (
        "from-file",
        str(tmp_path / "hash.txt"),
    )
    assert reader.secret(_map("other: 1\n"), "h", "it", required=False) == ("", "")
    assert reader.problems == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("h: a\nh_env: B\n", "p.yaml:2:1: it: give only one of h, h_env"),
        ("other: 1\n", "p.yaml:1:1: it needs 'h', 'h_env' or 'h_file'"),
        ("h_env: UNSET\n", "p.yaml:1:8: it: environment variable UNSET is not set"),
        ("h_env: EMPTY\n", "p.yaml:1:8: it: the secret from $EMPTY is empty"),
        ("h_file: absent.txt\n", "p.yaml:1:9: it: cannot read {dir}/absent.txt: No such file"),
        ("h_file: big.txt\n", "p.yaml:1:9: it: cannot use {dir}/big.txt: larger than 64 KiB"),
    ],
)
def test_secret_problems(tmp_path, text, message):
    (tmp_path / "big.txt").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    reader = _reader(tmp_path, {"EMPTY": "  "})
    with pytest.raises(Invalid):
        reader.secret(_map(text), "h", "it")
    [problem] = reader.problems
    assert str(problem).startswith(message.format(dir=tmp_path))


def test_absent_secrets_become_notes_with_well_formed_stand_ins(tmp_path):
    notes: list[Problem] = []
    reader = _reader(tmp_path, notes=notes)
    hashed, source = reader.secret(_map("password_hash_env: UNSET\n"), "password_hash", "it")
    assert (hashed, source) == ("$2b$04$" + "." * 53, "$UNSET")
    password, _ = reader.secret(_map("password_file: none.txt\n"), "password", "it")
    assert len(password) == 64
    assert reader.problems == []
    assert [n.message.split(":")[1].strip() for n in notes] == [
        "environment variable UNSET is not set",
        f"cannot read {tmp_path}/none.txt",
    ]


def test_relative_paths_are_the_policys_directory(tmp_path):
    reader = _reader(tmp_path)
    assert reader.resolve("keys/a.pem") == tmp_path / "keys" / "a.pem"
    assert reader.resolve("/etc/a.pem") == Path("/etc/a.pem")
    assert reader.resolve("~/a.pem") == Path.home() / "a.pem"


def test_bounded_reads(tmp_path):
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert read_regular_file(small, 10) == b"abc"
    assert read_regular_file(small, 2) == b"abc"  # limit + 1: the caller sees it is too large
    assert read_small(small, 3) == b"abc"
    with pytest.raises(ValueError, match="larger than"):
        read_small(small, 2)
    with pytest.raises(ValueError, match="not a regular file"):
        read_regular_file(tmp_path, 10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # no writer: must not block
        read_small(fifo, 10)
    with pytest.raises(OSError):
        read_small(tmp_path / "absent", 10)
