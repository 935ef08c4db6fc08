"""Secrets out of flows once they have done their job, and out of everything shown.

mitmweb keeps every flow and shows raw headers and bodies; flow files (`-w`) keep them too.
After a request has been answered, regauth replaces what must never be shown: passwords and
refresh tokens in token request forms, Basic credentials, token signatures, and the upstream
credential it injected (the stored request shows the client's own header again, redacted).
Token responses are scrubbed shortly after they were sent (mitmproxy sends the response
object the `response` hook leaves in place, so it cannot be changed earlier).

Capability ids are not removed from the flow, which must still carry them, but from every
copy shown (`display_copy`, through `mitm/shown.py`).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from mitmproxy import http

from regauth.mitm.shown import REDACTED
from regauth.mitm.shown import hide_capabilities
from regauth.ops.safe_text import escape
from regauth.ops.safe_text import is_safe
from regauth.protocol.auth_header import split_authorization
from regauth.protocol.urls import parse_origin

# `subject_token`/`actor_token`: RFC 8693 token exchange (an OIDC ID token is a credential).
_FORM_SECRETS = ("password", "refresh_token", "client_secret", "subject_token", "actor_token")


def redact_authorization(value: str | None) -> str | None:
    """A Bearer JWT keeps its header and claims (the JWT view still decodes it) and loses its
    signature; anything else keeps only its scheme."""
    if not value:
        return None
    scheme, credentials = split_authorization(value)
    if scheme.lower() == "bearer" and credentials.count(".") == 2:
        head, claims, _ = credentials.split(".")
        return f"{scheme} {head}.{claims}."
    return f"{scheme} {REDACTED}" if scheme.isalpha() and len(scheme) <= 20 else REDACTED


def scrub_request(request: http.Request, client_authorization: str | None) -> None:
    redacted = redact_authorization(client_authorization)
    if redacted is None:
        request.headers.pop("authorization", None)
    else:
        request.headers["authorization"] = redacted
    content = request.raw_content
    if content and "x-www-form-urlencoded" in request.headers.get("content-type", ""):
        try:
            pairs = parse_qsl(content.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            request.content = REDACTED.encode()
            return
        request.content = urlencode(
            [(k, REDACTED if k in _FORM_SECRETS else v) for k, v in pairs]
        ).encode()


def scrub_token_response(response: http.Response) -> None:
    try:
        body = json.loads(response.raw_content or b"")
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    for key in ("token", "access_token"):
        if isinstance(body.get(key), str) and body[key].count(".") == 2:
            head, claims, _ = body[key].split(".")
            body[key] = f"{head}.{claims}."
    if "refresh_token" in body:
        body["refresh_token"] = REDACTED
    response.content = json.dumps(body).encode()


# flow.metadata key: the client's own Authorization header, already redacted (safe to keep and
# show); set when the request is decided, so a display never needs the header itself.
CLIENT_AUTHORIZATION = "regauth.client_authorization"
# flow.metadata key: the public origin the client asked (`regauth_public_url`, e.g.
# `https://registry.example.com`), set when the request is decided. mitmproxy's reverse mode
# has by then rewritten the request's scheme, host, port and Host header to the upstream's (or
# to the refusal sink's): the copy shown puts the client's own back.
CLIENT_ORIGIN = "regauth.client_origin"
_QUERY_SECRETS = (
    "password",
    "refresh_token",
    "client_secret",
    "token",
    "access_token",
    "subject_token",
    "actor_token",
)


def show_as_asked(request: http.Request, origin: str) -> None:
    """`request` (a copy shown) as the client sent it: at the public `origin`
    (`scheme://host[:port]`), with a Host header (HTTP/1) or `:authority` (HTTP/2) naming it,
    instead of the upstream or refusal-sink address it was sent on to. The path is the
    client's already. An origin that does not parse leaves the request as it is."""
    try:
        public = parse_origin(origin)
    except ValueError:
        return
    request.scheme = public.scheme
    request.host = public.host
    request.port = public.port
    request.host_header = public.netloc


def display_copy(flow: http.HTTPFlow) -> http.HTTPFlow:
    """A copy of `flow` without any secret, for everything mitmweb shows or exports.

    Shown as the client asked it (`CLIENT_ORIGIN`): the public URL, not the upstream's.
    Removed: the Authorization header (the client's, or the upstream credential regauth
    injected: shown as the client's own header, redacted), token form secrets, secret query
    parameters of token requests, token signatures and refresh tokens in token responses.
    Capability ids become `<id:HASH10>` everywhere in the copy (`hide_capabilities`), and a
    comment with control characters is escaped. The flow itself is not changed (a request in
    flight still carries what it must send).
    """
    copy = flow.copy()
    copy._backup = None  # a backup (from a mitmweb edit) would keep what regauth scrubs later
    copy.id = flow.id  # copy() gives a new id; what is shown must name the flow it shows
    request = copy.request
    origin = flow.metadata.get(CLIENT_ORIGIN)
    if isinstance(origin, str):
        show_as_asked(request, origin)
    shown = flow.metadata.get(CLIENT_AUTHORIZATION)
    if not isinstance(shown, str):
        shown = redact_authorization(flow.request.headers.get("authorization"))
    scrub_request(request, shown)
    request.headers.pop("proxy-authorization", None)
    if request.path.partition("?")[0] == "/v2/token":
        if "?" in request.path:
            request.query = [
                (k, REDACTED if k.lower() in _QUERY_SECRETS else v)
                for k, v in request.query.items(multi=True)
            ]
        if request.raw_content and "x-www-form-urlencoded" not in request.headers.get(
            "content-type", ""
        ):
            request.content = REDACTED.encode()  # not a form: nothing in it is shown
        if copy.response is not None:
            scrub_token_response(copy.response)
    hide_capabilities(copy)
    if not is_safe(copy.comment):  # regauth's comments are escaped already; a viewer's may not be
        copy.comment = escape(copy.comment)
    return copy
