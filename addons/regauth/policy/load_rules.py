"""Reading `accounts`, `capabilities` and `rules` (README "Policy reference"): names, groups,
labels, password hashes, capability shapes, repository patterns and actions, and the rule that
anonymous writes stay in capability repositories."""

from __future__ import annotations

import ipaddress
import re

from regauth.policy.load_federation import FederationReader
from regauth.policy.model import ACCOUNT_NAME_RE
from regauth.policy.model import ANONYMOUS
from regauth.policy.model import ANY
from regauth.policy.model import AUTHENTICATED
from regauth.policy.model import Account
from regauth.policy.model import Rule
from regauth.policy.patterns import Capability
from regauth.policy.patterns import RepositoryPattern
from regauth.policy.patterns import compile_glob
from regauth.policy.patterns import compile_regex
from regauth.policy.patterns import parse_capability
from regauth.policy.reader import Invalid
from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.policy.yamlpos import Seq
from regauth.protocol.scope import ACTIONS
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import REPOSITORY

_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_BCRYPT_RE = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_RESERVED_ACCOUNTS = {ANONYMOUS, AUTHENTICATED, ANY}


class RulesReader(FederationReader):
    """The sections that decide who gets which access."""

    def accounts(self, root: Map) -> dict[str, Account]:
        if "accounts" not in root:
            return {}
        section = self.mapping(root["accounts"], root.where("accounts"), "accounts")
        accounts: dict[str, Account] = {}
        self.declared_accounts = set(section)
        for name, spec in section.items():
            where = section.key_positions[name]
            if name in _RESERVED_ACCOUNTS:
                self.problem(where, f"{name!r} is a reserved word, not an account name")
                continue
            if ACCOUNT_NAME_RE.fullmatch(name) is None:
                self.problem(
                    where,
                    f"account name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'",
                )
                continue
            try:
                accounts[name] = self.account(name, spec, section.where(name))
            except Invalid:
                continue
        return accounts

    def account(self, name: str, spec: object, where: Position) -> Account:
        what = f"account {name!r}"
        a = self.mapping(spec, where, what)
        self.check_keys(
            a,
            {
                "password_hash",
                "password_hash_env",
                "password_hash_file",
                "groups",
                "labels",
                "comment",
            },
            what,
        )
        self.string(a, "comment", what)
        hashed, source = self.secret(a, "password_hash", what)
        if _BCRYPT_RE.fullmatch(hashed) is None:
            key = next(k for k in a if k.startswith("password_hash"))
            raise self.fail(
                a.where(key),
                f"{what}: the password hash from {source} is not a "
                "bcrypt hash (create one with `regauth passwd`)",
            )
        groups = []
        for group, pos in self.string_list(a, "groups", what):
            if _GROUP_RE.fullmatch(group) is None:
                self.problem(
                    pos,
                    f"{what}: group {group!r} must be lower-case letters, digits, '.', '_' or '-'",
                )
            groups.append(group)
        labels: dict[str, tuple[str, ...]] = {}
        if "labels" in a:
            lm = self.mapping(a["labels"], a.where("labels"), f"{what} labels")
            for key in lm:
                if _LABEL_RE.fullmatch(key) is None:
                    self.problem(
                        lm.key_positions[key],
                        f"{what}: label name {key!r} must be "
                        "lower-case letters, digits, '_' or '-' "
                        "(it is used as ${labels.NAME})",
                    )
                values = self.string_list(lm, key, f"{what} labels")
                for value, pos in values:
                    if _GROUP_RE.fullmatch(value) is None:
                        self.problem(
                            pos,
                            f"{what}: label value {value!r} must be lower-case "
                            "letters, digits, '.', '_' or '-' (it stands in "
                            "for one path segment)",
                        )
                labels[key] = tuple(v for v, _ in values)
        return Account(name, hashed.encode(), tuple(groups), labels)

    def capabilities(self, root: Map) -> dict[str, Capability]:
        if "capabilities" not in root:
            return {}
        section = self.mapping(root["capabilities"], root.where("capabilities"), "capabilities")
        caps: dict[str, Capability] = {}
        for name, pattern in section.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                self.problem(
                    section.key_positions[name],
                    f"capability name {name!r} must be lower-case letters, digits, '_' or '-'",
                )
                continue
            if not isinstance(pattern, str):
                self.problem(
                    section.where(name),
                    f"capability {name!r}: the pattern must be a string such as '[a-z0-9]{{26}}'",
                )
                continue
            try:
                caps[name] = parse_capability(name, pattern)
            except ValueError as e:
                self.problem(section.where(name), f"capability {name!r}: {e}")
        return caps

    def rules(
        self, root: Map, accounts: dict[str, Account], capabilities: dict[str, Capability]
    ) -> list[Rule]:
        if "rules" not in root:
            self.problem(
                root.position,
                "the policy has no `rules:`; everything would be denied "
                "(write `rules: []` if that is intended)",
            )
            return []
        section = root["rules"]
        if not isinstance(section, Seq):
            self.problem(root.where("rules"), "rules must be a list")
            return []
        known_groups = {g for a in accounts.values() for g in a.groups}
        known_labels = {k for a in accounts.values() for k in a.labels}
        rules = []
        for i, spec in enumerate(section):
            try:
                rules.append(
                    self.rule(
                        i + 1,
                        spec,
                        section.where(i),
                        accounts,
                        known_groups,
                        known_labels,
                        capabilities,
                    )
                )
            except Invalid:
                continue
        return rules

    def rule(
        self,
        index: int,
        spec: object,
        where: Position,
        accounts: dict[str, Account],
        known_groups: set[str],
        known_labels: set[str],
        capabilities: dict[str, Capability],
    ) -> Rule:
        what = f"rule {index}"
        r = self.mapping(spec, where, what)
        self.check_keys(
            r,
            {
                "comment",
                "account",
                "group",
                "labels",
                "type",
                "repository",
                "name",
                "networks",
                "actions",
                "deny",
                "issuer",
                "claims",
            },
            what,
        )
        comment = self.string(r, "comment", what, default="") or ""
        issuers = self.rule_issuers(r, what)
        claims = self.rule_claims(r, what, issuers)
        account_refs = self.string_list(r, "account", what) or (
            [] if issuers else [(ANY, r.position)]
        )
        for name, pos in account_refs:
            if name not in _RESERVED_ACCOUNTS and name not in self.declared_accounts:
                self.problem(pos, f"{what}: unknown account {name!r} (not under `accounts:`)")
        groups = self.string_list(r, "group", what)
        for group, pos in groups:
            if issuers:
                continue  # an ID token's groups come from its issuer's groups_claim
            if group not in known_groups:
                self.problem(pos, f"{what}: no account is in group {group!r}")
        if issuers and "labels" in r:
            self.problem(
                r.key_positions["labels"],
                f"{what}: labels are accounts' (an identity from an ID token has none); "
                "use `claims:`",
            )
        labels: dict[str, tuple[str, ...]] = {}
        if "labels" in r:
            lm = self.mapping(r["labels"], r.where("labels"), f"{what} labels")
            for key in lm:
                if key not in known_labels:
                    self.problem(lm.key_positions[key], f"{what}: no account has label {key!r}")
                labels[key] = tuple(v for v, _ in self.string_list(lm, key, f"{what} labels"))
        resource_type = self.string(r, "type", what, default=REPOSITORY)
        if resource_type not in (REPOSITORY, REGISTRY):
            raise self.fail(r.where("type"), f"{what}: type must be 'repository' or 'registry'")
        patterns = self.rule_resource(r, what, resource_type, capabilities)
        networks = []
        for text, pos in self.string_list(r, "networks", what):
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError as e:
                self.problem(pos, f"{what}: invalid network {text!r} ({e})")
        for pattern in patterns:
            for placeholder in pattern.placeholders:
                if (
                    placeholder.startswith("labels.")
                    and placeholder.removeprefix("labels.") not in known_labels
                ):
                    self.problem(
                        r.where("repository"),
                        f"{what}: ${{{placeholder}}} names a label no account has",
                    )
                if placeholder.startswith("claims.") or placeholder == "subject":
                    if not issuers:
                        self.problem(
                            r.where("repository"),
                            f"{what}: ${{{placeholder}}} needs `issuer:` in the same rule "
                            "(only identities from an ID token have claims)",
                        )
        actions = self.rule_actions(r, what)
        rule = Rule(
            index,
            where.line,
            comment,
            tuple(n for n, _ in account_refs),
            tuple(g for g, _ in groups),
            labels,
            resource_type,
            patterns,
            tuple(networks),
            actions,
            issuers,
            claims,
        )
        self.check_anonymous_write(rule, r, what)
        self.check_open_issuer_write(rule, r, what)
        return rule

    def rule_resource(
        self, r: Map, what: str, resource_type: str, capabilities: dict[str, Capability]
    ) -> tuple[RepositoryPattern, ...]:
        if resource_type == REGISTRY:
            if "repository" in r:
                raise self.fail(
                    r.key_positions["repository"],
                    f"{what}: a registry rule has `name: catalog`, not a repository",
                )
            if r.get("name", "catalog") != "catalog":
                raise self.fail(r.where("name"), f"{what}: the only registry resource is 'catalog'")
            return ()
        if "name" in r:
            raise self.fail(
                r.key_positions["name"], f"{what}: repository rules use `repository:`, not `name:`"
            )
        if "repository" not in r:
            raise self.fail(
                r.position, f"{what} needs `repository:` (a pattern such as 'public/**')"
            )
        value = r["repository"]
        items = list(enumerate(value)) if isinstance(value, Seq) else [(None, value)]
        if isinstance(value, Seq) and not value:
            raise self.fail(r.where("repository"), f"{what}: empty repository list")
        patterns = []
        for index, item in items:
            pos = (
                value.where(index)
                if isinstance(value, Seq) and index is not None
                else r.where("repository")
            )
            try:
                patterns.append(self.repository_pattern(item, pos, what, capabilities))
            except Invalid:
                continue
        return tuple(patterns)

    def repository_pattern(
        self, value: object, pos: Position, what: str, capabilities: dict[str, Capability]
    ) -> RepositoryPattern:
        try:
            if isinstance(value, Map):
                self.check_keys(value, {"regex"}, f"{what} repository")
                regex = self.string(value, "regex", f"{what} repository", required=True)
                assert regex is not None
                return compile_regex(regex)
            if not isinstance(value, str):
                raise self.fail(
                    pos,
                    f"{what}: repository must be a glob string, {{regex: ...}}, or a list of them",
                )
            return compile_glob(str(value), capabilities)
        except ValueError as e:
            raise self.fail(pos, f"{what}: bad repository pattern: {e}") from None

    def rule_actions(self, r: Map, what: str) -> tuple[str, ...]:
        deny = r.get("deny", False)
        if not isinstance(deny, bool):
            raise self.fail(r.where("deny"), f"{what}: deny must be true or false")
        if deny:
            if "actions" in r:
                raise self.fail(r.key_positions["actions"], f"{what}: a deny rule has no actions")
            return ()
        if "actions" not in r:
            raise self.fail(
                r.position, f"{what} needs `actions:` (pull, push, delete, '*') or `deny: true`"
            )
        actions = []
        for action, pos in self.string_list(r, "actions", what):
            if action not in ACTIONS:
                self.problem(pos, f"{what}: unknown action {action!r} (pull, push, delete or '*')")
            actions.append(action)
        return tuple(dict.fromkeys(actions))

    def check_open_issuer_write(self, rule: Rule, r: Map, what: str) -> None:
        """An `issuer:` rule without a claim condition or a claim-bound pattern is for every
        workload of that issuer (every GitHub repository can get a token for any audience):
        like anonymous, it may pull, never write or read the catalog."""
        if not rule.issuers or rule.claims:
            return
        bound = rule.repositories and all(
            any(p == "subject" or p.startswith("claims.") for p in pattern.placeholders)
            for pattern in rule.repositories
        )
        writes = set(rule.actions) & {"push", "delete", "*"}
        if bound or not (writes or rule.resource_type == REGISTRY):
            return
        self.problem(
            r.where("actions") if "actions" in r else r.position,
            f"{what}: grants {', '.join(sorted(writes)) or 'the catalog'} to every workload of "
            f"{', '.join(rule.issuers)}: add `claims:` (repository, project, namespace, …) or "
            "bind the repository to the token (`${claims.repository}`)",
        )

    def check_anonymous_write(self, rule: Rule, r: Map, what: str) -> None:
        writes = set(rule.actions) & {"push", "delete", "*"}
        if not writes or not rule.matches_anonymous():
            return
        if rule.repositories and all(
            p.capability_prefix_ok() or p.build_prefix_ok() for p in rule.repositories
        ):
            return
        pos = r.where("actions")
        who = "anonymous" if ANONYMOUS in rule.accounts else "anyone (account: any)"
        if rule.resource_type == REGISTRY:
            self.problem(
                pos,
                f"{what}: the catalog lists every repository, capability ids "
                f"included; it cannot be granted to {who}",
            )
            return
        self.problem(
            pos,
            f"{what}: grants {', '.join(sorted(writes))} to {who} outside a "
            "capability repository; anonymous writes are only allowed in "
            "repositories such as 'builds/{id}' whose id is a declared capability, or "
            "'builds/${build}' bound to a build's client certificate",
        )
