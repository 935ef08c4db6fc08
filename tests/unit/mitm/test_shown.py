"""What mitmweb shows of a flow never holds a capability id (issue 20, item 3), and the
recorder's part in items 10 and 11: comments are escaped, `auth.checked_by` says who checked a
token, and only a genuine token links a request to the conversation that issued it.

`scrub.display_copy` builds everything mitmweb shows or exports (and what its filters match);
its ids become `<id:HASH10>`, the exchange log's form, so one id correlates across log, trace
and mitmweb. In process, with regauth's real addon chain (tests/unit/mitm/harness.py).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import flowfilter
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from regauth.mitm import shown
from regauth.mitm.patches import web_window
from regauth.mitm.scrub import CLIENT_AUTHORIZATION
from regauth.mitm.scrub import display_copy
from regauth.protocol.urls import parse_origin
from regauth.runtime import Active
from tests.support.policies import policy_text
from tests.unit.helpers import BUILD_ID
from tests.unit.helpers import build_runtime
from tests.unit.mitm.harness import basic
from tests.unit.mitm.harness import get_token
from tests.unit.mitm.harness import registry_flow
from tests.unit.mitm.harness import run
from tests.unit.mitm.harness import running
from tests.unit.mitm.harness import token_flow
from tests.unit.mitm.harness import upstream_response

HIDDEN = "<id:" + hashlib.sha256(BUILD_ID.encode()).hexdigest()[:10] + ">"
REPO = f"builds/{BUILD_ID}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, object]) -> str:
    return f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(json.dumps(claims).encode())}."


# distribution's upload state: base64url(HMAC-SHA256 || JSON naming the repository).
STATE = base64.urlsafe_b64encode(
    b"\x01" * 32 + json.dumps({"Name": REPO, "UUID": "u-1", "Offset": 0}).encode()
).decode()


@pytest.fixture
def policy_in_force(tmp_path: Path, certs_dir: Path, password_hashes) -> Iterator[object]:
    runtime = build_runtime(tmp_path, certs_dir, policy_text(password_hashes))
    active = Active(
        runtime, parse_origin("https://localhost:5443"), parse_origin("http://127.0.0.1:5000")
    )
    shown.SHOWN.follow(lambda: active)
    yield runtime
    shown.SHOWN.follow(lambda: None)


def _shown_text(flow) -> str:  # type: ignore[no-untyped-def]
    """Everything a flow file of the copy holds, as text, with base64 JSON decoded."""
    state = json.dumps(flow.get_state(), default=lambda b: b.decode("latin-1"))
    decoded = []
    for part in state.replace('"', " ").replace(".", " ").split():
        if part.startswith("eyJ"):
            decoded.append(
                base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("latin-1")
            )
    return state + "\n".join(decoded)


def _flow_naming_the_id():  # type: ignore[no-untyped-def]
    token = jwt(
        {"sub": "", "access": [{"type": "repository", "name": REPO, "actions": ["pull", "push"]}]}
    )
    request = tutils.treq(
        method=b"PATCH",
        path=(f"/v2/{REPO}/blobs/uploads/u-1?_state={STATE}").encode(),
        headers=((b"authorization", f"Bearer {token}".encode()),),
        content=b"layer bytes",
    )
    body = json.dumps(
        {"errors": [{"code": "NAME_UNKNOWN", "detail": {"name": REPO}}], "repository": BUILD_ID}
    ).encode()
    response = tutils.tresp(
        status_code=404,
        headers=(
            (b"location", f"/v2/{REPO}/blobs/uploads/u-1?_state={STATE}".encode()),
            (b"www-authenticate", f'Bearer scope="repository:{REPO}:pull,push"'.encode()),
            (b"link", f'</v2/_catalog?last=builds%2F{BUILD_ID}&n=1>; rel="next"'.encode()),
            (b"content-encoding", b"gzip"),
        ),
        content=b"",
    )
    response.content = body  # gzip-encoded on the wire, decoded in the views
    flow = tflow.tflow(req=request, resp=response)
    flow.comment = f"token for anonymous: repository:{REPO}:push \x1b]52;c;eA==\x07"
    flow.metadata[CLIENT_AUTHORIZATION] = f"Bearer {token}"
    flow.error = None
    return flow


def test_the_shown_copy_hides_the_id_everywhere(policy_in_force) -> None:
    flow = _flow_naming_the_id()
    before = json.dumps(flow.get_state(), default=repr)
    shown = display_copy(flow)
    assert json.dumps(flow.get_state(), default=repr) == before  # the flow itself unchanged
    text = _shown_text(shown)
    assert BUILD_ID not in text
    assert gzip.decompress(shown.response.raw_content)  # still a valid encoded body
    assert BUILD_ID.encode() not in shown.response.get_content()
    assert HIDDEN in shown.request.path and "_state=<redacted>" in shown.request.path
    assert shown.response.headers["location"].startswith(f"/v2/builds/{HIDDEN}/")
    assert f"builds/{HIDDEN}" in shown.response.headers["link"]
    assert f'"repository": "{HIDDEN}"' in shown.response.get_text()  # an id standing alone
    # A comment a viewer set is escaped; the id in it hidden.
    assert (
        shown.comment == f"token for anonymous: repository:builds/{HIDDEN}:push "
        "\\x1b]52;c;eA==\\x07"
    )
    # The hash is the exchange log's.
    assert policy_in_force.redact(f"/{BUILD_ID}") == f"/{HIDDEN}"


def test_percent_encoded_ids_in_token_requests(policy_in_force) -> None:
    flow = tflow.tflow(
        req=tutils.treq(
            path=(f"/v2/token?service=s&scope=repository%3Abuilds%2F{BUILD_ID}%3Apull").encode()
        )
    )
    flow.request.headers["content-type"] = "application/x-www-form-urlencoded"
    flow.request.content = f"scope=repository%3Abuilds%2F{BUILD_ID}%3Apush".encode()
    shown = display_copy(flow)
    assert BUILD_ID not in _shown_text(shown)
    assert f"repository:builds/{HIDDEN}:pull" in shown.request.path


def test_without_capabilities_nothing_changes() -> None:
    shown.SHOWN.follow(lambda: None)
    fresh = shown.CapabilityRedaction()
    flow = _flow_naming_the_id()
    shown.hide_capabilities(flow, fresh)
    assert BUILD_ID in flow.request.path


def test_a_filter_naming_the_id_matches_nothing(policy_in_force) -> None:
    flow = _flow_naming_the_id()
    guess = web_window._ShownFilter(flowfilter.parse(f"~u {BUILD_ID}"))
    control = web_window._ShownFilter(flowfilter.parse("~u builds/"))
    body = web_window._ShownFilter(flowfilter.parse(f"~bs {BUILD_ID}"))
    assert control(flow) and not guess(flow) and not body(flow)


# --- the recorder --------------------------------------------------------------------------


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "exchange.jsonl"


def _record(harness, flow) -> dict:  # type: ignore[no-untyped-def]
    [record] = [r for r in harness.records() if r["flow"] == flow.id]
    return record


def _forged(claims: dict[str, object]) -> str:
    return f"{b64(b'{"alg":"none"}')}.{b64(json.dumps(claims).encode())}."


@run
async def test_only_a_genuine_token_joins_its_conversation(write_policy, certs_dir, log):
    async with running(write_policy(), certs_dir, log) as harness:
        token = await get_token(harness, "repository:demo/app:pull", user="ci")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        genuine = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", headers={"Authorization": f"Bearer {token}"})
        )
        forged = await harness.cycle(
            registry_flow(
                "/v2/demo/app/manifests/1",
                client=("10.6.6.6", 666),
                headers={
                    "Authorization": "Bearer "
                    + _forged({"sub": "ci", "jti": claims["jti"], "iss": claims["iss"]})
                },
            )
        )
        basic_on_registry = await harness.cycle(
            registry_flow("/v2/demo/app/manifests/1", headers={"Authorization": basic("ci", "x")})
        )
        records = harness.records()
    issued = records[0]["conversation"]
    assert _record(harness, genuine)["conversation"] == issued
    assert _record(harness, forged)["conversation"] != issued  # it named the issued jti
    assert _record(harness, genuine)["auth"]["checked_by"] == "regauth"
    assert _record(harness, forged)["auth"]["checked_by"] is None
    assert _record(harness, basic_on_registry)["auth"]["checked_by"] is None
    assert "checked_by" not in records[0]["auth"]  # a login says who in token_response


@run
async def test_delegate_mode_links_what_the_registry_accepted(write_policy, certs_dir, log):
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        token = await get_token(harness, "repository:public/app:pull", user="ci")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        accepted = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1", headers={"Authorization": f"Bearer {token}"}
            ),
            upstream_response(200),
        )
        refused = await harness.cycle(
            registry_flow(
                "/v2/public/app/manifests/1",
                client=("10.6.6.6", 666),
                headers={"Authorization": "Bearer " + _forged({"sub": "ci", "jti": claims["jti"]})},
            ),
            upstream_response(
                401, [("WWW-Authenticate", 'Bearer realm="r",service="s",error="invalid_token"')]
            ),
        )
        records = harness.records()
    issued = records[0]["conversation"]
    assert _record(harness, accepted)["conversation"] == issued
    assert _record(harness, refused)["conversation"] != issued  # it named the issued jti
    assert _record(harness, accepted)["auth"]["checked_by"] == "registry"


@run
async def test_comments_are_escaped_and_hide_capability_ids(write_policy, certs_dir, log):
    async with running(write_policy(mode="delegate"), certs_dir, log) as harness:
        hostile = "\x1b]52;c;eA==\x07\r\x1b[2K200 ci\u202e"
        claimed = await harness.cycle(
            registry_flow(
                "/elsewhere", headers={"Authorization": "Bearer " + _forged({"sub": hostile})}
            ),
            upstream_response(404),
        )
        token = await harness.cycle(token_flow(f"repository:{REPO}:pull,push"))
    assert claimed.comment.startswith(
        "404 sub='\\x1b]52;c;eA==\\x07\\x0d\\x1b[2K200 ci\\u202e' (claimed, checked by the "
        "registry)"
    ), claimed.comment
    assert BUILD_ID not in token.comment and f"builds/{HIDDEN}" in token.comment


def test_large_bodies_are_tested_before_they_are_searched(policy_in_force) -> None:
    """mitmweb builds the shown copy on the proxy's event loop: a body without any id shape is
    passed by one RE2 scan (not decoded, searched and re-encoded), one with an id is hidden."""
    layer = random.Random(20).randbytes(2 << 20)  # a compressed layer looks like this
    assert shown.SHOWN.body(layer) is layer
    named = layer + json.dumps({"name": REPO}).encode() + layer
    hidden = shown.SHOWN.body(named)
    assert BUILD_ID.encode() not in hidden and HIDDEN.encode() in hidden
    assert len(hidden) == len(named) - len(BUILD_ID) + len(HIDDEN)
