"""`regauth certs list|rotate|activate|retire`: the signing keys' lifecycle
(`regauth.tokens.keystate`).

These commands only read and write the certs directory; a running `regauth serve` sees the
change at its next check (about a second), restarts its embedded registry when the trusted keys
changed, and switches the signing key once the registry trusts it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from regauth.ops.safe_text import escape
from regauth.policy.model import TokenSettings
from regauth.tokens import keystate
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import rfc7638_thumbprint
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_INPUT
from regauth.tools import EXIT_OK
from regauth.tools.loading import PolicyError
from regauth.tools.loading import load_for_decisions
from regauth.tools.render import Printer
from regauth.tools.render import print_json


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_token_settings(policy: Path, quiet: bool) -> TokenSettings | None:
    """The policy's `token:` settings (lifetimes, algorithm, pin), or None after printing why
    not: every problem, or with `quiet` one line saying the policy is not used."""
    try:
        return load_for_decisions(policy).token
    except (PolicyError, OSError) as e:
        problems = [str(p) for p in getattr(e, "problems", [])] or [str(e)]
        if quiet:
            print(escape(f"regauth certs: {policy} not used ({problems[0]})"), file=sys.stderr)
        for problem in [] if quiet else problems:
            print(escape(problem), file=sys.stderr)  # problems quote the policy file
        return None


def _describe(status: keystate.KeyStatus, settings: TokenSettings | None, now: float) -> str:
    if status.state == "signing":
        return f"since {_when(status.activated)}" if status.activated else "signs"
    if status.state == "pending":
        if status.activated is not None:
            return f"published, signs from {_when(status.activated)}"
        return f"published, not signing (`regauth certs activate {status.name}`)"
    if status.key.private_key is None and status.signed_until is None:
        return "verifies only (no private key here)"
    if status.signed_until is None:
        return "never signed"
    text = f"stopped signing {_when(status.signed_until)}"
    until = status.valid_until(settings) if settings is not None else None
    if until is not None:
        text += ", retire now" if now >= until else f", retire after {_when(until)}"
    return text


def as_json(
    life: keystate.Lifecycle, settings: TokenSettings | None, now: float
) -> list[dict[str, object]]:
    out = []
    for s in life.statuses:
        until = s.valid_until(settings) if settings is not None else None
        out.append(
            {
                "name": s.name,
                "state": s.state,
                "algorithm": s.key.algorithm,
                "fingerprint_sha256": s.key.fingerprint(),
                "kid_libtrust": libtrust_kid(s.key.public_key),
                "kid_rfc7638": rfc7638_thumbprint(s.key.public_key),
                "not_after": _when(s.key.not_after.timestamp()),
                "private_key": s.key.private_key is not None,
                "activated": None if s.activated is None else _when(s.activated),
                "signed_until": None if s.signed_until is None else _when(s.signed_until),
                "valid_until": None if until is None else _when(until),
                "retirable": s.state != "signing" and (until is None or now >= until),
            }
        )
    return out


def list_keys(certs_dir: Path, settings: TokenSettings | None, json_out: bool, now: float) -> int:
    try:
        life = keystate.lifecycle(certs_dir, now)
    except ValueError as e:
        print(f"regauth certs list: {e}", file=sys.stderr)
        return EXIT_INPUT
    if json_out:
        print_json(
            {
                "certs_dir": str(certs_dir),
                "state_file": life.managed,
                "keys": as_json(life, settings, now),
            }
        )
        return EXIT_OK
    out = Printer()
    source = (
        f"state in {certs_dir / keystate.STATE_FILE}"
        if life.managed
        else "no state file: the newest key with a private key signs"
    )
    out.line((f"{certs_dir}", "bold"), f" ({source})")
    if settings is not None and settings.signing_key not in (None, life.signer.name):
        out.line(
            ("note", "yellow"),
            f": the policy pins token.signing_key {settings.signing_key}; regauth signs with it",
        )
    width = max(len(s.name) for s in life.statuses)
    styles = {"signing": "green", "pending": "cyan", "trusted-only": "dim"}
    for s in life.statuses:
        key = s.key
        out.line(
            (s.name.ljust(width), "bold"),
            "  ",
            (s.state.ljust(12), styles[s.state]),
            f"  {key.algorithm}  {_describe(s, settings, now)}",
        )
        out.line(f"  fingerprint  SHA256 {key.fingerprint()}")
        out.line(f"  kid          libtrust {libtrust_kid(key.public_key)}")
        out.line(f"               rfc7638  {rfc7638_thumbprint(key.public_key)}")
        out.line(f"  not after    {_when(key.not_after.timestamp())}")
    return EXIT_OK


def rotate(certs_dir: Path, algorithm: str, activate_after: dt.timedelta | None, now: float) -> int:
    at = None if activate_after is None else now + activate_after.total_seconds()
    name, written = keystate.stage(certs_dir, algorithm, at, now)
    for path in written:
        print(f"created {path}")
    print(
        f"{name} is published (`regauth certs bundle`, /.well-known/jwks.json) and does not "
        "sign yet."
    )
    if at is None:
        print(
            "Next: make every registry trust it (a running `regauth serve` restarts its "
            "embedded registry by itself; put `regauth certs bundle` into the rootcertbundle "
            f"of the others and restart them), then `regauth certs activate {name}`."
        )
    else:
        print(
            f"It signs from {_when(at)}: a running regauth switches by itself then. Every "
            "registry with its own rootcertbundle must trust it before that time."
        )
    return EXIT_OK


def activate(certs_dir: Path, name: str, settings: TokenSettings | None, now: float) -> int:
    try:
        before = keystate.lifecycle(certs_dir, now).signer.name
        life = keystate.activate(certs_dir, name, now, settings)
    except ValueError as e:
        print(f"regauth certs activate: {e}", file=sys.stderr)
        return EXIT_FINDING
    if before == name:
        print(f"{name} signs already")
        return EXIT_OK
    print(
        f"{name} signs from now on (a running regauth switches within its reload interval); "
        f"{before} stays trusted."
    )
    previous = life.status(before)
    if previous is not None and settings is not None:
        print(
            f"Retire {before} after {_when(previous.valid_until(settings))}: "
            f"`regauth certs retire {before}`."
        )
    if life.next_change is not None:
        print(f"note: another key is still scheduled to sign from {_when(life.next_change)}")
    return EXIT_OK


def retire(certs_dir: Path, name: str, settings: TokenSettings, force: bool, now: float) -> int:
    try:
        removed = keystate.retire(certs_dir, name, settings, now, force)
    except ValueError as e:
        print(f"regauth certs retire: {e}", file=sys.stderr)
        return EXIT_FINDING
    for path in removed:
        print(f"removed {path}")
    if force:
        print(f"note: tokens {name} signed are no longer accepted (--force)")
    print(
        f"{name} is no longer trusted (a running regauth restarts its embedded registry "
        "without it); remove it from the rootcertbundle of other registries too."
    )
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Dispatch `regauth certs list|rotate|activate|retire` (arguments as cli.py parses them)."""
    certs_dir, now = Path(args.dir), time.time()
    policy = Path(args.policy) if getattr(args, "policy", None) else None
    command = args.certs_command
    if command == "rotate":
        from regauth.tools.trace import parse_duration

        try:
            after = parse_duration(args.activate_after) if args.activate_after else None
        except ValueError as e:
            print(f"regauth certs rotate: --activate-after: {e}", file=sys.stderr)
            return EXIT_INPUT
        return rotate(certs_dir, args.algorithm, after, now)
    if command == "retire":
        settings = load_token_settings(policy, quiet=False) if policy else None
        if settings is None:
            print(
                "regauth certs retire: the token lifetimes come from the policy (--policy)",
                file=sys.stderr,
            )
            return EXIT_INPUT
        return retire(certs_dir, args.key, settings, args.force, now)
    settings = None
    if policy is not None and policy.exists():
        settings = load_token_settings(policy, quiet=command == "list")
        if settings is None and command == "activate":
            return EXIT_INPUT
    if command == "activate":
        return activate(certs_dir, args.key, settings, now)
    return list_keys(certs_dir, settings, args.json, now)
