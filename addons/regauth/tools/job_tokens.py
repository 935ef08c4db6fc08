"""`regauth token issue|list|revoke`: job tokens, short-lived logins for one build or account.

A job token is what `docker login -u NAME --password-stdin` (podman, skopeo, buildah alike) or
a config.json `identitytoken` carries. It grants at most its scopes, intersected with the policy
at the time of use, until it expires or is revoked; it is never a registry Bearer token (its
own typ and audience). `--state redis://…` shares the records and revocations with every
replica (the same URL as `regauth serve --state`); without it they live in `certs/jobs/`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from regauth.logins.job_tokens import FileJobStore
from regauth.logins.job_tokens import JobStore
from regauth.logins.job_tokens import mint
from regauth.logins.job_tokens import parse_job_request
from regauth.ops import pki
from regauth.policy.load import load_policy
from regauth.policy.reader import PolicyError
from regauth.tokens import keystate
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyring import KeyRing
from regauth.tools import EXIT_FAILED
from regauth.tools import EXIT_INPUT
from regauth.tools import EXIT_OK
from regauth.tools import usage
from regauth.tools.trace import parse_duration


def _store(args: argparse.Namespace) -> JobStore:
    if args.state:
        from regauth.logins.redis_store import RedisJobStore
        from regauth.logins.redis_store import parse_state_url

        url = parse_state_url(args.state)
        if url is not None:
            return RedisJobStore(url, timeout=5.0)
    return FileJobStore(Path(args.dir))


def _error(command: str, message: object) -> None:
    print(f"regauth token {command}: {message}", file=sys.stderr)


def issue(args: argparse.Namespace) -> int:
    try:
        kind, name = ("build", args.build) if args.build else ("account", args.account)
        lifetime = int(parse_duration(args.ttl).total_seconds())
        request = parse_job_request(kind, name, args.scope, lifetime)
        policy = load_policy(Path(args.policy))
    except PolicyError as e:
        for problem in e.problems:
            _error("issue", problem)
        return EXIT_INPUT
    except ValueError as e:
        _error("issue", e)
        return EXIT_INPUT
    subject = request.subject
    if subject.kind == "account" and subject.name not in policy.accounts:
        _error("issue", f"account {subject.name!r} is not in {args.policy}")
        return EXIT_INPUT
    certs = Path(args.dir)
    try:
        keys = pki.load_signing_keys(certs)
        lifecycle = keystate.resolve(certs, keys, policy.token.signing_key, time.time())
        issuer = TokenIssuer(
            KeyRing(keys, lifecycle.signer.name), policy.token, policy.service, policy.issuer
        )
        token, record = mint(issuer, request)
        _store(args).record(record)
    except (OSError, ValueError) as e:
        _error("issue", e)
        return EXIT_FAILED
    except Exception as e:  # redis.RedisError: the token would be unlisted and unrevocable
        _error("issue", f"cannot record the token in {args.state}: {type(e).__name__}")
        return EXIT_FAILED
    expires = dt.datetime.fromtimestamp(record.exp, dt.UTC)
    if args.json:
        print(json.dumps({"token": token, "username": subject.name, **record.to_json()}))
    else:
        print(token)
        print(
            f"job token {record.jti} for {subject}, until {expires:%Y-%m-%dT%H:%M:%SZ}: "
            f"docker login -u {subject.name} --password-stdin HOST",
            file=sys.stderr,
        )
    return EXIT_OK


def list_tokens(args: argparse.Namespace) -> int:
    try:
        entries = _store(args).entries()
    except Exception as error:
        _error("list", f"cannot read the job tokens: {type(error).__name__}: {error}")
        return EXIT_FAILED
    now = int(time.time())
    live = sorted((e for e in entries if args.all or e.exp > now), key=lambda e: e.issued_at)
    if args.json:
        print(json.dumps([e.to_json() for e in live]))
        return EXIT_OK
    for e in live:
        until = dt.datetime.fromtimestamp(e.exp, dt.UTC)
        state = "expired" if e.exp <= now else f"until {until:%Y-%m-%dT%H:%M:%SZ}"
        print(f"{e.jti}  {e.subject}  {state}  {' '.join(e.scopes)}")
    return EXIT_OK


def revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        known = {e.jti: e for e in store.entries()}
        entry = known.get(args.id)
        if entry is None:
            _error("revoke", f"no job token {args.id!r} (see `regauth token list --all`)")
            return EXIT_INPUT
        store.revoke(entry.jti, entry.exp)
    except Exception as error:
        _error("revoke", f"{type(error).__name__}: {error}")
        return EXIT_FAILED
    print(f"job token {entry.jti} ({entry.subject}) revoked")
    return EXIT_OK


def admin_secret(args: argparse.Namespace) -> int:
    """Create `certs/private/admin-token` (0600) if missing and print it: the Bearer secret of
    `POST /job-tokens` on the admin listener."""
    import os
    import secrets

    path = Path(args.dir) / pki.PRIVATE_DIR / "admin-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"created {path}", file=sys.stderr)
    print(path.read_text().strip())
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, certs_default: str, policy_default: str,
                state_default: str) -> None:  # fmt: skip
    token = sub.add_parser("token", help="job tokens: short-lived logins for a build or account")
    commands = token.add_subparsers(dest="token_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        usage.certs_dir_option(p, certs_default, "regauth's certs directory")
        p.add_argument(
            "--state", default=state_default, help="redis://HOST:PORT/DB shared with the replicas"
        )

    issue_p = commands.add_parser("issue", help="print a new job token")
    who = issue_p.add_mutually_exclusive_group(required=True)
    who.add_argument("--build", metavar="ID")
    who.add_argument("--account", metavar="NAME")
    issue_p.add_argument(
        "--scope", action="append", required=True, metavar="SCOPE",
        help="repository:NAME:ACTIONS it may grant at most (repeatable)",
    )  # fmt: skip
    issue_p.add_argument("--ttl", default="15m", help="lifetime: 90s, 15m, 2h (at most 24h)")
    issue_p.add_argument("--policy", default=policy_default, help="service, issuer, accounts")
    issue_p.add_argument("--json", action="store_true")
    common(issue_p)
    issue_p.set_defaults(func=issue)
    list_p = commands.add_parser("list", help="job tokens that have not expired")
    list_p.add_argument("--all", action="store_true", help="expired ones too")
    list_p.add_argument("--json", action="store_true")
    common(list_p)
    list_p.set_defaults(func=list_tokens)
    revoke_p = commands.add_parser("revoke", help="refuse a job token from now on")
    revoke_p.add_argument("id", help="the token's id, as `regauth token list` shows it")
    common(revoke_p)
    revoke_p.set_defaults(func=revoke)
    secret_p = commands.add_parser(
        "admin-secret",
        help="create (once) and print the secret for POST /job-tokens on the admin listener",
    )
    common(secret_p)
    secret_p.set_defaults(func=admin_secret)
