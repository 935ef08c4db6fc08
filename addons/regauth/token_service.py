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

from regauth.logins.credentials import AuthenticationFailed
from regauth.logins.credentials import Authenticator
from regauth.logins.limits import RateLimited
from regauth.policy.model import Account
from regauth.policy.model import Identity
from regauth.protocol.auth_header import MAX_AUTHORIZATION_LENGTH
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.auth_header import split_authorization
from regauth.protocol.errors import Code
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import format_scopes
from regauth.protocol.scope import parse_scopes
from regauth.runtime import Runtime
from regauth.token_credentials import capped
from regauth.token_credentials import certificate_identity
from regauth.token_credentials import job_credential
from regauth.token_credentials import job_identity
from regauth.token_federation import ACCESS_TOKEN_TYPE
from regauth.token_federation import TOKEN_EXCHANGE
from regauth.token_federation import claim_mismatches
from regauth.token_federation import decided_claims
from regauth.token_federation import federated_identity
from regauth.token_federation import federated_refresh
from regauth.token_federation import id_token_credential
from regauth.token_federation import refresh_identity
from regauth.token_request import GRANT_TYPES
from regauth.token_request import MAX_FORM_BYTES  # noqa: F401 (front.py reads it here)
from regauth.token_request import NO_STORE
from regauth.token_request import TRUE_VALUES
from regauth.token_request import TokenError
from regauth.token_request import TokenRequest
from regauth.token_request import TokenResponse
from regauth.token_request import basic_challenge
from regauth.token_request import first_param
from regauth.token_trace import TokenTrace
from regauth.tokens.claims import InvalidToken


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
    if runtime.policy.federated_issuers and _may_carry_id_token(request):
        return True  # verifying it may fetch the issuer's key set
    pair = password_pair(request)
    if pair is not None:
        return authenticator.needs_check(runtime.policy.accounts, *pair)
    if request.method == "POST":
        form = request.form
        return form is not None and form.get("grant_type") != ["refresh_token"]
    return False


