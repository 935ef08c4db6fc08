"""Differential conformance: regauth in enforce mode answers like distribution in token mode.

Every registry route (base, catalog, tags with n/last, manifests by tag and digest, blobs with
HEAD and Range, uploads: start, status, PATCH, PUT, DELETE, mounts with and without access to
the source, referrers) is sent, with each token state (none, malformed, expired, other
audience, insufficient, sufficient), to

- regauth in enforce mode in front of a registry without auth (the documented enforce setup),
- distribution 2.8.2 in token mode trusting regauth's keys, reached directly,

both holding the same content. What a client acts on must be equal: status, registry error
`code`, challenge scheme, scope set and `error`, and `Docker-Distribution-API-Version`. A
difference is either intended (INTENDED below, each with its reason, and listed in the README's
"Differences from distribution" section) or a failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.ops.registry_process import free_port
from regauth.protocol.scope import parse_scope
from tests.support.conformance import MANIFEST_TYPE
from tests.support.conformance import Endpoint
from tests.support.conformance import image_manifest
from tests.support.conformance import observe
from tests.support.conformance import on_the_wire
from tests.support.invariant import RegistryWatch
from tests.support.invariant import assert_registry_saw_only_decided
from tests.support.invariant import capability_redactor
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE
from tests.support.policies import policy_text
from tests.support.proxy import start_proxy
from tests.unit.helpers import build_runtime

STATES = ("none", "malformed", "expired", "other-audience", "insufficient", "sufficient")

LAYER = bytes(range(256)) * 16  # 4 KiB, the same on both sides
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
SOURCE_BLOB = b"blob in conf/src, to be mounted into conf/dst\n"
CHUNK = b"upload chunk for the conformance suite\n"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = image_manifest((_digest(CONFIG), len(CONFIG)), [(_digest(LAYER), len(LAYER))])
UNKNOWN = "sha256:" + "0" * 64


@dataclass
class Case:
    """One request. `path` may use {blob}, {manifest}, {source} and what `setup` returns."""

    id: str
    method: str
    path: str
    required: list[str]
    insufficient: list[str] | None  # None: no token is insufficient (the base route)
    expected: int  # distribution's status with a sufficient token (guards against no-ops)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    setup: Callable[[Endpoint, Callable[[list[str]], str]], dict[str, str]] | None = None
    states: tuple[str, ...] = STATES


def _fresh_manifest(side: Endpoint, mint: Callable[[list[str]], str]) -> dict[str, str]:
    token = mint(["repository:conf/del:pull,push"])
    config = f'{{"created-by":"conformance","nonce":"{time.time_ns()}"}}'.encode()
    side.push_blob("conf/del", config, token)
    side.push_blob("conf/del", LAYER, token)
    manifest = image_manifest((_digest(config), len(config)), [(_digest(LAYER), len(LAYER))])
    return {"fresh": side.push_manifest("conf/del", "doomed", manifest, token)}


def _fresh_blob(side: Endpoint, mint: Callable[[list[str]], str]) -> dict[str, str]:
    data = f"doomed blob {time.time_ns()}".encode()
    return {"fresh": side.push_blob("conf/del", data, mint(["repository:conf/del:pull,push"]))}


def _upload(side: Endpoint, mint: Callable[[list[str]], str]) -> dict[str, str]:
    return {"upload": side.start_upload("conf/app", mint(["repository:conf/app:pull,push"]))}


APP_PULL = ["repository:conf/app:pull"]
APP_PUSH = ["repository:conf/app:pull,push"]
OTHER_PULL = ["repository:conf/other:pull"]
OCTETS = {"Content-Type": "application/octet-stream"}
MOUNT = "/v2/conf/dst/blobs/uploads/?mount={source}&from=conf/src"

CASES = [
    Case("base-get", "GET", "/v2/", [], None, 200),
    Case("base-head", "HEAD", "/v2/", [], None, 200),
    Case("catalog", "GET", "/v2/_catalog", ["registry:catalog:*"], APP_PULL, 200),
    Case(
        "catalog-n-last",
        "GET",
        "/v2/_catalog?n=1&last=conf/app",
        ["registry:catalog:*"],
        APP_PULL,
        200,
    ),
    Case("tags", "GET", "/v2/conf/app/tags/list", APP_PULL, OTHER_PULL, 200),
    Case("tags-n-last", "GET", "/v2/conf/app/tags/list?n=1&last=v0", APP_PULL, OTHER_PULL, 200),
    Case(
        "tags-unknown-repository",
        "GET",
        "/v2/conf/nothing/tags/list",
        ["repository:conf/nothing:pull"],
        OTHER_PULL,
        404,
    ),
    Case(
        "manifest-get-tag",
        "GET",
        "/v2/conf/app/manifests/v1",
        APP_PULL,
        OTHER_PULL,
        200,
        {"Accept": MANIFEST_TYPE},
    ),
    Case(
        "manifest-head-tag",
        "HEAD",
        "/v2/conf/app/manifests/v1",
        APP_PULL,
        OTHER_PULL,
        200,
        {"Accept": MANIFEST_TYPE},
    ),
    Case(
        "manifest-get-digest",
        "GET",
        "/v2/conf/app/manifests/{manifest}",
        APP_PULL,
        OTHER_PULL,
        200,
        {"Accept": MANIFEST_TYPE},
    ),
    Case(
        "manifest-head-digest",
        "HEAD",
        "/v2/conf/app/manifests/{manifest}",
        APP_PULL,
        OTHER_PULL,
        200,
        {"Accept": MANIFEST_TYPE},
    ),
    Case(
        "manifest-get-unknown",
        "GET",
        "/v2/conf/app/manifests/nope",
        APP_PULL,
        OTHER_PULL,
        404,
        {"Accept": MANIFEST_TYPE},
    ),
    Case(
        "manifest-put",
        "PUT",
        "/v2/conf/app/manifests/v-put",
        APP_PUSH,
        APP_PULL,
        201,
        {"Content-Type": MANIFEST_TYPE},
        MANIFEST,
    ),
    Case(
        "manifest-delete",
        "DELETE",
        "/v2/conf/del/manifests/{fresh}",
        ["repository:conf/del:delete"],
        ["repository:conf/del:pull,push"],
        202,
        setup=_fresh_manifest,
    ),
    Case("blob-get", "GET", "/v2/conf/app/blobs/{blob}", APP_PULL, OTHER_PULL, 200),
    Case("blob-head", "HEAD", "/v2/conf/app/blobs/{blob}", APP_PULL, OTHER_PULL, 200),
    Case(
        "blob-range",
        "GET",
        "/v2/conf/app/blobs/{blob}",
        APP_PULL,
        OTHER_PULL,
        206,
        {"Range": "bytes=100-199"},
    ),
    Case(
        "blob-range-past-end",
        "GET",
        "/v2/conf/app/blobs/{blob}",
        APP_PULL,
        OTHER_PULL,
        416,
        {"Range": "bytes=5000-5999"},
    ),
    Case("blob-unknown", "GET", f"/v2/conf/app/blobs/{UNKNOWN}", APP_PULL, OTHER_PULL, 404),
    Case(
        "blob-delete",
        "DELETE",
        "/v2/conf/del/blobs/{fresh}",
        ["repository:conf/del:delete"],
        ["repository:conf/del:pull,push"],
        202,
        setup=_fresh_blob,
    ),
    Case("upload-start", "POST", "/v2/conf/app/blobs/uploads/", APP_PUSH, APP_PULL, 202),
    Case(
        "upload-monolithic",
        "POST",
        f"/v2/conf/app/blobs/uploads/?digest={_digest(CHUNK)}",
        APP_PUSH,
        APP_PULL,
        202,
        OCTETS,
        CHUNK,
    ),  # 2.8 starts an upload, ignores the body
    Case("upload-status", "GET", "{upload}", APP_PULL, OTHER_PULL, 204, setup=_upload),
    Case(
        "upload-patch", "PATCH", "{upload}", APP_PUSH, APP_PULL, 202, OCTETS, CHUNK, setup=_upload
    ),
    Case(
        "upload-put",
        "PUT",
        "{upload}&digest=" + _digest(CHUNK),
        APP_PUSH,
        APP_PULL,
        201,
        OCTETS,
        CHUNK,
        setup=_upload,
    ),
    Case(
        "upload-delete",
        "DELETE",
        "{upload}",
        ["repository:conf/app:delete"],
        APP_PUSH,
        204,
        setup=_upload,
    ),
    Case(
        "upload-unknown",
        "PATCH",
        "/v2/conf/app/blobs/uploads/no-such-upload",
        APP_PUSH,
        APP_PULL,
        404,
        OCTETS,
        CHUNK,
    ),
    Case(
        "mount-with-source-access",
        "POST",
        MOUNT,
        ["repository:conf/dst:pull,push", "repository:conf/src:pull"],
        ["repository:conf/src:pull"],
        201,
    ),
    Case(
        "mount-without-source-access",
        "POST",
        MOUNT,
        ["repository:conf/dst:pull,push", "repository:conf/src:pull"],
        ["repository:conf/dst:pull,push"],
        201,
        states=("insufficient",),
    ),
    Case("referrers", "GET", "/v2/conf/app/referrers/{manifest}", APP_PULL, OTHER_PULL, 404),
]

# Issues 13 and 14: a large refused or accepted upload (the refusal sink, streaming), a body
# where the API has none, and a method spelled in lower case.
BIG = bytes(range(256)) * (8 * 4096)  # 8 MiB
CASES += [
    # Accepted only: http.client writes the whole body before it reads, so a refusal sent
    # early (by either side) ends in a broken pipe; refused large uploads are covered by
    # test_large_bodies and test_h2_streams with clients that read while they send.
    Case(
        "upload-put-large",
        "PUT",
        "{upload}&digest=" + _digest(BIG),
        APP_PUSH,
        APP_PULL,
        201,
        OCTETS,
        BIG,
        setup=_upload,
        states=("sufficient",),
    ),
    Case(
        "get-with-body",
        "GET",
        "/v2/conf/app/tags/list",
        APP_PULL,
        OTHER_PULL,
        200,
        {"Content-Type": "text/plain"},
        b"PUT /v2/conf/evil/manifests/x HTTP/1.1\r\n\r\n",
        states=("none", "sufficient"),
    ),
    Case(
        "method-lower-case",
        "get",
        "/v2/conf/app/tags/list",
        APP_PULL,
        None,
        405,
        states=("none", "sufficient"),
    ),
]

# Not in the route table, but the canonical-path rule (README, "How it works") differs from
# distribution on purpose: one request of each kind shows how.
CASES += [
    Case(
        "path-dot-segment",
        "GET",
        "/v2/conf/app/../app/tags/list",
        APP_PULL,
        None,
        301,
        states=("none", "sufficient"),
    ),
    Case(
        "path-percent-encoded",
        "GET",
        "/v2/conf%2Fapp/tags/list",
        APP_PULL,
        None,
        200,
        states=("none", "sufficient"),
    ),
    Case("not-a-registry-path", "GET", "/debug/vars", [], None, 404, states=("none", "sufficient")),
]


def _challenged(
    error: str | None,
    scopes: set[str],
    status: int,
    code: str | None,
    api_version: str | None = "registry/2.0",
) -> dict[str, tuple[object, object]]:
    """regauth's 401 challenge where distribution answers `status` without one."""
    differences: dict[str, tuple[object, object]] = {
        "status": (401, status),
        "code": ("UNAUTHORIZED", code),
        "scheme": ("Bearer", None),
        "scopes": (frozenset(scopes), None),
    }
    if error is not None:
        differences["error"] = (error, None)
    if api_version != "registry/2.0":
        differences["api_version"] = ("registry/2.0", api_version)
    return differences


