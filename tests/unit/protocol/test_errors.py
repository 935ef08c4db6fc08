"""Registry-format errors (`regauth.protocol.errors`): one body builder, refusals that render
their own answer with the API-version header, and distribution's access detail."""

import json

import pytest

from regauth.protocol.errors import API_VERSION_HEADER
from regauth.protocol.errors import JSON_HEADERS
from regauth.protocol.errors import Code
from regauth.protocol.errors import RegistryError
from regauth.protocol.errors import access_detail
from regauth.protocol.errors import error_body
from regauth.protocol.scope import parse_scope


def test_the_body_has_one_entry_and_detail_only_when_given():
    assert json.loads(error_body(Code.DENIED, "no")) == {
        "errors": [{"code": "DENIED", "message": "no"}]
    }
    assert json.loads(
        error_body(
            Code.NAME_INVALID, "bad", detail={"name": "x"}, extra={"error": "invalid_request"}
        )
    ) == {
        "errors": [{"code": "NAME_INVALID", "message": "bad", "detail": {"name": "x"}}],
        "error": "invalid_request",
    }
    assert list(json.loads(error_body(Code.DENIED, "no", extra={"a": 1}))) == ["errors", "a"]


def test_a_code_is_its_own_wire_text():
    assert [str(c) for c in Code] == [c.name for c in Code]
    assert (
        json.loads(error_body(Code.TOOMANYREQUESTS, ""))["errors"][0]["code"] == "TOOMANYREQUESTS"
    )


def test_a_refusal_renders_its_answer_with_its_headers():
    error = RegistryError(
        401,
        Code.UNAUTHORIZED,
        "authentication required",
        detail=[],
        headers={
            "WWW-Authenticate": 'Bearer realm="r"',
            "Content-Type": "application/problem+json",
        },
    )
    assert isinstance(error, ValueError) and str(error) == "authentication required"
    answer = error.answer()
    assert answer.status == 401
    assert answer.headers[API_VERSION_HEADER] == "registry/2.0"
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="r"'
    assert answer.headers["Content-Type"] == "application/problem+json"  # its own wins
    assert json.loads(answer.body) == {
        "errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": []}]
    }
    assert JSON_HEADERS["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("scopes", "detail"),
    [
        ([], []),
        (
            ["repository:a/b:pull,push"],
            [
                {"Type": "repository", "Name": "a/b", "Action": "pull"},
                {"Type": "repository", "Name": "a/b", "Action": "push"},
            ],
        ),
        (
            ["repository:a:pull", "registry:catalog:*"],
            [
                {"Type": "repository", "Name": "a", "Action": "pull"},
                {"Type": "registry", "Name": "catalog", "Action": "*"},
            ],
        ),
    ],
)
def test_access_detail_has_one_record_per_action(scopes, detail):
    assert access_detail([parse_scope(s) for s in scopes]) == detail
