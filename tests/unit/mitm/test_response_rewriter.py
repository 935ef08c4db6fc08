"""The response rewriter in process: what the upstream answers, made fit for regauth's clients.

Hooks: `responseheaders` (URLs, challenges, 101, streaming) and `response` (the kept body, the
502 that replaces an upstream 401 to regauth's own credentials), with their early exits.
"""

from __future__ import annotations

import json
import time

import pytest
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth.mitm.response_rewriter import KEEP_FOR_DISPLAY
from regauth.upstream_auth import HttpResult
from regauth.upstream_auth import UpstreamAuthError
from regauth.upstream_auth import _Cached
from tests.unit.mitm.harness import PUBLIC
from tests.unit.mitm.harness import UPSTREAM
from tests.unit.mitm.harness import get_token
from tests.unit.mitm.harness import killed
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import upstream_response

REALM = f"{PUBLIC}/v2/token"
INJECT_BEARER = """    credentials:
      type: bearer
      username: robot
      password: robot-secret
"""


async def _through(policy, certs_dir, response, path="/v2/public/app/tags/list", **options):
    """One delegated request and the upstream's `response`; the flow and its state."""
    async with running(policy, certs_dir, **options) as harness:
        flow = registry_flow(path)
        await harness.send(flow)
        state = harness.states.get(flow)
        await harness.answer(flow, response)
        return flow, state, harness


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        (
            "Location",
            f"{UPSTREAM}/v2/public/app/blobs/uploads/u1?_state=s",
            "/v2/public/app/blobs/uploads/u1?_state=s",
        ),
        ("Location", f"{PUBLIC}/v2/public/app/blobs/uploads/u1", "/v2/public/app/blobs/uploads/u1"),
        ("Location", "https://storage.example/blob?sig=1", "https://storage.example/blob?sig=1"),
        ("Location", "/v2/public/app/blobs/uploads/u2", "/v2/public/app/blobs/uploads/u2"),
        (
            "Content-Location",
            f"{UPSTREAM}/v2/public/app/manifests/sha256:" + "a" * 64,
            "/v2/public/app/manifests/sha256:" + "a" * 64,
        ),
        ("Content-Location", "https://elsewhere.example/x", "https://elsewhere.example/x"),
    ],
)
@run
async def test_locations_on_the_upstream_become_relative(
    header, value, expected, write_policy, certs_dir
):
    flow, _, _ = await _through(
        write_policy(mode="delegate"), certs_dir, upstream_response(202, [(header, value)])
    )
    assert flow.response.headers[header] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            f'<{UPSTREAM}/v2/_catalog?last=b&n=2>; rel="next"',
            f'<{PUBLIC}/v2/_catalog?last=b&n=2>; rel="next"',
        ),
        ('</v2/_catalog?last=b&n=2>; rel="next"', '</v2/_catalog?last=b&n=2>; rel="next"'),
        ('<https://elsewhere.example/x>; rel="next"', '<https://elsewhere.example/x>; rel="next"'),
    ],
)
@run
async def test_link_pages_move_to_the_public_url(value, expected, write_policy, certs_dir):
    flow, _, _ = await _through(
        write_policy(mode="delegate"), certs_dir, upstream_response(200, [("Link", value)])
    )
    assert flow.response.headers["Link"] == expected


@run
async def test_several_challenge_lines_become_one_bearer_challenge(write_policy, certs_dir):
    upstream = upstream_response(
        401,
        [
            ("WWW-Authenticate", 'Basic realm="registry"'),
            (
                "WWW-Authenticate",
                f'Bearer realm="{UPSTREAM}/auth",service="registry.internal",'
                'scope="repository:public/app:pull",error="insufficient_scope"',
            ),
        ],
    )
    flow, state, _ = await _through(write_policy(mode="delegate"), certs_dir, upstream)
    assert flow.response.headers.get_all("WWW-Authenticate") == [
        f'Bearer realm="{REALM}",service="regauth-test",scope="repository:public/app:pull",'
        'error="insufficient_scope"'
    ]
    assert [c["scheme"] for c in state.upstream_challenge] == ["Basic", "Bearer"]
    assert state.upstream_challenge[1]["realm"] == f"{UPSTREAM}/auth"


