"""Attacks on regauth in enforce mode, against a real `regauth serve` and a real docker-registry.

Every case asserts what the client gets (status, registry JSON error code, WWW-Authenticate
error) and that the upstream registry received nothing: the registry's own access log is read
up to a sentinel request sent straight to it, and regauth's exchange log must show no new flow
answered by the upstream. Positive controls show the same setup does forward genuine requests.

One registry and one regauth serve the whole module (a second regauth, with another `service`,
is started for the audience tests).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from regauth.ops.registry_process import RegistryProcess
from tests.support import attacks
from tests.support import httpclient
from tests.support.attacks import KeyPair
from tests.support.attacks import RawReply
from tests.support.invariant import RegistryWatch
from tests.support.invariant import assert_registry_saw_only_decided
from tests.support.invariant import capability_redactor
from tests.support.policies import ISSUER
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import build_id
from tests.support.policies import policy_text
from tests.support.proxy import ProxyProcess
from tests.support.proxy import start_proxy

OTHER_SERVICE = "regauth-other-service"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 2,
        },
        "layers": [],
    }
).encode()
FULL_ACCESS: list[dict[str, object]] = [
    {"type": "repository", "name": "public/app", "actions": ["pull", "push", "delete"]},
    {"type": "registry", "name": "catalog", "actions": ["*"]},
]
SOME_DIGEST = "sha256:" + "ab" * 32


# -- the stack under attack --------------------------------------------------------------------


@dataclass
class Attempt:
    reply: RawReply
    forwarded: list[str]  # request lines the registry logged for this attempt
    upstream_flows: int  # new exchange records regauth marked as answered by the upstream

    def assert_nothing_forwarded(self) -> None:
        assert self.forwarded == [], f"the upstream received {self.forwarded}"
        assert self.upstream_flows == 0, "regauth's exchange log shows a forwarded flow"


@dataclass
class Stack:
    registry: RegistryProcess
    proxy: ProxyProcess
    watch: attacks.UpstreamWatch
    proxies: list[ProxyProcess] = field(default_factory=list)
    secret_digest: str = ""
    invariant: RegistryWatch | None = None

    def upstream_records(self) -> int:
        return sum(
            1 for p in self.proxies for r in p.records() if r.get("answered_by") == "upstream"
        )

    def attempt(
        self,
        method: str,
        target: str | bytes,
        token: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        proxy: ProxyProcess | None = None,
    ) -> Attempt:
        proxy = proxy or self.proxy
        all_headers = list(headers or [])
        if token is not None:
            all_headers.insert(0, ("Authorization", f"Bearer {token}"))
        mark, records = self.watch.mark(), self.upstream_records()
        reply = attacks.request(proxy.port, proxy.ca, method, target, all_headers, body)
        forwarded = self.watch.since(mark)
        return Attempt(reply, forwarded, self.upstream_records() - records)

    def token(
        self,
        scopes: list[str],
        credentials: tuple[str, str] | None = None,
        proxy: ProxyProcess | None = None,
        service: str = SERVICE,
        **params: str,
    ) -> dict:
        proxy = proxy or self.proxy
        reply = httpclient.get_token(proxy.port, proxy.ca, scopes, service, credentials, **params)
        assert reply.status == 200, reply.body
        return reply.json()


def _seed_secret_blob(watch: RegistryWatch) -> str:
    """A blob in cache/secret (written straight to the registry): what mounts must not leak."""
    blob = b"cache/secret layer " + secrets.token_bytes(16)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    status, headers, _ = watch.direct("POST", "/v2/cache/secret/blobs/uploads/", b"")
    assert status == 202
    location = urlsplit(headers["Location"])
    target = f"{location.path}?{location.query}&digest={digest}"
    status, _, _ = watch.direct("PUT", target, blob, {"Content-Type": "application/octet-stream"})
    assert status == 201
    return digest


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, certs_dir: Path, password_hashes: dict[str, str]
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("security")
    registry = RegistryProcess(workdir / "registry")
    registry.start()
    proxy = None
    try:
        policy = workdir / "policy.yaml"
        policy.write_text(policy_text(password_hashes, lifetime=900))
        # After start: the readiness probe is the baseline; the seed and the sentinels are
        # direct requests the invariant knows.
        invariant = RegistryWatch(registry, redact=capability_redactor(policy))
        proxy = start_proxy(
            workdir / "proxy", certs_dir=certs_dir, policy=policy, upstream=registry.url
        )
        invariant.add_exchange_log(proxy.log_path)
        result = Stack(
            registry,
            proxy,
            attacks.UpstreamWatch(registry, invariant.direct),
            [proxy],
            invariant=invariant,
        )
        result.secret_digest = _seed_secret_blob(invariant)
        yield result
    finally:
        if proxy is not None:
            proxy.stop()
        registry.stop()


@pytest.fixture(autouse=True)
def registry_saw_only_decided(stack: Stack) -> Iterator[None]:
    """Every test ends with the invariant of issue 14 (tests/support/invariant.py)."""
    yield
    assert stack.invariant is not None
    assert_registry_saw_only_decided(stack.invariant)


@pytest.fixture(scope="module")
def other_proxy(
    stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
    certs_dir: Path,
    password_hashes: dict[str, str],
) -> Iterator[ProxyProcess]:
    """A second regauth with the same signing key and upstream but another `service`."""
    workdir = tmp_path_factory.mktemp("security-other")
    text = policy_text(password_hashes, lifetime=900)
    assert f"service: {SERVICE}\n" in text
    policy = workdir / "policy.yaml"
    policy.write_text(text.replace(f"service: {SERVICE}\n", f"service: {OTHER_SERVICE}\n"))
    proxy = start_proxy(
        workdir / "proxy", certs_dir=certs_dir, policy=policy, upstream=stack.registry.url
    )
    stack.proxies.append(proxy)
    assert stack.invariant is not None
    stack.invariant.add_exchange_log(proxy.log_path)
    yield proxy
    stack.proxies.remove(proxy)
    proxy.stop()


@pytest.fixture
def ci_token(stack: Stack) -> str:
    """A genuine token for every name the path-confusion targets decode to (that policy allows)."""
    return stack.token(
        [
            "repository:public/app:pull,push,delete",
            "repository:public/secret:pull,push,delete",
            "registry:catalog:*",
        ],
        ("ci", PASSWORDS["ci"]),
    )["token"]


# -- assertions --------------------------------------------------------------------------------


def challenge_params(reply: RawReply) -> dict[str, str]:
    values = reply.header_values("www-authenticate")
    assert len(values) == 1, f"expected one challenge, got {values}"
    assert values[0].startswith("Bearer "), values[0]
    return dict(re.findall(r'(\w+)="([^"]*)"', values[0]))


def assert_invalid_token(attempt: Attempt) -> None:
    reply = attempt.reply
    assert reply.status == 401, (reply.status, reply.body)
    params = challenge_params(reply)
    assert params.get("error") == "invalid_token", params
    assert params.get("service") == SERVICE
    assert reply.error_codes() == ["UNAUTHORIZED"], reply.body
    attempt.assert_nothing_forwarded()


def assert_insufficient_scope(attempt: Attempt, scope: str) -> None:
    """A 401 insufficient_scope whose challenge names the missing `scope` (among the rest of
    the access the request needs, as distribution names it)."""
    reply = attempt.reply
    assert reply.status == 401, (reply.status, reply.body)
    params = challenge_params(reply)
    assert params.get("error") == "insufficient_scope", params
    assert scope in params.get("scope", "").split(" "), params
    assert reply.error_codes() == ["UNAUTHORIZED"], reply.body
    attempt.assert_nothing_forwarded()


def assert_refused(attempt: Attempt) -> None:
    """A refusal of any shape (4xx or a closed connection), and nothing reached the upstream."""
    reply = attempt.reply
    assert reply.status is None or 400 <= reply.status < 500, (reply.status, reply.body[:300])
    attempt.assert_nothing_forwarded()


# -- 1. JWT attacks ----------------------------------------------------------------------------


@dataclass
class Forge:
    stack: Stack
    genuine: KeyPair
    attacker: KeyPair

    def claims(self, **overrides: object) -> dict[str, object]:
        return attacks.access_claims(ISSUER, SERVICE, FULL_ACCESS, **overrides)

    def genuine_header(self, **overrides: object) -> dict[str, object]:
        header: dict[str, object] = {
            "typ": attacks.ACCESS_TYP,
            "kid": self.genuine.kid,
            "x5c": self.genuine.x5c,
        }
        header.update(overrides)
        return header

    def anonymous_pull_token(self) -> str:
        return self.stack.token(["repository:public/app:pull"])["token"]


@pytest.fixture(scope="module")
def forge(stack: Stack, certs_dir: Path) -> Forge:
    return Forge(stack, attacks.genuine_key(certs_dir), attacks.attacker_key())


def _tampered(f: Forge) -> str:
    token = f.anonymous_pull_token()
    claims = attacks.b64url_decode_json(token.split(".")[1])
    assert claims["access"] == [{"type": "repository", "name": "public/app", "actions": ["pull"]}]
    claims["access"] = FULL_ACCESS
    return attacks.replace_claims(token, claims)


def _refresh_token(f: Forge) -> str:
    body = f.stack.token(
        ["repository:public/app:pull,push"], ("ci", PASSWORDS["ci"]), offline_token="true"
    )
    return body["refresh_token"]


def _oversized(f: Forge) -> str:
    token = attacks.sign(f.claims(pad="x" * 9000), f.genuine)
    assert len(token) > 8192
    return token


def _oversized_header(f: Forge) -> str:
    token = attacks.sign(f.claims(), f.genuine, pad="x" * 3700)
    header = token.split(".")[0]
    assert len(header) * 3 // 4 > 4096 and len(token) < 8000
    return token


def _hs256(secret: Callable[[KeyPair], bytes]) -> Callable[[Forge], str]:
    return lambda f: attacks.hmac_signed(
        f.claims(), f.genuine_header(alg="HS256"), secret(f.genuine)
    )


JWT_ATTACKS: dict[str, Callable[[Forge], str]] = {
    "alg-none": lambda f: attacks.unsigned(f.claims(), f.genuine_header(alg="none")),
    "alg-none-with-signature": lambda f: attacks.unsigned(
        f.claims(), f.genuine_header(alg="none"), f.anonymous_pull_token().split(".")[2]
    ),
    "alg-NONE-uppercase": lambda f: attacks.unsigned(
        f.claims(), f.genuine_header(alg="NONE"), attacks.b64url(b"x")
    ),
    "hs256-public-key-pem-secret": _hs256(lambda k: k.public_pem),
    "hs256-certificate-pem-secret": _hs256(lambda k: k.certificate_pem),
    "wrong-aud": lambda f: attacks.sign(f.claims(aud=OTHER_SERVICE), f.genuine),
    "aud-array": lambda f: attacks.sign(f.claims(aud=[SERVICE, OTHER_SERVICE]), f.genuine),
    "missing-aud": lambda f: attacks.sign(
        {k: v for k, v in f.claims().items() if k != "aud"}, f.genuine
    ),
    "wrong-iss": lambda f: attacks.sign(f.claims(iss="evil-issuer"), f.genuine),
    "expired": lambda f: attacks.sign(
        f.claims(
            exp=int(time.time()) - 3600, iat=int(time.time()) - 3700, nbf=int(time.time()) - 3700
        ),
        f.genuine,
    ),
    "expired-just-beyond-leeway": lambda f: attacks.sign(
        f.claims(exp=int(time.time()) - 90, iat=int(time.time()) - 200, nbf=int(time.time()) - 200),
        f.genuine,
    ),
    "missing-exp": lambda f: attacks.sign(
        {k: v for k, v in f.claims().items() if k != "exp"}, f.genuine
    ),
    "not-yet-valid": lambda f: attacks.sign(f.claims(nbf=int(time.time()) + 3600), f.genuine),
    "not-yet-valid-beyond-leeway": lambda f: attacks.sign(
        f.claims(nbf=int(time.time()) + 120), f.genuine
    ),
    "unknown-kid": lambda f: attacks.sign(f.claims(), f.attacker, x5c=None),
    "genuine-kid-attacker-signature": lambda f: attacks.sign(
        f.claims(), f.attacker, kid=f.genuine.kid, x5c=f.genuine.x5c
    ),
    "injected-jwk": lambda f: attacks.sign(f.claims(), f.attacker, x5c=None, jwk=f.attacker.jwk),
    "injected-jwk-genuine-kid": lambda f: attacks.sign(
        f.claims(), f.attacker, kid=f.genuine.kid, x5c=None, jwk=f.attacker.jwk
    ),
    "injected-jku": lambda f: attacks.sign(
        f.claims(), f.attacker, x5c=None, jku="https://evil.example/jwks.json"
    ),
    "injected-x5c": lambda f: attacks.sign(f.claims(), f.attacker),
    "injected-x5c-genuine-kid": lambda f: attacks.sign(f.claims(), f.attacker, kid=f.genuine.kid),
    "injected-x5c-chain-ending-in-genuine": lambda f: attacks.sign(
        f.claims(), f.attacker, x5c=f.attacker.x5c + f.genuine.x5c
    ),
    "wrong-typ": lambda f: attacks.sign(f.claims(), f.genuine, typ="JWT"),
    "tampered-access-claim": _tampered,
    "signature-stripped": lambda f: f.anonymous_pull_token().rsplit(".", 1)[0] + ".",
    "oversized-token": _oversized,
    "oversized-header": _oversized_header,
    "garbage": lambda f: "not-a-jwt",
    "garbage-three-segments": lambda f: "a.b.c",
    "garbage-non-base64": lambda f: "e30=.e30=.!!",
    "refresh-token-as-access-token": _refresh_token,
}

REGISTRY_TARGETS = {
    "pull": ("GET", "/v2/public/app/manifests/1", None, []),
    "push": ("PUT", "/v2/public/app/manifests/1", MANIFEST, [("Content-Type", MANIFEST_TYPE)]),
}


@pytest.mark.parametrize("target", list(REGISTRY_TARGETS))
@pytest.mark.parametrize("attack", list(JWT_ATTACKS))
def test_forged_token_is_refused(stack: Stack, forge: Forge, attack: str, target: str) -> None:
    token = JWT_ATTACKS[attack](forge)
    method, path, body, headers = REGISTRY_TARGETS[target]
    assert_invalid_token(stack.attempt(method, path, token, headers, body))


@pytest.mark.parametrize("target", list(REGISTRY_TARGETS))
def test_genuine_token_is_forwarded(stack: Stack, target: str) -> None:
    """Positive control for the JWT cases: the same route with a genuine token reaches the
    registry (which then answers for itself)."""
    method, path, body, headers = REGISTRY_TARGETS[target]
    if target == "pull":
        token = stack.token(["repository:public/app:pull"])["token"]
    else:
        token = stack.token(["repository:public/app:pull,push"], ("ci", PASSWORDS["ci"]))["token"]
    attempt = stack.attempt(method, path, token, headers, body)
    assert attempt.forwarded == [f"{method} {path} HTTP/1.1"]
    assert attempt.upstream_flows == 1
    assert attempt.reply.header("www-authenticate") is None
    # The registry's own verdict on an unknown tag / a manifest with unknown blobs.
    expected = "MANIFEST_UNKNOWN" if target == "pull" else "MANIFEST_BLOB_UNKNOWN"
    assert attempt.reply.status in (400, 404), attempt.reply.body
    assert expected in attempt.reply.error_codes(), attempt.reply.body


def test_missing_token_is_challenged(stack: Stack) -> None:
    attempt = stack.attempt("GET", "/v2/public/app/manifests/1")
    assert attempt.reply.status == 401
    params = challenge_params(attempt.reply)
    assert "error" not in params
    assert params["scope"] == "repository:public/app:pull"
    assert params["realm"] == f"{stack.proxy.url}/v2/token"
    attempt.assert_nothing_forwarded()


# -- 2. insufficient scope ---------------------------------------------------------------------

SCOPE_CASES = {
    # case: (scopes requested anonymously, method, path, missing scope in the challenge)
    "pull-token-used-to-push": (
        ["repository:public/app:pull"],
        "PUT",
        "/v2/public/app/manifests/1",
        "repository:public/app:pull,push",
    ),
    "pull-token-used-to-delete": (
        ["repository:public/app:pull"],
        "DELETE",
        "/v2/public/app/manifests/" + SOME_DIGEST,
        "repository:public/app:delete",
    ),
    "pull-token-used-to-start-upload": (
        ["repository:public/app:pull"],
        "POST",
        "/v2/public/app/blobs/uploads/",
        "repository:public/app:pull,push",
    ),
    "token-for-another-repository": (
        ["repository:public/app:pull"],
        "GET",
        "/v2/public/other/manifests/1",
        "repository:public/other:pull",
    ),
    "token-for-a-prefix-of-the-name": (
        ["repository:public/app:pull"],
        "GET",
        "/v2/public/app/sub/manifests/1",
        "repository:public/app/sub:pull",
    ),
    "anonymous-catalog": (["registry:catalog:*"], "GET", "/v2/_catalog", "registry:catalog:*"),
    "denied-scope-not-in-token": (
        ["repository:cache/secret:pull"],
        "GET",
        "/v2/cache/secret/blobs/" + SOME_DIGEST,
        "repository:cache/secret:pull",
    ),
}


@pytest.mark.parametrize("case", list(SCOPE_CASES))
def test_insufficient_scope(stack: Stack, case: str) -> None:
    scopes, method, path, missing = SCOPE_CASES[case]
    token = stack.token(scopes)["token"]
    headers = [("Content-Type", MANIFEST_TYPE)] if method == "PUT" else []
    body = MANIFEST if method == "PUT" else None
    assert_insufficient_scope(stack.attempt(method, path, token, headers, body), missing)


def test_build_token_does_not_cover_another_build(stack: Stack) -> None:
    mine, other = build_id(), build_id()
    token = stack.token([f"repository:builds/{mine}:pull,push"])["token"]
    attempt = stack.attempt("POST", f"/v2/builds/{other}/blobs/uploads/", token)
    assert_insufficient_scope(attempt, f"repository:builds/{other}:pull,push")


# -- 3. path confusion -------------------------------------------------------------------------

NAME_INVALID = "NAME_INVALID"
TAG_INVALID = "TAG_INVALID"
DIGEST_INVALID = "DIGEST_INVALID"
NO_ROUTE = "UNSUPPORTED"

PATH_CASES: dict[str, tuple[str, str, int, str]] = {
    # case: (method, raw request target, status, registry error code)
    "encoded-slash": ("GET", "/v2/public%2Fapp/manifests/1", 400, NAME_INVALID),
    "encoded-slash-lowercase": ("GET", "/v2/public%2fapp/manifests/1", 400, NAME_INVALID),
    "encoded-slash-before-route": ("GET", "/v2/public/app%2Fmanifests/1", 400, NAME_INVALID),
    "encoded-dotdot": ("GET", "/v2/public/%2E%2E/secret/manifests/1", 400, NAME_INVALID),
    "encoded-dotdot-lowercase": (
        "GET",
        "/v2/public/app/%2e%2e/secret/manifests/1",
        400,
        NAME_INVALID,
    ),
    "encoded-backslash": ("GET", "/v2/public%5Capp/manifests/1", 400, NAME_INVALID),
    "encoded-nul": ("GET", "/v2/public/app%00/manifests/1", 400, NAME_INVALID),
    "dotdot": ("GET", "/v2/public/../secret/manifests/1", 400, NAME_INVALID),
    "dotdot-inside-allowed-prefix": (
        "GET",
        "/v2/public/app/../secret/manifests/1",
        400,
        NAME_INVALID,
    ),
    "dotdot-push": ("PUT", "/v2/public/app/../../cache/secret/manifests/1", 400, NAME_INVALID),
    "dot": ("GET", "/v2/public/./app/manifests/1", 400, NAME_INVALID),
    "leading-double-slash": ("GET", "//v2/public/app/manifests/1", 404, NO_ROUTE),
    "double-slash-in-name": ("GET", "/v2/public//app/manifests/1", 400, NAME_INVALID),
    "double-slash-after-v2": ("GET", "/v2//public/app/manifests/1", 400, NAME_INVALID),
    "backslash": ("GET", "/v2/public\\app/manifests/1", 400, NAME_INVALID),
    "backslash-dotdot": ("GET", "/v2/public/app\\..\\secret/manifests/1", 400, NAME_INVALID),
    "catalog-trailing-slash": ("GET", "/v2/_catalog/", 404, NO_ROUTE),
    "tags-list-trailing-slash": ("GET", "/v2/x/tags/list/", 404, NO_ROUTE),
    "tags-list-trailing-slash-allowed-name": ("GET", "/v2/public/app/tags/list/", 404, NO_ROUTE),
    "manifest-trailing-slash": ("GET", "/v2/public/app/manifests/1/", 404, NO_ROUTE),
    "uppercase-name": ("GET", "/v2/Public/App/manifests/1", 400, NAME_INVALID),
    "tag-129-chars": ("GET", "/v2/public/app/manifests/" + "a" * 129, 400, TAG_INVALID),
    "tag-leading-dot": ("GET", "/v2/public/app/manifests/.hidden", 400, TAG_INVALID),
    "tag-leading-dash": ("GET", "/v2/public/app/manifests/-x", 400, TAG_INVALID),
    "tag-with-path-parameter": ("GET", "/v2/public/app/manifests/1;x=y", 400, TAG_INVALID),
    "tag-with-fragment": ("GET", "/v2/public/app/manifests/1#x", 400, TAG_INVALID),
    "bad-digest-manifest": ("GET", "/v2/public/app/manifests/sha256:xyz", 400, DIGEST_INVALID),
    "bad-digest-blob": ("GET", "/v2/public/app/blobs/sha256:xyz", 400, DIGEST_INVALID),
    "digest-uppercase-hex": (
        "GET",
        "/v2/public/app/blobs/sha256:" + "AB" * 32,
        400,
        DIGEST_INVALID,
    ),
    "digest-unknown-algorithm": (
        "GET",
        "/v2/public/app/blobs/md5:" + "ab" * 16,
        400,
        DIGEST_INVALID,
    ),
    "absolute-form-dotdot": (
        "GET",
        "https://localhost/v2/public/app/../secret/manifests/1",
        400,
        NAME_INVALID,
    ),
    "absolute-form-encoded-slash": (
        "GET",
        "https://localhost/v2/public%2Fapp/manifests/1",
        400,
        NAME_INVALID,
    ),
}


@pytest.mark.parametrize("case", list(PATH_CASES))
def test_path_confusion_is_refused(stack: Stack, ci_token: str, case: str) -> None:
    method, target, status, code = PATH_CASES[case]
    body = MANIFEST if method == "PUT" else None
    attempt = stack.attempt(method, target, ci_token, [], body)
    assert attempt.reply.status == status, (attempt.reply.status, attempt.reply.body)
    assert attempt.reply.error_codes() == [code], attempt.reply.body
    assert attempt.reply.header("www-authenticate") is None
    attempt.assert_nothing_forwarded()


def test_path_control_with_the_same_token_is_forwarded(stack: Stack, ci_token: str) -> None:
    attempt = stack.attempt("GET", "/v2/_catalog", ci_token)
    assert attempt.reply.status == 200, attempt.reply.body
    assert attempt.forwarded == ["GET /v2/_catalog HTTP/1.1"]


# -- 4. header injection -----------------------------------------------------------------------

INJECTION_TOKEN_QUERIES = {
    # case: (query after /v2/token?, OAuth error)
    "scope-quote-encoded": (f"service={SERVICE}&scope=repository:a%22b:pull", "invalid_scope"),
    "scope-quote-raw": (f'service={SERVICE}&scope=repository:a"b:pull', "invalid_scope"),
    "scope-crlf": (
        f"service={SERVICE}&scope=repository:a%0d%0aX-Injected:%201:pull",
        "invalid_scope",
    ),
    "scope-lf": (f"service={SERVICE}&scope=repository:a%0aX-Injected:%201:pull", "invalid_scope"),
    "scope-cr": (f"service={SERVICE}&scope=repository:a%0dX-Injected:%201:pull", "invalid_scope"),
    "scope-crlf-in-actions": (
        f"service={SERVICE}&scope=repository:public/app:pull%0d%0aX-Injected:%201",
        "invalid_scope",
    ),
    "scope-backslash-encoded": (f"service={SERVICE}&scope=repository:a%5cb:pull", "invalid_scope"),
    "scope-backslash-raw": (f"service={SERVICE}&scope=repository:a\\b:pull", "invalid_scope"),
    "scope-quote-breaking-challenge": (
        f"service={SERVICE}&scope=repository:a%22,realm=%22https://evil.example:pull",
        "invalid_scope",
    ),
    "service-crlf": (
        "service=x%0d%0aX-Injected:%201&scope=repository:public/app:pull",
        "invalid_request",
    ),
    "service-quote": ("service=x%22,realm=%22https://evil.example", "invalid_request"),
}


def assert_no_injection(reply: RawReply) -> None:
    assert b"x-injected" not in reply.head.lower(), reply.head
    for name, value in reply.headers:
        assert name.lower() != "x-injected"
        assert "evil.example" not in value, (name, value)
        assert 'a"b' not in value and "a\\b" not in value, (name, value)
        assert "\r" not in value and "\n" not in value, (name, value)


@pytest.mark.parametrize("case", list(INJECTION_TOKEN_QUERIES))
def test_token_request_injection_is_refused(stack: Stack, case: str) -> None:
    query, oauth_error = INJECTION_TOKEN_QUERIES[case]
    attempt = stack.attempt("GET", "/v2/token?" + query)
    assert attempt.reply.status == 400, (attempt.reply.status, attempt.reply.body)
    body = attempt.reply.json()
    assert body["error"] == oauth_error, body
    assert body["errors"][0]["code"] in ("UNSUPPORTED", "DENIED"), body
    assert "token" not in body
    assert_no_injection(attempt.reply)
    attempt.assert_nothing_forwarded()


INJECTION_REGISTRY_TARGETS = {
    # case: (method, raw request target, registry error code or None for mitmproxy's own)
    "path-crlf-encoded": ("GET", "/v2/a%0d%0aX-Injected:%201/manifests/1", NAME_INVALID),
    "path-lf-encoded": ("GET", "/v2/a%0aX-Injected:%201/manifests/1", NAME_INVALID),
    "path-quote-encoded": ("GET", "/v2/a%22b/manifests/1", NAME_INVALID),
    "path-quote-raw": ("GET", '/v2/a"b/manifests/1', NAME_INVALID),
    "path-quote-breaking-challenge": (
        "GET",
        '/v2/a",realm="evil.example/manifests/1',
        NAME_INVALID,
    ),
    "path-backslash-encoded": ("GET", "/v2/a%5cb/manifests/1", NAME_INVALID),
    "mount-from-crlf": (
        "POST",
        f"/v2/builds/{'a' * 26}/blobs/uploads/?mount={SOME_DIGEST}&from=a%0d%0aX-Injected:%201",
        NAME_INVALID,
    ),
    "mount-from-quote": (
        "POST",
        f"/v2/builds/{'a' * 26}/blobs/uploads/?mount={SOME_DIGEST}&from=a%22b",
        NAME_INVALID,
    ),
    "raw-crlf-in-request-line": ("GET", "/v2/a\r\nX-Injected: 1/manifests/1", None),
}


@pytest.mark.parametrize("anonymous", [True, False], ids=["anonymous", "with-token"])
@pytest.mark.parametrize("case", list(INJECTION_REGISTRY_TARGETS))
def test_registry_path_injection_is_refused(
    stack: Stack, ci_token: str, case: str, anonymous: bool
) -> None:
    method, target, code = INJECTION_REGISTRY_TARGETS[case]
    attempt = stack.attempt(method, target, None if anonymous else ci_token)
    assert attempt.reply.status == 400, (attempt.reply.status, attempt.reply.body)
    if code is not None:
        assert attempt.reply.error_codes() == [code], attempt.reply.body
    assert attempt.reply.header("www-authenticate") is None
    assert_no_injection(attempt.reply)
    attempt.assert_nothing_forwarded()


# -- 5. oversized headers and queries ----------------------------------------------------------

OVERSIZED = {
    # case: (method, target, headers, body)
    "authorization-64k-registry-route": (
        "GET",
        "/v2/public/app/manifests/1",
        [("Authorization", "Bearer " + "a" * 65536)],
        None,
    ),
    "authorization-64k-token-endpoint": (
        "GET",
        f"/v2/token?service={SERVICE}",
        [("Authorization", "Basic " + "a" * 65536)],
        None,
    ),
    "token-query-100k-junk": (
        "GET",
        f"/v2/token?service={SERVICE}&scope=repository:public/app:pull&x=" + "a" * 100_000,
        [],
        None,
    ),
    "token-query-100k-scope": (
        "GET",
        f"/v2/token?service={SERVICE}&scope=repository:{'a' * 100_000}:pull",
        [],
        None,
    ),
    "token-1000-scopes": (
        "GET",
        f"/v2/token?service={SERVICE}&"
        + "&".join(f"scope=repository:public/a{i}:pull" for i in range(1000)),
        [],
        None,
    ),
    "token-form-over-64k": (
        "POST",
        "/v2/token",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"grant_type=password&client_id=x&username=ci&password=" + b"a" * 70_000,
    ),
    "registry-query-100k": ("GET", "/v2/public/app/manifests/1?x=" + "a" * 100_000, [], None),
    "registry-1000-query-params": (
        "POST",
        "/v2/public/app/blobs/uploads/?" + "&".join(f"p{i}=1" for i in range(1000)),
        [],
        None,
    ),
    "registry-100-query-params": (
        "POST",
        "/v2/public/app/blobs/uploads/?" + "&".join(f"p{i}=1" for i in range(100)),
        [],
        None,
    ),
    "registry-path-3k": ("GET", "/v2/public/" + "a/" * 1500 + "manifests/1", [], None),
}


@pytest.mark.parametrize("case", list(OVERSIZED))
def test_oversized_request_is_refused(stack: Stack, case: str) -> None:
    method, target, headers, body = OVERSIZED[case]
    attempt = stack.attempt(method, target, None, headers, body)
    assert_refused(attempt)
    reply = attempt.reply
    if reply.status is not None:
        assert b'"token"' not in reply.body
        assert "errors" in reply.json(), reply.body
        if reply.status == 401 and case.endswith("registry-route"):
            assert challenge_params(reply).get("error") == "invalid_token"


# -- 6. non-registry paths ---------------------------------------------------------------------

NON_REGISTRY = [
    "/",
    "/debug/vars",
    "/debug/pprof/",
    "/metrics",
    "/v1/_ping",
    "/v1/repositories/public/app/images",
    "/v1/search?q=app",
    "/V2/",
    "/V2/public/app/manifests/1",
    "/v2token",
    "/v3/",
    "/favicon.ico",
]


@pytest.mark.parametrize("anonymous", [True, False], ids=["anonymous", "with-token"])
@pytest.mark.parametrize("path", NON_REGISTRY)
def test_non_registry_path_is_404(stack: Stack, ci_token: str, path: str, anonymous: bool) -> None:
    attempt = stack.attempt("GET", path, None if anonymous else ci_token)
    assert attempt.reply.status == 404, (attempt.reply.status, attempt.reply.body)
    assert attempt.reply.header("www-authenticate") is None
    assert attempt.reply.error_codes() == [NO_ROUTE], attempt.reply.body
    attempt.assert_nothing_forwarded()


@pytest.mark.parametrize("target", ["*", "v2/", "/v2/ x"])
def test_a_target_outside_the_origin_form_is_400(stack: Stack, ci_token: str, target: str) -> None:
    # An asterisk-form or relative target, or one with spaces or controls (possible in an
    # HTTP/2 :path, which goes into the registry's request line), is never routed.
    attempt = stack.attempt("GET", target, ci_token)
    assert attempt.reply.status == 400, (attempt.reply.status, attempt.reply.body)
    assert attempt.reply.header("www-authenticate") is None
    attempt.assert_nothing_forwarded()


def test_non_registry_post_is_404(stack: Stack) -> None:
    attempt = stack.attempt("POST", "/v1/repositories/public/app/", None, [], b"{}")
    assert attempt.reply.status == 404
    assert attempt.reply.header("www-authenticate") is None
    attempt.assert_nothing_forwarded()


# -- 7. audience -------------------------------------------------------------------------------


def test_token_for_another_service_is_refused(stack: Stack, other_proxy: ProxyProcess) -> None:
    token = stack.token(["repository:public/app:pull"])["token"]
    claims = attacks.b64url_decode_json(token.split(".")[1])
    assert claims["aud"] == SERVICE
    attempt = stack.attempt("GET", "/v2/public/app/manifests/1", token, proxy=other_proxy)
    reply = attempt.reply
    assert reply.status == 401, reply.body
    params = challenge_params(reply)
    assert params.get("error") == "invalid_token", params
    assert params.get("service") == OTHER_SERVICE
    assert reply.error_codes() == ["UNAUTHORIZED"]
    attempt.assert_nothing_forwarded()


def test_other_service_token_is_refused_here(stack: Stack, other_proxy: ProxyProcess) -> None:
    token = stack.token(["repository:public/app:pull"], proxy=other_proxy, service=OTHER_SERVICE)[
        "token"
    ]
    assert attacks.b64url_decode_json(token.split(".")[1])["aud"] == OTHER_SERVICE
    assert_invalid_token(stack.attempt("GET", "/v2/public/app/manifests/1", token))


def test_audience_is_not_the_clients_choice(stack: Stack, other_proxy: ProxyProcess) -> None:
    reply = httpclient.get_token(
        other_proxy.port, other_proxy.ca, ["repository:public/app:pull"], SERVICE
    )
    assert reply.status == 400, reply.body
    assert reply.json()["error"] == "invalid_request"
    assert "token" not in reply.json()


def test_other_service_accepts_its_own_token(stack: Stack, other_proxy: ProxyProcess) -> None:
    """Positive control: the second instance forwards with its own token."""
    token = stack.token(["repository:public/app:pull"], proxy=other_proxy, service=OTHER_SERVICE)[
        "token"
    ]
    attempt = stack.attempt("GET", "/v2/public/app/manifests/1", token, proxy=other_proxy)
    assert attempt.forwarded == ["GET /v2/public/app/manifests/1 HTTP/1.1"]
    assert attempt.reply.status == 404
    assert attempt.reply.error_codes() == ["MANIFEST_UNKNOWN"]


# -- 8. cross-repository mount -----------------------------------------------------------------


def _build_token(stack: Stack, build: str, *extra: str) -> dict:
    body = stack.token(
        [f"repository:builds/{build}:pull,push", "repository:cache/secret:pull", *extra]
    )
    granted = attacks.b64url_decode_json(body["token"].split(".")[1])["access"]
    assert {"type": "repository", "name": "cache/secret", "actions": ["pull"]} not in granted
    assert {"type": "repository", "name": f"builds/{build}", "actions": ["pull", "push"]} in granted
    return body


MOUNT_QUERIES = {
    # case: (query, expected status, code or the missing scope for a 401)
    "mount-from-secret": ("mount={digest}&from=cache/secret", 401, "repository:cache/secret:pull"),
    "from-encoded-slash": (
        "mount={digest}&from=cache%2Fsecret",
        401,
        "repository:cache/secret:pull",
    ),
    "from-encoded-key": ("mount={digest}&%66rom=cache/secret", 401, "repository:cache/secret:pull"),
    "from-only": ("from=cache/secret", 401, "repository:cache/secret:pull"),
    "from-given-twice": (
        "mount={digest}&from=builds/{build}&from=cache/secret",
        400,
        "UNSUPPORTED",
    ),
    "from-after-semicolon": (
        "mount={digest}&from=builds/{build};from=cache/secret",
        400,
        "UNSUPPORTED",
    ),
    "from-uppercase": ("mount={digest}&from=Cache/Secret", 400, NAME_INVALID),
    "from-dotdot": ("mount={digest}&from=builds/../cache/secret", 400, NAME_INVALID),
    "mount-bad-digest": ("mount=sha256:xyz&from=cache/secret", 400, DIGEST_INVALID),
}


@pytest.mark.parametrize("case", list(MOUNT_QUERIES))
def test_cross_repository_mount_is_refused(stack: Stack, case: str) -> None:
    build = build_id()
    token = _build_token(stack, build)["token"]
    query, status, expected = MOUNT_QUERIES[case]
    target = f"/v2/builds/{build}/blobs/uploads/?" + query.format(
        digest=stack.secret_digest, build=build
    )
    attempt = stack.attempt("POST", target, token)
    if status == 401:
        assert_insufficient_scope(attempt, expected)
    else:
        assert attempt.reply.status == status, (attempt.reply.status, attempt.reply.body)
        assert attempt.reply.error_codes() == [expected], attempt.reply.body
        attempt.assert_nothing_forwarded()


def _multipart(fields: dict[str, str], boundary: str) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


MOUNT_BODIES = {
    # distribution reads `mount`/`from` with r.FormValue, which also parses POST bodies.
    "form-urlencoded-body": lambda digest, build: (
        "",
        "application/x-www-form-urlencoded",
        f"mount={digest}&from=cache/secret".encode(),
    ),
    "form-urlencoded-body-mixed-case-type": lambda digest, build: (
        "",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        f"mount={digest}&from=cache/secret".encode(),
    ),
    "form-body-overriding-query-from": lambda digest, build: (
        f"?mount={digest}&from=builds/{build}",
        "application/x-www-form-urlencoded",
        b"from=cache/secret",
    ),
    "multipart-body": lambda digest, build: (
        "",
        "multipart/form-data; boundary=b0undary",
        _multipart({"mount": digest, "from": "cache/secret"}, "b0undary"),
    ),
}


@pytest.mark.parametrize("case", list(MOUNT_BODIES))
def test_cross_repository_mount_via_body_is_refused(stack: Stack, case: str) -> None:
    build = build_id()
    token = _build_token(stack, build)["token"]
    query, content_type, body = MOUNT_BODIES[case](stack.secret_digest, build)
    attempt = stack.attempt(
        "POST",
        f"/v2/builds/{build}/blobs/uploads/{query}",
        token,
        [("Content-Type", content_type)],
        body,
    )
    reply = attempt.reply
    # Either the mount source is authorized like the query's (401 insufficient_scope) or a
    # form body on a registry route is refused outright (4xx): never a 201 mount.
    assert reply.status in (400, 401, 415), (reply.status, reply.body, attempt.forwarded)
    if reply.status == 401:
        assert challenge_params(reply).get("scope") == "repository:cache/secret:pull"
    assert reply.error_codes(), reply.body
    attempt.assert_nothing_forwarded()
    # And the secret blob did not become readable through the build repository.
    read = stack.attempt("GET", f"/v2/builds/{build}/blobs/{stack.secret_digest}", token)
    assert read.reply.status == 404, (read.reply.status, read.reply.body[:100])


MOUNT_HEADER_TRICKS = {
    # mitmproxy joins repeated headers ("a, b"); Go's Header.Get reads only the first.
    "duplicate-content-type": [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Type", "text/plain"),
    ],
    # U+0130 sent as UTF-8 (latin-1 here is byte for byte): Go lower-cases it to 'i'.
    "unicode-case-folding": [("Content-Type", "appl\xc4\xb0cation/x-www-form-urlencoded")],
}


@pytest.mark.parametrize("case", list(MOUNT_HEADER_TRICKS))
def test_cross_repository_mount_via_content_type_tricks_is_refused(stack: Stack, case: str) -> None:
    build = build_id()
    token = _build_token(stack, build)["token"]
    body = f"mount={stack.secret_digest}&from=cache/secret".encode()
    attempt = stack.attempt(
        "POST", f"/v2/builds/{build}/blobs/uploads/", token, MOUNT_HEADER_TRICKS[case], body
    )
    assert attempt.reply.status == 400, (attempt.reply.status, attempt.reply.body)
    assert attempt.reply.error_codes() == ["UNSUPPORTED"]
    attempt.assert_nothing_forwarded()
    read = stack.attempt("GET", f"/v2/builds/{build}/blobs/{stack.secret_digest}", token)
    assert read.reply.status == 404, (read.reply.status, read.reply.body[:100])


def test_mount_from_a_readable_repository_is_forwarded(stack: Stack) -> None:
    """Positive control: a mount whose source the token may pull reaches the registry."""
    build = build_id()
    token = _build_token(stack, build, "repository:public/app:pull")["token"]
    target = f"/v2/builds/{build}/blobs/uploads/?mount={SOME_DIGEST}&from=public/app"
    attempt = stack.attempt("POST", target, token)
    assert attempt.forwarded == [f"POST {target} HTTP/1.1"]
    assert attempt.reply.status == 202, attempt.reply.body  # unknown blob: a plain upload


def test_anonymous_cannot_read_the_secret_blob(stack: Stack) -> None:
    token = _build_token(stack, build_id())["token"]
    attempt = stack.attempt("GET", f"/v2/cache/secret/blobs/{stack.secret_digest}", token)
    assert_insufficient_scope(attempt, "repository:cache/secret:pull")
