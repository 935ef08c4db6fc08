"""TLS handshakes that failed, in words: why (from the TLS library's error) and which kind of
client it was (from its ClientHello), for the exchange log's `tls` records.

A client that does not trust regauth's CA never sends an HTTP request, so without these records
the log shows nothing of it (or only the challenge before the token request that never came).
mitmproxy reports the failure with OpenSSL's words for the alert the client sent
(`mitmproxy.proxy.layers.tls.ClientTLSLayer.on_handshake_error`): a client that rejects the
certificate sends `unknown_ca` (OpenSSL clients: curl) or `bad_certificate` (Go's crypto/tls:
docker, podman, buildah, skopeo, containerd, BuildKit, for an unknown authority and for a name
the certificate does not cover alike), RFC 8446 §6.2.

Which client: no HTTP request means no User-Agent, so the ClientHello's cipher suites tell the
TLS library apart. OpenSSL lists the TLS 1.3 suites first and adds the renegotiation SCSV
(0x00FF, RFC 5746 §3.3); Go's crypto/tls never sends the SCSV and lists the TLS 1.3 suites last
(`crypto/tls/handshake_client.go`, makeClientHello). Anything else is `None`: unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from typing import Literal

Cause = Literal["untrusted", "version", "closed", "other"]
Library = Literal["go", "openssl"]

RENEGOTIATION_SCSV: Final = 0x00FF
TLS13_SUITES: Final = frozenset({0x1301, 0x1302, 0x1303, 0x1304, 0x1305})
# mitmproxy's words for a handshake that ended before a ClientHello: a TCP health check or a
# port scan, not a client. Not recorded.
CLOSED_EARLY: Final = "connection closed early"


def cause(error: str) -> Cause:
    """Why the handshake failed, from mitmproxy's error text: `untrusted` (the client
    rejected regauth's certificate: its CA, or a name it does not cover), `version` (no TLS
    version in common), `closed` (the client hung up mid-handshake, which some clients do
    instead of sending an alert) or `other`."""
    text = error.lower()
    if "unknown ca" in text or "bad certificate" in text or "certificate unknown" in text:
        return "untrusted"
    if "tls version" in text or "unsupported protocol" in text:
        return "version"
    if "disconnected during the handshake" in text or text == "connection closed":
        return "closed"
    return "other"


def library(cipher_suites: Sequence[int]) -> Library | None:
    """The TLS library of a ClientHello offering `cipher_suites` (IANA numbers, in the
    client's order): `go`, `openssl`, or None when neither fits (see the module docstring)."""
    if not cipher_suites:
        return None
    if RENEGOTIATION_SCSV in cipher_suites:
        return "openssl"
    tls13 = [i for i, s in enumerate(cipher_suites) if s in TLS13_SUITES]
    if tls13 and tls13[-1] == len(cipher_suites) - 1 and tls13[0] > 0:
        return "go"
    return None
