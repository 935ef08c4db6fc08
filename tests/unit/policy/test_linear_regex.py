"""Policy regexes: the syntax RE2 and Python's re read alike, and nothing else (issue 16).

Refusals carry `file:line:col` (the `repository:` value), the position in the regex and a hint;
every regex a policy or test of this repository already uses keeps its meaning.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from regauth.policy.linear_regex import RegexError
from regauth.policy.linear_regex import compile_policy_regex
from regauth.policy.load import load_policy_text
from regauth.policy.model import Identity
from regauth.policy.reader import PolicyError
from regauth.protocol.scope import parse_scope

ROOT = Path(__file__).resolve().parents[3]

HEAD = """\
version: 1
service: svc
rules:
  - comment: first
    repository: {regex: %s}
    actions: [pull]
"""  # the regex value is on line 5; `{` of the flow mapping at column 17


def _refusal(regex_yaml: str) -> str:
    with pytest.raises(PolicyError) as e:
        load_policy_text(HEAD % regex_yaml, file="p.yaml")
    lines = str(e.value).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# (regex as written in YAML, what the message must say, its position in the regex)
REFUSED = [
    (r"'(a)\1'", "RE2 has no backreferences (\\1)", 3),
    (r"'(?P<n>a)(?P=n)'", "RE2 has no named backreferences", 8),
    (r"'(?=x)a'", "RE2 has no lookahead (?=", 0),
    (r"'a(?!x)'", "RE2 has no negative lookahead (?!", 1),
    (r"'(?<=x)a'", "RE2 has no lookbehind (?<=", 0),
    (r"'b/(?<!x)a'", "RE2 has no negative lookbehind (?<!", 2),
    (r"'(?>a+)b'", "RE2 has no atomic group (?>", 0),
    (r"'a*+b'", "RE2 has no possessive quantifiers (*+)", 1),
    (r"'xa++'", "RE2 has no possessive quantifiers (++)", 2),
    (r"'(a)(?(1)b|c)'", "RE2 has no conditional group (?(", 3),
    (r"'(?x)a b'", "RE2 has no verbose flag x (?x", 0),
    (r"'(?#note)a'", "RE2 has no inline comment (?#", 0),
    (r"'a\Z'", "RE2 does not support \\Z", 1),
    (r"'a\z'", "only RE2 reads this, Python's re says: bad escape \\z", 1),
    (r"'\pL+'", "only RE2 reads this, Python's re says: bad escape \\p", 0),
    (r"'(?<n>a)'", "only RE2 reads this, Python's re says: unknown extension ?<n", 0),
    (r"'a(?i)b'", "only RE2 reads this, Python's re says: global flags not at the start", 1),
    (r"'[[:alpha:]]+'", "RE2 and Python's re read this class differently (Possible nested set)", 1),
    (r"'a{,3}'", "repetition {,3} reads differently in RE2 (literal text) and Python's re", 1),
    (r"'a{01}'", "repetition {01} reads differently", 1),
    (r"'a{x}'", "'{' that does not open a repetition", 1),
    (r"'a{1001}'", "repetition {1001} (RE2 allows at most 1000", 1),
    (r"'[\b]'", "RE2 does not support \\b", 1),
    ("'caf\u00e9'", "character '\u00e9' is outside ASCII", 3),
]


@pytest.mark.parametrize(("regex", "message", "position"), REFUSED)
def test_regexes_outside_the_dialect_are_refused_with_positions(regex, message, position):
    line = _refusal(regex)
    assert line.startswith("p.yaml:5:17: rule 1: bad repository pattern: "), line
    assert message in line
    assert f"at position {position}" in line
    hint = line.split(f"at position {position}", 1)[1]
    assert hint.startswith("; ") and len(hint) > 10, line  # every refusal carries a hint


@pytest.mark.parametrize(
    ("regex", "hint"),
    [
        (r"(?=x)a", "deny: true"),
        (r"a++", "never backtracks"),
        (r"a\Z", "anchored"),
        (r"a{,3}", "write {0,3}"),
        (r"[[:alpha:]]", "write [a-zA-Z]"),
        (r"(?<n>a)", "(?P<name>...)"),
        (r"(a)\1", "alternatives"),
        (r"a{x}", "\\{"),
    ],
)
def test_refusals_say_what_to_write_instead(regex, hint):
    with pytest.raises(RegexError) as e:
        compile_policy_regex(regex)
    assert hint in e.value.hint


def test_plain_syntax_errors_keep_pythons_words():
    line = _refusal("'a(('")
    assert line == (
        "p.yaml:5:17: rule 1: bad repository pattern: invalid regular expression: "
        "missing ), unterminated subpattern at position 2"
    )


def test_refusals_in_a_list_and_in_block_style_point_at_their_item():
    text = textwrap.dedent("""\
        version: 1
        service: svc
        rules:
          - repository:
              - ok/**
              - regex: '(?=x)a'
            actions: [pull]
          - repository:
              regex: '(a)\\1'
            actions: [pull]
        """)
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, file="p.yaml")
    lines = str(e.value).splitlines()
    assert lines[0].startswith("p.yaml:6:9: rule 1: bad repository pattern: RE2 has no lookahead")
    assert lines[1].startswith(
        "p.yaml:9:7: rule 2: bad repository pattern: RE2 has no backreferences"
    )


def test_policy_check_refuses_non_re2_patterns(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD % "'team-(?!admin)[a-z]+/.*'")
    result = subprocess.run(
        [sys.executable, "-m", "regauth.cli", "policy", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"{path}:5:17: rule 1: bad repository pattern: RE2 has no "
        "negative lookahead (?! at position 5; "
    )
    assert "re2.cc" not in result.stderr  # RE2's own logging is off


def test_accepted_constructs():
    for regex in (
        r"(?i)APPS/[a-z]+",
        r"(?s).+",
        r"(?m)^a$",
        r"(?i:a)b",
        r"(?-i:a)",
        r"(?P<team>[a-z]+)/app",
        r"\d+\w*\s?",
        r"a{2}b{1,}c{0,3}?",
        r"\x61\.\-\/",
        r"[]a]",
        r"[^]a/]+",
        r"\Aa\b",
        r"a|",
        r"(?:)",
        r"a\{b\}",
        "[{]",
    ):
        compile_policy_regex(regex)


# -- existing regexes keep their meaning -----------------------------------------------------

_REGEX_VALUE = re.compile(r"""regex:\s*(?:'([^']*)'|"((?:[^"\\]|\\.)*)"|([^,}'"\s][^,}]*))""")


def _existing_regexes() -> list[str]:
    """Every `regex:` value in the shipped policies, the schema's examples and the tests."""
    found: set[str] = set()
    files = [
        *ROOT.glob("policies/*.yaml"),
        *ROOT.glob("tests/**/*.py"),
        ROOT / "README.md",
        ROOT / "policies/policy.schema.json",
    ]
    for path in files:
        if path.name == Path(__file__).name:
            continue
        for m in _REGEX_VALUE.finditer(path.read_text()):
            value = next(g for g in m.groups() if g is not None).strip()
            # Skip test templates ({{...}}, %s, {pattern}, {draw(...)}): they are filled in
            # elsewhere.
            if (
                value
                and value not in ("…", "...")
                and not re.search(r"\{\{|%|\{[a-z_]+[}(]", value)
            ):
                found.add(value)
    return sorted(found)


