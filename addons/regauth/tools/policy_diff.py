"""`regauth policy diff OLD NEW [-v] [--json]`: what access changes, per subject, as in IAM Access
Analyzer's check-no-new-access.

For every subject (anonymous, each account of either file, and representative signed-in
accounts in neither file where `authenticated`, groups, labels or placeholders matter), every
witness name (one per class of names that every rule of both files treats alike, see
`witnesses`), every address class of the rules' networks and every action (`pull`, `push`,
`delete` on repositories; `*` on `registry:catalog`), both policies decide with
`Policy.decide`. A difference is a change: `+` gained (NEW grants, OLD did not), `-` lost.

Changes with the same subject, action, deciding rules and addresses are one `Change`, with
their first witness name and how many more names share it. The report groups them by rule
change (`RuleChange`: the same sign, both deciding rules and the granting patterns, i.e. one
edit of the file) and prints one line per group with how many (subject, action, name)
witnesses changed; `-v` lists each change under its group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from regauth.ops.safe_text import quote
from regauth.policy.model import Identity
from regauth.policy.model import Policy
from regauth.policy.model import ScopeDecision
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import REPOSITORY
from regauth.protocol.scope import ResourceScope
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_OK
from regauth.tools.render import Printer
from regauth.tools.witnesses import SYMBOLIC_ACCOUNT
from regauth.tools.witnesses import SYMBOLIC_BUILD
from regauth.tools.witnesses import AddressClass
from regauth.tools.witnesses import Subject
from regauth.tools.witnesses import address_classes
from regauth.tools.witnesses import merge_labels
from regauth.tools.witnesses import name_witnesses
from regauth.tools.witnesses import subject_expressions
from regauth.tools.witnesses import subjects

REPOSITORY_ACTIONS = ("pull", "push", "delete")
CATALOG = "registry:catalog"


@dataclass(frozen=True)
class RuleRef:
    """A deciding rule as shown: index, file:line and comment; or why nothing decided."""

    text: str
    index: int | None = None
    location: str | None = None
    comment: str = ""

    @classmethod
    def of(cls, policy: Policy, decision: ScopeDecision | None) -> RuleRef:
        if decision is None:
            return cls("no such account (cannot sign in)")
        rule = decision.rule
        if rule is None:
            return cls("default deny")
        location = f"{policy.source}:{rule.line}"
        text = f"rule {rule.index} ({location})"
        if rule.comment:
            text += f" {quote(rule.comment)}"
        return cls(text, rule.index, location, rule.comment)

    def as_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "rule": self.index,
            "location": self.location,
            "comment": self.comment or None,
        }


@dataclass
class Change:
    """One access that differs between the two policies, with a witness name and address."""

    sign: str  # "+" gained, "-" lost
    subject: str
    action: str
    old: RuleRef
    new: RuleRef
    addresses: tuple[str, ...]  # () = from any address
    names: list[str] = field(default_factory=list)  # witness names, or [CATALOG]
    patterns: tuple[str, ...] = ()  # the granting rule's repository patterns
    address: str = ""  # one client address the change holds for (a witness)

    def as_json(self) -> dict[str, object]:
        return {
            "change": "gained" if self.sign == "+" else "lost",
            "subject": self.subject,
            "action": self.action,
            "names": self.names,
            "patterns": list(self.patterns),
            "addresses": list(self.addresses) or None,
            "example_address": self.address,
            "old": self.old.as_json(),
            "new": self.new.as_json(),
        }


@dataclass
class DiffResult:
    """Every change from `old` to `new`; `exact` is False when only a sample was compared."""

    old: Policy
    new: Policy
    changes: list[Change]
    exact: bool
    notes: list[str]
    checked: int  # decisions compared

    @property
    def gained(self) -> bool:
        return any(c.sign == "+" for c in self.changes)


def _decide(
    policy: Policy, identity: Identity | None, scope: ResourceScope, address: str
) -> ScopeDecision | None:
    return None if identity is None else policy.decide(identity, scope, address)


def _has(decision: ScopeDecision | None, action: str) -> bool:
    return decision is not None and (action in decision.granted or "*" in decision.granted)


def _patterns(decision: ScopeDecision | None, identity: Identity | None) -> tuple[str, ...]:
    """The deciding rule's patterns that match the decided name."""
    if decision is None or decision.rule is None or identity is None:
        return ()
    variables = identity.variables()
    return tuple(
        p.source
        for p in decision.rule.repositories
        if p.matches(decision.requested.name, variables)
    )


