"""Failed client TLS handshakes into the exchange log: the adapter for `regauth.ops.tls_failures`.

A client that does not trust regauth's CA gives up during the handshake and never sends a
request, so no flow and no exchange record would tell of it. Life of a connection:
- `tls_clienthello`: keep the cipher suites the client offered (to tell its TLS library),
  bounded per connection;
- `tls_established_client` / `client_disconnected`: forget them;
- `tls_failed_client`: write a record of kind `tls` (`ExchangeRecord.tls`: cause, SNI, ALPN,
  library, the listening address, the CA file to trust) to the recorder's exchange log.
  A connection closed before its ClientHello (a TCP health check, a port scan) is no client
  and is not written.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from pathlib import Path

from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import tls

from regauth.mitm.recorder import Recorder
from regauth.ops import tls_failures
from regauth.ops.conversations import new_id
from regauth.ops.exchange_record import TLS_KIND
from regauth.ops.exchange_record import ExchangeRecord
from regauth.ops.exchange_record import TlsRecord

MAX_PENDING = 10_000  # ClientHellos kept for handshakes still under way


def _address(address: tuple[object, ...] | None) -> str | None:
    if not address:
        return None
    return f"{address[0]}:{address[1]}"


class TlsFailures:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._suites: OrderedDict[str, tuple[int, ...]] = OrderedDict()  # connection id → suites

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        self._suites[data.context.client.id] = tuple(data.client_hello.cipher_suites)
        while len(self._suites) > MAX_PENDING:
            self._suites.popitem(last=False)

    def tls_established_client(self, data: tls.TlsData) -> None:
        self._suites.pop(data.conn.id, None)

    def client_disconnected(self, client: connection.Client) -> None:
        self._suites.pop(client.id, None)

    def tls_failed_client(self, data: tls.TlsData) -> None:
        conn = data.conn
        suites = self._suites.pop(conn.id, ())
        error = conn.error or ""
        if error == tls_failures.CLOSED_EARLY or not suites and not conn.sni:
            return  # no ClientHello: not a client
        log = self.recorder.exchange_log
        if log is None:
            return
        ca = Path(ctx.options.regauth_certs_dir).absolute() / "ca.crt"
        record = ExchangeRecord(
            time=dt.datetime.fromtimestamp(conn.timestamp_start, dt.UTC)
            if conn.timestamp_start
            else dt.datetime.now(dt.UTC),
            conversation=new_id(),
            client=_address(conn.peername),
            kind=TLS_KIND,
            error=error,
            tls=TlsRecord(
                cause=tls_failures.cause(error),
                sni=conn.sni,
                alpn=tuple(p.decode("ascii", "replace") for p in conn.alpn_offers),
                library=tls_failures.library(suites),
                listen=_address(conn.sockname),
                ca=str(ca),
            ),
        )
        log.write(record.to_json())
