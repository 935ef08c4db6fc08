"""Worst-case time per call of every parser and matcher that runs on client input.

Usage (from the repository root):

    .venv/bin/python bench/worst_case.py [--repeat N] [--search N] [--no-contrast]

A client chooses repository names, request paths, scope strings and (as a registry) challenge
headers; one call that is slow on a crafted input stalls the proxy's single event loop for every
client. For each parser the script builds the worst inputs it can:

  hand-built   classic adversarial shapes (nested quantifiers pumped with `a`, names full of
               `/manifests/`, runs of separators, unterminated quoted strings, ...), each at
               the longest length the parser accepts before its own length check;
  hypothesis   a targeted search (hypothesis `target()`): the input is prefix + pump * k +
               suffix, with prefix, pump and suffix drawn from the parser's alphabet, and the
               search maximizes the measured time of one call. The slowest input found is
               re-measured like the hand-built ones.

For every input it prints: the input's shape and length, the median time per call over
`--repeat` samples (each sample runs the call enough times to last about 5 ms), the ratio to a
benign input of the same length measured in the same run (an ordinary name, path, scope or
header), and the growth exponent: log(t(L) / t(L/4)) / log 4, measured on the same shape at a
quarter of the length (1 = linear, 2 = quadratic; noisy below ~1 µs per call).

Rows marked `pre-#16` measure the engine regauth used before issue 16 (Python's backtracking
`re` on the same regex text), at lengths short enough to finish, for contrast: they are what a
super-linear row looks like. `--no-contrast` skips them. No number here is asserted by a test.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from hypothesis import HealthCheck
from hypothesis import Phase
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis import target

from regauth.policy.load import load_policy_text
from regauth.policy.model import Identity
from regauth.policy.patterns import compile_glob
from regauth.policy.patterns import compile_regex
from regauth.protocol import challenge
from regauth.protocol import grammar
from regauth.protocol import jwt_inspect
from regauth.protocol import routes
from regauth.protocol import scope

NAME_MAX = grammar.MAX_NAME_LENGTH  # 255
PATH_MAX = routes.MAX_PATH_LENGTH  # 2048
SCOPE_MAX = scope.MAX_SCOPE_LENGTH  # 1024
HEADER_MAX = challenge.MAX_HEADER_LENGTH  # 8192
LOG_LINE = 65536  # an exchange-log line with a long client-chosen path and headers
BODY = 65536  # a request body shown by the JWT content view
SAMPLE_SECONDS = 0.005
SLOW = 2.0  # a single call slower than this is reported as a lower bound, not repeated


@dataclass
class Case:
    """One parser (or one policy pattern) and the inputs to try on it."""

    parser: str
    call: Callable[[str], object]
    max_len: int
    benign: Callable[[int], str]
    worst: list[tuple[str, Callable[[int], str]]]
    alphabet: list[str] = field(default_factory=list)  # tokens for the hypothesis search
    contrast: bool = False  # the pre-#16 engine: short lengths only


def _quiet(fn: Callable[[str], object]) -> Callable[[str], object]:
    """Parsers raise ValueError on bad input: that is an answer, and part of the cost."""

    def call(text: str) -> object:
        try:
            return fn(text)
        except ValueError as e:
            return e

    return call


def _fit(text: str, length: int) -> str:
    return text[:length]


def _pump(prefix: str, unit: str, suffix: str) -> Callable[[int], str]:
    """prefix + unit * k + suffix, exactly `length` characters (the unit is cut to fit)."""

    def build(length: int) -> str:
        room = max(length - len(prefix) - len(suffix), 0)
        body = (unit * (room // len(unit) + 1))[:room]
        return _fit(prefix + body + suffix, length)

    return build


_rng = random.Random(16)


def _benign_name(length: int) -> str:
    """An ordinary repository name: lower-case words joined by '/' and '-'."""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < length:
        size = _rng.randint(3, 9)
        parts.append("".join(_rng.choice(string.ascii_lowercase) for _ in range(size)))
    return "/".join(parts)[:length].rstrip("/-").ljust(length, "x")


def _benign_path(length: int) -> str:
    head, tail = "/v2/", "/manifests/latest"
    return head + _benign_name(length - len(head) - len(tail)) + tail


def _benign_scope(length: int) -> str:
    head, tail = "repository:", ":pull,push"
    return (
        head
        + _benign_name(min(length - len(head) - len(tail), NAME_MAX)).ljust(
            length - len(head) - len(tail), "x"
        )
        + tail
    )


def _benign_header(length: int) -> str:
    base = 'Bearer realm="https://auth.example/token",service="registry.example",scope="'
    return (base + "repository:" + _benign_name(length)).ljust(length, "x")[: length - 1] + '"'


def _benign_text(length: int) -> str:
    words = " ".join(_benign_name(12) for _ in range(length // 13 + 1))
    return words[:length]


# -- the cases --------------------------------------------------------------------------------

CATASTROPHIC = ("(a+)+b", "(a|aa)+b", "([a-z0-9]+-?)+", "(team-[a-z]+/)*app", "(.*a){20}")


def _regex_cases() -> list[Case]:
    cases = []
    worst_inputs = {
        "(a+)+b": [("a*N", _pump("", "a", "")), ("a*N + '!'", _pump("", "a", "!"))],
        "(a|aa)+b": [("a*N", _pump("", "a", ""))],
        "([a-z0-9]+-?)+": [
            ("a*N + '!'", _pump("", "a", "!")),
            ("(a-)*N + '!'", _pump("", "a-", "!")),
        ],
        "(team-[a-z]+/)*app": [
            ("(team-a/)*N + 'x'", _pump("", "team-a/", "x")),
            ("team-aaaa... + '!'", _pump("team-", "a", "!")),
        ],
        "(.*a){20}": [("a*N + '!'", _pump("", "a", "!")), ("(ab)*N", _pump("", "ab", ""))],
    }
    for source in CATASTROPHIC:
        pattern = compile_regex(source)
        cases.append(
            Case(
                f"regex {source}",
                pattern.matches,
                NAME_MAX,
                _benign_name,
                worst_inputs[source],
                ["a", "b", "-", "/", "team-", "app", "!"],
            )
        )
    return cases


def _glob_cases() -> list[Case]:
    groups = {"group": ["a", "aa", "a-a", "dev"], "account": ["a"], "labels.team": ["a", "aa"]}
    specs = [
        ("a*a*a*a*a*a*b", [("a*N", _pump("", "a", "")), ("a*N + 'c'", _pump("", "a", "c"))]),
        ("*a*a*a*a*a*b", [("a*N", _pump("", "a", ""))]),
        (
            "**/**/**/**/b",
            [("(a/)*N + 'a'", _pump("", "a/", "a")), ("(a/)*N + 'c'", _pump("", "a/", "c"))],
        ),
        ("a/**/a/**/a/**/b", [("(a/)*N + 'a'", _pump("", "a/", "a"))]),
        (
            "${group}*${group}*${group}*b",
            [("a*N", _pump("", "a", "")), ("(a-)*N", _pump("", "a-", ""))],
        ),
        (
            "**/${labels.team}/**/${account}-*",
            [("(a/)*N", _pump("", "a/", "a")), ("(a/)*N + 'a-'", _pump("", "a/", "a-"))],
        ),
    ]
    cases = []
    for source, worst in specs:
        pattern = compile_glob(source, {})

        def call(name: str, pattern=pattern) -> object:  # type: ignore[no-untyped-def]
            return pattern.matches(name, groups)

        cases.append(
            Case(
                f"glob {source}",
                call,
                NAME_MAX,
                _benign_name,
                worst,
                ["a", "b", "-", "/", "a-", "dev"],
            )
        )
    return cases


def _decide_case() -> Case:
    """Policy.decide over a policy whose every rule is one of the patterns above."""
    rules = "".join(
        f"  - repository: {{regex: '{r}'}}\n    actions: [pull]\n" for r in CATASTROPHIC
    )
    rules += "".join(
        f"  - repository: '{g}'\n    actions: [pull]\n"
        for g in ("a*a*a*a*a*a*b", "**/**/**/**/b", "a/**/a/**/a/**/b")
    )
    policy = load_policy_text(f"version: 1\nservice: s\nrules:\n{rules}")
    anonymous = Identity(None)

    def call(name: str) -> object:
        return policy.decide(anonymous, scope.ResourceScope("repository", name, ("pull",)), None)

    return Case(
        "Policy.decide (8 catastrophic rules)",
        call,
        NAME_MAX,
        _benign_name,
        [
            ("a*N", _pump("", "a", "")),
            ("(a/)*N + 'a'", _pump("", "a/", "a")),
            ("(team-a/)*N + 'x'", _pump("", "team-a/", "x")),
        ],
        ["a", "b", "/", "-"],
    )


def _grammar_cases() -> list[Case]:
    return [
        Case(
            "grammar.is_name",
            grammar.is_name,
            NAME_MAX,
            _benign_name,
            [
                ("a + '-'*N + '!'", _pump("a", "-", "!")),
                ("(a.)*N + '!'", _pump("", "a.", "!")),
                ("(a__)*N + '_'", _pump("", "a__", "_")),
                ("(a/)*N + '/'", _pump("", "a/", "/")),
            ],
            ["a", "-", ".", "_", "__", "/", "!", "A"],
        ),
        Case(
            "grammar.is_scope_name",
            grammar.is_scope_name,
            NAME_MAX,
            _benign_name,
            [
                ("(a-)*N + '!'", _pump("", "a-", "!")),
                ("(a.)*N + ':1/a!'", _pump("", "a.", ":1/a!")),
                ("a-a-a... + '.:/x'", _pump("a", "-a", ".:/x")),
            ],
            ["a", "-", ".", ":", "1", "/", "!"],
        ),
        Case(
            "grammar.is_digest",
            grammar.is_digest,
            PATH_MAX,
            lambda n: ("sha256:" + "ab" * n)[:n],
            [
                ("(a.)*N + '!'", _pump("", "a.", "!")),
                ("a*N + ':' + '='*N + '!'", _pump("a:", "=", "!")),
            ],
            ["a", ".", "+", "_", "-", ":", "=", "!"],
        ),
    ]


def _route_case() -> Case:
    def call(path: str) -> object:
        return routes.match_route("GET", path)

    return Case(
        "routes.match_route",
        _quiet(call),
        PATH_MAX,
        _benign_path,
        [
            ("/v2/ + (a/manifests/)*N + '!'", _pump("/v2/", "a/manifests/", "!")),
            ("/v2/ + (manifests/)*N + 'x!'", _pump("/v2/", "manifests/", "x!")),
            ("/v2/ + (a/blobs/uploads/)*N", _pump("/v2/", "a/blobs/uploads/", "x/!")),
            ("/v2/a + '-'*N + '/tags/list'", _pump("/v2/a", "-", "a/tags/lisx")),
            ("/v2/ + (a.)*N + '/manifests/!'", _pump("/v2/", "a.", "a/manifests/!")),
            ("/v2/a/manifests/ + (a.)*N + '!'", _pump("/v2/a/manifests/", "a.", "!")),
            ("/v2/ + (a/referrers/)*N + 'x'", _pump("/v2/", "a/referrers/", "x")),
        ],
        ["/v2/", "a", "/", "-", ".", "manifests/", "blobs/", "uploads/", "tags/list", ":", "!"],
    )


def _scope_cases() -> list[Case]:
    return [
        Case(
            "scope.parse_scope",
            _quiet(scope.parse_scope),
            SCOPE_MAX,
            _benign_scope,
            [
                ("repository: + (a-)*N + ':pull'", _pump("repository:", "a-", "!:pull")),
                ("repository: + (a.)*N + ':1/a:pull'", _pump("repository:", "a.", ":1/a:pull")),
                ("repository:a: + 'pull,'*N", _pump("repository:a:", "pull,", "pul!")),
                ("'::'*N", _pump("", ":", "")),
            ],
            ["repository", ":", "a", "-", ".", "/", "pull", ",", "*", "(", ")"],
        ),
        Case(
            "scope.parse_scopes (one value)",
            _quiet(lambda v: scope.parse_scopes([v])),
            routes.MAX_QUERY_LENGTH,
            lambda n: " ".join(f"repository:{_benign_name(20)}:pull" for _ in range(n // 36 + 1))[
                :n
            ],
            [
                ("'repository:a:pull '*N", _pump("", "repository:a:pull ", "")),
                ("' '*N", _pump("", " ", "")),
            ],
            ["repository:a:pull", " ", ":", "a", ","],
        ),
    ]


def _challenge_case() -> Case:
    return Case(
        "challenge.parse_challenges",
        _quiet(challenge.parse_challenges),
        HEADER_MAX,
        _benign_header,
        [
            ("Bearer a=\" + '\\\\\"'*N (unterminated)", _pump('Bearer a="', '\\"', "")),
            ("Bearer + ' a=b,'*N", _pump("Bearer", " a=b,", "")),
            ("'a ,'*N", _pump("", "a ,", "")),
            ("Bearer a=b, + ' '*N + 'c'", _pump("Bearer a=b,", " ", "c")),
            ("Bearer + 'a'*N + '=='*N + '!'", _pump("Bearer " + "a" * 4000, "=", "!")),
            ('Bearer x="",\'*N', _pump("Bearer ", 'x="",', "")),
            ('Bearer a="x" + \',c="\'*N', _pump('Bearer a="x"', ',c="', "")),
        ],
        ["Bearer", " ", "a", "=", '"', "\\", ",", "\t", "b=c"],
    )


def _redactor_case() -> Case:
    policy = load_policy_text("""\