_ERRORS = {
    "none": None,
    "malformed": "invalid_token",
    "expired": "invalid_token",
    "other-audience": "invalid_token",
    "insufficient": "insufficient_scope",
}
REFERRERS = (
    "distribution 2.8.2 has no referrers route and answers 404 before any auth; "
    "regauth guards the OCI 1.1 route like any pull (distribution 3, zot and Harbor "
    "serve it and require pull), so a client without access is challenged"
)
NON_CANONICAL = (
    "regauth refuses every spelling of a path that a server could normalize into "
    "another one (400 NAME_INVALID) instead of redirecting or decoding it: what it "
    "authorizes is byte for byte what the registry routes"
)
BODY_WITHOUT_ROUTE = (
    "regauth refuses a body where the registry API has none (400), because "
    "the registry could read those bytes as a request nobody decided; "
    "distribution ignores it (README, 'Request framing')"
)
LOWER_CASE = (
    "regauth refuses a method that is not the exact upper-case name (405) before "
    "anything else; distribution routes on the exact bytes too (405 with a token), "
    "but challenges first without one"
)
NOT_REGISTRY = (
    "enforce mode answers paths outside /v2/ itself with a registry-format 404 and "
    "never forwards them: the registry behind it has no auth"
)

# (case, state) → the fields that differ, as (regauth, distribution), and why that is
# intended. Mirrored in README.md, "Differences from distribution".
INTENDED: dict[tuple[str, str], tuple[dict[str, tuple[object, object]], str]] = {
    **{
        ("referrers", state): (
            _challenged(error, {"repository:conf/app:pull"}, 404, None),
            REFERRERS,
        )
        for state, error in _ERRORS.items()
    },
    **{
        ("path-dot-segment", state): (
            {"status": (400, 301), "code": ("NAME_INVALID", None)},
            NON_CANONICAL,
        )
        for state in ("none", "sufficient")
    },
    ("path-percent-encoded", "none"): (
        {
            "status": (400, 401),
            "scheme": (None, "Bearer"),
            "scopes": (None, frozenset({"repository:conf/app:pull"})),
            "code": ("NAME_INVALID", "UNAUTHORIZED"),
        },
        NON_CANONICAL,
    ),
    ("path-percent-encoded", "sufficient"): (
        {"status": (400, 200), "code": ("NAME_INVALID", None)},
        NON_CANONICAL,
    ),
    **{
        ("not-a-registry-path", state): ({"code": ("UNSUPPORTED", None)}, NOT_REGISTRY)
        for state in ("none", "sufficient")
    },
    ("get-with-body", "none"): (
        {
            "status": (400, 401),
            "code": ("UNSUPPORTED", "UNAUTHORIZED"),
            "scheme": (None, "Bearer"),
            "scopes": (None, frozenset({"repository:conf/app:pull"})),
        },
        BODY_WITHOUT_ROUTE,
    ),
    ("get-with-body", "sufficient"): (
        {"status": (400, 200), "code": ("UNSUPPORTED", None)},
        BODY_WITHOUT_ROUTE,
    ),
    ("method-lower-case", "none"): (
        {
            "status": (405, 401),
            "code": ("UNSUPPORTED", "UNAUTHORIZED"),
            "scheme": (None, "Bearer"),
            "scopes": (None, frozenset()),
        },
        LOWER_CASE,
    ),
    ("method-lower-case", "sufficient"): ({"code": ("UNSUPPORTED", None)}, LOWER_CASE),
}


