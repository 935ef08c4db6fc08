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
from typing import Literal
from typing import get_args

from regauth.policy.patterns import Capability
from regauth.policy.patterns import RepositoryPattern
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import REPOSITORY
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import canonical_actions

if TYPE_CHECKING:
    from regauth.federation.claim_rules import ClaimCondition
    from regauth.tokens.keyids import VerificationKey

ANONYMOUS = "anonymous"
AUTHENTICATED = "authenticated"
ANY = "any"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The account-name grammar: the loader refuses other names, and the login check refuses a name
# outside it before any bcrypt (`logins.credentials.is_password_attempt`).
ACCOUNT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# A repository path (OCI distribution spec's name components): what a claim must be to bind.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_PATH_RE = re.compile(f"{_COMPONENT}(?:/{_COMPONENT})*")

# The closed vocabularies of a policy; each tuple lists the Literal's values, for the loader.
Outcome = Literal["granted", "partial", "denied", "default deny"]
UpstreamMode = Literal["enforce", "delegate"]
CredentialKind = Literal["basic", "bearer"]
ClaimShape = Literal["access", "repos", "repo_access"]
UPSTREAM_MODES: tuple[UpstreamMode, ...] = get_args(UpstreamMode)
CREDENTIAL_KINDS: tuple[CredentialKind, ...] = get_args(CredentialKind)
CLAIM_SHAPES: tuple[ClaimShape, ...] = get_args(ClaimShape)


def one_of[W: str](value: str | None, words: tuple[W, ...]) -> W | None:
    """`value` as the member of a closed vocabulary it spells, or None."""
    for word in words:
        if value == word:
            return word
    return None


@dataclass(frozen=True)
class Account:
    """An entry of the policy's `accounts:`."""

    name: str  # within ACCOUNT_NAME_RE; never anonymous, authenticated or any
    password_hash: bytes  # bcrypt ($2a$, $2b$ or $2y$)
    groups: tuple[str, ...] = ()
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label → its values


@dataclass(frozen=True)
class FederatedIdentity:
    """Whom a verified OIDC ID token names (`federation.id_token.verify_id_token`)."""

    issuer: str  # the name of the policy's `federated_issuers:` entry
    subject: str  # its subject template applied to the claims (`ci:acme/app`)
    groups: tuple[str, ...]  # from its groups claim, if it has one
    claims: dict[str, object]  # every claim of the token, for rule conditions
    expires_at: float  # the ID token's `exp`, epoch seconds

    def variables(self) -> dict[str, list[str]]:
        """`${subject}`, `${group}` and `${claims.NAME}` (top-level string claims). Only values
        that are repository paths themselves (lower-case components of the OCI name grammar,
        `/` between them) bind: a claim is chosen by the workload, so `Acme/App`, an empty
        value or `a//b` binds nothing (the pattern cannot match) rather than something else."""
        out: dict[str, list[str]] = {"group": list(self.groups)}
        if _REPOSITORY_PATH_RE.fullmatch(self.subject):
            out["subject"] = [self.subject]
        for name, value in self.claims.items():
            if (
                isinstance(value, str)
                and len(value) <= 256
                and _REPOSITORY_PATH_RE.fullmatch(value)
            ):
                out[f"claims.{name}"] = [value]
        return out


@dataclass(frozen=True)
class Identity:
    """Who is asking: an account, or nobody (anonymous). `build` is the build a verified client
    certificate names (`regauth:build:ID`): it binds `${build}` in repository patterns and is
    otherwise anonymous (an account certificate makes `account` that account instead)."""

    account: Account | None
    build: str | None = None
    federated: FederatedIdentity | None = None  # an OIDC ID token's subject (no account)

    @property
    def name(self) -> str:
        if self.federated is not None:
            return self.federated.subject
        return self.account.name if self.account else ""

    @property
    def subject(self) -> str:
        """The token's `sub`: the account, `build:ID`, or "" (anonymous)."""
        if self.account is not None:
            return self.account.name
        if self.federated is not None:
            return self.federated.subject
        return f"build:{self.build}" if self.build else ""

    @property
    def is_anonymous(self) -> bool:
        return self.account is None and self.federated is None

    def variables(self) -> dict[str, list[str]]:
        if self.federated is not None:
            return self.federated.variables()
        if self.account is None:
            return {"build": [self.build]} if self.build else {}
        variables = {"account": [self.account.name], "group": list(self.account.groups)}
        for key, values in self.account.labels.items():
            variables[f"labels.{key}"] = list(values)
        return variables


