"""Who is asking at the token endpoint, beyond passwords and refresh tokens (issue 23): a
verified client certificate of the connection, or a job token presented as a password or as
an identity token. Sans-IO: the revocation state comes through the authenticator's job store.
"""

from __future__ import annotations

from regauth.logins.credentials import Authenticator
from regauth.logins.job_tokens import JobStoreUnavailable
from regauth.mtls.identity import parse_subject_uri
from regauth.policy.model import Identity
from regauth.protocol.auth_header import parse_basic
from regauth.protocol.auth_header import split_authorization
from regauth.protocol.errors import Code
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import covers
from regauth.runtime import Runtime
from regauth.token_request import GRANT_TYPES
from regauth.token_request import TokenError
from regauth.token_request import TokenRequest
from regauth.token_request import basic_challenge
from regauth.token_request import first_param
from regauth.token_trace import TokenTrace
from regauth.tokens.claims import InvalidToken


def capped(scope: ResourceScope, cap: tuple[ResourceScope, ...]) -> ResourceScope | None:
    actions = [a for a in scope.actions if covers(cap, scope.with_actions([a]))]
    return scope.with_actions(actions) if actions else None


def job_credential(
    runtime: Runtime, request: TokenRequest, params: dict[str, list[str]], grant_type: str | None
) -> tuple[str, str] | None:
    """(user name, job token) when the request's password or refresh token is a job token:
    Basic `NAME:TOKEN`, Basic `:TOKEN` (a config.json identitytoken, as BuildKit sends it), the
    password grant, or the refresh-token grant. None otherwise."""
    looks = runtime.verifier.looks_like_job_token
    if grant_type == "password":
        password = first_param(params, "password")
        if password and looks(password):
            return first_param(params, "username") or "", password
        return None
    if grant_type == "refresh_token":
        token = first_param(params, "refresh_token")
        return ("", token) if token and looks(token) else None
    if grant_type is not None or not request.authorization:
        return None
    scheme, credentials = split_authorization(request.authorization)
    if scheme.lower() != "basic":
        return None
    try:
        username, password = parse_basic(credentials)
    except ValueError:
        return None
    return (username, password) if looks(password) else None


def job_identity(
    runtime: Runtime,
    authenticator: Authenticator,
    username: str,
    token: str,
    trace: TokenTrace,
) -> tuple[Identity, tuple[ResourceScope, ...]]:
    """Verify a job token (signature, audience, expiry, not revoked) and return whom it names
    with its scope cap. The user name, when given, must be the subject's name. Failures are a
    401 with a Basic challenge, like a wrong password; none is counted as a failed login (a
    job token is 128 bits of randomness signed by regauth: nothing to guess)."""
    trace.credential = "job_token"

    def refuse(message: str) -> TokenError:
        return TokenError(
            401, Code.UNAUTHORIZED, "invalid_grant", message, basic_challenge(runtime)
        )

    try:
        claims = runtime.verifier.verify_job(token, runtime.issuer.job_audience)
    except InvalidToken as e:
        raise refuse(f"job token refused: {e}") from None
    trace.job_token = claims.jti
    store = authenticator.job_store
    try:
        revoked = store is not None and store.is_revoked(claims.jti)
    except JobStoreUnavailable:
        raise refuse("job token refused: its revocation state cannot be read now") from None
    if revoked:
        raise refuse("job token refused: revoked")
    try:
        subject = parse_subject_uri(claims.subject)
    except ValueError:
        raise refuse("job token refused: malformed subject") from None
    if username and username != subject.name:
        raise refuse(f"job token refused: it is for {subject}, not {username[:64]!r}")
    if subject.kind == "build":
        trace.build = subject.name
        return Identity(None, build=subject.name), claims.access
    account = runtime.policy.accounts.get(subject.name)
    if account is None:
        raise refuse(f"job token refused: account {subject.name!r} is not in the policy")
    return Identity(account), claims.access


def _claimed_username(
    request: TokenRequest, params: dict[str, list[str]], grant_type: str | None
) -> str | None:
    """The account name the request's own credentials claim, without checking them: the
    password grant's `username`, Basic's user name (a refresh token's account for `:TOKEN`),
    or None when it carries none."""
    if grant_type == "password":
        return first_param(params, "username") or ""
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


def certificate_identity(
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
    if grant_type is not None and grant_type not in GRANT_TYPES:
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
