"""The exchange record: one typed definition of a line of the JSONL exchange log.

`mitm.records.build_record` builds an `ExchangeRecord` when a flow ends, the recorder writes
`record.to_json()` (`ops.exchange_log`), and every tool reads a line back with
`ExchangeRecord.from_json` (`tools.log_records.Entry`): writer and readers share this module,
the way distribution's notifications share one `Event` struct (`notifications/event.go`).
README "The exchange log and mitmweb" describes the fields for operators.

One class for every record kind (`registry`, `token`, `jwks`, `other`), with the parts a kind
does not have left absent (`token_request` and `token_response` only on token requests, `route`
only on registry routes): the kinds share nearly every field, the writer fills the parts it has
whatever the kind, and readers (`regauth trace`) walk records of all kinds in one sequence, so
one class keeps both sides free of a dispatch on `kind` (and a line of an unknown kind still
reads).

The JSON: `to_json()` gives the dict the log writes, keys in a fixed order. `version` comes
first: 2 for records written by this module; a line without one is version 1 (the same keys,
written before they were typed). The keys every record has (`version` to `answered_by`, and
`bytes`) are written as null when unknown; an optional key or part is left out when absent,
except where null is a value of its own (`auth.checked_by`, `token_request.service`: `ABSENT`
tells the two apart).

Reading is tolerant, so that logs of older and newer regauth versions both read and a foreign
line never stops a tool: `from_json` ignores keys it does not know, reads a value of the wrong
JSON type as absent, and never raises for a JSON object. Reading today's output back gives an
equal record (`tests/unit/ops/test_exchange_record.py` pins the JSON and the round trip).

Secrets: nothing here holds one (a user name, never a password; a token's claims, never its
signature); `ExchangeLog.write` still drops secret-named keys, and redacts capability ids in
the serialized line.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Final
from typing import Literal

from regauth.ops.safe_text import quote
from regauth.policy.model import describe_rule

VERSION: Final = 2  # written into every record; a record without one is version 1


class Absent(enum.Enum):
    """A key a record does not have, where null is a value of its own (`auth.checked_by`,
    `token_request.service`)."""

    ABSENT = "absent"


ABSENT: Final = Absent.ABSENT

# Who checked a registry request's credential (`auth.checked_by`): regauth's gate verified the
# token, or (delegate mode) regauth forwarded it unchecked and the registry decided.
CheckedBy = Literal["regauth", "registry"]
# The record kinds (`front.Kind`, by request path). Readers keep any string: a newer kind
# reads as itself.
KINDS: Final = ("registry", "token", "jwks", "other")
# The kind of a record with no request: a TLS handshake that failed (its `tls` part).
TLS_KIND: Final = "tls"


# -- reading JSON values: the wrong type reads as absent ----------------------------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _str_map(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _maps(value: object) -> tuple[dict[str, object], ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(dict(v) for v in value if isinstance(v, dict))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _strs(value: object) -> tuple[str, ...] | None:
    """A JSON list of strings; other items are dropped, anything but a list is absent."""
    if not isinstance(value, list):
        return None
    return tuple(v for v in value if isinstance(v, str))


def _object(value: object) -> dict[str, object] | None:
    return value if isinstance(value, dict) else None


def _time(value: object) -> dt.datetime | None:
    """An ISO 8601 timestamp; without an offset it is read as UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _part[P](value: object, read: Callable[[dict[str, object]], P]) -> P | None:
    """A nested part: `read` of a JSON object, absent for anything else."""
    found = _object(value)
    return read(found) if found is not None else None


def _put(out: dict[str, object], key: str, value: object) -> None:
    """Write `key` unless its value is absent (None)."""
    if value is not None:
        out[key] = value


def _list(values: tuple[str, ...] | None) -> list[str] | None:
    return list(values) if values is not None else None


# -- the parts ----------------------------------------------------------------------------------
# Each part writes its JSON object with `to_json()` and reads one back with `from_json(obj)`,
# as tolerantly as the record (unknown keys ignored, wrong types absent).


