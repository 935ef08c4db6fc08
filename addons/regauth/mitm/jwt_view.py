"""A mitmweb/mitmproxy content view that decodes JWTs in Authorization headers and token bodies.

The signature is shown only by its length: it is never verified here, and never displayed.
"""

from __future__ import annotations

import json

from mitmproxy import contentviews
from mitmproxy import http

from regauth.protocol.jwt_inspect import decode_unverified
from regauth.protocol.jwt_inspect import find_jwts


def _tokens(data: bytes, metadata: contentviews.Metadata) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    message = metadata.http_message
    if isinstance(message, http.Request):
        auth = message.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            for token in find_jwts(auth[7:]):
                found.append(("Authorization header", token))
    text = (data or b"").decode("utf-8", "replace")
    for token in find_jwts(text):
        if token not in (t for _, t in found):
            found.append(("body", token))
    return found


class JWTContentview(contentviews.Contentview):
    name = "JWT"
    syntax_highlight = "yaml"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        tokens = _tokens(data, metadata)
        if not tokens:
            raise ValueError("no JWT found")
        out = []
        for where, token in tokens:
            try:
                decoded = decode_unverified(token)
            except ValueError as e:
                out.append(f"# JWT from {where}: undecodable ({e})")
                continue
            out += [
                f"# JWT from {where} (signature: {decoded['signature_bytes']} bytes, NOT verified)",
                "header: " + json.dumps(decoded["header"], sort_keys=True),
                "claims: " + json.dumps(decoded["claims"], indent=2, sort_keys=True),
            ]
        return "\n".join(out)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        return 1.5 if _tokens(data, metadata) else -1


def register() -> None:
    contentviews.add(JWTContentview)
