"""Operator tools: test, diff and replay policy changes; trace and diagnose auth flows.

One module per command or concern, all sans-IO except for reading the files they are given:

- `check`: `regauth policy check [--no-secrets]`
- `policy_tests`: `regauth policy test POLICY TESTS [--junit FILE]`
- `witnesses` + `policy_diff`: `regauth policy diff OLD NEW`
- `log_records`: the exchange log read back, grouped into conversations
- `log_sources`: many log files (directories, globs, gzip) merged into one time-ordered stream
- `replay`: `regauth replay LOG... --policy NEW`
- `diagnosis` + `trace`: `regauth trace LOG...` (`trust_snippets`: how each client trusts the CA)
- `certs`: `regauth certs list|rotate|activate|retire` (the signing keys' lifecycle)
- `render`: terminal output (rich on a terminal, plain text otherwise, JSON on request)

The exit codes of every `regauth` command, named here once. The tools (README "Changing a
policy safely"): 0 success, 1 the answer the command exists for is "no" (invalid policy, failed
test, new access, changed decision), 2 the input could not be used (also a usage error). The
other commands (`serve`, `certs init` and `bundle`, `passwd`, `policy explain`) have no finding:
1 says they could not do what was asked (an invalid policy or an error at start, no signing
key, passwords that differ), 2 an argument that cannot be used.
"""

EXIT_OK = 0
EXIT_FINDING = 1  # the tools: the finding the command exists for
EXIT_INPUT = 2  # an input or argument that cannot be used (argparse's usage errors exit 2 too)
EXIT_FAILED = 1  # the other commands: it could not be done (documented for `serve`: README)
