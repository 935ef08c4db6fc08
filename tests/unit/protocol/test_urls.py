"""Origins, listen addresses and IP literals (`regauth.protocol.urls`): pure parsing; the
machine-name default of `--public-url` is ops/test_public_url.py."""

import pytest

from regauth.protocol.urls import Origin
from regauth.protocol.urls import is_ip_literal
from regauth.protocol.urls import normalize_url
from regauth.protocol.urls import parse_listen
from regauth.protocol.urls import parse_origin


@pytest.mark.parametrize(
    ("url", "origin", "normalized"),
    [
        ("https://Reg.Example", Origin("https", "reg.example", 443), "https://reg.example"),
        ("HTTPS://REG.EXAMPLE:443/", Origin("https", "reg.example", 443), "https://reg.example"),
        ("http://reg.example:80", Origin("http", "reg.example", 80), "http://reg.example"),
        ("http://reg.example:443", Origin("http", "reg.example", 443), "http://reg.example:443"),
        ("https://127.0.0.1:5000", Origin("https", "127.0.0.1", 5000), "https://127.0.0.1:5000"),
        ("https://[::1]:5000", Origin("https", "::1", 5000), "https://[::1]:5000"),
        ("https://[::1]", Origin("https", "::1", 443), "https://[::1]"),
        ("  https://x  ", Origin("https", "x", 443), "https://x"),
    ],
)
def test_parse_origin(url, origin, normalized):
    assert parse_origin(url) == origin
    assert normalize_url(url) == normalized


def test_origins_compare_case_insensitively_with_default_ports():
    assert parse_origin("HTTPS://Host.Example") == parse_origin("https://host.example:443/")
    assert parse_origin("https://host.example") != parse_origin("http://host.example")
    assert parse_origin("https://host.example") != parse_origin("https://host.example:8443")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "x.example",
        "//x.example",
        "https://",
        "https://x/path",
        "https://x/?q=1",
        "https://x#frag",
        "https://user@x",
        "https://user:pw@x",
        "https://x:99999",
        "https://x:port",
        "javascript:alert(1)",
    ],
)
def test_parse_origin_refuses(url):
    with pytest.raises(ValueError):
        parse_origin(url)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("[::1]:8080", ("::1", 8080)),
        (":5000", ("", 5000)),
        ("0.0.0.0:5000", ("0.0.0.0", 5000)),
        ("[::]:5000", ("::", 5000)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(value, expected):
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "5000",
        "host",
        "host:",
        "host:70000",
        "host:-1",
        "host:x",
        "::1:5443",
        "[127.0.0.1]:5443",
        "[host]:1",
        "[::1:5443",
    ],
)
def test_parse_listen_refuses(value):
    with pytest.raises(ValueError):
        parse_listen(value)


def test_is_ip_literal():
    assert is_ip_literal("10.0.0.1")
    assert is_ip_literal("::1")
    assert not is_ip_literal("localhost")
    assert not is_ip_literal("[::1]")


def test_port_zero_is_refused_not_defaulted():
    with pytest.raises(ValueError, match="port 0"):
        parse_origin("https://registry.example:0")
