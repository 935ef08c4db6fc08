"""YAML loading that remembers where every key and value came from.

Policy errors must point at `file:line:column`; PyYAML's composed node tree carries the marks,
and this module turns it into plain Python values plus positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based

    @classmethod
    def of(cls, node: yaml.Node) -> Position:
        return cls(node.start_mark.line + 1, node.start_mark.column + 1)


class YamlError(ValueError):
    def __init__(self, message: str, position: Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class Map(dict):
    """A mapping that knows the position of itself, of each key and of each value."""

    position: Position
    key_positions: dict[str, Position]
    value_positions: dict[str, Position]

    def where(self, key: str) -> Position:
        return self.value_positions.get(key, self.key_positions.get(key, self.position))


class Seq(list):
    position: Position
    item_positions: list[Position]

    def where(self, index: int) -> Position:
        return self.item_positions[index] if index < len(self.item_positions) else self.position


class Str(str):
    position: Position


_constructor = yaml.SafeLoader(stream="")


MAX_NODES = 100_000  # aliases can make a small document expand exponentially


def _convert(node: yaml.Node, budget: list[int] | None = None) -> object:
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlError("document too large (alias expansion?)", Position.of(node))
    if isinstance(node, yaml.MappingNode):
        result = Map()
        result.position = Position.of(node)
        result.key_positions = {}
        result.value_positions = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlError("YAML merge keys ('<<') are not supported in policies",
                                Position.of(key_node))
            key = _convert(key_node, budget)
            if not isinstance(key, str):
                raise YamlError("mapping keys must be strings", Position.of(key_node))
            if key in result:
                raise YamlError(f"duplicate key {key!r}", Position.of(key_node))
            result[str(key)] = _convert(value_node, budget)
            result.key_positions[str(key)] = Position.of(key_node)
            result.value_positions[str(key)] = Position.of(value_node)
        return result
    if isinstance(node, yaml.SequenceNode):
        seq = Seq(_convert(item, budget) for item in node.value)
        seq.position = Position.of(node)
        seq.item_positions = [Position.of(item) for item in node.value]
        return seq
    assert isinstance(node, yaml.ScalarNode)
    try:
        value = _constructor.construct_object(node, deep=True)
    except (ValueError, TypeError, KeyError, AttributeError,
            yaml.constructor.ConstructorError) as e:
        raise YamlError(f"cannot read {node.tag.rsplit(':', 1)[-1]} value {node.value!r}: "
                        f"{getattr(e, 'problem', None) or e}", Position.of(node)) from None
    if isinstance(value, str):
        located = Str(value)
        located.position = Position.of(node)
        return located
    return value


def load(text: str) -> object:
    """Parse one YAML document; raise YamlError with the position of any syntax error."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else None
        raise YamlError(f"YAML syntax error: {e.problem or e.context}", position) from None
    except yaml.YAMLError as e:
        raise YamlError(f"YAML error: {e}", None) from None
    if node is None:
        return None
    try:
        return _convert(node)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else None
        raise YamlError(f"cannot read value: {e.problem}", position) from None