EXISTING = _existing_regexes()
NAMES = [
    "a",
    "x/abc",
    "x/ABC",
    "x/",
    "re/abc-12",
    "re/abc-12/x",
    "x/re/abc-12",
    "re/abc",
    "apps/shop",
    "apps/shop/v2",
    "apps/Shop",
    "builds/" + "a" * 26,
    "builds/" + "a" * 25,
    "builds/" + "a" * 26 + "/x",
    "a/b",
    "a/",
    "a/.x",
    "apps/a-b",
    "ab",
    "b",
]


def test_existing_regexes_were_found():
    # Guards the scan above: these are in policy/test_load.py, test_model.py and
    # test_load_files.py today.
    assert {"builds/[a-z0-9]{26}", "re/[a-z]+-[0-9]+", "x/[a-z]+"} <= set(EXISTING)


@pytest.mark.parametrize("regex", EXISTING)
def test_existing_regexes_keep_their_meaning(regex):
    try:
        python = re.compile(regex)
    except re.error:
        with pytest.raises(RegexError):  # invalid before, invalid now
            compile_policy_regex(regex)
        return
    compiled = compile_policy_regex(regex)  # valid before: still accepted
    for name in NAMES:
        assert (compiled.fullmatch(name) is not None) == (python.fullmatch(name) is not None)