@run
async def test_a_basic_only_challenge_becomes_a_plain_bearer_challenge(write_policy, certs_dir):
    flow, _, _ = await _through(
        write_policy(mode="delegate"),
        certs_dir,
        upstream_response(
            401, [("WWW-Authenticate", 'Basic realm="registry", Digest realm="x", nonce="1"')]
        ),
    )
    assert flow.response.headers.get_all("WWW-Authenticate") == [
        f'Bearer realm="{REALM}",service="regauth-test"'
    ]


@run
async def test_challenges_outside_the_registry_api_are_left_alone(write_policy, certs_dir):
    flow, state, _ = await _through(
        write_policy(mode="delegate"),
        certs_dir,
        upstream_response(401, [("WWW-Authenticate", 'Basic realm="elsewhere"')]),
        path="/metrics",
    )
    assert flow.response.headers["WWW-Authenticate"] == 'Basic realm="elsewhere"'
    assert state.upstream_challenge == []


@run
async def test_a_101_kills_the_flow(write_policy, certs_dir):
    flow, _, harness = await _through(
        write_policy(mode="delegate"),
        certs_dir,
        upstream_response(101, [("Upgrade", "h2c"), ("Connection", "Upgrade")]),
    )
    assert killed(flow)
    assert flow.id not in harness.sent_to_client


@run
async def test_a_small_streamed_body_is_kept_for_mitmweb(write_policy, certs_dir):
    body = json.dumps({"name": "public/app", "tags": ["1"]}).encode()
    flow, state, harness = await _through(
        write_policy(mode="delegate"), certs_dir, upstream_response(200, body=body)
    )
    assert callable(flow.response.stream)
    assert harness.sent_to_client[flow.id] == body
    assert flow.response.raw_content == body and state.counted["response"] == len(body)


