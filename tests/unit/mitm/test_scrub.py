"""Secrets leave stored flows (mitmweb, flow files) once the flow has been answered."""

import json

from mitmproxy.test import tutils

from regauth.mitm.scrub import redact_authorization
from regauth.mitm.scrub import scrub_request
from regauth.mitm.scrub import scrub_token_response
from regauth.policy.load import load_policy_text
from tests.support.policies import policy_text


def test_bearer_keeps_header_and_claims_but_not_the_signature():
    assert redact_authorization("Bearer aaa.bbb.ccc") == "Bearer aaa.bbb."
    assert redact_authorization("Basic Y2k6c2VjcmV0") == "Basic <redacted>"
    assert redact_authorization("ghp_bare_secret") == "<redacted>"
    assert redact_authorization(None) is None


def test_scrub_request_restores_the_client_header_and_hides_form_secrets():
    request = tutils.treq(method=b"POST", path=b"/v2/token", content=b"")
    request.headers["authorization"] = "Basic dXBzdHJlYW0tYm90OnVwc3RyZWFt"  # injected
    request.headers["content-type"] = "application/x-www-form-urlencoded"
    request.content = b"grant_type=password&username=ci&password=hunter2&refresh_token=r.t.s"
    scrub_request(request, client_authorization="Bearer h.c.sig")
    assert request.headers["authorization"] == "Bearer h.c."
    assert b"hunter2" not in request.content and b"r.t.s" not in request.content
    assert b"username=ci" in request.content
    without = tutils.treq()
    without.headers["authorization"] = "Basic dXBzdHJlYW0="
    scrub_request(without, client_authorization=None)
    assert "authorization" not in without.headers


def test_scrub_token_response():
    response = tutils.tresp(
        content=json.dumps(
            {
                "token": "h.c.sig",
                "access_token": "h.c.sig",
                "refresh_token": "r.r.r",
                "expires_in": 300,
            }
        ).encode()
    )
    scrub_token_response(response)
    body = json.loads(response.content)
    assert body == {
        "token": "h.c.",
        "access_token": "h.c.",
        "refresh_token": "<redacted>",
        "expires_in": 300,
    }


def test_capability_ids_are_redacted_whatever_precedes_them(password_hashes):
    text = policy_text(
        password_hashes,
        extra_rules=(
            "  - comment: team builds\n    account: authenticated\n"
            "    repository: teams/*/{build-id}\n    actions: [pull, push]\n"
        ),
    )
    policy = load_policy_text(text)
    redactor = policy.capability_redactor()
    build = "a" * 26
    line = (
        f'"path":"/v2/teams/web/{build}/blobs/uploads/","scopes":["repository:builds/{build}:'
        f'push"],"digest":"sha256:{"b" * 64}"'
    )
    hidden = redactor.sub("<id>", line)
    assert build not in hidden
    assert "b" * 64 in hidden  # digests are not capability ids


def test_the_copy_shown_is_at_the_public_url_the_client_asked():
    """mitmproxy's reverse mode rewrote the request to the upstream (or the refusal sink);
    mitmweb's Path column (`pretty_url`) shows what the client asked."""
    from mitmproxy.test import tflow

    from regauth.mitm.scrub import CLIENT_ORIGIN
    from regauth.mitm.scrub import display_copy

    flow = tflow.tflow()
    flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", 5000
    flow.request.path = "/v2/demo/app/manifests/1"
    flow.request.host_header = "127.0.0.1:5000"
    flow.metadata[CLIENT_ORIGIN] = "https://registry.example.com:5443"
    shown = display_copy(flow)
    assert shown.request.pretty_url == "https://registry.example.com:5443/v2/demo/app/manifests/1"
    assert shown.request.headers["host"] == "registry.example.com:5443"
    assert flow.request.pretty_url == "http://127.0.0.1:5000/v2/demo/app/manifests/1"  # unchanged
    flow.metadata[CLIENT_ORIGIN] = "https://registry.example.com"
    assert display_copy(flow).request.pretty_url.startswith("https://registry.example.com/v2/")
    flow.metadata[CLIENT_ORIGIN] = "not a url"
    assert display_copy(flow).request.pretty_url.startswith("http://127.0.0.1:5000/")


def test_a_token_exchange_subject_token_is_redacted() -> None:
    """RFC 8693's subject_token is an OIDC ID token: a credential (issue 24)."""
    from mitmproxy.test import tflow

    from regauth.mitm.scrub import display_copy

    flow = tflow.tflow()
    flow.request.path = "/v2/token"
    flow.request.method = "POST"
    flow.request.headers["content-type"] = "application/x-www-form-urlencoded"
    flow.request.content = (
        b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
        b"&subject_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.SIGNATURE-SECRET"
        b"&actor_token=eyJ.eyJ.ACTOR-SECRET"
    )
    shown = display_copy(flow).request.content or b""
    assert b"SIGNATURE-SECRET" not in shown and b"ACTOR-SECRET" not in shown
