"""What `regauth --help` says: each command's description, examples and environment
variables, the help of positional arguments, and the option spellings shared by commands
(issue 26 item 5).

`document(parser)` runs once over the finished parser (`regauth.cli.build_parser`): each
command gets its one-line help as its description and its examples (`EXAMPLES`) as the epilog,
shown verbatim (`argparse.RawDescriptionHelpFormatter`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

DESCRIPTION = """\
regauth: an authenticating, authorizing proxy in front of a container registry
(distribution's token auth). `regauth serve` runs the proxy; the other commands manage its
keys, passwords, job tokens and policies, and read its exchange log."""

ENVIRONMENT = """\
environment (each one is the default of the option it names):
  REGAUTH_UPSTREAM, REGAUTH_UPSTREAM_CA, REGAUTH_LISTEN, REGAUTH_PUBLIC_URL,
  REGAUTH_CERTS_DIR (--certs-dir), REGAUTH_POLICY (--policy), REGAUTH_LOG (--log),
  REGAUTH_REGISTRY_DIR, REGAUTH_WEB=1, REGAUTH_WEB_PORT, REGAUTH_ADMIN_LISTEN,
  REGAUTH_STATE (--state), REGAUTH_DELEGATE_UNCHECKED=1, REGAUTH_PROXY_PROTOCOL,
  REGAUTH_ALLOW_PLAIN_HTTP=1, REGAUTH_VERBOSE=1 (-v)
  and the *_env secrets a policy names (password hashes, upstream credentials)"""

# Examples by command path ("" is `regauth` itself). Each is shown under "examples:".
EXAMPLES: dict[str, str] = {
    "": """\
  regauth serve --upstream https://registry.internal:5000 --policy policies/staging.yaml
  regauth policy check policies/*.yaml
  regauth certs list --json
  regauth completion bash > /etc/bash_completion.d/regauth""",
    "certs": "  regauth certs init\n  regauth certs list",
    "certs init": "  regauth certs init --certs-dir /etc/regauth/certs",
    "certs bundle": "  regauth certs bundle > /etc/docker/registry/regauth-bundle.pem",
    "certs list": "  regauth certs list\n  regauth certs list --json | jq '.keys[].name'",
    "certs rotate": "  regauth certs rotate --activate-after 1d",
    "certs activate": "  regauth certs activate token-signing-20261207-ab12cd",
    "certs retire": "  regauth certs retire token-signing-20261101-ef34ab",
    "certs client": """\
  regauth certs client --build 01hx4m2k9q0000000000000000 --out ./client-cert
  regauth certs client --account ci --ttl 2h --out ./ci-cert --quiet""",
    "certs revoke": "  regauth certs revoke --serial 5f3a9c\n  regauth certs revoke --build ID",
    "token": "  regauth token issue --build ID --scope repository:builds/ID:push\n"
    "  regauth token list --json",
    "token issue": "  regauth token issue --account ci --ttl 1h "
    "--scope repository:demo/app:pull,push",
    "token list": "  regauth token list --all --json",
    "token revoke": "  regauth token revoke 3f2a",
    "token admin-secret": "  regauth token admin-secret",
    "passwd": "  regauth passwd alice\n  printf '%s\\n' \"$PW\" | regauth passwd --stdin",
    "policy": "  regauth policy check policies/default.yaml\n"
    "  regauth policy explain policies/default.yaml --account ci repository:demo/app:push",
    "policy check": "  regauth policy check policies/*.yaml\n"
    "  regauth policy check --no-secrets --json policies/staging.yaml",
    "policy test": "  regauth policy test policies/staging.yaml policies/staging.tests.yaml",
    "policy diff": "  regauth policy diff old.yaml policies/staging.yaml",
    "policy explain": "  regauth policy explain policies/staging.yaml --account alice "
    "repository:teams/web/site:push",
    "replay": "  regauth replay logs/exchange.jsonl --policy new.yaml",
    "trace": "  regauth trace logs/exchange.jsonl --account alice --since 10m\n"
    "  regauth trace logs/exchange.jsonl --follow",
    "serve": """\
  regauth serve --upstream https://registry.internal:5000 --listen :5443 \\
      --public-url https://registry.example.com:5443 --state redis://127.0.0.1:6379/0
  regauth serve --dry-run            # check the options and the policy, then exit
  regauth serve -v -- --set regauth_idle_timeout=120""",
    "completion": "  regauth completion bash > ~/.local/share/bash-completion/completions/regauth\n"
    '  regauth completion zsh > "${fpath[1]}/_regauth"',
}

# Help for positional arguments the parsers leave undocumented, by command path and dest.
POSITIONALS: dict[tuple[str, str], str] = {
    ("policy check", "files"): "policy files to validate",
    ("policy test", "policy"): "the policy file",
    ("policy test", "tests"): "the tests file (YAML: cases and their expected outcome)",
    ("policy diff", "old"): "the policy in force",
    ("policy diff", "new"): "the changed policy",
    ("policy explain", "file"): "the policy file",
    ("policy explain", "scopes"): "scopes to decide, e.g. repository:demo/app:pull,push",
    ("replay", "log"): "the exchange log (JSONL) to re-decide",
    ("trace", "log"): "the exchange log (JSONL) to read",
}


def certs_dir_option(parser: argparse.ArgumentParser, default: str, help: str) -> None:
    """`--certs-dir DIR` (dest `dir`), the spelling `regauth serve` and run_proxy.sh use; the
    old `--dir` still works and is not shown."""
    parser.add_argument("--certs-dir", dest="dir", default=default, metavar="DIR", help=help)
    parser.add_argument("--dir", dest="dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def commands(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (command path, parser) of the tree, `("", parser)` first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{path} {name}".strip())


def document(parser: argparse.ArgumentParser) -> None:
    """Set descriptions, epilogs and positional help on the finished parser (module doc)."""
    helps: dict[str, str] = {}
    for _, command in commands(parser):
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    helps[f"{command.prog} {choice.dest}"] = choice.help or ""
    for path, command in commands(parser):
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        if path == "":
            command.description = DESCRIPTION
        elif not command.description:
            command.description = helps.get(command.prog, "")
        epilog = EXAMPLES.get(path)
        parts = [f"examples:\n{epilog}"] if epilog else []
        if path in ("", "serve"):
            parts.append(ENVIRONMENT)
        command.epilog = "\n\n".join(parts) or None
        for action in command._actions:
            if not action.option_strings and action.help is None:
                action.help = POSITIONALS.get((path, action.dest))
