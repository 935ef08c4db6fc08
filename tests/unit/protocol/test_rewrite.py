import pytest

from regauth.protocol.challenge import parse_challenges
from regauth.protocol.rewrite import challenge_scopes
from regauth.protocol.rewrite import relative_location
from regauth.protocol.rewrite import rewrite_challenge
from regauth.protocol.rewrite import rewrite_link
from regauth.protocol.rewrite import rewrite_url
from regauth.protocol.urls import parse_origin

PUBLIC = parse_origin("https://proxy.test:5443")
REALM = "https://proxy.test:5443/v2/token"


@pytest.mark.parametrize(
    ("upstream", "url", "expected"),
    [
        (
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=xyz",
            "https://proxy.test:5443/v2/a/blobs/uploads/u1?_state=xyz",
        ),
        (
            "http://127.0.0.1:5000",
            "HTTP://127.0.0.1:5000/v2/a/blobs/uploads/u1",
            "https://proxy.test:5443/v2/a/blobs/uploads/u1",
        ),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000", "https://proxy.test:5443"),
        (
            "https://Registry.Example",
            "https://registry.example/v2/a/blobs/uploads/u1",
            "https://proxy.test:5443/v2/a/blobs/uploads/u1",
        ),
        (
            "https://registry.example",
            "HTTPS://REGISTRY.EXAMPLE/v2/x#frag",
            "https://proxy.test:5443/v2/x#frag",
        ),
        (
            "https://registry.example",
            "https://registry.example:443/v2/x",
            "https://proxy.test:5443/v2/x",
        ),
        (
            "https://registry.example:443",
            "https://registry.example/v2/x",
            "https://proxy.test:5443/v2/x",
        ),
        (
            "http://registry.example",
            "http://registry.example:80/v2/x",
            "https://proxy.test:5443/v2/x",
        ),
        ("http://[::1]:5000", "http://[::1]:5000/v2/x", "https://proxy.test:5443/v2/x"),
    ],
)
def test_urls_on_the_upstream_move_to_the_public_origin(upstream, url, expected):
    assert rewrite_url(url, parse_origin(upstream), PUBLIC) == expected


@pytest.mark.parametrize(
    ("upstream", "url"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/v2/x"),  # other port
        ("http://127.0.0.1:5000", "https://127.0.0.1:5000/v2/x"),  # other scheme
        ("https://registry.example", "http://registry.example/v2/x"),
        ("https://registry.example", "https://registry.example:8443/v2/x"),
        ("https://registry.example", "https://registry.example.evil/v2/x"),
        ("https://registry.example", "https://evilregistry.example/v2/x"),
        ("https://registry.example", "https://s3.amazonaws.com/bucket/blob?X-Amz-Signature=1"),
        ("https://registry.example", "/v2/a/blobs/uploads/u1?_state=x"),  # relative
        ("https://registry.example", "v2/x"),
        ("https://registry.example", "ftp://registry.example/v2/x"),
        ("https://registry.example", ""),
    ],
)
def test_other_urls_are_untouched(upstream, url):
    assert rewrite_url(url, parse_origin(upstream), PUBLIC) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=xyz",
            "/v2/a/blobs/uploads/u1?_state=xyz",
        ),
        ("HTTP://127.0.0.1:5000/v2/a/blobs/uploads/u1", "/v2/a/blobs/uploads/u1"),
        ("https://proxy.test:5443/v2/a/blobs/uploads/u1?x=1", "/v2/a/blobs/uploads/u1?x=1"),
        ("https://PROXY.test:5443/v2/x", "/v2/x"),
        ("http://127.0.0.1:5000", "/"),
        ("/v2/a/blobs/uploads/u1?_state=x", "/v2/a/blobs/uploads/u1?_state=x"),
        ("https://s3.example/bucket/blob?sig=1", "https://s3.example/bucket/blob?sig=1"),
        ("http://127.0.0.1:5001/v2/x", "http://127.0.0.1:5001/v2/x"),
        ("https://proxy.test/v2/x", "https://proxy.test/v2/x"),  # default port: another origin
    ],
)
def test_relative_location(url, expected):
    assert relative_location(url, parse_origin("http://127.0.0.1:5000"), PUBLIC) == expected


