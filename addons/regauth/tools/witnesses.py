"""Witnesses for comparing policies exactly: repository names, client addresses, subjects.

A rule decides a repository scope from three things: who asks (account, groups, labels), the
repository name (does any of the rule's patterns match it?) and the client address (is it in
one of the rule's networks?). Two names that every rule of both policies treats alike (the same
rules match both) get the same decision under both policies, whatever the actions; likewise two
addresses inside the same networks. So one witness per non-empty class is enough to compare two
policies exactly, and `Policy.decide` on the witnesses gives the comparison.

Names: each rule's patterns become one regular expression (placeholders expanded with the
subject's values, capabilities as their character class and length). The product of their
automata with the OCI name grammar (interegular builds the automata) is searched breadth-first;
every reachable combination of "rule matches / does not" yields its shortest name. A
`{regex: …}` that interegular cannot read, or whose automaton disagrees with Python's `re` on a
witness, makes the result a sample, and says so.

Addresses: the boundaries of every network cut the IPv4 (and, if used, IPv6) space into
intervals inside which membership never changes; each interval's first address is its witness.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from interegular import parse_pattern
from interegular.fsm import FSM
from interegular.fsm import State
from interegular.fsm import TransitionKey
from interegular.fsm import anything_else

from regauth.ops.safe_text import quote
from regauth.policy.model import Account
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import Identity
from regauth.policy.model import Network
from regauth.policy.model import Policy
from regauth.policy.patterns import PLACEHOLDER_VARS
from regauth.policy.patterns import RepositoryPattern
from regauth.protocol import grammar
from regauth.protocol.scope import REPOSITORY

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-._/"
_TOKEN_RE = re.compile(r"\$\{(?P<var>" + PLACEHOLDER_VARS + r")\}|\*")
# The product search stops here and reports a sample: real policies stay far below it.
MAX_PRODUCT_STATES = 200_000


# -- patterns as regular expressions ---------------------------------------------------------


def _escape(text: str) -> str:
    return re.escape(text)


def pattern_regex(
    pattern: RepositoryPattern, policy: Policy, variables: dict[str, list[str]]
) -> str | None:
    """The regular expression `pattern` stands for, for an account with `variables`
    (`Identity.variables()`); None when a placeholder has no value (the pattern cannot match).
    Same semantics as patterns.py: `*` one segment, `**` one or more, `*` inside a segment any
    run within it, `{cap}` the capability's class and length range."""
    if pattern.is_regex:
        return pattern.source
    parts: list[str] = []
    capabilities = iter(pattern.capabilities)
    for segment in pattern.segments:
        if segment.kind == "literal":
            parts.append(_escape(segment.text))
        elif segment.kind == "star":
            parts.append("[^/]+")
        elif segment.kind == "globstar":
            parts.append("[^/]+(?:/[^/]+)*")
        elif segment.kind == "capability":
            cap = policy.capabilities[next(capabilities)]
            chars = "".join(sorted(cap.alphabet))
            parts.append(f"[{chars}]{{{cap.min_length},{cap.max_length}}}")
        else:
            out, pos = [], 0
            for m in _TOKEN_RE.finditer(segment.text):
                out.append(_escape(segment.text[pos : m.start()]))
                if m.group() == "*":
                    out.append("[^/]*")
                else:
                    values = variables.get(m.group("var"), [])
                    if not values:
                        return None
                    out.append("(?:" + "|".join(_escape(v) for v in values) + ")")
                pos = m.end()
            out.append(_escape(segment.text[pos:]))
            parts.append("".join(out))
    return "/".join(parts)


# -- name classes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NameWitnesses:
    names: tuple[str, ...]
    exact: bool
    notes: tuple[str, ...]  # why the result is a sample


@dataclass
class _Component:
    fsm: FSM
    live: frozenset[State]
    symbols: dict[str, TransitionKey]  # name character -> this automaton's transition key


# A state of the product automaton: one state per component, None where that component can no
# longer reach a final state.
_Product = tuple[State | None, ...]


def _live_states(fsm: FSM) -> frozenset[State]:
    """States from which a final state is reachable."""
    reverse: dict[State, set[State]] = {}
    for state, transitions in fsm.map.items():
        for target in transitions.values():
            reverse.setdefault(target, set()).add(state)
    live = set(fsm.finals)
    queue = deque(live)
    while queue:
        for source in reverse.get(queue.popleft(), ()):
            if source not in live:
                live.add(source)
                queue.append(source)
    return frozenset(live)


