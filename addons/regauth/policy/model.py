"""The policy: accounts, ordered rules, and the decision for each requested scope.

Rules are tried in order; the first rule whose conditions all hold decides the scope (it grants
the intersection of what was asked and what it allows, or denies). No matching rule means deny.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING

from regauth.policy.patterns import Capability
from regauth.policy.patterns import RepositoryPattern
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import REPOSITORY
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import canonical_actions

if TYPE_CHECKING:
    from regauth.tokens.keyids import VerificationKey

ANONYMOUS = "anonymous"
AUTHENTICATED = "authenticated"
ANY = "any"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Account:
    name: str
    password_hash: bytes
    groups: tuple[str, ...] = ()
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    """Who is asking: an account, or nobody (anonymous)."""

    account: Account | None

    @property
    def name(self) -> str:
        return self.account.name if self.account else ""

    @property
    def is_anonymous(self) -> bool:
        return self.account is None

    def variables(self) -> dict[str, list[str]]:
        if self.account is None:
            return {}
        variables = {"account": [self.account.name], "group": list(self.account.groups)}
        for key, values in self.account.labels.items():
            variables[f"labels.{key}"] = list(values)
        return variables


@dataclass(frozen=True)
class Rule:
    index: int  # 1-based position in the rules list
    line: int
    comment: str
    accounts: tuple[str, ...]  # names, or ANONYMOUS / AUTHENTICATED / ANY
    groups: tuple[str, ...]
    labels: dict[str, tuple[str, ...]]
    resource_type: str
    repositories: tuple[RepositoryPattern, ...]  # empty for registry rules
    networks: tuple[Network, ...]
    actions: tuple[str, ...]  # empty means deny

    @property
    def denies(self) -> bool:
        return not self.actions

    def matches_identity(self, identity: Identity) -> bool:
        if identity.account is None:
            if not any(a in (ANONYMOUS, ANY) for a in self.accounts):
                return False
            return not self.groups and not self.labels
        account = identity.account
        if not any(a in (AUTHENTICATED, ANY, account.name) for a in self.accounts):
            return False
        if self.groups and not set(self.groups) & set(account.groups):
            return False
        return all(set(values) & set(account.labels.get(key, ()))
                   for key, values in self.labels.items())

    def matches_anonymous(self) -> bool:
        return any(a in (ANONYMOUS, ANY) for a in self.accounts) and not self.groups \
            and not self.labels

    def matches_resource(self, scope: ResourceScope, identity: Identity) -> bool:
        if scope.type != self.resource_type:
            return False
        if self.resource_type == REGISTRY:
            return scope.name == "catalog"
        variables = identity.variables()
        return any(p.matches(scope.name, variables) for p in self.repositories)

    def matches_network(self, client_ip: str | None) -> bool:
        if not self.networks:
            return True
        if client_ip is None:
            return False
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def describe(self) -> str:
        text = f"rule {self.index} (line {self.line})"
        return f"{text}: {self.comment}" if self.comment else text

    def describe_short(self) -> str:
        """`rule N: comment` (or `rule N`), as mitmweb comments show it."""
        return f"rule {self.index}: {self.comment}" if self.comment else f"rule {self.index}"


@dataclass(frozen=True)
class Decision:
    requested: ResourceScope
    granted: tuple[str, ...]
    rule: Rule | None

    @property
    def outcome(self) -> str:
        if self.rule is None:
            return "default deny"
        if self.rule.denies:
            return "denied"
        if not self.granted:
            return "denied"
        return "granted" if set(self.granted) >= set(self.requested.actions) or \
            "*" in self.granted else "partial"

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "scope": str(self.requested),
            "granted": list(self.granted),
            "outcome": self.outcome,
        }
        if self.rule is None:
            record["rule"] = "default deny"
        else:
            record["rule"] = self.rule.index
            record["line"] = self.rule.line
            if self.rule.comment:
                record["comment"] = self.rule.comment
        return record

    def granted_scope(self) -> ResourceScope | None:
        return self.requested.with_actions(self.granted) if self.granted else None


def _grant(rule_actions: tuple[str, ...], requested: tuple[str, ...]) -> tuple[str, ...]:
    if "*" in rule_actions:
        return requested
    if "*" in requested:
        # `*` asks for every action (skopeo deletes this way): grant all the rule allows.
        return canonical_actions(rule_actions)
    return canonical_actions(a for a in requested if a in rule_actions)


@dataclass(frozen=True)
class UpstreamCredentials:
    kind: str  # "basic" or "bearer"
    username: str
    password_source: str  # where the secret comes from, for messages (never the secret)
    password: str = field(repr=False, default="")
    realm_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Upstream:
    url: str  # "*" or a normalized URL
    mode: str  # "enforce" or "delegate"
    credentials: UpstreamCredentials | None
    line: int


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    keys: tuple[VerificationKey, ...]  # bytes secret (HS256) or public keys
    key_ids: tuple[str | None, ...]
    claims: str  # "access", "repos" or "repo_access"
    action_map: dict[str, tuple[str, ...]]
    repos_actions: tuple[str, ...]
    comment: str
    line: int


@dataclass(frozen=True)
class TokenSettings:
    lifetime: int = 300
    refresh_lifetime: int = 7 * 24 * 3600
    algorithm: str = "ES256"
    kid_format: str = "libtrust"
    signing_key: str | None = None


@dataclass(frozen=True)
class Policy:
    source: str
    service: str
    issuer: str
    token: TokenSettings
    accounts: dict[str, Account]
    capabilities: dict[str, Capability]
    rules: tuple[Rule, ...]
    upstreams: tuple[Upstream, ...]
    trusted_issuers: tuple[TrustedIssuer, ...]

    def decide(self, identity: Identity, scope: ResourceScope,
               client_ip: str | None) -> Decision:
        for rule in self.rules:
            if not rule.matches_identity(identity):
                continue
            if not rule.matches_resource(scope, identity):
                continue
            if not rule.matches_network(client_ip):
                continue
            if rule.denies:
                return Decision(scope, (), rule)
            return Decision(scope, _grant(rule.actions, scope.actions), rule)
        return Decision(scope, (), None)

    def upstream_for(self, url: str) -> Upstream | None:
        """The upstream entry for a normalized upstream URL ('*' entries match any)."""
        if not self.upstreams:
            return Upstream("*", "enforce", None, 0)
        for upstream in self.upstreams:
            if upstream.url in ("*", url):
                return upstream
        return None

    def capability_redactor(self) -> re.Pattern[str] | None:
        """Matches capability ids wherever they stand as a whole path segment, so logs can hide
        them. By shape, not by rule prefix: a prefix with wildcards or placeholders cannot be
        matched textually, and hiding a look-alike segment costs nothing."""
        shapes = {segment.text for rule in self.rules for pattern in rule.repositories
                  for segment in pattern.segments if segment.kind == "capability"}
        if not shapes:
            return None
        return re.compile("(?<=/)(?:" + "|".join(sorted(shapes)) + ")(?![A-Za-z0-9._-])")


__all__ = [
    "ANONYMOUS", "ANY", "AUTHENTICATED", "REPOSITORY", "Account", "Decision", "Identity",
    "Policy", "Rule", "TokenSettings", "TrustedIssuer", "Upstream", "UpstreamCredentials",
]
