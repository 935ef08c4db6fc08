"""Who asks, as the policy tools name it (`policy test` cases, `policy explain`), turned into
the `Identity` the token service would decide for.

A tests case says who asks with an `identity:` mapping (one kind of identity per case):

    identity: {account: ci}                              # an account of the policy
    identity: {subject: eve, groups: [release],          # a signed-in subject the policy does
               labels: {team: [web]}}                    #   not declare (`authenticated`)
    identity: {client_certificate: "regauth:build:b1"}   # a client certificate's SAN URI
    identity: {issuer: github,                           # an OIDC ID token's claims under a
               claims: {repository: acme/app}}           #   `federated_issuers` entry
    identity: anonymous                                  # nobody (the default)

The older top-level `account: NAME` and `build: ID` keys are shorthands for
`{account: NAME}` and `{client_certificate: "regauth:build:ID"}`.

`CaseIdentity` is the parsed form; `resolve` maps it onto the policy the way the token service
does: an account is the policy's (its groups and labels from there), a build certificate binds
`${build}` and is otherwise anonymous, an account certificate is that account. One more kind
of identity is one more field here, one more branch in `parse` and in `resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from regauth.federation.id_token import IdTokenRefused
from regauth.federation.id_token import identity_from_claims
from regauth.mtls.identity import parse_subject
from regauth.mtls.identity import parse_subject_uri
from regauth.policy.model import ACCOUNT_NAME_RE
from regauth.policy.model import ANONYMOUS
from regauth.policy.model import Account
from regauth.policy.model import FederatedIdentity
from regauth.policy.model import Identity
from regauth.policy.model import Policy

# The keys of an `identity:` mapping, in the order they are documented.
IDENTITY_KEYS = ("account", "subject", "groups", "labels", "client_certificate", "claims", "issuer")
KINDS = ("account", "subject", "client_certificate", "claims")


@dataclass(frozen=True)
class CaseIdentity:
    """Who asks in a test case or an explanation; at most one of `account`, `subject`,
    `client_certificate` is set (none: anonymous). `groups`/`labels` only with `subject`."""

    account: str | None = None  # an account the policy must declare
    subject: str | None = None  # a signed-in subject the policy does not declare
    groups: tuple[str, ...] = ()
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    client_certificate: str | None = None  # `regauth:build:ID` or `regauth:account:NAME`
    claims: dict[str, object] | None = None  # an ID token's claims (not verified: given)
    issuer: str | None = None  # the federated issuer's name (default: the one whose `iss` …)

    def describe(self) -> str:
        """How reports name it: `anonymous`, `ci`, `subject eve [group release]`,
        `build b1`, `ci (client certificate)`."""
        if self.account is not None:
            return self.account
        if self.subject is not None:
            extra = [f"group {g}" for g in self.groups] + [
                f"{k}={','.join(v)}" for k, v in self.labels.items()
            ]
            return f"subject {self.subject}" + (f" [{'; '.join(extra)}]" if extra else "")
        if self.client_certificate is not None:
            # `build b1` as before; an account certificate is that account, said so.
            certificate = parse_subject_uri(self.client_certificate)
            if certificate.kind == "build":
                return str(certificate)
            return f"{certificate.name} (client certificate)"
        if self.claims is not None:
            return f"ID token of {self.issuer or self.claims.get('iss', '?')}"
        return ANONYMOUS

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.account is not None:
            out["account"] = self.account
        if self.subject is not None:
            out["subject"] = self.subject
            out["groups"] = list(self.groups)
            out["labels"] = {k: list(v) for k, v in self.labels.items()}
        if self.client_certificate is not None:
            out["client_certificate"] = self.client_certificate
        if self.claims is not None:
            out["claims"] = self.claims
            if self.issuer is not None:
                out["issuer"] = self.issuer
        return out or {"anonymous": True}


ANONYMOUS_CASE = CaseIdentity()


def build_certificate(build: str) -> str:
    """The SAN URI of a build's client certificate; ValueError for a malformed build id."""
    return parse_subject("build", build).uri


