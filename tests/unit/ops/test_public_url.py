"""The URL clients use when the operator gives none (`regauth.ops.public_url`)."""

from __future__ import annotations

import socket

from regauth.ops.public_url import default_public_url


def test_default_public_url():
    assert default_public_url("127.0.0.1", 5443) == "https://localhost:5443"
    assert default_public_url("::1", 443) == "https://localhost"
    assert default_public_url("10.1.2.3", 5000) == "https://10.1.2.3:5000"
    assert default_public_url("0.0.0.0", 5000).startswith("https://")


def test_a_wildcard_listener_names_the_machine(monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda: "Build-Host.Example")
    assert default_public_url("0.0.0.0", 5000) == "https://build-host.example:5000"
    assert default_public_url("::", 443) == "https://build-host.example"
    assert default_public_url("", 5443) == "https://build-host.example:5443"