version: 1
service: s
capabilities:
  build-id: "[a-z0-9]{26}"
  long-id: "[0-9a-f]{32,64}"
rules:
  - repository: ["builds/{build-id}", "l/{long-id}/**"]
    actions: [pull]
""")
    redactor = policy.capability_redactor()
    assert redactor is not None
    return Case(
        "Policy.capability_redactor sub",
        lambda line: redactor.sub("<id>", line),
        LOG_LINE,
        _benign_text,
        [
            ("('/' + 'a'*63 + '.')*N", _pump("", "/" + "a" * 63 + ".", "")),
            ("'/a'*N", _pump("", "/a", "")),
            ("('/' + 'a'*64)*N", _pump("", "/" + "a" * 64, "")),
        ],
        ["/", "a", "0", ".", "-", " "],
    )


def _jwt_case() -> Case:
    return Case(
        "jwt_inspect.find_jwts",
        jwt_inspect.find_jwts,
        BODY,
        _benign_text,
        [
            ("'eyJ'*N", _pump("", "eyJ", "")),
            ("'eyJa.'*N", _pump("", "eyJa.", "")),
        ],
        ["eyJ", "a", ".", "-", " "],
    )


_OLD_JWT = r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"


def _contrast_cases() -> list[Case]:
    """The pre-#16 engine (Python re on the same regex text), at lengths that still finish."""

    def old(regex: str) -> Callable[[str], object]:
        compiled = re.compile(regex)
        return compiled.fullmatch

    glob = compile_glob("a*a*a*a*a*a*b", {})
    glob_regex = glob._expand({})
    assert glob_regex is not None
    return [
        Case(
            "pre-#16 regex (a+)+b",
            old("(a+)+b"),
            22,
            _benign_name,
            [("a*N", _pump("", "a", ""))],
            contrast=True,
        ),
        Case(
            "pre-#16 regex ([a-z0-9]+-?)+",
            old("([a-z0-9]+-?)+"),
            24,
            _benign_name,
            [("a*N + '!'", _pump("", "a", "!"))],
            contrast=True,
        ),
        Case(
            "pre-#16 glob a*a*a*a*a*a*b",
            old(glob_regex),
            96,
            _benign_name,
            [("a*N", _pump("", "a", ""))],
            contrast=True,
        ),
        Case(
            "pre-#16 jwt_inspect.find_jwts",
            re.compile(_OLD_JWT).findall,
            BODY // 4,
            _benign_text,
            [("'eyJ'*N", _pump("", "eyJ", ""))],
            contrast=True,
        ),
    ]


