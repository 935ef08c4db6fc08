"""regauth.mtls.revocations: the deny list's grammar and bounds."""

from __future__ import annotations

import pytest

from regauth.mtls.revocations import MAX_BYTES
from regauth.mtls.revocations import Revocations
from regauth.mtls.revocations import normalize_serial
from regauth.mtls.revocations import parse_revocations


def test_round_trip():
    revocations = Revocations(frozenset(["a1", "ff"]), frozenset(["b1"]))
    assert parse_revocations(revocations.to_json().encode()) == revocations


@pytest.mark.parametrize(
    ("text", "serial"), [("0x0A:FF", "aff"), ("00ab", "ab"), ("0", "0"), ("DEADbeef", "deadbeef")]
)
def test_serials_are_normalized(text, serial):
    assert normalize_serial(text) == serial


@pytest.mark.parametrize("text", ["", "xyz", "1" * 41, "-1"])
def test_malformed_serials(text):
    with pytest.raises(ValueError):
        normalize_serial(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", '"version": 1'),
        (b'{"version": 2}', '"version": 1'),
        (b'{"version": 1, "serial": []}', "unknown keys"),
        (b'{"version": 1, "serials": "ab"}', "must be lists"),
        (b'{"version": 1, "serials": [1]}', "must be strings"),
        (b'{"version": 1, "serials": ["zz"]}', "not a hexadecimal"),
        (b" " * (MAX_BYTES + 1), "larger than"),
    ],
)
def test_unusable_lists_are_errors_naming_the_file(data, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_revocations(data, "certs/clients/revoked.json")
    assert str(e.value).startswith("certs/clients/revoked.json")