@dataclass(frozen=True, kw_only=True)
class RouteRecord:
    """The registry route a request matched (registry records only). Written flat, as the
    record's `repository`, `route` and `required` keys."""

    kind: str  # `route`: the route's name (`protocol.routes.RouteKind`: `base`, `manifest`, …)
    repository: str | None = None  # `repository`: the repository it names; null for none
    required: tuple[str, ...] = ()  # `required`: the access it needs, as scopes

    def put(self, out: dict[str, object]) -> None:
        """Write the route's three keys into the record's object `out`."""
        out["repository"] = self.repository
        out["route"] = self.kind
        out["required"] = list(self.required)

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> RouteRecord | None:
        """The route of the record's object `obj`; None when it names none."""
        kind = _str(obj.get("route"))
        if kind is None:
            return None
        return cls(
            kind=kind,
            repository=_str(obj.get("repository")),
            required=_strs(obj.get("required")) or (),
        )


@dataclass(frozen=True, kw_only=True)
class JwtRecord:
    """A Bearer token decoded without verification (`auth.jwt`); its signature is dropped."""

    header: dict[str, object] = field(default_factory=dict)  # the JOSE header as sent (an
    # `x5c` chain is replaced by "<N certificate(s)>")
    claims: dict[str, object] = field(default_factory=dict)  # the claims as sent, unverified
    signature_bytes: int | None = None  # the signature's length in bytes

    def to_json(self) -> dict[str, object]:
        return {
            "header": self.header,
            "claims": self.claims,
            "signature_bytes": self.signature_bytes,
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> JwtRecord:
        return cls(
            header=_object(obj.get("header")) or {},
            claims=_object(obj.get("claims")) or {},
            signature_bytes=_int(obj.get("signature_bytes")),
        )


@dataclass(frozen=True, kw_only=True)
class AuthRecord:
    """The request's Authorization header, as far as it is safe to log (`auth`;
    `protocol.auth_header.describe`): never a password, a token's signature or a credential
    regauth cannot parse."""

    scheme: str | None = None  # `Basic`, `Bearer` (as sent), or `<unparsed>`
    length: int | None = None  # `<unparsed>` only: the header value's length in characters
    username: str | None = None  # Basic: the user name (unverified)
    malformed: str | None = None  # why the Basic or Bearer credentials did not decode
    token_length: int | None = None  # Bearer that did not decode: the token's length
    jwt: JwtRecord | None = None  # Bearer: the token's header and claims, unverified
    # Requests other than token requests: who checked the credential (CheckedBy), null when
    # nobody did (a forged or expired token, Basic on a registry route). ABSENT on token
    # requests (`token_response.account` says who logged in) and in logs older than the key
    # (`decision.verified_token` said it then).
    checked_by: CheckedBy | None | Absent = ABSENT

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        _put(out, "scheme", self.scheme)
        _put(out, "length", self.length)
        _put(out, "username", self.username)
        _put(out, "malformed", self.malformed)
        _put(out, "token_length", self.token_length)
        _put(out, "jwt", self.jwt.to_json() if self.jwt is not None else None)
        if self.checked_by is not ABSENT:
            out["checked_by"] = self.checked_by
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> AuthRecord:
        checked_by: CheckedBy | None | Absent = ABSENT
        if "checked_by" in obj:
            value = obj["checked_by"]  # anything else: nobody
            checked_by = (
                "regauth" if value == "regauth" else "registry" if value == "registry" else None
            )
        return cls(
            scheme=_str(obj.get("scheme")),
            length=_int(obj.get("length")),
            username=_str(obj.get("username")),
            malformed=_str(obj.get("malformed")),
            token_length=_int(obj.get("token_length")),
            jwt=_part(obj.get("jwt"), JwtRecord.from_json),
            checked_by=checked_by,
        )


@dataclass(frozen=True, kw_only=True)
class VerifiedTokenRecord:
    """The token regauth's gate verified (`decision.verified_token`)."""

    issuer: str | None = None  # its `iss`
    subject: str | None = None  # its `sub`: the account ("" for an anonymous token)
    source: str | None = None  # `regauth`, or the name of the trusted issuer that signed it

    def to_json(self) -> dict[str, object]:
        return {"issuer": self.issuer, "subject": self.subject, "source": self.source}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> VerifiedTokenRecord:
        return cls(
            issuer=_str(obj.get("issuer")),
            subject=_str(obj.get("subject")),
            source=_str(obj.get("source")),
        )


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """What regauth decided for the request (`decision`): forward or not, and why."""

    forward: bool | None = None  # whether the gate let it through to the registry; absent
    # when no gate decided (the token endpoint, JWKS, a request refused before routing)
    reason: str | None = None  # why, in words safe to log
    verified_token: VerifiedTokenRecord | None = None  # the token the gate verified, if any

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        _put(out, "forward", self.forward)
        _put(out, "reason", self.reason)
        _put(
            out,
            "verified_token",
            self.verified_token.to_json() if self.verified_token is not None else None,
        )
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> DecisionRecord:
        return cls(
            forward=_bool(obj.get("forward")),
            reason=_str(obj.get("reason")),
            verified_token=_part(obj.get("verified_token"), VerifiedTokenRecord.from_json),
        )


@dataclass(frozen=True, kw_only=True)
class ChallengeRecord:
    """One `WWW-Authenticate` challenge, parsed (`challenge`, `upstream_challenge`;
    `protocol.challenge.Challenge.as_record`)."""

    unparsed: bool = False  # the header value did not parse as RFC 7235 challenges
    scheme: str | None = None  # `Bearer`, `Basic`, … as sent; absent when unparsed
    realm: str | None = None  # the token service's URL (Bearer) or the realm's name
    service: str | None = None  # Bearer: the service tokens must name (`aud`)
    # Bearer: RFC 6750's error (`invalid_token`, `insufficient_scope`); for an unparsed
    # upstream challenge, why it did not parse
    error: str | None = None
    error_description: str | None = None  # Bearer: the error in words
    scopes: tuple[str, ...] | None = None  # Bearer: the `scope` parameter, split on spaces

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"unparsed": True} if self.unparsed else {}
        _put(out, "scheme", self.scheme)
        _put(out, "realm", self.realm)
        _put(out, "service", self.service)
        _put(out, "error", self.error)
        _put(out, "error_description", self.error_description)
        _put(out, "scopes", _list(self.scopes))
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> ChallengeRecord:
        return cls(
            unparsed=obj.get("unparsed") is True,
            scheme=_str(obj.get("scheme")),
            realm=_str(obj.get("realm")),
            service=_str(obj.get("service")),
            error=_str(obj.get("error")),
            error_description=_str(obj.get("error_description")),
            scopes=_strs(obj.get("scopes")),
        )

    @property
    def is_bearer(self) -> bool:
        return (self.scheme or "").lower() == "bearer"


