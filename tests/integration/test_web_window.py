"""mitmweb is a read-only window (issue 15), tested with real mitmweb, registries and clients.

1. No secret in anything mitmweb shows or exports: a websocket subscriber on `/updates`,
   attached before any traffic, and `/flows`, `/flows/dump`, `/events` and every flow's
   content endpoints, at several moments (right after token responses, during a slow upload,
   at the end), in enforce, delegate, inject-Basic and inject-Bearer modes.
2. Every option, command and endpoint that could change how requests are decided, modified,
   routed, replayed, intercepted or logged is refused through mitmweb's `/options`,
   `/commands` and on the command line, with nothing applied; view-only ones still work.
3. The stickyauth breach: an anonymous client cannot reuse the last client's token.
4. The upstream token realm must be on the upstream's host and port (or listed), and https
   for an https upstream; otherwise no credential is sent anywhere.
Also: filters (an oracle on the flow they run on) and flow backups (made by mitmweb's edit
endpoint, exported with the flow) must not reveal what regauth keeps out of the shown copy.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlencode
from urllib.parse import urlsplit

import pytest
from mitmproxy import io as mitm_io
from mitmproxy.test import tflow

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import free_port
from tests.integration.test_gatekeeper import UPSTREAM_PASSWORD
from tests.integration.test_gatekeeper import UPSTREAM_USER
from tests.integration.test_gatekeeper import _inject_policy
from tests.support import httpclient
from tests.support.listeners import RecordingRelay
from tests.support.listeners import TcpListener
from tests.support.listeners import server_cert
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import bcrypt_hash
from tests.support.policies import htpasswd_file
from tests.support.policies import policy_text
from tests.support.proxy import ProxyProcess
from tests.support.proxy import start_proxy
from tests.support.tools import skopeo
from tests.support.web import ALL_VIEWS
from tests.support.web import UpdatesSubscriber
from tests.support.web import WebApi
from tests.support.web import find_leaks
from tests.support.web import summarize
from tests.support.web import web_token

UPSTREAM_ENV = {"REGAUTH_TEST_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD}
PUSH_SCOPE = "repository:demo/app:pull,push"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _signature(token: str) -> str:
    return token.split(".")[2]


def _web_proxy(
    make_proxy: Callable[..., ProxyProcess], policy: Path, upstream: str, **kwargs: object
) -> tuple[ProxyProcess, WebApi]:
    web_port = free_port()
    proxy = make_proxy(policy, upstream, web_port=web_port, **kwargs)
    return proxy, WebApi(web_port, web_token(proxy.output(), web_port))


def _path_of(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def slow_upload(
    proxy: ProxyProcess,
    token: str,
    repo: str,
    size: int = 4 << 20,
    chunk: int = 64 << 10,
    pause: float = 0.01,
    halfway: Callable[[], None] | None = None,
) -> int:
    """Upload a blob the way clients do (POST, one PATCH, PUT ?digest=), the PATCH body sent
    slowly; `halfway()` runs while half of it is on its way. Returns the final status."""
    auth = {"Authorization": f"Bearer {token}"}
    started = httpclient.request(
        proxy.port, proxy.ca, "POST", f"/v2/{repo}/blobs/uploads/", auth, b""
    )
    assert started.status == 202, (started.status, started.body[:300])
    location = _path_of(started.header("Location") or "")
    data = os.urandom(size)
    conn = http.client.HTTPSConnection(
        "localhost", proxy.port, context=httpclient.tls_context(proxy.ca), timeout=60
    )
    try:
        conn.putrequest("PATCH", location, skip_accept_encoding=True)
        for name, value in {
            **auth,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }.items():
            conn.putheader(name, value)
        conn.endheaders()
        for offset in range(0, size, chunk):
            conn.send(data[offset : offset + chunk])
            if halfway is not None and offset + chunk == size // 2:
                halfway()
            time.sleep(pause)
        response = conn.getresponse()
        response.read()
        assert response.status == 202, response.status
        location = _path_of(response.headers["Location"])
    finally:
        conn.close()
    separator = "&" if "?" in location else "?"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    done = httpclient.request(
        proxy.port, proxy.ca, "PUT", f"{location}{separator}digest={digest}", auth, b""
    )
    return done.status


# --- 1. No secret in anything mitmweb shows --------------------------------------------------


@dataclass
class Scenario:
    proxy: ProxyProcess
    web: WebApi
    registry: RegistryProcess
    relay: RecordingRelay | None = None
    secrets: dict[str, str] = field(default_factory=dict)


def _enforce(write_policy, make_registry, make_proxy, tmp_path, password_hashes) -> Scenario:
    registry = make_registry()
    proxy, web = _web_proxy(make_proxy, write_policy(), registry.url)
    return Scenario(proxy, web, registry)


def _delegate(write_policy, make_registry, make_proxy, tmp_path, password_hashes) -> Scenario:
    port = free_port()  # the registry's realm names the proxy's port: reserve it first
    registry = make_registry("token", realm=f"https://localhost:{port}/v2/token")
    proxy, web = _web_proxy(make_proxy, write_policy(mode="delegate"), registry.url, port=port)
    return Scenario(proxy, web, registry)


def _inject_basic(write_policy, make_registry, make_proxy, tmp_path, password_hashes) -> Scenario:
    htpasswd = htpasswd_file(tmp_path / "htpasswd", {UPSTREAM_USER: UPSTREAM_PASSWORD})
    registry = make_registry("htpasswd", htpasswd=htpasswd)
    policy = write_policy(text=_inject_policy(password_hashes))
    proxy, web = _web_proxy(make_proxy, policy, registry.url, env=UPSTREAM_ENV)
    return Scenario(proxy, web, registry)


def _realm_policy(write_policy) -> Path:
    return write_policy(
        name="realm-policy.yaml",
        text=f"""version: 1
service: {SERVICE}
issuer: regauth-test-issuer
accounts:
  {UPSTREAM_USER}:
    password_hash: "{bcrypt_hash(UPSTREAM_PASSWORD)}"
upstreams:
  - url: "*"
    mode: delegate