def parse(value: object) -> CaseIdentity:
    """An `identity:` value (a mapping, or the word `anonymous`); ValueError says what is
    wrong, naming the key (the caller adds the position)."""
    if value == ANONYMOUS:
        return ANONYMOUS_CASE
    if not isinstance(value, dict):
        raise ValueError(
            "identity must be `anonymous` or a mapping with one of account, subject, "
            "client_certificate"
        )
    unknown = [k for k in value if k not in IDENTITY_KEYS]
    if unknown:
        raise ValueError(
            f"unknown identity key {unknown[0]!r} (allowed: {', '.join(IDENTITY_KEYS)})"
        )
    kinds = [k for k in KINDS if k in value]
    if len(kinds) != 1:
        raise ValueError(f"an identity has exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    if kind == "claims":
        return parse_claims(value["claims"], value.get("issuer"))
    if "issuer" in value:
        raise ValueError("issuer goes with `claims:`")
    text = value[kind]
    if not isinstance(text, str) or not text:
        raise ValueError(f"identity {kind} must be a non-empty string")
    if kind != "subject" and ("groups" in value or "labels" in value):
        raise ValueError("groups and labels go with `subject:` (an account's come from the policy)")
    if kind == "account":
        return CaseIdentity(account=text)
    if kind == "client_certificate":
        try:
            parse_subject_uri(text)
        except ValueError as e:
            raise ValueError(f"identity client_certificate: {e}") from None
        return CaseIdentity(client_certificate=text)
    if ACCOUNT_NAME_RE.fullmatch(text) is None or text in ("anonymous", "authenticated", "any"):
        raise ValueError(f"identity subject {text!r} is not an account name")
    return CaseIdentity(
        subject=text, groups=_strings(value.get("groups", []), "groups"), labels=_labels(value)
    )


def parse_claims(claims: object, issuer: object = None) -> CaseIdentity:
    """An ID token's claims (a JSON object) and, optionally, the federated issuer's name."""
    if not isinstance(claims, dict) or not all(isinstance(k, str) for k in claims):
        raise ValueError("identity claims must be a mapping of claim names to values")
    if issuer is not None and (not isinstance(issuer, str) or not issuer):
        raise ValueError("identity issuer must be the name of a federated issuer")
    return CaseIdentity(claims=dict(claims), issuer=issuer)


def _strings(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"identity {key} must be a list of names")
    return tuple(value)


def _labels(value: dict[str, object]) -> dict[str, tuple[str, ...]]:
    labels = value.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels):
        raise ValueError("identity labels must map each label to its values")
    return {k: _strings(v, f"labels.{k}") for k, v in labels.items()}


def resolve(case: CaseIdentity, policy: Policy) -> Identity:
    """The `Identity` the token service would decide for; ValueError when the policy cannot
    have it (an account it does not declare, a subject that is one of its accounts)."""
    if case.account is not None:
        account = policy.accounts.get(case.account)
        if account is None:
            raise ValueError(f"account {case.account!r} is not in the policy")
        return Identity(account)
    if case.subject is not None:
        if case.subject in policy.accounts:
            raise ValueError(
                f"subject {case.subject!r} is an account of the policy: use `account:`"
            )
        return Identity(Account(case.subject, b"", case.groups, dict(case.labels)))
    if case.client_certificate is not None:
        # As front.certificate_identity: a build binds ${build}; an account must be declared.
        certificate = parse_subject_uri(case.client_certificate)
        if certificate.kind == "build":
            return Identity(None, build=certificate.name)
        account = policy.accounts.get(certificate.name)
        if account is None:
            raise ValueError(
                f"the client certificate names account {certificate.name!r}, "
                "which the policy does not have"
            )
        return Identity(account)
    if case.claims is not None:
        return Identity(None, federated=_federated(case.claims, case.issuer, policy))
    return Identity(None)


def _federated(claims: dict[str, object], name: str | None, policy: Policy) -> FederatedIdentity:
    """The identity the token service would make of these claims, were they verified: the
    entry named `name`, else the one whose `issuer` is the claims' `iss`."""
    entries = policy.federated_issuers
    if name is not None:
        entry = next((e for e in entries if e.name == name), None)
        if entry is None:
            raise ValueError(f"federated issuer {name!r} is not in the policy")
    else:
        entry = next((e for e in entries if e.issuer == claims.get("iss")), None)
        if entry is None:
            raise ValueError(
                "the claims' iss names no federated issuer of the policy (give `issuer:`)"
            )
    try:
        return identity_from_claims(entry, claims)
    except IdTokenRefused as e:
        raise ValueError(str(e)) from None