def _may_carry_id_token(request: TokenRequest) -> bool:
    """Whether the request may present an ID token (cheap, conservative)."""
    if request.method == "POST":
        form = request.form or {}
        return any(
            v.startswith("eyJ") for k in ("password", "subject_token") for v in form.get(k, ())
        )
    pair = password_pair(request)
    return pair is not None and pair[1].startswith("eyJ")


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
        grant_type = first_param(params, "grant_type")
        if grant_type is None:
            raise TokenError(400, Code.UNSUPPORTED, "invalid_request", "grant_type is required")
    else:  # GET: the front door refuses every other method (405)
        params = request.query
        grant_type = None
    # Logged only from the vocabulary: another grant_type is refused by _identify.
    trace.grant_type = "get" if grant_type is None else GRANT_TYPES.get(grant_type)
    client_id = first_param(params, "client_id")
    if client_id is not None:
        trace.client_id = client_id[:128]
    service = first_param(params, "service") or None  # an empty value is no choice at all
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

    cap: tuple[ResourceScope, ...] | None = None
    job = job_credential(runtime, request, params, grant_type)
    id_token = (
        None if job is not None else id_token_credential(runtime, request, params, grant_type)
    )
    if request.client_certificate is not None:
        identity = certificate_identity(runtime, request, params, grant_type, trace)
        account, refresh_in = identity.account, None
    elif job is not None:
        identity, cap = job_identity(runtime, authenticator, job[0], job[1], trace)
        account, refresh_in = identity.account, None
    elif id_token is not None:
        if login.refuse is not None:
            # The login queue had no room: refused before any verification, as a password
            # check is (verifying may wait for the issuer's key set).
            trace.credential = "id_token"
            trace.rate_limited = login.refuse.limit
            raise TokenError(
                429,
                Code.TOOMANYREQUESTS,
                "slow_down",
                str(login.refuse),
                {"Retry-After": str(login.refuse.retry_after)},
            )
        identity = federated_identity(
            runtime, authenticator.federation, id_token[0], id_token[1], trace, grant_type
        )
        account, refresh_in = None, None
    else:
        identity, refresh_in = _identify(
            runtime, authenticator, request, params, grant_type, trace, login
        )
        account = identity.account
    trace.account = identity.name or "anonymous"

    decisions = [policy.decide(identity, s, request.client_ip) for s in scopes]
    granted = [g for d in decisions if (g := d.granted_scope()) is not None]
    if cap is not None:
        # A job token grants at most its own scopes, and never more than the policy now does.
        granted = [c for g in granted if (c := capped(g, cap)) is not None]
    trace.decisions, trace.decided = decisions, True
    trace.granted = [str(g) for g in granted]
    if identity.federated is not None:
        trace.federated_claims = decided_claims(identity, runtime)
        trace.claim_mismatches = claim_mismatches(identity, runtime, decisions) or None

    issued = runtime.issuer.issue_access(identity.subject, granted)
    if len("Bearer ") + len(issued.token) > MAX_AUTHORIZATION_LENGTH:
        # Never answer with a token the gate (and the client's next request) cannot carry:
        # the client would ask again and get the same one (a challenge loop).
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "invalid_scope",
            f"the granted scopes need a token of {len(issued.token)} bytes; an Authorization "
            f"header carries at most {MAX_AUTHORIZATION_LENGTH}: ask for fewer scopes per token",
        )
    body: dict[str, object] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": dt.datetime.fromtimestamp(issued.issued_at, dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "scope": format_scopes(granted),
    }
    offline = (first_param(params, "offline_token") or "").lower() in TRUE_VALUES or first_param(
        params, "access_type"
    ) == "offline"
    if grant_type == TOKEN_EXCHANGE:
        # RFC 8693 §2.2.1: what was issued, and how to use it.
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
        body["token_type"] = "Bearer"
    if refresh_in is not None:
        body["refresh_token"] = refresh_in  # the refresh grant returns the same refresh token
    elif offline and account is not None and cap is None:
        body["refresh_token"] = runtime.issuer.issue_refresh(account)
    elif offline and identity.federated is not None:
        # No longer-lived than the ID token it comes from, carrying only the claims the policy
        # reads; none when it would not fit a Basic header (`:TOKEN`, base64).
        entry = next(
            i for i in runtime.policy.federated_issuers if i.name == identity.federated.issuer
        )
        refresh = runtime.issuer.issue_refresh_federated(
            refresh_identity(identity.federated, runtime), entry.issuer
        )
        if refresh is not None and 6 + 4 * ((len(refresh) + 3) // 3) <= MAX_AUTHORIZATION_LENGTH:
            body["refresh_token"] = refresh
    trace.refresh_token_issued = "refresh_token" in body and refresh_in is None
    trace.expires_in = issued.expires_in
    trace.issued_at = str(body["issued_at"])
    trace.jti = issued.jti
    return TokenResponse(200, json.dumps(body).encode(), dict(NO_STORE), trace, issued.jti)


def _identify(
    runtime: Runtime,
    authenticator: Authenticator,
    request: TokenRequest,
    params: dict[str, list[str]],
    grant_type: str | None,
    trace: TokenTrace,
    login: _Login,
) -> tuple[Identity, str | None]:
    """Who is asking (anonymous: no account) and, for refresh grants, the refresh token to
    send back (the one presented: oauth.md returns the same token)."""
    if grant_type == "refresh_token":
        token = first_param(params, "refresh_token")
        if not token:
            raise TokenError(400, Code.UNSUPPORTED, "invalid_request", "refresh_token is required")
        return _refresh(runtime, token, trace, "form"), token
    if grant_type == "password":
        if first_param(params, "client_id") is None:
            raise TokenError(400, Code.UNSUPPORTED, "invalid_request", "client_id is required")
        username = first_param(params, "username")
        password = first_param(params, "password")
        if username is None or password is None:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                "username and password are required for grant_type=password",
            )
        return Identity(
            _login(runtime, authenticator, username, password, request.client_ip, trace, login)
        ), None
    if grant_type is not None:
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )
    if not request.authorization:
        return Identity(None), None
    scheme, credentials = split_authorization(request.authorization)
    if scheme.lower() != "basic":
        raise TokenError(
            401,
            Code.UNAUTHORIZED,
            "invalid_client",
            "the token endpoint accepts Basic credentials or none",
            basic_challenge(runtime),
        )
    try:
        username, password = parse_basic(credentials)
    except ValueError as e:
        raise TokenError(
            401, Code.UNAUTHORIZED, "invalid_client", str(e), basic_challenge(runtime)
        ) from None
    account_param = first_param(params, "account")
    if username == "":
        # Basic ":" + refresh token: how BuildKit presents the identity token of docker login.
        identity = _refresh(runtime, password, trace, "basic")
        if account_param and account_param != identity.name:
            raise TokenError(
                400,
                Code.UNSUPPORTED,
                "invalid_request",
                "the account parameter does not match the refresh token",
            )
        offline = (first_param(params, "offline_token") or "").lower() in TRUE_VALUES
        return identity, (password if offline else None)
    if account_param is not None and account_param != username:
        raise TokenError(
            400,
            Code.UNSUPPORTED,
            "invalid_request",
            "the account parameter does not match the credentials",
        )
    return Identity(
        _login(runtime, authenticator, username, password, request.client_ip, trace, login)
    ), None


def _refresh(runtime: Runtime, token: str, trace: TokenTrace, form: str) -> Identity:
    """Verify a refresh token presented as a POST grant (`form`) or as Basic (`basic`)."""
    trace.credential = "refresh_token" if form == "form" else "refresh_token (basic)"
    try:
        claims = runtime.verifier.refresh_claims(token, runtime.issuer.refresh_audience)
        if "fed" in claims:
            federated = federated_refresh(runtime, claims)
            identity = Identity(None, federated=federated)
            trace.federated_issuer, trace.federated_subject = federated.issuer, federated.subject
        else:
            identity = Identity(runtime.verifier.refresh_account(claims, runtime.policy.accounts))
    except InvalidToken as e:
        if form == "basic":
            raise TokenError(
                401,
                Code.UNAUTHORIZED,
                "invalid_grant",
                f"refresh token refused: {e}",
                basic_challenge(runtime),
            ) from None
        raise TokenError(
            400, Code.UNAUTHORIZED, "invalid_grant", f"refresh token refused: {e}"
        ) from None
    return identity


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
            basic_challenge(runtime),
        ) from None
