"""WWW-Authenticate challenges (RFC 7235 syntax, RFC 6750 Bearer parameters).

Parsing accepts what registries send (several challenges in one header, quoted or token values);
building refuses any value that could break out of a quoted-string, so client-supplied text can
never inject a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

from regauth.scope import ResourceScope
from regauth.scope import format_scopes

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN68 = r"[A-Za-z0-9._~+/-]+=*"
_SCHEME_RE = re.compile(rf"\s*(?P<scheme>{_TOKEN})(?:\s+|$)")
_PARAM_RE = re.compile(
    rf"\s*(?P<key>{_TOKEN})\s*=\s*(?:\"(?P<quoted>(?:[^\"\\]|\\.)*)\"|(?P<token>{_TOKEN}))\s*"
)
_TOKEN68_RE = re.compile(rf"\s*(?P<t68>{_TOKEN68})\s*(?=,|$)")
_ESCAPE_RE = re.compile(r"\\(.)")
MAX_HEADER_LENGTH = 8192


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)

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
    """Parse one WWW-Authenticate value into its challenges; raise ValueError if malformed."""
    if len(header) > MAX_HEADER_LENGTH:
        raise ValueError("challenge header too long")
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME_RE.match(header, pos)
        if m is None:
            raise ValueError(f"expected an auth scheme at offset {pos}")
        current = Challenge(m.group("scheme"))
        challenges.append(current)
        pos = m.end()
        t68 = _TOKEN68_RE.match(header, pos)
        if t68 is not None and "=" not in header[pos:t68.end()].rstrip("="):
            current.params["token68"] = t68.group("t68")
            pos = t68.end()
        while pos < len(header):
            p = _PARAM_RE.match(header, pos)
            if p is None:
                break
            key = p.group("key").lower()
            quoted = p.group("quoted")
            value = _ESCAPE_RE.sub(r"\1", quoted) if quoted is not None else p.group("token")
            if key in current.params:
                raise ValueError(f"parameter {key!r} repeated in challenge")
            current.params[key] = value
            pos = p.end()
            if pos < len(header) and header[pos] == ",":
                pos += 1
                # A comma followed by `scheme <space>` (and no '=') starts the next challenge.
                nxt = _SCHEME_RE.match(header, pos)
                if nxt is not None and not _PARAM_RE.match(header, pos):
                    break
        if pos < len(header) and header[pos] == ",":
            pos += 1
        elif pos < len(header) and not header[pos:].strip():
            pos = len(header)
        elif pos < len(header) and _SCHEME_RE.match(header, pos) is None:
            raise ValueError(f"unexpected text at offset {pos}")
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
