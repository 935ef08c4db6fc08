"""`regauth policy test POLICY TESTS [--junit FILE] [-v] [--json]`: expectations about a policy,
as in `opa test`.

The tests file (YAML):

    tests:
      - name: ci writes the build cache
        account: ci                          # an account of the policy, or `anonymous` (default)
        build: b1                            # or: as the client certificate of build b1
        identity: {subject: eve, groups: [release]}   # or any identity (tools/identities.py)
        ip: 10.20.1.5                        # optional client address
        scope: "repository:cache/go:pull,push"
        granted: [pull, push]                # the exact set expected; [] = nothing
        rule: 4                              # optional: the deciding rule (1-based) or its comment

Each test decides its scope with `Policy.decide`, exactly as the token service does, and
compares the granted actions as a set (and the deciding rule when given; `default deny` names
no rule). The tests file is read strictly: unknown keys and malformed scopes are errors with
`file:line:column`, so a typo cannot turn a test into one that always passes.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from regauth.ops.safe_text import escape
from regauth.policy import yamlpos
from regauth.policy.model import Policy
from regauth.policy.model import ScopeDecision
from regauth.protocol.scope import ACTIONS
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import canonical_actions
from regauth.protocol.scope import parse_scopes
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_OK
from regauth.tools import identities
from regauth.tools.identities import CaseIdentity
from regauth.tools.render import Printer

DEFAULT_DENY = "default deny"
_KEYS = {"name", "identity", "account", "build", "ip", "scope", "granted", "rule"}


class TestFileError(ValueError):
    """The tests file cannot be used; `problems` are `file:line:column: message` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PolicyTest:
    """One expectation of a tests file: who asks for which scope, and what must be granted."""

    name: str
    line: int
    identity: CaseIdentity  # who asks (`identity:`, or the `account:`/`build:` shorthands)
    ip: str | None
    scope: ResourceScope
    granted: tuple[str, ...]
    rule: int | str | None  # index, comment, DEFAULT_DENY, or None (not checked)

    @property
    def who(self) -> str:
        """Who asks, from where: `ci`, `certificate regauth:build:b1 from 10.0.0.1`."""
        return self.identity.describe() + (f" from {self.ip}" if self.ip else "")


@dataclass(frozen=True)
class PolicyTestResult:
    """A test run against the policy: the decision, and each way it missed the test."""

    test: PolicyTest
    decision: ScopeDecision | None  # None when the policy cannot have the identity
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_tests(path: Path) -> list[PolicyTest]:
    """Parse a tests file; raise TestFileError naming every problem by file:line:column."""
    file = str(path)
    try:
        doc = yamlpos.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise TestFileError([f"{file}:1:1: cannot read tests: {e}"]) from None
    except yamlpos.YamlError as e:
        pos = e.position or yamlpos.Position(1, 1)
        raise TestFileError([f"{file}:{pos.line}:{pos.column}: {e.message}"]) from None
    problems: list[str] = []
    if not isinstance(doc, yamlpos.Map) or not isinstance(doc.get("tests"), yamlpos.Seq):
        raise TestFileError([f"{file}:1:1: a tests file is a mapping with a `tests:` list"])
    extra = [k for k in doc if k != "tests"]
    for key in extra:
        pos = doc.key_positions[key]
        problems.append(f"{file}:{pos.line}:{pos.column}: unknown key {key!r} (only `tests:`)")
    tests: list[PolicyTest] = []
    names: set[str] = set()
    for index, item in enumerate(doc["tests"]):
        where = doc["tests"].where(index)
        try:
            test = _parse_test(item, where, index + 1)
        except ValueError as e:
            pos, message = e.args if len(e.args) == 2 else (where, str(e))
            problems.append(f"{file}:{pos.line}:{pos.column}: test {index + 1}: {message}")
            continue
        if test.name in names:
            problems.append(
                f"{file}:{where.line}:{where.column}: test {index + 1}: the name "
                f"{test.name!r} is used twice"
            )
        names.add(test.name)
        tests.append(test)
    if problems:
        raise TestFileError(problems)
    return tests


