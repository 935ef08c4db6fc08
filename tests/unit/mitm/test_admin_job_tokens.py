"""regauth.mitm.admin_job_tokens: `POST /job-tokens` on the admin listener (a real tornado
server on loopback, the handler as the admin listener mounts it)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from tornado import httpclient
from tornado import netutil
from tornado import web
from tornado.httpserver import HTTPServer

from regauth.logins.job_tokens import FileJobStore
from regauth.mitm.admin_auth import admin_token_path
from regauth.mitm.admin_job_tokens import JobTokensHandler
from tests.support.policies import policy_text
from tests.unit.helpers import build_runtime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(tmp_path_factory.mktemp("policy"), certs_dir, policy_text(password_hashes))


def _post(runtime, certs, store, body, secret=None):
    async def run():
        config = SimpleNamespace(active=SimpleNamespace(runtime=runtime))
        app = web.Application(
            [
                (
                    r"/job-tokens",
                    JobTokensHandler,
                    {"config": config, "store": lambda: store, "certs_dir": lambda: certs},
                )
            ]
        )
        [sock] = netutil.bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets([sock])
        port = sock.getsockname()[1]
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{port}/job-tokens",
                method="POST",
                body=body if isinstance(body, str) else json.dumps(body),
                headers=headers,
                raise_error=False,
            )
            return response.code, json.loads(response.body or b"{}")
        finally:
            server.stop()

    return asyncio.run(run())


def test_minting_is_off_until_the_admin_token_exists(runtime, tmp_path):
    code, body = _post(runtime, tmp_path, None, {"build": "b1", "scope": ["repository:a:pull"]})
    assert code == 404 and "minting is off" in body["error"]


def test_minting_with_the_admin_token(runtime, tmp_path):
    path = admin_token_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("s3cret\n")
    store = FileJobStore(tmp_path)
    request = {"build": "b1", "scope": ["repository:builds/b1:pull,push"], "ttl": "5m"}
    assert _post(runtime, tmp_path, store, request)[0] == 401
    assert _post(runtime, tmp_path, store, request, "wrong")[0] == 401
    code, body = _post(runtime, tmp_path, store, request, "s3cret")
    assert code == 200, body
    claims = runtime.verifier.verify_job(body["token"], runtime.issuer.job_audience)
    assert claims.subject == "regauth:build:b1" and body["username"] == "b1"
    assert [e.jti for e in store.entries()] == [claims.jti]
    for bad in (
        {"build": "../x", "scope": ["repository:a:pull"]},
        {"build": "b1", "account": "ci", "scope": ["repository:a:pull"]},
        {"build": "b1", "scope": []},
        {"build": "b1", "scope": ["repository:a:pull"], "ttl": "2d"},
        {"account": "mallory", "scope": ["repository:a:pull"]},
        "not json",
    ):
        assert _post(runtime, tmp_path, store, bad, "s3cret")[0] == 400, bad
