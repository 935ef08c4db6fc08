"""regauth's own requests to an upstream token realm (`regauth.ops.fetch.make_fetcher`), against
a real HTTP server on loopback: it names itself, never follows a redirect (credentials stay
with the host they were meant for), ignores proxies from the environment, reads at most
MAX_TOKEN_RESPONSE bytes, keeps every WWW-Authenticate line, and turns an unreachable realm
into UpstreamAuthError."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest

from regauth.ops.fetch import make_fetcher
from regauth.ops.registry_process import free_port
from regauth.upstream_auth import MAX_TOKEN_RESPONSE
from regauth.upstream_auth import USER_AGENT
from regauth.upstream_auth import UpstreamAuthError


class _Realm(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:
        _Realm.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path == "/token":
            self._answer(200, [("Content-Type", "application/json")], b'{"token": "t"}')
        elif self.path == "/big":
            self._answer(200, [], b"x" * (MAX_TOKEN_RESPONSE + 4096))
        elif self.path == "/moved":
            self._answer(302, [("Location", "/token")], b"")
        else:
            self._answer(
                401,
                [("WWW-Authenticate", 'Bearer realm="a"'), ("WWW-Authenticate", 'Basic realm="b"')],
                b'{"errors": []}',
            )

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def realm() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Realm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Realm.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_token_response_with_regauths_own_name(realm):
    result = make_fetcher(None)(f"{realm}/token", {"Authorization": "Basic eDp5"})
    assert (result.status, result.body) == (200, b'{"token": "t"}')
    assert result.headers["content-type"] == "application/json"
    [(path, headers)] = _Realm.seen
    assert path == "/token" and headers["user-agent"] == USER_AGENT
    assert headers["authorization"] == "Basic eDp5"


def test_error_answers_keep_every_challenge(realm):
    result = make_fetcher(None)(f"{realm}/denied", {})
    assert result.status == 401 and result.body == b'{"errors": []}'
    assert result.challenges == ('Bearer realm="a"', 'Basic realm="b"')


def test_redirects_are_answers_never_followed(realm):
    result = make_fetcher(None)(f"{realm}/moved", {"Authorization": "Basic eDp5"})
    assert result.status == 302 and result.headers["location"] == "/token"
    assert [path for path, _ in _Realm.seen] == ["/moved"]


def test_bodies_are_read_up_to_the_bound(realm):
    assert len(make_fetcher(None)(f"{realm}/big", {}).body) == MAX_TOKEN_RESPONSE


def test_proxies_from_the_environment_are_not_used(realm, monkeypatch):
    nowhere = f"http://127.0.0.1:{free_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, nowhere)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert make_fetcher(None)(f"{realm}/token", {}).status == 200


def test_an_unreachable_realm_is_an_upstream_auth_error():
    port = free_port()
    with pytest.raises(UpstreamAuthError, match=f"cannot reach 127.0.0.1:{port}"):
        make_fetcher(None, timeout=2)(f"http://127.0.0.1:{port}/token", {})
