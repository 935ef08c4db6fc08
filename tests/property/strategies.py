"""Strategies shared by the property tests: hostile text, JSON (valid and not), base64url."""

from __future__ import annotations

import base64
import json

from hypothesis import strategies as st

# Every code point, lone surrogates included (mitmproxy hands headers over with surrogateescape).
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=300)
ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=300)


def text_from(alphabet: str, max_size: int = 300) -> st.SearchStrategy[str]:
    """Text mostly from a parser's own alphabet (to get past its first check), with a sprinkle
    of anything."""
    own = st.sampled_from(alphabet)
    return st.text(own, max_size=max_size) | st.text(own | any_char, max_size=max_size)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


short_text = st.text(any_char, max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | short_text
)


@st.composite
def _json_value(draw: st.DrawFn, depth: int = 3) -> object:
    # Hand-rolled rather than st.recursive, which costs several times more per example.
    kind = draw(st.integers(min_value=0, max_value=3 if depth > 0 else 0))
    if kind <= 1:
        return draw(json_scalars)
    size = draw(st.integers(min_value=0, max_value=3))
    if kind == 2:
        return [draw(_json_value(depth - 1)) for _ in range(size)]
    return {draw(short_text): draw(_json_value(depth - 1)) for _ in range(size)}


json_values = _json_value()


@st.composite
def nested_json(draw: st.DrawFn) -> bytes:
    """Deep nesting of arrays and objects, possibly unbalanced or inside a string."""
    depth = draw(st.integers(min_value=1, max_value=3000))
    kind = draw(st.sampled_from(["array", "object", "mixed", "string", "unbalanced"]))
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "string":
        return b'{"a":"' + b"[" * depth + b'"}'
    if kind == "unbalanced":
        return b"[" * depth
    bits = draw(st.integers(min_value=0, max_value=2**32 - 1))  # cheaper than a long list
    opens = ["[" if bits >> (i % 32) & 1 else '{"k":' for i in range(depth)]
    closes = ["]" if o == "[" else "}" for o in reversed(opens)]
    return ("".join(opens) + "0" + "".join(closes)).encode()


def json_bytes(values: st.SearchStrategy[object] = json_values) -> st.SearchStrategy[bytes]:
    """JSON documents as peers could send them: valid JSON, Python's NaN/Infinity dialect,
    duplicate names, deep nesting, truncations and arbitrary bytes."""
    dumped = values.map(lambda v: json.dumps(v).encode())
    truncated = st.tuples(dumped, st.integers(min_value=0)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)]
    )
    return st.one_of(
        dumped,
        truncated,
        nested_json(),
        st.binary(max_size=300),
        st.sampled_from(
            [
                b'{"a":1,"a":2}',
                b'{"a":NaN}',
                b'{"a":1e400}',
                b'{"a":-Infinity}',
                b'{"a":' + b"9" * 5000 + b"}",
                b"\xef\xbb\xbf{}",
                b'"\\ud800"',
            ]
        ),
    )
