"""The `regauth` command: certificates, passwords, policy tools, and `serve`.

This module only parses arguments and dispatches: what each subcommand does is in
`regauth.tools.commands`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import overload

from regauth.ops import pki
from regauth.tools import EXIT_FAILED
from regauth.tools import client_certs
from regauth.tools import commands
from regauth.tools import job_tokens
from regauth.tools import usage


@overload
def _env(name: str, default: str) -> str: ...
@overload
def _env(name: str, default: None = None) -> str | None: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regauth")
    parser.add_argument("--version", action="version", version=f"regauth {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    certs_default = _env("REGAUTH_CERTS_DIR", "certs")
    certs = sub.add_parser("certs", help="CA and token-signing keys").add_subparsers(
        dest="certs_command", required=True
    )
    init = certs.add_parser("init", help="create missing CA and signing key (never overwrites)")
    usage.certs_dir_option(init, certs_default, "where to create them (default %(default)s)")
    init.add_argument("--algorithm", choices=pki.ALGORITHMS, default="ES256")
    init.add_argument("--json", action="store_true", help="print the files created as JSON")
    init.set_defaults(func=commands.certs_init)
    bundle = certs.add_parser("bundle", help="print the registry's auth.token.rootcertbundle")
    usage.certs_dir_option(bundle, certs_default, "regauth's certs directory")
    bundle.set_defaults(func=commands.certs_bundle)
    listing = certs.add_parser(
        "list", help="each signing key's state, fingerprint, key ids and expiry"
    )
    usage.certs_dir_option(listing, certs_default, "regauth's certs directory")
    listing.add_argument(
        "--policy",
        default=_env("REGAUTH_POLICY", "policies/default.yaml"),
        help="for the token lifetimes (when a key may be retired)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    listing.set_defaults(func=commands.certs_lifecycle)
    rotate = certs.add_parser(
        "rotate", help="add a signing key that is published but does not sign until activated"
    )
    usage.certs_dir_option(rotate, certs_default, "regauth's certs directory")
    rotate.add_argument("--algorithm", choices=pki.ALGORITHMS, default="ES256")
    rotate.add_argument(
        "--activate-after",
        metavar="DURATION",
        help="let it sign after DURATION (90s, 10m, 2h, 1d); a running regauth switches by itself",
    )
    rotate.set_defaults(func=commands.certs_lifecycle)
    activate = certs.add_parser("activate", help="make KEY the signing key from now on")
    activate.add_argument("key", help="the key's name, as `regauth certs list` shows it")
    usage.certs_dir_option(activate, certs_default, "regauth's certs directory")
    activate.add_argument(
        "--policy",
        default=_env("REGAUTH_POLICY", "policies/default.yaml"),
        help="checked for a token.signing_key pin and token.algorithm",
    )
    activate.set_defaults(func=commands.certs_lifecycle)
    retire = certs.add_parser(
        "retire",
        help="remove a key that no longer signs, once no token it signed can still be valid",
    )
    retire.add_argument("key", help="the key's name, as `regauth certs list` shows it")
    usage.certs_dir_option(retire, certs_default, "regauth's certs directory")
    retire.add_argument(
        "--policy",
        default=_env("REGAUTH_POLICY", "policies/default.yaml"),
        help="the token lifetimes come from here",
    )
    retire.add_argument(
        "--force",
        action="store_true",
        help="retire even though tokens it signed may still be valid (a "
        "compromised key): they stop working",
    )
    retire.set_defaults(func=commands.certs_lifecycle)
    client_certs.add_parsers(certs, certs_default)

    job_tokens.add_parsers(
        sub,
        certs_default,
        _env("REGAUTH_POLICY", "policies/default.yaml"),
        _env("REGAUTH_STATE", ""),
    )

    passwd = sub.add_parser("passwd", help="print a bcrypt hash for an account's password")
    passwd.add_argument("user", nargs="?", help="print a policy snippet for this account")
    passwd.add_argument("--rounds", type=int, default=12)
    passwd.add_argument("--stdin", action="store_true", help="read the password from stdin")
    passwd.set_defaults(func=commands.passwd)

    policy = sub.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True
    )
    check = policy.add_parser("check", help="validate policy files; exit 1 on problems")
    check.add_argument(
        "--no-secrets",
        action="store_true",
        help="absent secrets (unset variables, missing files) are notes, not problems",
    )
    check.add_argument("files", nargs="+")
    check.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    check.set_defaults(func=commands.policy_check)
    test = policy.add_parser(
        "test", help="run expectations (a YAML tests file) against a policy; exit 1 if any fails"
    )
    test.add_argument("policy")
    test.add_argument("tests")
    test.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
    test.add_argument("--json", action="store_true", help="every test's outcome as JSON")
    test.add_argument("-v", "--verbose", action="store_true", help="also list the tests that pass")
    test.set_defaults(func=commands.policy_test)
    diff = policy.add_parser(
        "diff",
        help="what access changes from OLD to NEW; exit 1 if NEW grants anything OLD did not",
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--json", action="store_true")
    diff.add_argument(
        "-v", "--verbose", action="store_true", help="list every change under its rule change"
    )
    diff.add_argument(
        "--claims",
        default=None,
        metavar="FILE.json",
        help="also compare for the identity of an OIDC ID token with these claims",
    )
    diff.add_argument("--issuer", default=None, metavar="NAME", help="with --claims")
    diff.set_defaults(func=commands.policy_diff)
    explain = policy.add_parser("explain", help="show the deciding rule for scopes")
    explain.add_argument("file")
    explain.add_argument("--account", default="anonymous")
    explain.add_argument(
        "--build", default=None, metavar="ID", help="as a build's client certificate (${build})"
    )
    explain.add_argument("--ip", default=None)
    explain.add_argument(
        "--claims",
        default=None,
        metavar="FILE.json",
        help="as the identity of an OIDC ID token with these claims (federated_issuers)",
    )
    explain.add_argument(
        "--issuer",
        default=None,
        metavar="NAME",
        help="with --claims: the federated issuer (default: the one whose issuer is the iss)",
    )
    explain.add_argument(
        "--json", action="store_true", help="each decision and its near misses as JSON"
    )
    explain.add_argument("scopes", nargs="+")
    explain.set_defaults(func=commands.policy_explain)

    replay = sub.add_parser(
        "replay",
        help="re-decide the token requests of an exchange log "
        "under another policy; exit 1 if any changes",
    )
    replay.add_argument(
        "log",
        nargs="+",
        metavar="LOG",
        help="exchange logs: files, directories, globs, .gz (merged in time order)",
    )
    replay.add_argument("--policy", required=True, help="the policy to replay under")
    replay.add_argument(
        "--claims",
        default=None,
        metavar="FILE.json",
        help="ID-token claims (an object or a list) for federated records whose subject "
        "they give; otherwise the claims the log kept",
    )
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=commands.replay)

    trace = sub.add_parser(
        "trace", help="render the conversations of an exchange log and diagnose known failures"
    )
    trace.add_argument(
        "log",
        nargs="+",
        metavar="LOG",
        help="exchange logs: files, directories, globs, .gz (merged in time order; "
        "each replica's log tags its records)",
    )
    trace.add_argument("--follow", action="store_true", help="keep reading as the log grows")
    trace.add_argument("--conversation", metavar="ID", help="only this conversation (prefix)")
    trace.add_argument("--repository", metavar="NAME", help="only conversations about NAME")
    trace.add_argument("--account", metavar="NAME", help="only conversations of NAME")
    trace.add_argument(
        "--since",
        metavar="DURATION",
        help="only conversations active in the last DURATION (90s, 10m, 2h, 1d)",
    )
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(func=commands.trace)

    serve = sub.add_parser("serve", help="run the proxy (what run_proxy.sh calls)")
    serve.add_argument(
        "--upstream",
        default=_env("REGAUTH_UPSTREAM"),
        metavar="URL",
        help="registry URL; default: start a local docker-registry",
    )
    serve.add_argument(
        "--upstream-ca",
        default=_env("REGAUTH_UPSTREAM_CA"),
        metavar="FILE",
        help="private CA of an https upstream (default: the system CAs)",
    )
    serve.add_argument(
        "--listen",
        default=_env("REGAUTH_LISTEN", "127.0.0.1:5443"),
        metavar="HOST:PORT",
        help="where regauth listens (default %(default)s; [::1]:5443 for IPv6)",
    )
    serve.add_argument(
        "--public-url",
        default=_env("REGAUTH_PUBLIC_URL"),
        metavar="URL",
        help="what clients use (default: derived from --listen)",
    )
    serve.add_argument(
        "--certs-dir",
        default=_env("REGAUTH_CERTS_DIR", "certs"),
        metavar="DIR",
        help="CA and signing keys, created when missing (default %(default)s)",
    )
    serve.add_argument(
        "--policy",
        default=_env("REGAUTH_POLICY", "policies/default.yaml"),
        metavar="FILE",
        help="the policy (default %(default)s)",
    )
    serve.add_argument(
        "--log",
        default=_env("REGAUTH_LOG", "logs/exchange.jsonl"),
        metavar="FILE",
        help="the exchange log, JSON lines (default %(default)s)",
    )
    serve.add_argument(
        "--registry-dir",
        default=_env("REGAUTH_REGISTRY_DIR", "var/registry"),
        metavar="DIR",
        help="storage of the embedded registry, without --upstream (default %(default)s)",
    )
    serve.add_argument(
        "--web",
        action="store_true",
        default=_env("REGAUTH_WEB", "") in ("1", "true", "yes"),
        help="mitmweb instead of mitmdump, on 127.0.0.1, behind a printed token",
    )
    serve.add_argument(
        "--web-port",
        type=int,
        default=int(_env("REGAUTH_WEB_PORT", "8081")),
        metavar="PORT",
        help="mitmweb's port (default %(default)s)",
    )
    serve.add_argument(
        "--admin-listen",
        default=_env("REGAUTH_ADMIN_LISTEN"),
        metavar="HOST:PORT|off",
        help="/metrics, /healthz, /readyz (default 127.0.0.1:9090 when free)",
    )
    serve.add_argument(
        "--state",
        default=_env("REGAUTH_STATE", ""),
        metavar="URL",
        help="login-limit counters: redis://HOST:PORT/DB shared by replicas "
        "(default: in this process)",
    )
    serve.add_argument(
        "--delegate-unchecked",
        action="store_true",
        default=_env("REGAUTH_DELEGATE_UNCHECKED", "") in ("1", "true", "yes"),
        help="delegate mode: forward even when the registry does not check "
        "regauth's tokens (an open registry); for test setups only, "
        "logged as a warning",
    )
    serve.add_argument(
        "--proxy-protocol",
        default=_env("REGAUTH_PROXY_PROTOCOL", ""),
        metavar="CIDR[,CIDR...]",
        help="load balancers that send a PROXY protocol header (v1 or v2): "
        "required from them, refused from everyone else (default: none)",
    )
    serve.add_argument(
        "--allow-plain-http",
        action="store_true",
        default=_env("REGAUTH_ALLOW_PLAIN_HTTP", "") in ("1", "true", "yes"),
        help="also serve plain HTTP on the proxy port (test setups only: "
        "clients would send passwords in clear text)",
    )
    serve.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=_env("REGAUTH_VERBOSE", "") in ("1", "true", "yes"),
        help="console: also each forwarded request and connection churn (default: "
        "decisions, refusals and errors)",
    )
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="check the options and the policy, print the settings, exit without listening",
    )
    serve.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: extra mitmproxy arguments"
    )
    serve.set_defaults(func=commands.serve)

    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    completion.set_defaults(func=commands.completion)
    usage.document(parser)
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when regauth runs
    from a tree that was never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    try:
        return version("regauth")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "extra", None) and args.extra[0] == "--":
        args.extra = args.extra[1:]
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:
        print(f"regauth: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
