"""The decision for registry routes, without I/O.

Order of checks: path grammar (refused before anything else, in every mode), then, in enforce
mode, the Bearer token against the access the route requires. Refusals are registry-format
JSON; registry challenges are only ever sent for `/v2/` paths.

Like distribution's token access controller (registry/auth/token/accesscontroller.go
`Authorized`), the challenge is bound once per request to the realm, the service and the access
the route needs, and each failing check states only its `error` parameter: every challenge names
the *full* access the request needs (RFC 6750 §3), so a client that asks for exactly the
challenge's scopes gets a token that works.
"""

from __future__ import annotations

from dataclasses import dataclass

from regauth.mtls.identity import ClientCertificate
from regauth.policy.model import Identity
from regauth.protocol import challenge
from regauth.protocol.auth_header import MAX_AUTHORIZATION_LENGTH
from regauth.protocol.auth_header import safe_scheme
from regauth.protocol.auth_header import split_authorization
from regauth.protocol.errors import Answer
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.errors import access_detail
from regauth.protocol.routes import Route
from regauth.protocol.routes import RouteError
from regauth.protocol.routes import check_body_type
from regauth.protocol.routes import check_canonical
from regauth.protocol.routes import is_registry_path
from regauth.protocol.routes import match_route
from regauth.runtime import Runtime
from regauth.tokens.claims import InvalidToken
from regauth.tokens.verify import VerifiedToken


@dataclass(frozen=True)
class CertifiedIdentity:
    """Who the connection's verified client certificate says the client is (mutual TLS)."""

    identity: Identity
    certificate: ClientCertificate


@dataclass(frozen=True)
class GateDecision:
    """Forward (`answer` is None) or refuse with `answer`; `reason` is safe to log."""

    forward: bool
    reason: str
    route: Route | None = None
    token: VerifiedToken | None = None
    answer: Answer | None = None

    @property
    def status(self) -> int:
        return self.answer.status if self.answer else 0

    @property
    def headers(self) -> dict[str, str]:
        return self.answer.headers if self.answer else {}

    @property
    def body(self) -> bytes:
        return self.answer.body if self.answer else b""


def _refused(
    error: RegistryError,
    reason: str,
    route: Route | None = None,
    token: VerifiedToken | None = None,
) -> GateDecision:
    return GateDecision(False, reason, route, token, error.answer())


@dataclass(frozen=True)
class Challenger:
    """A 401 with a Bearer challenge for one route: realm, service and required access are
    bound once; each refusal gives only its `error` parameter, message and reason."""

    realm: str
    service: str
    route: Route

    def refuse(
        self, error: str | None, message: str, reason: str, token: VerifiedToken | None = None
    ) -> GateDecision:
        required = self.route.required
        header = challenge.build_bearer(self.realm, self.service, required, error)
        refusal = RegistryError(
            401,
            Code.UNAUTHORIZED,
            message,
            access_detail(required) or None,
            {"WWW-Authenticate": header},
        )
        return _refused(refusal, reason, self.route, token)


def decide(
    runtime: Runtime,
    method: str,
    target: str,
    authorization: str | None,
    realm: str,
    content_types: list[str] | None = None,
    certified: CertifiedIdentity | None = None,
    client_ip: str | None = None,
) -> GateDecision:
    """Decide one request aimed at the upstream (not the token endpoint or JWKS).

    `method` is the request method exactly as the client sent it (routes accept only their
    upper-case methods); `target` is path and query as received. `certified`: the identity of
    the connection's verified client certificate; in enforce mode it is a credential of its
    own on every request (`_enforce`), decided by the policy for `client_ip`.
    """
    path = target.partition("?")[0]
    enforce = runtime.upstream_entry.mode == "enforce"
    if not is_registry_path(path):
        if enforce:
            return _refused(
                RegistryError(404, Code.UNSUPPORTED, "regauth serves only the registry API (/v2/)"),
                "not a registry path",
            )
        try:
            # '/v2%2F_catalog' is not a /v2/ path here, but it is one to Go after decoding.
            check_canonical(path)
        except RouteError as e:
            return _refused(e, f"refused path: {e.message}")
        if method not in ("GET", "HEAD"):
            return _refused(
                RegistryError(
                    405,
                    Code.UNSUPPORTED,
                    f"method {method} is not forwarded outside the registry API",
                ),
                "method outside the registry API",
            )
        return GateDecision(True, "not a registry path (delegate mode)")
    try:
        route = match_route(method, target)
        check_body_type(method, content_types or [])
    except RouteError as e:
        return _refused(e, f"refused path: {e.message}")
    if not enforce:
        return GateDecision(True, "delegated to the upstream registry", route)
    challenger = Challenger(realm, runtime.policy.service, route)
    decision = _enforce(runtime, challenger, authorization)
    if decision.forward or certified is None:
        return decision
    return _by_certificate(runtime, route, certified, client_ip) or decision


def _by_certificate(
    runtime: Runtime, route: Route, certified: CertifiedIdentity, client_ip: str | None
) -> GateDecision | None:
    """Forward when the policy grants the certificate's identity all the route requires.
    Either credential must cover the request alone (the token's grants and the certificate's
    are never merged); BuildKit in dockerd fetches its tokens from the docker CLI, whose
    connection carries no certificate, so without this its requests would only be anonymous."""
    for scope in route.required:
        decision = runtime.policy.decide(certified.identity, scope, client_ip)
        if set(scope.actions) - set(decision.granted) and "*" not in decision.granted:
            return None
    subject = certified.certificate.subject
    return GateDecision(
        True,
        f"client certificate ({subject}) grants "
        + (" ".join(route.required_strings) or "registry access"),
        route,
    )


def _enforce(runtime: Runtime, challenger: Challenger, authorization: str | None) -> GateDecision:
    route = challenger.route
    if not authorization:
        return challenger.refuse(None, "authentication required", "no token")
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        return challenger.refuse(
            "invalid_token", "authorization header too large", "oversized token"
        )
    scheme, credentials = split_authorization(authorization)
    if scheme.lower() != "bearer":
        # Basic on a registry route means the client has no token yet: challenge for one.
        shown = safe_scheme(scheme) if scheme else "empty"
        return challenger.refuse(
            None, "authentication required", f"{shown} authorization is not a token"
        )
    try:
        token = runtime.verifier.verify_access(credentials)
    except InvalidToken as e:
        return challenger.refuse("invalid_token", "invalid token", f"invalid token: {e}")
    missing = [s for s in route.required if not token.allows(s)]
    if missing:
        return challenger.refuse(
            "insufficient_scope",
            "insufficient scope",
            "insufficient scope: " + " ".join(str(s) for s in missing),
            token,
        )
    return GateDecision(
        True,
        "token grants " + (" ".join(route.required_strings) or "registry access"),
        route,
        token,
    )
