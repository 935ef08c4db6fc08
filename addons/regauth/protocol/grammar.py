"""OCI distribution grammars for repository names, tags and digests.

Every check is a full, anchored match: a name that merely *contains* a valid name is invalid.
"""

from __future__ import annotations

import re

NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME = rf"{NAME_COMPONENT}(?:/{NAME_COMPONENT})*"
TAG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
DIGEST = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]+"
# A registry host as it may prefix a name inside a scope (scope.md: hostname [':' port]).
HOST_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOSTNAME = rf"{HOST_COMPONENT}(?:\.{HOST_COMPONENT})*(?::[0-9]{{1,5}})?"

# distribution refuses repository names longer than this (reference.NameTotalLengthMax).
MAX_NAME_LENGTH = 255

_NAME_RE = re.compile(NAME)
_TAG_RE = re.compile(TAG)
_DIGEST_RE = re.compile(DIGEST)
_HOSTNAME_RE = re.compile(HOSTNAME)

# Digest algorithms distribution registers, with the length of their hex encoding.
_KNOWN_DIGESTS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX_RE = re.compile(r"[a-f0-9]+")


def is_name(value: str) -> bool:
    return len(value) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(value) is not None


def is_tag(value: str) -> bool:
    return _TAG_RE.fullmatch(value) is not None


def is_digest(value: str) -> bool:
    if _DIGEST_RE.fullmatch(value) is None:
        return False
    algorithm, _, encoded = value.partition(":")
    expected = _KNOWN_DIGESTS.get(algorithm)
    if expected is None:
        return False
    return len(encoded) == expected and _HEX_RE.fullmatch(encoded) is not None


def is_scope_name(value: str) -> bool:
    """A repository name as scope.md allows it: optionally prefixed by `host[:port]/`."""
    if len(value) > MAX_NAME_LENGTH:
        return False
    if is_name(value):
        return True
    host, sep, rest = value.partition("/")
    return bool(sep) and _HOSTNAME_RE.fullmatch(host) is not None and is_name(rest)