@dataclass(frozen=True, kw_only=True)
class ScopeDecisionRecord:
    """The policy's decision for one requested scope (`token_response.decisions[]`)."""

    scope: str | None = None  # the scope as requested, canonical (`repository:NAME:ACTIONS`)
    granted: tuple[str, ...] = ()  # the actions granted (empty: none)
    outcome: str | None = None  # `granted`, `partial`, `denied` or `default deny`
    rule: int | None = None  # the deciding rule's 1-based index; None: no rule matched,
    # written as "default deny"
    line: int | None = None  # that rule's line in the policy file
    comment: str | None = None  # that rule's comment

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "scope": self.scope,
            "granted": list(self.granted),
            "outcome": self.outcome,
            "rule": self.rule if self.rule is not None else "default deny",
        }
        _put(out, "line", self.line)
        _put(out, "comment", self.comment)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> ScopeDecisionRecord:
        return cls(
            scope=_str(obj.get("scope")),
            granted=_strs(obj.get("granted")) or (),
            outcome=_str(obj.get("outcome")),
            rule=_int(obj.get("rule")),
            line=_int(obj.get("line")),
            comment=_str(obj.get("comment")),
        )

    def rule_label(self, default: str = "default deny") -> str:
        """`rule 3 (line 12) 'comment'`, or `default` when no rule matched
        (`policy.model.describe_rule`; the comment is quoted: the log is untrusted text)."""
        return describe_rule(
            self.rule,
            f"line {self.line}" if self.line else "",
            quote(self.comment) if self.comment else "",
            default,
        )


