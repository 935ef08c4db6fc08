import pytest

from regauth.policy import yamlpos
from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.policy.yamlpos import Seq
from regauth.policy.yamlpos import Str
from regauth.policy.yamlpos import YamlError

DOC = """\
version: 1
service: "svc"
token:
  lifetime: 300
rules:
  - account: ci
    repository: [a, "b/**"]
  -   account: any
      deny: true
flow: {x: 1, y: two}
"""


@pytest.fixture(scope="module")
def doc():
    return yamlpos.load(DOC)


def test_values_are_plain_python(doc):
    assert doc == {
        "version": 1,
        "service": "svc",
        "token": {"lifetime": 300},
        "rules": [{"account": "ci", "repository": ["a", "b/**"]}, {"account": "any", "deny": True}],
        "flow": {"x": 1, "y": "two"},
    }
    assert isinstance(doc, Map)
    assert isinstance(doc["rules"], Seq)
    assert isinstance(doc["service"], Str)
    assert type(doc["version"]) is int
    assert doc["rules"][1]["deny"] is True


def test_mapping_positions(doc):
    assert doc.position == Position(1, 1)
    assert doc.key_positions["version"] == Position(1, 1)
    assert doc.value_positions["version"] == Position(1, 10)
    assert doc.key_positions["service"] == Position(2, 1)
    assert doc.value_positions["service"] == Position(2, 10)  # the opening quote
    assert doc.where("service") == Position(2, 10)
    token = doc["token"]
    assert doc.value_positions["token"] == Position(4, 3) == token.position
    assert token.key_positions["lifetime"] == Position(4, 3)
    assert token.where("lifetime") == Position(4, 13)


def test_where_falls_back_to_the_mapping(doc):
    assert doc["token"].where("missing") == Position(4, 3)


def test_sequence_item_positions(doc):
    rules = doc["rules"]
    assert rules.position == Position(6, 3)
    assert rules.item_positions == [Position(6, 5), Position(8, 7)]
    assert rules.where(0) == Position(6, 5)
    assert rules.where(1) == Position(8, 7)
    assert rules.where(5) == rules.position
    first = rules[0]
    assert first.position == Position(6, 5)
    assert first.key_positions["repository"] == Position(7, 5)
    repos = first["repository"]
    assert repos.position == Position(7, 17)
    assert repos.item_positions == [Position(7, 18), Position(7, 21)]
    assert repos[1].position == Position(7, 21)
    second = rules[1]
    assert second.key_positions["deny"] == Position(9, 7)
    assert second.where("deny") == Position(9, 13)


def test_flow_mapping_positions(doc):
    flow = doc["flow"]
    assert flow.position == Position(10, 7)
    assert flow.key_positions["y"] == Position(10, 14)
    assert flow.where("y") == Position(10, 17)
    assert flow["y"].position == Position(10, 17)


def test_string_positions(doc):
    assert doc["rules"][0]["account"].position == Position(6, 14)


def test_empty_document():
    assert yamlpos.load("") is None
    assert yamlpos.load("# only a comment\n") is None


def test_scalar_document():
    value = yamlpos.load("hello")
    assert value == "hello"
    assert value.position == Position(1, 1)


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("a: 1\na: 2\n", Position(2, 1), "duplicate key 'a'"),
        ("a:\n  b: 1\n  b: 2\n", Position(3, 3), "duplicate key 'b'"),
        ("a: [1, 2\n", Position(2, 1), "YAML syntax error"),
        ("a: 1\n b: 2\n", Position(2, 3), "YAML syntax error"),
        ("key: 'open\n", Position(2, 1), "YAML syntax error"),
        ("base: &b {x: 1}\nuse:\n  <<: *b\n", Position(3, 3), "merge keys"),
        ("1: one\n", Position(1, 1), "mapping keys must be strings"),
        ("? [a, b]\n: x\n", Position(1, 3), "mapping keys must be strings"),
        ("a: !!python/object:os.system x\n", Position(1, 4), None),
    ],
)
def test_errors_carry_positions(text, position, message):
    with pytest.raises(YamlError) as e:
        yamlpos.load(text)
    assert e.value.position == position
    if message:
        assert message in e.value.message


@pytest.mark.parametrize(
    "text",
    ["a: !!int abc\n", "a: !!float x\n", "a: !!timestamp nope\n", "a: !!bool maybe\n"],
)
def test_explicit_tags_that_cannot_be_constructed_are_yaml_errors(text):
    # The value cannot be built: that is a problem in the document, and it must be reported
    # as one (with its position), not escape as a bare ValueError or AttributeError.
    with pytest.raises(YamlError) as e:
        yamlpos.load(text)
    assert e.value.position == Position(1, 4)


def test_aliases_are_resolved():
    assert yamlpos.load("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
