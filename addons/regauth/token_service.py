"""The `/v2/token` endpoint, without I/O: a parsed request in, a response and a log record out.

GET (distribution token.md): anonymous or Basic; repeated `scope`; `service`, `account`,
`client_id`, `offline_token`. POST (oauth.md): form with `grant_type=password|refresh_token`, one
space-separated `scope`, `client_id`, `access_type=offline`.

The audience is never the client's choice: a `service` other than the policy's is refused. A
partial grant is not an error; the token carries the intersection, and the record explains each
scope's decision.

Refresh tokens (what `docker login` stores as the identity token) arrive in two forms, both
honoured as a refresh grant and neither ever counted as a failed login:
- POST `grant_type=refresh_token` (docker engine, containerd, BuildKit's fallback);
- GET with `Authorization: Basic base64(":" + refresh token)`, an empty user name (BuildKit's
  first request after `docker login`; containerd's GET fallback). No account has an empty name,
  so such a credential is never a password.
A refused refresh token (malformed, expired, revoked, wrong type or audience) gets, on POST,
`400 invalid_grant` without a challenge (RFC 6749 §5.2). On GET it gets `401 invalid_grant`
with the Basic challenge RFC 7235 requires of a 401: BuildKit falls back from GET to the POST
grant only on 401, 404 or 405, and the POST's 400 then tells the client what is wrong; a 400 on
the GET would end the build without that fallback.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from dataclasses import field

from regauth.logins.credentials import AuthenticationFailed
from regauth.logins.credentials import Authenticator
from regauth.logins.limits import RateLimited
from regauth.mtls.identity import ClientCertificate
from regauth.policy.model import Account
from regauth.policy.model import Identity
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.auth_header import split_authorization
from regauth.protocol.errors import Answer
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.errors import error_body
from regauth.protocol.scope import format_scopes
from regauth.protocol.scope import parse_scopes
from regauth.runtime import Runtime
from regauth.token_trace import GrantType
from regauth.token_trace import TokenMethod
from regauth.token_trace import TokenTrace
from regauth.tokens.claims import InvalidToken

MAX_FORM_BYTES = 64 * 1024
_TRUE = ("true", "1", "yes")


_NO_STORE = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


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
        return Answer(self.status, {**_NO_STORE, **self.headers}, self.body())


_GRANT_TYPES: dict[str, GrantType] = {"password": "password", "refresh_token": "refresh_token"}


def _first(params: dict[str, list[str]], key: str) -> str | None:
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


def _basic_challenge(runtime: Runtime) -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{runtime.policy.service}"'}


def password_pair(request: TokenRequest) -> tuple[str, str] | None:
    """The (account name, password) whose check `request` asks for, if it can be read without
    refusing the request: Basic `user:password` with a non-empty user on GET, or on POST a form
    with grant_type=password and one username and one password (each may be repeated with the
    same value, as `_first` allows). None for anything else: anonymous, refresh tokens, other
    schemes, malformed credentials, an ambiguous or incomplete form."""
    if request.method == "POST":
        form = request.form
        if form is None or set(form.get("grant_type", ())) != {"password"}:
            return None
        usernames, passwords = set(form.get("username", ())), set(form.get("password", ()))
        if len(usernames) != 1 or len(passwords) != 1:
            return None
        return usernames.pop(), passwords.pop()
    if not request.authorization:
        return None
    scheme, credentials = split_authorization(request.authorization)
    if scheme.lower() != "basic":
        return None
    try:
        username, password = parse_basic(credentials)
    except ValueError:
        return None
    return (username, password) if username != "" else None


def may_block(runtime: Runtime, authenticator: Authenticator, request: TokenRequest) -> bool:
    """Whether answering `request` may run bcrypt or consult a shared login-limit store (then
    it belongs on a worker thread, through the login queue). False for anonymous requests,
    refresh grants and a password pair the authenticator decides from memory (verified or
    refused within its caches, or no password attempt at all): those cost a signature and no
    waiting. True for a POST form it cannot read (conservative: the form may still be a
    password grant)."""
    pair = password_pair(request)
    if pair is not None:
        return authenticator.needs_check(runtime.policy.accounts, *pair)
    if request.method == "POST":
        form = request.form
        return form is not None and form.get("grant_type") != ["refresh_token"]
    return False


@dataclass(frozen=True)
class _Login:
    """How a password check is run for this request (see `handle_token_request`)."""

    refuse: RateLimited | None = None
    renew_within: float = 0.0


def handle_token_request(
    runtime: Runtime,
    authenticator: Authenticator,
    request: TokenRequest,
    refuse_login: RateLimited | None = None,
    renew_within: float = 0.0,
) -> TokenResponse:
    """Answer one token request. Blocking: may run bcrypt, so call it off the event loop.

    `refuse_login`: refuse a password check with this instead of running it (the login queue
    had no room: mitm/login_pool.py); nothing is checked or counted, so it never blocks, and
    every other refusal (a malformed scope, a wrong service, ...) comes first as usual.
    `renew_within`: see `Authenticator.authenticate` (the login queue's checks renew a cached
    login about to expire)."""
    trace = TokenTrace(request.method)
    try:
        return _handle(runtime, authenticator, request, trace, _Login(refuse_login, renew_within))
    except TokenError as e:
        trace.refused = e.message
        answer = e.answer()
        return TokenResponse(answer.status, answer.body, answer.headers, trace)


def _handle(
    runtime: Runtime,
    authenticator: Authenticator,
    request: TokenRequest,
    trace: TokenTrace,
    login: _Login,
) -> TokenResponse:
    policy = runtime.policy
    if request.method == "POST":
        if request.form is None:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                "POST requests to the token endpoint must be application/x-www-form-urlencoded",
            )
        params = request.form
        grant_type = _first(params, "grant_type")
        if grant_type is None:
            raise TokenError(400, Code.UNSUPPORTED, "invalid_request", "grant_type is required")
    else:  # GET: the front door refuses every other method (405)
        params = request.query
        grant_type = None
    # Logged only from the vocabulary: another grant_type is refused by _identify.
    trace.grant_type = "get" if grant_type is None else _GRANT_TYPES.get(grant_type)
    client_id = _first(params, "client_id")
    if client_id is not None:
        trace.client_id = client_id[:128]
    service = _first(params, "service") or None  # an empty value is no choice at all
    trace.service, trace.service_given = service, True
    if service is not None and service != policy.service:
        raise TokenError(
            400,
            Code.DENIED,
            "invalid_request",
            f"this token service issues tokens for service {policy.service!r} only",
        )
    try:
        scopes = parse_scopes(params.get("scope", []))
    except ValueError as e:
        raise TokenError(400, Code.UNSUPPORTED, "invalid_scope", f"malformed scope: {e}") from None
    trace.requested = [str(s) for s in scopes]

    if request.client_certificate is not None:
        identity = _certificate_identity(runtime, request, params, grant_type, trace)
        account, refresh_in = identity.account, None
    else:
        account, refresh_in = _identify(
            runtime, authenticator, request, params, grant_type, trace, login
        )
        identity = Identity(account)
    trace.account = identity.name or "anonymous"

    decisions = [policy.decide(identity, s, request.client_ip) for s in scopes]
    granted = [g for d in decisions if (g := d.granted_scope()) is not None]
    trace.decisions, trace.decided = decisions, True
    trace.granted = [str(g) for g in granted]

    issued = runtime.issuer.issue_access(identity.subject, granted)
    body: dict[str, object] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": dt.datetime.fromtimestamp(issued.issued_at, dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "scope": format_scopes(granted),
    }
    offline = (_first(params, "offline_token") or "").lower() in _TRUE or _first(
        params, "access_type"
    ) == "offline"
    if refresh_in is not None:
        body["refresh_token"] = refresh_in  # the refresh grant returns the same refresh token
    elif offline and account is not None:
        body["refresh_token"] = runtime.issuer.issue_refresh(account)
    trace.refresh_token_issued = "refresh_token" in body and refresh_in is None
    trace.expires_in = issued.expires_in
    trace.issued_at = str(body["issued_at"])
    trace.jti = issued.jti
    return TokenResponse(200, json.dumps(body).encode(), dict(_NO_STORE), trace, issued.jti)


def _identify(
    runtime: Runtime,
    authenticator: Authenticator,
    request: TokenRequest,
    params: dict[str, list[str]],
    grant_type: str | None,
    trace: TokenTrace,
    login: _Login,
) -> tuple[Account | None, str | None]:
    """The authenticated account (None for anonymous) and, for refresh grants, the refresh
    token to send back (the one presented: oauth.md returns the same token)."""
    if grant_type == "refresh_token":
        token = _first(params, "refresh_token")
        if not token:
            raise TokenError(400, Code.UNSUPPORTED, "invalid_request", "refresh_token is required")
        return _refresh(runtime, token, trace, "form"), token
    if grant_type == "password":
        if _first(params, "client_id") is None:
            raise TokenError(400, Code.UNSUPPORTED, "invalid_request", "client_id is required")
        username = _first(params, "username")
        password = _first(params, "password")
        if username is None or password is None:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                "username and password are required for grant_type=password",
            )
        return _login(
            runtime, authenticator, username, password, request.client_ip, trace, login
        ), None
    if grant_type is not None:
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )
    if not request.authorization:
        return None, None
    scheme, credentials = split_authorization(request.authorization)
    if scheme.lower() != "basic":
        raise TokenError(
            401,
            Code.UNAUTHORIZED,
            "invalid_client",
            "the token endpoint accepts Basic credentials or none",
            _basic_challenge(runtime),
        )
    try:
        username, password = parse_basic(credentials)
    except ValueError as e:
        raise TokenError(
            401, Code.UNAUTHORIZED, "invalid_client", str(e), _basic_challenge(runtime)
        ) from None
    account_param = _first(params, "account")
    if username == "":
        # Basic ":" + refresh token: how BuildKit presents the identity token of docker login.
        account = _refresh(runtime, password, trace, "basic")
        if account_param and account_param != account.name:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                "the account parameter does not match the refresh token",
            )
        offline = (_first(params, "offline_token") or "").lower() in _TRUE
        return account, (password if offline else None)
    if account_param is not None and account_param != username:
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "invalid_request",
            "the account parameter does not match the credentials",
        )
    return _login(runtime, authenticator, username, password, request.client_ip, trace, login), None


def _claimed_username(
    request: TokenRequest, params: dict[str, list[str]], grant_type: str | None
) -> str | None:
    """The account name the request's own credentials claim, without checking them: the
    password grant's `username`, Basic's user name (a refresh token's account for `:TOKEN`),
    or None when it carries none."""
    if grant_type == "password":
        return _first(params, "username") or ""
    if grant_type == "refresh_token":
        return ""  # resolved by the caller: a refresh token's account is in the token
    if not request.authorization:
        return None
    scheme, credentials = split_authorization(request.authorization)
    if scheme.lower() != "basic":
        return ""
    try:
        username, _ = parse_basic(credentials)
    except ValueError:
        return ""
    return username


def _certificate_identity(
    runtime: Runtime,
    request: TokenRequest,
    params: dict[str, list[str]],
    grant_type: str | None,
    trace: TokenTrace,
) -> Identity:
    """The identity of a client-certificate connection. The certificate decides; credentials
    in the request are not checked and never merged: they must name the certificate's own
    account (docker login sends them), anything else is refused."""
    certificate = request.client_certificate
    assert certificate is not None
    subject = certificate.subject
    trace.credential = "client_certificate"
    trace.certificate_serial = certificate.serial
    if grant_type is not None and grant_type not in _GRANT_TYPES:
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )
    claimed = _claimed_username(request, params, grant_type)
    if claimed is not None:
        trace.username = claimed[:128] or None
        own = subject.name if subject.kind == "account" else None
        if claimed != own or grant_type == "refresh_token":
            raise TokenError(
                401,
                Code.UNAUTHORIZED,
                "invalid_client",
                f"this connection's client certificate names {subject}; credentials for "
                "another identity are refused on it (connect without the certificate to use them)",
            )
    if subject.kind == "build":
        trace.build = subject.name
        return Identity(None, build=subject.name)
    account = runtime.policy.accounts.get(subject.name)
    if account is None:
        raise TokenError(
            401,
            Code.UNAUTHORIZED,
            "invalid_client",
            f"the client certificate names account {subject.name!r}, which the policy "
            "does not have",
        )
    return Identity(account)


def _refresh(runtime: Runtime, token: str, trace: TokenTrace, form: str) -> Account:
    """Verify a refresh token presented as a POST grant (`form`) or as Basic (`basic`)."""
    trace.credential = "refresh_token" if form == "form" else "refresh_token (basic)"
    try:
        account = runtime.verifier.verify_refresh(
            token, runtime.issuer.refresh_audience, runtime.policy.accounts
        )
    except InvalidToken as e:
        if form == "basic":
            raise TokenError(
                401,
                Code.UNAUTHORIZED,
                "invalid_grant",
                f"refresh token refused: {e}",
                _basic_challenge(runtime),
            ) from None
        raise TokenError(
            400, Code.UNAUTHORIZED, "invalid_grant", f"refresh token refused: {e}"
        ) from None
    return account


def _login(
    runtime: Runtime,
    authenticator: Authenticator,
    username: str,
    password: str,
    client_ip: str,
    trace: TokenTrace,
    login: _Login,
) -> Account:
    trace.username = username[:128]
    trace.credential = "password"
    trace.failed_login_counted = False
    try:
        if login.refuse is not None:
            raise login.refuse
        return authenticator.authenticate(
            runtime.policy.accounts, username, password, client_ip, login.renew_within
        )
    except RateLimited as e:
        trace.rate_limited = e.limit
        raise TokenError(
            429, Code.TOOMANYREQUESTS, "slow_down", str(e), {"Retry-After": str(e.retry_after)}
        ) from None
    except AuthenticationFailed as e:
        trace.failed_login_counted = e.counted
        raise TokenError(
            401,
            Code.UNAUTHORIZED,
            "invalid_grant",
            "invalid username or password",
            _basic_challenge(runtime),
        ) from None