@dataclass(frozen=True)
class Rule:
    """An entry of the policy's `rules:`: who, what, from where, and the actions it grants.

    A rule decides a scope when the identity, the resource and the client address all match
    (`Policy.decide` tries the rules in order).
    """

    index: int  # 1-based position in the rules list
    line: int  # its line in the policy file
    comment: str  # the operator's reason for it, shown in explanations and logs ("" if none)
    accounts: tuple[str, ...]  # names, or ANONYMOUS / AUTHENTICATED / ANY
    groups: tuple[str, ...]  # if any, the account must be in one of them
    labels: dict[str, tuple[str, ...]]  # for each label, the account must have one of the values
    resource_type: str  # REPOSITORY or REGISTRY (the catalog)
    repositories: tuple[RepositoryPattern, ...]  # empty for registry rules
    networks: tuple[Network, ...]  # client addresses it applies to; empty means any
    actions: tuple[str, ...]  # canonical registry actions; empty means deny
    # Federated issuers (names) whose identities the rule is for; empty: accounts only.
    issuers: tuple[str, ...] = ()
    claims: tuple[ClaimCondition, ...] = ()  # each must hold on the ID token's claims

    @property
    def denies(self) -> bool:
        return not self.actions

    def matches_identity(self, identity: Identity) -> bool:
        federated = identity.federated
        if federated is not None:
            # Only rules naming its issuer, and `account: any` rules, apply to an identity
            # from an ID token: `authenticated` means the policy's own accounts, never every
            # workload of a shared issuer (every GitHub repository can get a token).
            if self.issuers:
                if federated.issuer not in self.issuers:
                    return False
            elif ANY not in self.accounts or self.groups or self.labels:
                return False
            if self.labels:
                return False  # labels are accounts' (the loader refuses them here)
            if self.groups and not set(self.groups) & set(federated.groups):
                return False
            return all(c.holds(federated.claims) for c in self.claims)
        if self.issuers:
            return False
        if identity.account is None:
            if not any(a in (ANONYMOUS, ANY) for a in self.accounts):
                return False
            return not self.groups and not self.labels
        account = identity.account
        if not any(a in (AUTHENTICATED, ANY, account.name) for a in self.accounts):
            return False
        if self.groups and not set(self.groups) & set(account.groups):
            return False
        return all(
            set(values) & set(account.labels.get(key, ())) for key, values in self.labels.items()
        )

    def matches_anonymous(self) -> bool:
        return (
            not self.issuers
            and any(a in (ANONYMOUS, ANY) for a in self.accounts)
            and not self.groups
            and not self.labels
        )

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


def describe_rule(
    index: int | None, where: str = "", note: str = "", default: str = "default deny"
) -> str:
    """A rule as the tools name it when they have its parts rather than the `Rule` (a decision
    read from the exchange log, a rule of a draft policy): `rule 3 (line 12) 'comment'`, or
    `default` when no rule decided (`index` None).

    `where` goes in parentheses (`line 12`, `policy.yaml:12`), `note` after it; either is left
    out when empty. `note` is inserted as given: quote untrusted text first
    (`ops.safe_text.quote`)."""
    if index is None:
        return default
    text = f"rule {index}"
    if where:
        text += f" ({where})"
    return f"{text} {note}" if note else text


@dataclass(frozen=True)
class ScopeDecision:
    """The policy's answer for one requested scope (`Policy.decide`)."""

    requested: ResourceScope  # the scope as the client asked for it
    granted: tuple[str, ...]  # the actions granted: the request's actions the rule allows
    rule: Rule | None  # the deciding rule; None when no rule matched (default deny)

    @property
    def outcome(self) -> Outcome:
        if self.rule is None:
            return "default deny"
        if self.rule.denies:
            return "denied"
        if not self.granted:
            return "denied"
        return (
            "granted"
            if set(self.granted) >= set(self.requested.actions) or "*" in self.granted
            else "partial"
        )

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
    """regauth's own credentials for the upstream (inject mode; `upstream_auth` presents them)."""

    kind: CredentialKind  # basic: sent as they are; bearer: exchanged at the upstream's realm
    username: str
    password_source: str  # where the secret comes from, for messages (never the secret)
    password: str = field(repr=False, default="")
    realm_hosts: tuple[str, ...] = ()  # bearer: other `host:port`s whose realm may get them


@dataclass(frozen=True)
class UpstreamEntry:
    """An entry of the policy's `upstreams:`: how regauth guards one upstream registry."""

    url: str  # "*" (any upstream) or a normalized URL
    mode: UpstreamMode  # enforce: regauth checks every request; delegate: the registry does
    credentials: UpstreamCredentials | None  # regauth's own (enforce mode only), or None
    line: int  # its line in the policy file (0 for the implied catch-all)


@dataclass(frozen=True)
class TrustedIssuer:
    """An entry of the policy's `trusted_issuers:`: another token service whose tokens
    regauth honours, and how their claims map to registry grants (`tokens.claims`)."""

    issuer: str  # the `iss` its tokens carry
    audience: str  # the `aud` they must carry
    algorithms: tuple[str, ...]  # exactly one: HS256, RS256 or ES256
    keys: tuple[VerificationKey, ...]  # bytes secret (HS256) or public keys
    key_ids: tuple[str | None, ...]  # each key's `kid`, or None (any kid), parallel to `keys`
    claims: ClaimShape  # the claim its grants come in
    action_map: dict[str, tuple[str, ...]]  # its action name → registry actions
    repos_actions: tuple[str, ...]  # the actions each name of a `repos` claim grants
    comment: str
    line: int  # its line in the policy file


