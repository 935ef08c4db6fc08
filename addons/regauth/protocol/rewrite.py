"""Rewriting what the upstream says so clients stay on the proxy.

- URLs that point at the upstream never reach the client: upload `Location`s become relative
  references, `Link` pagination moves to the public URL; URLs pointing elsewhere (object
  storage redirects) are left alone.
- Bearer challenges get regauth's realm and service; the scope is kept if it parses.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from regauth.protocol import challenge
from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import parse_scopes
from regauth.protocol.urls import Origin
from regauth.protocol.urls import parse_origin

_LINK_URL_RE = re.compile(r"<([^<>]*)>")  # linear: a URL never holds "<"
_BEARER_ERRORS = ("invalid_token", "insufficient_scope", "invalid_request")


def _origin_of(url: str) -> Origin | None:
    try:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            return None
        return parse_origin(f"{parts.scheme}://{parts.netloc}")
    except ValueError:
        return None


def rewrite_url(url: str, upstream: Origin, public: Origin) -> str:
    """Move an absolute URL on the upstream to the public origin; leave others untouched."""
    if _origin_of(url) != upstream:
        return url
    parts = urlsplit(url)
    return urlunsplit((public.scheme, public.netloc, parts.path, parts.query, parts.fragment))


def relative_location(url: str, upstream: Origin, public: Origin) -> str:
    """A Location on the upstream or public origin as a relative reference (path and query).

    Clients resolve it against the URL they used, so they stay on the proxy with the scheme
    they chose. containerd drops its authorizer when an upload URL changes scheme or host,
    and it talks to `localhost` with a nominal http scheme (TLS through its fallback), so an
    absolute https Location would make it upload without its token.
    """
    if _origin_of(url) not in (upstream, public):
        return url
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))


def rewrite_link(value: str, upstream: Origin, public: Origin) -> str:
    return _LINK_URL_RE.sub(lambda m: f"<{rewrite_url(m.group(1), upstream, public)}>", value)


def rewrite_challenges(
    values: list[str], realm: str, service: str
) -> tuple[str, list[dict[str, object]]]:
    """The one Bearer challenge a client gets for all the `WWW-Authenticate` values of an
    upstream response, and the parsed originals for the log.

    The set of challenges is rewritten, not each header line: challenges may come in several
    lines or several to a line (RFC 7235 §4.1), in any order. Non-Bearer schemes are dropped
    (a Basic challenge makes containers/image send the account's password on every request,
    past regauth to the registry); the Bearer challenges' scopes are kept (in order, merged)
    and their `error` if it is one of RFC 6750's; realm and service become regauth's. With no
    usable Bearer challenge the client still gets a plain Bearer challenge.
    """
    records: list[dict[str, object]] = []
    scopes: list[ResourceScope] = []
    error: str | None = None
    for value in values:
        try:
            parsed = challenge.parse_challenges(value)
        except ValueError as e:
            records.append({"unparsed": True, "error": str(e)})
            continue
        for c in parsed:
            records.append(c.as_record())
            if not c.is_bearer:
                continue
            if "scope" in c.params:
                try:
                    scopes.extend(parse_scopes([c.params["scope"]]))
                except ValueError:
                    pass
            candidate = c.params.get("error")
            if error is None and candidate in _BEARER_ERRORS:
                error = candidate
    merged = parse_scopes(str(s) for s in scopes) if scopes else []
    return challenge.build_bearer(realm, service, merged, error), records


def rewrite_challenge(value: str, realm: str, service: str) -> tuple[str, list[dict[str, object]]]:
    """`rewrite_challenges` for a single header value."""
    return rewrite_challenges([value], realm, service)


def challenge_scopes(value: str) -> list[str]:
    try:
        parsed = challenge.parse_challenges(value)
    except ValueError:
        return []
    for c in parsed:
        if c.is_bearer and "scope" in c.params:
            try:
                return [str(s) for s in parse_scopes([c.params["scope"]])]
            except ValueError:
                return []
    return []


__all__ = [
    "challenge_scopes",
    "relative_location",
    "rewrite_challenge",
    "rewrite_challenges",
    "rewrite_link",
    "rewrite_url",
]
