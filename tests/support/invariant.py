"""The invariant of issue 14: the registry sees only what regauth decided to forward.

Every request line in the registry's access log corresponds to exactly one forward decision in
regauth's exchange log (method, path, query), and nothing else reaches the registry.

Both sides are read from the real processes' own logs:

- the registry's access log: distribution wraps its whole handler in gorilla/handlers'
  `CombinedLoggingHandler`, which writes one line per request its handler served (after the
  handler returns): `HOST - USER [TIME] "METHOD URI PROTO" STATUS SIZE "REFERER" "AGENT"`,
  with URI, referer and agent escaped by `appendQuoted` (`\\"`, `\\\\`, `\\xNN`, `\\n`, ...).
  Requests Go's net/http refuses before any handler (malformed request lines, bad header
  syntax) are not in it: they never reached the registry's API.
- regauth's exchange log: one record per flow; a forward is a record with
  `answered_by == "upstream"` (a Forward decision carried out). Its `path` is the target with
  the query decoded, secret keys dropped and capability ids redacted (`mitm/records.py`,
  `Runtime.redact`), so the registry's URI goes through the same transformation before
  comparing: the comparison is exact on method, path and the ordered decoded query.

What is not a proxied decision is accounted for exactly, never by pattern:
- everything logged before the watch started (the readiness probe of `RegistryProcess.start`,
  a previous proxy's traffic): a baseline;
- requests a test sends straight to the registry (`RegistryWatch.direct`, and the barrier):
  each carries a unique User-Agent the watch remembers;
- regauth's own requests to the upstream in inject-bearer mode (`upstream_auth._discover`:
  `GET /v2/` to read the upstream's challenge): `upstream_probes=N` allows at most N of them.
  They are told from a client's forwarded `GET /v2/` by their User-Agent
  (`regauth-upstream-auth`, `upstream_auth.USER_AGENT`), see `UPSTREAM_PROBE_AGENT`.

Use, for a suite sharing one registry (tests/integration/test_security.py does this):

    watch = RegistryWatch(registry, redact=capability_redactor(policy))  # right after start
    proxy = start_proxy(...)
    watch.add_exchange_log(proxy.log_path)       # every regauth in front of that registry
    watch.direct("POST", "/v2/x/blobs/uploads/")  # requests the test sends to it itself

    @pytest.fixture(autouse=True)
    def registry_saw_only_decided(stack):
        yield
        assert_registry_saw_only_decided(stack.watch)  # reports each violation once
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl

# What regauth's upstream-credential requests send today (urllib's default agent).
UPSTREAM_PROBE_AGENT = "regauth-upstream-auth"
# regauth's own `GET /v2/`s: the readiness probe (mitm/upstream_probe.py), the start-up check
# of a (re)started registry (registry_process.READY_AGENT), and in delegate mode the delegate
# check's request with a probe token for no access (upstream_probe.DELEGATE_AGENT).
OWN_PROBE_AGENTS = frozenset(
    {"regauth-readiness", "regauth-registry-start", "regauth-delegate-check"}
)
DIRECT_AGENT = "regauth-tests-direct/"
_PROBE_KEY = ("GET", "/v2/")

# mitm/records.py: query keys never written to the exchange log.
_SECRET_QUERY_KEYS = (
    "password",
    "refresh_token",
    "token",
    "access_token",
    "client_secret",
    "_state",
)

_QUOTED = r'((?:[^"\\]|\\.)*)'
_ACCESS_LINE = re.compile(
    r"(?P<host>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    rf'"(?P<method>[^ "]+) (?P<uri>(?:[^"\\ ]|\\.)*) (?P<proto>HTTP/\d\.\d)" '
    rf'(?P<status>\d{{3}}) (?P<size>\d+) "{_QUOTED}" "{_QUOTED}"'
)
_ACCESS_START = re.compile(r'\S+ - \S+ \[[^\]]+\] "')
_ESCAPES = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    '"': b'"',
    "\\": b"\\",
}


def unquote_gorilla(text: str) -> str:
    """Undo gorilla/handlers' appendQuoted (bytes that are not UTF-8 come back as
    surrogate escapes, as mitmproxy decodes them)."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        kind = text[i + 1]
        if kind in _ESCAPES:
            out += _ESCAPES[kind]
            i += 2
        elif kind == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif kind in "uU":
            width = 4 if kind == "u" else 8
            out += chr(int(text[i + 2 : i + 2 + width], 16)).encode("utf-8")
            i += 2 + width
        else:
            raise ValueError(f"unknown escape \\{kind} in access log field {text!r}")
    return out.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class AccessEntry:
    """One request the registry's handler served, from its access log."""

    method: str
    uri: str
    proto: str
    status: int
    user_agent: str
    line: str = field(repr=False, compare=False)

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.uri} {self.proto}"


