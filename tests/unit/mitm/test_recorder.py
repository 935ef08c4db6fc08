"""The recorder in process: exchange records, conversations, mitmweb comments and markers, and
what is left of each flow's secrets (README "The exchange log and mitmweb").

Hooks: `response` and `error` (and their early exits), `configure` (the log file), `done`.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.recorder import Recorder
from regauth.mitm.scrub import display_copy
from regauth.mitm.shown import REDACTED
from regauth.ops.conversations import Conversations
from regauth.upstream_auth import _Cached
from tests.support.policies import PASSWORDS
from tests.unit.helpers import BUILD_ID
from tests.unit.mitm.harness import PUBLIC
from tests.unit.mitm.harness import UPSTREAM
from tests.unit.mitm.harness import basic
from tests.unit.mitm.harness import get_token
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import token_flow
from tests.unit.mitm.harness import token_post
from tests.unit.mitm.harness import upstream_response

INJECT_BASIC = """    credentials:
      type: basic
      username: robot
      password: robot-secret
"""
INJECT_BEARER = INJECT_BASIC.replace("type: basic", "type: bearer")
UPLOAD = "/v2/demo/app/blobs/uploads/"


@pytest.fixture
def log(tmp_path):
    return tmp_path / "exchange.jsonl"


def _by_flow(harness, flow) -> dict:
    [record] = [r for r in harness.records() if r["flow"] == flow.id]
    return record


def _conv(flow) -> str:
    assert flow.comment.endswith("]") and "[conv " in flow.comment, flow.comment
    return flow.comment.rsplit("[conv ", 1)[1][:-1]


# --- records per kind of flow ----------------------------------------------------------------


@run
async def test_a_challenge_is_recorded_with_the_challenge_the_client_got(
    write_policy, certs_dir, log
):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow("/v2/demo/app/manifests/1"))
        record = _by_flow(harness, flow)
    assert record == {
        "version": 2,
        "time": record["time"],
        "flow": flow.id,
        "conversation": _conv(flow),
        "client": "127.0.0.1:40000",
        "method": "GET",
        "path": "/v2/demo/app/manifests/1",
        "http_version": "HTTP/1.1",
        "kind": "registry",
        "status": 401,
        "answered_by": "regauth",
        "repository": "demo/app",
        "route": "manifest",
        "required": ["repository:demo/app:pull"],
        "decision": {"forward": False, "reason": "no token"},
        "challenge": {
            "scheme": "Bearer",
            "realm": f"{PUBLIC}/v2/token",
            "service": "regauth-test",
            "scopes": ["repository:demo/app:pull"],
        },
        "bytes": {"request": 0, "response": len(flow.response.content)},
    }
    assert flow.comment == (
        f"401 challenge → scope repository:demo/app:pull — no token [conv {record['conversation']}]"
    )
    assert flow.marked == ":lock:"


@run
async def test_a_forwarded_request_is_recorded_with_its_verified_token(
    write_policy, certs_dir, log
):
    async with running(write_policy(), certs_dir, log) as harness:
        token = await get_token(harness, "repository:demo/app:pull", user="ci")
        flow = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", headers={"Authorization": f"Bearer {token}"}),
            upstream_response(200, [("Date", "Mon, 30 Nov 2026 10:00:00 GMT")], b"{}"),
        )
        record = _by_flow(harness, flow)
    assert record["status"] == 200 and record["answered_by"] == "upstream"
    assert record["decision"] == {
        "forward": True,
        "reason": "token grants repository:demo/app:pull",
        "verified_token": {"issuer": "regauth-test-issuer", "subject": "ci", "source": "regauth"},
    }
    assert record["auth"]["scheme"] == "Bearer"
    assert record["auth"]["jwt"]["claims"]["sub"] == "ci"
    assert record["upstream_date"] == "Mon, 30 Nov 2026 10:00:00 GMT"
    assert record["upstream_ms"] >= 0
    assert record["bytes"] == {"request": 0, "response": 2}
    assert token.rsplit(".", 1)[1] not in log.read_text()  # never a signature
    assert flow.comment.startswith("200 ci → repository:demo/app:pull [conv ")
    assert flow.marked == ":white_check_mark:"


@run
async def test_a_delegated_request_and_the_upstreams_challenge(write_policy, certs_dir, log):
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        flow = await harness.cycle(
            registry_flow("/v2/public/app/manifests/1"),
            upstream_response(
                401,
                [
                    (
                        "WWW-Authenticate",
                        f'Bearer realm="{UPSTREAM}/auth",service="r",'
                        'scope="repository:public/app:pull"',
                    )
                ],
            ),
        )
        record = _by_flow(harness, flow)
    assert record["answered_by"] == "upstream" and record["status"] == 401
    assert record["decision"] == {"forward": True, "reason": "delegated to the upstream registry"}
    assert record["upstream_challenge"] == [
        {
            "scheme": "Bearer",
            "realm": f"{UPSTREAM}/auth",
            "service": "r",
            "scopes": ["repository:public/app:pull"],
        }
    ]
    assert record["challenge"]["realm"] == f"{PUBLIC}/v2/token"
    assert flow.comment.startswith("upstream 401 challenge → scope repository:public/app:pull")
    assert flow.marked == ":lock:"


@run
async def test_insufficient_scope_is_marked_as_refused(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        token = await get_token(harness, "repository:demo/app:pull")
        flow = await harness.cycle(
            registry_flow(
                "/v2/demo/app/manifests/1",
                "PUT",
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                b"{}",
            )
        )
        record = _by_flow(harness, flow)
    assert record["challenge"]["error"] == "insufficient_scope"
    assert "[insufficient_scope]" in flow.comment and flow.marked == ":x:"


@run
async def test_a_refused_path_is_recorded_with_its_reason(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow("/v2/a/../b/tags/list"))
        record = _by_flow(harness, flow)
    assert record["status"] == 400 and record["answered_by"] == "regauth"
    assert record["decision"]["forward"] is False
    assert record["decision"]["reason"].startswith("refused path: ")
    assert flow.comment.startswith("400 refused by regauth: refused path: ")
    assert flow.marked == ":no_entry:"


@run
async def test_an_issued_token_is_recorded_with_every_decision(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(
            token_flow(
                "repository:demo/app:pull,push", "repository:cache/x:pull", user="ci", offline=True
            )
        )
        record = _by_flow(harness, flow)
    body = json.loads(flow.response.content)
    assert record["kind"] == "token" and record["status"] == 200
    assert record["answered_by"] == "regauth"
    assert record["auth"] == {"scheme": "Basic", "username": "ci"}
    assert record["token_request"] == {
        "method": "GET",
        "grant_type": "get",
        "service": "regauth-test",
        "username": "ci",
        "requested": ["repository:demo/app:pull,push", "repository:cache/x:pull"],
    }
    response = record["token_response"]
    assert response["account"] == "ci" and response["credential"] == "password"
    assert [d["rule"] for d in response["decisions"]] == [2, 1]
    assert response["granted"] == ["repository:demo/app:pull,push", "repository:cache/x:pull"]
    assert response["refresh_token_issued"] is True
    assert response["expires_in"] == 120 and response["jti"]
    assert "offline_token=true" in record["path"]
    text = log.read_text()
    for secret in (PASSWORDS["ci"], body["refresh_token"], body["token"].rsplit(".", 1)[1]):
        assert secret not in text
    assert flow.comment.startswith(
        "token for ci: repository:demo/app:pull,push → granted [pull,push] (rule 2: CI "
        "publishes); repository:cache/x:pull → granted [pull] (rule 1: CI writes the build "
        "cache) [conv "
    )
    assert flow.marked == ":key:"


@run
async def test_an_anonymous_token_with_nothing_granted(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(token_flow("repository:secret/app:pull"))
        record = _by_flow(harness, flow)
    assert record["token_response"]["decisions"][0]["outcome"] == "default deny"
    assert flow.comment.startswith(
        "token for anonymous: repository:secret/app:pull → default deny [conv "
    )
    assert flow.marked == ":key:"


@run
async def test_a_refused_token_request_is_recorded_without_the_password(
    write_policy, certs_dir, log
):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(
            registry_flow(
                "/v2/token?service=regauth-test&scope=repository:demo/app:pull",
                headers={"Authorization": basic("ci", "wrong-password")},
            )
        )
        record = _by_flow(harness, flow)
    assert record["status"] == 401
    assert record["token_response"]["refused"]
    assert record["token_response"]["failed_login_counted"] is True
    assert record["challenge"]["scheme"] == "Basic"
    assert "wrong-password" not in log.read_text()
    assert flow.comment.startswith(f"401 token refused: {record['token_response']['refused']}")
    assert flow.marked == ":no_entry:"


@run
async def test_the_key_set_is_recorded(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow("/.well-known/jwks.json"))
        record = _by_flow(harness, flow)
    assert (record["kind"], record["status"], record["answered_by"]) == ("jwks", 200, "regauth")
    assert flow.marked == ":white_check_mark:"


@run
async def test_a_refusal_answered_by_the_sink_is_recorded_with_its_discarded_body(
    write_policy, certs_dir, log
):
    body = b"z" * 3000
    async with running(write_policy(), certs_dir, log, regauth_stream_threshold=1024) as harness:
        flow = await harness.cycle(registry_flow(UPLOAD, "POST", {}, body))
        record = _by_flow(harness, flow)
    assert record["status"] == 401 and record["answered_by"] == "regauth"
    assert record["body_discarded"] is True
    assert record["bytes"]["request"] == len(body)
    assert record["challenge"]["scopes"] == ["repository:demo/app:pull,push"]
    assert flow.marked == ":lock:"


@run
async def test_an_upstream_401_to_injected_credentials_is_recorded_as_a_503(
    write_policy, certs_dir, log
):
    async with running(write_policy(upstream_extra=INJECT_BASIC), certs_dir, log) as harness:
        token = await get_token(harness, "repository:public/app:pull")
        flow = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            ),
            upstream_response(401, [("WWW-Authenticate", 'Basic realm="registry"')]),
        )
        record = _by_flow(harness, flow)
    assert record["status"] == 503 and record["upstream_credentials"] == "injected"
    assert record["decision"]["forward"] is False
    assert record["decision"]["reason"] == "upstream refused the injected credentials"
    assert record["upstream_challenge"] == [{"scheme": "Basic", "realm": "registry"}]
    assert "robot-secret" not in log.read_text()
    assert "(upstream credentials injected)" in flow.comment and flow.marked == ":x:"


@run
async def test_unavailable_upstream_credentials_are_recorded(write_policy, certs_dir, log):
    async with running(write_policy(upstream_extra=INJECT_BEARER), certs_dir, log) as harness:
        from regauth.upstream_auth import UpstreamAuthError

        def unavailable(scopes):
            raise UpstreamAuthError("no Bearer challenge")

        harness.config.active.upstream_auth.header_for = unavailable
        token = await get_token(harness, "repository:public/app:pull")
        flow = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            )
        )
        record = _by_flow(harness, flow)
    assert record["status"] == 502 and record["answered_by"] == "regauth"
    assert record["decision"] == {
        "forward": False,
        "reason": "upstream credentials unavailable",
        "verified_token": record["decision"]["verified_token"],
    }
    assert flow.comment.startswith("502 refused by regauth: upstream credentials unavailable")


@run
async def test_an_errored_flow_is_recorded_with_its_error(write_policy, certs_dir, log):
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        flow = await harness.fail(
            registry_flow("/v2/public/app/manifests/1"), "[Errno 111] Connect call failed"
        )
        record = _by_flow(harness, flow)
    assert record["status"] is None and record["error"] == "[Errno 111] Connect call failed"
    assert record["answered_by"] == "upstream"
    assert flow.comment.startswith("error: [Errno 111] Connect call failed [conv ")
    assert flow.marked == ":x:"


@run
async def test_a_killed_flow_is_recorded(write_policy, certs_dir, log):
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow(), upstream_response(101, [("Upgrade", "x")]))
        record = _by_flow(harness, flow)
    assert record["status"] == 101 and record["error"] == "Connection killed."


@run
async def test_an_internal_error_is_recorded_as_regauths_refusal(
    write_policy, certs_dir, log, monkeypatch
):
    """fail_closed answers 500; the record must say who answered and why (README: every
    record has answered_by regauth or upstream), and mitmweb must not show it as an
    ordinary response."""

    def boom(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr("regauth.front.decide", boom)
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow("/v2/demo/app/manifests/1"))
        record = _by_flow(harness, flow)
    assert record["status"] == 500
    assert record["answered_by"] == "regauth"
    assert record["decision"]["reason"] and record["decision"].get("forward") is not True
    assert flow.comment.startswith("500 refused by regauth")


@run
async def test_secret_query_parameters_are_not_logged(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(
            registry_flow(
                "/v2/token?service=regauth-test&password=hunter2&refresh_token=r1&scope="
                "repository:demo/app:pull&access_token=a1"
            )
        )
        record = _by_flow(harness, flow)
    assert record["path"] == "/v2/token?service=regauth-test&scope=repository:demo/app:pull"
    assert not {"hunter2", "r1", "a1"} & set(log.read_text().replace('"', " ").split())


@run
async def test_capability_ids_are_hashed_in_the_log(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow(f"/v2/builds/{BUILD_ID}/manifests/1"))
        record = _by_flow(harness, flow)
    assert BUILD_ID not in log.read_text()
    assert record["repository"].startswith("builds/<id:")


# --- conversations -----------------------------------------------------------------------------


@run
async def test_challenge_token_and_retries_share_one_conversation(write_policy, certs_dir, log):
    scope = "repository:demo/app:pull"
    async with running(write_policy(), certs_dir, log) as harness:
        challenge = await harness.cycle(registry_flow("/v2/demo/app/manifests/1"))
        token_request = await harness.cycle(token_flow(scope, user="ci"))
        token = json.loads(token_request.response.content)["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        retry = await harness.cycle(registry_flow("/v2/demo/app/manifests/1", headers=bearer))
        # A retry the token does not cover is challenged again, in the same conversation.
        push = await harness.cycle(
            registry_flow(
                "/v2/demo/app/manifests/1",
                "PUT",
                {**bearer, "Content-Type": "application/json"},
                b"{}",
            )
        )
        elsewhere = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", client=("10.0.0.9", 5555))
        )
        records = harness.records()
    assert push.response.status_code == 401
    ids = {_conv(f) for f in (challenge, token_request, retry, push)}
    assert len(ids) == 1 and _conv(elsewhere) not in ids
    assert [r["conversation"] for r in records] == [
        _conv(f) for f in (challenge, token_request, retry, push, elsewhere)
    ]


# --- hooks: early exits, configure, done -----------------------------------------------------


@pytest.mark.parametrize("hook", ["response", "error"])
@run
async def test_flows_regauth_never_decided_are_not_recorded(hook, write_policy, certs_dir, log):
    flow = tflow.tflow(resp=True, err=True)
    async with running(write_policy(), certs_dir, log) as harness:
        getattr(harness.recorder, hook)(flow)
    assert flow.comment == "" and not flow.marked
    assert not log.exists() or log.read_text() == ""


@run
async def test_each_flow_is_recorded_once(write_policy, certs_dir, log):
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        flow = await harness.cycle(registry_flow())
        harness.recorder.response(flow)
        harness.recorder.error(flow)
        assert len(harness.records()) == 1
        assert len(harness.states) == 0  # nothing kept once recorded


def test_the_log_file_follows_its_option(tmp_path):
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    recorder = Recorder(ConfigLoader(), FlowStates())
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, regauth_log=str(first))
        old = recorder.exchange_log
        assert old.path == first
        tctx.configure(recorder, regauth_log=str(first))
        assert recorder.exchange_log is old
        old.write({"n": 1})
        tctx.configure(recorder, regauth_log=str(second))
        assert recorder.exchange_log is not old and old._fd is None  # closed
        recorder.exchange_log.write({"n": 2})
        asyncio.run(recorder.done())
    assert first.read_text() == '{"n":1}\n' and second.read_text() == '{"n":2}\n'
    assert recorder.exchange_log._fd is None  # closed by done
    assert oct(second.stat().st_mode & 0o777) == "0o600"


# --- what is left of the secrets on the stored flow, and what mitmweb shows --------------------


@run
async def test_stored_flows_lose_their_credentials_when_they_end(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        token = await get_token(harness, "repository:demo/app:pull", user="ci")
        bearer = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", headers={"Authorization": f"Bearer {token}"})
        )
        basic_auth = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", headers={"Authorization": basic("ci", "pw")})
        )
    head, claims, _ = token.split(".")
    assert bearer.request.headers["Authorization"] == f"Bearer {head}.{claims}."
    assert basic_auth.request.headers["Authorization"] == f"Basic {REDACTED}"


@run
async def test_token_responses_are_scrubbed_a_second_after_they_were_sent(
    write_policy, certs_dir, monkeypatch
):
    scheduled = []
    async with running(write_policy(), certs_dir) as harness:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(
            loop,
            "call_later",
            lambda delay, callback, *args: scheduled.append((delay, callback, args)),
        )
        form = {
            "grant_type": "password",
            "username": "ci",
            "password": PASSWORDS["ci"],
            "client_id": "test",
            "scope": "repository:demo/app:pull",
            "service": "regauth-test",
            "access_type": "offline",
        }
        flow = await harness.cycle(token_post(form))
    sent = json.loads(flow.response.content)  # what the client got: whole
    assert sent["refresh_token"] != REDACTED and sent["token"].count(".") == 2
    assert flow.request.urlencoded_form["password"] == REDACTED
    [(delay, callback, args)] = scheduled
    assert delay == 1.0
    callback(*args)
    stored = json.loads(flow.response.content)
    assert stored["refresh_token"] == REDACTED
    assert stored["token"] == stored["access_token"] == sent["token"].rsplit(".", 1)[0] + "."


@run
async def test_what_mitmweb_shows_of_a_token_flow_never_holds_a_secret(write_policy, certs_dir):
    async with running(write_policy(), certs_dir) as harness:
        flow = registry_flow(
            "/v2/token?service=regauth-test&scope=repository:demo/app:pull"
            "&offline_token=true&password=hunter2",
            headers={"Authorization": basic("ci", PASSWORDS["ci"])},
        )
        await harness.requests.requestheaders(flow)
        body = json.loads(flow.response.content)
        shown = display_copy(flow)  # before the delayed scrub: mitmweb may show it now
    text = repr(shown.get_state())
    for secret in (
        "hunter2",
        PASSWORDS["ci"],
        body["refresh_token"],
        body["token"].rsplit(".", 1)[1],
        basic("ci", PASSWORDS["ci"]).split()[1],
    ):
        assert secret not in text
    assert shown.id == flow.id
    assert json.loads(flow.response.content) == body  # the flow itself is not changed


@run
async def test_injected_credentials_are_never_shown_nor_kept(write_policy, certs_dir):
    async with running(write_policy(upstream_extra=INJECT_BASIC), certs_dir) as harness:
        token = await get_token(harness, "repository:public/app:pull")
        flow = registry_flow(
            "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
        )
        await harness.send(flow)
        in_flight = flow.request.headers["Authorization"]
        shown = display_copy(flow).request.headers["Authorization"]
        await harness.answer(flow, upstream_response(200))
    head, claims, _ = token.split(".")
    assert in_flight == basic("robot", "robot-secret")  # what the upstream must get
    assert shown == f"Bearer {head}.{claims}."
    assert flow.request.headers["Authorization"] == f"Bearer {head}.{claims}."


@run
async def test_injected_bearer_credentials_are_not_kept_either(write_policy, certs_dir):
    async with running(write_policy(upstream_extra=INJECT_BEARER), certs_dir) as harness:
        harness.config.active.upstream_auth._cache["repository:public/app:pull"] = _Cached(
            "Bearer upstream-secret", time.time() + 300
        )
        token = await get_token(harness, "repository:public/app:pull")
        flow = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            )
        )
    assert "upstream-secret" not in repr(flow.get_state())


@run
async def test_a_delegated_request_names_the_subject_its_token_claims(write_policy, certs_dir, log):
    # regauth does not verify tokens in delegate mode: "no token" would be wrong.
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        token = harness.config.active.runtime.issuer.issue_access("ci", []).token
        flow = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            )
        )
    # Named as `regauth trace` does: a claim, in quotes (issue 20: a claim is not an account).
    assert flow.comment.startswith(
        "200 sub='ci' (claimed, checked by the registry) → repository:public/app:pull [conv "
    ), flow.comment


@run
async def test_a_token_from_another_replica_keeps_its_challenge_to_its_account(
    write_policy, certs_dir, log
):
    """Issue 26, item 7: alice's token was issued by another replica (this one has no record
    of it); the challenge to her request is still hers, so ci's token request from the same
    address (one NAT) starts its own conversation instead of joining alice's."""
    async with running(write_policy(), certs_dir, log) as harness:
        token = await get_token(harness, "repository:demo/app:pull", user="alice")
        harness.recorder.conversations = Conversations()  # another replica: it never saw it
        challenge = await harness.cycle(
            registry_flow(
                "/v2/demo/app/manifests/1",
                "PUT",
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                b"{}",
            )
        )
        ci = await harness.cycle(token_flow("repository:demo/app:pull,push", user="ci"))
        assert _by_flow(harness, challenge)["challenge"]["error"] == "insufficient_scope"
        assert _by_flow(harness, ci)["token_response"]["account"] == "ci"
    assert _conv(ci) != _conv(challenge)