@dataclass(frozen=True, kw_only=True)
class TokenRequestRecord:
    """What a client asked the token endpoint for (`token_request`; token records only)."""

    method: str | None = None  # GET or POST
    grant_type: str | None = None  # `get` (a GET: no grant_type), `password`, `refresh_token`;
    # absent for a grant_type outside these (refused)
    # the service the request named; null when it named none; ABSENT when refused before
    # regauth read it
    service: str | None | Absent = ABSENT
    client_id: str | None = None  # the client's `client_id`, as sent
    username: str | None = None  # the user name sent (Basic or form), unverified
    requested: tuple[str, ...] | None = None  # the scopes asked for, as parsed

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        _put(out, "method", self.method)
        _put(out, "grant_type", self.grant_type)
        if self.service is not ABSENT:
            out["service"] = self.service
        _put(out, "client_id", self.client_id)
        _put(out, "username", self.username)
        _put(out, "requested", _list(self.requested))
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> TokenRequestRecord:
        return cls(
            method=_str(obj.get("method")),
            grant_type=_str(obj.get("grant_type")),
            service=_str(obj["service"]) if "service" in obj else ABSENT,
            client_id=_str(obj.get("client_id")),
            username=_str(obj.get("username")),
            requested=_strs(obj.get("requested")),
        )

    @property
    def named_service(self) -> str | None:
        """The service the request named; None when it named none or was not read."""
        return self.service if isinstance(self.service, str) else None


