"""Exchange logs as one stream: many files, globs, directories and gzip, merged in time order.

Each replica writes its own log and rotation turns each into many files (`exchange.jsonl`,
`exchange.jsonl.1`, `exchange.jsonl.2.gz`, `exchange.jsonl-20261207`). The tools take any mix
of:

- a file (plain or gzip, told apart by its magic bytes, not its name);
- a directory: every file under it whose name contains `.jsonl` (recursively);
- a glob (`logs/*/exchange.jsonl*`, `**` allowed), when no file has that exact name.

A file named twice is read once. `Sources.entries()` reads every file line by line (a file is
never held in memory) and merges them with `heapq.merge` on `(time, file, line)`: memory is one
record per file, whatever the logs' size. Each file is sorted by the time a request arrived up
to requests that were long in flight (a record is written when its flow ends); the merge keeps
such a record where its file has it, and the readers (`log_records.ConversationStream`) sort
each conversation's records again before use.

The replica a record came from: the exchange record has no host field, and two replicas on one
host share their host name, so the replica is named by its log file, the one thing every replica
has of its own (`regauth serve --log`): the file's path without rotation suffixes (`.gz`, `.N`,
`-YYYYMMDD[HH]`), shortened to the fewest trailing path parts that still tell the replicas
apart (`a.jsonl` and `b.jsonl`; `r1/exchange.jsonl` and `r2/exchange.jsonl`). A rotated file
and the file it was rotated from are one replica.

Progress: `Sources.position()` is the bytes read so far (compressed bytes for gzip) out of
`Sources.size` (the files' sizes when opened), for a progress bar (`progress`).
"""

from __future__ import annotations

import datetime as dt
import errno
import glob
import gzip
import heapq
import io
import os
import re
import sys
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn
from rich.progress import DownloadColumn
from rich.progress import Progress
from rich.progress import TextColumn
from rich.progress import TimeRemainingColumn

from regauth.tools.log_records import Entry
from regauth.tools.log_records import parse_entry

GZIP_MAGIC = b"\x1f\x8b"
_GLOB_CHARS = re.compile(r"[*?\[]")
# Suffixes rotation adds, innermost last: `.gz`, `.N` (logrotate, regauth), `-YYYYMMDD[HH]`
# and `.YYYYMMDD[HH]` (logrotate dateext).
_ROTATION_SUFFIX = re.compile(r"(\.gz|\.\d{1,6}|[-.]\d{8}(\d{2})?)$")
_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)


def stream_name(path: Path) -> Path:
    """`path` without the suffixes rotation adds: `logs/exchange.jsonl.2.gz` →
    `logs/exchange.jsonl`."""
    name = path.name
    while True:
        shorter = _ROTATION_SUFFIX.sub("", name)
        if shorter == name or not shorter:
            return path.with_name(name)
        name = shorter


def replica_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Each path → the name of the replica that wrote it (the module docstring): its stream
    name, with as few trailing path parts as keep different streams apart."""
    streams = {p: stream_name(p.absolute()) for p in paths}
    distinct = sorted(set(streams.values()))
    parts = 1
    while True:
        labels = {s: "/".join(s.parts[-parts:]) for s in distinct}
        if len(set(labels.values())) == len(distinct) or parts >= max(
            (len(s.parts) for s in distinct), default=1
        ):
            return {p: labels[s] for p, s in streams.items()}
        parts += 1


def expand(arguments: Sequence[str]) -> list[Path]:
    """The files `arguments` name (files, directories, globs), each once, in the order given
    (a directory's and a glob's files sorted by name). Raise FileNotFoundError for a name that
    is neither a file, a directory nor a glob matching a file, and for a directory holding no
    `*.jsonl*` file."""
    found: dict[Path, None] = {}
    seen: set[Path] = set()
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.jsonl*") if p.is_file())
            if not files:
                raise FileNotFoundError(
                    errno.ENOENT, "no *.jsonl* file in this directory", argument
                )
        elif path.exists() or not _GLOB_CHARS.search(argument):
            files = [path]  # a missing file raises when it is opened, with its own error
        else:
            matches = glob.glob(argument, recursive=True)
            files = sorted(Path(p) for p in matches if Path(p).is_file())
            if not files:
                raise FileNotFoundError(errno.ENOENT, "no file matches this pattern", argument)
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found[file] = None
    return list(found)


def open_log(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(lines, raw): a binary stream of the log's lines, decompressed when the file is gzip,
    and the file underneath (its position is the bytes read). Raise OSError."""
    raw = path.open("rb")
    try:
        if raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
        raw.seek(0)
    except OSError:
        raw.close()
        raise
    return raw, raw


@dataclass
class LogFile:
    """One file of the input: where it is, which replica wrote it, what was read of it."""

    path: Path
    index: int  # its position among the inputs: breaks ties between files at equal times
    replica: str
    size: int = 0  # bytes on disk when opened
    skipped: int = 0  # lines that were not exchange records
    records: int = 0
    _raw: BinaryIO | None = field(default=None, repr=False)

    def position(self) -> int:
        raw = self._raw
        if raw is None or raw.closed:
            return self.size if self.records or self.skipped else 0
        return raw.tell()

    def entries(self) -> Iterator[Entry]:
        """The file's records in file order, read line by line; raise OSError."""
        lines, raw = open_log(self.path)
        self._raw = raw
        self.size = os.fstat(raw.fileno()).st_size
        with lines, raw:
            for number, text in enumerate(io.TextIOWrapper(lines, "utf-8", "replace"), 1):
                if not text.strip():
                    continue
                entry = parse_entry(text, number, str(self.path), self.replica, self.index)
                if entry is None:
                    self.skipped += 1
                    continue
                self.records += 1
                yield entry


class Sources:
    """The files of `arguments` (`expand`), read as one time-ordered stream of entries."""

    def __init__(self, arguments: Sequence[str]) -> None:
        paths = expand(arguments)
        names = replica_names(paths)
        self.files = [LogFile(p, i, names[p]) for i, p in enumerate(paths)]
        for f in self.files:
            f.size = f.path.stat().st_size  # raises OSError (missing, unreadable) up front

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.files)

    @property
    def replicas(self) -> list[str]:
        return list(dict.fromkeys(f.replica for f in self.files))

    def position(self) -> int:
        return sum(f.position() for f in self.files)

    def entries(self) -> Iterator[Entry]:
        """Every record of every file, merged in time order (records without a time sort
        first); each file is read lazily, one line at a time."""
        if len(self.files) == 1:
            return self.files[0].entries()  # nothing to merge
        return heapq.merge(
            *(f.entries() for f in self.files),
            key=lambda e: (e.time or _EPOCH, e.file, e.line),
        )

    def describe(self) -> str:
        """The inputs, for messages: one path, or `N files`."""
        return str(self.files[0].path) if len(self.files) == 1 else f"{len(self.files)} files"


@contextmanager
def progress(sources: Sources, enabled: bool | None = None) -> Iterator[Iterator[Entry]]:
    """`sources.entries()`, with a progress bar on stderr while they are read when stderr is a
    terminal (`enabled` None) or `enabled`. The bar is transient: nothing of it stays on the
    terminal, and stdout is untouched."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield sources.entries()
        return
    console = Console(file=sys.stderr, force_terminal=True)
    with Progress(
        TextColumn("reading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(sources.describe(), total=sources.size or None)

        def counted() -> Iterator[Entry]:
            for n, entry in enumerate(sources.entries()):
                if n % 2048 == 0:
                    bar.update(task, completed=sources.position())
                yield entry
            bar.update(task, completed=sources.size)

        yield counted()