def parse_access_log(text: str) -> list[AccessEntry]:
    """Access-log entries in order. Lines of the registry's own logger (`time=...`) and
    anything else are skipped, but a line that starts like an access entry and does not parse
    is an error (the parser, not the registry, would be wrong)."""
    entries = []
    for line in text.splitlines():
        if line.startswith("time="):
            continue
        match = _ACCESS_LINE.fullmatch(line)
        if match is None:
            if _ACCESS_START.match(line):
                raise ValueError(f"unparsed access log line: {line!r}")
            continue
        entries.append(
            AccessEntry(
                match["method"],
                unquote_gorilla(match["uri"]),
                match["proto"],
                int(match["status"]),
                unquote_gorilla(match.group(10)),
                line,
            )
        )
    return entries


def logged_path(target: str, redact: Callable[[str], str] | None = None) -> str:
    """A request target as regauth's exchange log writes it (`mitm/records._logged_path`
    followed by `Runtime.redact`): query decoded like mitmproxy's `Request.query`, pairs kept
    in order, secret keys dropped, capability ids redacted."""
    base, sep, query = target.partition("?")
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
        kept = [f"{k}={v}" for k, v in pairs if k.lower() not in _SECRET_QUERY_KEYS]
        base += "?" + "&".join(kept) if kept else ""
    if redact is not None:
        # The exchange log redacts the JSON text; paths are ASCII where redaction applies.
        base = redact(base)
    return base


