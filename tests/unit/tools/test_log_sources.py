"""Exchange logs as one stream (`regauth.tools.log_sources`): files, directories, globs and gzip
named as the operator names them, merged in time order, each record tagged with the replica
whose log holds it, read lazily (the memory bound), with a progress bar only where asked."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from regauth.tools import log_sources
from regauth.tools.log_sources import Sources
from regauth.tools.log_sources import expand
from regauth.tools.log_sources import replica_names
from regauth.tools.log_sources import stream_name


def _record(second: int, conversation: str = "c", **extra: object) -> str:
    return (
        json.dumps(
            {
                "time": f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000+00:00",
                "conversation": conversation,
                "client": "10.0.0.1:1",
                "kind": "registry",
                "status": 200,
                **extra,
            }
        )
        + "\n"
    )


def _write(path: Path, *seconds: int, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(_record(s, f"c{s}") for s in seconds)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("exchange.jsonl", "exchange.jsonl"),
        ("exchange.jsonl.1", "exchange.jsonl"),
        ("exchange.jsonl.12.gz", "exchange.jsonl"),
        ("exchange.jsonl-20261207", "exchange.jsonl"),
        ("exchange.jsonl-2026120713.gz", "exchange.jsonl"),
        ("a.jsonl.gz", "a.jsonl"),
    ],
)
def test_rotation_suffixes_are_one_stream(name: str, stream: str) -> None:
    assert stream_name(Path("logs") / name) == Path("logs") / stream


def test_replicas_are_named_by_the_fewest_path_parts_that_tell_them_apart() -> None:
    names = replica_names(
        [
            Path("/l/r1/exchange.jsonl"),
            Path("/l/r1/exchange.jsonl.1.gz"),
            Path("/l/r2/exchange.jsonl"),
        ]
    )
    assert names == {
        Path("/l/r1/exchange.jsonl"): "r1/exchange.jsonl",
        Path("/l/r1/exchange.jsonl.1.gz"): "r1/exchange.jsonl",  # rotated: the same replica
        Path("/l/r2/exchange.jsonl"): "r2/exchange.jsonl",
    }
    assert set(replica_names([Path("/l/a.jsonl"), Path("/l/b.jsonl")]).values()) == {
        "a.jsonl",
        "b.jsonl",
    }


def test_files_directories_and_globs_each_once(tmp_path: Path) -> None:
    one = _write(tmp_path / "r1" / "exchange.jsonl", 1)
    rotated = _write(tmp_path / "r1" / "exchange.jsonl.1.gz", 0, gz=True)
    two = _write(tmp_path / "r2" / "exchange.jsonl", 2)
    (tmp_path / "r2" / "notes.txt").write_text("not a log")
    assert expand([str(tmp_path / "r1")]) == [one, rotated]
    assert expand([str(tmp_path / "*" / "exchange.jsonl*")]) == [one, rotated, two]
    # Named twice (a file, then a glob and a directory that hold it): read once.
    assert expand([str(one), str(tmp_path / "r*/exchange.jsonl"), str(tmp_path / "r2")]) == [
        one,
        two,
    ]


def test_names_that_match_nothing_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand([str(tmp_path / "*.jsonl")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.jsonl\\* file"):
        expand([str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError):
        Sources([str(tmp_path / "missing.jsonl")])


def test_records_of_every_file_merge_in_time_order_tagged_with_their_replica(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "a" / "exchange.jsonl.1.gz", 0, 4, gz=True)  # gzip, told by its bytes
    _write(tmp_path / "a" / "exchange.jsonl", 6, 9)
    _write(tmp_path / "b" / "exchange.jsonl", 1, 5, 7)
    with (tmp_path / "b" / "exchange.jsonl").open("a") as f:
        f.write("not json\n[1, 2]\n")
    sources = Sources([str(tmp_path / "a"), str(tmp_path / "b" / "exchange.jsonl")])
    entries = list(sources.entries())
    assert [e.conversation for e in entries] == ["c0", "c1", "c4", "c5", "c6", "c7", "c9"]
    assert [e.replica for e in entries] == ["a/exchange.jsonl", "b/exchange.jsonl"] * 3 + [
        "a/exchange.jsonl"
    ]
    assert entries[0].location.endswith("exchange.jsonl.1.gz:1")
    assert sources.skipped == 2
    assert sources.replicas == ["a/exchange.jsonl", "b/exchange.jsonl"]
    assert sources.position() == sources.size


def test_files_are_read_lazily(tmp_path: Path) -> None:
    """Memory: the merge holds one record per file, not the files."""
    log = tmp_path / "exchange.jsonl"
    with log.open("w") as f:
        for second in range(20000):
            f.write(_record(second % 3600, f"c{second}"))
    sources = Sources([str(log)])
    entries = sources.entries()
    first = next(entries)
    assert first.line == 1
    assert 0 < sources.position() < sources.size / 4


def test_the_progress_bar_is_drawn_only_when_asked(tmp_path: Path, monkeypatch, capsys) -> None:
    log = _write(tmp_path / "exchange.jsonl", 1, 2, 3)
    with log_sources.progress(Sources([str(log)])) as entries:  # stderr is no terminal here
        assert len(list(entries)) == 3
    assert capsys.readouterr().err == ""
    stderr = io.StringIO()
    monkeypatch.setattr(log_sources.sys, "stderr", stderr)
    with log_sources.progress(Sources([str(log)]), enabled=True) as entries:
        assert len(list(entries)) == 3
    assert "reading" in stderr.getvalue()