@dataclass
class Sides:
    regauth: Endpoint
    distribution: Endpoint
    mint: Callable[..., str]
    seeded: dict[str, str]
    invariant: RegistryWatch


@pytest.fixture(scope="module")
def sides(
    tmp_path_factory: pytest.TempPathFactory, certs_dir: Path, password_hashes: dict[str, str]
):
    workdir = tmp_path_factory.mktemp("conformance")
    text = policy_text(password_hashes)
    runtime = build_runtime(workdir, certs_dir, text)
    expired = dataclasses.replace(runtime.issuer, clock=lambda: time.time() - 7200)
    elsewhere = dataclasses.replace(runtime.issuer, service="another-registry")

    def mint(scopes: list[str], kind: str = "valid") -> str:
        issuer = {"valid": runtime.issuer, "expired": expired, "other-audience": elsewhere}[kind]
        return issuer.issue_access("ci", [parse_scope(s) for s in scopes]).token

    with ExitStack() as stack:
        plain = RegistryProcess(workdir / "plain")
        plain.start()
        stack.callback(plain.stop)
        # Everything reaching the registry behind regauth was decided by regauth (issue 14).
        invariant = RegistryWatch(plain, redact=capability_redactor(workdir / "policy.yaml"))
        proxy = start_proxy(workdir / "proxy", certs_dir, workdir / "policy.yaml", plain.url)
        stack.callback(proxy.stop)
        invariant.add_exchange_log(proxy.log_path)
        bundle = workdir / "bundle.pem"
        bundle.write_text(pki.bundle_pem(pki.load_signing_keys(certs_dir)))
        token_mode = RegistryProcess(
            workdir / "token", token=TokenAuth(f"{proxy.url}/v2/token", SERVICE, ISSUER, bundle)
        )
        token_mode.start()
        stack.callback(token_mode.stop)
        regauth = Endpoint("regauth", proxy.url, proxy.ca)
        distribution = Endpoint("distribution", token_mode.url)
        seeded = {}
        for side in (regauth, distribution):
            token = mint(["repository:conf/app:pull,push", "repository:conf/src:pull,push"])
            seeded["blob"] = side.push_blob("conf/app", LAYER, token)
            side.push_blob("conf/app", CONFIG, token)
            seeded["manifest"] = side.push_manifest("conf/app", "v1", MANIFEST, token)
            seeded["source"] = side.push_blob("conf/src", SOURCE_BLOB, token)
        yield Sides(regauth, distribution, mint, seeded, invariant)