def test_existing_regex_rules_decide_scopes_as_before():
    valid = [r for r in EXISTING if _python_compiles(r)]
    rules = "".join(f"  - repository: {{regex: '{r}'}}\n    actions: [pull]\n" for r in valid)
    policy = load_policy_text(f"version: 1\nservice: svc\nrules:\n{rules}")
    for name in NAMES:
        if name.endswith("/") or name.endswith("/.x") or name != name.lower():
            continue  # not repository names
        decision = policy.decide(Identity(None), parse_scope(f"repository:{name}:pull"), None)
        expected = next((i + 1 for i, r in enumerate(valid) if re.fullmatch(r, name)), None)
        assert (decision.rule.index if decision.rule else None) == expected, name


def _python_compiles(regex: str) -> bool:
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


# -- the engines agree on everything the dialect accepts ---------------------------------------

TOKENS = [
    "a",
    "b",
    "A",
    "0",
    "-",
    "_",
    ".",
    "/",
    ":",
    "*",
    "+",
    "?",
    "*?",
    "|",
    "(",
    ")",
    "(?:",
    "(?i)",
    "(?i:",
    "(?-i:",
    "(?s)",
    "(?m)",
    "[",
    "]",
    "[^",
    "^",
    "$",
    "{",
    "}",
    ",",
    "1",
    "2",
    "{2}",
    "{1,3}",
    "{0,}",
    "{,2}",
    "{01}",
    "\\",
    "\\d",
    "\\w",
    "\\s",
    "\\b",
    "\\B",
    "\\D",
    "\\W",
    "\\S",
    "\\A",
    "\\Z",
    "\\z",
    "\\x41",
    "\\x2f",
    "\\0",
    "\\101",
    "\\1",
    "\\.",
    "\\-",
    "\\/",
    "\\[",
    "\\]",
    "\\{",
    "\\}",
    "\\\\",
    "[:alpha:]",
    "\\t",
    "\\v",
    "k",
    "s",
    "K",
    "(?P<n>",
    "(?P=n)",
    "a-z",
    "A-Z",
    "&&",
    "--",
    "\\Q",
    "\\E",
    "\\pN",
    ".",
    "\\xff",
    "(?U)",
    "\\C",
    " ",
    "#",
]
# Repository names as scopes carry them: ASCII letters, digits, `._-:/`.
NAME_ALPHABET = "abAzKks09-_./:"
DOMAIN = re.compile(r"[A-Za-z0-9._:/-]+")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=10).map("".join), st.data())
def test_re2_and_python_agree_on_every_accepted_regex(regex, data):
    try:
        compiled = compile_policy_regex(regex)
    except RegexError:
        return
    python = re.compile(regex)
    names = data.draw(st.lists(st.text(NAME_ALPHABET, min_size=1, max_size=8), max_size=6))
    try:  # names Python matches, so that both answers get checked, not only "no"
        names += data.draw(st.lists(st.from_regex(python, fullmatch=True), max_size=3))
    except Exception:  # from_regex cannot build a strategy for every regex
        pass
    for name in names:
        if DOMAIN.fullmatch(name):
            assert (compiled.fullmatch(name) is not None) == (python.fullmatch(name) is not None), (
                regex,
                name,
            )
