"""What each `regauth` subcommand does, given its parsed arguments (cli.py only parses and
dispatches). Each function returns the process exit code, one of `regauth.tools`' EXIT_*
constants: 0 fine, 1 the finding the command exists for or a failure, 2 unusable input."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from regauth.ops import pki
from regauth.ops.safe_text import escape
from regauth.tools import EXIT_FAILED
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_INPUT
from regauth.tools import EXIT_OK


def print_error(text: str) -> None:
    """One line on stderr, escaped: problems quote policy files, errors quote paths and
    arguments (see regauth.ops.safe_text)."""
    print(escape(text), file=sys.stderr)


def certs_init(args: argparse.Namespace) -> int:
    written = pki.init_certs(Path(args.dir), args.algorithm)
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
    return policy_tests.report(policy, args.tests, outcomes)


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
    result = policy_diff.diff_policies(old, new)
    if args.json:
        print_json(policy_diff.as_json(result))
        return EXIT_FINDING if result.gained else EXIT_OK
    return policy_diff.report(result)


def replay(args: argparse.Namespace) -> int:
    from regauth.tools import replay
    from regauth.tools.loading import PolicyError
    from regauth.tools.loading import load_for_decisions
    from regauth.tools.log_records import read_log
    from regauth.tools.render import print_json

    try:
        policy = load_for_decisions(Path(args.policy))
        log = read_log(Path(args.log))
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_INPUT
    except OSError as e:
        print_error(f"regauth replay: cannot read {args.log}: {e.strerror or e}")
        return EXIT_INPUT
    if log.skipped:
        print_error(f"regauth replay: {log.skipped} lines of {args.log} are not exchange records")
    result = replay.replay(log.entries, policy)
    if args.json:
        print_json(replay.as_json(result))
        return EXIT_FINDING if result.any_changed else EXIT_OK
    return replay.report(result)


def trace(args: argparse.Namespace) -> int:
    import datetime as dt

    from regauth.tools import trace
    from regauth.tools.log_records import read_log
    from regauth.tools.render import Printer
    from regauth.tools.render import print_json

    try:
        since = trace.parse_duration(args.since) if args.since else None
    except ValueError as e:
        print_error(f"regauth trace: {e}")
        return EXIT_INPUT
    filters = trace.Filters(args.conversation, args.repository, args.account, since)
    path = Path(args.log)
    if args.follow:
        if args.json:
            print(
                "regauth trace: --follow prints conversations as text; use --json without it",
                file=sys.stderr,
            )
            return EXIT_INPUT
        try:
            trace.follow(path, filters, Printer())
        except KeyboardInterrupt:
            pass
        except OSError as e:
            print_error(f"regauth trace: cannot read {args.log}: {e.strerror or e}")
            return EXIT_INPUT
        return EXIT_OK
    try:
        log = read_log(path)
    except OSError as e:
        print_error(f"regauth trace: cannot read {args.log}: {e.strerror or e}")
        return EXIT_INPUT
    if log.skipped:
        print_error(f"regauth trace: {log.skipped} lines of {args.log} are not exchange records")
    found = trace.analyse(log.entries, filters, dt.datetime.now(dt.UTC))
    if args.json:
        print_json(
            {
                "log": str(path),
                "skipped_lines": log.skipped,
                "conversations": [trace.as_json(c, d) for c, d in found],
            }
        )
        return EXIT_OK
    out = Printer()
    for conversation, diagnoses in found:
        trace.render(conversation, diagnoses, out)
    diagnosed = sum(1 for _, d in found if d)
    out.line((f"{len(found)} conversations, {diagnosed} with a diagnosis", "bold"))
    return EXIT_OK


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
    out = Printer()
    for scope in scopes:
        decision = policy.decide(Identity(account, build=build), scope, args.ip)
        rule = decision.rule.describe() if decision.rule else "default deny"
        granted = ",".join(decision.granted) or "-"
        # The rule's comment comes from the policy file: rendered like every tool's output.
        style = {"granted": "green", "partial": "yellow"}.get(decision.outcome, "red")
        out.line(f"{scope}: ", (f"{decision.outcome} [{granted}]", style), f" by {rule}")
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
        )
        return serve(config)
    except PolicyError as e:
        for problem in e.problems:
            print_error(str(problem))
        return EXIT_FAILED
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"regauth serve: {e}", file=sys.stderr)
        return EXIT_FAILED