@dataclass(frozen=True, kw_only=True)
class TokenResponseRecord:
    """What the token endpoint did (`token_response`; token records only): who it was, what
    the policy decided, what was issued, or why it refused."""

    credential: str | None = None  # what was checked: `password`, `refresh_token`,
    # `refresh_token (basic)`, `client_certificate`, `job_token`
    failed_login_counted: bool | None = None  # a wrong password counted against the limits
    rate_limited: str | None = None  # the limit that refused the login (`account`,
    # `account and network`, `login queue …`)
    account: str | None = None  # the account the token is for, regauth having checked the
    # credential; `anonymous` for an anonymous token
    build: str | None = None  # the build a client certificate names (`${build}`)
    certificate_serial: str | None = None  # the client certificate that decided (hex serial)
    job_token: str | None = None  # the id (jti) of the job token that decided, never the token
    federated_issuer: str | None = None  # an ID token's issuer (the policy's name for it)
    federated_subject: str | None = None  # the subject its template gave (`ci:acme/app`)
    federated_claims: dict[str, str] | None = None  # the claims that decided, never the token
    id_token_refused: str | None = None  # why an ID token was refused (`unknown-kid`, ...)
    # per scope an ID token's identity did not get: {scope, rule, line, claim, expected, got}
    claim_mismatches: tuple[dict[str, object], ...] | None = None
    decisions: tuple[ScopeDecisionRecord, ...] | None = None  # one per requested scope, once
    # the policy decided (absent when refused before)
    granted: tuple[str, ...] | None = None  # the scopes the token grants
    refresh_token_issued: bool | None = None  # whether a refresh token came with it
    expires_in: int | None = None  # the token's lifetime, in seconds
    issued_at: str | None = None  # when it was issued (ISO 8601, as the client got it)
    jti: str | None = None  # the token's id: requests presenting it join this conversation
    refused: str | None = None  # why the endpoint refused, as told to the client

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        _put(out, "credential", self.credential)
        _put(out, "failed_login_counted", self.failed_login_counted)
        _put(out, "rate_limited", self.rate_limited)
        _put(out, "account", self.account)
        _put(out, "build", self.build)
        _put(out, "certificate_serial", self.certificate_serial)
        _put(out, "job_token", self.job_token)
        _put(out, "federated_issuer", self.federated_issuer)
        _put(out, "federated_subject", self.federated_subject)
        if self.federated_claims is not None:
            out["federated_claims"] = dict(self.federated_claims)
        _put(out, "id_token_refused", self.id_token_refused)
        if self.claim_mismatches is not None:
            out["claim_mismatches"] = [dict(m) for m in self.claim_mismatches]
        if self.decisions is not None:
            out["decisions"] = [d.to_json() for d in self.decisions]
        _put(out, "granted", _list(self.granted))
        _put(out, "refresh_token_issued", self.refresh_token_issued)
        _put(out, "expires_in", self.expires_in)
        _put(out, "issued_at", self.issued_at)
        _put(out, "jti", self.jti)
        _put(out, "refused", self.refused)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> TokenResponseRecord:
        decisions = obj.get("decisions")
        return cls(
            credential=_str(obj.get("credential")),
            failed_login_counted=_bool(obj.get("failed_login_counted")),
            rate_limited=_str(obj.get("rate_limited")),
            account=_str(obj.get("account")),
            build=_str(obj.get("build")),
            certificate_serial=_str(obj.get("certificate_serial")),
            job_token=_str(obj.get("job_token")),
            federated_issuer=_str(obj.get("federated_issuer")),
            federated_subject=_str(obj.get("federated_subject")),
            federated_claims=_str_map(obj.get("federated_claims")),
            id_token_refused=_str(obj.get("id_token_refused")),
            claim_mismatches=_maps(obj.get("claim_mismatches")),
            decisions=tuple(
                ScopeDecisionRecord.from_json(d) for d in decisions if isinstance(d, dict)
            )
            if isinstance(decisions, list)
            else None,
            granted=_strs(obj.get("granted")),
            refresh_token_issued=_bool(obj.get("refresh_token_issued")),
            expires_in=_int(obj.get("expires_in")),
            issued_at=_str(obj.get("issued_at")),
            jti=_str(obj.get("jti")),
            refused=_str(obj.get("refused")),
        )


@dataclass(frozen=True, kw_only=True)
class ClientCertificateRecord:
    """The TLS client certificate of the request's connection (mutual TLS): the identity it
    names and its serial when verified, or why it was refused (then every request on the
    connection got 401)."""

    subject: str | None = None  # `regauth:build:ID` or `regauth:account:NAME`
    serial: str | None = None  # hex, as `regauth certs revoke --serial` takes it
    refused: str | None = None  # why it is no identity

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        _put(out, "subject", self.subject)
        _put(out, "serial", self.serial)
        _put(out, "refused", self.refused)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> ClientCertificateRecord:
        return cls(
            subject=_str(obj.get("subject")),
            serial=_str(obj.get("serial")),
            refused=_str(obj.get("refused")),
        )


@dataclass(frozen=True, kw_only=True)
class BytesRecord:
    """Body sizes in bytes (`bytes`), also of streamed bodies; null when there was none to
    count (no response)."""

    request: int | None = None  # the request body as received
    response: int | None = None  # the response body as sent to the client

    def to_json(self) -> dict[str, object]:
        return {"request": self.request, "response": self.response}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> BytesRecord:
        return cls(request=_int(obj.get("request")), response=_int(obj.get("response")))


