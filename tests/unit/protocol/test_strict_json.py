"""JSON from untrusted peers (`regauth.protocol.strict_json`): nesting measured before parsing
(strings skipped) and bounded, only finite RFC 8259 numbers, no member named twice, and
JsonError (a ValueError quoting nothing) for everything else."""

import pytest

from regauth.protocol import strict_json
from regauth.protocol.strict_json import JsonError
from regauth.protocol.strict_json import loads
from regauth.protocol.strict_json import nesting_depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "{{{{"]', 1),
        ('["\\"[[[["]', 1),
        ("[[]][[[]]]", 3),
        ("[[[", 3),
        ("[" * 1500, 1500),
    ],
)
def test_nesting_ignores_brackets_inside_strings(text, depth):
    assert nesting_depth(text) == depth


def test_valid_json_parses_as_usual():
    assert loads(b'{"a": [1, 2.5, "x", true, null], "b": {"c": -0}}') == {
        "a": [1, 2.5, "x", True, None],
        "b": {"c": 0},
    }
    assert loads("[" * 16 + "]" * 16) == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[" * 17 + "]" * 17, "nested deeper than 16 levels"),
        ("[" * 100_000, "nested deeper"),  # never reaches the recursive parser
        ('{"a": 1, "a": 2}', "duplicate member name"),
        ("[NaN]", "NaN is not a JSON number"),
        ("[-Infinity]", "-Infinity is not a JSON number"),
        ("[1e400]", "number out of range"),
        ("[" + "9" * 5000 + "]", "malformed JSON"),
        (b"\xff", "not UTF-8"),
        ("{'a': 1}", "malformed JSON"),
        ("", "malformed JSON"),
    ],
)
def test_what_is_refused_is_a_json_error(data, message):
    with pytest.raises(JsonError, match=message) as caught:
        loads(data)
    assert isinstance(caught.value, ValueError)
    assert "9999" not in str(caught.value) and "'a'" not in str(caught.value)


def test_the_depth_bound_is_the_callers():
    assert loads("[[[]]]", max_depth=3) == [[[]]]
    with pytest.raises(JsonError):
        loads("[[[]]]", max_depth=2)
    assert strict_json.MAX_DEPTH == 16
