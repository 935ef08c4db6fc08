"""The URL clients use when the operator gives none (`--public-url`): the only place the
machine's own name is looked up (`socket.getfqdn`), so the URL grammar stays pure."""

from __future__ import annotations

import socket

from regauth.protocol.urls import Origin


def default_public_url(listen_host: str, port: int) -> str:
    """What clients should use when the operator did not say: the name the CA cert will cover."""
    if listen_host in ("127.0.0.1", "::1", "localhost"):
        host = "localhost"
    elif listen_host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn().lower()
    else:
        host = listen_host
    return Origin("https", host, port).url