@dataclass(frozen=True, kw_only=True)
class TlsRecord:
    """A TLS handshake that failed (`tls`; records of kind `tls` only, which have no HTTP
    request): what the client asked for and why it failed (`ops.tls_failures`)."""

    cause: str | None = None  # `untrusted`, `version`, `closed`, `other` (tls_failures.Cause)
    sni: str | None = None  # the server name the client asked for; absent when it sent none
    alpn: tuple[str, ...] | None = None  # the protocols it offered (`h2`, `http/1.1`)
    library: str | None = None  # its TLS library, guessed from the ClientHello: `go`, `openssl`
    listen: str | None = None  # the `address:port` it connected to
    ca: str | None = None  # the CA file regauth's certificates chain to (what to trust)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        _put(out, "cause", self.cause)
        _put(out, "sni", self.sni)
        _put(out, "alpn", _list(self.alpn))
        _put(out, "library", self.library)
        _put(out, "listen", self.listen)
        _put(out, "ca", self.ca)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> TlsRecord:
        return cls(
            cause=_str(obj.get("cause")),
            sni=_str(obj.get("sni")),
            alpn=_strs(obj.get("alpn")),
            library=_str(obj.get("library")),
            listen=_str(obj.get("listen")),
            ca=_str(obj.get("ca")),
        )


