import random

import pytest

from regauth.protocol.challenge import Challenge
from regauth.protocol.challenge import build_bearer
from regauth.protocol.challenge import parse_challenges
from regauth.protocol.challenge import render
from tests.unit.helpers import scope


def _parsed(header):
    return [(c.scheme, c.params) for c in parse_challenges(header)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # distribution's own rendering (Go %q)
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            [
                (
                    "Bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push",
                    },
                )
            ],
        ),
        # no scope on the ping, error parameter
        (
            'Bearer realm="https://r/token",service="r",error="invalid_token"',
            [("Bearer", {"realm": "https://r/token", "service": "r", "error": "invalid_token"})],
        ),
        # several resources inside one scope parameter
        (
            'Bearer realm="r",scope="repository:a:pull repository:b:pull,push"',
            [("Bearer", {"realm": "r", "scope": "repository:a:pull repository:b:pull,push"})],
        ),
        # several challenges in one header
        (
            'Basic realm="x", Bearer realm="y",service="z"',
            [("Basic", {"realm": "x"}), ("Bearer", {"realm": "y", "service": "z"})],
        ),
        (
            'Basic realm="x",Bearer realm="y"',
            [("Basic", {"realm": "x"}), ("Bearer", {"realm": "y"})],
        ),
        (
            'Bearer realm="y",service="z", Basic realm="x"',
            [("Bearer", {"realm": "y", "service": "z"}), ("Basic", {"realm": "x"})],
        ),
        # token (unquoted) values and optional whitespace
        (
            'Bearer realm="y", service=registry.local, error=insufficient_scope',
            [
                (
                    "Bearer",
                    {"realm": "y", "service": "registry.local", "error": "insufficient_scope"},
                )
            ],
        ),
        ('Bearer realm = "y" , service = z', [("Bearer", {"realm": "y", "service": "z"})]),
        # escaped quote and backslash inside a quoted-string
        (
            'Bearer realm="a\\"b",service="c\\\\d"',
            [("Bearer", {"realm": 'a"b', "service": "c\\d"})],
        ),
        # a comma inside a quoted value does not split anything
        (
            'Bearer realm="r",scope="repository:a:pull,push,delete"',
            [("Bearer", {"realm": "r", "scope": "repository:a:pull,push,delete"})],
        ),
        # parameter names are case-insensitive; the scheme keeps its spelling
        ('bearer Realm="r",SERVICE="s"', [("bearer", {"realm": "r", "service": "s"})]),
        # token68 credentials-style challenge followed by another challenge
        (
            'Negotiate abc123==, Bearer realm="r"',
            [("Negotiate", {"token68": "abc123=="}), ("Bearer", {"realm": "r"})],
        ),
        # the RFC 7235 section 4.1 example
        (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
            [
                ("Newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                ("Basic", {"realm": "simple"}),
            ],
        ),
        # empty list elements are allowed around challenges and parameters
        (', Bearer realm="r",,service="s",', [("Bearer", {"realm": "r", "service": "s"})]),
        ("Bearer", [("Bearer", {})]),
        ("", []),
    ],
)
def test_parse_challenges(header, expected):
    assert _parsed(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="r", realm="x"',  # repeated parameter
        'Bearer realm="unterminated',
        '"Bearer" realm="r"',
        "=Bearer",
        'Bearer realm=,service="s"',
        'Bearer realm="r" junk',
        'Bearer realm="r" Basic realm="x"',
        'Bearer realm="r"\r\nX-Injected: 1',
    ],
)
def test_parse_challenges_rejects_malformed(header):
    with pytest.raises(ValueError):
        parse_challenges(header)


def test_a_challenge_without_parameters_may_be_followed_by_another():
    # RFC 7235 section 4.1: WWW-Authenticate = 1#challenge, and a challenge may be a bare
    # auth-scheme, so "Negotiate, Bearer realm=..." is two challenges.
    assert _parsed('Negotiate, Bearer realm="r",service="s"') == [
        ("Negotiate", {}),
        ("Bearer", {"realm": "r", "service": "s"}),
    ]


