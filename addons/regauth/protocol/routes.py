"""Registry API routes and the access each one requires.

Mirrors distribution's router (registry/api/v2/routes.go) and its access rule
(registry/handlers/app.go appendAccessRecords): GET/HEAD need pull, POST/PUT/PATCH need pull and
push, DELETE needs delete; a cross-repository mount also needs pull on its source; the catalog
needs registry:catalog:*.

Paths are accepted only in canonical form: no percent-encoding, no empty or dot segments, no
backslashes. Whatever passes is forwarded byte for byte, so the registry sees the very name that
was authorized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field
from typing import Literal
from urllib.parse import parse_qsl

from regauth.protocol import grammar
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.scope import REGISTRY
from regauth.protocol.scope import REPOSITORY
from regauth.protocol.scope import ResourceScope

TOKEN_PATH = "/v2/token"
JWKS_PATH = "/.well-known/jwks.json"
MAX_PATH_LENGTH = 2048
MAX_QUERY_LENGTH = 4096

_N = grammar.NAME
_REF = rf"(?:{grammar.TAG}|{grammar.DIGEST})"
_UUID = r"[A-Za-z0-9_.=-]+"

# The routes of the registry API regauth forwards (distribution's router names them alike).
RouteKind = Literal[
    "base", "catalog", "tags", "manifest", "blob", "upload-start", "upload", "referrers"
]

# (kind, pattern, allowed methods). Order follows distribution's router: first match wins.
_ROUTE_TABLE: tuple[tuple[RouteKind, str, set[str]], ...] = (
    ("base", r"/v2/", {"GET", "HEAD"}),
    ("catalog", r"/v2/_catalog", {"GET"}),
    ("tags", rf"/v2/(?P<name>{_N})/tags/list", {"GET", "HEAD"}),
    (
        "manifest",
        rf"/v2/(?P<name>{_N})/manifests/(?P<ref>{_REF})",
        {"GET", "HEAD", "PUT", "DELETE"},
    ),
    ("blob", rf"/v2/(?P<name>{_N})/blobs/(?P<ref>{grammar.DIGEST})", {"GET", "HEAD", "DELETE"}),
    ("upload-start", rf"/v2/(?P<name>{_N})/blobs/uploads/", {"POST"}),
    (
        "upload",
        rf"/v2/(?P<name>{_N})/blobs/uploads/(?P<ref>{_UUID})",
        {"GET", "PATCH", "PUT", "DELETE"},
    ),
    ("referrers", rf"/v2/(?P<name>{_N})/referrers/(?P<ref>{grammar.DIGEST})", {"GET"}),
)
_ROUTES = tuple(
    (kind, re.compile(pattern), frozenset(methods)) for kind, pattern, methods in _ROUTE_TABLE
)

# The requests of the registry API that carry a body (OCI distribution-spec end-4a/4b/5/6/7):
# starting an upload (monolithic POST), PATCH and PUT of upload chunks, PUT of a manifest.
# Every other request has none, and a body there is refused (it could only be smuggled).
_BODY_ROUTES: frozenset[tuple[RouteKind, str]] = frozenset(
    {("upload-start", "POST"), ("upload", "PATCH"), ("upload", "PUT"), ("manifest", "PUT")}
)

_METHOD_ACTIONS = {
    "GET": ("pull",),
    "HEAD": ("pull",),
    "POST": ("pull", "push"),
    "PUT": ("pull", "push"),
    "PATCH": ("pull", "push"),
    "DELETE": ("delete",),
}


class RouteError(RegistryError):
    """A request the registry API must refuse before any authorization decision."""

    def __init__(self, status: int, code: Code, message: str) -> None:
        super().__init__(status, code, message)


@dataclass(frozen=True)
class Route:
    """A registry API request that `match_route` recognized, and the access it requires."""

    kind: RouteKind  # which route of the API
    method: str  # the request's method, one the route allows
    path: str  # the request path, canonical (no query)
    repository: str | None = None  # the repository name, for routes that have one
    reference: str | None = None  # manifest: tag or digest; blob, referrers: digest; upload: id
    required: tuple[ResourceScope, ...] = field(default_factory=tuple)  # every scope needed

    @property
    def required_strings(self) -> list[str]:
        return [str(s) for s in self.required]

    @property
    def takes_body(self) -> bool:
        """Whether the registry API defines a request body for this route and method."""
        return (self.kind, self.method) in _BODY_ROUTES


def is_registry_path(path: str) -> bool:
    """Whether a request path belongs to the registry API (and so may get registry challenges)."""
    return path == "/v2" or path.startswith("/v2/")


def split_target(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


def check_canonical(path: str) -> None:
    """Refuse every spelling of a path that a server could normalize into another one."""
    if len(path) > MAX_PATH_LENGTH:
        raise RouteError(414, Code.NAME_INVALID, "request path too long")
    if "%" in path:
        raise RouteError(
            400, Code.NAME_INVALID, "percent-encoded characters are not allowed in registry paths"
        )
    if "\\" in path:
        raise RouteError(400, Code.NAME_INVALID, "backslash in registry path")
    if not path.isascii() or not path.isprintable():
        raise RouteError(400, Code.NAME_INVALID, "control or non-ASCII characters in registry path")
    segments = path.split("/")[1:]
    # A trailing empty segment is the uploads route's own slash; any other empty one is '//'.
    inner = segments[:-1]
    if "" in inner:
        raise RouteError(400, Code.NAME_INVALID, "empty path segment ('//') in registry path")
    if any(s in (".", "..") for s in segments):
        raise RouteError(400, Code.NAME_INVALID, "dot segment in registry path")


def parse_query(query: str) -> dict[str, list[str]]:
    if len(query) > MAX_QUERY_LENGTH:
        raise RouteError(414, Code.UNSUPPORTED, "query string too long")
    if ";" in query:
        # Go's url.ParseQuery drops pairs containing ';' where Python keeps them: refuse both.
        raise RouteError(400, Code.UNSUPPORTED, "';' in query string")
    params: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(
            query, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=64
        )
    except (ValueError, UnicodeDecodeError) as e:
        raise RouteError(400, Code.UNSUPPORTED, f"malformed query string: {e}") from None
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def _single(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise RouteError(400, Code.UNSUPPORTED, f"query parameter {key!r} given more than once")
    return values[0]


def match_route(method: str, target: str) -> Route:
    """Map a registry request to the access it requires, or raise RouteError."""
    path, query = split_target(target)
    check_canonical(path)
    params = parse_query(query)
    for kind, pattern, methods in _ROUTES:
        m = pattern.fullmatch(path)
        if m is None:
            continue
        if method not in methods:
            # Not naming the method: a HEAD's answer says the Content-Length of the GET's
            # (RFC 9110 §9.3.2), so both must get the same body.
            allowed = ", ".join(m for m in _METHOD_ACTIONS if m in methods)
            raise RouteError(
                405, Code.UNSUPPORTED, f"method not allowed on {kind} route (it takes {allowed})"
            )
        name = m.groupdict().get("name")
        if name is not None and len(name) > grammar.MAX_NAME_LENGTH:
            raise RouteError(400, Code.NAME_INVALID, "repository name too long")
        ref = m.groupdict().get("ref")
        _check_reference(kind, ref)
        return Route(kind, method, path, name, ref, _required(kind, method, name, params))
    raise _classify_miss(path)


def _check_reference(kind: RouteKind, ref: str | None) -> None:
    """The route regexes only shape-match digests; the registry needs a known algorithm and
    exact lower-case hex (a bad one reached distribution's storage layer as a tag path)."""
    if ref is None:
        return
    if kind in ("blob", "referrers") and not grammar.is_digest(ref):
        raise RouteError(
            400,
            Code.DIGEST_INVALID,
            "digest is outside the digest grammar (known algorithm, lower-case hex of its length)",
        )
    if kind == "manifest" and ":" in ref and not grammar.is_digest(ref):
        raise RouteError(400, Code.DIGEST_INVALID, "manifest digest is outside the digest grammar")


# Go's r.FormValue (which distribution uses for `mount` and `from`) also reads url-encoded and
# multipart request bodies, and body values win over the query: a proxy that authorizes on the
# query alone would let a body name another mount source. No registry API takes form bodies.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def check_body_type(method: str, content_types: list[str]) -> None:
    """Refuse bodies a Go server could read as a form (see _FORM_TYPES). Parsing differences
    are refused too: several Content-Type headers (Go reads the first, a joined value hides
    it) and non-ASCII values (Go's case folding maps U+0130 'İ' to 'i')."""
    if method not in ("POST", "PUT", "PATCH") or not content_types:
        return
    if len(content_types) > 1:
        raise RouteError(400, Code.UNSUPPORTED, "more than one Content-Type header")
    value = content_types[0]
    if not value.isascii() or not value.isprintable():
        raise RouteError(400, Code.UNSUPPORTED, "Content-Type outside ASCII")
    media_type = value.split(";", 1)[0].strip().lower()
    if media_type in _FORM_TYPES:
        raise RouteError(
            415, Code.UNSUPPORTED, f"{media_type} bodies are not part of the registry API"
        )


def _required(
    kind: RouteKind, method: str, name: str | None, params: dict[str, list[str]]
) -> tuple[ResourceScope, ...]:
    if kind == "base":
        return ()
    if kind == "catalog":
        return (ResourceScope(REGISTRY, "catalog", ("*",)),)
    assert name is not None
    required = [ResourceScope(REPOSITORY, name, _METHOD_ACTIONS[method])]
    if kind == "upload-start":
        mount = _single(params, "mount")
        source = _single(params, "from")
        if mount is not None and not grammar.is_digest(mount):
            raise RouteError(400, Code.DIGEST_INVALID, "invalid digest in mount parameter")
        if source is not None:
            if not grammar.is_name(source):
                raise RouteError(
                    400, Code.NAME_INVALID, "invalid repository name in from parameter"
                )
            if source != name:
                required.append(ResourceScope(REPOSITORY, source, ("pull",)))
    if kind in ("upload", "upload-start"):
        digest = _single(params, "digest")
        if digest is not None and not grammar.is_digest(digest):
            raise RouteError(400, Code.DIGEST_INVALID, "invalid digest parameter")
    return tuple(required)


# Loose shapes of the routes: a path that has a route's shape but fails its grammar gets the
# error code of the part that is wrong, not a bare 404.
_NEAR_MISSES = (
    (re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]*)"), "manifest"),
    (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<ref>[^/]*)"), "upload"),
    (re.compile(r"/v2/(?P<name>.+)/(?:blobs|referrers)/(?P<ref>[^/]*)"), "digest"),
    (re.compile(r"/v2/(?P<name>.+)/tags/list"), "tags"),
)


def _classify_miss(path: str) -> RouteError:
    for pattern, kind in _NEAR_MISSES:
        m = pattern.fullmatch(path)
        if m is None:
            continue
        name = m.group("name")
        if not grammar.is_name(name):
            return RouteError(
                400, Code.NAME_INVALID, "repository name is outside the OCI name grammar"
            )
        ref = m.groupdict().get("ref") or ""
        if kind == "manifest":
            code = Code.DIGEST_INVALID if ":" in ref else Code.TAG_INVALID
            return RouteError(400, code, "manifest reference is outside the tag/digest grammar")
        if kind == "digest":
            return RouteError(400, Code.DIGEST_INVALID, "digest is outside the digest grammar")
        if kind == "upload":
            return RouteError(404, Code.BLOB_UPLOAD_INVALID, "invalid upload id")
    return RouteError(404, Code.UNSUPPORTED, "no registry API route matches this path")
