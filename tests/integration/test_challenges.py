"""The set of challenges of an upstream response becomes one Bearer challenge (issue 13).

A registry stub sends exactly the WWW-Authenticate header lines under test (several lines,
several challenges in a line, unknown schemes, odd quoting); distribution's own single
challenge is the control. Delegate mode rewrites what reaches the client; inject mode must
find the upstream's Bearer challenge wherever it stands.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest

from regauth.protocol.challenge import parse_challenges
from tests.support import httpclient
from tests.support.policies import SERVICE

SCOPE = "repository:ci/app:pull"


class Stub:
    """A loopback HTTP server answering /v2/... with 401 and the given challenge lines, the
    token realm `/token` with a fixed token, and requests bearing it with 200."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.seen: list[tuple[str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                stub.seen.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/token"):
                    self._send(
                        200, json.dumps({"token": "upstream-token", "expires_in": 300}).encode()
                    )
                elif self.headers.get("Authorization") == "Bearer upstream-token":
                    self._send(200, b"{}")
                else:
                    lines = [
                        line.replace("REALM", f"http://127.0.0.1:{stub.port}/token")
                        for line in stub.lines
                    ]
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', lines)

            def _send(self, status: int, body: bytes, challenges: list[str] = ()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                for line in challenges:
                    self.send_header("WWW-Authenticate", line)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    stubs: list[Stub] = []

    def make(lines: list[str]) -> Stub:
        s = Stub(lines)
        stubs.append(s)
        return s

    yield make
    for s in stubs:
        s.stop()


BEARER = f'Bearer realm="REALM",service="upstream",scope="{SCOPE}"'
CASES = {
    "basic line then bearer line": ['Basic realm="r"', BEARER],
    "bearer line then basic line": [BEARER, 'Basic realm="r"'],
    "both in one line": [f'Basic realm="r", {BEARER}'],
    "unknown schemes around it": [
        "Negotiate",
        f"Foo abc==, {BEARER}",
        'Digest realm="d", nonce="n"',
    ],
    "odd quoting and case": [
        "basic REALM=r",
        f'BEARER Realm="REALM", SERVICE=upstream, Scope="{SCOPE}", error=insufficient_scope',
    ],
    "quoted-pair in a parameter": [f'Bearer realm="REAL\\M",service="up\\"stream",scope="{SCOPE}"'],
}


def _one_bearer(reply, proxy) -> dict[str, str]:
    values = reply.headers.get_all("WWW-Authenticate") or []
    assert len(values) == 1, values
    [challenge] = parse_challenges(values[0])
    assert challenge.is_bearer
    assert challenge.params["realm"] == f"{proxy.url}/v2/token"
    assert challenge.params["service"] == SERVICE
    return challenge.params


@pytest.mark.parametrize("case", list(CASES))
def test_delegate_mode_sends_one_bearer_challenge_with_the_scope(
    case, stub, write_policy, make_proxy
):
    upstream = stub(CASES[case])
    proxy = make_proxy(write_policy(mode="delegate"), upstream.url)
    reply = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/ci/app/manifests/1")
    assert reply.status == 401
    params = _one_bearer(reply, proxy)
    assert params["scope"] == SCOPE
    if case == "odd quoting and case":
        assert params["error"] == "insufficient_scope"
    records = proxy.records()
    matching = [r for r in records if r["path"] == "/v2/ci/app/manifests/1"]
    assert len(matching) == 1, records
    [record] = matching
    assert {c.get("scheme", "").lower() for c in record["upstream_challenge"]} >= {"bearer"}


def test_delegate_mode_without_a_bearer_challenge_sends_a_plain_one(stub, write_policy, make_proxy):
    upstream = stub(['Basic realm="r"', "Negotiate"])
    # Such a registry does not check regauth's tokens: only the delegate check's opt-out
    # (test setups) lets regauth forward to it at all.
    proxy = make_proxy(
        write_policy(mode="delegate"),
        upstream.url,
        extra=["--set", "regauth_delegate_unchecked=true"],
    )
    reply = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/ci/app/manifests/1")
    assert reply.status == 401
    assert "scope" not in _one_bearer(reply, proxy)


def test_control_distribution_single_challenge(token_registry_proxy):
    registry, proxy = token_registry_proxy
    reply = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/ci/app/manifests/1")
    assert reply.status == 401
    assert _one_bearer(reply, proxy)["scope"] == SCOPE


@pytest.mark.parametrize(
    "case",
    [
        "basic line then bearer line",
        "bearer line then basic line",
        "both in one line",
        "unknown schemes around it",
    ],
)
def test_inject_mode_finds_the_bearer_challenge_wherever_it_stands(
    case, stub, write_policy, make_proxy, password_hashes
):
    upstream = stub(CASES[case])
    policy = write_policy(
        upstream_extra="""    credentials:
      type: bearer
      username: robot
      password: robot-secret
"""
    )
    proxy = make_proxy(policy, upstream.url)
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:public/app:pull"], SERVICE
    ).json()["token"]
    reply = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/public/app/manifests/1",
        {"Authorization": f"Bearer {token}"},
    )
    assert reply.status == 200, (reply.status, reply.body, proxy.output()[-2000:])
    assert any(path.startswith("/token") for path, _ in upstream.seen)
    assert ("/v2/public/app/manifests/1", "Bearer upstream-token") in upstream.seen
