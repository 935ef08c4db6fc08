"""Which of regauth's signing keys a token-mode registry refuses (`regauth.tokens.refused_keys`):
a 401 `invalid_token` for the right service, from a registry whose clock agrees, to a token
regauth signed and still verifies, names that key; any other answer to such a token says the
registry trusts it; everything else says nothing."""

from __future__ import annotations

import email.utils

import pytest

from regauth.protocol.scope import parse_scope
from regauth.tokens.keyids import key_id
from regauth.tokens.refused_keys import REGISTRY_LEEWAY
from regauth.tokens.refused_keys import KeyVerdict
from regauth.tokens.refused_keys import judge
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.unit.helpers import build_runtime

NOW = 1_800_000_000.0
INVALID = [
    {"scheme": "Bearer", "realm": "https://r/token", "service": SERVICE, "error": "invalid_token"}
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, certs_dir, password_hashes):
    return build_runtime(tmp_path_factory.mktemp("policy"), certs_dir, policy_text(password_hashes))


@pytest.fixture(scope="module")
def token(runtime):
    return runtime.issuer.issue_access("ci", [parse_scope("repository:public/a:pull")]).token


@pytest.fixture(scope="module")
def kid(runtime):
    return key_id(runtime.keyring.signer.public_key, runtime.policy.token.kid_format)


def _date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


def test_a_refused_token_names_its_key_in_delegate_and_enforce_mode(runtime, token, kid):
    delegate = judge(runtime, 401, INVALID, None, f"Bearer {token}", None, NOW)
    assert delegate == KeyVerdict(kid, refused=True)
    verified = runtime.verifier.verify_access(token)  # enforce mode: the gate verified it
    assert judge(runtime, 401, INVALID, verified, None, _date(0), NOW) == delegate
    # A challenge without error or service still blames the key (distribution's plain 401).
    assert judge(runtime, 401, [{"scheme": "bearer"}], verified, None, None, NOW) == delegate


@pytest.mark.parametrize("status", [200, 202, 403, 404])
def test_any_other_answer_means_the_registry_trusts_the_key(runtime, token, kid, status):
    assert judge(runtime, status, [], None, f"Bearer {token}", None, NOW) == KeyVerdict(
        kid, refused=False
    )


@pytest.mark.parametrize(
    ("status", "challenges", "date"),
    [
        (500, INVALID, None),  # server errors say nothing about tokens
        (503, [], None),
        (401, [{**INVALID[0], "error": "insufficient_scope"}], None),  # trusted, grants fall short
        (401, [{**INVALID[0], "service": "another-service"}], None),  # not a key problem
        (401, INVALID, _date(REGISTRY_LEEWAY + 5)),  # the registry's clock is off
        (401, INVALID, _date(-REGISTRY_LEEWAY - 5)),
    ],
)
def test_answers_that_say_nothing_about_the_key(runtime, token, status, challenges, date):
    assert judge(runtime, status, challenges, None, f"Bearer {token}", date, NOW) is None


def test_a_clock_within_the_leeway_or_an_unreadable_date_still_blames_the_key(runtime, token, kid):
    for date in (_date(REGISTRY_LEEWAY - 5), "yesterday", ""):
        assert judge(runtime, 401, INVALID, None, f"Bearer {token}", date, NOW) == KeyVerdict(
            kid, refused=True
        )


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer not-a-jwt",
        "Basic Y2k6c2VjcmV0",
        "Bearer eyJhbGciOiJub25lIn0.e30.",
    ],
)
def test_tokens_regauth_did_not_sign_are_never_blamed_on_its_keys(runtime, authorization):
    assert judge(runtime, 401, INVALID, None, authorization, None, NOW) is None


def test_a_tampered_token_of_regauth_is_not_its_key_either(runtime, token):
    header, claims, signature = token.split(".")
    forged = f"{header}.{claims}.{signature[::-1]}"
    assert judge(runtime, 401, INVALID, None, f"Bearer {forged}", None, NOW) is None