@run
async def test_a_large_body_streams_whole_and_only_a_bounded_prefix_is_kept(
    write_policy, certs_dir
):
    body = bytes(range(256)) * (KEEP_FOR_DISPLAY // 256 * 3)
    flow, state, harness = await _through(
        write_policy(mode="delegate"), certs_dir, upstream_response(200, body=body)
    )
    assert harness.sent_to_client[flow.id] == body  # every byte, unchanged
    assert state.counted["response"] == len(body)
    assert bytes(state.kept_response) == body[:KEEP_FOR_DISPLAY]
    assert flow.response.raw_content is None  # not kept whole on the flow


@run
async def test_a_body_cut_short_by_the_registry_is_passed_on_as_it_came(write_policy, certs_dir):
    """distribution 2.8 answers a bad Range with a 416 whose Content-Length is the blob's."""
    flow, state, harness = await _through(
        write_policy(mode="delegate"),
        certs_dir,
        upstream_response(416, [("Content-Length", "1000")], b"short"),
    )
    assert harness.sent_to_client[flow.id] == b"short"
    assert flow.response.headers["Content-Length"] == "1000"


@run
async def test_regauths_own_answers_are_not_rewritten(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        flow = await harness.cycle(registry_flow("/v2/demo/app/manifests/1"))
    assert flow.response.status_code == 401 and not flow.response.stream
    assert flow.response.headers["WWW-Authenticate"].startswith(f'Bearer realm="{REALM}"')


@pytest.mark.parametrize("hook", ["responseheaders", "response"])
@run
async def test_flows_regauth_never_decided_are_left_alone(hook, write_policy, certs_dir):
    flow = tflow.tflow(
        resp=tutils.tresp(
            status_code=302,
            headers=[(b"Location", f"{UPSTREAM}/v2/x".encode()), (b"WWW-Authenticate", b"Basic")],
        )
    )
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        result = getattr(harness.responses, hook)(flow)
        if hook == "response":
            await result
    assert flow.response.headers["Location"] == f"{UPSTREAM}/v2/x"
    assert flow.response.headers["WWW-Authenticate"] == "Basic" and not flow.response.stream


@run
async def test_a_decided_flow_without_a_response_is_left_alone(write_policy, certs_dir):
    async with running(write_policy(mode="delegate"), certs_dir) as harness:
        flow = await harness.send(registry_flow())
        harness.responses.responseheaders(flow)
        await harness.responses.response(flow)
    assert flow.response is None and flow.error is None


# --- inject mode: the upstream refusing regauth's credentials --------------------------------


async def _inject(write_policy, certs_dir, upstream, fetch=None, method="GET", times=1):
    """A client request with a good token, regauth injecting a cached upstream token, and the
    upstream answering `upstream` (`times` times in a row for the same request). `fetch`
    replaces regauth's fetcher to the upstream token service (None: nothing listens)."""
    async with running(write_policy(upstream_extra=INJECT_BEARER), certs_dir) as harness:
        auth = harness.config.active.upstream_auth
        if fetch is not None:
            auth.fetch = fetch
        token = await get_token(harness, "repository:public/app:pull")
        flows = []
        for _ in range(times):
            auth._cache["repository:public/app:pull"] = _Cached(
                "Bearer upstream-token", time.time() + 300
            )
            flow = registry_flow(method=method, headers={"Authorization": f"Bearer {token}"})
            await harness.send(flow)
            assert flow.request.headers["Authorization"] == "Bearer upstream-token"
            state = harness.states.get(flow)
            await harness.answer(flow, upstream.copy())
            flows.append((flow, state))
        flow, state = flows[-1]
        return flow, state, auth, flows


REFUSED = upstream_response(
    401,
    [("WWW-Authenticate", f'Bearer realm="{UPSTREAM}/auth",service="r",error="invalid_token"')],
    b'{"errors":[]}',
)


def _token_service(calls):
    def fetch(url, headers):
        calls.append(url)
        if url.endswith("/v2/"):
            return HttpResult(401, {}, b"", (f'Bearer realm="{UPSTREAM}/auth",service="r"',))
        return HttpResult(200, {}, json.dumps({"token": f"new-{len(calls)}"}).encode())

    return fetch


@run
async def test_an_upstream_401_is_sent_back_once_with_a_new_token(write_policy, certs_dir):
    calls: list[str] = []
    flow, state, auth, _ = await _inject(write_policy, certs_dir, REFUSED, _token_service(calls))
    assert flow.response.status_code == 307
    assert flow.response.headers["Location"] == "/v2/public/app/manifests/1"
    assert flow.response.content == b""
    assert "WWW-Authenticate" not in flow.response.headers
    assert state.upstream_refused_credentials
    assert state.reason.startswith("upstream refused the injected credentials: renewed")
    # Renewed at once: the repeated request finds the new token in the cache.
    assert [u for u in calls if "/auth" in u] and auth._cache[
        "repository:public/app:pull"
    ].header.startswith("Bearer new-")


@run
async def test_a_second_upstream_401_for_the_same_request_is_a_503_not_a_loop(
    write_policy, certs_dir
):
    calls: list[str] = []
    _, _, _, flows = await _inject(write_policy, certs_dir, REFUSED, _token_service(calls), times=3)
    assert [f.response.status_code for f, _ in flows] == [307, 503, 503]
    last = flows[-1][0].response
    assert last.headers["Retry-After"] == "1"
    assert json.loads(last.content)["errors"][0]["code"] == "UNAVAILABLE"
    assert len([u for u in calls if "/auth" in u]) == 3  # one renewal per refusal, no more


@run
async def test_an_upstream_401_when_renewal_fails_is_a_503(write_policy, certs_dir):
    def down(url, headers):
        raise UpstreamAuthError("token service down")

    flow, state, auth, _ = await _inject(write_policy, certs_dir, REFUSED, down)
    assert flow.response.status_code == 503
    assert flow.response.headers["Retry-After"] == "1"
    assert json.loads(flow.response.content)["errors"][0]["code"] == "UNAVAILABLE"
    assert "WWW-Authenticate" not in flow.response.headers
    assert state.reason == "upstream refused the injected credentials"
    assert "repository:public/app:pull" not in auth._cache  # fetched anew next time


@run
async def test_a_head_refused_upstream_is_sent_back_without_a_body(write_policy, certs_dir):
    flow, _, _, _ = await _inject(
        write_policy, certs_dir, REFUSED, _token_service([]), method="HEAD"
    )
    assert flow.response.status_code == 307 and flow.response.content == b""


@run
async def test_other_upstream_answers_in_inject_mode_pass_through(write_policy, certs_dir):
    flow, state, auth, _ = await _inject(
        write_policy, certs_dir, upstream_response(200, body=b"{}")
    )
    assert flow.response.status_code == 200 and not state.upstream_refused_credentials
    assert "repository:public/app:pull" in auth._cache


@run
async def test_an_upstream_401_without_injection_stays_a_challenge(write_policy, certs_dir):
    flow, state, _ = await _through(
        write_policy(mode="delegate"),
        certs_dir,
        upstream_response(
            401, [("WWW-Authenticate", f'Bearer realm="{UPSTREAM}/auth",service="r"')]
        ),
    )
    assert flow.response.status_code == 401 and not state.upstream_refused_credentials
