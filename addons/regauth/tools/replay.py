"""`regauth replay LOG --policy NEW [--json]`: yesterday's token requests under a draft policy.

Every token request the log shows decided (its `token_response.decisions`) is decided again
under NEW with `Policy.decide`, as the same account (`token_response.account`; an account NEW
does not declare cannot sign in, so it gets nothing), from the same address (`client`), for the
same requested scopes (`token_request.requested`). Requests refused before any decision (bad
credentials, rate limit, wrong service, malformed scope) have nothing to replay and are counted
apart.

An identity from an OIDC ID token (`token_response.federated_issuer`) is decided again from
the claims the log kept (`federated_claims`: those its issuer's rules read when it was logged);
claims a new rule reads that the old ones did not are not in the log: give a token's claims
with `--claims FILE.json` (an object, or a list of them), used for the records whose subject
they render to. An issuer NEW does not have cannot log in: it gets nothing.

Per scope, the old grant (as recorded) and the new one compare as: unchanged, granted→denied,
denied→granted, narrower, wider, or different (neither contains the other).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass

from regauth.federation.id_token import IdTokenRefused
from regauth.federation.id_token import identity_from_claims
from regauth.ops.safe_text import quote
from regauth.policy.model import Identity
from regauth.policy.model import Policy
from regauth.policy.model import describe_rule
from regauth.protocol.scope import parse_scope
from regauth.tools import EXIT_FINDING
from regauth.tools import EXIT_OK
from regauth.tools.log_records import Entry
from regauth.tools.render import Printer

KINDS = ("granted→denied", "denied→granted", "narrower", "wider", "different")


@dataclass(frozen=True)
class ChangedDecision:
    account: str
    address: str
    scope: str
    old_granted: tuple[str, ...]
    old_rule: str
    new_granted: tuple[str, ...]
    new_rule: str
    kind: str

    def as_json(self, count: int) -> dict[str, object]:
        return {
            "kind": self.kind,
            "account": self.account,
            "address": self.address,
            "scope": self.scope,
            "old": {"granted": list(self.old_granted), "rule": self.old_rule},
            "new": {"granted": list(self.new_granted), "rule": self.new_rule},
            "count": count,
        }


@dataclass
class ReplayResult:
    policy: Policy
    requests: int = 0  # token requests re-decided
    not_decided: int = 0  # token requests refused before any decision
    redacted: int = 0  # scopes whose capability id the log hides (cannot be re-decided)
    decisions: int = 0
    unchanged: int = 0
    kinds: Counter[str] | None = None
    changed: Counter[ChangedDecision] | None = None

    @property
    def any_changed(self) -> bool:
        return bool(self.changed)


def classify(old: set[str], new: set[str]) -> str | None:
    """None when equal, else the kind of change from `old` to `new` granted actions."""
    if old == new:
        return None
    if not new:
        return "granted→denied"
    if not old:
        return "denied→granted"
    if new < old:
        return "narrower"
    if new > old:
        return "wider"
    return "different"


def _new_rule(policy: Policy, rule_index: int | None) -> str:
    if rule_index is None:
        return describe_rule(None)
    rule = policy.rules[rule_index - 1]
    return describe_rule(
        rule.index, f"{policy.source}:{rule.line}", quote(rule.comment) if rule.comment else ""
    )


def _federated(
    entry: Entry, policy: Policy, given: Sequence[dict[str, object]]
) -> tuple[Identity | None, str]:
    """The identity of a federated token record under `policy`, or None and why not."""
    response = entry.token_response
    name = response.federated_issuer or ""
    issuer = next((i for i in policy.federated_issuers if i.name == name), None)
    if issuer is None:
        return None, f"federated issuer {quote(name)} is not in {policy.source}"
    claims: dict[str, object] = dict(response.federated_claims or {})
    for candidate in given:
        try:
            if identity_from_claims(issuer, candidate).subject == response.federated_subject:
                claims = {**claims, **candidate}
                break
        except IdTokenRefused:
            continue
    try:
        return Identity(None, federated=identity_from_claims(issuer, claims)), ""
    except IdTokenRefused as e:
        return None, f"{quote(name)}: {e}"


def replay(
    entries: Iterable[Entry], policy: Policy, claims: Sequence[dict[str, object]] = ()
) -> ReplayResult:
    """Re-decide every decided token request of `entries` under `policy` (module docstring);
    `claims`: ID-token claim sets given on the command line (`--claims`)."""
    result = ReplayResult(policy, kinds=Counter(), changed=Counter())
    assert result.kinds is not None and result.changed is not None
    for entry in entries:
        if entry.kind != "token":
            continue
        recorded = entry.decisions
        account = entry.token_account
        if not recorded or account is None:
            result.not_decided += 1
            continue
        result.requests += 1
        why_not = f"account {quote(account)} is not in {policy.source}"
        if entry.token_response.federated_issuer:
            identity, why_not = _federated(entry, policy, claims)
        elif account == "anonymous":
            # A build's client certificate binds `${build}` (the log keeps the build id).
            identity = Identity(None, build=entry.token_build)
        else:
            found = policy.accounts.get(account)
            identity = Identity(found) if found is not None else None
        address = entry.client_ip or None
        for decision in recorded:
            text = decision.scope or ""
            if "<id:" in text:
                result.redacted += 1  # the log keeps only a hash of capability ids
                continue
            try:
                scope = parse_scope(text)
            except ValueError:
                result.redacted += 1
                continue
            result.decisions += 1
            old = set(decision.granted)
            if identity is None:
                new_granted: tuple[str, ...] = ()
                new_rule = why_not
            else:
                new_decision = policy.decide(identity, scope, address)
                new_granted = new_decision.granted
                new_rule = _new_rule(policy, new_decision.rule.index if new_decision.rule else None)
            kind = classify(old, set(new_granted))
            if kind is None:
                result.unchanged += 1
                continue
            result.kinds[kind] += 1
            result.changed[
                ChangedDecision(
                    account,
                    address or "-",
                    str(scope),
                    tuple(sorted(old)),
                    decision.rule_label(),
                    new_granted,
                    new_rule,
                    kind,
                )
            ] += 1
    return result


def report(result: ReplayResult, out: Printer | None = None) -> int:
    """Summary, then every distinct changed decision; exit code 1 when any decision changed."""
    out = out or Printer()
    assert result.kinds is not None and result.changed is not None
    changed = sum(result.kinds.values())
    kinds = ", ".join(f"{k} {result.kinds[k]}" for k in KINDS if result.kinds[k]) or "none"
    out.line(
        ("replay", "bold"),
        f" under {result.policy.source}: {result.requests} token "
        f"requests ({result.decisions} scopes) re-decided, {result.not_decided} refused "
        "before any decision",
    )
    if result.redacted:
        out.line(
            f"  {result.redacted} scopes name a capability id the log redacts; they are "
            "not re-decided"
        )
    out.line(
        f"  unchanged {result.unchanged}, ",
        (f"changed {changed}", "bold red" if changed else "bold green"),
        f" ({kinds})",
    )
    for change, count in sorted(
        result.changed.items(),
        key=lambda item: (KINDS.index(item[0].kind), item[0].account, item[0].scope),
    ):
        times = f" ×{count}" if count > 1 else ""
        out.line(
            (
                f"{change.kind}",
                "red" if change.kind in ("granted→denied", "narrower") else "yellow",
            ),
            f" {change.account} from {change.address} {change.scope}{times}",
        )
        out.line(f"    old [{','.join(change.old_granted) or '-'}] by {change.old_rule}")
        out.line(f"    new [{','.join(change.new_granted) or '-'}] by {change.new_rule}")
    return EXIT_FINDING if changed else EXIT_OK


def as_json(result: ReplayResult) -> dict[str, object]:
    assert result.kinds is not None and result.changed is not None
    return {
        "policy": result.policy.source,
        "requests": result.requests,
        "not_decided": result.not_decided,
        "redacted": result.redacted,
        "decisions": result.decisions,
        "unchanged": result.unchanged,
        "changed": dict(result.kinds),
        "changes": [c.as_json(n) for c, n in result.changed.items()],
    }