class Registry(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def log_path(self) -> Path: ...


@dataclass(frozen=True)
class LogOnly:
    """A registry known only by its URL and log file (one started by `regauth serve`)."""

    url: str
    log_path: Path


def read_records(path: Path) -> list[dict]:
    """Exchange records written so far (a line still being written is left for later)."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line]


def capability_redactor(
    policy_path: Path, env: dict[str, str] | None = None
) -> Callable[[str], str] | None:
    """The exchange log's capability-id redaction for a policy file (`Runtime.redact`);
    `env`: variables the policy's secrets are read from while it loads."""
    from regauth.policy.load import load_policy
    from regauth.runtime import _hide  # the same hash, so the comparison stays exact

    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        pattern = load_policy(policy_path).capability_redactor()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if pattern is None:
        return None
    return lambda text: pattern.sub(_hide, text)


@dataclass
class Violation:
    """Request lines the registry served that no forward accounts for (`undecided`, per
    (method, logged path) key with the lines as logged) and completed forwards the registry
    never logged (`unseen`, per key with their count)."""

    undecided: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    unseen: dict[tuple[str, str], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.undecided or self.unseen)

    def minus(self, earlier: Violation) -> Violation:
        """What is new since `earlier` (more undecided lines or unseen forwards for a key)."""
        undecided = {
            k: v[: len(v) - len(earlier.undecided.get(k, ()))]
            for k, v in self.undecided.items()
            if len(v) > len(earlier.undecided.get(k, ()))
        }
        unseen = {
            k: n - earlier.unseen.get(k, 0)
            for k, n in self.unseen.items()
            if n > earlier.unseen.get(k, 0)
        }
        return Violation(undecided, unseen)

    def __str__(self) -> str:
        parts = []
        if self.undecided:
            lines = [line for v in self.undecided.values() for line in v]
            parts.append(
                "the registry served requests regauth never decided to forward:\n  "
                + "\n  ".join(lines)
            )
        if self.unseen:
            lines = [f"{n} x {k[0]} {k[1]}" for k, n in self.unseen.items()]
            parts.append(
                "regauth forwarded requests the registry's access log does not "
                "show (it refused them before any handler, or never got them):\n  "
                + "\n  ".join(lines)
            )
        return "\n".join(parts)


class RegistryWatch:
    """The invariant for one registry and the regauth instances in front of it.

    Create it right after the registry started (everything logged before is the baseline) and
    add every regauth whose upstream it is. `check()` compares the two logs from the baseline
    on: a multiset of (method, logged path) keys from the registry must be covered by the
    forwards, each forward accounting for one request line; forwards that completed normally
    (an upstream status, no error) must each be in the access log too.
    """

    def __init__(
        self,
        registry: Registry,
        exchange_logs: Iterable[Path] = (),
        redact: Callable[[str], str] | None = None,
        upstream_probes: int = 0,
    ) -> None:
        self.registry = registry
        self.exchange_logs: list[Path] = list(exchange_logs)
        self.redact = redact
        self.upstream_probes = upstream_probes
        self._direct_agents: set[str] = set()
        self._reported = Violation()
        self.baseline = len(self.entries(since_baseline=False))

    # -- the registry side ---------------------------------------------------------------------

    def entries(self, since_baseline: bool = True) -> list[AccessEntry]:
        path = self.registry.log_path
        text = path.read_text(errors="surrogateescape") if path.exists() else ""
        # Only complete lines: the registry may be writing the last one.
        entries = parse_access_log(text[: text.rfind("\n") + 1])
        return entries[self.baseline :] if since_baseline else entries

    def direct(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """A request a test sends straight to the registry (never through regauth), excluded
        from the invariant by its unique User-Agent. Returns status, headers, body."""
        agent = DIRECT_AGENT + secrets.token_hex(8)
        self._direct_agents.add(agent)
        request = urllib.request.Request(
            self.registry.url + target,
            data=body,
            method=method,
            headers={**(headers or {}), "User-Agent": agent},
        )
        context = (
            ssl._create_unverified_context() if self.registry.url.startswith("https:") else None
        )  # loopback test registry with a throwaway certificate
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def barrier(self, timeout: float = 10.0) -> None:
        """Wait until a direct request sent now is in the access log (requests served before it
        on other connections have then been logged too, up to their handlers' end)."""
        agent_before = set(self._direct_agents)
        self.direct("GET", "/v2/")
        (agent,) = self._direct_agents - agent_before
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.user_agent == agent for e in self.entries()):
                return
            time.sleep(0.02)
        raise AssertionError(f"the barrier request never appeared in {self.registry.log_path}")

    # -- the regauth side ----------------------------------------------------------------------

    def add_exchange_log(self, path: Path) -> None:
        self.exchange_logs.append(path)

    def records(self) -> list[dict]:
        return [r for path in self.exchange_logs for r in read_records(path)]

    # -- the comparison ------------------------------------------------------------------------

    def violation(self) -> Violation:
        """The difference between the two logs as they are now (no waiting)."""
        served: dict[tuple[str, str], list[str]] = {}
        probes = 0
        for entry in self.entries():
            if entry.user_agent in self._direct_agents:
                continue
            key = (entry.method, logged_path(entry.uri, self.redact))
            if key == _PROBE_KEY and entry.user_agent in OWN_PROBE_AGENTS:
                continue  # regauth's own probe, not a client's request
            served.setdefault(key, []).append(
                f"{entry.request_line} -> {entry.status} (agent {entry.user_agent!r})"
            )
            if key == _PROBE_KEY and entry.user_agent.startswith(UPSTREAM_PROBE_AGENT):
                probes += 1
        forwarded: Counter[tuple[str, str]] = Counter()
        completed: Counter[tuple[str, str]] = Counter()
        for record in self.records():
            if record.get("answered_by") != "upstream":
                continue
            key = (record["method"], record["path"])
            forwarded[key] += 1
            if record.get("status") is not None and "error" not in record:
                completed[key] += 1
        result = Violation()
        for key, lines in served.items():
            extra = len(lines) - forwarded[key]
            if key == _PROBE_KEY and extra > 0:
                # At most `upstream_probes` of the surplus may be regauth's own discovery.
                extra -= min(extra, probes, self.upstream_probes)
            if extra > 0:
                result.undecided[key] = lines[-extra:]
        for key, count in completed.items():
            missing = count - len(served.get(key, ()))
            if missing > 0:
                result.unseen[key] = missing
        return result

    def check(self, settle: float = 0.1, timeout: float = 1.0) -> Violation:
        """Wait for both logs to settle after a barrier, then compare; the result is what is
        new since the last check (a suite sharing one registry reports each violation once).

        Undecided lines never go away once written, so the check does not wait on them; a
        completed forward whose access line is late (the registry logs after writing its
        response) gets until `timeout` seconds more."""
        self.barrier()
        deadline = time.monotonic() + timeout
        previous = self._sizes()
        while True:
            time.sleep(settle)
            sizes = self._sizes()
            if sizes != previous and time.monotonic() < deadline:
                previous = sizes
                continue
            current = self.violation()
            new = current.minus(self._reported)
            if new.undecided or not new.unseen or time.monotonic() >= deadline:
                self._reported = current
                return new

    def _sizes(self) -> tuple[int, ...]:
        paths = [self.registry.log_path, *self.exchange_logs]
        return tuple(p.stat().st_size if p.exists() else 0 for p in paths)

    def assert_holds(self) -> None:
        result = self.check()
        assert not result, str(result)


def assert_registry_saw_only_decided(watch: RegistryWatch) -> None:
    """The invariant, for the end of a test (see `RegistryWatch`)."""
    watch.assert_holds()
