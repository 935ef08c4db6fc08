"""Reading `federated_issuers` and the `issuer:` / `claims:` keys of rules (README "Workload
identity federation"): exact https issuers, a mandatory audience, a JWKS source fixed in the
policy, asymmetric algorithms only, bounded leeway, subject templates and claim conditions."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from regauth.federation.claim_rules import ClaimCondition
from regauth.federation.claim_rules import template_claims
from regauth.federation.jwks import KEY_TYPE_OF
from regauth.policy.model import FederatedIssuer
from regauth.policy.reader import Reader
from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.policy.yamlpos import Seq

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_CLAIM_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}(?:/[A-Za-z0-9_.:-]{1,128}){0,4}")
MAX_LEEWAY = 300
DEFAULT_LEEWAY = 60
DEFAULT_MAX_TOKEN_AGE = 3600
MAX_CONDITION_VALUES = 64
MAX_PATTERN = 256


def _https_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and not parts.fragment


class FederationReader(Reader):
    """The `federated_issuers:` section and the federation keys of a rule."""

    def federated_issuers(self, root: Map) -> list[FederatedIssuer]:
        issuers = self.items(root, "federated_issuers", self.federated_issuer)
        seen: dict[str, int] = {}
        for entry in issuers:
            if entry.name in seen:
                self.problem(
                    Position(entry.line, 1),
                    f"federated issuer {entry.name!r} is declared twice (line {seen[entry.name]})",
                )
            seen.setdefault(entry.name, entry.line)
        urls: dict[str, str] = {}
        for entry in issuers:
            if entry.issuer in urls and urls[entry.issuer] != entry.name:
                self.problem(
                    Position(entry.line, 1),
                    f"federated issuer {entry.name!r}: issuer {entry.issuer} is also "
                    f"{urls[entry.issuer]!r}'s (a token's iss picks one entry)",
                )
            urls.setdefault(entry.issuer, entry.name)
        self.declared_issuers = set(seen)
        return issuers

    def federated_issuer(self, spec: object, where: Position) -> FederatedIssuer:
        m = self.mapping(spec, where, "a federated issuer")
        name = self.string(m, "name", "a federated issuer", required=True)
        assert name is not None
        what = f"federated issuer {name!r}"
        self.check_keys(
            m,
            {
                "name",
                "issuer",
                "audience",
                "jwks_uri",
                "jwks_file",
                "ca_file",
                "algorithms",
                "leeway",
                "subject",
                "groups_claim",
                "max_token_age",
                "refetch_interval",
                "comment",
            },
            what,
        )
        if _NAME_RE.fullmatch(name) is None:
            self.problem(
                m.where("name"), f"{what}: the name must be lower-case letters, digits, '_' or '-'"
            )
        self.string(m, "comment", what)
        issuer = self.string(m, "issuer", what, required=True)
        assert issuer is not None
        if not _https_url(issuer):
            self.problem(m.where("issuer"), f"{what}: issuer must be an https URL (the exact iss)")
        audience = self.string(m, "audience", what)
        if audience is None:
            raise self.fail(
                m.position,
                f"{what} needs `audience:` (what the ID token's aud must contain; a token "
                "minted for another service must not log in here)",
            )
        jwks_uri = self.string(m, "jwks_uri", what)
        jwks_file = self.string(m, "jwks_file", what)
        if (jwks_uri is None) == (jwks_file is None):
            raise self.fail(m.position, f"{what} needs exactly one of `jwks_uri:` or `jwks_file:`")
        if jwks_uri is not None and not _https_url(jwks_uri):
            self.problem(m.where("jwks_uri"), f"{what}: jwks_uri must be an https URL")
        if jwks_file is not None:
            jwks_file = str(self.resolve(jwks_file))
        ca_file = self.string(m, "ca_file", what)
        if ca_file is not None:
            ca_file = str(self.resolve(ca_file))
        algorithms = []
        for alg, pos in self.string_list(m, "algorithms", what) or [("RS256", m.position)]:
            if alg not in KEY_TYPE_OF:
                self.problem(
                    pos,
                    f"{what}: algorithm {alg!r} is not allowed (asymmetric only: "
                    f"{', '.join(KEY_TYPE_OF)}; never none or HMAC)",
                )
            algorithms.append(alg)
        leeway = self.integer(m, "leeway", what, DEFAULT_LEEWAY)
        if not 0 <= leeway <= MAX_LEEWAY:
            self.problem(m.where("leeway"), f"{what}: leeway must be 0-{MAX_LEEWAY} seconds")
        max_age = self.integer(m, "max_token_age", what, DEFAULT_MAX_TOKEN_AGE)
        if not 60 <= max_age <= 24 * 3600:
            self.problem(m.where("max_token_age"), f"{what}: max_token_age must be 60-86400 s")
        refetch = self.integer(m, "refetch_interval", what, 60)
        if not 1 <= refetch <= 3600:
            self.problem(m.where("refetch_interval"), f"{what}: refetch_interval must be 1-3600 s")
        subject = self.string(m, "subject", what, default="{sub}")
        assert subject is not None
        if not template_claims(subject) or len(subject) > 256:
            self.problem(
                m.where("subject") if "subject" in m else m.position,
                f"{what}: subject must name at least one claim, such as 'ci:{{repository}}'",
            )
        groups_claim = self.string(m, "groups_claim", what)
        return FederatedIssuer(
            name,
            issuer,
            audience,
            jwks_uri,
            jwks_file,
            ca_file,
            tuple(dict.fromkeys(algorithms)),
            leeway,
            subject,
            groups_claim,
            max_age,
            where.line,
            refetch,
        )

    def rule_issuers(self, r: Map, what: str) -> tuple[str, ...]:
        """A rule's `issuer:` names (declared under federated_issuers)."""
        names = self.string_list(r, "issuer", what)
        declared = self.declared_issuers
        for name, pos in names:
            if name not in declared:
                self.problem(pos, f"{what}: unknown issuer {name!r} (not under federated_issuers)")
        if names and "account" in r:
            self.problem(
                r.key_positions["account"],
                f"{what}: a rule for federated identities (`issuer:`) has no `account:`",
            )
        return tuple(n for n, _ in names)

    def rule_claims(
        self, r: Map, what: str, issuers: tuple[str, ...]
    ) -> tuple[ClaimCondition, ...]:
        """A rule's `claims:`: claim → a value, a glob, or a list (one of)."""
        if "claims" not in r:
            return ()
        if not issuers:
            raise self.fail(
                r.key_positions["claims"], f"{what}: `claims:` needs `issuer:` in the same rule"
            )
        cm = self.mapping(r["claims"], r.where("claims"), f"{what} claims")
        conditions = []
        for claim in cm:
            if _CLAIM_RE.fullmatch(claim) is None:
                self.problem(cm.key_positions[claim], f"{what}: claim name {claim!r} is malformed")
                continue
            value = cm[claim]
            items = list(value) if isinstance(value, Seq) else [value]
            texts = []
            for item in items:
                if isinstance(item, bool):
                    item = "true" if item else "false"
                elif isinstance(item, int):
                    item = str(item)
                if not isinstance(item, str) or not item or len(item) > MAX_PATTERN:
                    self.problem(
                        cm.where(claim),
                        f"{what}: claim {claim!r} must be a value, a glob or a list of them",
                    )
                    break
                texts.append(item)
            else:
                if not texts or len(texts) > MAX_CONDITION_VALUES:
                    self.problem(
                        cm.where(claim),
                        f"{what}: claim {claim!r} needs 1-{MAX_CONDITION_VALUES} values",
                    )
                    continue
                conditions.append(ClaimCondition(claim, tuple(texts), cm.where(claim).line))
        return tuple(conditions)
