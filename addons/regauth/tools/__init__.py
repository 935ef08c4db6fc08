"""Operator tools: test, diff and replay policy changes; trace and diagnose auth flows.

One module per command or concern, all sans-IO except for reading the files they are given:

- `check`: `regauth policy check [--no-secrets]`
- `policy_tests`: `regauth policy test POLICY TESTS [--junit FILE]`
- `witnesses` + `policy_diff`: `regauth policy diff OLD NEW`
- `log_records`: the exchange log read back, grouped into conversations
- `replay`: `regauth replay LOG --policy NEW`
- `diagnosis` + `trace`: `regauth trace LOG`
- `certs`: `regauth certs list|rotate|activate|retire` (the signing keys' lifecycle)
- `render`: terminal output (rich on a terminal, plain text otherwise, JSON on request)

Exit codes shared by the commands: 0 success, 1 the answer the command exists for is "no"
(invalid policy, failed test, new access, changed decision), 2 the input could not be used.
"""

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_INPUT = 2
