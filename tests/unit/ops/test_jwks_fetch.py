"""Fetching a federated issuer's JWK Set (ops/jwks_fetch.py) from the local HTTPS issuer of
the tests (tests/support/oidc_issuer.py) in each of its hostile modes: verified TLS only, no
redirect followed, the whole fetch within its deadline (a hanging or trickling endpoint, and one
that trickles its headers), at most 256 KiB read of a 50 MiB answer, errors as JwksError naming
the URL; and through JwksCache, a bad answer keeps the last good keys.

Each fetch here gets a short deadline (1 s) instead of the default 5 s; how long a refusal
took is asserted against it."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from regauth.federation.jwks import MAX_JWKS_BYTES
from regauth.federation.jwks import JwksCache
from regauth.federation.jwks import JwksError
from regauth.federation.jwks import parse_jwks
from regauth.ops.jwks_fetch import TIMEOUT
from regauth.ops.jwks_fetch import fetch_url
from regauth.ops.jwks_fetch import fetcher_for
from regauth.policy.model import FederatedIssuer
from tests.support.oidc_issuer import OidcIssuer
from tests.support.oidc_issuer import TestCa
from tests.unit.helpers import FakeClock

DEADLINE = 1.0
ALGS = ("RS256", "ES256")


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as started:
        yield started


def _context(issuer: OidcIssuer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(issuer.ca_path))


def _fetch(issuer: OidcIssuer, url: str | None = None) -> bytes:
    return fetch_url(url or issuer.jwks_uri, _context(issuer), timeout=DEADLINE)


def _refused(issuer: OidcIssuer, url: str | None = None) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(JwksError) as e:
        _fetch(issuer, url)
    return str(e.value), time.monotonic() - started


def _federated(**kw: object) -> FederatedIssuer:
    fields: dict = {
        "name": "ci",
        "issuer": "https://127.0.0.1",
        "audience": "regauth",
        "jwks_uri": None,
        "jwks_file": None,
        "ca_file": None,
        "algorithms": ALGS,
        "leeway": 60,
        "subject": "{sub}",
        "groups_claim": None,
        "max_token_age": 3600,
        "line": 1,
    }
    fields.update(kw)
    return FederatedIssuer(**fields)


def test_the_default_deadline_is_5_seconds():
    assert TIMEOUT == 5.0


def test_a_good_fetch(issuer):
    body = _fetch(issuer)
    assert json.loads(body) == issuer.jwks()
    assert set(parse_jwks(body, ALGS).keys) == set(issuer.kids)
    assert issuer.requests[issuer.jwks_path] == 1


def test_fetcher_for_a_jwks_uri_trusts_the_issuers_ca_file(issuer):
    fetch = fetcher_for(_federated(jwks_uri=issuer.jwks_uri, ca_file=str(issuer.ca_path)))
    assert json.loads(fetch()) == issuer.jwks()


def test_an_untrusted_certificate_is_refused(issuer):
    # The system's trust store does not know the test CA.
    fetch = fetcher_for(_federated(jwks_uri=issuer.jwks_uri))
    with pytest.raises(JwksError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch()
    other = TestCa(issuer.directory / "other-ca")
    with pytest.raises(JwksError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_url(issuer.jwks_uri, ssl.create_default_context(cafile=str(other.path)), 1.0)
    assert issuer.requests[issuer.jwks_path] == 0  # no request went out


def test_only_https_urls(issuer):
    for url in (f"http://127.0.0.1:{issuer.port}/jwks", "file:///etc/passwd", "https:///jwks"):
        with pytest.raises(JwksError, match="not an https URL"):
            fetch_url(url, _context(issuer), DEADLINE)


def test_a_hanging_endpoint_is_refused_at_the_deadline(issuer):
    issuer.jwks_mode = "hang"
    message, took = _refused(issuer)
    assert issuer.jwks_uri in message
    assert DEADLINE * 0.9 <= took < DEADLINE + 1.0, took
    assert issuer.requests[issuer.jwks_path] == 1


def test_a_trickle_past_the_deadline_is_cut(issuer):
    issuer.trickle_interval = 0.05  # every read gets a byte well within any read timeout
    issuer.jwks_mode = "trickle"
    message, took = _refused(issuer)
    assert message == f"{issuer.jwks_uri}: no complete key set within 1 s"
    assert DEADLINE * 0.9 <= took < DEADLINE + 1.0, took


def test_a_redirect_is_refused_and_never_followed(issuer):
    issuer.jwks_mode = "redirect"
    message, _ = _refused(issuer)
    assert message == f"{issuer.jwks_uri}: redirected (302); redirects are not followed"
    assert sum(issuer.redirected.values()) == 0


def test_a_500_is_refused(issuer):
    issuer.jwks_mode = "error"
    message, _ = _refused(issuer)
    assert message == f"{issuer.jwks_uri}: answered 500"


def test_connection_refused(issuer):
    issuer.jwks_mode = "down"
    message, took = _refused(issuer)
    assert message.startswith(f"{issuer.jwks_uri}: ConnectionRefusedError")
    assert took < DEADLINE


@pytest.mark.parametrize("declared", [False, True])
def test_50_mib_are_cut_at_256_kib_quickly_in_little_memory(issuer, declared):
    issuer.jwks_mode = "huge"
    issuer.huge_content_length = declared
    tracemalloc.start()
    try:
        message, took = _refused(issuer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == f"{issuer.jwks_uri}: the key set is larger than {MAX_JWKS_BYTES} bytes"
    assert took < DEADLINE, took
    # The client's buffer (256 KiB and one chunk) and the server's 64 KiB chunks, not 50 MiB.
    assert peak < 2 * 1024 * 1024, peak


def test_garbage_is_a_parse_error_and_the_cache_keeps_the_last_good_keys(issuer):
    clock = FakeClock()
    cache = JwksCache(issuer.jwks_uri, lambda: _fetch(issuer), ALGS, clock=clock)
    cache.refresh()
    good = cache.status()
    assert set(good.keys) == set(issuer.kids) and good.last_error is None
    for mode, error in [
        ("garbage", "the key set is not JSON"),
        ("redirect", "redirected (302)"),
        ("huge", "larger than 262144 bytes"),
        ("error", "answered 500"),
        ("down", "ConnectionRefusedError"),
    ]:
        issuer.jwks_mode = mode
        clock.advance(3600)
        assert cache.find(issuer.current_kid, "RS256") is not None, mode
        status = cache.status()
        assert error in (status.last_error or ""), (mode, status.last_error)
        assert status.keys == good.keys and status.fetched_at == good.fetched_at
    issuer.jwks_mode = "ok"
    clock.advance(3600)
    cache.find(issuer.current_kid, "RS256")
    assert cache.status().last_error is None and cache.status().fetched_at == clock.now


class HeaderTrickler:
    """A TLS server that answers `200` and then its header lines one byte at a time, each byte
    within any read timeout, never ending the header block."""

    def __init__(self, ca: TestCa, interval: float = 0.05) -> None:
        cert, key = ca.server_certificate("trickler")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.interval = interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\n")
                # Bounded, so that a client without a whole-fetch deadline fails, not hangs.
                ends = time.monotonic() + 8
                while not self.stop.wait(self.interval) and time.monotonic() < ends:
                    tls.sendall(b"X")
        except OSError:
            pass  # the client hung up: the point

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


def test_headers_trickled_past_the_deadline_are_cut(tmp_path: Path):
    ca = TestCa(tmp_path / "ca")
    server = HeaderTrickler(ca)
    url = f"https://127.0.0.1:{server.port}/jwks"
    started = time.monotonic()
    try:
        with pytest.raises(JwksError) as e:
            fetch_url(url, ssl.create_default_context(cafile=str(ca.path)), DEADLINE)
    finally:
        server.close()
    took = time.monotonic() - started
    assert str(e.value) == f"{url}: no complete key set within 1 s"
    assert took < DEADLINE + 1.0, took


def test_a_jwks_file(tmp_path: Path, issuer):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    fetch = fetcher_for(_federated(jwks_file=str(path)))
    assert json.loads(fetch()) == issuer.jwks()
    path.write_bytes(b" " * (MAX_JWKS_BYTES + 1))
    with pytest.raises(JwksError, match=str(path)):
        fetch()
    path.unlink()
    with pytest.raises(JwksError, match=str(path)):
        fetch()
    with pytest.raises(JwksError):
        fetcher_for(_federated(jwks_file=str(tmp_path)))()  # a directory


def test_a_slow_name_lookup_is_given_up_on_at_the_deadline() -> None:
    """Resolution and connect come before any socket the read deadline can shut: `within`
    bounds the whole fetch (a resolver that takes 8 s must not hold a login worker)."""
    import time

    from regauth.ops.jwks_fetch import within

    started = time.monotonic()
    with pytest.raises(JwksError, match="within 0.3 s"):
        within(0.3, lambda: time.sleep(3) or b"{}", "https://slow.test/jwks")
    assert time.monotonic() - started < 1.0
    assert within(1.0, lambda: b'{"keys": []}', "x") == b'{"keys": []}'
    with pytest.raises(JwksError, match="boom"):
        within(1.0, lambda: (_ for _ in ()).throw(JwksError("boom")), "x")
