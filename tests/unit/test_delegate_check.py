"""The delegate check's verdicts (regauth.delegate_check): every case, without I/O."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from regauth import delegate_check
from regauth.delegate_check import KINDS
from regauth.delegate_check import REFUSAL_PREFIX
from regauth.delegate_check import REFUSING
from regauth.delegate_check import Expected
from regauth.delegate_check import Reply
from regauth.delegate_check import Tracker
from regauth.delegate_check import Verdict
from regauth.delegate_check import clock_skew
from regauth.delegate_check import judge
from regauth.delegate_check import needs_token_probe
from regauth.delegate_check import probe_token
from regauth.delegate_check import unverified
from regauth.ops import health
from regauth.runtime import build_runtime
from regauth.tokens.issue import ACCESS_TYP
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE

REALM = "https://registry.example:5443/v2/token"
EXPECTED = Expected(REALM, SERVICE, ISSUER, "token-signing", "ABCD:EFGH")
CONFIG = (
    f"auth.token (realm {REALM}, service {SERVICE}, issuer {ISSUER}, rootcertbundle from "
    "`regauth certs bundle`)"
)
GOOD = Reply(401, (f'Bearer realm="{REALM}",service="{SERVICE}"',))
ACCEPTED = Reply(200)
INVALID = Reply(401, (f'Bearer realm="{REALM}",service="{SERVICE}",error="invalid_token"',))


def _bearer(realm: str = REALM, service: str = SERVICE) -> Reply:
    return Reply(401, (f'Bearer realm="{realm}",service="{service}"',))


def test_a_registry_that_challenges_and_accepts_the_probe_token_passes():
    assert needs_token_probe(GOOD)
    verdict = judge(EXPECTED, GOOD, ACCEPTED)
    assert verdict == Verdict(
        "ok",
        "the registry challenges anonymous requests for regauth's "
        "realm and service and accepts regauth's tokens",
    )
    assert verdict.ok and not verdict.refuses and verdict.refusal() == ""


@pytest.mark.parametrize("status", [200, 202, 204])
def test_an_anonymous_success_is_an_open_registry(status):
    anonymous = Reply(status)
    assert not needs_token_probe(anonymous)
    verdict = judge(EXPECTED, anonymous)
    assert verdict is not None and verdict.kind == "open" and verdict.refuses
    assert verdict.reason == (
        f"the registry answered GET /v2/ without authentication ({status}): in delegate mode "
        f"it must check regauth's tokens itself: configure its {CONFIG} and restart it; until "
        "then regauth forwards nothing"
    )
    assert verdict.refusal() == (
        "delegate check failed: the registry behind regauth answers without authentication "
        "(delegate mode needs it to check regauth's tokens: auth.token); nothing is forwarded "
        "until it does"
    )


@pytest.mark.parametrize(
    "challenges, seen",
    [
        (('Basic realm="staging-registry"',), "with Basic only"),
        (('Basic realm="r"', "Negotiate"), "with Basic, Negotiate only"),
        (('Basic realm="r", Digest realm="d", nonce="n"',), "with Basic, Digest only"),
        ((), "without a WWW-Authenticate header"),
        (('Bearer realm="unterminated',), "with a WWW-Authenticate header regauth cannot parse"),
    ],
)
def test_a_challenge_without_bearer_is_the_wrong_scheme(challenges, seen):
    anonymous = Reply(401, challenges)
    assert not needs_token_probe(anonymous)
    verdict = judge(EXPECTED, anonymous)
    assert verdict is not None and verdict.kind == "wrong_scheme" and verdict.refuses
    assert verdict.reason == (
        f"the registry challenged an anonymous GET /v2/ {seen}, not with Bearer: it checks "
        "credentials of its own (auth.htpasswd?), not regauth's tokens; configure its "
        f"{CONFIG} and restart it; until then regauth forwards nothing"
    )
    assert verdict.refusal().startswith(
        "delegate check failed: the registry behind regauth "
        "asks for other credentials than regauth's tokens"
    )


@pytest.mark.parametrize("status", [301, 302, 400, 403, 404, 405, 429])
def test_another_status_is_unexpected(status):
    verdict = judge(EXPECTED, Reply(status, (GOOD.challenges)))
    assert verdict is not None and verdict.kind == "unexpected_status" and verdict.refuses
    assert verdict.reason.startswith(
        f"the registry answered an anonymous GET /v2/ with "
        f"{status}, not with 401 and a Bearer challenge: is it a "
        "distribution registry?"
    )
    assert CONFIG in verdict.reason


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_says_nothing(status):
    assert judge(EXPECTED, Reply(status)) is None
    assert judge(EXPECTED, GOOD, Reply(status)) is None


def test_the_token_probe_is_required_after_a_bearer_challenge():
    with pytest.raises(ValueError, match="token probe"):
        judge(EXPECTED, GOOD)


def test_a_bearer_challenge_is_found_among_others():
    anonymous = Reply(
        401, ('Basic realm="r"', f'Negotiate, Bearer realm="{REALM}",service="{SERVICE}"')
    )
    assert needs_token_probe(anonymous)
    assert judge(EXPECTED, anonymous, ACCEPTED).kind == "ok"  # type: ignore[union-attr]
    odd = Reply(401, (f'BEARER Realm="{REALM}", SERVICE={SERVICE}',))
    assert judge(EXPECTED, odd, ACCEPTED).kind == "ok"  # type: ignore[union-attr]


def test_another_service_is_a_service_mismatch():
    verdict = judge(EXPECTED, _bearer(service="another-service"), INVALID)
    assert verdict is not None and verdict.kind == "service_mismatch" and not verdict.refuses
    assert verdict.reason == (
        f"the registry's auth.token service is 'another-service', but regauth issues tokens "
        f"for '{SERVICE}' (the policy's `service`): the registry refuses them; set its service "
        f"to '{SERVICE}' and restart it"
    )
    assert verdict.refusal() == ""


def test_a_service_mismatch_also_names_a_wrong_realm():
    verdict = judge(EXPECTED, _bearer("https://auth.elsewhere/token", "x"), INVALID)
    assert verdict is not None and verdict.kind == "service_mismatch"
    assert verdict.reason.endswith(
        "; also, its auth.token realm is "
        f"'https://auth.elsewhere/token', not regauth's token "
        f"endpoint {REALM}"
    )


def test_a_missing_service_is_a_service_mismatch():
    verdict = judge(EXPECTED, Reply(401, (f'Bearer realm="{REALM}"',)), INVALID)
    assert verdict is not None and verdict.kind == "service_mismatch"
    assert "service is ''" in verdict.reason


def test_a_refused_token_names_issuer_and_bundle():
    verdict = judge(EXPECTED, GOOD, INVALID, skew=2.0)
    assert verdict is not None and verdict.kind == "token_refused" and not verdict.refuses
    assert verdict.reason == (
        "the registry refused a token regauth signed (401, error=invalid_token): set its "
        f"auth.token issuer to '{ISSUER}' (the policy's `issuer`) and put regauth's signing key "
        "token-signing (kid ABCD:EFGH) in its rootcertbundle (`regauth certs bundle`), then "
        "restart it"
    )


@pytest.mark.parametrize(
    "skew, text", [(-7200.0, "7200 s behind"), (90.4, "90 s ahead of"), (-60.0, "60 s behind")]
)
def test_a_refused_token_and_a_clock_difference_blame_the_clocks(skew, text):
    verdict = judge(EXPECTED, GOOD, INVALID, skew=skew)
    assert verdict is not None and verdict.kind == "token_refused"
    assert verdict.reason == (
        f"the registry refused a token regauth signed (401, error=invalid_token): its clock is "
        f"{text} regauth's (distribution accepts tokens within 60 s of their validity): "
        "synchronize both clocks (NTP)"
    )


@pytest.mark.parametrize(
    "answer, shown", [(Reply(401), "401"), (Reply(403), "403"), (Reply(404), "404")]
)
def test_any_answer_but_success_to_the_token_is_a_refusal(answer, shown):
    verdict = judge(EXPECTED, GOOD, answer)
    assert verdict is not None and verdict.kind == "token_refused"
    assert verdict.reason.startswith(f"the registry refused a token regauth signed ({shown}):")


def test_another_realm_is_a_realm_mismatch():
    verdict = judge(EXPECTED, _bearer("https://auth.elsewhere/token"), ACCEPTED)
    assert verdict is not None and verdict.kind == "realm_mismatch" and not verdict.refuses
    assert verdict.reason.startswith(
        "the registry's auth.token realm is 'https://auth.elsewhere/token', not regauth's "
        f"token endpoint {REALM}: set its realm to {REALM} and restart it"
    )


def test_a_refused_token_and_another_realm_name_both():
    verdict = judge(EXPECTED, _bearer("https://auth.elsewhere/token"), INVALID)
    assert verdict is not None and verdict.kind == "token_refused"
    assert "; also, its auth.token realm is 'https://auth.elsewhere/token'" in verdict.reason


@pytest.mark.parametrize(
    "realm",
    [
        "HTTPS://Registry.Example:5443/v2/token",
        "https://registry.example:5443/v2/token",
    ],
)
def test_realms_compare_as_urls(realm):
    assert judge(EXPECTED, _bearer(realm), ACCEPTED).kind == "ok"  # type: ignore[union-attr]


def test_an_explicit_default_port_is_the_same_realm():
    expected = Expected("https://registry.example/v2/token", SERVICE, ISSUER, "k", "kid")
    reply = _bearer("https://registry.example:443/v2/token")
    assert judge(expected, reply, ACCEPTED).kind == "ok"  # type: ignore[union-attr]
    for other in (
        "https://registry.example/v2/token/",
        "http://registry.example/v2/token",
        "https://registry.example:8443/v2/token",
        "https://[bad/v2/token",
    ):
        assert judge(expected, _bearer(other), ACCEPTED).kind == "realm_mismatch", other


def test_values_read_from_the_registry_are_quoted_and_bounded():
    service = "x" * 500 + "\x1b[31m"
    verdict = judge(EXPECTED, Reply(401, (f'Bearer realm="{REALM}",service="{service}"',)), INVALID)
    assert verdict is not None and "\x1b" not in verdict.reason
    assert "x" * 201 not in verdict.reason


def test_the_vocabulary_is_closed():
    assert set(KINDS) == {
        "ok",
        "open",
        "wrong_scheme",
        "unexpected_status",
        "service_mismatch",
        "token_refused",
        "realm_mismatch",
        "unverified",
    }
    assert REFUSING == {"open", "wrong_scheme", "unexpected_status", "unverified"}
    for kind in KINDS:
        refusal = Verdict(kind, "details").refusal()
        assert bool(refusal) == (kind in REFUSING)
        if refusal:
            assert refusal.startswith(REFUSAL_PREFIX) and "details" not in refusal


def test_unverified():
    verdict = unverified("ConnectionRefusedError: [Errno 111]")
    assert verdict.kind == "unverified" and verdict.refuses
    assert verdict.reason == (
        "regauth could not yet check that the registry verifies its tokens "
        "(ConnectionRefusedError: [Errno 111]); until it can, regauth "
        "forwards nothing"
    )
    assert verdict.refusal() == (
        "delegate check pending: regauth has not yet verified that the registry behind it "
        "checks regauth's tokens (delegate mode); nothing is forwarded until it has"
    )


@pytest.mark.parametrize(
    "date, skew",
    [
        ("Mon, 07 Dec 2026 13:11:10 GMT", -50.0),
        ("Mon, 07 Dec 2026 13:12:40 GMT", 40.0),
        (None, None),
        ("", None),
        ("not a date", None),
        ("Mon, 07 Dec 2026 13:12:00", None),
    ],
)
def test_clock_skew(date, skew):
    import email.utils

    now = email.utils.parsedate_to_datetime("Mon, 07 Dec 2026 13:12:00 GMT").timestamp()
    assert clock_skew(date, now) == skew


def test_the_tracker_logs_once_per_change_and_keeps_a_verdict_through_silence():
    tracker = Tracker()
    ok = judge(EXPECTED, GOOD, ACCEPTED)
    open_ = judge(EXPECTED, Reply(200))
    # No answer before any verdict: unverified (refusing).
    changed = tracker.observe(None, "ConnectionRefusedError")
    assert changed is not None and changed.kind == "unverified"
    assert "ConnectionRefusedError" in changed.reason
    again = tracker.observe(None, "TimeoutError")
    assert again is None and "TimeoutError" in tracker.verdict.reason  # type: ignore[union-attr]
    assert tracker.observe(ok) == ok
    assert tracker.observe(ok) is None  # no change, no log line
    assert tracker.observe(None, "503") is None and tracker.verdict == ok  # silence keeps ok
    assert tracker.observe(open_) == open_
    assert tracker.observe(None) is None and tracker.verdict == open_  # and keeps open
    assert tracker.observe(ok) == ok
    tracker.reset()
    assert tracker.verdict is None


def test_the_probe_token_is_worth_nothing(write_policy, certs_dir):
    runtime = build_runtime(
        write_policy(mode="delegate", lifetime=3600), certs_dir, "http://127.0.0.1:5000"
    )
    token = probe_token(runtime.issuer)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == ACCESS_TYP and header["x5c"] and header["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["access"] == [] and claims["sub"] == ""
    assert claims["iss"] == ISSUER and claims["aud"] == SERVICE
    assert claims["exp"] - claims["iat"] == delegate_check.PROBE_LIFETIME
    assert abs(claims["iat"] - time.time()) < 5
    verified = runtime.verifier.verify_access(token)  # a real regauth token, for nothing
    assert verified.grants == ()
    assert probe_token(runtime.issuer) != token  # a new one each time


def test_readiness_with_the_delegate_check():
    now = 1_800_000_000.0
    ready = health.readiness(True, now + 86400, now - 1, None, now, 6.0)
    assert ready.ready and ready.body() == "ready\n"
    refused = health.readiness(
        True,
        now + 86400,
        now - 1,
        None,
        now,
        6.0,
        delegate="delegate check: the registry answered …",
    )
    assert not refused.ready
    assert refused.body() == "not ready: delegate check: the registry answered …\n"
    warned = health.readiness(
        True, now + 86400, now - 1, None, now, 6.0, warnings=("the delegate check is off",)
    )
    assert warned.ready and warned.body() == "ready\nwarning: the delegate check is off\n"
    both = health.readiness(
        True, now + 86400, None, "TimeoutError", now, 6.0, delegate="delegate check: x"
    )
    assert both.body() == (
        "not ready: the upstream registry has not answered yet "
        "(TimeoutError)\nnot ready: delegate check: x\n"
    )


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["serve", "--delegate-unchecked"], {}, True),
        (["serve", "--delegate-unchecked", "--", "--set", "x=1"], {}, True),
        (["serve"], {"REGAUTH_DELEGATE_UNCHECKED": "1"}, True),
        (["serve"], {"REGAUTH_DELEGATE_UNCHECKED": "0"}, False),
        (["serve", "--", "--set", "x=1"], {}, False),
    ],
)
def test_regauth_serve_delegate_unchecked(argv, env, expected, monkeypatch):
    from regauth import cli
    from regauth.mitm.launcher import ServeConfig
    from regauth.mitm.launcher import mitmproxy_args
    from regauth.tools import commands

    seen = []
    monkeypatch.setattr(commands, "serve", lambda args: seen.append(args) or 0)
    monkeypatch.delenv("REGAUTH_DELEGATE_UNCHECKED", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(argv) == 0
    assert [args.delegate_unchecked for args in seen] == [expected]
    config = ServeConfig(
        "http://127.0.0.1:5000",
        "127.0.0.1",
        5443,
        "https://localhost:5443",
        Path("certs"),
        Path("p.yaml"),
        Path("l.jsonl"),
        admin_listen="off",
        delegate_unchecked=expected,
    )
    assert ("regauth_delegate_unchecked=true" in mitmproxy_args(config, None)) is expected