# -- the record -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExchangeRecord:
    """One request through regauth and what became of it: a line of the exchange log."""

    version: int = VERSION  # the record format; 1 for lines written before it was typed
    time: dt.datetime | None = None  # when the request arrived (UTC; written to milliseconds)
    flow: str | None = None  # mitmproxy's flow id (mitmweb shows the same flow)
    conversation: str | None = None  # challenge → token request → retries share this id
    client: str | None = None  # the client's `address:port` (an IPv6 address unbracketed)
    method: str | None = None  # the request method, as the client spelled it
    path: str | None = None  # path and query; secret query values dropped, `_state` too
    http_version: str | None = None  # `HTTP/1.1`, `HTTP/2.0`, …
    kind: str | None = None  # one of KINDS: `registry`, `token`, `jwks`, `other`; or TLS_KIND
    status: int | None = None  # the status the client got; null when it got no response
    answered_by: str | None = None  # `regauth` or `upstream`; null when nobody answered
    via: str | None = None  # the load balancer whose PROXY protocol header named `client`
    client_certificate: ClientCertificateRecord | None = None  # the connection's TLS client
    # certificate, when the client presented one
    route: RouteRecord | None = None  # the registry route (keys repository, route, required)
    auth: AuthRecord | None = None  # the Authorization header, as far as it is safe to log
    decision: DecisionRecord | None = None  # forward or not, and why
    upstream_credentials: Literal["injected"] | None = None  # regauth's own upstream
    # credentials replaced the client's (inject mode)
    challenge: tuple[ChallengeRecord, ...] = ()  # the challenges the client got (one: written
    # as an object; several: as a list)
    upstream_challenge: tuple[ChallengeRecord, ...] = ()  # the registry's challenges, before
    # regauth rewrote them
    upstream_refused_token: str | None = None  # the `kid` of regauth's signing key when the
    # registry refused a token regauth issued and that verifies (its bundle lacks the key)
    token_request: TokenRequestRecord | None = None  # token requests: what was asked
    token_response: TokenResponseRecord | None = None  # token requests: what was decided
    bytes: BytesRecord = field(default_factory=BytesRecord)  # body sizes
    upstream_date: str | None = None  # the registry response's `Date` (its clock), ≤ 64 chars
    upstream_ms: float | None = None  # request sent → registry's response head, milliseconds
    body_discarded: bool = False  # regauth refused the request and read its body (large or
    # of unknown size) into its refusal sink, never forwarded
    error: str | None = None  # why the flow ended without a complete answer (mitmproxy's or
    # regauth's words: a cut body, a reset stream, a lost connection)
    tls: TlsRecord | None = None  # kind `tls`: the handshake that failed

    def to_json(self) -> dict[str, object]:
        """The log line's object: keys in a fixed order, absent parts left out."""
        out: dict[str, object] = {
            "version": self.version,
            "time": self.time.isoformat(timespec="milliseconds") if self.time else None,
            "flow": self.flow,
            "conversation": self.conversation,
            "client": self.client,
            "method": self.method,
            "path": self.path,
            "http_version": self.http_version,
            "kind": self.kind,
            "status": self.status,
            "answered_by": self.answered_by,
        }
        _put(out, "via", self.via)
        if self.client_certificate is not None:
            out["client_certificate"] = self.client_certificate.to_json()
        if self.route is not None:
            self.route.put(out)
        _put(out, "auth", self.auth.to_json() if self.auth is not None else None)
        _put(out, "decision", self.decision.to_json() if self.decision is not None else None)
        _put(out, "upstream_credentials", self.upstream_credentials)
        if len(self.challenge) == 1:
            out["challenge"] = self.challenge[0].to_json()
        elif self.challenge:
            out["challenge"] = [c.to_json() for c in self.challenge]
        if self.upstream_challenge:
            out["upstream_challenge"] = [c.to_json() for c in self.upstream_challenge]
        _put(out, "upstream_refused_token", self.upstream_refused_token)
        if self.token_request is not None:
            out["token_request"] = self.token_request.to_json()
        if self.token_response is not None:
            out["token_response"] = self.token_response.to_json()
        out["bytes"] = self.bytes.to_json()
        _put(out, "upstream_date", self.upstream_date)
        _put(out, "upstream_ms", self.upstream_ms)
        if self.body_discarded:
            out["body_discarded"] = True
        _put(out, "error", self.error)
        _put(out, "tls", self.tls.to_json() if self.tls is not None else None)
        return out

    @classmethod
    def from_json(cls, obj: object) -> ExchangeRecord:
        """The record a parsed log line holds. Tolerant: unknown keys are ignored and a value
        of the wrong type reads as absent; a line without `version` is version 1. Raise
        ValueError only when `obj` is not a JSON object."""
        if not isinstance(obj, dict):
            raise ValueError(f"an exchange record is a JSON object, not {type(obj).__name__}")
        challenge = obj.get("challenge")
        challenges = challenge if isinstance(challenge, list) else [challenge]
        upstream = obj.get("upstream_challenge")
        return cls(
            version=_int(obj.get("version")) or 1,
            time=_time(obj.get("time")),
            flow=_str(obj.get("flow")),
            conversation=_str(obj.get("conversation")),
            client=_str(obj.get("client")),
            method=_str(obj.get("method")),
            path=_str(obj.get("path")),
            http_version=_str(obj.get("http_version")),
            kind=_str(obj.get("kind")),
            status=_int(obj.get("status")),
            answered_by=_str(obj.get("answered_by")),
            via=_str(obj.get("via")),
            client_certificate=_part(
                obj.get("client_certificate"), ClientCertificateRecord.from_json
            ),
            route=RouteRecord.from_json(obj),
            auth=_part(obj.get("auth"), AuthRecord.from_json),
            decision=_part(obj.get("decision"), DecisionRecord.from_json),
            upstream_credentials="injected"
            if obj.get("upstream_credentials") == "injected"
            else None,
            challenge=tuple(
                ChallengeRecord.from_json(c) for c in challenges if isinstance(c, dict)
            ),
            upstream_challenge=tuple(
                ChallengeRecord.from_json(c) for c in upstream if isinstance(c, dict)
            )
            if isinstance(upstream, list)
            else (),
            upstream_refused_token=_str(obj.get("upstream_refused_token")),
            token_request=_part(obj.get("token_request"), TokenRequestRecord.from_json),
            token_response=_part(obj.get("token_response"), TokenResponseRecord.from_json),
            bytes=_part(obj.get("bytes"), BytesRecord.from_json) or BytesRecord(),
            upstream_date=_str(obj.get("upstream_date")),
            upstream_ms=_float(obj.get("upstream_ms")),
            body_discarded=obj.get("body_discarded") is True,
            error=_str(obj.get("error")),
            tls=_part(obj.get("tls"), TlsRecord.from_json),
        )
