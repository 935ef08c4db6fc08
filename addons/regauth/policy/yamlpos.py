"""YAML loading that remembers where every key and value came from.

Policy errors must point at `file:line:column`; PyYAML's composed node tree carries the marks,
and this module turns it into plain Python values plus positions.

Hostile or broken documents are refused with a YamlError and a position, never another
exception. PyYAML's scanner and parser are iterative, but its composer recurses (two frames per
nesting level), and so does the conversion below: nesting depth is bounded while composing, long
before the interpreter's recursion limit, and again while converting (aliases can nest a
document deeper than its text). Document size and the number of values after alias expansion
are bounded too.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

# A policy nests about six levels deep and is a few KiB long: these bounds leave ample room.
MAX_DEPTH = 32
MAX_DOCUMENT_CHARS = 1024 * 1024
MAX_NODES = 100_000  # aliases can make a small document expand exponentially
_MAX_SHOWN = 60  # characters of an offending value quoted in a message

_DEFAULT_TAGS = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based

    @classmethod
    def of(cls, node: yaml.Node) -> Position:
        return cls.of_mark(node.start_mark)

    @classmethod
    def of_mark(cls, mark: yaml.Mark) -> Position:
        return cls(mark.line + 1, mark.column + 1)

    @classmethod
    def of_index(cls, text: str, index: int) -> Position:
        """The position of character `index` (0-based) in `text`."""
        index = max(0, min(index, len(text)))
        line_start = text.rfind("\n", 0, index) + 1
        return cls(text.count("\n", 0, index) + 1, index - line_start + 1)


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


def shown(value: object) -> str:
    """`repr(value)`, shortened for a one-line message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH.

    The check sits in compose_node, where the recursion is: the composer pulls events lazily,
    so a document of a million '[' is refused after MAX_DEPTH of them have been scanned.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlError(
                    f"YAML nesting deeper than {MAX_DEPTH} levels",
                    Position.of_mark(self.peek_event().start_mark),
                )
            if self._nodes > MAX_NODES:
                raise YamlError(
                    f"document too large: more than {MAX_NODES} values",
                    Position.of_mark(self.peek_event().start_mark),
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_constructor = yaml.SafeLoader(stream="")


def _tag_name(tag: str) -> str:
    return tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


def _convert(node: yaml.Node, budget: list[int], depth: int = 1) -> object:
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlError(
            f"document too large: more than {MAX_NODES} values after alias expansion",
            Position.of(node),
        )
    if depth > MAX_DEPTH:
        raise YamlError(
            f"YAML nesting deeper than {MAX_DEPTH} levels (through aliases)", Position.of(node)
        )
    if (
        isinstance(node, yaml.MappingNode | yaml.SequenceNode)
        and node.tag != _DEFAULT_TAGS[type(node)]
    ):
        # !!set, !!omap, !!pairs, or a scalar tag on a collection: never what a policy means.
        raise YamlError(
            f"YAML tag {_tag_name(node.tag)!r} is not supported here", Position.of(node)
        )
    if isinstance(node, yaml.MappingNode):
        result = Map()
        result.position = Position.of(node)
        result.key_positions = {}
        result.value_positions = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlError(
                    "YAML merge keys ('<<') are not supported in policies", Position.of(key_node)
                )
            key = _convert(key_node, budget, depth + 1)
            if not isinstance(key, str):
                raise YamlError("mapping keys must be strings", Position.of(key_node))
            if key in result:
                raise YamlError(f"duplicate key {shown(str(key))}", Position.of(key_node))
            result[str(key)] = _convert(value_node, budget, depth + 1)
            result.key_positions[str(key)] = Position.of(key_node)
            result.value_positions[str(key)] = Position.of(value_node)
        return result
    if isinstance(node, yaml.SequenceNode):
        seq = Seq(_convert(item, budget, depth + 1) for item in node.value)
        seq.position = Position.of(node)
        seq.item_positions = [Position.of(item) for item in node.value]
        return seq
    assert isinstance(node, yaml.ScalarNode)
    try:
        value = _constructor.construct_object(node, deep=True)
    except Exception as e:  # PyYAML's constructors raise anything on bad values
        reason = getattr(e, "problem", None) or f"{type(e).__name__}: {e}"
        raise YamlError(
            f"cannot read {_tag_name(node.tag)} value {shown(node.value)}: "
            f"{shown(str(reason))[1:-1]}",
            Position.of(node),
        ) from None
    if isinstance(value, str):
        located = Str(value)
        located.position = Position.of(node)
        return located
    return value


def _character(value: object) -> str:
    return f"U+{value:04X}" if isinstance(value, int) else shown(value)


def load(text: str) -> object:
    """Parse one YAML document into Map/Seq/Str and plain scalars.

    Raises YamlError (with the position where known) for syntax errors, characters YAML does
    not allow, documents over MAX_DOCUMENT_CHARS, nesting over MAX_DEPTH, more than MAX_NODES
    values, duplicate or non-string keys, merge keys, collection tags other than !!map/!!seq,
    and scalars their tag cannot construct. No other exception escapes.
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise YamlError(
            f"document larger than {MAX_DOCUMENT_CHARS // 1024} KiB",
            Position.of_index(text, MAX_DOCUMENT_CHARS),
        )
    try:
        loader = _BoundedLoader(text)  # the reader checks every character here
    except yaml.reader.ReaderError as e:
        raise YamlError(
            f"character {_character(e.character)} is not allowed in YAML",
            Position.of_index(text, e.position),
        ) from None
    try:
        node = loader.get_single_node()
        return None if node is None else _convert(node, [MAX_NODES])
    except YamlError:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        position = Position.of_mark(mark) if mark else None
        reason = e.problem or e.context or "malformed document"
        raise YamlError(f"YAML syntax error: {reason}", position) from None
    except Exception as e:  # PyYAML defects on hostile input: report where
        mark = loader.get_mark()
        raise YamlError(
            f"cannot parse YAML here ({type(e).__name__}: {shown(str(e))[1:-1]})",
            Position.of_mark(mark),
        ) from e
    finally:
        loader.dispose()