@pytest.fixture(autouse=True)
def registry_saw_only_decided(sides: Sides) -> Iterator[None]:
    """Every case ends with the invariant of issue 14 (tests/support/invariant.py)."""
    yield
    assert_registry_saw_only_decided(sides.invariant)


def _authorization(sides: Sides, case: Case, state: str) -> dict[str, str]:
    if state == "none":
        return {}
    if state == "malformed":
        return {"Authorization": "Bearer not-a.jwt.at-all"}
    if state in ("expired", "other-audience"):
        return {"Authorization": "Bearer " + sides.mint(case.required, state)}
    scopes = case.insufficient if state == "insufficient" else case.required
    assert scopes is not None
    return {"Authorization": "Bearer " + sides.mint(scopes)}


PARAMS = [
    pytest.param(case, state, id=f"{case.id}-{state}")
    for case in CASES
    for state in case.states
    if not (state == "insufficient" and case.insufficient is None)
]


@pytest.mark.parametrize(("case", "state"), PARAMS)
def test_regauth_answers_like_distribution(sides, case, state):
    observed = {}
    for side in (sides.regauth, sides.distribution):
        values = dict(sides.seeded)
        if case.setup is not None:
            values.update(case.setup(side, sides.mint))
        target = case.path.format(**values)
        reply = side.send(
            case.method, target, {**case.headers, **_authorization(sides, case, state)}, case.body
        )
        observed[side.name] = observe(reply)
    ours, theirs = observed["regauth"], observed["distribution"]
    if state == "sufficient":
        assert theirs.status == case.expected, theirs
    differences = ours.differences(theirs)
    intended, reason = INTENDED.get((case.id, state), ({}, ""))
    assert differences == intended, (
        f"{case.method} {case.path} with token {state}: regauth {ours} vs distribution "
        f"{theirs}" + (f" (intended: {reason})" if reason else "")
    )


