"""The per-request decision for registry routes, without I/O.

Order of checks: path grammar (refused before anything else, in every mode), then, in enforce
mode, the Bearer token against the access the route requires. Refusals are registry-format
JSON; registry challenges are only ever sent for `/v2/` paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from regauth import challenge
from regauth.authorization import safe_scheme
from regauth.authorization import split_authorization
from regauth.errors import JSON_HEADERS
from regauth.errors import access_detail
from regauth.errors import error_body
from regauth.routes import Route
from regauth.routes import RouteError
from regauth.routes import check_body_type
from regauth.routes import check_canonical
from regauth.routes import is_registry_path
from regauth.routes import match_route
from regauth.runtime import Runtime
from regauth.scope import ResourceScope
from regauth.tokens import InvalidToken
from regauth.tokens import VerifiedToken

MAX_AUTHORIZATION_LENGTH = 8192


@dataclass
class GateDecision:
    forward: bool
    reason: str
    route: Route | None = None
    token: VerifiedToken | None = None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def record(self) -> dict[str, object]:
        record: dict[str, object] = {"forward": self.forward, "reason": self.reason}
        if self.token is not None:
            record["verified_token"] = {"issuer": self.token.issuer, "subject": self.token.subject,
                               "source": self.token.source}
        return record


def _refuse(status: int, code: str, message: str, reason: str, route: Route | None = None,
            detail: object = None, headers: dict[str, str] | None = None) -> GateDecision:
    return GateDecision(False, reason, route, status=status,
                        headers={**JSON_HEADERS, **(headers or {})},
                        body=error_body(code, message, detail))


def _challenge(runtime: Runtime, realm: str, route: Route, scopes: tuple[ResourceScope, ...],
               error: str | None, message: str, reason: str,
               token: VerifiedToken | None = None) -> GateDecision:
    header = challenge.build_bearer(realm, runtime.policy.service, scopes, error)
    decision = _refuse(401, "UNAUTHORIZED", message, reason, route, access_detail(scopes) or None,
                       {"WWW-Authenticate": header})
    decision.token = token
    return decision


def decide(runtime: Runtime, method: str, target: str, authorization: str | None,
           realm: str, content_types: list[str] | None = None) -> GateDecision:
    path = target.partition("?")[0]
    enforce = runtime.upstream.mode == "enforce"
    if not is_registry_path(path):
        if enforce:
            return _refuse(404, "UNSUPPORTED", "regauth serves only the registry API (/v2/)",
                           "not a registry path")
        try:
            # '/v2%2F_catalog' is not a /v2/ path here, but it is one to Go after decoding.
            check_canonical(path)
        except RouteError as e:
            return _refuse(e.status, e.code, e.message, f"refused path: {e.message}")
        return GateDecision(True, "not a registry path (delegate mode)")
    try:
        route = match_route(method, target)
        check_body_type(method, content_types or [])
    except RouteError as e:
        return _refuse(e.status, e.code, e.message, f"refused path: {e.message}")
    if not enforce:
        return GateDecision(True, "delegated to the upstream registry", route)
    return _enforce(runtime, route, authorization, realm)


def _enforce(runtime: Runtime, route: Route, authorization: str | None,
             realm: str) -> GateDecision:
    required = route.required
    if not authorization:
        return _challenge(runtime, realm, route, required, None, "authentication required",
                          "no token")
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        return _challenge(runtime, realm, route, required, "invalid_token",
                          "authorization header too large", "oversized token")
    scheme, credentials = split_authorization(authorization)
    if scheme.lower() != "bearer":
        # Basic on a registry route means the client has no token yet: challenge for one.
        return _challenge(runtime, realm, route, required, None, "authentication required",
                          f"{safe_scheme(scheme) if scheme else 'empty'} authorization is not "
                          "a token")
    try:
        token = runtime.verifier.verify_access(credentials)
    except InvalidToken as e:
        return _challenge(runtime, realm, route, required, "invalid_token", "invalid token",
                          f"invalid token: {e}")
    missing = tuple(s for s in required if not token.allows(s))
    if missing:
        return _challenge(runtime, realm, route, missing, "insufficient_scope",
                          "insufficient scope", "insufficient scope: " +
                          " ".join(str(s) for s in missing), token)
    return GateDecision(True, "token grants " + (" ".join(route.required_strings) or
                                                 "registry access"), route, token)
