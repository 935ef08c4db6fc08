"""The token endpoint's wire shapes: the request as received, the answer, the refusal, and the
small readers every part of the endpoint shares (`token_service`, `token_credentials`)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from regauth.mtls.identity import ClientCertificate
from regauth.protocol.errors import Answer
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.errors import error_body
from regauth.runtime import Runtime
from regauth.token_trace import GrantType
from regauth.token_trace import TokenMethod
from regauth.token_trace import TokenTrace

MAX_FORM_BYTES = 64 * 1024
TRUE_VALUES = ("true", "1", "yes")


NO_STORE = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class TokenRequest:
    """A token request as received: method GET or POST (the front door refuses others),
    query parameters, the parsed form of a POST (None if it was not a form), the
    Authorization header, and the client's address."""

    method: TokenMethod
    query: dict[str, list[str]]
    form: dict[str, list[str]] | None
    authorization: str | None
    client_ip: str
    # The verified client certificate of the connection (mutual TLS), or None: it identifies
    # the client even when the request carries no credentials (`_certificate_identity`).
    client_certificate: ClientCertificate | None = None


@dataclass
class TokenResponse:
    """The answer to a token request, and what the token service did to reach it."""

    status: int
    body: bytes  # the token JSON, or the error body of a `TokenError`
    headers: dict[str, str] = field(default_factory=dict)
    trace: TokenTrace = field(default_factory=lambda: TokenTrace("GET"))
    jti: str | None = None  # the issued access token's id, if one was issued

    @property
    def record(self) -> dict[str, object]:
        return self.trace.as_record()


class TokenError(RegistryError):
    """A refusal of the token endpoint: a registry error code for registry clients plus the
    OAuth 2 `error` (RFC 6749 §5.2) for OAuth clients, in one body; never cached."""

    def __init__(
        self,
        status: int,
        code: Code,
        oauth_error: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, headers=headers)
        self.oauth_error = oauth_error

    def body(self) -> bytes:
        return error_body(
            self.code,
            self.message,
            extra={"error": self.oauth_error, "error_description": self.message},
        )

    def answer(self) -> Answer:
        return Answer(self.status, {**NO_STORE, **self.headers}, self.body())


GRANT_TYPES: dict[str, GrantType] = {
    "password": "password",
    "refresh_token": "refresh_token",
    # RFC 8693, with an OIDC ID token as the subject token (token_federation.py)
    "urn:ietf:params:oauth:grant-type:token-exchange": "token_exchange",
}


def first_param(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "invalid_request",
            f"parameter {key!r} given more than once with different values",
        )
    return values[0]


def basic_challenge(runtime: Runtime) -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{runtime.policy.service}"'}
