"""What each `regauth` subcommand does, given its parsed arguments (cli.py only parses and
dispatches). Each function returns the process exit code, one of `regauth.tools`' EXIT_*
constants: 0 fine, 1 the finding the command exists for or a failure, 2 unusable input."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from regauth.ops import pki
from regauth.ops.safe_text import escape
from regauth.tools import EXIT_FAILED
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_INPUT
from regauth.tools import EXIT_OK

if TYPE_CHECKING:
    from regauth.mitm.launcher import ServeConfig
    from regauth.policy.model import Identity
    from regauth.policy.model import Policy


def print_error(text: str) -> None:
    """One line on stderr, escaped: problems quote policy files, errors quote paths and
    arguments (see regauth.ops.safe_text)."""
    print(escape(text), file=sys.stderr)


def certs_init(args: argparse.Namespace) -> int:
    written = pki.init_certs(Path(args.dir), args.algorithm)
    if getattr(args, "json", False):
        from regauth.tools.render import print_json

        print_json({"certs_dir": str(args.dir), "created": [str(p) for p in written]})
        return EXIT_OK
    for path in written:
        print(f"created {path}")
    if not written:
        print(f"{args.dir}: CA and signing keys already present, nothing changed")
    return EXIT_OK


def certs_bundle(args: argparse.Namespace) -> int:
    keys = pki.load_signing_keys(Path(args.dir))
    if not keys:
        print(
            f"{args.dir}: no token-signing certificates (run `regauth certs init`)", file=sys.stderr
        )
        return EXIT_FAILED
    sys.stdout.write(pki.bundle_pem(keys))
    return EXIT_OK


def certs_lifecycle(args: argparse.Namespace) -> int:
    """`certs list|rotate|activate|retire`"""
    from regauth.tools import certs

    return certs.run(args)


def passwd(args: argparse.Namespace) -> int:
    from regauth.logins.credentials import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return EXIT_FAILED
    try:
        hashed = hash_password(password, args.rounds)
    except ValueError as e:
        print(f"regauth passwd: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.user:
        print(f'  {args.user}:\n    password_hash: "{hashed}"')
    else:
        print(hashed)
    return EXIT_OK


def policy_check(args: argparse.Namespace) -> int:
    from regauth.tools.check import check_files
    from regauth.tools.check import check_files_json

    if args.json:
        return check_files_json(args.files, args.no_secrets)
    return check_files(args.files, args.no_secrets)


def policy_test(args: argparse.Namespace) -> int:
    from regauth.tools import policy_tests
    from regauth.tools.loading import PolicyError
    from regauth.tools.loading import load_for_decisions

    try:
        policy = load_for_decisions(Path(args.policy))
        tests = policy_tests.load_tests(Path(args.tests))
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_INPUT
    except policy_tests.TestFileError as e:
        for message in e.problems:
            print_error(str(message))
        return EXIT_INPUT
    outcomes = [policy_tests.run_test(policy, test) for test in tests]
    if args.junit:
        Path(args.junit).write_bytes(policy_tests.junit_xml(policy, args.tests, outcomes))
    if getattr(args, "json", False):
        from regauth.tools.render import print_json

        print_json(policy_tests.as_json(policy, args.tests, outcomes))
        return EXIT_FINDING if any(not o.passed for o in outcomes) else EXIT_OK
    return policy_tests.report(
        policy, args.tests, outcomes, verbose=getattr(args, "verbose", False)
    )


def policy_diff(args: argparse.Namespace) -> int:
    from regauth.tools import policy_diff
    from regauth.tools.loading import PolicyError
    from regauth.tools.loading import load_for_decisions
    from regauth.tools.render import print_json

    try:
        old = load_for_decisions(Path(args.old))
        new = load_for_decisions(Path(args.new))
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_INPUT
    extra = []
    if getattr(args, "claims", None):
        from regauth.tools.witnesses import Subject

        path = Path(args.claims)
        try:
            claims = read_claims(path)
        except ValueError as e:
            print_error(f"regauth policy diff: {e}")
            return EXIT_INPUT
        sides: list[Identity | None] = []
        refusals: list[ValueError] = []
        for policy in (old, new):
            try:
                sides.append(claims_identity(path, claims, args.issuer, policy))
            except ValueError as e:
                sides.append(None)  # that policy has no such issuer: cannot log in there
                refusals.append(e)
        if sides == [None, None]:
            print_error(f"regauth policy diff: {refusals[-1]}")
            return EXIT_INPUT
        extra.append(Subject(f"ID token {path.name}", sides[0], sides[1]))
    result = policy_diff.diff_policies(old, new, extra)
    if args.json:
        print_json(policy_diff.as_json(result))
        return EXIT_FINDING if result.gained else EXIT_OK
    return policy_diff.report(result, verbose=getattr(args, "verbose", False))


def replay(args: argparse.Namespace) -> int:
    from regauth.tools import replay
    from regauth.tools.loading import PolicyError
    from regauth.tools.loading import load_for_decisions
    from regauth.tools.log_sources import Sources
    from regauth.tools.log_sources import progress
    from regauth.tools.render import print_json

    logs = [args.log] if isinstance(args.log, str) else list(args.log)
    try:
        policy = load_for_decisions(Path(args.policy))
        claims = claim_sets(Path(args.claims)) if getattr(args, "claims", None) else []
        sources = Sources(logs)
        with progress(sources) as entries:
            result = replay.replay(entries, policy, claims)
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_INPUT
    except OSError as e:
        print_error(f"regauth replay: cannot read {e.filename or logs[0]}: {e.strerror or e}")
        return EXIT_INPUT
    except ValueError as e:
        print_error(f"regauth replay: {e}")
        return EXIT_INPUT
    if sources.skipped:
        print_error(
            f"regauth replay: {sources.skipped} lines of {sources.describe()} are not "
            "exchange records"
        )
    if args.json:
        print_json(replay.as_json(result))
        return EXIT_FINDING if result.any_changed else EXIT_OK
    return replay.report(result)


def trace(args: argparse.Namespace) -> int:
    import datetime as dt

    from regauth.tools import trace
    from regauth.tools.log_sources import Sources
    from regauth.tools.log_sources import expand
    from regauth.tools.log_sources import progress
    from regauth.tools.render import Printer
    from regauth.tools.render import print_json

    logs = [args.log] if isinstance(args.log, str) else list(args.log)
    try:
        since = trace.parse_duration(args.since) if args.since else None
    except ValueError as e:
        print_error(f"regauth trace: {e}")
        return EXIT_INPUT
    filters = trace.Filters(args.conversation, args.repository, args.account, since)
    if args.follow:
        if args.json:
            print(
                "regauth trace: --follow prints conversations as text; use --json without it",
                file=sys.stderr,
            )
            return EXIT_INPUT
        try:
            trace.follow(expand(logs), filters, Printer())
        except KeyboardInterrupt:
            pass
        except OSError as e:
            print_error(f"regauth trace: cannot read {e.filename or logs[0]}: {e.strerror or e}")
            return EXIT_INPUT
        return EXIT_OK
    now = dt.datetime.now(dt.UTC)
    try:
        sources = Sources(logs)
        several = len(sources.replicas) > 1
        if args.json:
            with progress(sources) as entries:
                found = [
                    trace.as_json(t.conversation, t.diagnoses, t.pending, t.end)
                    for t in trace.analyse_stream(entries, filters, now)
                ]
            print_json(
                {
                    "log": str(sources.files[0].path) if len(sources.files) == 1 else None,
                    "logs": [str(f.path) for f in sources.files],
                    "replicas": {str(f.path): f.replica for f in sources.files},
                    "skipped_lines": sources.skipped,
                    "conversations": found,
                }
            )
            return EXIT_OK
        out = Printer()
        shown = diagnosed = 0
        with progress(sources) as entries:
            for t in trace.analyse_stream(entries, filters, now):
                trace.render(
                    t.conversation, t.diagnoses, out, waiting=t.pending, end=t.end, replicas=several
                )
                shown += 1
                diagnosed += bool(t.diagnoses)
    except OSError as e:
        print_error(f"regauth trace: cannot read {e.filename or logs[0]}: {e.strerror or e}")
        return EXIT_INPUT
    if sources.skipped:
        print_error(
            f"regauth trace: {sources.skipped} lines of {sources.describe()} are not "
            "exchange records"
        )
    out.line((f"{shown} conversations, {diagnosed} with a diagnosis", "bold"))
    return EXIT_OK


def claim_sets(path: Path) -> list[dict[str, object]]:
    """The claim sets of `path`: a JSON object, or a list of objects (at most 1 MiB); ValueError
    naming the file otherwise."""
    from regauth.policy.reader import read_small
    from regauth.protocol import strict_json

    try:
        doc = strict_json.loads(read_small(path, 1024 * 1024), 16)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    items = doc if isinstance(doc, list) else [doc]
    sets = [c for c in items if isinstance(c, dict)]
    if not sets or len(sets) != len(items):
        raise ValueError(f"{path}: expected a JSON object of claims, or a list of them")
    return sets


def read_claims(path: Path) -> dict[str, object]:
    """The one claim set of `path` (`--claims` of explain and diff)."""
    sets = claim_sets(path)
    if len(sets) != 1:
        raise ValueError(f"{path}: expected one JSON object of claims")
    return sets[0]


def claims_identity(
    path: Path, claims: dict[str, object], issuer: str | None, policy: Policy
) -> Identity:
    """The identity an ID token with `claims` (read from `path`) would have under `policy`
    (`tools.identities`); ValueError naming the file when the policy cannot have it."""
    from regauth.tools import identities

    try:
        return identities.resolve(identities.parse_claims(claims, issuer), policy)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def policy_explain(args: argparse.Namespace) -> int:
    """Show which rule decides each scope for an account, without issuing anything."""
    from regauth.policy.load import load_policy
    from regauth.policy.model import Identity
    from regauth.policy.reader import PolicyError
    from regauth.protocol.scope import parse_scopes
    from regauth.tools.render import Printer

    try:
        policy = load_policy(Path(args.file))
        scopes = parse_scopes(args.scopes)
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_INPUT  # the policy is an input here, not the finding
    except ValueError as e:
        print_error(f"regauth policy explain: {e}")
        return EXIT_INPUT
    account = None
    build = getattr(args, "build", None)
    if build is not None:
        from regauth.mtls.identity import parse_subject

        try:
            build = parse_subject("build", build).name
        except ValueError as e:
            print_error(f"regauth policy explain: {e}")
            return EXIT_INPUT
        if args.account and args.account != "anonymous":
            print_error("regauth policy explain: --build and --account name two identities")
            return EXIT_INPUT
    if args.account and args.account != "anonymous":
        account = policy.accounts.get(args.account)
        if account is None:
            print_error(f"unknown account {args.account!r}")
            return EXIT_INPUT
    from regauth.tools import explain

    identity = Identity(account, build=build)
    if getattr(args, "claims", None):
        if account is not None or build is not None:
            print_error(
                "regauth policy explain: --claims and --account/--build name two identities"
            )
            return EXIT_INPUT
        try:
            path = Path(args.claims)
            identity = claims_identity(path, read_claims(path), args.issuer, policy)
        except ValueError as e:
            print_error(f"regauth policy explain: {e}")
            return EXIT_INPUT
    # A denial also shows the nearest rules and the condition each failed (tools/explain.py).
    explained = [explain.explain(policy, identity, scope, args.ip) for scope in scopes]
    if getattr(args, "json", False):
        from regauth.tools.render import print_json

        print_json({"policy": str(args.file), "scopes": [explain.as_json(e) for e in explained]})
        return EXIT_OK
    out = Printer()
    for explanation in explained:
        explain.render(explanation, out)
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    from regauth.logins.redis_store import parse_state_url
    from regauth.mitm.launcher import ServeConfig
    from regauth.mitm.launcher import serve
    from regauth.mitm.patches.proxy_header import parse_networks
    from regauth.ops.public_url import default_public_url
    from regauth.policy.reader import PolicyError
    from regauth.protocol.urls import parse_listen
    from regauth.protocol.urls import parse_origin

    try:
        host, port = parse_listen(args.listen)
        if args.admin_listen is not None and args.admin_listen.lower() != "off":
            parse_listen(args.admin_listen)
        parse_state_url(args.state)
        parse_networks(args.proxy_protocol)
        upstream = parse_origin(args.upstream).url if args.upstream else None
        public_url = args.public_url or default_public_url(host, port)
        parse_origin(public_url)
    except ValueError as e:
        print(f"regauth serve: {e}", file=sys.stderr)
        return EXIT_INPUT
    certs_dir = Path(args.certs_dir)
    if not args.dry_run:
        pki.init_certs(certs_dir)
    try:
        config = ServeConfig(
            upstream or "",
            host,
            port,
            public_url,
            certs_dir,
            Path(args.policy),
            Path(args.log),
            Path(args.upstream_ca) if args.upstream_ca else None,
            args.web,
            args.web_port,
            tuple(args.extra),
            registry_dir=None if upstream else Path(args.registry_dir),
            admin_listen=args.admin_listen,
            state=args.state,
            delegate_unchecked=args.delegate_unchecked,
            proxy_protocol=args.proxy_protocol,
            plain_http=args.allow_plain_http,
            verbose=args.verbose,
        )
        if args.dry_run:
            return serve_dry_run(config)
        return serve(config)
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_FAILED
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"regauth serve: {e}", file=sys.stderr)
        return EXIT_FAILED


def serve_dry_run(config: ServeConfig) -> int:
    """`regauth serve --dry-run`: load the policy as serving would (every problem on stderr,
    exit 1), then print each setting as `name: value` and exit 0 without opening a port or
    starting a registry. Signing keys and the upstream match are checked when serving."""
    from regauth.policy.load import load_policy

    policy = load_policy(config.policy)  # PolicyError: every problem, exit 1 (see serve)
    settings = {
        "upstream": config.upstream or f"embedded docker-registry in {config.registry_dir}",
        "listen": f"{config.listen_host}:{config.listen_port}",
        "public url": config.public_url,
        "certs dir": str(config.certs_dir),
        "policy": f"{config.policy} (service {policy.service}, {len(policy.rules)} rules)",
        "log": str(config.log),
        "upstream ca": str(config.upstream_ca) if config.upstream_ca else "system CAs",
        "web": f"on, port {config.web_port}" if config.web else "off",
        "admin listen": config.admin_listen or "127.0.0.1:9090 when free",
        "state": config.state or "in this process",
        "delegate unchecked": "on" if config.delegate_unchecked else "off",
        "proxy protocol": config.proxy_protocol or "none",
        "allow plain http": "on" if config.plain_http else "off",
        "verbose": "on" if config.verbose else "off",
        "mitmproxy arguments": " ".join(config.extra) or "none",
    }
    for name, value in settings.items():
        print(escape(f"{name}: {value}"))
    return EXIT_OK


def completion(args: argparse.Namespace) -> int:
    """`regauth completion bash|zsh`: print the script (see tools/completion.py)."""
    from regauth.cli import build_parser
    from regauth.tools.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return EXIT_OK
