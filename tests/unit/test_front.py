"""The front door: one decision per request, from its line and headers (regauth.front)."""

from __future__ import annotations

import json

import pytest

from regauth import front
from regauth.front import Forward
from regauth.front import IssueToken
from regauth.front import ReadTokenForm
from regauth.front import RequestView
from regauth.front import Respond
from regauth.protocol.urls import parse_origin
from regauth.runtime import Active
from tests.support.policies import policy_text
from tests.unit.helpers import DIGEST
from tests.unit.helpers import build_runtime

UPLOAD = f"/v2/demo/app/blobs/uploads/abc?digest={DIGEST}"


@pytest.fixture(scope="module")
def active(tmp_path_factory, certs_dir, password_hashes):
    runtime = build_runtime(
        tmp_path_factory.mktemp("front"), certs_dir, policy_text(password_hashes, mode="delegate")
    )
    return Active(
        runtime,
        parse_origin("https://proxy.test:5443"),
        parse_origin("http://127.0.0.1:5000"),
        None,
        1024,
    )


def _decide(active, method="GET", target="/v2/demo/app/manifests/1", **kw):
    return front.decide(active, RequestView(method, target, **kw))


def _status(decision) -> int:
    assert isinstance(decision, Respond), decision
    return decision.answer.status


def _code(decision) -> str:
    return json.loads(decision.answer.body)["errors"][0]["code"]


def test_no_policy_is_503(active):
    assert _status(front.decide(None, RequestView("GET", "/v2/"))) == 503


def test_other_destinations_and_replays_are_403(active):
    assert _status(_decide(active, to_upstream=False)) == 403


@pytest.mark.parametrize("method", ["get", "hEaD", "Post", "TRACE", "OPTIONS", "CONNECT", ""])
@pytest.mark.parametrize(
    "target",
    ["/v2/", "/v2/demo/app/manifests/1", "/v2/token", "/.well-known/jwks.json", "/elsewhere"],
)
def test_only_exact_upper_case_registry_methods_are_accepted(active, method, target):
    decision = _decide(active, method, target)
    assert _status(decision) == 405 and _code(decision) == "UNSUPPORTED"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
def test_the_token_endpoint_takes_get_and_post_only(active, method):
    assert _status(_decide(active, method, "/v2/token")) == 405


def test_several_authorization_headers_are_400(active):
    assert _status(_decide(active, authorization=("Bearer a", "Bearer b"))) == 400


def test_http3_is_not_served(active):
    assert _status(_decide(active, http_version="HTTP/3")) == 505


@pytest.mark.parametrize(
    "target",
    [
        "/v2/",
        "/v2/_catalog",
        "/v2/demo/app/tags/list",
        "/v2/demo/app/manifests/1",
        f"/v2/demo/app/blobs/{DIGEST}",
        "/v2/token",
        "/.well-known/jwks.json",
    ],
)
@pytest.mark.parametrize(
    "framing",
    [
        {"content_lengths": ("5",), "body_absent": False},
        {"transfer_encoding": "chunked", "body_absent": False},
        {"http_version": "HTTP/2.0", "body_absent": False},  # HEADERS did not end the stream
    ],
)
def test_a_body_on_a_route_without_one_is_400(active, target, framing):
    decision = _decide(active, "GET", target, **framing)
    assert _status(decision) == 400, decision


@pytest.mark.parametrize(
    "framing",
    [
        {"content_lengths": ("0",)},
        {"http_version": "HTTP/2.0"},
        {"http_version": "HTTP/2.0", "content_lengths": ("0",), "body_absent": False},
    ],
)
def test_no_body_or_an_empty_one_passes(active, framing):
    assert isinstance(_decide(active, "GET", "/v2/demo/app/manifests/1", **framing), Forward)


def test_an_http2_body_without_length_is_chunked_for_the_upstream(active):
    decision = _decide(
        active,
        "PATCH",
        "/v2/demo/app/blobs/uploads/abc",
        http_version="HTTP/2.0",
        body_absent=False,
    )
    assert isinstance(decision, Forward)
    assert ("Transfer-Encoding", "chunked") in decision.set_headers
    assert decision.stream and decision.expected_length is None