@dataclass(frozen=True)
class FederatedIssuer:
    """An entry of the policy's `federated_issuers:`: an OIDC issuer whose ID tokens are
    credentials at the token endpoint (README "Workload identity federation")."""

    name: str  # what rules' `issuer:` names
    issuer: str  # the exact `iss` (an https URL)
    audience: str  # what `aud` must contain
    jwks_uri: str | None  # https URL of its key set, fixed here (never from a token)
    jwks_file: str | None  # or a file holding it
    ca_file: str | None  # trust for jwks_uri (None: the system's)
    algorithms: tuple[str, ...]  # asymmetric only
    leeway: int  # seconds, for exp/nbf/iat
    subject: str  # template: `{claim}` replaced (`ci:{repository}`)
    groups_claim: str | None  # a claim holding a list of group names, or None
    max_token_age: int  # seconds: an ID token issued longer ago is refused
    line: int
    refetch_interval: int = 60  # seconds between key-set fetches an unknown kid may cause

    @property
    def source(self) -> str:
        return self.jwks_uri or self.jwks_file or ""


@dataclass(frozen=True)
class TokenSettings:
    """The policy's `token:` section: what regauth's own tokens look like."""

    lifetime: int = 300  # access tokens, seconds
    refresh_lifetime: int = 7 * 24 * 3600  # refresh tokens, seconds
    algorithm: str = "ES256"  # or RS256: the kind the signing key must be
    kid_format: str = "libtrust"  # or "rfc7638": how the JWT header's `kid` names the key
    signing_key: str | None = None  # a pinned signing key (file stem), or None (the key state)


@dataclass(frozen=True)
class Policy:
    """A loaded policy (`policy.load.load_policy`), checked whole; immutable.

    `decide` gives the decision for one scope; `upstream_entry_for` the `upstreams:` entry of
    the registry regauth guards.
    """

    source: str  # the file it was loaded from, for messages
    service: str  # the audience of regauth's tokens (the registry's `auth.token.service`)
    issuer: str  # the `iss` of regauth's tokens
    token: TokenSettings
    accounts: dict[str, Account]  # by name
    capabilities: dict[str, Capability]  # by name: the unguessable ids of `{name}` segments
    rules: tuple[Rule, ...]  # in order: the first that matches decides
    upstreams: tuple[UpstreamEntry, ...]  # empty means one enforcing catch-all
    trusted_issuers: tuple[TrustedIssuer, ...]
    federated_issuers: tuple[FederatedIssuer, ...] = ()

    def decide(
        self, identity: Identity, scope: ResourceScope, client_ip: str | None
    ) -> ScopeDecision:
        for rule in self.rules:
            if not rule.matches_identity(identity):
                continue
            if not rule.matches_resource(scope, identity):
                continue
            if not rule.matches_network(client_ip):
                continue
            if rule.denies:
                return ScopeDecision(scope, (), rule)
            return ScopeDecision(scope, _grant(rule.actions, scope.actions), rule)
        return ScopeDecision(scope, (), None)

    def upstream_entry_for(self, url: str) -> UpstreamEntry | None:
        """The `upstreams:` entry for a normalized upstream URL ('*' entries match any)."""
        if not self.upstreams:
            return UpstreamEntry("*", "enforce", None, 0)
        for upstream in self.upstreams:
            if upstream.url in ("*", url):
                return upstream
        return None

    def capability_redactor(self) -> re.Pattern[str] | None:
        """Matches capability ids wherever they stand as a whole path segment, so logs can hide
        them. By shape, not by rule prefix: a prefix with wildcards or placeholders cannot be
        matched textually, and hiding a look-alike segment costs nothing."""
        shapes = {
            segment.text
            for rule in self.rules
            for pattern in rule.repositories
            for segment in pattern.segments
            if segment.kind == "capability"
        }
        if not shapes:
            return None
        return re.compile("(?<=/)(?:" + "|".join(sorted(shapes)) + ")(?![A-Za-z0-9._-])")


__all__ = [
    "ACCOUNT_NAME_RE",
    "ANONYMOUS",
    "ANY",
    "AUTHENTICATED",
    "CLAIM_SHAPES",
    "CREDENTIAL_KINDS",
    "REPOSITORY",
    "UPSTREAM_MODES",
    "Account",
    "ClaimShape",
    "CredentialKind",
    "Identity",
    "Outcome",
    "Policy",
    "Rule",
    "ScopeDecision",
    "TokenSettings",
    "TrustedIssuer",
    "UpstreamCredentials",
    "UpstreamEntry",
    "UpstreamMode",
    "one_of",
]
