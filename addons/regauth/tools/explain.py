"""`regauth policy explain`: the deciding rule for a scope and, when the answer is not a full
grant, the near misses: the rules that would have granted more, each with the first condition
it failed.

A rule's conditions are checked in this order, the order `Policy.decide` reads them: the
resource type, the account (`account:`), its groups, its labels, the repository patterns (or
`registry:catalog`), the client address (`networks:`), and last its place in the list (a rule
after the deciding one never gets to decide). The breakdown is checked against the rule's own
`matches_identity`, `matches_resource` and `matches_network`: where a part of the identity the
breakdown does not know about decides (a federated identity's issuer or claims), the identity
is one condition, so an explanation never disagrees with a decision.

Near misses are the rules of the scope's type, other than the deciding one, that allow an
action the decision did not grant. "Nearest" means: the candidates that fail on exactly one
condition (up to `MAX_NEAREST`, those whose repository matches first, then in file order);
when none does, the `MAX_CLOSEST` candidates that fail on the fewest conditions, first in the
file first. The report says which it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from regauth.federation.claim_rules import claim_texts
from regauth.ops.safe_text import quote
from regauth.policy.model import ANONYMOUS
from regauth.policy.model import ANY
from regauth.policy.model import AUTHENTICATED
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import Identity
from regauth.policy.model import Policy
from regauth.policy.model import Rule
from regauth.policy.model import ScopeDecision
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import ResourceScope
from regauth.tools.render import Printer

MAX_NEAREST = 5  # rules failing on one condition shown; more are counted
MAX_CLOSEST = 3  # rules shown when none fails on one condition only

Nearness = Literal["one condition", "closest", "none"]


@dataclass(frozen=True)
class Condition:
    """One condition of a rule for one request: its name, whether it holds, and what was
    compared (`repository 'demo/*' does not match 'demo2/x'`)."""

    name: str  # type, account, group, labels, identity, repository, network, order
    holds: bool
    detail: str


@dataclass(frozen=True)
class NearMiss:
    """A rule that would have granted more, and how each of its conditions went."""

    rule: Rule
    conditions: tuple[Condition, ...]

    @property
    def failed(self) -> list[Condition]:
        return [c for c in self.conditions if not c.holds]

    def summary(self) -> str:
        """`account matches; repository 'demo/*' does not match 'demo2/x'` (the conditions
        that held before the first that failed, then that one), `(+N more)` for the rest."""
        parts = []
        for condition in self.conditions:
            if condition.holds:
                parts.append(f"{condition.name} matches")
                continue
            parts.append(condition.detail)
            break
        more = len(self.failed) - 1
        return "; ".join(parts) + (f" (+{more} more failing)" if more > 0 else "")


@dataclass(frozen=True)
class Explanation:
    """The decision for one scope, and the near misses when it is not a full grant."""

    decision: ScopeDecision
    near: tuple[NearMiss, ...]
    nearness: Nearness  # which near misses `near` holds (see the module docstring)
    more: int  # candidates failing on one condition beyond MAX_NEAREST


def _federated_conditions(rule: Rule, federated: FederatedIdentity) -> list[Condition]:
    """An identity from an ID token: its issuer (or `account: any`), groups, each claim."""
    if rule.issuers:
        ok = federated.issuer in rule.issuers
        out = [
            Condition(
                "issuer",
                ok,
                f"issuer: {', '.join(rule.issuers)}"
                + (" matches " if ok else " does not match ")
                + quote(federated.issuer),
            )
        ]
    else:
        ok = ANY in rule.accounts and not rule.groups and not rule.labels
        text = (
            "account: any matches every identity"
            if ok
            else f"account: {', '.join(rule.accounts)} is for the policy's accounts, not for "
            "identities from ID tokens (name the issuer with `issuer:`)"
        )
        return [Condition("account", ok, text)]
    if rule.groups:
        ok = bool(set(rule.groups) & set(federated.groups))
        out.append(
            Condition(
                "group",
                ok,
                f"group: {', '.join(rule.groups)}"
                + (" matches" if ok else " does not match the token's groups")
                + f" [{', '.join(federated.groups)}]",
            )
        )
    for condition in rule.claims:
        ok = condition.holds(federated.claims)
        have = ", ".join(claim_texts(federated.claims, condition.claim)) or "(absent)"
        out.append(
            Condition(
                "claims",
                ok,
                f"claims.{condition.describe()}"
                + (" matches" if ok else f" does not match {quote(have)}"),
            )
        )
    return out


def _identity_conditions(rule: Rule, identity: Identity) -> list[Condition]:
    if identity.federated is not None:
        return _federated_conditions(rule, identity.federated)
    account = identity.account
    who = account.name if account is not None else ANONYMOUS
    if account is None:
        named = any(a in (ANONYMOUS, ANY) for a in rule.accounts)
    else:
        named = any(a in (AUTHENTICATED, ANY, account.name) for a in rule.accounts)
    out = [
        Condition(
            "account",
            named,
            f"account: {', '.join(rule.accounts)}"
            + (" matches " if named else " does not match ")
            + quote(who),
        )
    ]
    if rule.groups:
        have = account.groups if account is not None else ()
        ok = bool(set(rule.groups) & set(have))
        out.append(
            Condition(
                "group",
                ok,
                f"group: {', '.join(rule.groups)}"
                + (" matches" if ok else f" does not match the groups of {quote(who)}")
                + f" [{', '.join(have)}]",
            )
        )
    for key, values in rule.labels.items():
        have = account.labels.get(key, ()) if account is not None else ()
        ok = bool(set(values) & set(have))
        out.append(
            Condition(
                "labels",
                ok,
                f"labels.{key}: {', '.join(values)}"
                + (" matches" if ok else f" does not match the labels of {quote(who)}")
                + f" [{', '.join(have)}]",
            )
        )
    if all(c.holds for c in out) != rule.matches_identity(identity):
        # Something the breakdown does not model decides (a federated issuer, claims).
        ok = rule.matches_identity(identity)
        return [Condition("identity", ok, f"the identity {'matches' if ok else 'does not match'}")]
    return out


def _resource_condition(rule: Rule, scope: ResourceScope, identity: Identity) -> Condition:
    ok = rule.matches_resource(scope, identity)
    if rule.resource_type == REGISTRY:
        return Condition("registry", ok, f"registry:catalog {'is' if ok else 'is not'} {scope}")
    patterns = ", ".join(quote(p.source) for p in rule.repositories)
    verb = "matches" if ok else "does not match"
    return Condition("repository", ok, f"repository {patterns} {verb} {quote(scope.name)}")


def _network_condition(rule: Rule, client_ip: str | None) -> Condition:
    ok = rule.matches_network(client_ip)
    networks = ", ".join(str(n) for n in rule.networks)
    if client_ip is None:
        return Condition("network", ok, f"networks {networks} need a client address (--ip)")
    verb = "contain" if ok else "do not contain"
    return Condition("network", ok, f"networks {networks} {verb} {client_ip}")


def conditions(
    rule: Rule,
    identity: Identity,
    scope: ResourceScope,
    client_ip: str | None,
    deciding: Rule | None = None,
) -> tuple[Condition, ...]:
    """Every condition of `rule` for this request, in the order they are read. `deciding`:
    the rule that decides the scope, so a later rule that matches gets a failed `order`."""
    if scope.type != rule.resource_type:
        return (Condition("type", False, f"a {rule.resource_type} rule, not for {scope.type}"),)
    out = _identity_conditions(rule, identity)
    out.append(_resource_condition(rule, scope, identity))
    if rule.networks:
        out.append(_network_condition(rule, client_ip))
    if deciding is not None and rule.index > deciding.index and all(c.holds for c in out):
        out.append(Condition("order", False, f"matches, but rule {deciding.index} decides first"))
    return tuple(out)


def _would_grant_more(rule: Rule, scope: ResourceScope, decision: ScopeDecision) -> bool:
    if rule.denies or rule is decision.rule or rule.resource_type != scope.type:
        return False
    if "*" in decision.granted:
        return False
    if "*" in rule.actions or "*" in scope.actions:
        return True
    return bool((set(scope.actions) & set(rule.actions)) - set(decision.granted))


def explain(
    policy: Policy, identity: Identity, scope: ResourceScope, client_ip: str | None
) -> Explanation:
    """The decision (`Policy.decide`, as the token service makes it) and, unless it grants
    everything asked, the nearest rules (module docstring)."""
    decision = policy.decide(identity, scope, client_ip)
    if decision.outcome == "granted":
        return Explanation(decision, (), "none", 0)
    candidates = [
        NearMiss(rule, conditions(rule, identity, scope, client_ip, decision.rule))
        for rule in policy.rules
        if _would_grant_more(rule, scope, decision)
    ]
    # Rules about this very repository first (they missed on who or from where), then the
    # rest in file order.
    one = sorted(
        (c for c in candidates if len(c.failed) == 1),
        key=lambda c: (c.failed[0].name in ("repository", "registry"), c.rule.index),
    )
    if one:
        return Explanation(
            decision, tuple(one[:MAX_NEAREST]), "one condition", max(0, len(one) - MAX_NEAREST)
        )
    closest = sorted(candidates, key=lambda c: (len(c.failed), c.rule.index))[:MAX_CLOSEST]
    return Explanation(decision, tuple(closest), "closest" if closest else "none", 0)


def describe(rule: Rule | None) -> str:
    """`rule 4 (line 31) 'comment'`, or `default deny`."""
    if rule is None:
        return "default deny"
    text = f"rule {rule.index} (line {rule.line})"
    return f"{text} {quote(rule.comment)}" if rule.comment else text


def render(explanation: Explanation, out: Printer) -> None:
    """The decision line (as before: `SCOPE: OUTCOME [granted] by RULE`), then the near
    misses indented under it."""
    decision = explanation.decision
    granted = ",".join(decision.granted) or "-"
    style = {"granted": "green", "partial": "yellow"}.get(decision.outcome, "red")
    rule = decision.rule.describe() if decision.rule else "default deny"
    out.line(f"{decision.requested}: ", (f"{decision.outcome} [{granted}]", style), f" by {rule}")
    if explanation.nearness == "one condition":
        out.line(("  nearest rules (each fails on one condition):", "bold"))
    elif explanation.nearness == "closest":
        out.line(
            (
                f"  no rule that would grant more fails on one condition only; "
                f"the {len(explanation.near)} closest:",
                "bold",
            )
        )
    elif decision.outcome != "granted":
        out.line("  no rule grants any of the requested actions for this scope")
    for near in explanation.near:
        out.line(f"    {describe(near.rule)}: ", (near.summary(), "yellow"))
    if explanation.more:
        out.line(f"    (+{explanation.more} more rules failing on one condition)")


def as_json(explanation: Explanation) -> dict[str, object]:
    decision = explanation.decision
    record = decision.as_record()
    record["nearest"] = explanation.nearness
    record["near_misses"] = [
        {
            "rule": near.rule.index,
            "line": near.rule.line,
            "comment": near.rule.comment or None,
            "first_failed": near.failed[0].detail if near.failed else None,
            "conditions": [
                {"name": c.name, "holds": c.holds, "detail": c.detail} for c in near.conditions
            ],
        }
        for near in explanation.near
    ]
    record["more_near_misses"] = explanation.more
    return record