@pytest.mark.parametrize(
    "framing",
    [
        {"content_lengths": ("5", "6")},
        {"content_lengths": ("-1",)},
        {"content_lengths": ("5x",)},
        {"content_lengths": ("5",), "transfer_encoding": "chunked"},
        {"transfer_encoding": "gzip, chunked"},
        {"transfer_encoding": "identity"},
    ],
)
def test_ambiguous_framing_is_400(active, framing):
    decision = _decide(active, "PUT", UPLOAD, body_absent=False, **framing)
    assert _status(decision) == 400


def test_a_forward_states_its_header_changes(active):
    decision = _decide(
        active,
        "PUT",
        UPLOAD,
        content_lengths=("10",),
        body_absent=False,
        content_types=("text/plain",),
    )
    assert isinstance(decision, Forward)
    headers = dict(decision.set_headers)
    assert headers["X-Forwarded-Host"] == "proxy.test:5443"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["Content-Type"] == "application/octet-stream"
    assert set(decision.remove_headers) == {"forwarded", "upgrade"}
    assert decision.expected_length == 10 and not decision.stream and not decision.inject


def test_large_or_unknown_bodies_stream(active):
    big = _decide(active, "PUT", UPLOAD, content_lengths=("4096",), body_absent=False)
    assert isinstance(big, Forward) and big.stream


def test_refusals_say_whether_a_large_body_may_follow(active):
    decision = _decide(
        active, "PUT", "/v2/demo/app/manifests/..", content_lengths=("4096",), body_absent=False
    )
    assert isinstance(decision, Respond) and decision.discard_body


@pytest.mark.parametrize("received,ok", [(10, True), (9, False), (11, False)])
def test_check_body_compares_the_declared_length(active, received, ok):
    decision = _decide(active, "PUT", UPLOAD, content_lengths=("10",), body_absent=False)
    assert (front.check_body(decision, received) is None) == ok


def test_check_body_refuses_any_body_on_a_body_less_route(active):
    decision = _decide(
        active,
        "GET",
        "/v2/demo/app/manifests/1",
        http_version="HTTP/2.0",
        content_lengths=("0",),
        body_absent=False,
    )
    assert front.check_body(decision, 0) is None
    assert front.check_body(decision, 1) is not None


def test_token_get_is_issued_and_token_post_reads_its_form(active):
    assert isinstance(_decide(active, "GET", "/v2/token?service=x"), IssueToken)
    post = _decide(active, "POST", "/v2/token", content_lengths=("12",), body_absent=False)
    assert post == ReadTokenForm(12)


@pytest.mark.parametrize(
    "framing,status",
    [
        ({"body_absent": False, "http_version": "HTTP/2.0"}, 411),
        ({"transfer_encoding": "chunked", "body_absent": False}, 411),
        ({"content_lengths": (str(front.MAX_FORM_BYTES + 1),), "body_absent": False}, 413),
    ],
)
def test_token_forms_need_a_bounded_length(active, framing, status):
    assert _status(_decide(active, "POST", "/v2/token", **framing)) == status


def test_a_token_form_must_match_its_length(active):
    view = RequestView(
        "POST",
        "/v2/token",
        content_lengths=("12",),
        body_absent=False,
        content_types=("application/x-www-form-urlencoded",),
    )
    assert _status(front.token_form(active, view, b"grant_type=")) == 400
    issue = front.token_form(active, view, b"grant_type=x")
    assert isinstance(issue, IssueToken) and issue.request.form == {"grant_type": ["x"]}
    other = RequestView(
        "POST",
        "/v2/token",
        content_lengths=("2",),
        body_absent=False,
        content_types=("application/json",),
    )
    issue = front.token_form(active, other, b"{}")
    assert isinstance(issue, IssueToken) and issue.request.form is None


def test_jwks(active):
    decision = _decide(active, "GET", "/.well-known/jwks.json")
    assert _status(decision) == 200
    assert json.loads(decision.answer.body)["keys"]
    assert _status(_decide(active, "POST", "/.well-known/jwks.json")) == 405


@pytest.mark.parametrize(
    "target",
    [
        "/v2/?a=b c",
        "/v2/ HTTP/1.1",
        "/v2/\tx",
        "/v2/?x=\x7f",
        "/v2/\x00",
        "/v2/é",
        "/x y",
        "v2/",
        "*",
    ],
)
def test_a_target_outside_the_uri_grammar_is_400(active, target):
    # HTTP/2 :path is a header value; the HTTP/1.1 upstream reads it in its request line.
    assert _status(_decide(active, "GET", target)) == 400
