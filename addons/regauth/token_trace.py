"""What the token service did with one request, for the exchange log and mitmweb.

`TokenTrace` is filled in as `token_service` works through a request; `as_record()` renders the
JSON the exchange log has always carried (README "The exchange log": `token_request` and
`token_response`), and `request_record()`/`response_record()` give its two halves. Nothing in
it is a secret: a username, never a password; a jti, never a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from regauth.policy.model import ScopeDecision

TokenMethod = Literal["GET", "POST"]  # the front door answers every other method 405
# "get": no grant_type (a GET); "token_exchange": RFC 8693 with an ID token
GrantType = Literal["get", "password", "refresh_token", "token_exchange"]
Credential = Literal[
    "password",
    "refresh_token",
    "refresh_token (basic)",
    "client_certificate",
    "job_token",
    "id_token",
]

_REQUEST_KEYS = ("method", "grant_type", "service", "client_id", "username", "requested")


@dataclass
class TokenTrace:
    """One token request as `token_service` saw it, field by field; None: not reached."""

    method: TokenMethod
    grant_type: GrantType | None = None  # None: a grant_type outside the vocabulary (refused)
    client_id: str | None = None  # as the client sent it, at most 128 characters
    service: str | None = None  # the `service` asked for (None: none given)
    service_given: bool = False  # the request got as far as reading `service` (even if None)
    requested: list[str] | None = None  # the requested scopes, parsed and rendered
    username: str | None = None  # the account name of a password login (never the password)
    credential: Credential | None = None  # what the client proved itself with
    failed_login_counted: bool | None = None  # a password login: did it count as a failure
    rate_limited: str | None = None  # the failed-login limit that refused it
    account: str | None = None  # who the tokens are for ("anonymous" if nobody)
    build: str | None = None  # the build a client certificate names (`${build}`)
    certificate_serial: str | None = None  # the client certificate that identified it (hex)
    job_token: str | None = None  # the id (jti) of the job token that identified it
    federated_issuer: str | None = None  # the federated issuer (its policy name) of an ID token
    federated_subject: str | None = None  # the subject its template gave
    federated_claims: dict[str, str] | None = None  # the claims that decided (never the token)
    id_token_refused: str | None = None  # the reason an ID token was refused (`RefusalReason`)
    # Scopes an ID token's identity did not get: the issuer's rule and the claim that failed.
    claim_mismatches: list[dict[str, object]] | None = None
    decisions: list[ScopeDecision] = field(default_factory=list)  # one per requested scope
    decided: bool = False  # the policy decided the scopes (`decisions` may still be empty)
    granted: list[str] | None = None  # the scopes the access token carries
    refresh_token_issued: bool | None = None  # a new refresh token is in the answer
    expires_in: int | None = None  # the access token's lifetime, seconds
    issued_at: str | None = None  # RFC 3339, as in the answer
    jti: str | None = None  # the access token's id
    refused: str | None = None  # why the request was refused (the error's message)

    def as_record(self) -> dict[str, object]:
        """The whole trace as JSON-ready values, in a stable key order; unset keys omitted."""
        record: dict[str, object] = {"method": self.method}
        optional: list[tuple[str, object]] = [
            ("grant_type", self.grant_type),
            ("client_id", self.client_id),
        ]
        for key, value in optional:
            if value is not None:
                record[key] = value
        if self.service_given:
            record["service"] = self.service
        for key, value in (
            ("requested", self.requested),
            ("username", self.username),
            ("credential", self.credential),
            ("failed_login_counted", self.failed_login_counted),
            ("rate_limited", self.rate_limited),
            ("account", self.account),
            ("build", self.build),
            ("certificate_serial", self.certificate_serial),
            ("job_token", self.job_token),
            ("federated_issuer", self.federated_issuer),
            ("federated_subject", self.federated_subject),
            ("federated_claims", self.federated_claims),
            ("id_token_refused", self.id_token_refused),
            ("claim_mismatches", self.claim_mismatches),
        ):
            if value is not None:
                record[key] = value
        if self.decided:
            record["decisions"] = [d.as_record() for d in self.decisions]
        for key, value in (
            ("granted", self.granted),
            ("refresh_token_issued", self.refresh_token_issued),
            ("expires_in", self.expires_in),
            ("issued_at", self.issued_at),
            ("jti", self.jti),
            ("refused", self.refused),
        ):
            if value is not None:
                record[key] = value
        return record

    def request_record(self) -> dict[str, object]:
        """The exchange log's `token_request`: what the client asked for."""
        record = self.as_record()
        return {k: record[k] for k in _REQUEST_KEYS if k in record}

    def response_record(self) -> dict[str, object]:
        """The exchange log's `token_response`: who it was, what was decided and issued."""
        return {k: v for k, v in self.as_record().items() if k not in _REQUEST_KEYS}
