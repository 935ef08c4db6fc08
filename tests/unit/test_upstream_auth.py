import base64
import json
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest

from regauth.policy.model import UpstreamCredentials
from regauth.protocol.urls import parse_origin
from regauth.upstream_auth import HttpResult
from regauth.upstream_auth import UpstreamAuth
from regauth.upstream_auth import UpstreamAuthError
from regauth.upstream_auth import check_realm
from tests.unit.helpers import FakeClock
from tests.unit.helpers import scope

UPSTREAM = parse_origin("https://registry.example")
BASIC = "Basic " + base64.b64encode(b"robot:s3cret").decode()


@pytest.mark.parametrize(
    ("realm", "upstream", "allowed", "ok"),
    [
        # the upstream's own host and port
        ("https://registry.example/token", "https://registry.example", (), True),
        ("HTTPS://Registry.Example:443/token?x=1", "https://registry.example", (), True),
        ("http://registry.example:5000/token", "http://registry.example:5000", (), True),
        ("https://registry.example:5000/token", "http://registry.example:5000", (), True),
        # another port of the same host is another server
        ("https://registry.example:8443/token", "https://registry.example", (), False),
        ("http://registry.example:5001/token", "http://registry.example:5000", (), False),
        # an https upstream's credentials never go over plain http, listed or not
        ("http://registry.example/token", "https://registry.example", (), False),
        ("http://REGISTRY.example:8080/token", "https://registry.example", (), False),
        ("http://auth.example/token", "https://registry.example", ("auth.example",), False),
        ("http://auth.example:80/token", "https://registry.example", ("auth.example:80",), False),
        # other hosts only when listed, as host:port (a bare host means the default port)
        ("https://auth.example/token", "https://registry.example", (), False),
        ("HTTPS://Auth.Example/token", "https://registry.example", (), False),
        ("https://auth.example/token", "https://registry.example", ("auth.example",), True),
        ("https://auth.example/token", "https://registry.example", ("auth.example:443",), True),
        ("https://auth.example:8443/t", "https://registry.example", ("auth.example",), False),
        ("https://auth.example:8443/t", "https://registry.example", ("auth.example:8443",), True),
        ("https://other.example/token", "https://registry.example", ("auth.example",), False),
        ("https://registry.example/token", "https://registry.example", ("auth.example",), True),
        ("http://127.0.0.1/token", "http://localhost:5000", (), False),
        ("https://auth.example/token", "http://registry.example", (), False),
        ("https://auth.example/token", "http://registry.example", ("auth.example",), True),
        ("http://auth.example/token", "http://registry.example", ("auth.example",), True),
        # not a realm at all
        ("ftp://auth.example/token", "https://registry.example", (), False),
        ("/token", "https://registry.example", (), False),
        ("https://user:pw@registry.example/token", "https://registry.example", (), False),
        ("https:///token", "https://registry.example", (), False),
    ],
)
def test_check_realm(realm, upstream, allowed, ok):
    if ok:
        origin = check_realm(realm, parse_origin(upstream), allowed)
        assert origin.host == urlsplit(realm).hostname.lower()
    else:
        with pytest.raises(UpstreamAuthError):
            check_realm(realm, parse_origin(upstream), allowed)


