"""regauth.token_request: the token endpoint's refusal body and parameter reader."""

from __future__ import annotations

import json

import pytest

from regauth.protocol.errors import Code
from regauth.token_request import TokenError
from regauth.token_request import first_param


def test_a_refusal_speaks_to_registry_and_oauth_clients_and_is_never_cached():
    error = TokenError(400, Code.UNSUPPORTED, "invalid_request", "grant_type is required")
    answer = error.answer()
    assert answer.status == 400
    assert answer.headers["Cache-Control"] == "no-store"
    body = json.loads(answer.body)
    assert body["errors"][0]["code"] == "UNSUPPORTED"
    assert body["error"] == "invalid_request"
    assert body["error_description"] == "grant_type is required"


def test_a_parameter_given_twice_must_agree():
    assert first_param({"a": ["x", "x"]}, "a") == "x"
    assert first_param({}, "a") is None
    with pytest.raises(TokenError, match="more than once with different values"):
        first_param({"a": ["x", "y"]}, "a")