rules:
  - comment: the proxy's own account may do anything upstream
    account: {UPSTREAM_USER}
    repository: "**"
    actions: ["*"]
""",
    )


def _inject_bearer(write_policy, make_registry, make_proxy, tmp_path, password_hashes) -> Scenario:
    """The upstream is a token-mode registry whose realm is a second regauth, reached through a
    recording relay (so the test knows the upstream tokens it issued)."""
    upstream_certs = tmp_path / "upstream-certs"
    pki.init_certs(upstream_certs)
    realm_port = free_port()
    relay = RecordingRelay(
        f"https://localhost:{realm_port}",
        upstream_certs / "ca.crt",
        server_cert(upstream_certs, tmp_path / "relay"),
    )
    registry = make_registry(
        "token", name="bearer-registry", realm=f"{relay.url}/v2/token", signing_certs=upstream_certs
    )
    make_proxy(
        _realm_policy(write_policy),
        registry.url,
        name="realm",
        certs_dir=upstream_certs,
        port=realm_port,
    )
    policy = write_policy(
        text=_inject_policy(
            password_hashes,
            kind="bearer",
            realm_hosts=f"      realm_hosts: ['127.0.0.1:{relay.port}', '127.0.0.1']\n",
        )
    )
    proxy, web = _web_proxy(
        make_proxy, policy, registry.url, env=UPSTREAM_ENV, upstream_ca=upstream_certs / "ca.crt"
    )
    return Scenario(proxy, web, registry, relay)


SCENARIOS = {
    "enforce": _enforce,
    "delegate": _delegate,
    "inject-basic": _inject_basic,
    "inject-bearer": _inject_bearer,
}


def _token_traffic(scenario: Scenario) -> str:
    """Every kind of token request regauth answers, each carrying secrets; returns a token
    with push access to demo/app. Adds every secret sent or received to scenario.secrets."""
    port, ca, secrets = scenario.proxy.port, scenario.proxy.ca, scenario.secrets
    secrets.update(
        {
            "ci password": PASSWORDS["ci"],
            "alice password": PASSWORDS["alice"],
            "Basic ci:password": _b64(f"ci:{PASSWORDS['ci']}"),
        }
    )
    tokens: list[str] = []
    assert httpclient.request(port, ca, "GET", "/v2/").status == 401
    # GET with Basic, offline_token: an access token and a refresh token.
    got = httpclient.get_token(
        port,
        ca,
        [PUSH_SCOPE],
        SERVICE,
        ("ci", PASSWORDS["ci"]),
        offline_token="true",
        client_id="webtests",
    )
    assert got.status == 200, got.body
    tokens.append(got.json()["token"])
    refresh_get = got.json()["refresh_token"]
    # POST password grant, access_type=offline.
    form = {
        "grant_type": "password",
        "username": "ci",
        "password": PASSWORDS["ci"],
        "client_id": "webtests",
        "access_type": "offline",
        "service": SERVICE,
        "scope": PUSH_SCOPE,
    }
    secrets["sha256 of the password form"] = hashlib.sha256(urlencode(form).encode()).hexdigest()
    posted = httpclient.post_token(port, ca, form)
    assert posted.status == 200, posted.body
    tokens.append(posted.json()["token"])
    refresh_post = posted.json()["refresh_token"]
    # Refresh grant: POST, and GET with Basic and an empty user name.
    refresh_form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_post,
        "client_id": "webtests",
        "service": SERVICE,
        "scope": PUSH_SCOPE,
    }
    secrets["sha256 of the refresh form"] = hashlib.sha256(
        urlencode(refresh_form).encode()
    ).hexdigest()
    refreshed = httpclient.post_token(port, ca, refresh_form)
    assert refreshed.status == 200, refreshed.body
    push_token = refreshed.json()["token"]
    tokens.append(push_token)
    # What mitmweb shows right after token responses (regauth scrubs them a second later).
    shown = {f"after tokens: {k}": v for k, v in scenario.web.snapshot().items()}
    empty_user = httpclient.request(
        port,
        ca,
        "GET",
        "/v2/token?" + urlencode({"service": SERVICE, "scope": PUSH_SCOPE}),
        {"Authorization": "Basic " + _b64(f":{refresh_get}")},
    )
    assert empty_user.status < 500
    in_query = httpclient.get_token(
        port,
        ca,
        [PUSH_SCOPE],
        SERVICE,
        grant_type="refresh_token",
        refresh_token=refresh_get,
        client_id="webtests",
    )
    assert in_query.status < 500
    if in_query.status == 200:
        tokens.append(in_query.json()["token"])
    # Refused logins carry passwords too.
    wrong = "wrong-secret-" + os.urandom(6).hex()
    secrets.update({"wrong password": wrong, "Basic alice:wrong": _b64(f"alice:{wrong}")})
    assert httpclient.get_token(port, ca, [], SERVICE, ("alice", wrong)).status == 401
    assert (
        httpclient.post_token(port, ca, {**form, "username": "alice", "password": wrong}).status
        == 401
    )
    as_json = json.dumps(
        {"grant_type": "password", "username": "ci", "password": PASSWORDS["ci"]}
    ).encode()
    secrets["sha256 of a JSON token body"] = hashlib.sha256(as_json).hexdigest()
    assert (
        httpclient.request(
            port, ca, "POST", "/v2/token", {"Content-Type": "application/json"}, as_json
        ).status
        < 500
    )
    secrets.update(
        {
            "refresh token (GET)": refresh_get,
            "refresh token (POST)": refresh_post,
            "Basic :refresh token": _b64(f":{refresh_get}"),
        }
    )
    for i, token in enumerate(tokens):
        secrets[f"signature of regauth token {i}"] = _signature(token)
    scenario.shown_after_tokens = shown  # type: ignore[attr-defined]
    return push_token


def _registry_traffic(scenario: Scenario, token: str) -> None:
    port, ca = scenario.proxy.port, scenario.proxy.ca
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpclient.request(port, ca, "GET", "/v2/", bearer).status == 200
    assert httpclient.request(port, ca, "GET", "/v2/demo/app/tags/list", bearer).status in (
        200,
        404,
    )
    basic_on_registry = httpclient.request(
        port,
        ca,
        "GET",
        "/v2/demo/app/tags/list",
        {"Authorization": httpclient.basic("ci", PASSWORDS["ci"])},
    )
    assert basic_on_registry.status == 401


@pytest.mark.parametrize("mode", list(SCENARIOS))
def test_no_secret_in_anything_mitmweb_shows(
    mode, write_policy, make_registry, make_proxy, tmp_path, password_hashes
):
    scenario = SCENARIOS[mode](write_policy, make_registry, make_proxy, tmp_path, password_hashes)
    if mode.startswith("inject"):
        scenario.secrets.update(
            {
                "upstream password": UPSTREAM_PASSWORD,
                "upstream Basic": _b64(f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}"),
            }
        )
    web = scenario.web
    subscriber = UpdatesSubscriber(web.port, web.token).start()
    try:
        token = _token_traffic(scenario)
        _registry_traffic(scenario, token)
        shown: dict[str, str] = dict(scenario.shown_after_tokens)  # type: ignore[attr-defined]
        in_flight: list[dict] = []

        def during_upload() -> None:
            snapshot = web.snapshot()
            in_flight.extend(
                f
                for f in json.loads(snapshot["/flows"])
                if f["request"]["method"] == "PATCH" and not f.get("response")
            )
            shown.update({f"during upload: {k}": v for k, v in snapshot.items()})

        assert slow_upload(scenario.proxy, token, "demo/app", halfway=during_upload) == 201
        assert in_flight, "the PATCH was not in flight when mitmweb was read"
        time.sleep(1.5)  # token responses are scrubbed a second after they were sent
        shown.update({f"at the end: {k}": v for k, v in web.snapshot(ALL_VIEWS).items()})
    finally:
        subscriber.close()
    messages = subscriber.parsed()
    paths = [
        m["payload"]["flow"]["request"]["path"]
        for m in messages
        if m.get("type") in ("flows/add", "flows/update")
    ]
    assert any(p.startswith("/v2/token") for p in paths), "the subscriber saw no token flow"
    assert any("/blobs/uploads/" in p for p in paths), "the subscriber saw no upload"
    shown.update(
        {
            f"/updates message {i} ({m.get('type')})": raw
            for i, (m, raw) in enumerate(zip(messages, subscriber.messages, strict=True))
        }
    )
    if scenario.relay is not None:
        upstream_tokens = scenario.relay.tokens()
        assert upstream_tokens, "regauth fetched no upstream token"
        for i, token in enumerate(upstream_tokens):
            scenario.secrets[f"signature of upstream realm token {i}"] = _signature(token)
    if mode.startswith("inject"):
        injected = [r for r in scenario.proxy.records() if r.get("method") == "PATCH"]
        assert injected and injected[0].get("upstream_credentials") == "injected"
    leaks = find_leaks(shown, scenario.secrets)
    assert not leaks, f"{len(leaks)} secrets shown by mitmweb:\n{summarize(leaks)}"


def test_filters_match_only_what_is_shown(
    write_policy, make_registry, make_proxy, tmp_path, password_hashes
):
    """A filter (the websocket's flows/updateFilter, view_filter, a flow spec in a command) is
    an oracle on the flow it is evaluated on: naming a secret must match nothing, or a viewer
    can read the injected upstream credential, a regex at a time, while a request is in flight."""
    scenario = _inject_basic(write_policy, make_registry, make_proxy, tmp_path, password_hashes)
    web = scenario.web
    upstream_basic = _b64(f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}")
    secret_part = next(
        upstream_basic[i : i + 16]
        for i in range(8, len(upstream_basic))
        if upstream_basic[i : i + 16].isalnum()
    )  # past the user name
    token = httpclient.get_token(
        scenario.proxy.port, scenario.proxy.ca, [PUSH_SCOPE], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    subscriber = UpdatesSubscriber(web.port, web.token).start()
    matched: dict[str, object] = {}

    def probe() -> None:
        upload = next(f for f in web.flows() if f["request"]["method"] == "PATCH")
        for name, expr in (("secret", f"~hq {secret_part}"), ("control", "~m PATCH")):
            subscriber.send({"type": "flows/updateFilter", "payload": {"name": name, "expr": expr}})
        assert web.put_options({"view_filter": f"~hq {secret_part}"}).status == 200
        matched["view_filter"] = [f["id"] for f in web.flows()]
        assert web.put_options({"view_filter": ""}).status == 200
        matched["flow.mark"] = web.command("flow.mark", f"~hq {secret_part}", ":skull:").status
        matched["marked"] = next(f["marked"] for f in web.flows() if f["id"] == upload["id"])
        matched["upload"] = upload["id"]
        time.sleep(0.3)  # the websocket answers the filter updates

    try:
        assert slow_upload(scenario.proxy, token, "demo/app", halfway=probe) == 201
    finally:
        subscriber.close()
    answers = {
        m["payload"]["name"]: m["payload"]["matching_flow_ids"]
        for m in subscriber.parsed()
        if m.get("type") == "flows/filterUpdate"
    }
    assert matched["upload"] in answers["control"]  # filters do work on the upload flow
    oracle = []
    if matched["upload"] in (answers["secret"] or []):
        oracle.append("the websocket filter ~hq <upstream credential> matched the upload")
    if matched["upload"] in matched["view_filter"]:  # type: ignore[operator]
        oracle.append("view_filter ~hq <upstream credential> showed the upload")
    if matched["marked"]:
        oracle.append("flow.mark '~hq <upstream credential>' marked the upload")
    assert not oracle, "; ".join(oracle)


# --- 2. Refused options, commands and endpoints; what still works ------------------------------


@dataclass
class Window:
    proxy: ProxyProcess
    web: WebApi
    registry: RegistryProcess
    workdir: Path
    token: str

    def fresh_flow(self, path: str = "/v2/demo/app/tags/list") -> dict:
        """A finished flow of its own for one test."""
        marker = os.urandom(4).hex()
        reply = httpclient.request(
            self.proxy.port,
            self.proxy.ca,
            "GET",
            f"{path}?n={marker}",
            {"Authorization": f"Bearer {self.token}"},
        )
        assert reply.status in (200, 404)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for flow in self.web.flows():
                if flow["request"]["path"].endswith(marker) and flow.get("response"):
                    return flow
            time.sleep(0.05)
        raise AssertionError("the flow did not show up in mitmweb")

    def flow(self, flow_id: str) -> dict | None:
        return next((f for f in self.web.flows() if f["id"] == flow_id), None)


@pytest.fixture(scope="module")
def window(tmp_path_factory, certs_dir, password_hashes):
    workdir = tmp_path_factory.mktemp("window")
    registry = RegistryProcess(workdir / "registry")
    registry.start()
    policy = workdir / "policy.yaml"
    policy.write_text(policy_text(password_hashes))
    web_port = free_port()
    proxy = start_proxy(workdir / "proxy", certs_dir, policy, registry.url, web_port=web_port)
    try:
        token = httpclient.get_token(
            proxy.port, proxy.ca, [PUSH_SCOPE], SERVICE, ("ci", PASSWORDS["ci"])
        ).json()["token"]
        yield Window(
            proxy, WebApi(web_port, web_token(proxy.output(), web_port)), registry, workdir, token
        )
    finally:
        proxy.stop()
        registry.stop()


class Probe:
    """Connects to loopback ports every 20 ms and records which ever accepted or refused."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.accepted: set[str] = set()
        self.refused: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, port in self.ports.items():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    self.accepted.add(name)
                except OSError:
                    self.refused.add(name)
            time.sleep(0.02)

    def stop(self) -> Probe:
        self._stop.set()
        self._thread.join(5)
        return self


# A valid policy that lets anyone read everything: what a run-time regauth_policy change would
# load.
OPEN_POLICY = f"""version: 1
service: {SERVICE}
issuer: regauth-test-issuer
upstreams:
  - url: "*"
    mode: enforce
rules:
  - comment: anyone reads everything
    account: any
    repository: "**"
    actions: [pull]
"""


@dataclass
class Attempt:
    """What a refused option or command would touch, so a test can see nothing happened."""

    workdir: Path
    listener: TcpListener
    other_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.canary = self.workdir / "canary"
        self.canary.write_text("an operator's file\n")
        self.script = self.workdir / "script.py"
        self.script_ran = self.workdir / "script-ran"
        self.script.write_text(f"open({str(self.script_ran)!r}, 'w').close()\n")
        self.new_files = {
            name: self.workdir / name
            for name in (
                "hardump.har",
                "static-viewer",
                "other-log.jsonl",
                "new-confdir",
                "exported",
                "cut",
                "saved-flows",
                "saved.har",
                "saved-options.yaml",
            )
        }
        self.options_file = self.workdir / "options.yaml"
        self.options_file.write_text("stickyauth: .\n")
        self.flow_file = self.workdir / "flows.mitm"
        self.replay_path = f"/v2/replayed-{os.urandom(4).hex()}/tags/list"
        self.console_from = 0
        self.other_policy = self.workdir / "other-policy.yaml"
        self.other_policy.write_text(OPEN_POLICY)

    def watch(self, proxy: ProxyProcess) -> None:
        """Side effects on the console count from here."""
        self.console_from = len(proxy.output())

    def write_flow_file(self, upstream: str) -> None:
        flow = tflow.tflow(resp=True)
        flow.request.url = upstream + self.replay_path
        with self.flow_file.open("wb") as f:
            mitm_io.FlowWriter(f).add(flow)

    def values(self) -> dict[str, object]:
        """A non-default value for every option that must not change at run time."""
        return {
            "mode": [f"reverse:http://127.0.0.1:{self.listener.port}@127.0.0.1:{self.other_port}"],
            "scripts": [str(self.script)],
            "stickyauth": ".",
            "stickycookie": ".",
            "modify_headers": ["/~q/Authorization/Basic Zm9vOmJhcg=="],
            "modify_body": ["/~q/foo/bar"],
            "map_remote": ["|//127.0.0.1|//127.0.0.2"],
            "map_local": [f"|/v2/|{self.workdir}"],
            "intercept": "~q",
            "intercept_active": True,
            "ssl_insecure": True,
            "upstream_cert": False,
            "client_replay": [str(self.flow_file)],
            "server_replay": [str(self.flow_file)],
            "anticache": True,
            "anticomp": True,
            "proxyauth": "user:pass",
            "ignore_hosts": [".*"],
            "allow_hosts": ["example\\.com"],
            "tcp_hosts": [".*"],
            "keep_host_header": True,
            "upstream_auth": "user:pass",
            "save_stream_file": str(self.canary),
            "hardump": str(self.new_files["hardump.har"]),
            "web_static_viewer": str(self.new_files["static-viewer"]),
            "rfile": str(self.flow_file),
            "stream_large_bodies": "1m",
            "store_streamed_bodies": True,
            "validate_inbound_headers": False,
            "proxy_debug": True,
            "flow_detail": 3,
            "regauth_policy": str(self.other_policy),
            "regauth_log": str(self.new_files["other-log.jsonl"]),
            "regauth_public_url": "https://elsewhere.example:8443",
            "confdir": str(self.new_files["new-confdir"]),
            "web_password": "changed",
            "connection_strategy": "eager",
            "body_size_limit": "1k",
        }

    def side_effects(
        self, proxy: ProxyProcess | None = None, web: WebApi | None = None
    ) -> list[str]:
        """Anything a refused option or command left behind."""
        found = []
        if self.canary.read_text() != "an operator's file\n":
            found.append(f"{self.canary.name} was overwritten")
        if self.script_ran.exists():
            found.append("the script ran")
        found += [f"{path.name} was created" for path in self.new_files.values() if path.exists()]
        if self.listener.connections:
            found.append(f"port {self.listener.port} got {self.listener.connections} connections")
        if proxy is not None:
            console = proxy.output()[self.console_from :]
            if f"listening at 127.0.0.1:{self.other_port}" in console:
                found.append(f"a proxy server was opened on 127.0.0.1:{self.other_port}")
            if f"at 127.0.0.1:{proxy.port} stopped" in console:
                found.append("regauth's own proxy server was stopped (and restarted)")
        if web is not None and any(f["request"]["path"] == self.replay_path for f in web.flows()):
            found.append("a flow from the flow file appeared in mitmweb")
        if proxy is not None and any(r.get("path") == self.replay_path for r in proxy.records()):
            found.append("a flow from the flow file went through regauth")
        return found


@pytest.fixture
def attempt(tmp_path, window):
    listener = TcpListener()
    attempt = Attempt(tmp_path / "attempt", listener)
    attempt.write_flow_file(window.registry.url)
    attempt.watch(window.proxy)
    yield attempt
    listener.stop()


# Options that must not change at run time (values in Attempt.values()): the list,
# regauth's own, and a few start-time-only ones. (flow_detail exists in mitmdump only: it is
# tried on the command line.)
REFUSED_OPTIONS = [
    "mode",
    "scripts",
    "stickyauth",
    "stickycookie",
    "modify_headers",
    "modify_body",
    "map_remote",
    "map_local",
    "intercept",
    "intercept_active",
    "ssl_insecure",
    "upstream_cert",
    "client_replay",
    "server_replay",
    "anticache",
    "anticomp",
    "proxyauth",
    "ignore_hosts",
    "allow_hosts",
    "tcp_hosts",
    "keep_host_header",
    "upstream_auth",
    "save_stream_file",
    "hardump",
    "web_static_viewer",
    "rfile",
    "stream_large_bodies",
    "store_streamed_bodies",
    "validate_inbound_headers",
    "proxy_debug",
    "regauth_policy",
    "regauth_log",
    "regauth_public_url",
    "confdir",
    "web_password",
    "connection_strategy",
    "body_size_limit",
]


# Seconds for what some options start in the background (a script watcher, a replay, a server
# restart) to show.
SETTLE = {"mode": 1.0, "scripts": 1.0, "client_replay": 1.0, "server_replay": 1.0, "rfile": 1.0}


def _option_value(web: WebApi, name: str) -> object:
    return web.options().get(name, {}).get("value", "<not a mitmweb option>")


def _watch_ports(window: Window, attempt: Attempt) -> Probe:
    return Probe({"regauth": window.proxy.port, "requested": attempt.other_port})


def _restore(window: Window, name: str, before: object) -> None:
    if before != "<not a mitmweb option>" and _option_value(window.web, name) != before:
        window.web.put_options({name: before})  # the old code accepted it: undo for the rest


def _check_ports(probe: Probe) -> list[str]:
    found = []
    if "requested" in probe.accepted:
        found.append("the requested listen address was opened")
    if "regauth" in probe.refused:
        found.append("regauth's own port stopped accepting connections")
    return found


@pytest.mark.parametrize("name", REFUSED_OPTIONS)
def test_option_refused_through_web_options(name, window, attempt):
    web = window.web
    before = _option_value(web, name)
    probe = _watch_ports(window, attempt)
    try:
        reply = web.put_options({name: attempt.values()[name]})
        time.sleep(SETTLE.get(name, 0.2))
        after = _option_value(web, name)
        problems = _check_ports(probe.stop()) + attempt.side_effects(window.proxy, web)
    finally:
        probe.stop()
        _restore(window, name, before)
    print(f"| `{name}` | PUT /options | {reply.status} {reply.text[:90]!r} |")
    assert reply.status == 400, reply.text
    assert after == before
    assert not problems, problems


def _as_argument(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return ["true" if value is True else "false" if value is False else str(value)]


@pytest.mark.parametrize("name", REFUSED_OPTIONS)
def test_option_refused_through_the_set_command(name, window, attempt):
    web = window.web
    before = _option_value(web, name)
    probe = _watch_ports(window, attempt)
    try:
        reply = web.command("set", name, *_as_argument(attempt.values()[name]))
        time.sleep(SETTLE.get(name, 0.2))
        after = _option_value(web, name)
        problems = _check_ports(probe.stop()) + attempt.side_effects(window.proxy, web)
    finally:
        probe.stop()
        _restore(window, name, before)
    print(f"| `{name}` | POST /commands/set | {reply.status} {reply.text[:90]!r} |")
    assert reply.status == 403, reply.text
    assert after == before
    assert not problems, problems


def _commands(attempt: Attempt, one_flow: str) -> dict[str, list[str]]:
    """Commands that change flows, replay, load, save or export: name → arguments."""
    files = attempt.new_files
    return {
        "script.run": ["@all", str(attempt.script)],
        "replay.client": ["@all"],
        "replay.server": ["@all"],
        "flow.resume": ["@all"],
        "flow.kill": ["@all"],
        "flow.set": ["@all", "path", "/v2/elsewhere"],
        "flow.revert": ["@all"],
        "flow.decode": ["@all", "request"],
        "flow.encode": ["@all", "request", "gzip"],
        "export.file": ["curl", one_flow, str(files["exported"])],
        "export.clip": ["curl", one_flow],
        "cut.save": ["@all", "request.headers", str(files["cut"])],
        "save.file": ["@all", str(files["saved-flows"])],
        "save.har": ["@all", str(files["saved.har"])],
        "options.reset": [],
        "options.load": [str(attempt.options_file)],
        "options.save": [str(files["saved-options.yaml"])],
        "view.flows.load": [str(attempt.flow_file)],
        "view.flows.create": ["GET", f"http://127.0.0.1:{attempt.listener.port}/v2/"],
        "view.flows.duplicate": ["@all"],
        "view.flows.remove": ["@all"],
        "browser.start": ["chrome"],
    }


COMMANDS = [
    "script.run",
    "replay.client",
    "replay.server",
    "flow.resume",
    "flow.kill",
    "flow.set",
    "flow.revert",
    "flow.decode",
    "flow.encode",
    "export.file",
    "export.clip",
    "cut.save",
    "save.file",
    "save.har",
    "options.reset",
    "options.load",
    "options.save",
    "view.flows.load",
    "view.flows.create",
    "view.flows.duplicate",
    "view.flows.remove",
    "browser.start",
]


def _shown_state(window: Window) -> tuple[int, dict[str, tuple]]:
    flows = window.web.flows()
    return len(flows), {f["id"]: (f["request"], f.get("response"), f.get("error")) for f in flows}


@pytest.mark.parametrize("name", COMMANDS)
def test_command_refused(name, window, attempt):
    flow = window.fresh_flow()
    one = f"~u {flow['request']['path'].split('?n=')[1]}"
    options_before = window.web.options()
    count_before, flows_before = _shown_state(window)
    reply = window.web.command(name, *_commands(attempt, one)[name])
    time.sleep(0.5)
    count_after, flows_after = _shown_state(window)
    changed = [
        flow_id for flow_id, state in flows_before.items() if flows_after.get(flow_id) != state
    ]
    options_after = window.web.options()
    print(f"| `{name}` | POST /commands/{name} | {reply.status} {reply.text[:90]!r} |")
    assert reply.status == 403, reply.text
    assert options_after == options_before
    assert count_after == count_before and not changed, (count_before, count_after, changed)
    assert not attempt.side_effects(window.proxy, window.web)


# Endpoints that edit, replay, resume, kill or load flows: (method, path, JSON body).
ENDPOINTS = {
    "PUT /flows/<id> request.path": ("PUT", "/flows/{id}", {"request": {"path": "/v2/x"}}),
    "PUT /flows/<id> request.headers": (
        "PUT",
        "/flows/{id}",
        {"request": {"headers": [["Authorization", "Basic Zm9vOmJhcg=="]]}},
    ),
    "PUT /flows/<id> request.content": ("PUT", "/flows/{id}", {"request": {"content": "x"}}),
    "PUT /flows/<id> response.code": ("PUT", "/flows/{id}", {"response": {"code": 200}}),
    "PUT /flows/<id> comment + request": (
        "PUT",
        "/flows/{id}",
        {"comment": "x", "request": {"method": "DELETE"}},
    ),
    "POST /flows/<id>/replay": ("POST", "/flows/{id}/replay", None),
    "POST /flows/<id>/revert": ("POST", "/flows/{id}/revert", None),
    "POST /flows/<id>/duplicate": ("POST", "/flows/{id}/duplicate", None),
    "POST /flows/<id>/resume": ("POST", "/flows/{id}/resume", None),
    "POST /flows/<id>/kill": ("POST", "/flows/{id}/kill", None),
    "POST /flows/resume": ("POST", "/flows/resume", None),
    "POST /flows/kill": ("POST", "/flows/kill", None),
    "POST /flows/dump": ("POST", "/flows/dump", "<flow file>"),
    "POST /flows/<id>/request/content.data": (
        "POST",
        "/flows/{id}/request/content.data",
        "<bytes>",
    ),
    "POST /flows/<id>/response/content.data": (
        "POST",
        "/flows/{id}/response/content.data",
        "<bytes>",
    ),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_endpoint_refused(endpoint, window, attempt):
    method, path, body = ENDPOINTS[endpoint]
    flow = window.fresh_flow()
    content_before = window.web.get(f"/flows/{flow['id']}/request/content.data").body
    count_before, flows_before = _shown_state(window)
    path = path.format(id=flow["id"])
    if body == "<flow file>":
        reply = window.web.request(method, path, raw=attempt.flow_file.read_bytes())
    elif body == "<bytes>":
        reply = window.web.request(method, path, raw=b"replaced content")
    else:
        reply = window.web.request(method, path, body)
    time.sleep(0.5)
    count_after, flows_after = _shown_state(window)
    changed = [
        flow_id for flow_id, state in flows_before.items() if flows_after.get(flow_id) != state
    ]
    content_after = window.web.get(f"/flows/{flow['id']}/request/content.data").body
    shown = window.flow(flow["id"])
    print(f"| {endpoint} | mitmweb API | {reply.status} {reply.text[:90]!r} |")
    assert reply.status == 403, reply.text
    assert count_after == count_before and not changed, (count_before, count_after, changed)
    assert content_after == content_before
    assert shown is not None and not shown["modified"]
    assert not attempt.side_effects(window.proxy, window.web)
    assert not [r for r in window.proxy.records() if r.get("flow") == flow["id"]][1:], (
        "the flow went through regauth again"
    )


def test_a_live_flow_cannot_be_killed_removed_or_edited(window):
    """During a slow upload: every way to kill, remove or edit a live flow is refused, and the
    upload completes."""
    replies: dict[str, int] = {}

    def interfere() -> None:
        live = next(
            f
            for f in window.web.flows()
            if f["request"]["method"] == "PATCH" and not f.get("response")
        )
        path = f"/flows/{live['id']}"
        replies["DELETE /flows/<live id>"] = window.web.request("DELETE", path).status
        replies["POST /flows/<live id>/kill"] = window.web.request("POST", f"{path}/kill").status
        replies["POST /flows/kill"] = window.web.request("POST", "/flows/kill").status
        replies["flow.kill"] = window.web.command("flow.kill", "@all").status
        replies["PUT /flows/<live id> request.path"] = window.web.request(
            "PUT", path, {"request": {"path": "/v2/demo/other/blobs/uploads/x"}}
        ).status

    status = slow_upload(window.proxy, window.token, "demo/app", halfway=interfere)
    for what, code in replies.items():
        print(f"| {what} (live upload) | mitmweb API | {code} |")
    assert replies == dict.fromkeys(replies, 403)
    assert status == 201


def test_view_options_commands_and_reads_still_work(window):
    web = window.web
    flow = window.fresh_flow()
    outcomes = {
        "PUT /options web_columns": web.put_options({"web_columns": ["path", "comment"]}),
        "PUT /options view_filter": web.put_options({"view_filter": "~u tags"}),
        "POST /commands/set view_filter": web.command("set", "view_filter", "~u manifests"),
        "POST /commands/set web_columns=": web.command("set", "web_columns=path"),
        "flow.mark": web.command("flow.mark", "@all", ":star:"),
        "flow.comment": web.command(
            "flow.comment", f"~u {flow['request']['path'][-8:]}", "looked at"
        ),
        "PUT /flows/<id> comment+marked": web.request(
            "PUT", f"/flows/{flow['id']}", {"comment": "checked", "marked": ":white_check_mark:"}
        ),
    }
    for what, reply in outcomes.items():
        print(f"| {what} | mitmweb API | {reply.status} |")
    assert {k: r.status for k, r in outcomes.items()} == dict.fromkeys(outcomes, 200)
    assert web.option("view_filter") == "~u manifests"
    assert web.option("web_columns") == ["path"]
    assert web.put_options({"view_filter": ""}).status == 200
    shown = window.flow(flow["id"])
    assert shown is not None
    assert (shown["comment"], shown["marked"]) == ("checked", "✅")
    for path in (
        "/flows",
        "/flows/dump",
        "/events",
        "/options",
        "/state",
        "/commands",
        "/filter-help",
        f"/flows/{flow['id']}/request/content.data",
        f"/flows/{flow['id']}/response/content/auto.json",
    ):
        reply = web.get(path)
        print(f"| GET {path.replace(flow['id'], '<id>')} | mitmweb API | {reply.status} |")
        assert reply.status == 200, (path, reply.status)
    # The flow still goes through regauth as before.
    assert window.fresh_flow()["response"]["status_code"] in (200, 404)


# The command line: `regauth serve ... -- ARGS`; each must stop regauth before it opens a port.
def _cli_cases(attempt: Attempt) -> dict[str, list[str]]:
    cases = {}
    for name, value in attempt.values().items():
        if name in ("mode", "web_password", "confdir", "connection_strategy", "body_size_limit"):
            continue  # start-time options: allowed (constrained) on the command line
        cases[name] = ["--set", f"{name}={','.join(_as_argument(value))}"]
    cases["mode"] = ["--mode", attempt.values()["mode"][0]]  # type: ignore[index]
    cases["mode (regular)"] = ["--mode", "regular@127.0.0.1:" + str(attempt.other_port)]
    cases["web_debug"] = ["--set", "web_debug=true"]
    return cases


def _run_refused(
    args: list[str], workdir: Path, certs_dir: Path, policy: Path, upstream: str, attempt: Attempt
) -> tuple[int | None, str, list[str]]:
    port = free_port()
    # flow_detail exists in mitmdump only (mitmweb would ignore it): try it there.
    web_port = None if args[-1].startswith("flow_detail=") else free_port()
    probe = Probe({"listen": port, "web": web_port or port, "requested": attempt.other_port})
    proxy = start_proxy(
        workdir, certs_dir, policy, upstream, extra=args, wait=False, port=port, web_port=web_port
    )
    returncode = None
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        returncode = proxy.process.poll()
        if returncode is not None or "listening at" in proxy.output():
            break
        time.sleep(0.05)
    if returncode is None:
        time.sleep(0.5)
        proxy.stop()
    probe.stop()
    return returncode, proxy.output(), sorted(probe.accepted)


def test_options_refused_on_the_command_line(tmp_path, certs_dir, write_policy, make_registry):
    registry = make_registry()
    policy = write_policy()
    listener = TcpListener()

    def run(case: str) -> tuple[list[str], int | None, str, list[str], list[str]]:
        workdir = tmp_path / f"cli-{case.replace(' ', '-')}"
        attempt = Attempt(workdir / "attempt", listener)  # files of its own: effects are its
        attempt.write_flow_file(registry.url)
        args = _cli_cases(attempt)[case]
        returncode, output, opened = _run_refused(
            args, workdir, certs_dir, policy, registry.url, attempt
        )
        return args, returncode, output, opened, attempt.side_effects()

    try:
        cases = list(_cli_cases(Attempt(tmp_path / "names", listener)))
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = dict(zip(cases, pool.map(run, cases), strict=True))
    finally:
        listener.stop()
    failures = []
    for case, (args, returncode, output, opened, effects) in results.items():
        message = output.strip().splitlines()[-1] if output.strip() else ""
        print(f"| `{' '.join(args)}` | command line | exit {returncode}: {message[-110:]} |")
        if (
            returncode != 1
            or case.split()[0] not in message
            or "Traceback" in output
            or opened
            or effects
        ):
            failures.append(
                f"{case}: exit {returncode}, ports opened {opened}, "
                f"{'a traceback, ' if 'Traceback' in output else ''}"
                f"side effects {effects}: {message}"
            )
    assert not failures, "\n".join(failures)


# --- 3. stickyauth: the next client must not get the last client's token ----------------------

ANONYMOUS_TAG = "pushed-by-anonymous"


def _registry_status(registry: RegistryProcess, request_line: str) -> list[int]:
    """Statuses the registry answered `request_line` (e.g. "PUT /v2/x/manifests/y") with."""
    time.sleep(0.3)  # the registry writes its access log asynchronously
    statuses = []
    for line in registry.log_path.read_text(errors="replace").splitlines():
        marker = f'"{request_line} HTTP/'
        if marker in line:
            statuses.append(int(line.split(marker, 1)[1].split('" ', 1)[1].split()[0]))
    return statuses


def _ci_then_anonymous(
    proxy: ProxyProcess, registry: RegistryProcess, layout: tuple[Path, str]
) -> dict[str, object]:
    """ci pushes demo/app:1 (with its token); then a client without credentials PUTs the same
    manifest under another tag. Returns what each side saw."""
    path, digest = layout
    pushed = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        "--dest-creds",
        f"ci:{PASSWORDS['ci']}",
        f"oci:{path}:latest",
        f"docker://{proxy.netloc}/demo/app:1",
    )
    assert pushed.ok, pushed.output
    manifest = (path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    target = f"/v2/demo/app/manifests/{ANONYMOUS_TAG}"
    anonymous = httpclient.request(
        proxy.port,
        proxy.ca,
        "PUT",
        target,
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        manifest,
    )
    time.sleep(0.3)
    return {
        "client got": anonymous.status,
        "registry answered": _registry_status(registry, f"PUT {target}"),
        "exchange records": [
            r for r in proxy.records() if r.get("method") == "PUT" and r.get("path") == target
        ],
    }


def _assert_anonymous_push_refused(seen: dict[str, object]) -> None:
    assert seen["client got"] == 401, seen
    assert not [s for s in seen["registry answered"] if s < 300], (
        f"the registry stored the anonymous push: {seen}"
    )  # type: ignore[attr-defined]
    records = seen["exchange records"]
    assert records and all(r["status"] == 401 and r.get("challenge") for r in records), records  # type: ignore[union-attr]


def _delegate_registry(make_registry) -> tuple[int, RegistryProcess]:
    port = free_port()
    return port, make_registry("token", realm=f"https://localhost:{port}/v2/token")


def test_stickyauth_refused_on_the_command_line(write_policy, make_registry, make_proxy, layout):
    port, registry = _delegate_registry(make_registry)
    proxy = make_proxy(
        write_policy(mode="delegate"),
        registry.url,
        port=port,
        web_port=free_port(),
        extra=["--set", "stickyauth=."],
        wait=False,
    )
    deadline = time.monotonic() + 45
    while (
        proxy.process.poll() is None
        and time.monotonic() < deadline
        and f"listening at 127.0.0.1:{port}" not in proxy.output()
    ):
        time.sleep(0.05)
    if proxy.process.poll() is None:  # it started: show what stickyauth does, then fail
        seen = _ci_then_anonymous(proxy, registry, layout)
        pytest.fail(f"regauth started with stickyauth; then {seen}")
    assert proxy.process.returncode == 1
    assert "stickyauth: not allowed" in proxy.output()
    assert "listening at" not in proxy.output()


def test_stickyauth_refused_through_web_options(write_policy, make_registry, make_proxy, layout):
    port, registry = _delegate_registry(make_registry)
    proxy, web = _web_proxy(make_proxy, write_policy(mode="delegate"), registry.url, port=port)
    options = web.put_options({"stickyauth": "."})
    command = web.command("set", "stickyauth", ".")
    seen = _ci_then_anonymous(proxy, registry, layout)
    _assert_anonymous_push_refused(seen)
    assert (options.status, command.status) == (400, 403)
    assert web.option("stickyauth") is None


# --- 4. Upstream token realm: same host and port (or listed), https for https -------------------


def _realm_refused(proxy: ProxyProcess, listener: TcpListener, reason: str) -> None:
    token = httpclient.get_token(
        proxy.port, proxy.ca, [PUSH_SCOPE], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    reply = httpclient.request(
        proxy.port, proxy.ca, "GET", "/v2/demo/app/tags/list", {"Authorization": f"Bearer {token}"}
    )
    time.sleep(0.5)
    assert (listener.connections, listener.received) == (0, b""), (
        "the upstream credential went to the realm"
    )
    assert reply.status == 502, (reply.status, reply.body)
    assert reply.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert reason in proxy.output()
    record = next(r for r in proxy.records() if r.get("path") == "/v2/demo/app/tags/list")
    assert record["status"] == 502
    assert "upstream credentials unavailable" in json.dumps(record)


def test_realm_on_another_port_of_the_upstream_host_is_refused(
    write_policy, make_registry, make_proxy, password_hashes
):
    listener = TcpListener()  # the realm the upstream names: same host, another port
    try:
        registry = make_registry(
            "token", name="bearer-registry", realm=f"http://127.0.0.1:{listener.port}/v2/token"
        )
        proxy = make_proxy(
            write_policy(text=_inject_policy(password_hashes, kind="bearer")),
            registry.url,
            env=UPSTREAM_ENV,
        )
        _realm_refused(proxy, listener, "is not on the upstream's own host and port")
    finally:
        listener.stop()


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "listed"])
def test_plain_http_realm_for_an_https_upstream_is_refused(
    listed, write_policy, make_registry, make_proxy, password_hashes, tmp_path
):
    upstream_certs = tmp_path / "upstream-ca"
    pki.init_certs(upstream_certs)
    listener = TcpListener()
    try:
        registry = make_registry(
            "token",
            name="tls-registry",
            realm=f"http://127.0.0.1:{listener.port}/v2/token",
            tls=server_cert(upstream_certs, tmp_path / "tls"),
        )
        realm_hosts = f"      realm_hosts: ['127.0.0.1:{listener.port}']\n" if listed else ""
        proxy = make_proxy(
            write_policy(
                text=_inject_policy(password_hashes, kind="bearer", realm_hosts=realm_hosts)
            ),
            registry.url,
            env=UPSTREAM_ENV,
            upstream_ca=upstream_certs / "ca.crt",
        )
        _realm_refused(proxy, listener, "is plain http for an https upstream")
    finally:
        listener.stop()


def test_comments_on_live_flows_keep_no_secret(
    write_policy, make_registry, make_proxy, tmp_path, password_hashes
):
    """A comment is a view change, allowed on any flow; but mitmweb's PUT /flows/<id> first
    backs the flow up, and a backup travels with the flow (into /flows/dump). Commenting a
    flow before regauth scrubbed it must not freeze its secrets into that backup."""
    scenario = _inject_basic(write_policy, make_registry, make_proxy, tmp_path, password_hashes)
    web, proxy = scenario.web, scenario.proxy
    got = httpclient.get_token(
        proxy.port,
        proxy.ca,
        [PUSH_SCOPE],
        SERVICE,
        ("ci", PASSWORDS["ci"]),
        offline_token="true",
        client_id="webtests",
    )
    token_flow = next(f for f in web.flows() if f["request"]["path"].startswith("/v2/token"))
    commented = [web.request("PUT", f"/flows/{token_flow['id']}", {"comment": "new token"})]

    def comment_upload() -> None:
        live = next(
            f for f in web.flows() if f["request"]["method"] == "PATCH" and not f.get("response")
        )
        commented.append(web.request("PUT", f"/flows/{live['id']}", {"comment": "uploading"}))

    assert slow_upload(proxy, got.json()["token"], "demo/app", halfway=comment_upload) == 201
    time.sleep(1.5)
    assert [r.status for r in commented] == [200, 200]
    secrets = {
        "ci password": PASSWORDS["ci"],
        "Basic ci:password": _b64(f"ci:{PASSWORDS['ci']}"),
        "refresh token": got.json()["refresh_token"],
        "token signature": _signature(got.json()["token"]),
        "upstream password": UPSTREAM_PASSWORD,
        "upstream Basic": _b64(f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}"),
    }
    leaks = find_leaks(web.snapshot(), secrets)
    assert not leaks, summarize(leaks)
