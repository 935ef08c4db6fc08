"""The policy reader's tools: typed reads of YAML values that record every problem at its
`file:line:column` and go on (`Problem`, `PolicyError`), secrets from `*_env` and `*_file`,
and bounded reads of the operator's files. `policy.load` builds the policy with them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.policy.yamlpos import Seq

T = TypeVar("T")
MAX_SECRET_BYTES = 64 * 1024  # a *_file secret: a hash, a password, an HS256 key

# Stand-ins for absent secrets under `secret_notes`: shaped so every other check still runs
# (a bcrypt hash nobody knows a password for; 64 bytes for HS256 secrets and passwords).
_SECRET_PLACEHOLDERS = {"password_hash": "$2b$04$" + "." * 53}


@dataclass(frozen=True)
class Problem:
    """One problem of a policy file, where it is: `str()` gives `file:line:column: message`."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyError(ValueError):
    """The policy cannot be used; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class Invalid(Exception):
    """Raised inside the loader to abandon one item after its problem was recorded."""


class Reader:
    """Reads one policy document; its subclasses in `load_rules`, `load_upstreams` and
    `load` read the sections."""

    def __init__(
        self,
        file: str,
        base_dir: Path,
        environ: dict[str, str],
        secret_notes: list[Problem] | None = None,
    ) -> None:
        self.file = file
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[Problem] = []
        # When a list is given, an absent secret (unset variable, unreadable file) is a note
        # there instead of a problem, and a placeholder stands in for it (`policy check
        # --no-secrets`: a policy repository's CI has no production secrets).
        self.secret_notes = secret_notes
        self.declared_accounts: set[str] = set()
        self.declared_issuers: set[str] = set()

    # -- reporting -------------------------------------------------------------------------
    def problem(self, position: Position | None, message: str) -> None:
        pos = position or Position(1, 1)
        self.problems.append(Problem(self.file, pos.line, pos.column, message))

    def fail(self, position: Position | None, message: str) -> Invalid:
        self.problem(position, message)
        return Invalid()

    # -- typed access ----------------------------------------------------------------------
    def mapping(self, value: object, where: Position, what: str) -> Map:
        if not isinstance(value, Map):
            raise self.fail(where, f"{what} must be a mapping")
        return value

    def check_keys(self, m: Map, allowed: set[str], what: str) -> None:
        for key in m:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.problem(
                    m.key_positions[key], f"unknown key {key!r} in {what} (allowed: {hint})"
                )

    def string(
        self, m: Map, key: str, what: str, required: bool = False, default: str | None = None
    ) -> str | None:
        if key not in m:
            if required:
                raise self.fail(m.position, f"{what} needs {key!r}")
            return default
        value = m[key]
        if not isinstance(value, str) or not value:
            raise self.fail(m.where(key), f"{what}: {key!r} must be a non-empty string")
        return str(value)

    def string_list(self, m: Map, key: str, what: str) -> list[tuple[str, Position]]:
        if key not in m:
            return []
        value = m[key]
        if isinstance(value, str):
            return [(str(value), m.where(key))]
        if not isinstance(value, Seq) or not value:
            raise self.fail(
                m.where(key), f"{what}: {key!r} must be a string or a non-empty list of strings"
            )
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(
                    value.where(i), f"{what}: every entry of {key!r} must be a non-empty string"
                )
            out.append((str(item), value.where(i)))
        return out

    def integer(self, m: Map, key: str, what: str, default: int) -> int:
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(m.where(key), f"{what}: {key!r} must be an integer")
        return value

    def secret(self, m: Map, stem: str, what: str, required: bool = True) -> tuple[str, str]:
        """(secret, source description) from `stem`, `stem_env` or `stem_file`."""
        given = [k for k in (stem, f"{stem}_env", f"{stem}_file") if k in m]
        if len(given) > 1:
            raise self.fail(
                m.key_positions[given[1]], f"{what}: give only one of {', '.join(given)}"
            )
        if not given:
            if required:
                raise self.fail(
                    m.position, f"{what} needs {stem!r}, {stem + '_env'!r} or {stem + '_file'!r}"
                )
            return "", ""
        key = given[0]
        ref = self.string(m, key, what, required=True)
        assert ref is not None
        if key == stem:
            return ref, "inline"
        if key.endswith("_env"):
            if ref not in self.environ:
                return self.absent_secret(
                    m.where(key), stem, f"${ref}", f"{what}: environment variable {ref} is not set"
                )
            value, source = self.environ[ref].strip(), f"${ref}"
        else:
            path = self.resolve(ref)
            try:
                value, source = read_small(path, MAX_SECRET_BYTES).decode().strip(), str(path)
            except OSError as e:
                return self.absent_secret(
                    m.where(key), stem, str(path), f"{what}: cannot read {path}: {e.strerror or e}"
                )
            except (ValueError, UnicodeDecodeError) as e:
                raise self.fail(m.where(key), f"{what}: cannot use {path}: {e}") from None
        if not value:
            raise self.fail(m.where(key), f"{what}: the secret from {source} is empty")
        return value, source

    def absent_secret(
        self, where: Position, stem: str, source: str, message: str
    ) -> tuple[str, str]:
        """A missing secret: a load error, or a note and a well-formed placeholder."""
        if self.secret_notes is None:
            raise self.fail(where, message)
        self.secret_notes.append(Problem(self.file, where.line, where.column, message))
        return _SECRET_PLACEHOLDERS.get(stem, "placeholder-" + "0" * 52), source

    def resolve(self, ref: str) -> Path:
        path = Path(ref).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def guard(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Invalid:
            return None

    def items(self, root: Map, key: str, parse: Callable[[object, Position], T]) -> list[T]:
        """Parse each entry of a list section, skipping (after reporting) the invalid ones."""
        if key not in root:
            return []
        section = root[key]
        if not isinstance(section, Seq):
            self.problem(root.where(key), f"{key} must be a list")
            return []
        out = []
        for i, spec in enumerate(section):
            try:
                out.append(parse(spec, section.where(i)))
            except Invalid:
                continue
        return out


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file, without blocking on FIFOs or devices.

    Raise OSError (unreadable) or ValueError (not a regular file). A result longer than
    `limit` tells the caller the file is too large.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_small(path: Path, limit: int) -> bytes:
    """A secret or key file: a regular file of at most `limit` bytes (ValueError otherwise)."""
    data = read_regular_file(path, limit)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB")
    return data