class FakeUpstream:
    """Answers the ping with a challenge and the realm with numbered tokens."""

    def __init__(
        self, challenge='Bearer realm="https://auth.example/token",service="reg"', expires_in=300
    ):
        self.challenge = challenge
        self.expires_in = expires_in
        self.calls = []
        self.token_response = None

    def __call__(self, url, headers):
        self.calls.append((url, dict(headers)))
        if urlsplit(url).path == "/v2/":
            return HttpResult(401, {"www-authenticate": self.challenge}, b"")
        if self.token_response is not None:
            return self.token_response
        body = {"token": f"tok{len(self.token_calls)}"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return HttpResult(200, {"content-type": "application/json"}, json.dumps(body).encode())

    @property
    def token_calls(self):
        return [c for c in self.calls if urlsplit(c[0]).path != "/v2/"]


def _auth(fetch, kind="bearer", clock=None, realm_hosts=("auth.example",)):
    credentials = UpstreamCredentials(kind, "robot", "inline", "s3cret", realm_hosts)
    return UpstreamAuth(credentials, UPSTREAM, fetch, clock=clock or FakeClock())


def test_basic_credentials_need_no_token_flow():
    fetch = FakeUpstream()
    assert _auth(fetch, kind="basic").header_for((scope("repository:a:pull"),)) == BASIC
    assert fetch.calls == []


def test_discovers_the_challenge_and_asks_the_realm():
    fetch = FakeUpstream()
    header = _auth(fetch).header_for(
        (scope("repository:a/b:pull,push"), scope("repository:c:pull"))
    )
    assert header == "Bearer tok1"
    ping, token = fetch.calls
    assert ping == ("https://registry.example/v2/", {})
    url, headers = token
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://auth.example/token"
    assert parse_qs(parts.query) == {
        "service": ["reg"],
        "scope": ["repository:a/b:pull,push", "repository:c:pull"],
    }
    assert headers == {"Authorization": BASIC}


def test_realm_with_a_query_gets_an_ampersand():
    fetch = FakeUpstream('Bearer realm="https://auth.example/token?tenant=1",service="reg"')
    _auth(fetch).header_for((scope("repository:a:pull"),))
    url = fetch.token_calls[0][0]
    assert url.startswith("https://auth.example/token?tenant=1&service=reg&scope=")


def test_tokens_are_cached_per_scope():
    fetch = FakeUpstream()
    auth = _auth(fetch)
    a, b = scope("repository:a:pull"), scope("repository:b:pull")
    assert auth.header_for((a,)) == "Bearer tok1"
    assert auth.header_for((a,)) == "Bearer tok1"
    assert auth.header_for((b,)) == "Bearer tok2"
    assert auth.header_for((a, b)) == "Bearer tok3"
    assert auth.header_for((b, a)) == "Bearer tok3"  # order does not matter
    assert auth.header_for((b,)) == "Bearer tok2"
    assert len(fetch.token_calls) == 3
    assert len(fetch.calls) == 4  # the challenge was discovered once


def test_forget_drops_one_cache_entry():
    fetch = FakeUpstream()
    auth = _auth(fetch)
    a = (scope("repository:a:pull"),)
    auth.header_for(a)
    auth.forget(a)
    assert auth.header_for(a) == "Bearer tok2"


@pytest.mark.parametrize(
    ("expires_in", "renew_after"),
    # The stated lifetime, even a short one; 60 s only when absent (distribution token.md).
    [(300, 270), (100, 90), (None, 54), (10, 9), (0, 0.9)],
)
def test_tokens_are_renewed_at_90_percent_of_their_lifetime(expires_in, renew_after):
    fetch = FakeUpstream(expires_in=expires_in)
    clock = FakeClock(5000.0)
    auth = _auth(fetch, clock=clock)
    scopes = (scope("repository:a:pull"),)
    assert auth.header_for(scopes) == "Bearer tok1"
    clock.advance(renew_after - 0.5)
    assert auth.header_for(scopes) == "Bearer tok1"
    clock.advance(0.5)
    assert auth.header_for(scopes) == "Bearer tok2"


@pytest.mark.parametrize(
    "token", ["abc\r\nX-Injected: 1", "abc\ndef", "abc\rdef", "a b", "", None, 42]
)
def test_unusable_tokens_are_refused(token):
    fetch = FakeUpstream()
    fetch.token_response = HttpResult(200, {}, json.dumps({"token": token}).encode())
    with pytest.raises(UpstreamAuthError, match="no usable token"):
        _auth(fetch).header_for((scope("repository:a:pull"),))


def test_access_token_field_is_accepted():
    fetch = FakeUpstream()
    fetch.token_response = HttpResult(
        200, {}, json.dumps({"access_token": "oauth-tok", "expires_in": 120}).encode()
    )
    assert _auth(fetch).header_for((scope("repository:a:pull"),)) == "Bearer oauth-tok"


@pytest.mark.parametrize("status", [401, 403, 404, 500, 302])
def test_non_200_from_the_realm_raises(status):
    fetch = FakeUpstream()
    fetch.token_response = HttpResult(status, {}, b'{"token": "would-be-ignored"}')
    with pytest.raises(UpstreamAuthError, match=str(status)):
        _auth(fetch).header_for((scope("repository:a:pull"),))


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'"token"', b'{"token": "t", "expires_in": "soon"}']
)
def test_malformed_token_responses_raise(body):
    fetch = FakeUpstream()
    fetch.token_response = HttpResult(200, {}, body)
    with pytest.raises(UpstreamAuthError):
        _auth(fetch).header_for((scope("repository:a:pull"),))


