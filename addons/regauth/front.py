"""The front door: where the outcome of every request regauth receives is decided, without I/O.

Life of a request (the adapters in `mitm/` carry out what this module returns; they decide
nothing themselves):

1. `requestheaders`: `decide(active, view)` looks at the request line and headers only and
   returns one of
   - `Respond`: answer locally (no policy 503, foreign destination 403, method 405, framing
     400, JWKS 200, registry unavailable 503, a route refusal or challenge from
     `gate.decide`). `discard_body` says the request may still carry a large or unknown-size
     body that must not be read;
   - `Forward`: send it to the upstream with the stated header changes (and regauth's upstream
     credentials when `inject` is set);
   - `IssueToken`: a GET to the token endpoint, answered by `token_service` off the event loop
     (it may run bcrypt);
   - `ReadTokenForm`: a POST to the token endpoint whose bounded form body must be read first.
2. `request` (token POSTs only): `token_form(active, view, body)` → `IssueToken` or `Respond`.
3. `token_answer(response)` turns the token service's response into a `Respond`.

Request framing (issue: HTTP/2 request smuggling): every forwarded request has exactly one
explicit framing — `Content-Length` when the size is known, `Transfer-Encoding: chunked` when
it streams (an HTTP/2 or HTTP/3 body without `content-length` going to the HTTP/1.1 upstream),
or no body at all. Bodies are accepted only where the registry API defines one
(`Route.takes_body`); only the exact upper-case methods of the route table are accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from dataclasses import field
from typing import Literal
from urllib.parse import parse_qsl

from regauth import gate
from regauth.gate import CertifiedIdentity
from regauth.gate import GateDecision
from regauth.mtls.identity import ClientCertificate
from regauth.policy.model import Identity
from regauth.protocol.errors import Answer
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.request_bounds import check_fields
from regauth.protocol.routes import JWKS_PATH
from regauth.protocol.routes import TOKEN_PATH
from regauth.protocol.routes import RouteError
from regauth.protocol.routes import is_registry_path
from regauth.protocol.routes import parse_query
from regauth.runtime import Active
from regauth.token_service import MAX_FORM_BYTES
from regauth.token_service import TokenRequest
from regauth.token_service import TokenResponse
from regauth.token_trace import TokenMethod

Kind = Literal["registry", "token", "jwks", "other"]

# The methods of the registry API (distribution's router) and the token endpoint, exactly as
# they must be spelled: Go dispatches on the exact bytes, so `get` is not GET.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FORM_TYPE = "application/x-www-form-urlencoded"
# Printable ASCII without space: what an origin-form request target may contain.
_TARGET_CHARS = re.compile(r"/[!-~]*")


@dataclass(frozen=True)
class RequestView:
    """What the front door needs of a request: plain values, as received (built by
    `mitm.request_handler` from the request's line and headers; no body)."""

    # As the client spelt it: Go dispatches on the exact bytes, so `get` is not read as GET.
    method: str
    # The request target: path and query, as received.
    target: str
    # The protocol as mitmproxy names it (`HTTP/1.1`, `HTTP/2.0`, ...): see `multiplexed`.
    http_version: str = "HTTP/1.1"
    # Every Authorization header value (more than one is refused).
    authorization: tuple[str, ...] = ()
    # Every Content-Type header value (`routes.check_body_type`).
    content_types: tuple[str, ...] = ()
    # Every Content-Length header value, unparsed (`declared_length`).
    content_lengths: tuple[str, ...] = ()
    # The Transfer-Encoding header, or None.
    transfer_encoding: str | None = None
    # True when the protocol already says no body follows: HTTP/1 without a length, an HTTP/2
    # or HTTP/3 HEADERS frame that ends the stream.
    body_absent: bool = True
    # The client's address (after the PROXY protocol, when a load balancer sends it).
    client_ip: str = ""
    # True for a live reverse-proxy request aimed at the guarded upstream (not a replay, not
    # another destination).
    to_upstream: bool = True
    # Why the upstream cannot take requests now, empty when it can: regauth's embedded registry
    # did not come back in time from a restart, every registry connection regauth allows is
    # open, or in delegate mode the registry is not known to check regauth's tokens.
    upstream_unavailable: str = ""
    # Why this connection only gets a 503 (accepted past regauth's connection ceiling), empty
    # otherwise.
    shed: str = ""
    # Every header field as received (name, value), for the head bounds of `request_bounds`.
    header_fields: tuple[tuple[bytes, bytes], ...] = ()
    # The connection's verified client certificate (mutual TLS), or None.
    client_certificate: ClientCertificate | None = None
    # Why the certificate the client presented is no identity, empty when it presented none
    # or a good one: every request on that connection is refused with it.
    client_certificate_refused: str = ""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def multiplexed(self) -> bool:
        """HTTP/2 or HTTP/3: the body ends with the stream, not with a length or chunking."""
        return not self.http_version.startswith("HTTP/1")

    @property
    def kind(self) -> Kind:
        path = self.path
        if path == TOKEN_PATH:
            return "token"
        if path == JWKS_PATH:
            return "jwks"
        return "registry" if is_registry_path(path) else "other"

    def declared_length(self) -> int | None:
        """The Content-Length, or None; raise RegistryError (400) if it is malformed."""
        if not self.content_lengths:
            return None
        if len(set(self.content_lengths)) > 1:
            raise RegistryError(400, Code.SIZE_INVALID, "conflicting Content-Length headers")
        value = self.content_lengths[0].strip()
        if not value.isdigit() or not value.isascii():
            raise RegistryError(400, Code.SIZE_INVALID, "malformed Content-Length")
        return int(value)

    def may_carry_large_body(self, threshold: int) -> bool:
        """Whether a body larger than `threshold` bytes, or of unknown size, may follow."""
        if self.body_absent:
            return False
        if self.transfer_encoding is not None:
            return True
        try:
            length = self.declared_length()
        except RegistryError:
            return True
        return length is None or length > threshold


@dataclass(frozen=True)
class Respond:
    """Answer locally with `answer`; never forwarded."""

    answer: Answer
    kind: Kind
    reason: str
    discard_body: bool = False
    gate: GateDecision | None = None


@dataclass(frozen=True)
class Forward:
    """Send to the upstream after applying the header changes.

    `stream`: the body may be large or of unknown size, so it streams through;
    `expected_length`: the declared body size (None when chunked or absent), checked against
    what actually arrives; `inject`: replace Authorization with regauth's upstream credentials
    for `gate.route.required`.
    """

    kind: Kind
    gate: GateDecision
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    stream: bool = False
    expected_length: int | None = None
    inject: bool = False


@dataclass(frozen=True)
class ReadTokenForm:
    """A token POST: read its form body (`expected_length` bytes, bounded) first."""

    expected_length: int


@dataclass(frozen=True)
class IssueToken:
    """Answer the token request with `token_service.handle_token_request` (blocking)."""

    request: TokenRequest = field(repr=False)


Decision = Respond | Forward | ReadTokenForm | IssueToken


def _respond(
    view: RequestView,
    active: Active | None,
    error: RegistryError,
    reason: str | None = None,
    gate_decision: GateDecision | None = None,
) -> Respond:
    threshold = active.stream_threshold if active is not None else 0
    return Respond(
        error.answer(),
        view.kind,
        reason or error.message,
        view.may_carry_large_body(threshold),
        gate_decision,
    )


def decide(active: Active | None, view: RequestView) -> Decision:
    """The one decision for a request, from its line and headers. Never raises for any input:
    every refusal is a `Respond` with distribution's status and error code."""
    if view.shed:
        headers = {"Retry-After": "1"}
        if not view.multiplexed:
            headers["Connection"] = "close"
        return _respond(
            view, active, RegistryError(503, Code.UNAVAILABLE, view.shed, headers=headers)
        )
    too_large = check_fields(view.target, view.method, view.header_fields)
    if too_large is not None:
        # HTTP/1.1 heads are refused before they are parsed (mitm/patches/head_limits.py); an HTTP/2
        # head arrives decoded and is judged here, on its own stream.
        return _respond(
            view, active, RegistryError(too_large.status, Code.UNSUPPORTED, too_large.reason)
        )
    if active is None:
        return _respond(
            view,
            None,
            RegistryError(
                503, Code.UNAVAILABLE, "regauth has no valid policy loaded; nothing is forwarded"
            ),
        )
    if view.client_certificate_refused:
        # Refused, not downgraded to anonymous: the client meant to present an identity, and
        # the reason is what its operator needs (no challenge: new credentials will not help).
        return _respond(
            view,
            active,
            RegistryError(401, Code.UNAUTHORIZED, view.client_certificate_refused),
            f"client certificate refused: {view.client_certificate_refused}",
        )
    if not view.to_upstream:
        return _respond(
            view,
            active,
            RegistryError(
                403,
                Code.DENIED,
                "regauth forwards only to its upstream registry, and never replays requests",
            ),
        )
    if view.http_version.upper().startswith("HTTP/3"):
        # regauth serves HTTP/1.1 and HTTP/2 (the launcher turns HTTP/3 off): its framing and
        # stream-isolation rules are proven for those two only.
        return _respond(
            view,
            active,
            RegistryError(
                505, Code.UNSUPPORTED, "HTTP/3 is not served by regauth; use HTTP/2 or HTTP/1.1"
            ),
        )
    if view.method not in METHODS:
        return _respond(
            view,
            active,
            RegistryError(
                405,
                Code.UNSUPPORTED,
                "method not allowed "
                "(registry methods are upper-case GET, "
                "HEAD, POST, PUT, PATCH, DELETE)",
            ),
        )
    if not _TARGET_CHARS.fullmatch(view.target):
        # HTTP/2 carries :path as a header value: a space, a control character or raw
        # non-ASCII would go into the upstream's HTTP/1.1 request line as it is.
        return _respond(
            view,
            active,
            RegistryError(
                400, Code.UNSUPPORTED, "request target outside the URI grammar (RFC 3986)"
            ),
        )
    if len(view.authorization) > 1:
        return _respond(
            view, active, RegistryError(400, Code.UNSUPPORTED, "more than one Authorization header")
        )
    kind = view.kind
    if kind == "token":
        return _token_endpoint(active, view)
    if kind == "jwks":
        return _jwks(active, view)
    if view.upstream_unavailable:
        return _respond(
            view,
            active,
            RegistryError(
                503,
                Code.UNAVAILABLE,
                f"{view.upstream_unavailable}; retry shortly",
                headers={"Retry-After": "1"},
            ),
        )
    authorization = view.authorization[0] if view.authorization else None
    decision = gate.decide(
        active.runtime,
        view.method,
        view.target,
        authorization,
        active.realm,
        list(view.content_types),
        certificate_identity(active, view),
        view.client_ip or None,
    )
    route = decision.route
    refused = None
    if decision.forward or route is not None:
        # A path outside the grammar is refused for that first; a routed request's framing
        # is checked before its authorization.
        try:
            extra, expected = _framing(view, route.takes_body if route is not None else False)
        except RegistryError as e:
            return _respond(view, active, e, f"refused framing: {e.message}", decision)
    if not decision.forward:
        refused = decision.answer
        assert refused is not None
        return Respond(
            refused,
            kind,
            decision.reason,
            view.may_carry_large_body(active.stream_threshold),
            decision,
        )
    set_headers = [
        ("X-Forwarded-Host", active.public.netloc),
        ("X-Forwarded-Proto", active.public.scheme),
        *extra,
    ]
    if route is not None and route.takes_body and route.kind in ("upload-start", "upload"):
        # distribution ignores the type of blob data; a fixed one leaves Go nothing to parse
        # as a form (the mount source must come from the authorized query).
        set_headers.append(("Content-Type", "application/octet-stream"))
    return Forward(
        kind,
        decision,
        tuple(set_headers),
        # No protocol switch (a 101 would make the connection an unchecked tunnel);
        # no client-supplied forwarding claims.
        remove_headers=("forwarded", "upgrade"),
        stream=view.may_carry_large_body(active.stream_threshold),
        expected_length=expected,
        inject=active.upstream_auth is not None,
    )


def _framing(view: RequestView, takes_body: bool) -> tuple[list[tuple[str, str]], int | None]:
    """Header changes that give the forwarded request one explicit framing, and the declared
    length; raise RegistryError (400) for a body where the registry API has none."""
    length = view.declared_length()
    te = view.transfer_encoding
    if te is not None and (te.strip().lower() != "chunked" or length is not None):
        raise RegistryError(400, Code.UNSUPPORTED, "unsupported Transfer-Encoding")
    if not takes_body:
        if te is not None or (length or 0) > 0 or (length is None and not view.body_absent):
            raise RegistryError(
                400, Code.UNSUPPORTED, f"{view.method} requests on this route carry no body"
            )
        return [], length
    if view.multiplexed and length is None and not view.body_absent:
        # The HTTP/1.1 upstream must see where this body ends: chunk it.
        return [("Transfer-Encoding", "chunked")], None
    return [], length


def check_body(decision: Forward, received: int) -> RegistryError | None:
    """Once a forwarded request's body has arrived (`received` bytes): a refusal if that is not
    what the request declared (HTTP/2 and HTTP/3 `content-length` against the DATA actually
    received), or a body where the route has none."""
    route = decision.gate.route
    takes_body = route is not None and route.takes_body
    expected = decision.expected_length
    if (expected is not None and received != expected) or (not takes_body and received):
        return RegistryError(
            400, Code.SIZE_INVALID, "the request body does not match its declared length"
        )
    return None


def certificate_identity(active: Active, view: RequestView) -> CertifiedIdentity | None:
    """The identity the connection's verified client certificate names under the current
    policy (None without one, or for an account the policy does not have)."""
    certificate = view.client_certificate
    if certificate is None:
        return None
    subject = certificate.subject
    if subject.kind == "build":
        return CertifiedIdentity(Identity(None, build=subject.name), certificate)
    account = active.runtime.policy.accounts.get(subject.name)
    return CertifiedIdentity(Identity(account), certificate) if account is not None else None


def _jwks(active: Active, view: RequestView) -> Decision:
    if view.method not in ("GET", "HEAD"):
        return _respond(
            view, active, RegistryError(405, Code.UNSUPPORTED, "the key set is read with GET")
        )
    try:
        _framing(view, takes_body=False)
    except RegistryError as e:
        return _respond(view, active, e, f"refused framing: {e.message}")
    runtime = active.runtime
    body = json.dumps(runtime.keyring.jwks(runtime.policy.token.kid_format)).encode()
    return Respond(Answer(200, {"Content-Type": "application/json"}, body), "jwks", "")


def _token_endpoint(active: Active, view: RequestView) -> Decision:
    if view.method == "GET":
        try:
            _framing(view, takes_body=False)
        except RegistryError as e:
            return _respond(view, active, e, f"refused framing: {e.message}")
        return _issue(active, view, "GET", None)
    if view.method != "POST":
        return _respond(
            view,
            active,
            RegistryError(405, Code.UNSUPPORTED, "the token endpoint accepts GET and POST"),
        )
    try:
        length = view.declared_length()
    except RegistryError as e:
        return _respond(view, active, e)
    if length is None or view.transfer_encoding is not None or length > MAX_FORM_BYTES:
        status = 413 if length is not None and length > MAX_FORM_BYTES else 411
        return _respond(
            view,
            active,
            RegistryError(
                status,
                Code.SIZE_INVALID,
                f"token requests need a Content-Length of at most {MAX_FORM_BYTES}",
            ),
        )
    return ReadTokenForm(length)


def token_form(active: Active, view: RequestView, body: bytes) -> Decision:
    """A token POST once its body (at most MAX_FORM_BYTES) has arrived."""
    if len(body) != view.declared_length():
        return _respond(
            view,
            active,
            RegistryError(400, Code.SIZE_INVALID, "the body does not match its Content-Length"),
        )
    form: dict[str, list[str]] | None = None
    content_type = view.content_types[0] if len(view.content_types) == 1 else ""
    if content_type.split(";")[0].strip().lower() == _FORM_TYPE:
        try:
            form = {}
            for key, value in parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=64
            ):
                form.setdefault(key, []).append(value)
        except (UnicodeDecodeError, ValueError):
            form = None
    return _issue(active, view, "POST", form)


def _issue(
    active: Active, view: RequestView, method: TokenMethod, form: dict[str, list[str]] | None
) -> Decision:
    try:
        query = parse_query(view.target.partition("?")[2])
    except RouteError as e:
        return _respond(
            view, active, RegistryError(e.status, e.code, f"token request refused: {e.message}")
        )
    authorization = view.authorization[0] if view.authorization else None
    return IssueToken(
        TokenRequest(method, query, form, authorization, view.client_ip, view.client_certificate)
    )


def token_answer(response: TokenResponse) -> Respond:
    """The token service's answer (its record explains the decision, so no reason here)."""
    return Respond(Answer(response.status, dict(response.headers), response.body), "token", "")
