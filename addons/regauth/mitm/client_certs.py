"""Client certificates (mutual TLS) as identities: the adapter for `regauth.mtls`.

mitmproxy asks every TLS client for a certificate (`request_client_cert`, set by the launcher)
and accepts whatever comes (its verify callback accepts all), so nothing is trusted here until
`regauth.mtls.identity.verify_client_chain` says so. Life of a connection:
- `tls_established_client`: keep the chain the client presented (DER, leaf first). On a resumed
  TLS session OpenSSL has no chain, only the leaf the session remembers: that is kept.
- `requestheaders` (before the request handler): verify the chain against the client trust of
  the snapshot this request is decided with, cached per connection and snapshot (a reload with
  a new deny list re-verifies every open connection at its next request), and leave the
  identity or the refusal in the flow's metadata for `request_handler.request_view`.
- `client_disconnected`: forget the connection.
"""

from __future__ import annotations

import datetime as dt
import logging

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


class ClientCertificates:
    def __init__(self, config: ConfigLoader) -> None:
        self.config = config
        self._chains: dict[str, tuple[bytes, ...]] = {}  # client connection id → chain
        self._verdicts: dict[str, tuple[ClientTrust | None, Verdict]] = {}

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
            self._chains[data.conn.id] = chain

    def client_disconnected(self, client: connection.Client) -> None:
        self._chains.pop(client.id, None)
        self._verdicts.pop(client.id, None)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        chain = self._chains.get(flow.client_conn.id)
        if chain is None:
            return
        verdict = self._verdict(flow.client_conn.id, chain)
        if isinstance(verdict, ClientCertificate):
            flow.metadata[CLIENT_CERTIFICATE] = verdict
        else:
            flow.metadata[CLIENT_CERTIFICATE_REFUSED] = verdict.reason

    def _verdict(self, conn_id: str, chain: tuple[bytes, ...]) -> Verdict:
        active = self.config.active
        trust = active.runtime.client_trust if active is not None else None
        cached = self._verdicts.get(conn_id)
        now = dt.datetime.now(dt.UTC)
        if cached is not None and cached[0] is trust:
            known = cached[1]
            # A connection may outlive its certificate: expiry is checked at every request.
            if not isinstance(known, ClientCertificate) or now.timestamp() < known.not_after:
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
        self._verdicts[conn_id] = (trust, verdict)
        return verdict