def test_failures_are_not_cached():
    fetch = FakeUpstream()
    fetch.token_response = HttpResult(500, {}, b"")
    auth = _auth(fetch)
    with pytest.raises(UpstreamAuthError):
        auth.header_for((scope("repository:a:pull"),))
    fetch.token_response = None
    assert auth.header_for((scope("repository:a:pull"),)).startswith("Bearer tok")


@pytest.mark.parametrize(
    "challenge",
    ['Basic realm="registry"', "", 'Bearer service="reg"', 'Bearer realm="unterminated'],
)
def test_missing_bearer_challenge_raises(challenge):
    fetch = FakeUpstream(challenge)
    with pytest.raises(UpstreamAuthError, match="no Bearer challenge"):
        _auth(fetch).header_for((scope("repository:a:pull"),))
    assert fetch.token_calls == []


def test_bearer_after_basic_in_the_same_header_is_found():
    fetch = FakeUpstream('Basic realm="r", Bearer realm="https://auth.example/t",service="s"')
    assert _auth(fetch).header_for((scope("repository:a:pull"),)) == "Bearer tok1"


@pytest.mark.parametrize(
    ("realm", "realm_hosts"),
    [
        ("http://auth.example/token", ()),
        ("https://elsewhere.example/token", ("auth.example",)),
        ("http://169.254.169.254/latest", ()),
    ],
)
def test_credentials_are_never_sent_to_a_refused_realm(realm, realm_hosts):
    fetch = FakeUpstream(f'Bearer realm="{realm}",service="reg"')
    with pytest.raises(UpstreamAuthError):
        _auth(fetch, realm_hosts=realm_hosts).header_for((scope("repository:a:pull"),))
    assert fetch.token_calls == []


def test_a_plain_http_realm_is_refused_for_an_https_upstream_even_when_listed():
    fetch = FakeUpstream('Bearer realm="http://auth.example/token",service="reg"')
    with pytest.raises(UpstreamAuthError, match="clear text"):
        _auth(fetch, realm_hosts=("auth.example",)).header_for((scope("repository:a:pull"),))
    assert fetch.token_calls == []


def test_a_listed_plain_http_realm_serves_a_plain_http_upstream():
    fetch = FakeUpstream('Bearer realm="http://auth.example/token",service="reg"')
    credentials = UpstreamCredentials("bearer", "robot", "inline", "s3cret", ("auth.example",))
    auth = UpstreamAuth(
        credentials, parse_origin("http://registry.example"), fetch, clock=FakeClock()
    )
    assert auth.header_for((scope("repository:a:pull"),)) == "Bearer tok1"


@pytest.mark.parametrize(
    "challenges",
    [
        ('Basic realm="r"', 'Bearer realm="https://auth.example/t",service="s"'),
        ('Bearer realm="https://auth.example/t",service="s"', 'Basic realm="r"'),
        ("garbage ,,, =", 'Negotiate, Bearer realm="https://auth.example/t",service="s"'),
    ],
)
def test_the_bearer_challenge_is_found_in_any_header_line(challenges):
    # A registry may split its challenges over several WWW-Authenticate lines (RFC 7235).
    fetch = FakeUpstream()

    def split(url, headers):
        result = fetch(url, headers)
        if urlsplit(url).path == "/v2/":
            return HttpResult(401, {"www-authenticate": challenges[-1]}, b"", challenges)
        return result

    assert _auth(split).header_for((scope("repository:a:pull"),)) == "Bearer tok1"


def test_a_challenge_without_service_sends_none():
    fetch = FakeUpstream('Bearer realm="https://auth.example/token?tenant=1"')
    auth = _auth(fetch)
    auth.header_for((scope("repository:a:pull"),))
    url = fetch.token_calls[-1][0]
    assert url.startswith("https://auth.example/token?tenant=1&scope=")
    assert "service" not in url
