"""The client-certificate deny list: serials and builds whose certificates are refused.

File format (JSON, written by `regauth certs revoke`, read at every policy reload):

    {"version": 1, "serials": ["3f9a…", …], "builds": ["ID", …]}

Serials are lower-case hex without leading zeros (as `ClientCertificate.serial`); revoking a
build refuses every certificate for it, past and future, until the entry is removed. Expired
certificates need no entry. Bounded: at most `MAX_BYTES` of JSON and `MAX_ENTRIES` entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 100_000
_SERIAL_RE = re.compile(r"[0-9a-f]{1,40}")


@dataclass(frozen=True)
class Revocations:
    serials: frozenset[str] = frozenset()
    builds: frozenset[str] = frozenset()

    def why_revoked(self, serial: str, kind: str, name: str) -> str:
        """The refusal reason, or "" when the certificate is not revoked."""
        if serial in self.serials:
            return f"client certificate {serial} is revoked"
        if kind == "build" and name in self.builds:
            return f"client certificates of build {name} are revoked"
        return ""

    def to_json(self) -> str:
        return (
            json.dumps(
                {"version": 1, "serials": sorted(self.serials), "builds": sorted(self.builds)},
                indent=1,
            )
            + "\n"
        )


def normalize_serial(text: str) -> str:
    """A serial as the user may type it (`0x3F:9A`, `3f9a`) in the list's form; ValueError."""
    value = text.strip().lower().removeprefix("0x").replace(":", "")
    if _SERIAL_RE.fullmatch(value) is None and not (value and set(value) == {"0"}):
        raise ValueError(f"serial {text[:60]!r} is not a hexadecimal certificate serial")
    value = value.lstrip("0") or "0"
    if _SERIAL_RE.fullmatch(value) is None:
        raise ValueError(f"serial {text[:60]!r} is not a hexadecimal certificate serial")
    return value


def parse_revocations(data: bytes, source: str = "revoked.json") -> Revocations:
    """Parse the deny list; raise ValueError naming `source` and what is wrong."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"{source}: larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{source}: not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ValueError(f'{source}: expected an object with "version": 1')
    unknown = set(doc) - {"version", "serials", "builds"}
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}")
    serials = doc.get("serials", [])
    builds = doc.get("builds", [])
    if not isinstance(serials, list) or not isinstance(builds, list):
        raise ValueError(f"{source}: serials and builds must be lists")
    if len(serials) + len(builds) > MAX_ENTRIES:
        raise ValueError(f"{source}: more than {MAX_ENTRIES} entries")
    if not all(isinstance(s, str) for s in serials + builds):
        raise ValueError(f"{source}: entries must be strings")
    try:
        normalized = frozenset(normalize_serial(s) for s in serials)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return Revocations(normalized, frozenset(builds))
