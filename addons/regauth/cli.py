"""The `regauth` command: certificates, passwords, policy checks, and `serve`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from regauth import pki

EXIT_USAGE = 2
EXIT_INVALID = 1


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def cmd_certs_init(args: argparse.Namespace) -> int:
    written = pki.init_certs(Path(args.dir), args.algorithm)
    for path in written:
        print(f"created {path}")
    if not written:
        print(f"{args.dir}: CA and signing keys already present, nothing changed")
    return 0


def cmd_certs_bundle(args: argparse.Namespace) -> int:
    keys = pki.load_signing_keys(Path(args.dir))
    if not keys:
        print(f"{args.dir}: no token-signing certificates (run `regauth certs init`)",
              file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(pki.bundle_pem(keys))
    return 0


def cmd_certs_lifecycle(args: argparse.Namespace) -> int:
    """`certs list|rotate|activate|retire`"""
    from regauth.tools import certs

    return certs.run(args)


def cmd_passwd(args: argparse.Namespace) -> int:
    from regauth.credentials import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return EXIT_INVALID
    try:
        hashed = hash_password(password, args.rounds)
    except ValueError as e:
        print(f"regauth passwd: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.user:
        print(f"  {args.user}:\n    password_hash: \"{hashed}\"")
    else:
        print(hashed)
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from regauth.tools.check import check_files

    return check_files(args.files, args.no_secrets)


def cmd_policy_test(args: argparse.Namespace) -> int:
    from regauth.tools import EXIT_INPUT
    from regauth.tools import policy_tests
    from regauth.tools.loading import PolicyError
    from regauth.tools.loading import load_for_decisions

    try:
        policy = load_for_decisions(Path(args.policy))
        tests = policy_tests.load_tests(Path(args.tests))
    except PolicyError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_INPUT
    except policy_tests.TestFileError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_INPUT
    outcomes = [policy_tests.run_test(policy, test) for test in tests]
    if args.junit:
        Path(args.junit).write_bytes(policy_tests.junit_xml(policy, args.tests, outcomes))
    return policy_tests.report(policy, args.tests, outcomes)


def cmd_policy_diff(args: argparse.Namespace) -> int:
    from regauth.tools import EXIT_INPUT
    from regauth.tools import policy_diff
    from regauth.tools.loading import PolicyError
    from regauth.tools.loading import load_for_decisions
    from regauth.tools.render import print_json

    try:
        old = load_for_decisions(Path(args.old))
        new = load_for_decisions(Path(args.new))
    except PolicyError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_INPUT
    result = policy_diff.diff_policies(old, new)
    if args.json:
        print_json(policy_diff.as_json(result))
        return policy_diff.EXIT_FINDING if result.gained else policy_diff.EXIT_OK
    return policy_diff.report(result)


def cmd_replay(args: argparse.Namespace) -> int:
    from regauth.tools import EXIT_INPUT
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
            print(problem, file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:
        print(f"regauth replay: cannot read {args.log}: {e.strerror or e}", file=sys.stderr)
        return EXIT_INPUT
    if log.skipped:
        print(f"regauth replay: {log.skipped} lines of {args.log} are not exchange records",
              file=sys.stderr)
    result = replay.replay(log.entries, policy)
    if args.json:
        print_json(replay.as_json(result))
        return replay.EXIT_FINDING if result.any_changed else replay.EXIT_OK
    return replay.report(result)


def cmd_trace(args: argparse.Namespace) -> int:
    import datetime as dt

    from regauth.tools import EXIT_INPUT
    from regauth.tools import EXIT_OK
    from regauth.tools import trace
    from regauth.tools.log_records import read_log
    from regauth.tools.render import Printer
    from regauth.tools.render import print_json

    try:
        since = trace.parse_duration(args.since) if args.since else None
    except ValueError as e:
        print(f"regauth trace: {e}", file=sys.stderr)
        return EXIT_INPUT
    filters = trace.Filters(args.conversation, args.repository, args.account, since)
    path = Path(args.log)
    if args.follow:
        if args.json:
            print("regauth trace: --follow prints conversations as text; use --json without "
                  "it", file=sys.stderr)
            return EXIT_INPUT
        try:
            trace.follow(path, filters, Printer())
        except KeyboardInterrupt:
            pass
        except OSError as e:
            print(f"regauth trace: cannot read {args.log}: {e.strerror or e}", file=sys.stderr)
            return EXIT_INPUT
        return EXIT_OK
    try:
        log = read_log(path)
    except OSError as e:
        print(f"regauth trace: cannot read {args.log}: {e.strerror or e}", file=sys.stderr)
        return EXIT_INPUT
    if log.skipped:
        print(f"regauth trace: {log.skipped} lines of {args.log} are not exchange records",
              file=sys.stderr)
    found = trace.analyse(log.entries, filters, dt.datetime.now(dt.UTC))
    if args.json:
        print_json({"log": str(path), "skipped_lines": log.skipped,
                    "conversations": [trace.as_json(c, d) for c, d in found]})
        return EXIT_OK
    out = Printer()
    for conversation, diagnoses in found:
        trace.render(conversation, diagnoses, out)
    diagnosed = sum(1 for _, d in found if d)
    out.line((f"{len(found)} conversations, {diagnosed} with a diagnosis", "bold"))
    return EXIT_OK


def cmd_policy_explain(args: argparse.Namespace) -> int:
    """Show which rule decides each scope for an account, without issuing anything."""
    from regauth.policy import Identity
    from regauth.policy_loader import PolicyError
    from regauth.policy_loader import load_policy
    from regauth.scope import parse_scopes

    try:
        policy = load_policy(Path(args.file))
        scopes = parse_scopes(args.scopes)
    except PolicyError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except ValueError as e:
        print(f"regauth policy explain: {e}", file=sys.stderr)
        return EXIT_USAGE
    account = None
    if args.account and args.account != "anonymous":
        account = policy.accounts.get(args.account)
        if account is None:
            print(f"unknown account {args.account!r}", file=sys.stderr)
            return EXIT_USAGE
    for scope in scopes:
        decision = policy.decide(Identity(account), scope, args.ip)
        rule = decision.rule.describe() if decision.rule else "default deny"
        granted = ",".join(decision.granted) or "-"
        print(f"{scope}: {decision.outcome} [{granted}] by {rule}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from regauth.mitm.launcher import ServeConfig
    from regauth.mitm.launcher import serve
    from regauth.policy_loader import PolicyError
    from regauth.shared_state import parse_state_url
    from regauth.urls import default_public_url
    from regauth.urls import parse_listen
    from regauth.urls import parse_origin

    try:
        host, port = parse_listen(args.listen)
        if args.admin_listen is not None and args.admin_listen.lower() != "off":
            parse_listen(args.admin_listen)
        parse_state_url(args.state)
        upstream = parse_origin(args.upstream).url if args.upstream else None
        public_url = args.public_url or default_public_url(host, port)
        parse_origin(public_url)
    except ValueError as e:
        print(f"regauth serve: {e}", file=sys.stderr)
        return EXIT_USAGE
    certs_dir = Path(args.certs_dir)
    pki.init_certs(certs_dir)
    try:
        config = ServeConfig(upstream or "", host, port, public_url, certs_dir, Path(args.policy),
                             Path(args.log), Path(args.upstream_ca) if args.upstream_ca else None,
                             args.web, args.web_port, tuple(args.extra),
                             registry_dir=None if upstream else Path(args.registry_dir),
                             admin_listen=args.admin_listen, state=args.state)
        return serve(config)
    except PolicyError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"regauth serve: {e}", file=sys.stderr)
        return EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regauth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    certs = sub.add_parser("certs", help="CA and token-signing keys").add_subparsers(
        dest="certs_command", required=True)
    init = certs.add_parser("init", help="create missing CA and signing key (never overwrites)")
    init.add_argument("--dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    init.add_argument("--algorithm", choices=pki.ALGORITHMS, default="ES256")
    init.set_defaults(func=cmd_certs_init)
    bundle = certs.add_parser("bundle", help="print the registry's auth.token.rootcertbundle")
    bundle.add_argument("--dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    bundle.set_defaults(func=cmd_certs_bundle)
    listing = certs.add_parser("list", help="each signing key's state, fingerprint, key ids "
                                            "and expiry")
    listing.add_argument("--dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    listing.add_argument("--policy", default=_env("REGAUTH_POLICY", "policies/default.yaml"),
                         help="for the token lifetimes (when a key may be retired)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_certs_lifecycle)
    rotate = certs.add_parser("rotate", help="add a signing key that is published but does "
                                             "not sign until activated")
    rotate.add_argument("--dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    rotate.add_argument("--algorithm", choices=pki.ALGORITHMS, default="ES256")
    rotate.add_argument("--activate-after", metavar="DURATION",
                        help="let it sign after DURATION (90s, 10m, 2h, 1d); a running "
                             "regauth switches by itself")
    rotate.set_defaults(func=cmd_certs_lifecycle)
    activate = certs.add_parser("activate", help="make KEY the signing key from now on")
    activate.add_argument("key", help="the key's name, as `regauth certs list` shows it")
    activate.add_argument("--dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    activate.add_argument("--policy", default=_env("REGAUTH_POLICY", "policies/default.yaml"),
                          help="checked for a token.signing_key pin and token.algorithm")
    activate.set_defaults(func=cmd_certs_lifecycle)
    retire = certs.add_parser("retire", help="remove a key that no longer signs, once no "
                                             "token it signed can still be valid")
    retire.add_argument("key", help="the key's name, as `regauth certs list` shows it")
    retire.add_argument("--dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    retire.add_argument("--policy", default=_env("REGAUTH_POLICY", "policies/default.yaml"),
                        help="the token lifetimes come from here")
    retire.add_argument("--force", action="store_true",
                        help="retire even though tokens it signed may still be valid (a "
                             "compromised key): they stop working")
    retire.set_defaults(func=cmd_certs_lifecycle)

    passwd = sub.add_parser("passwd", help="print a bcrypt hash for an account's password")
    passwd.add_argument("user", nargs="?", help="print a policy snippet for this account")
    passwd.add_argument("--rounds", type=int, default=12)
    passwd.add_argument("--stdin", action="store_true", help="read the password from stdin")
    passwd.set_defaults(func=cmd_passwd)

    policy = sub.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True)
    check = policy.add_parser("check", help="validate policy files; exit 1 on problems")
    check.add_argument("--no-secrets", action="store_true",
                       help="absent secrets (unset variables, missing files) are notes, "
                            "not problems")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_policy_check)
    test = policy.add_parser("test", help="run expectations (a YAML tests file) against a "
                                          "policy; exit 1 if any fails")
    test.add_argument("policy")
    test.add_argument("tests")
    test.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
    test.set_defaults(func=cmd_policy_test)
    diff = policy.add_parser("diff", help="what access changes from OLD to NEW; exit 1 if NEW "
                                          "grants anything OLD did not")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(func=cmd_policy_diff)
    explain = policy.add_parser("explain", help="show the deciding rule for scopes")
    explain.add_argument("file")
    explain.add_argument("--account", default="anonymous")
    explain.add_argument("--ip", default=None)
    explain.add_argument("scopes", nargs="+")
    explain.set_defaults(func=cmd_policy_explain)

    replay = sub.add_parser("replay", help="re-decide the token requests of an exchange log "
                                           "under another policy; exit 1 if any changes")
    replay.add_argument("log")
    replay.add_argument("--policy", required=True, help="the policy to replay under")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)

    trace = sub.add_parser("trace", help="render the conversations of an exchange log and "
                                         "diagnose known failures")
    trace.add_argument("log")
    trace.add_argument("--follow", action="store_true", help="keep reading as the log grows")
    trace.add_argument("--conversation", metavar="ID", help="only this conversation (prefix)")
    trace.add_argument("--repository", metavar="NAME", help="only conversations about NAME")
    trace.add_argument("--account", metavar="NAME", help="only conversations of NAME")
    trace.add_argument("--since", metavar="DURATION", help="only conversations active in the "
                                                           "last DURATION (90s, 10m, 2h, 1d)")
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(func=cmd_trace)

    serve = sub.add_parser("serve", help="run the proxy (what run_proxy.sh calls)")
    serve.add_argument("--upstream", default=_env("REGAUTH_UPSTREAM"),
                       help="registry URL; default: start a local docker-registry")
    serve.add_argument("--upstream-ca", default=_env("REGAUTH_UPSTREAM_CA"))
    serve.add_argument("--listen", default=_env("REGAUTH_LISTEN", "127.0.0.1:5443"))
    serve.add_argument("--public-url", default=_env("REGAUTH_PUBLIC_URL"))
    serve.add_argument("--certs-dir", default=_env("REGAUTH_CERTS_DIR", "certs"))
    serve.add_argument("--policy", default=_env("REGAUTH_POLICY", "policies/default.yaml"))
    serve.add_argument("--log", default=_env("REGAUTH_LOG", "logs/exchange.jsonl"))
    serve.add_argument("--registry-dir", default=_env("REGAUTH_REGISTRY_DIR", "var/registry"))
    serve.add_argument("--web", action="store_true",
                       default=_env("REGAUTH_WEB", "") in ("1", "true", "yes"))
    serve.add_argument("--web-port", type=int, default=int(_env("REGAUTH_WEB_PORT", "8081")))
    serve.add_argument("--admin-listen", default=_env("REGAUTH_ADMIN_LISTEN"),
                       metavar="HOST:PORT|off",
                       help="/metrics, /healthz, /readyz (default 127.0.0.1:9090 when free)")
    serve.add_argument("--state", default=_env("REGAUTH_STATE", ""), metavar="URL",
                       help="login-limit counters: redis://HOST:PORT/DB shared by replicas "
                            "(default: in this process)")
    serve.add_argument("extra", nargs=argparse.REMAINDER,
                       help="after --: extra mitmproxy arguments")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "extra", None) and args.extra[0] == "--":
        args.extra = args.extra[1:]
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:
        print(f"regauth: {e}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
