"""regauth.mitm.client_certs: the chain a TLS client presented becomes the verdict each request
on its connection is decided with, re-checked when the trust snapshot changes or the
certificate expires."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from cryptography import x509
from mitmproxy import certs as mcerts
from mitmproxy.test import tflow

from regauth.mitm.client_certs import CLIENT_CERTIFICATE
from regauth.mitm.client_certs import CLIENT_CERTIFICATE_REFUSED
from regauth.mitm.client_certs import ClientCertificates
from regauth.mtls.identity import parse_subject
from regauth.mtls.revocations import Revocations
from regauth.ops import client_ca


def _setup(tmp_path, ttl=dt.timedelta(minutes=30)):
    client_ca.init_client_ca(tmp_path)
    issued = client_ca.issue_client_certificate(tmp_path, parse_subject("build", "b1"), ttl)
    trust = client_ca.load_client_trust(tmp_path)
    config = SimpleNamespace(active=SimpleNamespace(runtime=SimpleNamespace(client_trust=trust)))
    addon = ClientCertificates(config)  # type: ignore[arg-type]
    flow = tflow.tflow()
    cert = mcerts.Cert(x509.load_pem_x509_certificate(issued.cert_pem))
    flow.client_conn.certificate_list = [cert]
    addon.tls_established_client(SimpleNamespace(conn=flow.client_conn, ssl_conn=None))
    return addon, config, flow, trust, issued


def test_a_good_certificate_is_the_flows_identity(tmp_path):
    addon, _, flow, _, issued = _setup(tmp_path)
    addon.requestheaders(flow)
    assert flow.metadata[CLIENT_CERTIFICATE].serial == issued.serial
    assert CLIENT_CERTIFICATE_REFUSED not in flow.metadata


def test_a_new_deny_list_applies_to_open_connections(tmp_path):
    addon, config, flow, trust, issued = _setup(tmp_path)
    addon.requestheaders(flow)
    config.active.runtime.client_trust = client_ca.ClientTrust(
        trust.ca, Revocations(builds=frozenset(["b1"]))
    )
    second = tflow.tflow()
    second.client_conn = flow.client_conn  # the next request on the same connection
    addon.requestheaders(second)
    assert "build b1 are revoked" in second.metadata[CLIENT_CERTIFICATE_REFUSED]
    assert CLIENT_CERTIFICATE not in second.metadata


def test_without_a_client_ca_a_certificate_is_refused_not_ignored(tmp_path):
    addon, config, flow, _, _ = _setup(tmp_path)
    config.active.runtime.client_trust = None
    addon.requestheaders(flow)
    assert "no client CA" in flow.metadata[CLIENT_CERTIFICATE_REFUSED]


def test_no_certificate_no_verdict_and_disconnect_forgets(tmp_path):
    addon, _, flow, _, _ = _setup(tmp_path)
    other = tflow.tflow()  # another connection, which presented nothing
    addon.requestheaders(other)
    assert CLIENT_CERTIFICATE not in other.metadata
    assert CLIENT_CERTIFICATE_REFUSED not in other.metadata
    addon.requestheaders(flow)
    addon.client_disconnected(flow.client_conn)
    assert addon._chains == {} and addon._presented == {} and addon._users == {}


def test_one_verification_per_certificate_across_connections(tmp_path, monkeypatch):
    from regauth.mitm import client_certs

    addon, _, flow, _, issued = _setup(tmp_path)
    calls = []
    real = client_certs.verify_client_chain
    monkeypatch.setattr(client_certs, "verify_client_chain", lambda *a: calls.append(1) or real(*a))
    addon.requestheaders(flow)
    for _ in range(5):  # five more connections presenting the same certificate
        other = tflow.tflow()
        other.client_conn.certificate_list = flow.client_conn.certificate_list
        addon.tls_established_client(SimpleNamespace(conn=other.client_conn, ssl_conn=None))
        addon.requestheaders(other)
        assert other.metadata[CLIENT_CERTIFICATE].serial == issued.serial
    assert len(calls) == 1


def test_a_resumed_session_keeps_its_leaf(tmp_path):
    addon, _, flow, _, issued = _setup(tmp_path)
    leaf = x509.load_pem_x509_certificate(issued.cert_pem)
    resumed = tflow.tflow()
    resumed.client_conn.certificate_list = []
    ssl_conn = SimpleNamespace(get_peer_certificate=lambda as_cryptography: leaf)
    addon.tls_established_client(SimpleNamespace(conn=resumed.client_conn, ssl_conn=ssl_conn))
    addon.requestheaders(resumed)
    assert resumed.metadata[CLIENT_CERTIFICATE].serial == issued.serial
