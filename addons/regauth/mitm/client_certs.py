"""Client certificates (mutual TLS) as identities: the adapter for `regauth.mtls`.

mitmproxy asks every TLS client for a certificate (`request_client_cert`, set by the launcher)
and accepts whatever comes (its verify callback accepts all), so nothing is trusted here until
`regauth.mtls.identity.verify_client_chain` says so. Life of a connection:
- `tls_established_client`: keep the chain the client presented (DER, leaf first). On a resumed
  TLS session OpenSSL has no chain, only the leaf the session remembers: that is kept.
- `requestheaders` (before the request handler): verify the chain against the client trust of
  the snapshot this request is decided with, cached per chain and snapshot across connections
  (a reload with a new deny list re-verifies every open connection at its next request), and
  leave the identity or the refusal in the flow's metadata for `request_handler.request_view`.
- `client_disconnected`: forget the connection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import OrderedDict

from cryptography.hazmat.primitives.serialization import Encoding
from mitmproxy import connection
from mitmproxy import http
from mitmproxy import tls

from regauth.mitm.config_loader import ConfigLoader
from regauth.mtls.identity import MAX_CHAIN_CERTIFICATES
from regauth.mtls.identity import CertificateRefused
from regauth.mtls.identity import ClientCertificate
from regauth.mtls.identity import verify_client_chain
from regauth.ops.client_ca import ClientTrust

logger = logging.getLogger(__name__)

# flow.metadata keys read by request_handler.request_view.
CLIENT_CERTIFICATE = "regauth.client_certificate"
CLIENT_CERTIFICATE_REFUSED = "regauth.client_certificate_refused"

Verdict = ClientCertificate | CertificateRefused


# Verdicts are cached per presented chain (its SHA-256), across connections: a build opens many
# connections with one certificate, and verifying costs about 0.5 ms of CPU. Bounded (LRU); a
# refusal is verified again after REFUSAL_TTL (a certificate not valid *yet* becomes valid).
MAX_CACHED = 4096
REFUSAL_TTL = 60.0


class ClientCertificates:
    def __init__(self, config: ConfigLoader) -> None:
        self.config = config
        self._chains: dict[str, bytes] = {}  # client connection id → digest of its chain
        self._presented: dict[bytes, tuple[bytes, ...]] = {}  # digest → chain, while in use
        self._users: dict[bytes, int] = {}  # digest → open connections presenting it
        self._verdicts: OrderedDict[bytes, tuple[ClientTrust | None, float, Verdict]] = (
            OrderedDict()
        )

    def tls_established_client(self, data: tls.TlsData) -> None:
        chain = tuple(
            c.to_cryptography().public_bytes(Encoding.DER)
            for c in data.conn.certificate_list[: MAX_CHAIN_CERTIFICATES + 1]
        )
        if not chain and data.ssl_conn is not None:
            # A resumed session: no certificates were sent, the session remembers the leaf.
            leaf = data.ssl_conn.get_peer_certificate(as_cryptography=True)
            if leaf is not None:
                chain = (leaf.public_bytes(Encoding.DER),)
        if chain:
            digest = hashlib.sha256(b"".join(len(c).to_bytes(4, "big") + c for c in chain)).digest()
            self._chains[data.conn.id] = digest
            self._presented[digest] = chain
            self._users[digest] = self._users.get(digest, 0) + 1

    def client_disconnected(self, client: connection.Client) -> None:
        digest = self._chains.pop(client.id, None)
        if digest is not None:
            left = self._users.get(digest, 1) - 1
            if left <= 0:
                self._users.pop(digest, None)
                self._presented.pop(digest, None)
            else:
                self._users[digest] = left

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        digest = self._chains.get(flow.client_conn.id)
        if digest is None:
            return
        verdict = self._verdict(digest, self._presented[digest])
        if isinstance(verdict, ClientCertificate):
            flow.metadata[CLIENT_CERTIFICATE] = verdict
        else:
            flow.metadata[CLIENT_CERTIFICATE_REFUSED] = verdict.reason

    def _verdict(self, digest: bytes, chain: tuple[bytes, ...]) -> Verdict:
        active = self.config.active
        trust = active.runtime.client_trust if active is not None else None
        now = dt.datetime.now(dt.UTC)
        stamp = now.timestamp()
        cached = self._verdicts.get(digest)
        if cached is not None and cached[0] is trust:
            known, at = cached[2], cached[1]
            # A connection may outlive its certificate: expiry is checked at every request.
            if isinstance(known, ClientCertificate):
                if stamp < known.not_after:
                    self._verdicts.move_to_end(digest)
                    return known
            elif stamp - at < REFUSAL_TTL:
                return known
        verdict: Verdict
        if trust is None:
            verdict = CertificateRefused(
                "regauth has no client CA (run `regauth certs`), so no certificate is an identity"
            )
        else:
            try:
                verdict = verify_client_chain(chain, trust.ca, trust.revocations, now)
            except CertificateRefused as e:
                verdict = e
        self._verdicts[digest] = (trust, stamp, verdict)
        self._verdicts.move_to_end(digest)
        while len(self._verdicts) > MAX_CACHED:
            self._verdicts.popitem(last=False)
        return verdict
