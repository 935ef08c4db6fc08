"""Fetching a federated issuer's JWK Set (`federation.jwks.JwksCache` calls the result).

Bounded like every input: https only with the system's trust or the issuer's `ca_file`
(verified, never `CERT_NONE`), no redirect followed (a JWKS that redirects elsewhere is an
error: no URL but the policy's is ever fetched), no proxy from the environment, the whole fetch
within `timeout` seconds (a server that trickles a byte at a time is cut at the deadline, not
per read), at most `MAX_JWKS_BYTES` read. A key set in a file is read with the same size bound.
Raises `JwksError` with a message naming the source, never the body.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from regauth.federation.jwks import MAX_JWKS_BYTES
from regauth.federation.jwks import Fetch
from regauth.federation.jwks import JwksError
from regauth.policy.model import FederatedIssuer
from regauth.policy.reader import read_regular_file

USER_AGENT = "regauth-jwks"
TIMEOUT = 5.0  # seconds for the whole fetch
CHUNK = 16 * 1024


def fetch_url(url: str, context: ssl.SSLContext, timeout: float = TIMEOUT) -> bytes:
    """GET `url` within the bounds above; the body of a 200. http.client directly: nothing
    (redirects, proxies, cookies) is added to the one request the policy names."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise JwksError(f"{url}: not an https URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=context, timeout=timeout
    )
    # The socket timeout bounds each read, not the TLS handshake and headers as a whole (a
    # server can trickle header bytes forever): at the deadline the watchdog shuts the socket,
    # which ends whatever read is blocked on it.
    watchdog = threading.Timer(timeout, _cut, (connection,))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
        response = connection.getresponse()
        if 300 <= response.status < 400:
            raise JwksError(f"{url}: redirected ({response.status}); redirects are not followed")
        if response.status != 200:
            raise JwksError(f"{url}: answered {response.status}")
        body = bytearray()
        while len(body) <= MAX_JWKS_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JwksError(f"{url}: no complete key set within {timeout:g} s")
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_JWKS_BYTES:
            raise JwksError(f"{url}: the key set is larger than {MAX_JWKS_BYTES} bytes")
        return bytes(body)
    except JwksError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as e:
        if time.monotonic() >= deadline:
            raise JwksError(f"{url}: no complete key set within {timeout:g} s") from None
        raise JwksError(f"{url}: {type(e).__name__}: {e}"[:300]) from None
    finally:
        watchdog.cancel()
        connection.close()


def _cut(connection: http.client.HTTPSConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            # The plain socket's shutdown: SSLSocket.shutdown would unwrap the TLS object
            # under the thread blocked in a read on it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def fetcher_for(issuer: FederatedIssuer) -> Fetch:
    """The blocking fetch of `issuer`'s key set (its `jwks_uri` or `jwks_file`)."""
    if issuer.jwks_file is not None:
        path = Path(issuer.jwks_file)

        def read() -> bytes:
            try:
                data = read_regular_file(path, MAX_JWKS_BYTES)
            except (OSError, ValueError) as e:
                raise JwksError(f"{path}: {e}") from None
            if len(data) > MAX_JWKS_BYTES:
                raise JwksError(f"{path}: the key set is larger than {MAX_JWKS_BYTES} bytes")
            return data

        return read
    assert issuer.jwks_uri is not None
    url = issuer.jwks_uri
    context = ssl.create_default_context(cafile=issuer.ca_file)
    return lambda: within(TIMEOUT + 1.0, lambda: fetch_url(url, context), url)


def within(seconds: float, fetch: Fetch, what: str) -> bytes:
    """`fetch()` on a thread of its own, given up after `seconds`: name resolution and connect
    come before any socket the read deadline can shut, and a slow resolver must not hold a
    login worker. A fetch given up on finishes (or fails) on its daemon thread, unseen."""
    outcome: list[bytes | BaseException] = []

    def run() -> None:
        try:
            outcome.append(fetch())
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    worker = threading.Thread(target=run, name="regauth jwks fetch", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        raise JwksError(f"{what}: no complete key set within {seconds:g} s (name lookup, connect)")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result
