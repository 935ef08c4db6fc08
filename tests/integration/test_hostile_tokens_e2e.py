"""The nested-JSON token of issue 8 against a real regauth and docker-registry (enforce mode).

`Bearer b64url('{"alg":"ES256"}').b64url('[' x 1500 + ']' x 1500).x` (about 4 KB) got a 500
`regauth internal error` and a console traceback per request, on registry routes and as a
refresh token; it must get 401 invalid_token and invalid_grant, and be logged as malformed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path

from regauth.ops.registry_process import RegistryProcess
from tests.support import httpclient
from tests.support.proxy import ProxyProcess


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


NESTED = _b64url(b'{"alg":"ES256"}') + "." + _b64url(b"[" * 1500 + b"]" * 1500) + ".x"


def test_the_nested_json_token_is_refused_cleanly(
    make_registry: Callable[..., RegistryProcess],
    make_proxy: Callable[..., ProxyProcess],
    write_policy: Callable[..., Path],
) -> None:
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)

    reply = httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/public/app/manifests/1",
        {"Authorization": f"Bearer {NESTED}"},
    )
    assert reply.status == 401, reply.body
    challenge = reply.header("WWW-Authenticate") or ""
    assert 'error="invalid_token"' in challenge, challenge
    assert reply.json()["errors"][0]["code"] == "UNAUTHORIZED"

    refresh = httpclient.post_token(
        proxy.port,
        proxy.ca,
        {
            "grant_type": "refresh_token",
            "refresh_token": NESTED,
            "client_id": "e2e",
            "service": "regauth-test",
        },
    )
    assert refresh.status in (400, 401), refresh.body  # RFC 6749 §5.2 says 400: see the report
    assert refresh.json()["error"] == "invalid_grant"

    # Still serving, no traceback, and every log line parses, the token described as malformed.
    assert httpclient.request(proxy.port, proxy.ca, "GET", "/v2/").status == 401
    assert "Traceback" not in proxy.output()
    records = [json.loads(line) for line in proxy.log_path.read_text().splitlines()]
    registry_records = [r for r in records if r.get("path") == "/v2/public/app/manifests/1"]
    assert registry_records and re.search("nested deeper", json.dumps(registry_records[0]))