def all_cases(contrast: bool) -> list[Case]:
    cases = [
        *_regex_cases(),
        *_glob_cases(),
        _decide_case(),
        *_grammar_cases(),
        _route_case(),
        *_scope_cases(),
        _challenge_case(),
        _redactor_case(),
        _jwt_case(),
    ]
    return cases + (_contrast_cases() if contrast else [])


# -- measuring --------------------------------------------------------------------------------


def _once(call: Callable[[str], object], text: str) -> float:
    start = time.perf_counter()
    call(text)
    return time.perf_counter() - start


def _loops(call: Callable[[str], object], text: str) -> int:
    """Calls per sample so that one sample lasts about SAMPLE_SECONDS (0 if one call is SLOW)."""
    first = _once(call, text)
    if first > SLOW:
        return 0
    return max(1, min(100_000, int(SAMPLE_SECONDS / max(first, 1e-7))))


def per_call(call: Callable[[str], object], texts: list[str], repeat: int) -> list[float]:
    """Median seconds per call for each text, the texts' samples interleaved round by round so
    that load from other processes hits them alike (this machine has 2 cores, often shared)."""
    loops = [_loops(call, text) for text in texts]
    samples: list[list[float]] = [[] for _ in texts]
    for _ in range(repeat):
        for i, text in enumerate(texts):
            if loops[i] == 0:
                continue
            start = time.perf_counter()
            for _ in range(loops[i]):
                call(text)
            samples[i].append((time.perf_counter() - start) / loops[i])
    return [
        statistics.median(s) if s else _once(call, t) for s, t in zip(samples, texts, strict=True)
    ]


