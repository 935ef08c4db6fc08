"""The request handler in process: it carries out the front door's decisions (regauth.front).

Hooks: `requestheaders` (every decision kind, and its early exits), `request` (token forms,
body checks, early exits), `server_connect`, `running`/`done` (the refusal sink).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from mitmproxy import http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from regauth.mitm import fail_closed
from regauth.mitm.patches.stream_isolation import DISCARD_MARK
from regauth.mitm.refusal_sink import NONCE_HEADER
from regauth.mitm.shown import REDACTED
from regauth.upstream_auth import UpstreamAuthError
from tests.support.policies import PASSWORDS
from tests.unit.mitm.harness import PUBLIC
from tests.unit.mitm.harness import basic
from tests.unit.mitm.harness import get_token
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import token_flow
from tests.unit.mitm.harness import token_post

DIGEST = "sha256:" + "a" * 64
UPLOAD = f"/v2/public/app/blobs/uploads/abc?digest={DIGEST}"
INJECT_BASIC = """    credentials:
      type: basic
      username: robot
      password: robot-secret
"""


def _status(flow: http.HTTPFlow) -> int:
    assert flow.response is not None, (flow.error, flow.metadata)
    return flow.response.status_code


def _code(flow: http.HTTPFlow) -> str:
    assert flow.response is not None
    return json.loads(flow.response.content)["errors"][0]["code"]


# --- requestheaders: early exits -----------------------------------------------------------


@pytest.mark.parametrize("case", ["has a response", "has an error", "is not live"])
@run
async def test_requestheaders_leaves_answered_errored_and_dead_flows_alone(
    case, write_policy, certs_dir
):
    flow = {
        "has a response": lambda: tflow.tflow(resp=True),
        "has an error": lambda: tflow.tflow(err=True),
        "is not live": lambda: tflow.tflow(live=False),
    }[case]()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:http://127.0.0.1:5000")
    before = (flow.response, flow.error, dict(flow.request.headers))
    async with running(write_policy(), certs_dir) as harness:
        await harness.requests.requestheaders(flow)
        assert harness.states.get(flow) is None
        assert (flow.response, flow.error, dict(flow.request.headers)) == before
        assert fail_closed.FORWARD_MARK not in flow.metadata
        assert fail_closed.LOCAL_MARK not in flow.metadata


@run
async def test_marks_from_an_earlier_life_of_the_flow_decide_nothing(write_policy, certs_dir):
    flow = registry_flow("/v2/public/app/manifests/1")
    flow.metadata[fail_closed.FORWARD_MARK] = True  # e.g. loaded from a flow file
    async with running(write_policy(), certs_dir) as harness:
        await harness.requests.requestheaders(flow)
    assert _status(flow) == 401
    assert fail_closed.FORWARD_MARK not in flow.metadata and flow.metadata[fail_closed.LOCAL_MARK]


# --- requestheaders: local answers -----------------------------------------------------------


@run
async def test_without_a_policy_every_request_is_refused(certs_dir):
    async with running(None, certs_dir) as harness:
        flows = [
            await harness.cycle(registry_flow(path))
            for path in ("/v2/", "/v2/token?service=x", "/.well-known/jwks.json", "/elsewhere")
        ]
    assert [_status(f) for f in flows] == [503] * 4
    assert {_code(f) for f in flows} == {"UNAVAILABLE"}


@run
async def test_replayed_and_foreign_destination_flows_are_refused(write_policy, certs_dir):
    replayed = registry_flow("/v2/")
    replayed.is_replay = "request"
    elsewhere = registry_flow("/v2/")
    elsewhere.request.host = "attacker.example"
    other_port = registry_flow("/v2/")
    other_port.request.port = 5001
    regular = registry_flow("/v2/")
    regular.client_conn.proxy_mode = ProxyMode.parse("regular")
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        for flow in (replayed, elsewhere, other_port, regular):
            await harness.cycle(flow)
            assert _status(flow) == 403 and _code(flow) == "DENIED"
            assert fail_closed.FORWARD_MARK not in flow.metadata
            assert flow.id not in harness.sent_upstream


@run
async def test_a_challenge_is_answered_locally_with_regauths_realm(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        flow = await harness.cycle(registry_flow("/v2/demo/app/manifests/1"))
        head = await harness.cycle(registry_flow("/v2/demo/app/manifests/1", "HEAD"))
    assert _status(flow) == 401 and flow.metadata[fail_closed.LOCAL_MARK]
    assert flow.response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{PUBLIC}/v2/token",service="regauth-test",scope="repository:demo/app:pull"'
    )
    assert flow.id not in harness.sent_upstream
    # HEAD: the same answer without a body (a body would desynchronize HTTP/1).
    assert _status(head) == 401 and head.response.raw_content == b""
    assert head.response.headers["WWW-Authenticate"] == flow.response.headers["WWW-Authenticate"]
    # … and the Content-Length the GET has (RFC 9110 §8.6; distribution does the same).
    assert int(head.response.headers["Content-Length"]) == len(flow.response.raw_content) > 100


@pytest.mark.parametrize(
    ("method", "path", "headers", "http_version", "status"),
    [
        (
            "GET",
            "/v2/",
            [("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
            "HTTP/1.1",
            400,
        ),
        ("get", "/v2/", [], "HTTP/1.1", 405),
        ("GET", "/v2/a/../b/tags/list", [], "HTTP/1.1", 400),
        ("GET", "/elsewhere", [], "HTTP/1.1", 404),
        ("GET", "/v2/", [], "HTTP/3", 505),
        ("DELETE", "/.well-known/jwks.json", [], "HTTP/1.1", 405),
        ("PUT", "/v2/token", [], "HTTP/1.1", 405),
        ("POST", "/v2/token", [("Transfer-Encoding", "chunked")], "HTTP/1.1", 411),
        ("POST", "/v2/token", [("Content-Length", "100000")], "HTTP/1.1", 413),
    ],
)
@run
async def test_front_door_refusals_are_answered_and_never_forwarded(
    method, path, headers, http_version, status, write_policy, certs_dir
):
    async with running(write_policy(), certs_dir) as harness:
        flow = await harness.cycle(registry_flow(path, method, headers, http_version=http_version))
        assert _status(flow) == status
        assert fail_closed.FORWARD_MARK not in flow.metadata
        assert flow.metadata[fail_closed.LOCAL_MARK]
        assert flow.id not in harness.sent_upstream


@run
async def test_an_http2_get_whose_stream_stays_open_is_refused(write_policy, certs_dir):
    """The HEADERS frame did not end the stream: DATA may follow, which must never reach an
    HTTP/1.1 upstream."""
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        open_stream = await harness.cycle(
            registry_flow("/v2/public/app/manifests/1", http_version="HTTP/2.0", end_stream=False)
        )
        ended = await harness.send(
            registry_flow("/v2/public/app/manifests/1", http_version="HTTP/2.0")
        )
    assert _status(open_stream) == 400 and open_stream.id not in harness.sent_upstream
    assert ended.response is None and ended.metadata[fail_closed.FORWARD_MARK]


@run
async def test_jwks_is_answered_locally(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        flow = await harness.cycle(registry_flow("/.well-known/jwks.json"))
    assert _status(flow) == 200 and flow.response.headers["Content-Type"] == "application/json"
    assert json.loads(flow.response.content)["keys"]


@run
async def test_a_refused_request_with_a_large_body_is_answered_by_the_sink(write_policy, certs_dir):
    body = b"x" * 5000
    flow = registry_flow(
        "/v2/demo/app/blobs/uploads/",
        "POST",
        {"Expect": "100-continue", "Authorization": "Basic c2VjcmV0"},
        body,
    )
    async with running(write_policy(), certs_dir, regauth_stream_threshold=1024) as harness:
        await harness.requests.requestheaders(flow)
        request = flow.request
        assert (request.scheme, request.host, request.port) == (
            "http",
            "127.0.0.1",
            harness.requests.sink.port,
        )
        assert NONCE_HEADER in request.headers and "expect" not in request.headers
        assert "authorization" not in request.headers  # the credentials stop here
        assert flow.response is None and callable(request.stream)
        assert flow.metadata[DISCARD_MARK] and flow.metadata[fail_closed.LOCAL_MARK]
        assert harness.states.get(flow).via_sink

        flow = registry_flow("/v2/demo/app/blobs/uploads/", "POST", {}, body)
        await harness.cycle(flow)
    assert _status(flow) == 401 and "Bearer" in flow.response.headers["WWW-Authenticate"]
    assert flow.response.headers["Connection"] == "close"
    assert flow.id not in harness.sent_upstream


@run
async def test_a_refused_request_with_a_small_body_is_answered_directly(write_policy, certs_dir):
    flow = registry_flow("/v2/demo/app/blobs/uploads/", "POST", {}, b"x" * 10)
    async with running(write_policy(), certs_dir, regauth_stream_threshold=1024) as harness:
        await harness.cycle(flow)
    assert (
        _status(flow) == 401
        and flow.request.host == "127.0.0.1"
        and flow.request.port == 5000
        and not flow.request.stream
    )


# --- requestheaders: forwarding --------------------------------------------------------------


@run
async def test_a_forwarded_request_gets_the_decided_header_changes(write_policy, certs_dir):
    flow = registry_flow(
        "/v2/public/app/manifests/1", headers={"Forwarded": "for=1.2.3.4", "Upgrade": "h2c"}
    )
    flow.request.authority = "127.0.0.1:5000"  # absolute-form target
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        await harness.send(flow)
        assert harness.states.get(flow).answered_by == "upstream"
    assert flow.metadata.get(fail_closed.FORWARD_MARK) and flow.response is None
    headers = flow.request.headers
    assert "forwarded" not in headers and "upgrade" not in headers
    assert headers["X-Forwarded-Host"] == "localhost:5443"
    assert headers["X-Forwarded-Proto"] == "https"
    assert flow.request.authority == ""  # never the client's host in the upstream's request line
    assert flow.error is None


@run
async def test_an_http2_request_keeps_its_authority(write_policy, certs_dir):
    flow = registry_flow("/v2/public/app/manifests/1", http_version="HTTP/2.0")
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        await harness.send(flow)
    assert flow.metadata[fail_closed.FORWARD_MARK] and flow.request.authority == "localhost:5443"


@run
async def test_a_token_with_the_access_is_forwarded_with_its_header(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        token = await get_token(harness, "repository:demo/app:pull,push", user="ci")
        flow = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", headers={"Authorization": f"Bearer {token}"})
        )
    assert _status(flow) == 200 and flow.metadata[fail_closed.FORWARD_MARK]
    assert harness.sent_upstream[flow.id] == b""


@run
async def test_an_upload_body_gets_a_fixed_content_type(write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = await harness.send(
            registry_flow(UPLOAD, "PUT", {"Content-Type": "text/plain"}, b"abc")
        )
    assert flow.metadata[fail_closed.FORWARD_MARK]
    assert flow.request.headers["Content-Type"] == "application/octet-stream"
    assert flow.request.raw_content == b"abc"


@run
async def test_a_large_body_streams_through_and_is_counted(write_policy, certs_dir):
    body = b"b" * 4096
    async with running(
        write_policy(mode="delegate"), certs_dir, regauth_stream_threshold=1024
    ) as harness:
        flow = registry_flow(UPLOAD, "PUT", {}, body)
        await harness.cycle(flow)
    assert callable(flow.request.stream) and flow.request.raw_content is None
    assert harness.sent_upstream[flow.id] == body


@run
async def test_an_http2_body_without_length_is_chunked_for_the_upstream(write_policy, certs_dir):
    async with running(
        write_policy(mode="delegate"), certs_dir, regauth_stream_threshold=1024
    ) as harness:
        flow = registry_flow(UPLOAD, "PUT", {}, b"c" * 10, "HTTP/2.0")
        await harness.send(flow)
    assert flow.request.headers["Transfer-Encoding"] == "chunked"
    assert callable(flow.request.stream)


@run
async def test_inject_mode_replaces_the_clients_authorization(write_policy, certs_dir):
    async with running(write_policy(upstream_extra=INJECT_BASIC), certs_dir) as harness:
        token = await get_token(harness, "repository:public/app:pull")
        flow = registry_flow(
            "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
        )
        await harness.send(flow)
        assert harness.states.get(flow).injected
    assert flow.metadata[fail_closed.FORWARD_MARK]
    assert flow.request.headers["Authorization"] == basic("robot", "robot-secret")


@run
async def test_inject_mode_without_upstream_credentials_is_a_502(write_policy, certs_dir):
    async with running(write_policy(upstream_extra=INJECT_BASIC), certs_dir) as harness:
        token = await get_token(harness, "repository:public/app:pull")

        def unavailable(scopes):
            raise UpstreamAuthError("the upstream's token service answered 500")

        harness.config.active.upstream_auth.header_for = unavailable
        flow = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            )
        )
    assert _status(flow) == 502 and _code(flow) == "UNAVAILABLE"
    assert fail_closed.FORWARD_MARK not in flow.metadata and flow.id not in harness.sent_upstream


# --- the token endpoint ----------------------------------------------------------------------


@run
async def test_a_token_get_is_answered_and_its_credentials_leave_the_flow(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        flow = token_flow("repository:demo/app:pull,push", user="ci")
        await harness.requests.requestheaders(flow)
        # Scrubbed as soon as the request is decided: never forwarded, never shown.
        assert flow.request.headers["Authorization"] == f"Basic {REDACTED}"
        assert _status(flow) == 200 and flow.metadata[fail_closed.LOCAL_MARK]
    body = json.loads(flow.response.content)
    assert body["scope"] == "repository:demo/app:pull,push" and body["token"]
    assert "refresh_token" not in body


@run
async def test_a_token_post_is_read_first_then_answered(write_policy, certs_dir):
    form = {
        "grant_type": "password",
        "username": "ci",
        "password": PASSWORDS["ci"],
        "client_id": "containerd",
        "scope": "repository:demo/app:pull",
        "service": "regauth-test",
        "access_type": "offline",
    }
    async with running(write_policy(), certs_dir) as harness:
        flow = token_post(form)
        await harness.hook("requestheaders", flow)  # the guard included
        assert flow.response is None and flow.error is None  # waiting for the form
        assert flow.metadata[fail_closed.LOCAL_MARK]
        flow.request.data.content = urlencode(form).encode()
        await harness.hook("request", flow)
    assert _status(flow) == 200
    body = json.loads(flow.response.content)
    assert body["token"] and body["refresh_token"]
    stored = flow.request.urlencoded_form
    assert stored["password"] == REDACTED and stored["username"] == "ci"


@run
async def test_a_token_post_whose_body_does_not_match_its_length_is_refused(
    write_policy, certs_dir
):
    async with running(write_policy(), certs_dir) as harness:
        flow = token_post({"grant_type": "password"}, "HTTP/2.0", headers={"Content-Length": "200"})
        await harness.cycle(flow)
    assert _status(flow) == 400 and _code(flow) == "SIZE_INVALID"


@run
async def test_a_wrong_password_gets_a_basic_challenge_at_the_token_endpoint(
    write_policy, certs_dir
):
    flow = registry_flow(
        "/v2/token?service=regauth-test&scope=repository:demo/app:pull",
        headers={"Authorization": basic("ci", "wrong")},
    )
    async with running(write_policy(), certs_dir) as harness:
        await harness.cycle(flow)
    assert _status(flow) == 401
    assert flow.response.headers["WWW-Authenticate"].startswith("Basic")


# --- request: body checks and early exits ----------------------------------------------------


@run
async def test_a_buffered_body_that_breaks_its_declared_length_is_refused(write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = registry_flow(UPLOAD, "PUT", {"Content-Length": "10"}, b"short", "HTTP/2.0")
        await harness.cycle(flow)
    assert _status(flow) == 400 and _code(flow) == "SIZE_INVALID"
    assert fail_closed.FORWARD_MARK not in flow.metadata and flow.id not in harness.sent_upstream


@run
async def test_a_streamed_body_that_breaks_its_declared_length_is_cut(
    write_policy, certs_dir, caplog
):
    async with running(
        write_policy(mode="delegate"), certs_dir, regauth_stream_threshold=1024
    ) as harness:
        flow = registry_flow(UPLOAD, "PUT", {"Content-Length": "5000"}, b"s" * 3000, "HTTP/2.0")
        await harness.cycle(flow)
    assert flow.error is not None and flow.error.msg == "Connection killed."
    assert "does not match its declared length; request aborted" in caplog.text


@run
async def test_a_body_that_matches_its_length_goes_on(write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = registry_flow(UPLOAD, "PUT", {"Content-Length": "5"}, b"exact", "HTTP/2.0")
        await harness.cycle(flow)
    assert _status(flow) == 200 and harness.sent_upstream[flow.id] == b"exact"


@pytest.mark.parametrize("case", ["has an error", "is not live", "was never decided"])
@run
async def test_request_leaves_errored_dead_and_undecided_flows_alone(case, write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = registry_flow(UPLOAD, "PUT", {"Content-Length": "10"}, b"short", "HTTP/2.0")
        if case != "was never decided":
            await harness.requests.requestheaders(flow)
        if case == "has an error":
            flow.error = tflow.terr()
        elif case == "is not live":
            flow.live = False
        flow.request.data.content = b"short"
        await harness.requests.request(flow)
    assert flow.response is None  # a decided one would get 400 here (previous tests)


# --- server_connect, running, done -----------------------------------------------------------


@run
async def test_the_upstream_is_always_spoken_to_in_http1(write_policy, certs_dir):
    server = tflow.tserver_conn()
    server.alpn_offers = (b"h2", b"http/1.1")
    async with running(write_policy(), certs_dir) as harness:
        await harness.lifecycle(
            server_hooks.ServerConnectHook(
                server_hooks.ServerConnectionHookData(server=server, client=tflow.tclient_conn())
            )
        )
    assert server.alpn_offers == (b"http/1.1",)


@run
async def test_the_refusal_sink_runs_while_regauth_runs(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        sink, pool = harness.requests.sink, harness.requests.login_pool
        assert sink.running and sink.port
    assert not sink.running and pool._shutdown
