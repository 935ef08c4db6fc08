"""Client-certificate identity (mutual TLS, RFC 8705 §2's "PKI method" without the OAuth
client): who a verified TLS client certificate says the client is.

`identity` names the subjects (`regauth:build:ID`, `regauth:account:NAME`) and verifies a
presented chain against regauth's client CA (never the CA of its server certificate) and the
revocation list; `revocations` reads that list. Sans-IO: certificates and the list come in as
bytes, the adapters (`mitm/client_certs.py`) and the key files (`ops/client_ca.py`) do the I/O.
"""
