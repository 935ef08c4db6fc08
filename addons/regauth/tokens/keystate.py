"""The signing keys' lifecycle: which key signs, which are only published, and since when.

States (README "Keys and certificates"): `pending` (published: trusted, in `regauth certs bundle`
and the JWKS, but not signing yet), `signing` (the one key tokens are signed with), and
`trusted-only` (published, not signing: it signed before, or it has no private key here). A key
is published before it signs because a registry reads its rootcertbundle at start only.

The state is one small JSON file beside the certificates, `signing-keys.json`, rewritten whole
and atomically (temporary file, fsync, rename; writers hold a lock), so every replica sharing the
directory reads the old or the new file, never a mix:

    {"version": 1, "keys": {"token-signing": {"activated": "2026-01-02T00:00:00.000000Z"},
                            "token-signing-20260301T000000Z": {}}}

A key's `activated` is the time it starts signing (in the future for a scheduled activation;
absent if it was never activated). At any moment the key with the latest activation time that
is not in the future signs, and a key stopped signing when the next activation after its own
passed. A scheduled activation therefore needs no writer at that moment (every replica derives
the same signer from the file and its clock), and `retire` knows when each key last signed.

Without the file (a certs directory made before it existed) every key with a private key counts
as activated at its creation: the old rule, "the newest key with a private key signs". The first
change (`rotate`, `activate`, `retire`, or a `token.signing_key` pin) writes that implied state
into the file, then changes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from regauth.ops import pki
from regauth.ops.pki import SigningKey
from regauth.policy.model import TokenSettings

logger = logging.getLogger(__name__)

STATE_FILE = "signing-keys.json"
_LOCK_FILE = ".signing-keys.lock"
VERSION = 1
# After a key's last token could have expired, this much longer before it may be retired:
# distribution's 60 s leeway on `exp`, and time for every replica to notice the switch.
RETIRE_MARGIN = 120.0
_TICK = 1e-6  # activations are strictly ordered; the file keeps microseconds

KeyState = Literal["pending", "signing", "trusted-only"]
Activations = dict[str, float | None]  # key name → epoch seconds it signs from, or None


class RetireRefused(ValueError):
    """Retiring the key now would invalidate tokens that may still be in use (or it signs)."""


@dataclass(frozen=True)
class KeyStatus:
    """Where one signing key stands in its lifecycle (pending, signing, trusted-only)."""

    key: SigningKey
    state: KeyState
    activated: float | None  # epoch seconds it signs from (in the future: scheduled)
    signed_until: float | None  # when it stopped signing; None: it never signed, or signs now

    @property
    def name(self) -> str:
        return self.key.name

    def valid_until(self, settings: TokenSettings) -> float | None:
        """Epoch seconds until which tokens this key signed may still be accepted, or None if
        it never signed. Refresh tokens (`refresh_lifetime`) outlive access tokens."""
        if self.signed_until is None:
            return None
        return self.signed_until + max(settings.lifetime, settings.refresh_lifetime) + RETIRE_MARGIN


@dataclass(frozen=True)
class Lifecycle:
    """Every key's state at one moment; `next_change` is the next scheduled activation."""

    statuses: tuple[KeyStatus, ...]
    signer: SigningKey
    next_change: float | None
    managed: bool  # the state file exists (False: the implied, pre-state-file rule)

    def status(self, name: str) -> KeyStatus | None:
        return next((s for s in self.statuses if s.name == name), None)


def format_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: object, where: str) -> float:
    if not isinstance(value, str):
        raise ValueError(f"{where}: `activated` must be an RFC 3339 time string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: `activated` {value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{where}: `activated` needs a time zone (end it with Z)")
    return parsed.timestamp()


def read_activations(certs_dir: Path) -> Activations | None:
    """The state file's activations, or None when there is no state file. Raises ValueError
    (naming the file) for anything but the documented format."""
    path = certs_dir / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: not JSON ({e.msg})") from None
    if (
        not isinstance(data, dict)
        or set(data) != {"version", "keys"}
        or data["version"] != VERSION
        or not isinstance(data["keys"], dict)
    ):
        raise ValueError(f'{path}: expected {{"version": {VERSION}, "keys": {{...}}}}')
    out: Activations = {}
    for name, entry in data["keys"].items():
        where = f"{path}: key {str(name)[:80]!r}"
        if not isinstance(entry, dict) or set(entry) - {"activated"}:
            raise ValueError(f'{where}: an entry is {{}} or {{"activated": TIME}}')
        out[name] = _parse_time(entry["activated"], where) if "activated" in entry else None
    return out