def name_witnesses(expressions: Iterable[str]) -> NameWitnesses:
    """One valid repository name (OCI grammar) for every non-empty combination of matching /
    not matching the given full-match expressions; shortest names first found."""
    unique = list(dict.fromkeys(expressions))
    notes: list[str] = []
    parsed = []
    readable: list[str] = []
    for expression in unique:
        try:
            parsed.append(parse_pattern(expression))
            readable.append(expression)
        except Exception as e:  # interegular raises several types for unsupported syntax
            notes.append(
                f"cannot analyse the regular expression {quote(expression)} "
                f"({type(e).__name__}); names for it are a sample"
            )
    components = []
    for p in [parse_pattern(grammar.NAME), *parsed]:
        fsm = p.to_fsm()
        components.append(
            _Component(
                fsm,
                _live_states(fsm),
                {
                    c: fsm.alphabet[c] if c in fsm.alphabet else fsm.alphabet[anything_else]
                    for c in _NAME_CHARS
                },
            )
        )
    # Characters every automaton treats alike are one: keep the first of each class.
    classes: dict[tuple[object, ...], str] = {}
    for c in _NAME_CHARS:
        classes.setdefault(tuple(component.symbols[c] for component in components), c)
    symbols = list(classes.values())
    names, vectors, truncated = _search(components, symbols)
    if truncated:
        notes.append(
            f"the name search stopped after {MAX_PRODUCT_STATES} states; names are a sample"
        )
    # Safety net: the automata must agree with Python's matcher on every witness.
    for expression in readable:
        compiled = re.compile(expression)
        index = readable.index(expression) + 1
        for name, vector in zip(names, vectors, strict=True):
            if vector[index - 1] != (compiled.fullmatch(name) is not None):
                notes.append(
                    f"the expression {quote(expression)} is not analysed exactly; "
                    "names for it are a sample"
                )
                break
    return NameWitnesses(tuple(names), not notes, tuple(notes))


def _search(
    components: list[_Component], symbols: list[str]
) -> tuple[list[str], list[tuple[bool, ...]], bool]:
    def step(state: _Product, char: str) -> _Product | None:
        out: list[State | None] = []
        for component, current in zip(components, state, strict=True):
            if current is None:
                out.append(None)
                continue
            target = component.fsm.map.get(current, {}).get(component.symbols[char])
            out.append(target if target in component.live else None)
        return None if out[0] is None else tuple(out)

    start = tuple(c.fsm.initial if c.fsm.initial in c.live else None for c in components)
    if start[0] is None:
        return [], [], False
    parent: dict[_Product, tuple[_Product, str] | None] = {start: None}
    queue = deque([(start, 0)])
    seen_vectors: dict[tuple[bool, ...], _Product] = {}
    while queue:
        state, depth = queue.popleft()
        if state[0] in components[0].fsm.finals:
            vector = tuple(
                s is not None and s in c.fsm.finals
                for c, s in zip(components[1:], state[1:], strict=True)
            )
            seen_vectors.setdefault(vector, state)
        if depth >= grammar.MAX_NAME_LENGTH:
            continue
        for char in symbols:
            target = step(state, char)
            if target is None or target in parent:
                continue
            parent[target] = (state, char)
            if len(parent) > MAX_PRODUCT_STATES:
                return (_spell(seen_vectors.values(), parent), list(seen_vectors), True)
            queue.append((target, depth + 1))
    return _spell(seen_vectors.values(), parent), list(seen_vectors), False


def _spell(
    states: Iterable[_Product], parent: dict[_Product, tuple[_Product, str] | None]
) -> list[str]:
    names = []
    for state in states:
        chars = []
        link = parent[state]
        while link is not None:
            previous, char = link
            chars.append(char)
            link = parent[previous]
        names.append("".join(reversed(chars)))
    return names


# -- address classes -------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressClass:
    witness: str
    first: ipaddress.IPv4Address | ipaddress.IPv6Address
    last: ipaddress.IPv4Address | ipaddress.IPv6Address

    def label(self) -> str:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            *ipaddress.summarize_address_range(self.first, self.last)
        ]
        return networks[0].with_prefixlen if len(networks) == 1 else f"{self.first}-{self.last}"


def address_classes(networks: Iterable[Network]) -> list[AddressClass]:
    """Intervals of the address space in which membership of every network is constant."""
    by_family: dict[int, set[int]] = {}
    for network in networks:
        cuts = by_family.setdefault(network.version, {0})
        cuts.add(int(network.network_address))
        end = int(network.broadcast_address) + 1
        if end < 2**network.max_prefixlen:
            cuts.add(end)
    if not by_family:
        by_family[4] = {0}
    classes = []
    for version, cuts in sorted(by_family.items()):
        top = 2 ** (32 if version == 4 else 128)
        ordered = sorted(cuts)
        for start, end in zip(ordered, [*ordered[1:], top], strict=True):
            first = ipaddress.IPv4Address(start) if version == 4 else ipaddress.IPv6Address(start)
            last = (
                ipaddress.IPv4Address(end - 1) if version == 4 else ipaddress.IPv6Address(end - 1)
            )
            classes.append(AddressClass(str(first), first, last))
    return classes


def merge_labels(classes: list[AddressClass], every: list[AddressClass]) -> tuple[str, ...]:
    """Readable ranges for a set of address classes; () when it is every address."""
    if len(classes) == len(every):
        return ()
    ordered = sorted(classes, key=lambda c: (c.first.version, int(c.first)))
    merged: list[AddressClass] = []
    for c in ordered:
        if (
            merged
            and merged[-1].last.version == c.first.version
            and int(merged[-1].last) + 1 == int(c.first)
        ):
            merged[-1] = AddressClass(merged[-1].witness, merged[-1].first, c.last)
        else:
            merged.append(c)
    return tuple(c.label() for c in merged)


