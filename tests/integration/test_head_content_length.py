"""A HEAD answered by regauth says the Content-Length its GET would send (issue 25, item 3;
RFC 9110 §8.6 and §9.3.2; distribution does the same), over HTTP/1.1 without desynchronizing
a keep-alive connection, and over HTTP/2."""

from __future__ import annotations

from tests.support import h2raw
from tests.support.dos import tls_socket


def _read_response(sock, head_only: bool) -> tuple[bytes, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return status.encode(), headers, rest[:length]


def test_head_has_the_gets_content_length(guarded):
    proxy = guarded("enforce").proxy
    target = "/v2/apps/x/manifests/1"
    sock = tls_socket(proxy.port, proxy.ca, alpn="http/1.1")
    try:
        host = f"Host: {proxy.netloc}\r\n"
        sock.sendall(f"GET {target} HTTP/1.1\r\n{host}\r\n".encode())
        status, get_headers, body = _read_response(sock, head_only=False)
        assert status.startswith(b"HTTP/1.1 401") and len(body) > 100
        # Two HEADs, then a GET, on the same connection: nothing is left unread between them.
        for _ in range(2):
            sock.sendall(f"HEAD {target} HTTP/1.1\r\n{host}\r\n".encode())
            status, headers, _ = _read_response(sock, head_only=True)
            assert status.startswith(b"HTTP/1.1 401")
            assert headers["content-length"] == str(len(body)) == get_headers["content-length"]
            assert headers["www-authenticate"] == get_headers["www-authenticate"]
        sock.sendall(f"GET {target} HTTP/1.1\r\n{host}\r\n".encode())
        status, _, again = _read_response(sock, head_only=False)
        assert status.startswith(b"HTTP/1.1 401") and again == body
    finally:
        sock.close()
    reply = h2raw.request(proxy.port, proxy.ca, "HEAD", target)
    assert reply.status == 401 and reply.body == b""
    assert reply.header("content-length") == str(len(body))
