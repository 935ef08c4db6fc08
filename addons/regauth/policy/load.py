"""Read a policy file (format version 1) and refuse it with `file:line:column: message` errors.

Loading is all-or-nothing: every problem found is reported, and a policy with any problem is
never returned. Secrets referenced by `*_env` / `*_file` keys are resolved here, so a missing
secret is a load error too (fail closed).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from regauth.policy import yamlpos
from regauth.policy.load_keys import MAX_KEY_FILE_BYTES
from regauth.policy.load_keys import public_keys
from regauth.policy.model import ACCOUNT_NAME_RE
from regauth.policy.model import ANONYMOUS
from regauth.policy.model import ANY
from regauth.policy.model import AUTHENTICATED
from regauth.policy.model import CLAIM_SHAPES
from regauth.policy.model import CREDENTIAL_KINDS
from regauth.policy.model import UPSTREAM_MODES
from regauth.policy.model import Account
from regauth.policy.model import Policy
from regauth.policy.model import Rule
from regauth.policy.model import TokenSettings
from regauth.policy.model import TrustedIssuer
from regauth.policy.model import UpstreamCredentials
from regauth.policy.model import UpstreamEntry
from regauth.policy.model import one_of
from regauth.policy.patterns import Capability
from regauth.policy.patterns import RepositoryPattern
from regauth.policy.patterns import compile_glob
from regauth.policy.patterns import compile_regex
from regauth.policy.patterns import parse_capability
from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.policy.yamlpos import Seq
from regauth.protocol.scope import ACTIONS
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import REPOSITORY
from regauth.protocol.urls import normalize_url
from regauth.tokens.keyids import KID_FORMATS
from regauth.tokens.keyids import PublicKey
from regauth.tokens.keyids import VerificationKey

T = TypeVar("T")
MIN_LIFETIME = 60
MAX_LIFETIME = 24 * 3600
_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_BCRYPT_RE = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SERVICE_RE = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
_RESERVED_ACCOUNTS = {ANONYMOUS, AUTHENTICATED, ANY}
SAFE_ISSUER_ACTIONS = ("pull", "push")
MAX_SECRET_BYTES = 64 * 1024  # a *_file secret: a hash, a password, an HS256 key
# Stand-ins for absent secrets under `secret_notes`: shaped so every other check still runs
# (a bcrypt hash nobody knows a password for; 64 bytes for HS256 secrets and passwords).
_SECRET_PLACEHOLDERS = {"password_hash": "$2b$04$" + "." * 53}


@dataclass(frozen=True)
class Problem:
    """One problem of a policy file, where it is: `str()` gives `file:line:column: message`."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyError(ValueError):
    """The policy cannot be used; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Invalid(Exception):
    """Raised inside the loader to abandon one item after its problem was recorded."""


class _Loader:
    def __init__(self, file: str, base_dir: Path, environ: dict[str, str],
                 secret_notes: list[Problem] | None = None) -> None:
        self.file = file
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[Problem] = []
        # When a list is given, an absent secret (unset variable, unreadable file) is a note
        # there instead of a problem, and a placeholder stands in for it (`policy check
        # --no-secrets`: a policy repository's CI has no production secrets).
        self.secret_notes = secret_notes
        self.declared_accounts: set[str] = set()

    # -- reporting -------------------------------------------------------------------------
    def problem(self, position: Position | None, message: str) -> None:
        pos = position or Position(1, 1)
        self.problems.append(Problem(self.file, pos.line, pos.column, message))

    def fail(self, position: Position | None, message: str) -> _Invalid:
        self.problem(position, message)
        return _Invalid()

    # -- typed access ----------------------------------------------------------------------
    def mapping(self, value: object, where: Position, what: str) -> Map:
        if not isinstance(value, Map):
            raise self.fail(where, f"{what} must be a mapping")
        return value

    def check_keys(self, m: Map, allowed: set[str], what: str) -> None:
        for key in m:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.problem(m.key_positions[key], f"unknown key {key!r} in {what} "
                                                   f"(allowed: {hint})")

    def string(self, m: Map, key: str, what: str, required: bool = False,
               default: str | None = None) -> str | None:
        if key not in m:
            if required:
                raise self.fail(m.position, f"{what} needs {key!r}")
            return default
        value = m[key]
        if not isinstance(value, str) or not value:
            raise self.fail(m.where(key), f"{what}: {key!r} must be a non-empty string")
        return str(value)

    def string_list(self, m: Map, key: str, what: str) -> list[tuple[str, Position]]:
        if key not in m:
            return []
        value = m[key]
        if isinstance(value, str):
            return [(str(value), m.where(key))]
        if not isinstance(value, Seq) or not value:
            raise self.fail(m.where(key), f"{what}: {key!r} must be a string or a non-empty "
                                          "list of strings")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(value.where(i), f"{what}: every entry of {key!r} must be a "
                                                "non-empty string")
            out.append((str(item), value.where(i)))
        return out

    def integer(self, m: Map, key: str, what: str, default: int) -> int:
        if key not in m:
            return default
        value = m[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(m.where(key), f"{what}: {key!r} must be an integer")
        return value

    def secret(self, m: Map, stem: str, what: str, required: bool = True) -> tuple[str, str]:
        """(secret, source description) from `stem`, `stem_env` or `stem_file`."""
        given = [k for k in (stem, f"{stem}_env", f"{stem}_file") if k in m]
        if len(given) > 1:
            raise self.fail(m.key_positions[given[1]],
                            f"{what}: give only one of {', '.join(given)}")
        if not given:
            if required:
                raise self.fail(m.position, f"{what} needs {stem!r}, {stem + '_env'!r} or "
                                            f"{stem + '_file'!r}")
            return "", ""
        key = given[0]
        ref = self.string(m, key, what, required=True)
        assert ref is not None
        if key == stem:
            return ref, "inline"
        if key.endswith("_env"):
            if ref not in self.environ:
                return self.absent_secret(m.where(key), stem, f"${ref}",
                                          f"{what}: environment variable {ref} is not set")
            value, source = self.environ[ref].strip(), f"${ref}"
        else:
            path = self.resolve(ref)
            try:
                value, source = _read_small(path, MAX_SECRET_BYTES).decode().strip(), str(path)
            except OSError as e:
                return self.absent_secret(m.where(key), stem, str(path),
                                          f"{what}: cannot read {path}: {e.strerror or e}")
            except (ValueError, UnicodeDecodeError) as e:
                raise self.fail(m.where(key), f"{what}: cannot use {path}: {e}") from None
        if not value:
            raise self.fail(m.where(key), f"{what}: the secret from {source} is empty")
        return value, source

    def absent_secret(self, where: Position, stem: str, source: str,
                      message: str) -> tuple[str, str]:
        """A missing secret: a load error, or a note and a well-formed placeholder."""
        if self.secret_notes is None:
            raise self.fail(where, message)
        self.secret_notes.append(Problem(self.file, where.line, where.column, message))
        return _SECRET_PLACEHOLDERS.get(stem, "placeholder-" + "0" * 52), source

    def resolve(self, ref: str) -> Path:
        path = Path(ref).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    # -- sections --------------------------------------------------------------------------
    def load(self, doc: object) -> Policy | None:
        if doc is None:
            self.problem(None, "the policy file is empty")
            return None
        try:
            root = self.mapping(doc, Position(1, 1), "the policy")
        except _Invalid:
            return None
        self.check_keys(root, {"version", "service", "issuer", "token", "accounts",
                               "capabilities", "rules", "upstreams", "trusted_issuers"},
                        "the policy")
        version = root.get("version")
        if type(version) is not int or version != 1:
            self.problem(root.where("version") if "version" in root else root.position,
                         "`version: 1` is required (the only policy format this regauth reads)")
        service = self.guard(lambda: self.string(root, "service", "the policy", required=True))
        issuer = self.guard(lambda: self.string(root, "issuer", "the policy", default="regauth"))
        token = self.guard(lambda: self.token_settings(root)) or TokenSettings()
        accounts = self.guard(lambda: self.accounts(root)) or {}
        capabilities = self.guard(lambda: self.capabilities(root)) or {}
        rules = self.rules(root, accounts, capabilities)
        upstreams = self.upstreams(root)
        issuers = self.trusted_issuers(root)
        for key, value in (("service", service), ("issuer", issuer)):
            if value is not None and _SERVICE_RE.fullmatch(value) is None:
                self.problem(root.where(key), f"{key} {value!r} may only hold letters, digits "
                                              "and . _ : / @ - (it is sent in headers)")
        if self.problems:
            return None
        assert service is not None and issuer is not None
        return Policy(self.file, service, issuer, token, accounts, capabilities, tuple(rules),
                      tuple(upstreams), tuple(issuers))

    def guard(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except _Invalid:
            return None

    def token_settings(self, root: Map) -> TokenSettings:
        if "token" not in root:
            return TokenSettings()
        t = self.mapping(root["token"], root.where("token"), "token")
        self.check_keys(t, {"lifetime", "refresh_lifetime", "algorithm", "kid", "signing_key"},
                        "token")
        lifetime = self.integer(t, "lifetime", "token", 300)
        if lifetime < MIN_LIFETIME or lifetime > MAX_LIFETIME:
            self.problem(t.where("lifetime"), f"token lifetime must be between {MIN_LIFETIME} "
                                              f"and {MAX_LIFETIME} seconds, not {lifetime}")
        refresh = self.integer(t, "refresh_lifetime", "token", 7 * 24 * 3600)
        if refresh < lifetime:
            self.problem(t.where("refresh_lifetime"),
                         "refresh_lifetime must not be shorter than the token lifetime")
        algorithm = self.string(t, "algorithm", "token", default="ES256")
        if algorithm not in ("ES256", "RS256"):
            self.problem(t.where("algorithm"), "token algorithm must be ES256 or RS256")
        kid = self.string(t, "kid", "token", default="libtrust")
        if kid not in KID_FORMATS:
            self.problem(t.where("kid"), f"token kid must be one of {', '.join(KID_FORMATS)}")
        signing_key = self.string(t, "signing_key", "token")
        assert algorithm is not None and kid is not None
        return TokenSettings(lifetime, refresh, algorithm, kid, signing_key)

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
                self.problem(where, f"account name {name!r} must be 1-64 letters, digits, "
                                    "'.', '_', '@' or '-'")
                continue
            try:
                accounts[name] = self.account(name, spec, section.where(name))
            except _Invalid:
                continue
        return accounts

    def account(self, name: str, spec: object, where: Position) -> Account:
        what = f"account {name!r}"
        a = self.mapping(spec, where, what)
        self.check_keys(a, {"password_hash", "password_hash_env", "password_hash_file",
                            "groups", "labels", "comment"}, what)
        self.string(a, "comment", what)
        hashed, source = self.secret(a, "password_hash", what)
        if _BCRYPT_RE.fullmatch(hashed) is None:
            key = next(k for k in a if k.startswith("password_hash"))
            raise self.fail(a.where(key), f"{what}: the password hash from {source} is not a "
                                          "bcrypt hash (create one with `regauth passwd`)")
        groups = []
        for group, pos in self.string_list(a, "groups", what):
            if _GROUP_RE.fullmatch(group) is None:
                self.problem(pos, f"{what}: group {group!r} must be lower-case letters, digits, "
                                  "'.', '_' or '-'")
            groups.append(group)
        labels: dict[str, tuple[str, ...]] = {}
        if "labels" in a:
            lm = self.mapping(a["labels"], a.where("labels"), f"{what} labels")
            for key in lm:
                if _LABEL_RE.fullmatch(key) is None:
                    self.problem(lm.key_positions[key], f"{what}: label name {key!r} must be "
                                                        "lower-case letters, digits, '_' or '-' "
                                                        "(it is used as ${labels.NAME})")
                values = self.string_list(lm, key, f"{what} labels")
                for value, pos in values:
                    if _GROUP_RE.fullmatch(value) is None:
                        self.problem(pos, f"{what}: label value {value!r} must be lower-case "
                                          "letters, digits, '.', '_' or '-' (it stands in "
                                          "for one path segment)")
                labels[key] = tuple(v for v, _ in values)
        return Account(name, hashed.encode(), tuple(groups), labels)

    def capabilities(self, root: Map) -> dict[str, Capability]:
        if "capabilities" not in root:
            return {}
        section = self.mapping(root["capabilities"], root.where("capabilities"), "capabilities")
        caps: dict[str, Capability] = {}
        for name, pattern in section.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                self.problem(section.key_positions[name],
                             f"capability name {name!r} must be lower-case letters, digits, "
                             "'_' or '-'")
                continue
            if not isinstance(pattern, str):
                self.problem(section.where(name), f"capability {name!r}: the pattern must be a "
                                                  "string such as '[a-z0-9]{26}'")
                continue
            try:
                caps[name] = parse_capability(name, pattern)
            except ValueError as e:
                self.problem(section.where(name), f"capability {name!r}: {e}")
        return caps

    def rules(self, root: Map, accounts: dict[str, Account],
              capabilities: dict[str, Capability]) -> list[Rule]:
        if "rules" not in root:
            self.problem(root.position, "the policy has no `rules:`; everything would be denied "
                                        "(write `rules: []` if that is intended)")
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
                rules.append(self.rule(i + 1, spec, section.where(i), accounts, known_groups,
                                       known_labels, capabilities))
            except _Invalid:
                continue
        return rules

    def rule(self, index: int, spec: object, where: Position, accounts: dict[str, Account],
             known_groups: set[str], known_labels: set[str],
             capabilities: dict[str, Capability]) -> Rule:
        what = f"rule {index}"
        r = self.mapping(spec, where, what)
        self.check_keys(r, {"comment", "account", "group", "labels", "type", "repository",
                            "name", "networks", "actions", "deny"}, what)
        comment = self.string(r, "comment", what, default="") or ""
        account_refs = self.string_list(r, "account", what) or [(ANY, r.position)]
        for name, pos in account_refs:
            if name not in _RESERVED_ACCOUNTS and name not in self.declared_accounts:
                self.problem(pos, f"{what}: unknown account {name!r} (not under `accounts:`)")
        groups = self.string_list(r, "group", what)
        for group, pos in groups:
            if group not in known_groups:
                self.problem(pos, f"{what}: no account is in group {group!r}")
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
                if placeholder.startswith("labels.") and \
                        placeholder.removeprefix("labels.") not in known_labels:
                    self.problem(r.where("repository"), f"{what}: ${{{placeholder}}} names a "
                                                        "label no account has")
        actions = self.rule_actions(r, what)
        rule = Rule(index, where.line, comment, tuple(n for n, _ in account_refs),
                    tuple(g for g, _ in groups), labels, resource_type, patterns, tuple(networks),
                    actions)
        self.check_anonymous_write(rule, r, what)
        return rule

    def rule_resource(self, r: Map, what: str, resource_type: str,
                      capabilities: dict[str, Capability]) -> tuple[RepositoryPattern, ...]:
        if resource_type == REGISTRY:
            if "repository" in r:
                raise self.fail(r.key_positions["repository"],
                                f"{what}: a registry rule has `name: catalog`, not a repository")
            if r.get("name", "catalog") != "catalog":
                raise self.fail(r.where("name"), f"{what}: the only registry resource is "
                                                 "'catalog'")
            return ()
        if "name" in r:
            raise self.fail(r.key_positions["name"], f"{what}: repository rules use "
                                                     "`repository:`, not `name:`")
        if "repository" not in r:
            raise self.fail(r.position, f"{what} needs `repository:` (a pattern such as "
                                        "'public/**')")
        value = r["repository"]
        items = list(enumerate(value)) if isinstance(value, Seq) else [(None, value)]
        if isinstance(value, Seq) and not value:
            raise self.fail(r.where("repository"), f"{what}: empty repository list")
        patterns = []
        for index, item in items:
            pos = value.where(index) if isinstance(value, Seq) and index is not None \
                else r.where("repository")
            try:
                patterns.append(self.repository_pattern(item, pos, what, capabilities))
            except _Invalid:
                continue
        return tuple(patterns)

    def repository_pattern(self, value: object, pos: Position, what: str,
                           capabilities: dict[str, Capability]) -> RepositoryPattern:
        try:
            if isinstance(value, Map):
                self.check_keys(value, {"regex"}, f"{what} repository")
                regex = self.string(value, "regex", f"{what} repository", required=True)
                assert regex is not None
                return compile_regex(regex)
            if not isinstance(value, str):
                raise self.fail(pos, f"{what}: repository must be a glob string, "
                                     "{regex: ...}, or a list of them")
            return compile_glob(str(value), capabilities)
        except ValueError as e:
            raise self.fail(pos, f"{what}: bad repository pattern: {e}") from None

    def rule_actions(self, r: Map, what: str) -> tuple[str, ...]:
        deny = r.get("deny", False)
        if not isinstance(deny, bool):
            raise self.fail(r.where("deny"), f"{what}: deny must be true or false")
        if deny:
            if "actions" in r:
                raise self.fail(r.key_positions["actions"], f"{what}: a deny rule has no "
                                                            "actions")
            return ()
        if "actions" not in r:
            raise self.fail(r.position, f"{what} needs `actions:` (pull, push, delete, '*') "
                                        "or `deny: true`")
        actions = []
        for action, pos in self.string_list(r, "actions", what):
            if action not in ACTIONS:
                self.problem(pos, f"{what}: unknown action {action!r} (pull, push, delete "
                                  "or '*')")
            actions.append(action)
        return tuple(dict.fromkeys(actions))

    def check_anonymous_write(self, rule: Rule, r: Map, what: str) -> None:
        writes = set(rule.actions) & {"push", "delete", "*"}
        if not writes or not rule.matches_anonymous():
            return
        if rule.repositories and all(p.capability_prefix_ok() for p in rule.repositories):
            return
        pos = r.where("actions")
        who = "anonymous" if ANONYMOUS in rule.accounts else "anyone (account: any)"
        if rule.resource_type == REGISTRY:
            self.problem(pos, f"{what}: the catalog lists every repository, capability ids "
                              f"included; it cannot be granted to {who}")
            return
        self.problem(pos, f"{what}: grants {', '.join(sorted(writes))} to {who} outside a "
                          "capability repository; anonymous writes are only allowed in "
                          "repositories such as 'builds/{id}' whose id is a declared capability")

    def upstreams(self, root: Map) -> list[UpstreamEntry]:
        return self.items(root, "upstreams", self.upstream)

    def items(self, root: Map, key: str, parse: Callable[[object, Position], T]) -> list[T]:
        """Parse each entry of a list section, skipping (after reporting) the invalid ones."""
        if key not in root:
            return []
        section = root[key]
        if not isinstance(section, Seq):
            self.problem(root.where(key), f"{key} must be a list")
            return []
        out = []
        for i, spec in enumerate(section):
            try:
                out.append(parse(spec, section.where(i)))
            except _Invalid:
                continue
        return out

    def upstream(self, spec: object, where: Position) -> UpstreamEntry:
        u = self.mapping(spec, where, "upstream")
        self.check_keys(u, {"url", "mode", "credentials", "comment"}, "upstream")
        self.string(u, "comment", "upstream")
        url = self.string(u, "url", "upstream", required=True)
        assert url is not None
        if url != "*":
            try:
                url = normalize_url(url)
            except ValueError as e:
                raise self.fail(u.where("url"), f"upstream url: {e}") from None
        mode = one_of(self.string(u, "mode", "upstream", default="enforce"), UPSTREAM_MODES)
        if mode is None:
            raise self.fail(u.where("mode"), "upstream mode must be 'enforce' (regauth checks "
                                             "every request) or 'delegate' (the registry checks "
                                             "regauth's tokens itself)")
        credentials = None
        if "credentials" in u:
            if mode != "enforce":
                raise self.fail(u.key_positions["credentials"],
                                "injecting upstream credentials requires mode: enforce, or "
                                "every client would act with them unchecked")
            c = self.mapping(u["credentials"], u.where("credentials"), "upstream credentials")
            self.check_keys(c, {"type", "username", "password", "password_env", "password_file",
                                "realm_hosts"}, "upstream credentials")
            kind = one_of(self.string(c, "type", "upstream credentials", default="basic"),
                          CREDENTIAL_KINDS)
            if kind is None:
                raise self.fail(c.where("type"), "credentials type must be 'basic' or 'bearer'")
            username = self.string(c, "username", "upstream credentials", required=True)
            password, source = self.secret(c, "password", "upstream credentials")
            hosts = tuple(h.lower() for h, _ in self.string_list(c, "realm_hosts",
                                                                  "upstream credentials"))
            assert username is not None
            credentials = UpstreamCredentials(kind, username, source, password, hosts)
        return UpstreamEntry(url, mode, credentials, where.line)

    def trusted_issuers(self, root: Map) -> list[TrustedIssuer]:
        return self.items(root, "trusted_issuers", self.trusted_issuer)

    def trusted_issuer(self, spec: object, where: Position) -> TrustedIssuer:
        what = "trusted issuer"
        t = self.mapping(spec, where, what)
        self.check_keys(t, {"issuer", "audience", "algorithm", "secret", "secret_env",
                            "secret_file", "public_key_file", "jwks_file", "claims", "actions",
                            "repos_actions", "comment"}, what)
        issuer = self.string(t, "issuer", what, required=True)
        audience = self.string(t, "audience", what, required=True)
        algorithm = self.string(t, "algorithm", what, required=True)
        assert issuer is not None and audience is not None and algorithm is not None
        if algorithm not in ("HS256", "RS256", "ES256"):
            raise self.fail(t.where("algorithm"), f"{what}: algorithm must be HS256, RS256 or "
                                                  "ES256")
        keys: list[VerificationKey] = []
        kids: list[str | None] = []
        wrong = [k for k in t if k in (("public_key_file", "jwks_file") if algorithm == "HS256"
                                       else ("secret", "secret_env", "secret_file"))]
        if wrong:
            raise self.fail(t.key_positions[wrong[0]], f"{what}: {wrong[0]} does not fit "
                                                       f"algorithm {algorithm}")
        if algorithm == "HS256":
            secret, _ = self.secret(t, "secret", what)
            if len(secret.encode()) < 32:
                raise self.fail(t.position, f"{what}: an HS256 secret needs at least 32 bytes")
            keys.append(secret.encode())
            kids.append(None)
        else:
            for key, kid in self.public_keys(t, what, algorithm):
                keys.append(key)
                kids.append(kid)
        claims = one_of(self.string(t, "claims", what, default="access"), CLAIM_SHAPES)
        if claims is None:
            raise self.fail(t.where("claims"), f"{what}: claims must be 'access', 'repos' or "
                                               "'repo_access'")
        # delete and `*` only when the operator names them: an issuer's key is as powerful as
        # the actions it may grant, and destructive ones must never come by default.
        action_map: dict[str, tuple[str, ...]] = {a: (a,) for a in SAFE_ISSUER_ACTIONS}
        if "actions" in t:
            am = self.mapping(t["actions"], t.where("actions"), f"{what} actions")
            for key in am:
                mapped = tuple(v for v, _ in self.string_list(am, key, f"{what} actions"))
                for v in mapped:
                    if v not in ACTIONS:
                        self.problem(am.where(key), f"{what}: {v!r} is not a registry action")
                action_map[key] = mapped
        repos_actions = tuple(v for v, _ in self.string_list(t, "repos_actions", what)) or \
            ("pull",)
        for v in repos_actions:
            if v not in ACTIONS:
                self.problem(t.where("repos_actions"), f"{what}: {v!r} is not a registry action")
        comment = self.string(t, "comment", what, default="") or ""
        return TrustedIssuer(issuer, audience, (algorithm,), tuple(keys), tuple(kids), claims,
                             action_map, repos_actions, comment, where.line)

    def public_keys(self, t: Map, what: str, algorithm: str
                    ) -> list[tuple[PublicKey, str | None]]:
        given = [k for k in ("public_key_file", "jwks_file") if k in t]
        if len(given) != 1:
            raise self.fail(t.position, f"{what}: {algorithm} needs exactly one of "
                                        "public_key_file or jwks_file")
        key = given[0]
        ref = self.string(t, key, what, required=True)
        assert ref is not None
        path = self.resolve(ref)
        try:
            data = _read_small(path, MAX_KEY_FILE_BYTES)
        except OSError as e:
            raise self.fail(t.where(key), f"{what}: cannot read {path}: "
                                          f"{e.strerror or e}") from None
        except ValueError as e:
            raise self.fail(t.where(key), f"{what}: cannot use {path}: {e}") from None
        try:
            return public_keys(data, key, algorithm)
        except ValueError as e:
            message = str(e)
            if message == "no keys":
                raise self.fail(t.where(key), f"{what}: no keys in {path}") from None
            if message.startswith("a key does not fit"):
                raise self.fail(t.where(key), f"{what}: a key in {path} does not fit "
                                              f"{algorithm}") from None
            raise self.fail(t.where(key), f"{what}: {message} from {path}") from None


def load_policy_text(text: str, file: str = "<policy>", base_dir: Path | None = None,
                     environ: dict[str, str] | None = None, *,
                     secret_notes: list[Problem] | None = None) -> Policy:
    """Parse and check a policy; raise PolicyError (one `file:line:column: message` per
    problem) and nothing else. With `secret_notes`, absent secrets are appended there (as
    `Problem`s) instead of failing the load, and placeholders stand in for them.

    A defect in the loader itself must not pass a policy nor escape as another exception (the
    reload task keeps the last good policy only on PolicyError): it becomes a problem at the
    position the loader was working on, the original exception chained for the log.
    """
    try:
        loader = _Loader(file, base_dir or Path.cwd(), dict(os.environ if environ is None
                                                            else environ), secret_notes)
        try:
            doc = yamlpos.load(text)
        except yamlpos.YamlError as e:
            pos = e.position or Position(1, 1)
            raise PolicyError([Problem(file, pos.line, pos.column, e.message)]) from None
        policy = loader.load(doc)
        if policy is None or loader.problems:
            raise PolicyError(sorted(loader.problems, key=lambda p: (p.line, p.column)))
        return policy
    except PolicyError:
        raise
    except Exception as e:  # the fail-closed last line, see the docstring
        pos = _position_in(e.__traceback__) or Position(1, 1)
        raise PolicyError([Problem(file, pos.line, pos.column,
                                   f"cannot check this part of the policy (internal error "
                                   f"{type(e).__name__}: {yamlpos.shown(str(e))[1:-1]})")]
                          ) from e


def _position_in(tb: TracebackType | None) -> Position | None:
    """The position of the innermost located value a failing loader frame was handling."""
    found = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, Position):
                found = value
            elif isinstance(getattr(value, "position", None), Position) and \
                    isinstance(value, Map | Seq | yamlpos.Str):
                found = value.position
        tb = tb.tb_next
    return found


MAX_POLICY_BYTES = yamlpos.MAX_DOCUMENT_CHARS


def load_policy(path: Path, environ: dict[str, str] | None = None, *,
                secret_notes: list[Problem] | None = None) -> Policy:
    """Read and check the policy file at `path`; raise PolicyError and nothing else.

    The file must be a regular file (a directory, FIFO or device is refused without blocking),
    at most MAX_POLICY_BYTES long, in UTF-8. `secret_notes`: see `load_policy_text`.
    """
    data = _read_policy_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = len(data[data.rfind(b"\n", 0, e.start) + 1:e.start].decode("utf-8", "replace"))
        raise PolicyError([Problem(str(path), line, column + 1, f"the policy is not UTF-8 "
                                   f"text (byte 0x{data[e.start]:02x}: {e.reason})")]) from None
    return load_policy_text(text, str(path), path.parent, environ, secret_notes=secret_notes)


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file, without blocking on FIFOs or devices.

    Raise OSError (unreadable) or ValueError (not a regular file). A result longer than
    `limit` tells the caller the file is too large.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_small(path: Path, limit: int) -> bytes:
    """A secret or key file: a regular file of at most `limit` bytes (ValueError otherwise)."""
    data = read_regular_file(path, limit)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB")
    return data


def _read_policy_file(path: Path) -> bytes:
    def refuse(message: str) -> PolicyError:
        return PolicyError([Problem(str(path), 1, 1, message)])

    try:
        data = read_regular_file(path, MAX_POLICY_BYTES)
    except OSError as e:
        raise refuse(f"cannot read policy: {e.strerror or e}") from None
    except ValueError as e:
        raise refuse(f"cannot read policy: {e}") from None
    if len(data) > MAX_POLICY_BYTES:
        tail = data[:MAX_POLICY_BYTES]
        line = tail.count(b"\n") + 1
        column = len(tail) - (tail.rfind(b"\n") + 1) + 1
        raise PolicyError([Problem(str(path), line, column, f"the policy is larger than "
                                   f"{MAX_POLICY_BYTES // 1024} KiB")])
    return data
