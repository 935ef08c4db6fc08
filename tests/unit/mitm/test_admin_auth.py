"""The admin token check shared by the admin listener's writes."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado import httpclient
from tornado import netutil
from tornado import web
from tornado.httpserver import HTTPServer

from regauth.mitm.admin_auth import admin_token_path
from regauth.mitm.admin_auth import authorize


class _Write(web.RequestHandler):
    def initialize(self, certs) -> None:
        self.certs = certs

    def post(self) -> None:
        if authorize(self, self.certs, "the test write"):
            self.finish(json.dumps({"ok": True}))


def _post(certs, authorization=None):
    async def run():
        app = web.Application([(r"/w", _Write, {"certs": certs})])
        [sock] = netutil.bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets([sock])
        headers = {"Authorization": authorization} if authorization else {}
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{sock.getsockname()[1]}/w",
                method="POST",
                body="",
                headers=headers,
                raise_error=False,
            )
            return response.code, response.headers, json.loads(response.body)
        finally:
            server.stop()

    return asyncio.run(run())


def test_writes_are_off_without_the_admin_token_file(tmp_path):
    code, _, body = _post(tmp_path, "Bearer anything")
    assert code == 404
    assert body["error"].startswith("the test write is off (no ")


@pytest.mark.parametrize("given", [None, "Bearer wrong", "Basic c2VjcmV0", "Bearer"])
def test_a_missing_or_wrong_token_gets_401(tmp_path, given):
    path = admin_token_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("s3cret\n")
    code, headers, body = _post(tmp_path, given)
    assert code == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="regauth admin"'
    assert body == {"error": "the admin token is required"}


def test_an_empty_token_file_lets_nobody_in(tmp_path):
    path = admin_token_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    assert _post(tmp_path, "Bearer ")[0] == 401


def test_the_admin_token_is_accepted(tmp_path):
    path = admin_token_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("s3cret\n")
    code, _, body = _post(tmp_path, "bearer  s3cret ")
    assert (code, body) == (200, {"ok": True})
