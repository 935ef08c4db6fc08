"""Registry-format errors: {"errors": [{"code", "message", "detail"}]} (OCI spec.md).

`RegistryError` is the one refusal type of the core: it carries distribution's status and error
code (`Code`, registry/api/errcode/register.go), a message safe to show and log, and any extra
headers (a challenge, `Retry-After`), and renders its own response with `answer()`. Route
refusals (`routes.RouteError`) and token-endpoint refusals (`token_service.TokenError`)
specialize it. `error_body` is the one builder of the JSON body, also for the answers mitmproxy
layers send themselves (`mitm/patches`, `mitm/fail_closed`); `JSON_HEADERS` carries the
`Docker-Distribution-Api-Version` header every such answer sends.

Which exception escapes which public function of the core (the rest return a value, or refuse
with a decision: `front.decide`, `gate.decide` and `token_service.handle_token_request` never
raise for a client's input):

    ValueError
     +-- RegistryError ............ a refusal that renders itself (`answer()`); raised inside
     |    |                         the deciders, which turn it into a `Respond`
     |    +-- RouteError .......... protocol.routes: match_route, check_canonical, parse_query,
     |    |                         check_body_type
     |    +-- TokenError .......... token_service internals; handle_token_request answers it
     +-- InvalidToken ............. tokens.verify.TokenVerifier.verify_access/verify_refresh,
     |                              tokens.claims.access_claim/external_grants
     +-- PolicyError .............. policy.load.load_policy/load_policy_text (every problem as
     |                              `file:line:column`), runtime.build_runtime
     +-- YamlError ................ policy.yamlpos.load (load_policy turns it into PolicyError)
     +-- RegexError ............... policy.linear_regex.compile_policy_regex, policy.patterns
     |                              compile_regex (the loader turns it into PolicyError)
     +-- JsonError ................ protocol.strict_json.loads
     +-- ProxyProtocolError ....... protocol.proxy_protocol.parse
     +-- RetireRefused ............ tokens.keystate.retire
     +-- TestFileError ............ tools.policy_tests.load_tests
     +-- (plain ValueError) ....... the parsers of operator and wire text: protocol.scope
                                    parse_scope/parse_scopes, protocol.urls parse_origin/
                                    parse_listen, protocol.auth_header.parse_basic,
                                    protocol.challenge.parse_challenges, policy.patterns
                                    compile_glob/parse_capability, ops.pki.load_signing_keys,
                                    logins.credentials.hash_password, runtime.build_runtime
                                    (keys that do not fit, no `upstreams:` entry matches; also
                                    OSError for an unreadable certs directory)
    Exception
     +-- AuthenticationFailed ..... logins.credentials.Authenticator.authenticate (`counted`:
     |                              a new failed password attempt)
     +-- RateLimited .............. logins.limits.LoginLimiter.check, Authenticator.authenticate
     |                              (`retry_after` seconds)
     +-- UpstreamAuthError ........ upstream_auth.UpstreamAuth.header_for, check_realm,
                                    parse_token_response

`cli.main` reports any ValueError or OSError a command lets through as one line and exit 1;
the mitm adapters catch what their core calls raise, and `mitm.fail_closed` turns anything else
into a 500 refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum

from regauth.protocol.scope import ResourceScope

API_VERSION_HEADER = "Docker-Distribution-Api-Version"
JSON_HEADERS = {
    "Content-Type": "application/json",
    API_VERSION_HEADER: "registry/2.0",
}


class Code(StrEnum):
    """The distribution error codes regauth answers with (registry/api/errcode/register.go,
    registry/api/v2/errors.go); a member is its own wire text."""

    UNSUPPORTED = "UNSUPPORTED"
    UNAUTHORIZED = "UNAUTHORIZED"
    DENIED = "DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    TOOMANYREQUESTS = "TOOMANYREQUESTS"
    NAME_INVALID = "NAME_INVALID"
    TAG_INVALID = "TAG_INVALID"
    DIGEST_INVALID = "DIGEST_INVALID"
    SIZE_INVALID = "SIZE_INVALID"
    BLOB_UPLOAD_INVALID = "BLOB_UPLOAD_INVALID"


@dataclass(frozen=True)
class Answer:
    """A response regauth sends itself: status, headers, body (bytes, possibly empty)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def error_body(
    code: Code, message: str, detail: object = None, extra: dict[str, object] | None = None
) -> bytes:
    """The registry JSON error body: one entry with `code`, `message` and, if given, `detail`;
    `extra` adds top-level members after `errors` (the token endpoint's OAuth 2 fields)."""
    entry: dict[str, object] = {"code": str(code), "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry], **(extra or {})}).encode()


class RegistryError(ValueError):
    """A refusal with its registry error code; `answer()` renders the response.

    `message` is shown to the client and logged: it never contains a credential.
    """

    def __init__(
        self,
        status: int,
        code: Code,
        message: str,
        detail: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.detail)

    def answer(self) -> Answer:
        return Answer(self.status, {**JSON_HEADERS, **self.headers}, self.body())


def access_detail(scopes: tuple[ResourceScope, ...] | list[ResourceScope]) -> list[dict[str, str]]:
    """The `detail` distribution attaches to UNAUTHORIZED: one record per required action."""
    return [
        {"Type": s.type, "Name": s.name, "Action": action} for s in scopes for action in s.actions
    ]
