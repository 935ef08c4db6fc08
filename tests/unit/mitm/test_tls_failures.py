"""Failed client TLS handshakes reach the exchange log (`regauth.mitm.tls_failures`): a record of
kind `tls` with the cause, the server name, the client's TLS library and the CA file to trust;
nothing for a connection that never sent a ClientHello (a TCP health check). Real clients:
tests/integration/test_tls_failures.py."""

from __future__ import annotations

from types import SimpleNamespace

from mitmproxy.test import tflow

from regauth.mitm.tls_failures import TlsFailures
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running

GO = [0xC02B, 0xC02F, 0x009C, 0x1301, 0x1302, 0x1303]


def _addon(harness) -> TlsFailures:  # type: ignore[no-untyped-def]
    [addon] = [a for a in harness.tctx.master.addons.chain if isinstance(a, TlsFailures)]
    return addon


def _client(sni: str | None = "regauth.test"):  # type: ignore[no-untyped-def]
    conn = tflow.tclient_conn()
    conn.peername = ("10.0.0.7", 51000)
    conn.sockname = ("127.0.0.1", 5443)
    conn.sni = sni
    conn.alpn_offers = [b"h2", b"http/1.1"]
    return conn


@run
async def test_a_failed_handshake_is_recorded(write_policy, certs_dir, tmp_path) -> None:
    log = tmp_path / "exchange.jsonl"
    async with running(write_policy(), certs_dir, log) as harness:
        addon = _addon(harness)
        conn = _client()
        addon.tls_clienthello(
            SimpleNamespace(
                context=SimpleNamespace(client=conn), client_hello=SimpleNamespace(cipher_suites=GO)
            )
        )
        conn.error = (
            "The client does not trust the proxy's certificate for regauth.test "
            "(sslv3 alert bad certificate)"
        )
        addon.tls_failed_client(SimpleNamespace(conn=conn))
        [record] = harness.records()
    assert record["kind"] == "tls" and record["client"] == "10.0.0.7:51000"
    assert record["error"] == conn.error
    assert record["tls"] == {
        "cause": "untrusted",
        "sni": "regauth.test",
        "alpn": ["h2", "http/1.1"],
        "library": "go",
        "listen": "127.0.0.1:5443",
        "ca": str((certs_dir / "ca.crt").absolute()),
    }
    assert record["conversation"]


@run
async def test_connections_without_a_client_hello_are_not_recorded(
    write_policy, certs_dir, tmp_path
) -> None:
    log = tmp_path / "exchange.jsonl"
    async with running(write_policy(), certs_dir, log) as harness:
        addon = _addon(harness)
        early = _client(sni=None)
        early.error = "connection closed early"  # a TCP health check
        addon.tls_failed_client(SimpleNamespace(conn=early))
        silent = _client(sni=None)
        silent.error = "connection closed"
        addon.tls_failed_client(SimpleNamespace(conn=silent))
        ok = _client()
        addon.tls_clienthello(
            SimpleNamespace(
                context=SimpleNamespace(client=ok), client_hello=SimpleNamespace(cipher_suites=GO)
            )
        )
        addon.tls_established_client(SimpleNamespace(conn=ok))
        assert addon._suites == {}
        assert not log.exists() or harness.records() == []