def test_parse_challenges_rejects_overlong_header():
    with pytest.raises(ValueError, match="too long"):
        parse_challenges('Bearer realm="' + "a" * 9000 + '"')


def test_challenge_helpers():
    [c] = parse_challenges(
        'BEARER realm="r",service="s",scope="repository:a:pull '
        'repository:b:push",error="insufficient_scope",extra="x"'
    )
    assert c.is_bearer
    assert c.scopes() == ["repository:a:pull", "repository:b:push"]
    assert c.as_record() == {
        "scheme": "BEARER",
        "realm": "r",
        "service": "s",
        "error": "insufficient_scope",
        "scopes": ["repository:a:pull", "repository:b:push"],
    }
    assert not Challenge("Basic", {"realm": "x"}).is_bearer
    assert Challenge("Bearer").scopes() == []


def test_build_bearer_without_scope():
    assert (
        build_bearer("https://proxy:5000/v2/token", "registry")
        == 'Bearer realm="https://proxy:5000/v2/token",service="registry"'
    )


def test_build_bearer_with_scopes_and_error():
    header = build_bearer(
        "https://p/v2/token",
        "svc",
        [scope("repository:a:push,pull"), scope("registry:catalog:*")],
        "insufficient_scope",
    )
    assert header == (
        'Bearer realm="https://p/v2/token",service="svc",'
        'scope="repository:a:pull,push registry:catalog:*",'
        'error="insufficient_scope"'
    )


def test_build_bearer_error_without_scope():
    assert (
        build_bearer("r", "s", (), "invalid_token")
        == 'Bearer realm="r",service="s",error="invalid_token"'
    )


def test_build_bearer_round_trips_through_the_parser():
    header = build_bearer(
        "https://p/v2/token", "svc", [scope("repository:a/b:pull")], "invalid_token"
    )
    [c] = parse_challenges(header)
    assert c.params == {
        "realm": "https://p/v2/token",
        "service": "svc",
        "scope": "repository:a/b:pull",
        "error": "invalid_token",
    }


@pytest.mark.parametrize(
    "bad", ['a"b', "a\\b", "a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b", "ä"]
)
@pytest.mark.parametrize("where", ["realm", "service", "error"])
def test_build_bearer_refuses_unquotable_values(bad, where):
    args = {"realm": "r", "service": "s", "error": None}
    args[where] = bad
    with pytest.raises(ValueError):
        build_bearer(args["realm"], args["service"], (), args["error"])


def test_render_requotes_and_drops_token68():
    c = Challenge("Bearer", {"realm": "r", "service": "s", "token68": "zz"})
    assert render(c) == 'Bearer realm="r",service="s"'
    assert render(Challenge("Basic")) == "Basic"


def test_render_refuses_a_value_that_would_break_the_header():
    with pytest.raises(ValueError):
        render(Challenge("Bearer", {"realm": 'x", evil="1'}))


def test_parser_never_fails_with_anything_but_value_error():
    rnd = random.Random(20261129)
    pieces = [
        "Bearer",
        "Basic",
        " ",
        "\t",
        ",",
        "=",
        '"',
        "\\",
        "realm",
        "a",
        "x=",
        "==",
        '"v"',
        "/",
        ":",
        "\r\n",
        "é",
    ]
    for _ in range(5000):
        header = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 14)))
        try:
            challenges = parse_challenges(header)
        except ValueError:
            continue
        for c in challenges:
            assert c.scheme
            try:
                rendered = render(c)
            except ValueError:
                continue
            # whatever renders parses back to the same challenge
            assert [(x.scheme, x.params) for x in parse_challenges(rendered)] == [
                (c.scheme, {k: v for k, v in c.params.items() if k != "token68"})
            ]
