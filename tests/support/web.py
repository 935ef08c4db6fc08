"""mitmweb's API as its users see it: REST calls with the web token, a websocket subscriber on
`/updates`, and a scan of everything mitmweb shows or exports for secrets.

mitmweb (tools/web/app.py, mitmproxy 12.3) accepts `Authorization: Bearer <token>` on every
handler and answers with a signed auth cookie; checking the token costs an argon2 hash
(~0.4 s), the cookie nothing, so WebApi sends the cookie once it has one. Requests other than
GET also need XSRF: tornado compares the `_mitmproxy_xsrf` cookie with the `X-XSRFToken`
header (a raw token of our choosing satisfies it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http.client
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection
from tornado.websocket import websocket_connect

# Content views a flow can be shown with (contentviews.registry.available_views(), plus
# regauth's `jwt`); `query` is hidden from mitmweb's menu but answered all the same.
ALL_VIEWS = (
    "auto",
    "dns",
    "graphql",
    "grpc",
    "hex dump",
    "hex stream",
    "http/3 frames",
    "image",
    "javascript",
    "json",
    "jwt",
    "mqtt",
    "msgpack",
    "multipart form",
    "protobuf",
    "query",
    "raw",
    "socket.io",
    "url-encoded",
    "viewcss",
    "wbxml",
    "xml/html",
    "zip archive",
)
# The views that render headers, forms, queries, JSON or bytes as text: enough for the
# snapshots taken while traffic runs (the last snapshot uses ALL_VIEWS).
TEXT_VIEWS = ("auto", "raw", "jwt", "json", "query", "url-encoded", "multipart form", "hex stream")


def web_token(output: str, web_port: int) -> str:
    """The mitmweb token `regauth serve --web` prints: `mitmweb: http://127.0.0.1:PORT/?token=T`."""
    match = re.search(rf"http://127\.0\.0\.1:{web_port}/\?token=(\S+)", output)
    if match is None:
        raise AssertionError(f"no mitmweb token in the output:\n{output}")
    return match.group(1)


@dataclass
class WebReply:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class WebApi:
    """mitmweb's REST API over one keep-alive connection (reopened when the server closes it)."""

    def __init__(self, port: int, token: str, timeout: float = 15) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout
        self.xsrf = secrets.token_hex(16)
        self.cookies = {"_mitmproxy_xsrf": self.xsrf}
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: object = None, raw: bytes | None = None
    ) -> WebReply:
        headers = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "X-XSRFToken": self.xsrf,
        }
        if len(self.cookies) == 1:  # no auth cookie yet
            headers["Authorization"] = f"Bearer {self.token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                reply = WebReply(response.status, response.read())
                for cookie in response.headers.get_all("Set-Cookie") or []:
                    name, _, value = cookie.split(";", 1)[0].partition("=")
                    if name.startswith("mitmproxy-auth-"):
                        self.cookies[name] = value
                if response.will_close:
                    self.close()
                return reply
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> WebReply:
        return self.request("GET", path)

    def get_json(self, path: str) -> object:
        reply = self.get(path)
        assert reply.status == 200, f"GET {path}: {reply.status} {reply.text[:300]}"
        return reply.json()

    def options(self) -> dict[str, dict]:
        return self.get_json("/options")  # type: ignore[return-value]

    def option(self, name: str) -> object:
        return self.options()[name]["value"]

    def put_options(self, update: dict[str, object]) -> WebReply:
        return self.request("PUT", "/options", update)

    def command(self, name: str, *arguments: str) -> WebReply:
        return self.request("POST", f"/commands/{name}", {"arguments": list(arguments)})

    def flows(self) -> list[dict]:
        return self.get_json("/flows")  # type: ignore[return-value]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def snapshot(self, views: Iterable[str] = TEXT_VIEWS) -> dict[str, str]:
        """Everything mitmweb would show or export right now, by where it came from:
        `/flows`, `/flows/dump`, `/events`, and for every flow its request and response
        `content.data` and each content view in `views`."""
        shown: dict[str, str] = {}
        flows = self.get("/flows")
        shown["/flows"] = flows.text
        shown["/flows/dump"] = self.get("/flows/dump").body.decode("latin-1")
        shown["/events"] = self.get("/events").text
        for flow in json.loads(flows.body):
            for part in ("request", "response"):
                if not flow.get(part):
                    continue
                base = f"/flows/{flow['id']}/{part}"
                shown[f"{base}/content.data"] = self.get(f"{base}/content.data").body.decode(
                    "latin-1"
                )
                for view in views:
                    path = f"{base}/content/{quote(view)}.json"
                    shown[path] = self.get(path).text
        return shown


