"""Failed TLS handshakes in words (`regauth.ops.tls_failures`): the cause from mitmproxy's error
text, and the client's TLS library from its ClientHello's cipher suites. The real clients'
ClientHellos are tests/integration/test_tls_failures.py."""

from __future__ import annotations

import pytest

from regauth.ops.tls_failures import cause
from regauth.ops.tls_failures import library

# Go 1.22's crypto/tls (docker, podman, skopeo, containerd): TLS 1.3 suites last, no SCSV.
GO = [0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC009, 0xC013, 0xC00A, 0xC014]
GO += [0x009C, 0x009D, 0x002F, 0x0035, 0xC012, 0x000A, 0x1301, 0x1302, 0x1303]
# curl with OpenSSL 3: TLS 1.3 suites first, the renegotiation SCSV last.
OPENSSL = [0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0x009F, 0xCCA9, 0xCCA8, 0xC02B, 0x00FF]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "The client does not trust the proxy's certificate for localhost "
            "(tlsv1 alert unknown ca)",
            "untrusted",
        ),
        (
            "The client does not trust the proxy's certificate for regauth.test "
            "(sslv3 alert bad certificate)",
            "untrusted",
        ),
        (
            "Client and mitmproxy cannot agree on a TLS version to use. You may need to "
            "adjust mitmproxy's tls_version_client_min option.",
            "version",
        ),
        (
            "The client disconnected during the handshake. If this happens consistently for "
            "localhost, this may indicate that the client does not trust the proxy's certificate.",
            "closed",
        ),
        ("Cannot parse ClientHello: b'GET / HTTP/1.1'", "other"),
    ],
)
def test_causes(error: str, expected: str) -> None:
    assert cause(error) == expected


def test_libraries() -> None:
    assert library(GO) == "go"
    assert library(OPENSSL) == "openssl"
    assert library([]) is None
    assert library([0x1301, 0xC02B]) is None  # TLS 1.3 first without the SCSV: neither
    assert library([0x1301]) is None  # nothing before the TLS 1.3 suites to tell