# -- HEAD answers what GET would (issue 25, item 3) ---------------------------------------------
# Every status regauth makes itself, asked with GET and with HEAD of the same target, over
# HTTP/1.1 and HTTP/2: the same status, and the HEAD has no body and the Content-Length of the
# GET's body (RFC 9110 §9.3.2 and §8.6; distribution does the same). Not in the table, because a
# client cannot get them with both methods:
# - 403: regauth's own 403 (a request not aimed at its upstream) is reached only by mitmweb
#   replays; a token without the access gets 401 `insufficient_scope`, as from distribution;
# - 429: only the token endpoint answers it (the login limits), and a HEAD there is 405 before
#   any login is checked (the token endpoint takes GET and POST).


@dataclass(frozen=True)
class Unavailable:
    """regauth with an upstream nobody listens on: in delegate mode (its delegate check cannot
    pass: the front door's 503) and in enforce mode (the connection fails: mitmproxy's error
    answer, made registry-shaped by mitm/patches/error_pages.py)."""

    delegate: Endpoint
    enforce: Endpoint


@pytest.fixture(scope="module")
def unavailable(
    tmp_path_factory: pytest.TempPathFactory, certs_dir: Path, password_hashes: dict[str, str]
) -> Iterator[Unavailable]:
    workdir = tmp_path_factory.mktemp("unavailable")
    dead = f"http://127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        sides = {}
        for mode in ("delegate", "enforce"):
            policy = workdir / f"{mode}.yaml"
            policy.write_text(policy_text(password_hashes, mode=mode))
            proxy = start_proxy(workdir / mode, certs_dir, policy, dead)
            stack.callback(proxy.stop)
            sides[mode] = Endpoint(mode, proxy.url, proxy.ca)
        yield Unavailable(sides["delegate"], sides["enforce"])