class UpdatesSubscriber:
    """A websocket client of mitmweb's `/updates`, as the web UI is: collects every message
    (`flows/add`, `flows/update`, `events/add`, ...) in its own thread and event loop."""

    def __init__(self, port: int, token: str) -> None:
        self.url = f"ws://127.0.0.1:{port}/updates"
        self.token = token
        self.messages: list[str] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: WebSocketClientConnection | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), daemon=True, name="updates-subscriber"
        )

    def start(self, timeout: float = 15) -> UpdatesSubscriber:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError(f"no websocket connection to {self.url}")
        if self._error is not None:
            raise AssertionError(f"websocket {self.url}: {self._error!r}")
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._conn = await websocket_connect(
                HTTPRequest(self.url, headers={"Authorization": f"Bearer {self.token}"})
            )
        except Exception as e:  # reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while True:
            message = await self._conn.read_message()
            if message is None:
                return
            self.messages.append(
                message if isinstance(message, str) else message.decode("utf-8", "replace")
            )

    def send(self, message: dict) -> None:
        assert self._loop is not None and self._conn is not None
        conn = self._conn

        async def write() -> None:
            await conn.write_message(json.dumps(message))

        asyncio.run_coroutine_threadsafe(write(), self._loop).result(10)

    def parsed(self) -> list[dict]:
        return [json.loads(m) for m in self.messages]

    def close(self) -> None:
        if self._loop is not None and self._conn is not None:
            self._loop.call_soon_threadsafe(self._conn.close)
        self._thread.join(10)


# A JWT with a signature: base64url header and claims (both JSON objects, so `eyJ`) and a
# non-empty third segment. What regauth shows keeps header and claims and drops the signature.
SIGNED_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/]{4,}={0,2})")


def _basic_credentials(text: str) -> list[str]:
    """Basic credentials in `text`: base64 that decodes to something with a ':' in it."""
    found = []
    for match in _BASIC.finditer(text):
        try:
            decoded = base64.b64decode(match.group(1), validate=True)
        except (binascii.Error, ValueError):
            continue
        if b":" in decoded:
            found.append(match.group(0))
    return found


def secret_forms(value: str) -> set[str]:
    """The forms a secret can take in what mitmweb shows: as is, percent-encoded, JSON-escaped
    (`\\/`), and in hex (the hex content views)."""
    return {value, quote(value, safe=""), value.replace("/", "\\/"), value.encode().hex()}


def find_leaks(shown: dict[str, str], secrets_by_name: dict[str, str]) -> list[str]:
    """`where: what` for every secret (by name), signed JWT or Basic credential in `shown`."""
    leaks = []
    forms = {name: secret_forms(value) for name, value in secrets_by_name.items() if value}
    for where, text in shown.items():
        for name, variants in forms.items():
            if any(v in text for v in variants):
                leaks.append(f"{where}: {name}")
        for match in SIGNED_JWT.findall(text):
            leaks.append(f"{where}: a signed JWT ({match[:24]}…{match[-8:]})")
        for credential in _basic_credentials(text):
            leaks.append(f"{where}: a Basic credential ({credential[:14]}…)")
    return leaks


def summarize(leaks: list[str], places: int = 3) -> str:
    """Leaks grouped by what leaked: `what (N places): where, where, ...`."""
    by_what: dict[str, list[str]] = {}
    for leak in leaks:
        where, _, what = leak.rpartition(": ")
        by_what.setdefault(what if not what.startswith("a ") else what.split(" (")[0], []).append(
            where
        )
    return "\n".join(
        f"{what} ({len(wheres)} places): {', '.join(wheres[:places])}"
        for what, wheres in by_what.items()
    )
