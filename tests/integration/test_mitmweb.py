"""mitmweb shows auth flows: a comment per flow, auth markers, and the JWT content view."""

from __future__ import annotations

import json
import re
import time
import urllib.request

from mitmproxy.utils.emoji import emoji

from regauth.ops.registry_process import free_port
from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE


def _web_get(port: int, token: str, path: str):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_mitmweb_comments_markers_and_jwt_view(write_policy, make_registry, make_proxy):
    registry = make_registry()
    web_port = free_port()
    proxy = make_proxy(write_policy(), registry.url, extra=[], web_port=web_port)
    match = re.search(rf"http://127\.0\.0\.1:{web_port}/\?token=(\S+)", proxy.output())
    assert match, proxy.output()
    web_token = match.group(1)
    # Without the token mitmweb refuses.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{web_port}/flows", timeout=10)
        raise AssertionError("mitmweb must require its token")
    except urllib.error.HTTPError as e:
        assert e.code == 403
    challenge = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/demo/app/manifests/1")
    assert challenge.status == 401
    token = httpclient.get_token(
        proxy.port,
        proxy.ca,
        ["repository:demo/app:pull,push", "repository:secret/x:pull"],
        SERVICE,
        ("ci", PASSWORDS["ci"]),
    ).json()["token"]
    httpclient.request(
        proxy.port, proxy.ca, "GET", "/v2/demo/app/tags/list", {"Authorization": f"Bearer {token}"}
    )
    time.sleep(0.5)
    flows = _web_get(web_port, web_token, "/flows")
    by_path = {f["request"]["path"].split("?")[0]: f for f in flows}
    challenge_comment = by_path["/v2/demo/app/manifests/1"]["comment"]
    conversation = re.fullmatch(
        r"401 challenge → scope repository:demo/app:pull — no token "
        r"\[conv ([0-9a-f]{16})\]",
        challenge_comment,
    )
    assert conversation, challenge_comment
    assert by_path["/v2/demo/app/manifests/1"]["marked"] == emoji[":lock:"]
    token_flow = by_path["/v2/token"]
    assert token_flow["marked"] == emoji[":key:"]
    assert token_flow["comment"].startswith(
        "token for ci: repository:demo/app:pull,push → granted [pull,push] (rule 2: CI "
        "publishes); repository:secret/x:pull → default deny [conv "
    )
    forwarded = by_path["/v2/demo/app/tags/list"]
    assert forwarded["marked"] == emoji[":x:"]  # the upstream answered 404: no such repository yet
    assert forwarded["comment"].startswith("404 ci → repository:demo/app:pull")
    view = _web_get(web_port, web_token, f"/flows/{forwarded['id']}/request/content/auto.json")
    assert view["view_name"] == "JWT"
    assert '"sub": "ci"' in view["text"] and "NOT verified" in view["text"]
    assert token.split(".")[2] not in view["text"]
    response_view = _web_get(
        web_port, web_token, f"/flows/{token_flow['id']}/response/content/auto.json"
    )
    assert response_view["view_name"] == "JWT"


def test_mitmweb_keeps_no_password_refresh_token_or_signature(
    write_policy, make_registry, make_proxy
):
    registry = make_registry()
    web_port = free_port()
    proxy = make_proxy(write_policy(), registry.url, web_port=web_port)
    web_token = re.search(r"\?token=(\S+)", proxy.output()).group(1)
    grant = httpclient.post_token(
        proxy.port,
        proxy.ca,
        {
            "grant_type": "password",
            "username": "ci",
            "password": PASSWORDS["ci"],
            "client_id": "tests",
            "access_type": "offline",
            "scope": "repository:demo/app:pull",
        },
    )
    body = grant.json()
    signature = body["token"].split(".")[2]
    httpclient.request(
        proxy.port,
        proxy.ca,
        "GET",
        "/v2/demo/app/tags/list",
        {"Authorization": f"Bearer {body['token']}"},
    )
    httpclient.get_token(proxy.port, proxy.ca, [], SERVICE, ("ci", PASSWORDS["ci"]))
    time.sleep(1.5)  # token responses are scrubbed just after they were sent
    flows = _web_get(web_port, web_token, "/flows")
    stored = json.dumps(flows)
    for flow in flows:
        for part in ("request", "response"):
            if flow.get(part):
                view = _web_get(web_port, web_token, f"/flows/{flow['id']}/{part}/content/raw.json")
                stored += view["text"]
    assert PASSWORDS["ci"] not in stored
    assert body["refresh_token"] not in stored
    assert signature not in stored
    assert "Y2k6" not in stored  # base64 of "ci:" from the Basic header
    assert (
        '"sub": "ci"'
        in _web_get(  # the JWT view still decodes the stored header
            web_port,
            web_token,
            f"/flows/{next(f['id'] for f in flows if 'tags/list' in f['request']['path'])}"
            "/request/content/auto.json",
        )["text"]
    )