def test_link_header():
    upstream = parse_origin("http://127.0.0.1:5000")
    value = '<http://127.0.0.1:5000/v2/_catalog?last=b&n=2>; rel="next"'
    assert (
        rewrite_link(value, upstream, PUBLIC)
        == '<https://proxy.test:5443/v2/_catalog?last=b&n=2>; rel="next"'
    )
    relative = '</v2/_catalog?last=b&n=2>; rel="next"'
    assert rewrite_link(relative, upstream, PUBLIC) == relative
    several = '<http://127.0.0.1:5000/a>; rel="next", <https://cdn.example/b>; rel="x"'
    assert (
        rewrite_link(several, upstream, PUBLIC)
        == '<https://proxy.test:5443/a>; rel="next", <https://cdn.example/b>; rel="x"'
    )


def test_rewrite_challenge_replaces_realm_and_service_and_keeps_the_scope():
    value, records = rewrite_challenge(
        'Bearer realm="https://auth.upstream/token",service="upstream",'
        'scope="repository:a/b:pull,push repository:c:pull"',
        REALM,
        "svc",
    )
    assert value == (
        f'Bearer realm="{REALM}",service="svc",scope="repository:a/b:pull,push repository:c:pull"'
    )
    assert records == [
        {
            "scheme": "Bearer",
            "realm": "https://auth.upstream/token",
            "service": "upstream",
            "scopes": ["repository:a/b:pull,push", "repository:c:pull"],
        }
    ]


@pytest.mark.parametrize("error", ["invalid_token", "insufficient_scope", "invalid_request"])
def test_rewrite_challenge_keeps_known_errors(error):
    value, _ = rewrite_challenge(f'Bearer realm="x",service="y",error="{error}"', REALM, "svc")
    assert value == f'Bearer realm="{REALM}",service="svc",error="{error}"'


def test_rewrite_challenge_drops_unknown_errors():
    value, records = rewrite_challenge('Bearer realm="x",error="see http://evil"', REALM, "svc")
    assert value == f'Bearer realm="{REALM}",service="svc"'
    assert records[0]["error"] == "see http://evil"


@pytest.mark.parametrize(
    "bad_scope",
    [
        "repository:A:pull",
        "repository:a",
        "repository:a:pull repository:b:PUSH",
        "x\\y",
        "repository:a/../b:pull",
    ],
)
def test_rewrite_challenge_drops_an_invalid_scope(bad_scope):
    escaped = bad_scope.replace("\\", "\\\\")
    value, records = rewrite_challenge(
        f'Bearer realm="x",service="y",scope="{escaped}",error="insufficient_scope"', REALM, "svc"
    )
    assert value == f'Bearer realm="{REALM}",service="svc",error="insufficient_scope"'
    assert "scopes" in records[0]


def test_rewrite_challenge_drops_basic_challenges():
    # A Basic challenge would make containers/image send passwords on every request.
    value, records = rewrite_challenge(
        'Basic realm="Registry Realm", Bearer realm="https://auth/token",service="up"', REALM, "svc"
    )
    assert value == f'Bearer realm="{REALM}",service="svc"'
    assert [r["scheme"] for r in records] == ["Basic", "Bearer"]  # the log keeps the original
    only_basic, _ = rewrite_challenge('Basic realm="r"', REALM, "svc")
    assert only_basic == f'Bearer realm="{REALM}",service="svc"'


def test_rewrite_challenge_merges_duplicate_scopes():
    value, _ = rewrite_challenge(
        'Bearer realm="x",scope="repository:a:pull repository:a:push"', REALM, "svc"
    )
    assert value.endswith('scope="repository:a:pull,push"')


def test_unparsable_challenge_becomes_a_plain_bearer_challenge():
    value, records = rewrite_challenge('Bearer realm="unterminated', REALM, "svc")
    assert value == f'Bearer realm="{REALM}",service="svc"'
    assert records[0]["unparsed"] is True


def test_rewritten_challenges_never_carry_unsafe_text():
    # A Basic realm with an escaped quote cannot be re-quoted safely: it is dropped.
    value, _ = rewrite_challenge('Basic realm="a\\"b", Bearer realm="x"', REALM, "svc")
    assert value == f'Bearer realm="{REALM}",service="svc"'
    for c in parse_challenges(value):
        assert all('"' not in v and "\\" not in v for v in c.params.values())


def test_challenge_scopes():
    assert challenge_scopes('Bearer realm="x",scope="repository:a:push repository:a:pull"') == [
        "repository:a:pull,push"
    ]
    assert challenge_scopes('Basic realm="x", Bearer realm="y",scope="registry:catalog:*"') == [
        "registry:catalog:*"
    ]
    assert challenge_scopes('Bearer realm="x"') == []
    assert challenge_scopes('Bearer realm="x",scope="repository:A:pull"') == []
    assert challenge_scopes("nonsense ===") == []