def _parse_test(item: object, where: yamlpos.Position, number: int) -> PolicyTest:
    if not isinstance(item, yamlpos.Map):
        raise ValueError(where, "each test is a mapping")
    for key in item:
        if key not in _KEYS:
            raise ValueError(
                item.key_positions[key],
                f"unknown key {key!r} (allowed: {', '.join(sorted(_KEYS))})",
            )
    for key in ("scope", "granted"):
        if key not in item:
            raise ValueError(where, f"`{key}:` is required")
    name = item.get("name", f"test {number}")
    ip = item.get("ip")
    if not isinstance(name, str) or not name:
        raise ValueError(item.where("name"), "name must be a non-empty string")
    identity = _parse_identity(item)
    if ip is not None:
        try:
            ipaddress.ip_address(str(ip))
        except ValueError:
            raise ValueError(item.where("ip"), f"ip {ip!r} is not an IP address") from None
    scope_text = item["scope"]
    if not isinstance(scope_text, str):
        raise ValueError(
            item.where("scope"), "scope must be a string such as 'repository:cache/go:pull,push'"
        )
    try:
        scopes = parse_scopes([scope_text])
    except ValueError as e:
        raise ValueError(item.where("scope"), f"malformed scope: {e}") from None
    if len(scopes) != 1:
        raise ValueError(item.where("scope"), "a test decides exactly one resource scope")
    granted = item["granted"]
    if not isinstance(granted, list) or not all(isinstance(a, str) for a in granted):
        raise ValueError(
            item.where("granted"), "granted must be a list of actions ([] for nothing)"
        )
    unknown = [a for a in granted if a not in ACTIONS]
    if unknown:
        raise ValueError(
            item.where("granted"), f"unknown action {unknown[0]!r} (pull, push, delete or '*')"
        )
    rule = item.get("rule")
    if rule is not None and (
        isinstance(rule, bool)
        or not isinstance(rule, int | str)
        or (isinstance(rule, int) and rule < 1)
    ):
        raise ValueError(
            item.where("rule"),
            "rule must be a 1-based rule index, a rule's comment, or 'default deny'",
        )
    return PolicyTest(
        str(name),
        where.line,
        identity,
        None if ip is None else str(ip),
        scopes[0],
        canonical_actions(granted),
        rule,
    )


def _parse_identity(item: yamlpos.Map) -> CaseIdentity:
    """`identity:`, or the older `account:` / `build:` shorthands (not together)."""
    shorthands = [k for k in ("account", "build") if k in item]
    if "identity" in item:
        if shorthands:
            raise ValueError(
                item.where(shorthands[0]), f"identity and {shorthands[0]} name two identities"
            )
        try:
            return identities.parse(item["identity"])
        except ValueError as e:
            raise ValueError(item.where("identity"), str(e)) from None
    account = item.get("account", "anonymous")
    if not isinstance(account, str) or not account:
        raise ValueError(item.where("account"), "account must be a non-empty string")
    build = item.get("build")
    if build is not None:
        try:
            uri = identities.build_certificate(str(build))
        except ValueError as e:
            raise ValueError(item.where("build"), str(e)) from None
        if account != "anonymous":
            raise ValueError(item.where("build"), "build and account name two identities")
        return CaseIdentity(client_certificate=uri)
    return identities.ANONYMOUS_CASE if account == "anonymous" else CaseIdentity(account=account)


def run_test(policy: Policy, test: PolicyTest) -> PolicyTestResult:
    try:
        identity = identities.resolve(test.identity, policy)
    except ValueError as e:
        return PolicyTestResult(test, None, (str(e),))
    decision = policy.decide(identity, test.scope, test.ip)
    failures = []
    if set(decision.granted) != set(test.granted):
        failures.append(
            f"expected [{', '.join(test.granted)}], got [{', '.join(decision.granted)}]"
        )
    if test.rule is not None and not _rule_matches(test.rule, decision):
        failures.append(f"expected the deciding rule to be {_rule_name(test.rule)}")
    return PolicyTestResult(test, decision, tuple(failures))


def _rule_matches(expected: int | str, decision: ScopeDecision) -> bool:
    rule = decision.rule
    if expected == DEFAULT_DENY:
        return rule is None
    if rule is None:
        return False
    return rule.index == expected if isinstance(expected, int) else rule.comment == expected


