"""URL handling with RFC 3986 case rules: scheme and host compare case-insensitively."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of an http(s) URL (`parse_origin`); `url` renders it."""

    scheme: str  # http or https
    host: str  # lower-case; IPv6 without brackets
    port: int  # always given, also the scheme's default

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if DEFAULT_PORTS.get(self.scheme) == self.port:
            return host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def parse_origin(url: str) -> Origin:
    """Scheme, host and port of an http(s) URL; raise ValueError for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"URL {url!r} has no host")
    if parts.username or parts.password:
        raise ValueError(f"URL {url!r} must not contain credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"URL {url!r} must not have a path, query or fragment")
    if port == 0:
        raise ValueError(f"URL {url!r} has port 0")
    return Origin(
        scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]
    )


def normalize_url(url: str) -> str:
    return parse_origin(url).url


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 address in brackets: `[::1]:5443`, `[::]:5443`) into (host, port),
    the host without brackets. An empty host (`:5443`) means every address, IPv4 and IPv6;
    `0.0.0.0` all IPv4 addresses, `[::]` all IPv6 addresses. Raise ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen address {value!r} must be HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"listen address {value!r}: only IPv6 addresses go in brackets"
            ) from None
    elif ":" in host:
        raise ValueError(
            f"listen address {value!r}: write an IPv6 address in brackets, e.g. [::1]:5443"
        )
    return host, port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
