"""WWW-Authenticate challenges (challenge.py, RFC 7235/6750): parsing raises only ValueError;
built and rendered challenges parse back to the same parameters; quoting refuses what it
cannot quote, with ValueError."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from regauth.protocol.challenge import build_bearer
from regauth.protocol.challenge import parse_challenges
from regauth.protocol.challenge import render
from regauth.protocol.scope import parse_scope
from tests.property.strategies import any_text
from tests.property.strategies import text_from

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-"
param_values = st.one_of(
    text_from(TOKEN_CHARS, 30),
    text_from(TOKEN_CHARS + ' ,="\\/:', 60).map(
        lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    any_text,
)
params = st.lists(
    st.tuples(
        st.sampled_from(["realm", "service", "scope", "error", "Realm"])
        | text_from(TOKEN_CHARS, 10),
        st.sampled_from(["=", " = ", "=\t"]),
        param_values,
    ).map("".join),
    max_size=5,
)
challenges = st.tuples(
    st.sampled_from(["Bearer", "Basic", "bearer", "Digest"]) | text_from(TOKEN_CHARS, 10),
    st.sampled_from([" ", "  ", "\t", ""]),
    params.map(",".join) | text_from(string.ascii_letters + "=+/", 40),
).map("".join)
headers = st.one_of(
    st.lists(challenges, max_size=4).map(", ".join),
    text_from(TOKEN_CHARS + ' ,="\\\t', 300),
    any_text,
)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@given(headers)
def test_parse_challenges_raises_only_value_error(header: str) -> None:
    try:
        parsed = parse_challenges(header)
    except ValueError:
        return
    for challenge in parsed:
        assert challenge.scheme
        challenge.as_record()
        try:
            rendered = render(challenge)
        except ValueError:
            continue
        again = parse_challenges(rendered)
        if "token68" not in challenge.params:
            assert [(c.scheme, c.params) for c in again] == [(challenge.scheme, challenge.params)]


@given(
    printable | any_text,
    printable | any_text,
    st.lists(
        st.sampled_from(["repository:a:pull", "repository:b/c:pull,push", "registry:catalog:*"]),
        max_size=3,
    ),
    st.none() | st.sampled_from(["invalid_token", "insufficient_scope"]) | any_text,
)
def test_build_bearer_round_trips_or_raises_value_error(
    realm: str, service: str, scopes: list[str], error: str | None
) -> None:
    try:
        header = build_bearer(realm, service, [parse_scope(s) for s in scopes], error)
    except ValueError:
        return
    (challenge,) = parse_challenges(header)
    assert challenge.params["realm"] == realm
    assert challenge.params["service"] == service
    assert challenge.scopes() == [str(parse_scope(s)) for s in scopes]