@dataclass(frozen=True)
class HeadCase:
    id: str
    status: int  # what both GET and HEAD get
    target: str
    token: list[str] | str | None  # scopes to mint a token for, "malformed", or none
    side: str = "regauth"  # or "delegate"/"enforce" of `Unavailable`


HEAD_CASES = [
    pytest.param(HeadCase("no-token", 401, "/v2/conf/app/manifests/v1", None), id="401-no-token"),
    pytest.param(
        HeadCase("invalid-token", 401, "/v2/conf/app/manifests/v1", "malformed"),
        id="401-invalid-token",
    ),
    pytest.param(
        HeadCase("insufficient", 401, "/v2/conf/app/manifests/v1", OTHER_PULL),
        id="401-insufficient-scope",
    ),
    pytest.param(
        HeadCase("not-registry", 404, "/debug/vars", APP_PULL), id="404-not-a-registry-path"
    ),
    pytest.param(
        HeadCase("unknown-route", 404, "/v2/conf/app/nothing/here", APP_PULL),
        id="404-unknown-route",
    ),
    pytest.param(HeadCase("method", 405, "/v2/conf/app/blobs/uploads/", APP_PUSH), id="405-method"),
    pytest.param(
        HeadCase("delegate-check", 503, "/v2/conf/app/manifests/v1", APP_PULL, "delegate"),
        id="503-delegate-check",
    ),
    pytest.param(
        HeadCase("upstream-down", 503, "/v2/conf/app/manifests/v1", APP_PULL, "enforce"),
        id="503-upstream-down",
    ),
]


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/2"])
@pytest.mark.parametrize("case", HEAD_CASES)
def test_head_answers_what_get_would(
    sides: Sides, unavailable: Unavailable, case: HeadCase, protocol: str
) -> None:
    side = {
        "regauth": sides.regauth,
        "delegate": unavailable.delegate,
        "enforce": unavailable.enforce,
    }[case.side]
    assert side.ca is not None
    port = urlsplit(side.url).port
    assert port is not None
    headers = {}
    if case.token == "malformed":
        headers["Authorization"] = "Bearer not-a.jwt.at-all"
    elif case.token is not None:
        headers["Authorization"] = "Bearer " + sides.mint(case.token)
    get = on_the_wire(protocol, port, side.ca, "GET", case.target, headers)
    head = on_the_wire(protocol, port, side.ca, "HEAD", case.target, headers)
    assert get.status == case.status, get
    assert len(get.body) > 0 and get.content_length in (None, str(len(get.body))), get
    assert head.status == get.status, (head, get)
    assert head.body == b"", head
    assert head.content_length == str(len(get.body)), (head, get)
