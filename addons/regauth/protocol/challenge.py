"""WWW-Authenticate challenges (RFC 7235 syntax, RFC 6750 Bearer parameters).

Parsing accepts what registries send (several challenges in one header, quoted or token values);
building refuses any value that could break out of a quoted-string, so client-supplied text can
never inject a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

from regauth.protocol.scope import ResourceScope
from regauth.protocol.scope import format_scopes

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(_TOKEN)
_PARAM_RE = re.compile(
    rf"(?P<key>{_TOKEN})[ \t]*=[ \t]*(?:\"(?P<quoted>(?:[^\"\\]|\\.)*)\"|(?P<token>{_TOKEN}))"
)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*(?=[ \t]*(?:,|$))")
# Both match the empty string, so their match() is never None (the union-attr ignores below).
_SEPARATORS_RE = re.compile(r"[ \t,]*")
_SPACES_RE = re.compile(r"[ \t]*")
_ESCAPE_RE = re.compile(r"\\(.)")
MAX_HEADER_LENGTH = 8192


@dataclass
class Challenge:
    """One challenge of a WWW-Authenticate value (RFC 7235): its scheme and parameters."""

    scheme: str  # as sent (`Bearer`, `Basic`, ...)
    params: dict[str, str] = field(default_factory=dict)  # unquoted; names lower-case

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"

    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()

    def as_record(self) -> dict[str, object]:
        """The parsed form written to the exchange log."""
        record: dict[str, object] = {"scheme": self.scheme}
        for key in ("realm", "service", "error", "error_description"):
            if key in self.params:
                record[key] = self.params[key]
        if "scope" in self.params:
            record["scopes"] = self.scopes()
        return record


def parse_challenges(header: str) -> list[Challenge]:
    """Parse one WWW-Authenticate value into its challenges; raise ValueError if malformed.

    RFC 7235: `1#challenge`, challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]. A comma
    followed by a token that is not `name=` starts the next challenge.
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise ValueError("challenge header too long")
    challenges: list[Challenge] = []
    pos = _SEPARATORS_RE.match(header, 0).end()  # type: ignore[union-attr]
    while pos < len(header):
        scheme = _SCHEME_RE.match(header, pos)
        if scheme is None:
            raise ValueError(f"expected an auth scheme at offset {pos}")
        current = Challenge(scheme.group())
        challenges.append(current)
        pos = _SPACES_RE.match(header, scheme.end()).end()  # type: ignore[union-attr]
        first = True
        while pos < len(header) and header[pos] != ",":
            param = _PARAM_RE.match(header, pos)
            if param is None:
                token68 = _TOKEN68_RE.match(header, pos) if first else None
                if token68 is None:
                    raise ValueError(f"unexpected text at offset {pos}")
                current.params["token68"] = token68.group()
                pos = token68.end()
            else:
                key = param.group("key").lower()
                quoted = param.group("quoted")
                if key in current.params:
                    raise ValueError(f"parameter {key!r} repeated in challenge")
                current.params[key] = (
                    _ESCAPE_RE.sub(r"\1", quoted) if quoted is not None else param.group("token")
                )
                pos = param.end()
            first = False
            pos = _SPACES_RE.match(header, pos).end()  # type: ignore[union-attr]
            if pos < len(header) and header[pos] == ",":
                after = _SEPARATORS_RE.match(header, pos).end()  # type: ignore[union-attr]
                if _PARAM_RE.match(header, after) is not None and "token68" not in current.params:
                    pos = after  # another parameter of this challenge
        pos = _SEPARATORS_RE.match(header, pos).end()  # type: ignore[union-attr]
    return challenges


def _quote(value: str) -> str:
    if any(c in value for c in '"\\') or not value.isprintable() or not value.isascii():
        raise ValueError("challenge parameter contains characters that cannot be quoted safely")
    return f'"{value}"'


def build_bearer(
    realm: str,
    service: str,
    scopes: list[ResourceScope] | tuple[ResourceScope, ...] = (),
    error: str | None = None,
) -> str:
    """A Bearer challenge rendered like distribution's (realm, service[, scope][, error])."""
    parts = [f"realm={_quote(realm)}", f"service={_quote(service)}"]
    if scopes:
        parts.append(f"scope={_quote(format_scopes(scopes))}")
    if error:
        parts.append(f"error={_quote(error)}")
    return "Bearer " + ",".join(parts)


def render(challenge: Challenge) -> str:
    """Render a parsed challenge back, with every value re-validated and quoted."""
    params = ",".join(f"{k}={_quote(v)}" for k, v in challenge.params.items() if k != "token68")
    return f"{challenge.scheme} {params}".rstrip()