@dataclass
class RuleChange:
    """The changes one edit of the policy makes: the same sign, deciding rules (old and new)
    and granting patterns."""

    sign: str
    old: RuleRef
    new: RuleRef
    patterns: tuple[str, ...]
    changes: list[Change] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many (subject, action, name witness) triples changed."""
        return sum(len(c.names) for c in self.changes)

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(c.subject for c in self.changes))

    @property
    def actions(self) -> list[str]:
        return list(dict.fromkeys(c.action for c in self.changes))

    @property
    def addresses(self) -> list[str]:
        """Client addresses the changes are limited to ([] when every change holds from any)."""
        if any(not c.addresses for c in self.changes):
            return []
        return list(dict.fromkeys(a for c in self.changes for a in c.addresses))

    def as_json(self, index: dict[int, int]) -> dict[str, object]:
        return {
            "change": "gained" if self.sign == "+" else "lost",
            "old": self.old.as_json(),
            "new": self.new.as_json(),
            "patterns": list(self.patterns),
            "count": self.count,
            "subjects": self.subjects,
            "actions": self.actions,
            "addresses": self.addresses or None,
            "changes": [index[id(c)] for c in self.changes],  # positions in `changes`
        }


def rule_changes(changes: list[Change]) -> list[RuleChange]:
    """`changes` grouped by rule change, gains first, then in the order of the rules."""
    groups: dict[tuple[object, ...], RuleChange] = {}
    for change in changes:
        patterns = tuple(sorted(change.patterns))
        key = (change.sign, change.old, change.new, patterns)
        if key not in groups:
            groups[key] = RuleChange(change.sign, change.old, change.new, patterns)
        groups[key].changes.append(change)

    def order(group: RuleChange) -> tuple[object, ...]:
        deciding = group.new if group.sign == "+" else group.old
        return (group.sign != "+", deciding.index or 0, group.old.text, group.new.text)

    return sorted(groups.values(), key=order)


def diff_policies(old: Policy, new: Policy, extra: Sequence[Subject] = ()) -> DiffResult:
    """Every decision that differs between `old` and `new`, for the subjects `witnesses`
    derives from both policies plus `extra` (`--claims`: a given ID token's identity)."""
    addresses = address_classes([n for p in (old, new) for r in p.rules for n in r.networks])
    groups: dict[tuple[object, ...], Change] = {}
    per_address: dict[tuple[object, ...], list[AddressClass]] = {}
    notes: list[str] = []
    exact = True
    checked = 0
    for subject in [*subjects(old, new), *extra]:
        witnesses = name_witnesses(subject_expressions(subject, old, new))
        exact = exact and witnesses.exact
        notes += [n for n in witnesses.notes if n not in notes]
        resources = [
            ResourceScope(REPOSITORY, name, (action,))
            for name in witnesses.names
            for action in REPOSITORY_ACTIONS
        ]
        resources.append(ResourceScope(REGISTRY, "catalog", ("*",)))
        for scope in resources:
            for address in addresses:
                checked += 1
                before = _decide(old, subject.old, scope, address.witness)
                after = _decide(new, subject.new, scope, address.witness)
                action = scope.actions[0]
                had, has = _has(before, action), _has(after, action)
                if had == has:
                    continue
                _record(
                    groups,
                    per_address,
                    subject,
                    scope,
                    address,
                    old,
                    new,
                    before,
                    after,
                    "+" if has else "-",
                )
    changes = []
    for key, change in groups.items():
        change.addresses = merge_labels(per_address[key], addresses)
        changes.append(change)
    return DiffResult(old, new, _without_repeats(_merge_addresses(changes)), exact, notes, checked)


def _record(
    groups: dict[tuple[object, ...], Change],
    per_address: dict[tuple[object, ...], list[AddressClass]],
    subject: Subject,
    scope: ResourceScope,
    address: AddressClass,
    old: Policy,
    new: Policy,
    before: ScopeDecision | None,
    after: ScopeDecision | None,
    sign: str,
) -> None:
    name = CATALOG if scope.type == REGISTRY else scope.name
    if subject.symbolic:
        name = name.replace(SYMBOLIC_ACCOUNT, "${account}").replace(SYMBOLIC_BUILD, "${build}")
    old_ref, new_ref = RuleRef.of(old, before), RuleRef.of(new, after)
    key = (sign, subject.name, scope.actions[0], old_ref, new_ref, name)
    granting = _patterns(after, subject.new) if sign == "+" else _patterns(before, subject.old)
    if key not in groups:
        groups[key] = Change(
            sign,
            subject.name,
            scope.actions[0],
            old_ref,
            new_ref,
            (),
            [name],
            granting,
            address.witness,
        )
        per_address[key] = []
    per_address[key].append(address)


def _merge_addresses(changes: list[Change]) -> list[Change]:
    """One change per (sign, subject, action, rules, addresses), listing all its names."""
    merged: dict[tuple[object, ...], Change] = {}
    for change in changes:
        key = (change.sign, change.subject, change.action, change.old, change.new, change.addresses)
        if key in merged:
            merged[key].names.extend(n for n in change.names if n not in merged[key].names)
            merged[key].patterns += tuple(
                p for p in change.patterns if p not in merged[key].patterns
            )
        else:
            merged[key] = change
    return sorted(merged.values(), key=lambda c: (c.sign != "+", c.subject, c.action, c.names[0]))


def _without_repeats(changes: list[Change]) -> list[Change]:
    """Representative signed-in subjects (`authenticated[group=…]`) only show what differs
    from plain `authenticated`."""

    def shape(c: Change) -> tuple[object, ...]:
        return (c.sign, c.action, c.old, c.new, c.addresses, tuple(c.names))

    base = {shape(c) for c in changes if c.subject == "authenticated"}
    return [c for c in changes if not (c.subject.startswith("authenticated[") and shape(c) in base)]


MAX_SUBJECTS_SHOWN = 4  # on a rule change's line; the rest are counted


def _change_line(change: Change, out: Printer, indent: str) -> None:
    style = "green" if change.sign == "+" else "red"
    target = change.names[0]
    more = f" (+{len(change.names) - 1} more names)" if len(change.names) > 1 else ""
    via = f" [pattern {', '.join(change.patterns)}]" if change.patterns else ""
    where = f" from {', '.join(change.addresses)}" if change.addresses else ""
    out.line(
        indent,
        (f"{change.sign} {change.subject} {change.action} {target}", f"bold {style}"),
        more,
        where,
        (via, "dim"),
    )
    out.line(indent, "    old: ", change.old.text, "  new: ", change.new.text)


def _group_line(group: RuleChange, out: Printer) -> None:
    style = "green" if group.sign == "+" else "red"
    word = "gained" if group.sign == "+" else "lost"
    subjects = group.subjects
    shown = ", ".join(subjects[:MAX_SUBJECTS_SHOWN])
    if len(subjects) > MAX_SUBJECTS_SHOWN:
        shown += f" +{len(subjects) - MAX_SUBJECTS_SHOWN} more"
    via = f" [pattern {', '.join(group.patterns)}]" if group.patterns else ""
    where = f"; from {', '.join(group.addresses)}" if group.addresses else ""
    out.line(
        (f"{group.sign} {group.count} {word}", f"bold {style}"),
        f": {group.old.text} → {group.new.text}",
        (via, "dim"),
        f" ({shown}: {', '.join(group.actions)}{where})",
    )


def report(result: DiffResult, out: Printer | None = None, verbose: bool = False) -> int:
    """Print one line per rule change (with each change under it when `verbose`); exit code 1
    when NEW grants anything OLD did not, else 0."""
    out = out or Printer()
    groups = rule_changes(result.changes)
    for group in groups:
        _group_line(group, out)
        if verbose:
            for change in group.changes:
                _change_line(change, out, "    ")
    if not result.exact:
        out.line(
            ("sample: ", "bold yellow"),
            "the comparison is exact for glob rules only; ",
            "; ".join(result.notes),
        )
    gained = sum(g.count for g in groups if g.sign == "+")
    lost = sum(g.count for g in groups if g.sign == "-")
    summary = f"{gained} gained, {lost} lost in {len(groups)} rule changes"
    summary += f" ({result.checked} decisions compared"
    summary += ", exact)" if result.exact else ", sample)"
    out.line((summary, "bold red" if gained else "bold green"))
    return EXIT_FINDING if result.gained else EXIT_OK


def as_json(result: DiffResult) -> dict[str, object]:
    """The facts of the report: every change, and the rule changes that group them (each
    naming its changes by position in `changes`)."""
    index = {id(c): i for i, c in enumerate(result.changes)}
    return {
        "old": result.old.source,
        "new": result.new.source,
        "exact": result.exact,
        "notes": result.notes,
        "decisions_compared": result.checked,
        "gained": result.gained,
        "changes": [c.as_json() for c in result.changes],
        "rule_changes": [g.as_json(index) for g in rule_changes(result.changes)],
    }
