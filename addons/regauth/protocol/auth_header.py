"""Describe an Authorization header for the exchange log without ever keeping a secret."""

from __future__ import annotations

import base64
import re

from regauth.protocol.jwt_inspect import decode_unverified

# The longest Authorization header regauth's gate reads, in bytes. The token endpoint never
# issues a token that would not fit in it (`token_service`): the one limit of the token size
# contract (README "The token service").
MAX_AUTHORIZATION_LENGTH = 8192


def parse_basic(value: str) -> tuple[str, str]:
    """(username, password) from a Basic credential (RFC 7617: base64 of `user-id:password`,
    UTF-8); raise ValueError, and nothing else, if malformed."""
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII input
        raise ValueError("Basic credentials are not base64 of UTF-8 text") from None
    username, sep, password = raw.partition(":")
    if not sep:
        raise ValueError("Basic credentials lack the ':' separator")
    return username, password


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,19}")


def split_authorization(header: str) -> tuple[str, str]:
    parts = header.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def safe_scheme(scheme: str) -> str:
    """The scheme if it looks like one; a bare credential without a scheme is never shown."""
    return scheme if _SCHEME_RE.fullmatch(scheme) else "<unparsed>"


def describe(header: str | None) -> dict[str, object] | None:
    """Scheme plus what is safe to log: a Basic username, a JWT's header and claims."""
    if not header:
        return None
    scheme, credentials = split_authorization(header)
    record: dict[str, object] = {"scheme": safe_scheme(scheme)}
    if record["scheme"] == "<unparsed>":
        record["length"] = len(header)
        return record
    lowered = scheme.lower()
    if lowered == "basic":
        try:
            record["username"] = parse_basic(credentials)[0]
        except ValueError as e:
            record["malformed"] = str(e)
    elif lowered == "bearer":
        try:
            record["jwt"] = decode_unverified(credentials)
        except ValueError as e:
            record["malformed"] = str(e)
            record["token_length"] = len(credentials)
    return record