def _rule_name(expected: int | str) -> str:
    if isinstance(expected, int):
        return f"rule {expected}"
    return DEFAULT_DENY if expected == DEFAULT_DENY else f"the rule {expected!r}"


def describe_rule(policy: Policy, decision: ScopeDecision) -> str:
    """`rule 4 (policies/x.yaml:38): comment`, or `default deny`."""
    rule = decision.rule
    if rule is None:
        return DEFAULT_DENY
    text = f"rule {rule.index} ({policy.source}:{rule.line})"
    return f"{text}: {rule.comment}" if rule.comment else text


def report(
    policy: Policy,
    tests_file: str,
    outcomes: list[PolicyTestResult],
    out: Printer | None = None,
    verbose: bool = False,
) -> int:
    """Print one line per failure (with details) and a summary, with `verbose` also one line
    per passing test; exit code 1 if any failed."""
    out = out or Printer()
    failed = [o for o in outcomes if not o.passed]
    if verbose:
        for outcome in outcomes:
            if outcome.passed and outcome.decision is not None:
                test = outcome.test
                out.line(
                    ("ok", "green"),
                    f"   {test.name}: {test.who} asks {test.scope} → "
                    f"[{', '.join(outcome.decision.granted)}] by "
                    f"{describe_rule(policy, outcome.decision)}",
                )
    for outcome in failed:
        test = outcome.test
        out.line(("FAIL", "bold red"), f" {test.name} ", (f"({tests_file}:{test.line})", "dim"))
        out.line(f"  {test.who} asks {test.scope}")
        for failure in outcome.failures:
            out.line("  ", (failure, "red"))
        if outcome.decision is not None:
            out.line(f"  decided by {describe_rule(policy, outcome.decision)}")
    passed = len(outcomes) - len(failed)
    style = "bold red" if failed else "bold green"
    out.line(
        (f"{passed} passed, {len(failed)} failed", style),
        f" ({len(outcomes)} tests, policy {policy.source})",
    )
    return EXIT_FINDING if failed else EXIT_OK


def as_json(policy: Policy, tests_file: str, outcomes: list[PolicyTestResult]) -> dict[str, object]:
    """The facts of the report, every test included: who asked for what, what was granted by
    which rule, and each way it missed."""
    failed = sum(1 for o in outcomes if not o.passed)
    return {
        "policy": policy.source,
        "tests_file": tests_file,
        "passed": len(outcomes) - failed,
        "failed": failed,
        "tests": [
            {
                "name": o.test.name,
                "line": o.test.line,
                "identity": o.test.identity.as_json(),
                "ip": o.test.ip,
                "scope": str(o.test.scope),
                "expected": list(o.test.granted),
                "passed": o.passed,
                "failures": list(o.failures),
                "decision": o.decision.as_record() if o.decision is not None else None,
            }
            for o in outcomes
        ],
    }


def junit_xml(policy: Policy, tests_file: str, outcomes: list[PolicyTestResult]) -> bytes:
    """JUnit XML (the schema CI systems read: testsuites/testsuite/testcase/failure).

    Text from the tests file and the policy is escaped like every other output: CI pages show
    it, and XML 1.0 cannot even hold most control characters."""
    failures = sum(1 for o in outcomes if not o.passed)
    suites = ET.Element("testsuites", tests=str(len(outcomes)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=escape(f"regauth policy {policy.source}"),
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for outcome in outcomes:
        test = outcome.test
        case = ET.SubElement(
            suite,
            "testcase",
            name=escape(test.name),
            classname=escape(tests_file),
            file=escape(tests_file),
            line=str(test.line),
        )
        if not outcome.passed:
            rule = describe_rule(policy, outcome.decision) if outcome.decision else "-"
            failure = ET.SubElement(
                case,
                "failure",
                message=escape("; ".join(outcome.failures)),
                type="PolicyTestFailure",
            )
            failure.text = (
                "\n".join(
                    escape(line)
                    for line in (
                        f"{test.who} asks {test.scope}",
                        *outcome.failures,
                        f"decided by {rule}",
                    )
                )
                + "\n"
            )
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