def write_activations(certs_dir: Path, activations: Activations) -> None:
    """Replace the state file atomically (readers see the old or the new file, whole)."""
    data = {
        "version": VERSION,
        "keys": {
            name: {} if at is None else {"activated": format_time(at)}
            for name, at in sorted(activations.items())
        },
    }
    tmp = certs_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, certs_dir / STATE_FILE)
    directory = os.open(certs_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


@contextlib.contextmanager
def _locked(certs_dir: Path) -> Iterator[None]:
    """One writer at a time (read, change, write) among processes sharing the directory."""
    fd = os.open(certs_dir / pki.PRIVATE_DIR / _LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def implied_activations(keys: list[SigningKey]) -> Activations:
    """The state of a directory without a state file: each key with a private key activated
    at its creation, so the newest of them signs (ties: the later name, as `load_signing_keys`
    orders them)."""
    return {k.name: k.created if k.private_key is not None else None for k in keys}


def derive(
    keys: list[SigningKey], activations: Activations, now: float, managed: bool = True
) -> Lifecycle:
    """Every key's state at `now` (epoch seconds). Entries naming no key are ignored. Raises
    ValueError when no key signs, or the signing key has no private key."""
    if not keys:
        raise ValueError("no token-signing keys found (run `regauth certs init`)")
    by_name = {k.name: k for k in keys}
    active = {name: at for name, at in activations.items() if name in by_name and at is not None}
    started = sorted((at, name) for name, at in active.items() if at <= now)
    if not started:
        raise ValueError("no token-signing key is active (`regauth certs activate KEY`)")
    signer = by_name[started[-1][1]]
    if signer.private_key is None:
        raise ValueError(
            f"signing key {signer.name!r} is active but its private key "
            f"{pki.PRIVATE_DIR}/{signer.name}.key is missing"
        )
    times = [at for at, _ in started]
    statuses = []
    for key in keys:
        at = active.get(key.name)
        if key is signer:
            statuses.append(KeyStatus(key, "signing", at, None))
        elif at is not None and at <= now:
            until = min((t for t in times if t > at), default=at)
            statuses.append(KeyStatus(key, "trusted-only", at, until))
        elif key.private_key is not None:
            statuses.append(KeyStatus(key, "pending", at, None))
        else:
            statuses.append(KeyStatus(key, "trusted-only", None, None))
    upcoming = [at for at in active.values() if at > now]
    return Lifecycle(tuple(statuses), signer, min(upcoming, default=None), managed)


def lifecycle(certs_dir: Path, now: float) -> Lifecycle:
    """The keys of `certs_dir` and their states at `now`, without changing anything."""
    keys = pki.load_signing_keys(certs_dir)
    activations = read_activations(certs_dir)
    managed = activations is not None
    return derive(
        keys, implied_activations(keys) if activations is None else activations, now, managed
    )


def _current(certs_dir: Path, keys: list[SigningKey]) -> Activations:
    activations = read_activations(certs_dir)
    return implied_activations(keys) if activations is None else activations


def _next_activation(activations: Activations, now: float) -> float:
    """`now`, or just after the latest activation already in force (strictly ordered)."""
    started = [at for at in activations.values() if at is not None and at <= now]
    return max([now, *(at + _TICK for at in started)])


def resolve(certs_dir: Path, keys: list[SigningKey], pinned: str | None, now: float) -> Lifecycle:
    """The lifecycle regauth signs with. A `token.signing_key` pin is an activation: when it
    names another key than the state file, the switch is recorded (so `retire` knows when the
    displaced key stopped signing); a directory regauth cannot write still honours the pin."""
    life = derive(keys, _current(certs_dir, keys), now, (certs_dir / STATE_FILE).exists())
    if pinned is None or life.signer.name == pinned:
        return life
    key = next((k for k in keys if k.name == pinned), None)
    if key is None or key.private_key is None:
        raise ValueError(
            f"token.signing_key: signing key {pinned!r} not found or has no "
            f"private key in {certs_dir}"
        )
    try:
        with _locked(certs_dir):
            activations = _current(certs_dir, keys)
            activations[pinned] = _next_activation(activations, now)
            write_activations(certs_dir, activations)
        logger.info(
            "regauth: token.signing_key %s recorded as activated in %s",
            pinned,
            certs_dir / STATE_FILE,
        )
        return derive(keys, activations, now, True)
    except OSError as e:
        logger.warning(
            "regauth: cannot record the token.signing_key pin in %s (%s); "
            "`regauth certs retire` will not know when %s stopped signing",
            certs_dir / STATE_FILE,
            e,
            life.signer.name,
        )
        activations = _current(certs_dir, keys)
        activations[pinned] = _next_activation(activations, now)
        return derive(keys, activations, now, life.managed)


def stage(
    certs_dir: Path, algorithm: str, activate_at: float | None, now: float
) -> tuple[str, list[Path]]:
    """Create a key that is published but not signing (until `activate_at`, epoch seconds, if
    given). The state file names it before its files exist, so no reader ever takes the new
    key for "the newest key, which signs". Returns its name and the files written."""
    with _locked(certs_dir):
        keys = pki.load_signing_keys(certs_dir)
        activations = _current(certs_dir, keys)
        derive(keys, activations, now)  # refuse to build on a broken state
        name = pki.new_signing_name(certs_dir)
        activations[name] = (
            None if activate_at is None else _next_activation(activations, max(activate_at, now))
        )
        write_activations(certs_dir, activations)
        return name, pki.write_signing_pair(certs_dir, name, algorithm)


def activate(
    certs_dir: Path, name: str, now: float, settings: TokenSettings | None = None
) -> Lifecycle:
    """Make `name` sign from `now`. Raises ValueError for an unknown key, one without a private
    key, a key of another algorithm than the policy's, or a policy that pins another key."""
    with _locked(certs_dir):
        keys = pki.load_signing_keys(certs_dir)
        key = next((k for k in keys if k.name == name), None)
        if key is None:
            raise ValueError(f"no signing key {name!r} in {certs_dir} (`regauth certs list`)")
        if key.private_key is None:
            raise ValueError(
                f"{name} has no private key here ({pki.PRIVATE_DIR}/{name}.key): it can only verify"
            )
        if settings is not None and settings.signing_key not in (None, name):
            raise ValueError(
                f"the policy pins token.signing_key: {settings.signing_key}; "
                f"remove the pin (or set it to {name}) first"
            )
        if settings is not None and key.algorithm != settings.algorithm:
            raise ValueError(
                f"{name} is an {key.algorithm} key but the policy asks for "
                f"{settings.algorithm} tokens (token.algorithm)"
            )
        activations = _current(certs_dir, keys)
        if derive(keys, activations, now).signer.name != name:
            activations[name] = _next_activation(activations, now)
        write_activations(certs_dir, activations)
        return derive(keys, activations, now)


def retire(
    certs_dir: Path, name: str, settings: TokenSettings, now: float, force: bool = False
) -> list[Path]:
    """Remove a key that no longer signs, once no token it signed can still be accepted (or at
    once with `force`: its tokens stop working). Raises RetireRefused or ValueError; returns
    the files removed."""
    with _locked(certs_dir):
        keys = pki.load_signing_keys(certs_dir)
        activations = _current(certs_dir, keys)
        status = derive(keys, activations, now).status(name)
        if status is None:
            raise ValueError(f"no signing key {name!r} in {certs_dir} (`regauth certs list`)")
        if status.state == "signing":
            raise RetireRefused(f"{name} signs tokens now: activate another key first")
        until = status.valid_until(settings)
        if until is not None and now < until and not force:
            assert status.signed_until is not None
            raise RetireRefused(
                f"tokens signed by {name} may be valid until {format_time(until)}: it stopped "
                f"signing at {format_time(status.signed_until)}, and tokens live up to "
                f"{max(settings.lifetime, settings.refresh_lifetime)} s (token.lifetime "
                f"{settings.lifetime} s, token.refresh_lifetime {settings.refresh_lifetime} s) "
                f"+ {RETIRE_MARGIN:.0f} s. Retire it after that, or with --force to make "
                "those tokens invalid now"
            )
        activations.pop(name, None)
        write_activations(certs_dir, activations)
        return pki.remove_signing_key(certs_dir, name)