def search(case: Case, examples: int) -> tuple[str, str] | None:
    """Hypothesis-targeted search for the slowest prefix + pump*k + suffix input."""
    if not case.alphabet or examples <= 0:
        return None
    tokens = st.lists(st.sampled_from(case.alphabet), min_size=0, max_size=4).map("".join)
    best: dict[str, object] = {"time": -1.0, "text": ""}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate, Phase.target],
        suppress_health_check=list(HealthCheck),
    )
    @given(tokens, tokens.filter(bool), tokens)
    def explore(prefix: str, unit: str, suffix: str) -> None:
        text = _pump(prefix, unit, suffix)(case.max_len)
        elapsed = min(_once(case.call, text) for _ in range(2))
        target(elapsed, label="seconds per call")
        if elapsed > best["time"]:  # type: ignore[operator]
            best.update(time=elapsed, text=text, shape=f"{prefix!r} + {unit!r}*N + {suffix!r}")

    explore()
    return str(best["shape"]), str(best["text"])


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="samples per median (default 9)")
    parser.add_argument(
        "--search",
        type=int,
        default=150,
        help="hypothesis examples per parser (default 150, 0 to skip)",
    )
    parser.add_argument(
        "--no-contrast", action="store_true", help="skip the pre-#16 rows (Python's re)"
    )
    args = parser.parse_args(argv)

    rows = []
    for case in all_cases(not args.no_contrast):
        length = case.max_len
        found = None if case.contrast else search(case, args.search)
        for shape, build in case.worst:
            text = build(length)
            benign, t, quarter = per_call(
                case.call, [case.benign(len(text)), text, build(max(length // 4, 1))], args.repeat
            )
            growth = math.log(t / quarter, 4) if quarter > 0 and t > 0 else float("nan")
            rows.append((case.parser, shape, len(text), t, t / benign, growth))
        if found is not None:
            shape, text = found
            benign, t = per_call(case.call, [case.benign(len(text)), text], args.repeat)
            rows.append(
                (case.parser, f"hypothesis: {shape}", len(text), t, t / benign, float("nan"))
            )
        print(f"measured {case.parser}", file=sys.stderr)

    headers = ("parser", "worst input shape", "length", "time/call", "× benign", "growth")
    table = [
        (
            p,
            s if len(s) <= 48 else s[:47] + "…",
            str(n),
            _fmt(t),
            f"{r:.1f}",
            "" if math.isnan(g) else f"{g:.2f}",
        )
        for p, s, n, t, r, g in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print(
        f"\nmedian of {args.repeat} samples per cell; benign = an ordinary input of the same "
        f"length; growth = log4(t(L) / t(L/4)), 1 = linear",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