# -- subjects --------------------------------------------------------------------------------

SYMBOLIC_ACCOUNT = "new-account"
SYMBOLIC_BUILD = "new-build"  # a build's client certificate, `${build}` in names


@dataclass(frozen=True)
class Subject:
    """Who asks: `anonymous`, a declared account, or a representative signed-in account that
    is in neither file (`authenticated`, optionally with one group or one label value)."""

    name: str
    old: Identity | None  # None: cannot sign in under that policy
    new: Identity | None
    symbolic: bool = False


def subjects(old: Policy, new: Policy) -> list[Subject]:
    out = [Subject("anonymous", Identity(None), Identity(None))]
    for name in sorted(set(old.accounts) | set(new.accounts)):
        out.append(Subject(name, _identity(old, name), _identity(new, name)))
    rules = [*old.rules, *new.rules]
    uses_placeholders = any(p.placeholders for r in rules for p in r.repositories)
    signed_in = [r for r in rules if any(a in ("authenticated", "any") for a in r.accounts)]
    symbolic: list[tuple[str, Account]] = []
    if signed_in or uses_placeholders:
        symbolic.append(("authenticated", Account(SYMBOLIC_ACCOUNT, b"")))
    uses_group = any("group" in p.placeholders for r in rules for p in r.repositories)
    groups = sorted(
        {g for r in signed_in for g in r.groups}
        | {g for p in (old, new) for a in p.accounts.values() for g in a.groups if uses_group}
    )
    for group in groups:
        symbolic.append((f"authenticated[group={group}]", Account(SYMBOLIC_ACCOUNT, b"", (group,))))
    labels: dict[str, set[str]] = {}
    for r in signed_in:
        for key, values in r.labels.items():
            labels.setdefault(key, set()).update(values)
    for r in rules:
        for p in r.repositories:
            for placeholder in p.placeholders:
                if placeholder.startswith("labels."):
                    labels.setdefault(placeholder.removeprefix("labels."), set()).add("new-value")
    for key in sorted(labels):
        for value in sorted(labels[key]):
            symbolic.append(
                (
                    f"authenticated[labels.{key}={value}]",
                    Account(SYMBOLIC_ACCOUNT, b"", (), {key: (value,)}),
                )
            )
    for name, account in symbolic:
        out.append(Subject(name, Identity(account), Identity(account), True))
    if any("build" in p.placeholders for r in rules for p in r.repositories):
        build = Identity(None, build=SYMBOLIC_BUILD)
        out.append(Subject("build certificate", build, build, True))
    out += federated_subjects(old, new)
    return out


def _glob_witness(pattern: str) -> str:
    """A value a claim glob matches (`acme/*` → `acme/x`)."""
    return re.sub(r"\[!?([^\]])[^\]]*\]", r"\1", pattern).replace("*", "x").replace("?", "x")


def federated_subjects(old: Policy, new: Policy) -> list[Subject]:
    """One representative ID token per `issuer:` rule of either policy: claims that satisfy
    the rule's conditions (a glob's simplest match), `new-value` for other claims its patterns
    name (`${claims.NAME}`), a group of the rule's; decided under each policy whose
    `federated_issuers` has that issuer (None where it has not: it cannot log in there)."""
    out: list[Subject] = []
    seen: set[tuple[object, ...]] = set()
    for rule in [*old.rules, *new.rules]:
        for issuer in rule.issuers:
            claims: dict[str, object] = {c.claim: _glob_witness(c.values[0]) for c in rule.claims}
            for pattern in rule.repositories:
                for placeholder in pattern.placeholders:
                    if placeholder.startswith("claims."):
                        claims.setdefault(placeholder.removeprefix("claims."), "new-value")
            groups = rule.groups[:1]
            key = (issuer, tuple(sorted(claims.items())), groups)
            if key in seen:
                continue
            seen.add(key)
            shown = ",".join(f"{k}={v}" for k, v in claims.items())
            name = f"{issuer} token[{shown}]" if shown else f"{issuer} token"
            identities = [
                Identity(None, federated=FederatedIdentity(issuer, name, groups, claims, 0.0))
                if any(i.name == issuer for i in policy.federated_issuers)
                else None
                for policy in (old, new)
            ]
            out.append(Subject(name, identities[0], identities[1], True))
    return out


def _identity(policy: Policy, name: str) -> Identity | None:
    account = policy.accounts.get(name)
    return Identity(account) if account is not None else None


def subject_expressions(subject: Subject, old: Policy, new: Policy) -> list[str]:
    """The name expression of every pattern of every repository rule that can match this
    subject (one per pattern, so each pattern gets witnesses of its own)."""
    expressions = []
    for policy, identity in ((old, subject.old), (new, subject.new)):
        if identity is None:
            continue
        variables = identity.variables()
        for rule in policy.rules:
            if rule.resource_type != REPOSITORY or not rule.matches_identity(identity):
                continue
            for pattern in rule.repositories:
                expression = pattern_regex(pattern, policy, variables)
                if expression is not None:
                    expressions.append(expression)
    return expressions
