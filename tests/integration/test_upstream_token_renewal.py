"""Inject mode in front of a Bearer upstream: regauth renews the upstream token from the lifetime
its token service states, and answers an upstream 401 to that token without passing it on and
without a loop (issue 25, item 2).

The upstream is a real distribution 2.8 in token mode. Its realm is a stub token service started
here (plain HTTP on loopback, listed in `realm_hosts`): it checks regauth's Basic credentials,
signs real ES256 JWTs with a key of its own (the registry's rootcertbundle, `kid` in libtrust
form), states an `expires_in`, and makes its tokens die when the test says. So distribution
alone decides whether regauth's upstream token is still good.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

import jwt
import pytest

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.protocol.scope import parse_scope
from regauth.tokens.keyids import libtrust_kid
from tests.support import httpclient
from tests.support.conformance import MANIFEST_TYPE
from tests.support.conformance import image_manifest
from tests.support.invariant import RegistryWatch
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE
from tests.support.proxy import ProxyProcess
from tests.support.tools import skopeo

ROBOT = ("robot", "robot-secret")  # regauth's own account at the upstream token service
REPOSITORY = "public/app"
PULL = f"repository:{REPOSITORY}:pull"
LAYER = b"layer of the upstream token renewal tests\n" * 64
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
# distribution 2.8 accepts a token until 60 s after its `exp` (token.Leeway).
LEEWAY = 60


@dataclass(frozen=True)
class Fetch:
    """One token request the stub received."""

    at: float  # time.monotonic()
    path: str
    params: list[tuple[str, str]]

    @property
    def scopes(self) -> list[str]:
        return [v for k, v in self.params if k == "scope"]


class TokenService:
    """A stub upstream token service (distribution token.md) on 127.0.0.1.

    `expires_in`: what it states (None: no `expires_in` member). `dies_after`: seconds after
    issue when distribution refuses the token (None: already dead when issued). It answers any
    path with a token for the requested scopes if regauth's Basic credentials are right.
    """

    def __init__(self, key: pki.SigningKey, expires_in: int | None, dies_after: float | None):
        self.key = key
        self.expires_in = expires_in
        self.dies_after = dies_after
        self.fetches: list[Fetch] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                service.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def mint(self, scopes: list[str], lifetime: float | None = None) -> str:
        """A token for `scopes` that dies `lifetime` seconds from now (default `dies_after`)."""
        now = time.time()
        dies_after = self.dies_after if lifetime is None else lifetime
        if dies_after is None:
            expires = math.floor(now) - LEEWAY - 1  # dead already, leeway included
        else:
            # The token must die `dies_after` seconds after issue: distribution adds its 60 s
            # of leeway to `exp`, so take them off (rounded up: it dies no earlier than that).
            expires = math.ceil(now + dies_after) - LEEWAY
        claims = {
            "iss": ISSUER,
            "sub": ROBOT[0],
            "aud": SERVICE,
            "exp": expires,
            "nbf": math.floor(now) - 1,
            "iat": math.floor(now),
            "jti": secrets.token_urlsafe(12),
            "access": [parse_scope(s).as_claim() for s in scopes],
        }
        assert self.key.private_key is not None
        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm="ES256",
            headers={"kid": libtrust_kid(self.key.public_key)},
        )

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = parse_qsl(parts.query, keep_blank_values=True)
        expected = httpclient.basic(*ROBOT)
        if handler.headers.get("Authorization") != expected:
            body, status = b'{"details":"wrong credentials"}', 401
        else:
            self.fetches.append(Fetch(time.monotonic(), parts.path, params))
            answer: dict[str, object] = {"token": self.mint([v for k, v in params if k == "scope"])}
            if self.expires_in is not None:
                answer["expires_in"] = self.expires_in
            body, status = json.dumps(answer).encode(), 200
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def for_pull(self) -> list[Fetch]:
        return [f for f in self.fetches if f.scopes == [PULL]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ServiceStrippingFront:
    """Passes GET and HEAD through to a registry, taking `service` out of its challenges: an
    upstream whose challenge names no service, with distribution still deciding everything."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.relay()

            def do_HEAD(self) -> None:
                self.relay()

            def relay(self) -> None:
                conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
                    conn.request(self.command, self.path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() == "www-authenticate":
                        value = re.sub(r',?\s*service="[^"]*"', "", value)
                    if name.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    tokens: TokenService
    registry: RegistryProcess
    proxy: ProxyProcess

    def client_token(self) -> str:
        reply = httpclient.get_token(self.proxy.port, self.proxy.ca, [PULL], SERVICE)
        assert reply.status == 200, reply.body
        return str(reply.json()["token"])

    def get(self, target: str, token: str, method: str = "GET") -> httpclient.Reply:
        return httpclient.request(
            self.proxy.port,
            self.proxy.ca,
            method,
            target,
            {"Authorization": f"Bearer {token}", "Accept": MANIFEST_TYPE},
        )


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _seed(watch: RegistryWatch, token: str, tags: list[str]) -> None:
    """Push a small image straight into the registry (not through regauth: `direct` keeps it
    out of the invariant that the registry saw only what regauth decided)."""
    auth = {"Authorization": f"Bearer {token}"}
    for blob in (CONFIG, LAYER):
        status, headers, body = watch.direct("POST", f"/v2/{REPOSITORY}/blobs/uploads/", b"", auth)
        assert status == 202, (status, body)
        location = urlsplit(headers["Location"])
        status, _, body = watch.direct(
            "PUT",
            f"{location.path}?{location.query}&digest={_digest(blob)}",
            blob,
            {**auth, "Content-Type": "application/octet-stream"},
        )
        assert status == 201, (status, body)
    manifest = image_manifest((_digest(CONFIG), len(CONFIG)), [(_digest(LAYER), len(LAYER))])
    for tag in tags:
        status, _, body = watch.direct(
            "PUT",
            f"/v2/{REPOSITORY}/manifests/{tag}",
            manifest,
            {**auth, "Content-Type": MANIFEST_TYPE},
        )
        assert status == 201, (status, body)


@pytest.fixture
def stack(
    tmp_path: Path,
    write_policy: Callable[..., Path],
    make_registry: Callable[..., RegistryProcess],
    make_proxy: Callable[..., ProxyProcess],
    registry_watches: dict[str, RegistryWatch],
) -> Iterator[Callable[..., Stack]]:
    """`stack(expires_in, dies_after, realm_path="/token", strip_service=False)`: the stub token
    service, distribution in token mode trusting only the stub's key (realm: the stub at
    `realm_path`, which may carry a query), an image tagged `1` and `raw` in it, and regauth in
    inject mode (`credentials: type: bearer`) in front of it, or in front of a
    `ServiceStrippingFront` of it."""
    stopped: list[TokenService | ServiceStrippingFront] = []

    def start(
        expires_in: int | None,
        dies_after: float | None,
        realm_path: str = "/token",
        strip_service: bool = False,
    ) -> Stack:
        keys = tmp_path / "upstream-keys"
        pki.write_signing_pair(keys, pki.SIGNING_STEM, "ES256")
        [key] = pki.load_signing_keys(keys)
        tokens = TokenService(key, expires_in, dies_after)
        stopped.append(tokens)
        registry = make_registry(
            "token",
            name="upstream",
            realm=f"http://{tokens.netloc}{realm_path}",
            signing_certs=keys,
        )
        _seed(
            registry_watches[registry.url],
            tokens.mint([f"repository:{REPOSITORY}:pull,push"], lifetime=120),
            ["1", "raw"],
        )
        upstream = registry.url
        if strip_service:
            front = ServiceStrippingFront(registry.url)
            stopped.append(front)
            upstream = front.url
        policy = write_policy(
            upstream_extra=f"""    credentials:
      type: bearer
      username: {ROBOT[0]}
      password: {ROBOT[1]}
      realm_hosts: ["{tokens.netloc}"]
"""
        )
        return Stack(tokens, registry, make_proxy(policy, upstream))

    yield start
    for server in stopped:
        server.stop()


MANIFEST_RAW = f"/v2/{REPOSITORY}/manifests/raw"
BLOB = f"/v2/{REPOSITORY}/blobs/{_digest(LAYER)}"


def test_upstream_token_renewed_before_the_lifetime_its_service_states(stack):
    """expires_in 10, and the tokens really die 10 s after issue: a pull polled for 13.5 s never
    sees anything but 200, because regauth fetched the next token at 90 % of the 10 s (before
    the first one died), not at 90 % of 60 s as it did when it raised expires_in to 60."""
    s = stack(expires_in=10, dies_after=10)
    token = s.client_token()
    began = time.monotonic()
    seen: list[tuple[float, str, int]] = []
    while time.monotonic() - began < 13.5:
        for method, target in (("GET", MANIFEST_RAW), ("HEAD", BLOB)):
            reply = s.get(target, token, method)
            seen.append((round(time.monotonic() - began, 2), method, reply.status))
        time.sleep(0.2)
    assert seen[-1][0] >= 13
    assert {status for _, _, status in seen} == {200}, [x for x in seen if x[2] != 200]
    fetches = s.tokens.for_pull()
    assert len(fetches) == 2, fetches
    renewed_after = fetches[1].at - fetches[0].at
    # The first token dies 10 s (at most 11 s: `exp` is whole seconds) after its issue.
    assert 8.9 <= renewed_after < 10, renewed_after


def test_token_refused_before_its_stated_expiry_sends_the_client_back_once(stack, tmp_path):
    """expires_in 300, but the upstream stops accepting each token after 3 s (it revoked it):
    the request that meets the refusal gets a 307 to itself with an empty body while regauth
    fetches a new token; repeated, it gets 200. A Go client (skopeo) follows the 307 and pulls
    the whole image across such a refusal."""
    s = stack(expires_in=300, dies_after=3)
    token = s.client_token()
    assert s.get(MANIFEST_RAW, token).status == 200
    assert len(s.tokens.for_pull()) == 1
    time.sleep(max(0.0, s.tokens.for_pull()[0].at + 5 - time.monotonic()))
    first = s.get(MANIFEST_RAW, token)
    assert first.status == 307, (first.status, first.body)
    assert first.header("Location") == MANIFEST_RAW
    assert first.body == b"" and first.header("Content-Length") == "0"
    assert len(s.tokens.for_pull()) == 2  # renewed at once, not on the client's next request
    again = s.get(MANIFEST_RAW, token)
    assert again.status == 200, (again.status, again.body)
    assert len(s.tokens.for_pull()) == 2
    # The whole pull with a client that follows redirects, once the second token has died too.
    time.sleep(max(0.0, s.tokens.for_pull()[1].at + 5 - time.monotonic()))
    before = len(s.proxy.records())
    pulled = skopeo(
        "copy",
        "--src-cert-dir",
        str(s.proxy.certs_dir),
        f"docker://{s.proxy.netloc}/{REPOSITORY}:1",
        f"oci:{tmp_path / 'pulled'}:latest",
        timeout=120,
    )
    assert pulled.ok, pulled.output[-3000:]
    after = s.proxy.records()[before:]
    redirected = [r for r in after if r.get("status") == 307]
    assert redirected, [(r.get("method"), r.get("path"), r.get("status")) for r in after]
    assert not [r for r in after if (r.get("status") or 0) >= 500], after
    # One renewal per refusal: the copy takes well under the 3 s a token lives, so normally
    # exactly one (measured: 3 fetches in all); a slow machine may meet one more refusal.
    assert 3 <= len(s.tokens.for_pull()) <= 5, s.tokens.for_pull()


def test_upstream_that_refuses_every_token_gets_a_503_and_no_loop(stack):
    """Every token the upstream's service issues is dead on arrival: the first request is sent
    back once (307), the repeated one gets 503 UNAVAILABLE with Retry-After: 1, and regauth
    asked for exactly one token per refusal (3 for the 2 requests). A Go client following the
    307 ends in the same 503, promptly."""
    s = stack(expires_in=300, dies_after=None)
    token = s.client_token()
    first = s.get(MANIFEST_RAW, token)
    assert first.status == 307, (first.status, first.body)
    second = s.get(MANIFEST_RAW, token)
    assert second.status == 503, (second.status, second.body)
    assert second.header("Retry-After") == "1"
    assert second.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert len(s.tokens.for_pull()) == 3
    began = time.monotonic()
    inspected = skopeo(
        "inspect",
        "--cert-dir",
        str(s.proxy.certs_dir),
        f"docker://{s.proxy.netloc}/{REPOSITORY}:1",
        timeout=60,
    )
    assert not inspected.ok
    assert time.monotonic() - began < 30
    assert "503" in inspected.output or "unavailable" in inspected.output.lower()
    # The 307 the Go client followed, then the 503: one renewal each.
    assert len(s.tokens.for_pull()) == 5, s.tokens.for_pull()


def test_token_request_without_service_keeps_the_realms_path_and_query(stack):
    """A challenge naming no `service` gets a token request without one (not `service=`), and a
    realm with a path and a query keeps both; distribution accepts the token it got."""
    s = stack(
        expires_in=60,
        dies_after=60,
        realm_path="/auth/v1/token?tenant=blue&kind=registry",
        strip_service=True,
    )
    token = s.client_token()
    reply = s.get(MANIFEST_RAW, token)
    assert reply.status == 200, (reply.status, reply.body)
    [fetch] = s.tokens.for_pull()
    assert fetch.path == "/auth/v1/token"
    names = [name for name, _ in fetch.params]
    assert "service" not in names, fetch.params
    assert ("tenant", "blue") in fetch.params and ("kind", "registry") in fetch.params
    assert names[:2] == ["tenant", "kind"]  # the realm's own query first, as it was
