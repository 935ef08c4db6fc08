"""OCI distribution grammars (`regauth.protocol.grammar`): names, tags, digests and scope names
with a registry host, each a full anchored match."""

import pytest

from regauth.protocol import grammar

SHA256 = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("library/ubuntu", True),
        ("a.b_c__d---e/f", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("A", False),
        ("a/", False),
        ("/a", False),
        ("a//b", False),
        ("a_-b", False),
        ("a..b", False),
        ("a___b", False),
        ("-a", False),
        ("a\n", False),
        ("x a", False),
        ("localhost:5000/a", False),
    ],
)
def test_names(value, valid):
    assert grammar.is_name(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("latest", True),
        ("_x", True),
        ("V1.2-rc_3", True),
        ("a" * 128, True),
        ("a" * 129, False),
        (".x", False),
        ("-x", False),
        ("", False),
        ("a/b", False),
        ("a:b", False),
        ("latest\n", False),
    ],
)
def test_tags(value, valid):
    assert grammar.is_tag(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (SHA256, True),
        ("sha384:" + "b" * 96, True),
        ("sha512:" + "0" * 128, True),
        ("sha256:" + "a" * 63, False),
        ("sha256:" + "A" * 64, False),
        ("md5:" + "a" * 32, False),
        ("sha256+b64:" + "a" * 64, False),
        ("sha256", False),
        (SHA256 + "\n", False),
        ("sha256:" + "g" * 64, False),
    ],
)
def test_digests_must_be_a_known_algorithm_with_its_hex_length(value, valid):
    assert grammar.is_digest(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a/b", True),
        ("registry.example/a", True),
        ("registry.example:5000/a/b", True),
        ("localhost:5000/a", True),
        ("Host-1.example/a", True),
        ("registry.example:123456/a", False),
        ("-host.example/a", False),
        ("host_1.example:5000/a", False),
        ("registry.example/", False),
        ("registry.example:5000", False),
        ("h/" + "a" * 254, False),
    ],
)
def test_scope_names_may_name_a_registry_host(value, valid):
    assert grammar.is_scope_name(value) is valid
