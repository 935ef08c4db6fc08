"""Read a JWT's header and claims without verifying it, for logs and the mitmweb view.

The signature is never returned: a logged token must not be replayable. Segments are parsed with
strict_json's bounds (nesting depth, finite numbers), so any client-sent text gives either a
description or a ValueError.
"""

from __future__ import annotations

import base64

from regauth.policy.linear_regex import compile_linear
from regauth.protocol import strict_json

# RE2, not re: a backtracking search restarts at every "eyJ" and rescans the run of base64
# characters after it, so a body of "eyJeyJeyJ..." cost quadratic time (2 s for 64 KiB).
JWT_RE = compile_linear(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MAX_TOKEN_LENGTH = 16384
MAX_JSON_DEPTH = 16  # deeper than any real claim set; the log shows what it cannot parse


def _b64json(segment: str) -> object:
    return strict_json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)), MAX_JSON_DEPTH
    )


def decode_unverified(token: str) -> dict[str, object]:
    """{"header": {...}, "claims": {...}, "signature_bytes": n} of a compact JWS.

    Raise ValueError (and nothing else) if `token` is longer than MAX_TOKEN_LENGTH, does not
    have three segments, or its first two are not base64url of JSON objects within
    strict_json's bounds. The signature itself is never returned.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS (expected three segments)")
    try:
        header = _b64json(parts[0])
        claims = _b64json(parts[1])
    except ValueError as e:  # binascii.Error, JsonError, non-ASCII text
        raise ValueError(f"undecodable JWT segment: {e}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT header and claims must be JSON objects")
    # x5c carries whole certificates: keep the log readable and say how many there were.
    if "x5c" in header and isinstance(header["x5c"], list):
        header = {**header, "x5c": f"<{len(header['x5c'])} certificate(s)>"}
    signature_len = (len(parts[2]) * 3) // 4
    return {"header": header, "claims": claims, "signature_bytes": signature_len}


def find_jwts(text: str) -> list[str]:
    return JWT_RE.findall(text)
