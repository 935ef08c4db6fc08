"""Request smuggling (issue 14), against real `regauth serve` processes and real registries.

Every test runs in five setups: enforce (a registry without auth of its own), delegate (a
token-mode registry checks regauth's tokens), inject-basic (an htpasswd registry, regauth injects
basic credentials), inject-bearer (a token-mode registry whose realm is a second regauth, regauth
fetches upstream tokens) and default (`regauth serve` with its embedded registry and the shipped
policy, what `./run_proxy.sh` runs). Requests are raw HTTP/1.1 bytes over TLS
(`support.attacks`) or raw HTTP/2 frames (`support.h2raw`). Each test states the outcome it
expects exactly (a status, a GOAWAY or RST_STREAM code, or a closed connection), and ends with
the invariant (`support.invariant`): the registry's access log shows only requests regauth
decided to forward, each once.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hyperframe.frame import DataFrame

from regauth.ops import pki
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.ops.registry_process import free_port
from tests.support import attacks
from tests.support import h2raw
from tests.support import httpclient
from tests.support.attacks import Conversation
from tests.support.invariant import LogOnly
from tests.support.invariant import RegistryWatch
from tests.support.invariant import capability_redactor
from tests.support.policies import ISSUER
from tests.support.policies import SERVICE
from tests.support.policies import bcrypt_hash
from tests.support.policies import build_id
from tests.support.policies import htpasswd_file
from tests.support.policies import policy_text
from tests.support.proxy import ProxyProcess
from tests.support.proxy import start_proxy

REPO = Path(__file__).resolve().parents[2]
MODES = ("enforce", "delegate", "inject-basic", "inject-bearer", "default")
MIB = 1 << 20  # regauth's stream threshold: larger or unknown-size bodies stream through
UPSTREAM_USER = "regauth-bot"
UPSTREAM_PASSWORD = "upstream-only-secret-3d1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EVIL_CONFIG = b"{}"
EVIL_CONFIG_DIGEST = "sha256:" + hashlib.sha256(EVIL_CONFIG).hexdigest()
EVIL_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": EVIL_CONFIG_DIGEST,
            "size": len(EVIL_CONFIG),
        },
        "layers": [],
    }
).encode()
# The issue's payload: complete HTTP/1.1 requests regauth must never let through. Smuggled to
# a registry without auth (as the code before the fix did), the first opens an upload in
# cache/evil, so the repository exists afterwards; the second tags cache/evil:latest.
SMUGGLED_PUT = (
    b"POST /v2/cache/evil/blobs/uploads/?digest="
    + EVIL_CONFIG_DIGEST.encode()
    + b" HTTP/1.1\r\nHost: registry\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: "
    + str(len(EVIL_CONFIG)).encode()
    + b"\r\n\r\n"
    + EVIL_CONFIG
    + b"PUT /v2/cache/evil/manifests/latest HTTP/1.1\r\nHost: registry\r\n"
    b"Content-Type: " + MANIFEST_TYPE.encode() + b"\r\n"
    b"Content-Length: " + str(len(EVIL_MANIFEST)).encode() + b"\r\n\r\n" + EVIL_MANIFEST
)
SMUGGLED_GET = b"GET /v2/_catalog HTTP/1.1\r\nHost: registry\r\n\r\n"
DIGEST = "sha256:" + "ab" * 32


# -- the stacks --------------------------------------------------------------------------------


@dataclass
class Stack:
    mode: str
    proxy: ProxyProcess
    watch: RegistryWatch
    storage: Path  # the registry's filesystem storage root
    service: str
    build: str = field(default_factory=build_id)
    _tokens: dict[tuple[str, ...], tuple[float, str]] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.proxy.port

    def token(self, *scopes: str) -> str:
        """An anonymous token for `scopes` (none: a token that grants nothing), reused for a
        minute (the shipped policy's tokens live 300 s)."""
        cached = self._tokens.get(scopes)
        if cached is not None and time.monotonic() - cached[0] < 60:
            return cached[1]
        reply = httpclient.get_token(self.port, self.proxy.ca, list(scopes), self.service)
        assert reply.status == 200, reply.body
        token = reply.json()["token"]
        self._tokens[scopes] = (time.monotonic(), token)
        return token

    @property
    def nothing(self) -> str:
        return self.token()

    @property
    def builder(self) -> str:
        return self.token(f"repository:builds/{self.build}:pull,push")

    @property
    def repo(self) -> str:
        return f"builds/{self.build}"

    @property
    def uploads(self) -> str:
        return f"/v2/{self.repo}/blobs/uploads/"

    def bearer(self, token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    # -- HTTP/2 ----------------------------------------------------------------------------

    def h2(
        self,
        method: str,
        path: str,
        token: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end_stream_on_headers: bool | None = None,
        timeout: float = 15.0,
    ) -> h2raw.H2Reply:
        fields = (self.bearer(token) if token else []) + list(headers or [])
        return h2raw.request(
            self.port, self.proxy.ca, method, path, fields, body, end_stream_on_headers, timeout
        )

    def h2_client(self, timeout: float = 15.0) -> h2raw.H2Client:
        return h2raw.H2Client(self.port, self.proxy.ca, timeout)

    # -- HTTP/1.1 --------------------------------------------------------------------------

    def head(
        self,
        method: str,
        target: str,
        token: str | None = None,
        headers: list[str] | None = None,
        close: bool = False,
        sep: str = "\r\n",
    ) -> bytes:
        """A request head, byte for byte (UTF-8): `headers` are raw header lines."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{self.port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        lines += headers or []
        if close:
            lines.append("Connection: close")
        return (sep.join(lines) + sep + sep).encode()

    def follow_up(self) -> bytes:
        """A harmless last request on a connection: GET /v2/ (200 in every mode), then close."""
        return self.head("GET", "/v2/", self.nothing, close=True)

    def h1(
        self,
        data: bytes | list[bytes],
        methods: list[str],
        timeout: float = 15.0,
        pause: float = 0.0,
    ) -> Conversation:
        return attacks.converse(self.port, self.proxy.ca, data, methods, timeout, pause)

    def start_upload(self) -> str:
        """A new upload session in the build repository: its path and query (origin form)."""
        reply = httpclient.request(
            self.port,
            self.proxy.ca,
            "POST",
            self.uploads,
            {"Authorization": f"Bearer {self.builder}"},
            b"",
        )
        assert reply.status == 202, (reply.status, reply.body)
        location = urlsplit(reply.header("Location") or "")
        return location.path + (f"?{location.query}" if location.query else "")

    # -- the registry's storage ------------------------------------------------------------

    def repository_exists(self, name: str) -> bool:
        return (self.storage / "docker/registry/v2/repositories" / name).exists()

    def blob(self, digest: str) -> bytes | None:
        hexdigest = digest.removeprefix("sha256:")
        path = self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
        return path.read_bytes() if path.exists() else None


def _registry(
    workdir: Path, token: TokenAuth | None = None, htpasswd: Path | None = None
) -> RegistryProcess:
    registry = RegistryProcess(workdir, token=token, htpasswd=htpasswd)
    registry.start()
    return registry


def _inject_policy(hashes: dict[str, str], kind: str, extra: str = "") -> str:
    return policy_text(
        hashes,
        lifetime=900,
        upstream_extra=(
            "    credentials:\n"
            f"      type: {kind}\n"
            f"      username: {UPSTREAM_USER}\n"
            f"      password_env: REGAUTH_TEST_UPSTREAM_PASSWORD\n{extra}"
        ),
    )


@pytest.fixture(scope="module", params=MODES)
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    certs_dir: Path,
    password_hashes: dict[str, str],
) -> Iterator[Stack]:
    mode: str = request.param
    workdir = tmp_path_factory.mktemp(f"smuggling-{mode}")
    registries: list[RegistryProcess] = []
    proxies: list[ProxyProcess] = []
    env = {"REGAUTH_TEST_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD}
    try:
        policy = workdir / "policy.yaml"
        service = SERVICE
        port = free_port()
        probes = 0
        upstream_ca = None  # the CA of the upstream's token realm (inject-bearer)
        extra_logs: list[Path] = []
        if mode == "enforce":
            registries.append(_registry(workdir / "registry"))
            policy.write_text(policy_text(password_hashes, lifetime=900))
        elif mode == "delegate":
            bundle = workdir / "bundle.pem"
            bundle.write_text(pki.bundle_pem(pki.load_signing_keys(certs_dir)))
            registries.append(
                _registry(
                    workdir / "registry",
                    token=TokenAuth(f"https://localhost:{port}/v2/token", SERVICE, ISSUER, bundle),
                )
            )
            policy.write_text(policy_text(password_hashes, lifetime=900, mode="delegate"))
        elif mode == "inject-basic":
            htpasswd = htpasswd_file(workdir / "htpasswd", {UPSTREAM_USER: UPSTREAM_PASSWORD})
            registries.append(_registry(workdir / "registry", htpasswd=htpasswd))
            policy.write_text(_inject_policy(password_hashes, "basic"))
        elif mode == "inject-bearer":
            # The upstream checks tokens of a second, independent regauth (its realm).
            realm_certs = workdir / "realm-certs"
            pki.init_certs(realm_certs)
            bundle = workdir / "realm-bundle.pem"
            bundle.write_text(pki.bundle_pem(pki.load_signing_keys(realm_certs)))
            realm_port = free_port()
            registries.append(
                _registry(
                    workdir / "registry",
                    token=TokenAuth(
                        f"https://localhost:{realm_port}/v2/token", SERVICE, ISSUER, bundle
                    ),
                )
            )
            realm_policy = workdir / "realm-policy.yaml"
            realm_policy.write_text(f"""version: 1
service: {SERVICE}
issuer: {ISSUER}
accounts:
  {UPSTREAM_USER}:
    password_hash: "{bcrypt_hash(UPSTREAM_PASSWORD)}"
upstreams:
  - url: "*"
    mode: delegate
rules:
  - account: {UPSTREAM_USER}
    repository: "**"
    actions: ["*"]
  - account: {UPSTREAM_USER}
    type: registry
    name: catalog
    actions: ["*"]
""")
            realm = start_proxy(
                workdir / "realm",
                certs_dir=realm_certs,
                policy=realm_policy,
                upstream=registries[0].url,
                port=realm_port,
            )
            proxies.append(realm)
            extra_logs.append(realm.log_path)
            policy.write_text(
                _inject_policy(
                    password_hashes, "bearer", f"      realm_hosts: ['localhost:{realm_port}']\n"
                )
            )
            upstream_ca = realm_certs / "ca.crt"
            probes = 1  # upstream_auth reads the upstream's challenge once (GET /v2/)
        if mode == "default":
            policy = REPO / "policies" / "default.yaml"
            service = "regauth-registry"
            env["REGAUTH_CI_PASSWORD_HASH"] = bcrypt_hash("ci-secret-default")
            proxy = start_proxy(
                workdir / "proxy",
                certs_dir=certs_dir,
                policy=policy,
                upstream=None,
                port=port,
                env=env,
            )
            proxies.append(proxy)
            match = re.search(r"embedded registry: (http://127\.0\.0\.1:\d+)", proxy.output())
            assert match, proxy.output()
            registry_dir = workdir / "proxy" / "registry"
            watched = LogOnly(match.group(1), registry_dir / "registry.log")
            storage = registry_dir / "data"
        else:
            registry = registries[0]
            watched, storage = registry, registry.workdir / "data"
        # The baseline: everything logged so far (readiness probes) is not a proxied request.
        watch = RegistryWatch(
            watched, extra_logs, capability_redactor(policy, env), upstream_probes=probes
        )
        if mode != "default":
            proxy = start_proxy(
                workdir / "proxy",
                certs_dir=certs_dir,
                policy=policy,
                upstream=registries[0].url,
                port=port,
                env=env,
                upstream_ca=upstream_ca,
            )
            proxies.append(proxy)
        watch.add_exchange_log(proxy.log_path)
        yield Stack(mode, proxy, watch, storage, service)
    finally:
        for proxy in reversed(proxies):
            proxy.stop()
        for registry in registries:
            registry.stop()


@pytest.fixture(autouse=True)
def invariant(stack: Stack) -> Iterator[None]:
    """Every test ends with the invariant (a violation is reported as a teardown error)."""
    yield
    stack.watch.assert_holds()


def assert_refused(reply: h2raw.H2Reply | attacks.RawReply, status: int, code: str) -> None:
    """A registry-format refusal by regauth with `status` and error `code`."""
    assert reply.status == status, (reply.status, reply.body[:300])
    if isinstance(reply, h2raw.H2Reply):
        assert reply.ended, reply
    assert reply.error_codes() == [code], reply.body[:300]


# -- 1. the exploit of issue 14 ----------------------------------------------------------------


def test_exploit_h2_get_carrying_a_put(stack: Stack) -> None:
    """The issue's input: an HTTP/2 GET /v2/ with a token that grants nothing, carrying a
    complete HTTP/1.1 PUT of cache/evil/manifests/latest in DATA, without content-length."""
    reply = stack.h2("GET", "/v2/", stack.nothing, body=SMUGGLED_PUT)
    assert_refused(reply, 400, "UNSUPPORTED")
    assert not stack.repository_exists("cache/evil")


def test_exploit_h2_get_carrying_requests_in_many_padded_frames(stack: Stack) -> None:
    payload = (
        SMUGGLED_PUT
        + SMUGGLED_GET
        + b"DELETE /v2/cache/secret/blobs/"
        + DIGEST.encode()
        + b" HTTP/1.1\r\nHost: registry\r\n\r\n"
    )
    with stack.h2_client() as client:
        stream = client.new_stream()
        client.send_headers(stream, "GET", "/v2/", stack.bearer(stack.nothing))
        for i in range(0, len(payload), 40):
            last = i + 40 >= len(payload)
            client.send_frame(
                DataFrame(
                    stream,
                    data=payload[i : i + 40],
                    pad_length=7,
                    flags=["PADDED"] + (["END_STREAM"] if last else []),
                )
            )
        reply = client.reply(stream)
    assert_refused(reply, 400, "UNSUPPORTED")
    assert not stack.repository_exists("cache/evil")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_exploit_h1_get_carrying_a_put(stack: Stack, framing: str) -> None:
    if framing == "chunked":
        head = stack.head("GET", "/v2/", stack.nothing, ["Transfer-Encoding: chunked"])
        body = f"{len(SMUGGLED_PUT):x}\r\n".encode() + SMUGGLED_PUT + b"\r\n0\r\n\r\n"
    else:
        head = stack.head("GET", "/v2/", stack.nothing, [f"Content-Length: {len(SMUGGLED_PUT)}"])
        body = SMUGGLED_PUT
    conversation = stack.h1(head + body + stack.follow_up(), ["GET", "GET"])
    assert_refused(conversation.replies[0], 400, "UNSUPPORTED")
    # A refused body of known size is read and dropped, the connection goes on; a chunked one
    # (unknown size) ends the connection after the refusal.
    assert conversation.statuses == ([400, 200] if framing == "content-length" else [400])
    assert not stack.repository_exists("cache/evil")


def test_exploit_h2_upload_post_with_streamed_smuggled_body(stack: Stack) -> None:
    """The outer request is one regauth allows (an upload in the builder's own repository)
    and its body, larger than the stream threshold and without content-length, is made of
    complete requests: they must reach the registry as body bytes, framed by chunking."""
    body = SMUGGLED_PUT * (2 * MIB // len(SMUGGLED_PUT) + 1)
    reply = stack.h2("POST", stack.uploads, stack.builder, body=body)
    assert reply.outcome == "202", (reply.outcome, reply.body[:300])
    assert not stack.repository_exists("cache/evil")


def test_exploit_h2_patch_with_streamed_smuggled_body_is_upload_data(stack: Stack) -> None:
    body = (SMUGGLED_GET + SMUGGLED_PUT) * (3 * MIB // (len(SMUGGLED_PUT) + 40))
    upload = stack.start_upload()
    patched = stack.h2("PATCH", upload, stack.builder, body=body)
    assert patched.outcome == "202", (patched.outcome, patched.body[:300])
    assert patched.header("range") == f"0-{len(body) - 1}"
    location = urlsplit(patched.header("location") or "")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    done = stack.h2("PUT", f"{location.path}?{location.query}&digest={digest}", stack.builder)
    assert done.outcome == "201", (done.outcome, done.body[:300])
    assert stack.blob(digest) == body
    assert not stack.repository_exists("cache/evil")


# -- 2. HTTP/2 bodies without a length, where the registry API takes one --------------------------


def test_h2_push_without_content_length(stack: Stack) -> None:
    """Positive control: HTTP/2 bodies without content-length reach the HTTP/1.1 registry
    chunked, byte for byte (a streamed layer, a small config, a manifest)."""
    layer = bytes(range(256)) * (3 * MIB // 512 + 7)  # above the stream threshold
    config = b"{}"
    digests = {}
    for name, data in (("layer", layer), ("config", config)):
        upload = stack.start_upload()
        patched = stack.h2("PATCH", upload, stack.builder, body=data)
        assert patched.outcome == "202", (name, patched.outcome, patched.body[:300])
        location = urlsplit(patched.header("location") or "")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        done = stack.h2("PUT", f"{location.path}?{location.query}&digest={digest}", stack.builder)
        assert done.outcome == "201", (name, done.outcome, done.body[:300])
        assert stack.blob(digest) == data
        digests[name] = digest
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digests["config"],
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digests["layer"],
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    put = stack.h2(
        "PUT",
        f"/v2/{stack.repo}/manifests/1",
        stack.builder,
        [("content-type", MANIFEST_TYPE)],
        manifest,
    )
    assert put.outcome == "201", (put.outcome, put.body[:300])
    got = stack.h2(
        "GET", f"/v2/{stack.repo}/manifests/1", stack.builder, [("accept", MANIFEST_TYPE)]
    )
    assert got.outcome == "200" and got.body == manifest


def test_h2_monolithic_put_without_content_length(stack: Stack) -> None:
    data = b"monolithic " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upload = stack.start_upload()
    done = stack.h2("PUT", f"{upload}&digest={digest}", stack.builder, body=data)
    assert done.outcome == "201", (done.outcome, done.body[:300])
    assert stack.blob(digest) == data


# -- 3. HTTP/2 with a wrong length ---------------------------------------------------------------

WRONG_LENGTHS = {
    # case: (declared content-length, bytes sent in DATA, PATCH to an upload or POST to start)
    "shorter-buffered": (100, 50, "POST"),
    "longer-buffered": (10, 50, "POST"),
    "shorter-buffered-patch": (MIB, MIB - 1, "PATCH"),
    "shorter-streamed": (2 * MIB, 3 * MIB // 2, "PATCH"),
    "longer-streamed": (3 * MIB // 2, 2 * MIB, "PATCH"),
    "longer-than-threshold-declared-small": (1000, MIB + 1, "PATCH"),
}


@pytest.mark.parametrize("case", list(WRONG_LENGTHS))
def test_h2_wrong_content_length(stack: Stack, case: str) -> None:
    """DATA that does not add up to the content-length makes the request malformed, a stream
    error of type PROTOCOL_ERROR (RFC 9113 §8.1.1): that stream is reset, the connection lives
    on; a streamed body already on its way is cut, so the registry sees an incomplete request
    it refuses, never a complete one."""
    declared, sent, method = WRONG_LENGTHS[case]
    target = stack.uploads if method == "POST" else stack.start_upload()
    reply = stack.h2(
        method,
        target,
        stack.builder,
        [("content-length", str(declared))],
        SMUGGLED_GET * (sent // len(SMUGGLED_GET)) + b"x" * (sent % len(SMUGGLED_GET)),
    )
    assert reply.outcome == "RST_STREAM(PROTOCOL_ERROR)", (reply.outcome, reply.body[:300])


END_STREAM_WITH_LENGTH = {
    # case: (method, target or None for an upload, content-length, status, code)
    "get-base": ("GET", "/v2/", "5", 400, "UNSUPPORTED"),
    "head-base": ("HEAD", "/v2/", "5", 400, None),
    "post-upload-start": ("POST", "uploads", "5", 400, "SIZE_INVALID"),
    "patch-small": ("PATCH", None, "5", 400, "SIZE_INVALID"),
    "patch-above-threshold": ("PATCH", None, str(2 * MIB), 400, "SIZE_INVALID"),
    "put-manifest": ("PUT", "manifest", "100", 400, "SIZE_INVALID"),
}


@pytest.mark.parametrize("case", list(END_STREAM_WITH_LENGTH))
def test_h2_content_length_with_end_stream_on_headers(stack: Stack, case: str) -> None:
    """HEADERS with content-length: N and END_STREAM: nothing follows, so the request is
    refused (it used to be forwarded announcing N bytes that never come)."""
    method, target, length, status, code = END_STREAM_WITH_LENGTH[case]
    path = {"uploads": stack.uploads, "manifest": f"/v2/{stack.repo}/manifests/1", None: None}.get(
        target, target
    ) or stack.start_upload()
    reply = stack.h2(
        method, path, stack.builder, [("content-length", length), ("content-type", MANIFEST_TYPE)]
    )
    assert reply.outcome == str(status), (reply.outcome, reply.body[:300])
    if code is not None:
        assert reply.error_codes() == [code], reply.body


def test_h2_content_length_zero_with_end_stream_is_forwarded(stack: Stack) -> None:
    reply = stack.h2("GET", "/v2/", stack.nothing, [("content-length", "0")])
    assert reply.outcome == "200", (reply.outcome, reply.body[:300])


H2_LENGTH_HEADERS = {
    # case: (content-length header values, expected outcome)
    "two-equal": (["5", "5"], "400"),
    "two-different": (["5", "50"], "RST_STREAM(PROTOCOL_ERROR)"),
    "plus-sign": (["+5"], "RST_STREAM(PROTOCOL_ERROR)"),
    "minus-sign": (["-5"], "RST_STREAM(PROTOCOL_ERROR)"),
    "leading-space": ([" 5"], "RST_STREAM(PROTOCOL_ERROR)"),
    "trailing-space": (["5 "], "RST_STREAM(PROTOCOL_ERROR)"),
    "leading-zero": (["05"], "400"),
    "hex": (["0x5"], "RST_STREAM(PROTOCOL_ERROR)"),
    "list": (["5, 5"], "RST_STREAM(PROTOCOL_ERROR)"),
}


@pytest.mark.parametrize("case", list(H2_LENGTH_HEADERS))
def test_h2_malformed_or_repeated_content_length(stack: Stack, case: str) -> None:
    values, outcome = H2_LENGTH_HEADERS[case]
    reply = stack.h2(
        "POST", stack.uploads, stack.builder, [("content-length", v) for v in values], b"hello"
    )
    assert reply.outcome == outcome, (reply.outcome, reply.body[:300])
    if outcome == "400":
        assert reply.error_codes() == ["UNSUPPORTED"], reply.body


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_h2_transfer_encoding_is_a_protocol_error(stack: Stack, method: str) -> None:
    """Transfer-Encoding is connection-specific, forbidden in HTTP/2 (RFC 9113 §8.2.2)."""
    target = "/v2/" if method == "GET" else stack.uploads
    reply = stack.h2(
        method,
        target,
        stack.builder,
        [("transfer-encoding", "chunked")],
        f"{len(SMUGGLED_GET):x}\r\n".encode() + SMUGGLED_GET + b"\r\n0\r\n\r\n",
    )
    assert reply.outcome == "GOAWAY(PROTOCOL_ERROR)", (reply.outcome, reply.body[:300])


def test_h2_data_after_end_stream_is_a_stream_error(stack: Stack) -> None:
    """DATA on a stream whose HEADERS ended it (RFC 9113 §5.1: STREAM_CLOSED); the GET went
    upstream without a body and nothing else follows it there."""
    with stack.h2_client() as client:
        stream = client.new_stream()
        client.send_headers(
            stream, "GET", "/v2/", stack.bearer(stack.nothing), end_stream=True, flush=False
        )
        client.send_frame(DataFrame(stream, data=SMUGGLED_PUT, flags=["END_STREAM"]))
        reply = client.reply(stream)
    assert reply.outcome == "RST_STREAM(STREAM_CLOSED)", (reply.outcome, reply.body[:300])


def test_h2_empty_data_frame_on_get_is_refused(stack: Stack) -> None:
    """HEADERS without END_STREAM announce a body; regauth decides on the headers, so a GET
    that leaves its stream open is refused even if the DATA turns out empty (clients end a
    body-less request's stream on its HEADERS)."""
    reply = stack.h2("GET", "/v2/", stack.nothing, body=b"", end_stream_on_headers=False)
    assert_refused(reply, 400, "UNSUPPORTED")


H2_TARGETS = {
    # :path values that are no request-target (RFC 9112 §3.2, RFC 3986): they would go into
    # the upstream's HTTP/1.1 request line as they are.
    "space-in-query": "/v2/?a=b c",
    "space-then-version-in-query": "/v2/?n=1 HTTP/1.1",
    "space-in-non-registry-path": "/x y",
    "tab-in-query": "/v2/?a=b\tc",
    "del-in-query": "/v2/?a=b\x7fc",
}


@pytest.mark.parametrize("case", list(H2_TARGETS))
def test_h2_target_outside_the_request_target_grammar_is_refused(stack: Stack, case: str) -> None:
    reply = stack.h2("GET", H2_TARGETS[case], stack.nothing)
    assert reply.status in (400, 404), (reply.outcome, reply.body[:300])
    assert reply.header("content-type") == "application/json", reply.headers
    assert reply.error_codes() in (["UNSUPPORTED"], ["NAME_INVALID"]), reply.body[:300]


@pytest.mark.parametrize(
    "case",
    [
        "crlf-in-query",
        "lf-in-path",
        "crlf-in-header-value",
        "colon-in-header-name",
        "upper-case-header-name",
    ],
)
def test_h2_header_injection_is_a_protocol_error(stack: Stack, case: str) -> None:
    path, headers = {
        "crlf-in-query": ("/v2/?x HTTP/1.1\r\nHost: r\r\n\r\nGET /v2/_catalog", []),
        "lf-in-path": ("/x\nGET /v2/_catalog", []),
        "crlf-in-header-value": ("/v2/", [("x-a", "b\r\nContent-Length: 40")]),
        "colon-in-header-name": ("/v2/", [("content-length:x", "5")]),
        "upper-case-header-name": ("/v2/", [("Content-Length", "5")]),
    }[case]
    reply = stack.h2("GET", path, stack.nothing, headers)
    assert reply.outcome == "GOAWAY(PROTOCOL_ERROR)", (reply.outcome, reply.body[:300])


# -- 4. HTTP/1.1 Content-Length / Transfer-Encoding variants --------------------------------------

CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
H1_FRAMING = {
    # case: (header lines, body, expected statuses: the POST then the follow-up GET /v2/;
    #        a single 400 means regauth answered and closed the connection, [] that it closed
    #        it without an answer)
    "cl-and-te": (["Content-Length: 5", "Transfer-Encoding: chunked"], CHUNKED_HELLO, [400]),
    "te-and-cl": (["Transfer-Encoding: chunked", "Content-Length: 5"], CHUNKED_HELLO, [400]),
    "te-chunked-identity": (["Transfer-Encoding: chunked, identity"], CHUNKED_HELLO, [400]),
    "te-identity-chunked": (["Transfer-Encoding: identity, chunked"], CHUNKED_HELLO, [400]),
    "te-gzip-chunked": (["Transfer-Encoding: gzip, chunked"], CHUNKED_HELLO, [400]),
    "te-identity": (["Transfer-Encoding: identity", "Content-Length: 5"], b"hello", [400]),
    "te-xchunked": (["Transfer-Encoding: xchunked"], CHUNKED_HELLO, [400]),
    "te-chunked-with-parameter": (["Transfer-Encoding: chunked;q=1"], CHUNKED_HELLO, [400]),
    "te-obs-fold": (["Transfer-Encoding:\r\n chunked"], CHUNKED_HELLO, [400]),
    "te-obs-fold-tab": (["Transfer-Encoding: x\r\n\tchunked"], CHUNKED_HELLO, [400]),
    "te-twice": (
        ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
        CHUNKED_HELLO,
        [400],
    ),
    "te-twice-chunked": (
        ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        CHUNKED_HELLO,
        [400],
    ),
    "te-space-before-colon": (["Transfer-Encoding : chunked"], CHUNKED_HELLO, [400]),
    # Not a Transfer-Encoding (Go does not fold '_' into '-' either): a POST without body,
    # then the chunk lines are the next request, which mitmproxy's parser refuses.
    "te-name-with-underscore": (["Transfer_Encoding: chunked"], CHUNKED_HELLO, [202, 400]),
    "te-upper-case-value": (["Transfer-Encoding: CHUNKED"], CHUNKED_HELLO, [202, 200]),
    "te-tab-before-value": (["Transfer-Encoding:\tchunked"], CHUNKED_HELLO, [202, 200]),
    "te-spaces-around-value": (["Transfer-Encoding:    chunked   "], CHUNKED_HELLO, [202, 200]),
    "te-vertical-tab-after-value": (["Transfer-Encoding: chunked\x0b"], CHUNKED_HELLO, [202, 200]),
    "cl-twice-equal": (["Content-Length: 5", "Content-Length: 5"], b"hello", [400]),
    "cl-twice-different": (["Content-Length: 5", "Content-Length: 0"], b"hello", [400]),
    "cl-list": (["Content-Length: 5, 5"], b"hello", [400]),
    "cl-plus-sign": (["Content-Length: +5"], b"hello", [400]),
    "cl-minus-sign": (["Content-Length: -5"], b"hello", [400]),
    "cl-leading-zero": (["Content-Length: 05"], b"hello", [400]),
    "cl-hex": (["Content-Length: 0x5"], b"hello", [400]),
    "cl-inner-space": (["Content-Length: 5 5"], b"hello", [400]),
    "cl-spaces-around-value": (["Content-Length:   5  "], b"hello", [202, 200]),
    "chunk-extension": (
        ["Transfer-Encoding: chunked"],
        b"5;name=value\r\nhello\r\n0\r\n\r\n",
        [202, 200],
    ),
    "chunk-size-trailing-space": (
        ["Transfer-Encoding: chunked"],
        b"5 \r\nhello\r\n0\r\n\r\n",
        [202, 200],
    ),
    "chunk-size-upper-hex": (
        ["Transfer-Encoding: chunked"],
        b"A\r\nhellohello\r\n0\r\n\r\n",
        [202, 200],
    ),
    "chunk-size-negative": (["Transfer-Encoding: chunked"], b"-5\r\nhello\r\n0\r\n\r\n", []),
    "chunk-size-0x-prefix": (["Transfer-Encoding: chunked"], b"0x5\r\nhello\r\n0\r\n\r\n", []),
    "chunk-data-shorter-than-size": (["Transfer-Encoding: chunked"], b"5\r\nhel\r\n0\r\n\r\n", []),
    "chunk-data-longer-than-size": (["Transfer-Encoding: chunked"], b"3\r\nhello\r\n0\r\n\r\n", []),
    "chunk-bare-lf": (["Transfer-Encoding: chunked"], b"5\nhello\n0\n\n", []),
    "chunk-trailer-with-content-length": (
        ["Transfer-Encoding: chunked"],
        b"5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n",
        [],
    ),
}


@pytest.mark.parametrize("case", list(H1_FRAMING))
def test_h1_content_length_and_transfer_encoding(stack: Stack, case: str) -> None:
    """A POST to the builder's own upload route (which regauth allows) framed ambiguously,
    followed on the same connection by GET /v2/. Either regauth (or mitmproxy's parser under
    it) refuses with 400 and closes, or it closes at the first framing error of a body already
    streaming, or the framing is unambiguous and both requests are answered."""
    headers, body, statuses = H1_FRAMING[case]
    data = stack.head("POST", stack.uploads, stack.builder, headers) + body + stack.follow_up()
    conversation = stack.h1(data, ["POST", "GET"], timeout=5)
    assert conversation.statuses == statuses, (conversation, case)
    assert conversation.error is None, conversation.error  # closed by regauth, not timed out
    if statuses and statuses[-1] == 400:
        assert conversation.replies[-1].error_codes() == ["UNSUPPORTED"]


def test_h1_chunk_size_overflow_stays_inside_the_body(stack: Stack) -> None:
    """A chunk size of 2^76: the POST streams to the registry chunked by regauth, and every
    byte after the size line, the follow-up request included, is that body's data; nothing is
    answered until the client gives up."""
    body = b"1000000000000000005\r\nhello\r\n0\r\n\r\n"
    data = (
        stack.head("POST", stack.uploads, stack.builder, ["Transfer-Encoding: chunked"])
        + body
        + stack.follow_up()
    )
    conversation = stack.h1(data, ["POST", "GET"], timeout=2)
    assert conversation.statuses == [] and (conversation.error or "").startswith("Timeout")


def test_h1_bare_lf_line_endings(stack: Stack) -> None:
    """Bare LF ends header lines for mitmproxy's parser; regauth forwards the request with
    CRLF, one request for one."""
    data = stack.head("GET", "/v2/", stack.nothing, sep="\n") + stack.follow_up()
    assert stack.h1(data, ["GET", "GET"]).statuses == [200, 200]


def test_h1_transfer_encoding_in_http_1_0(stack: Stack) -> None:
    data = (
        (
            f"POST {stack.uploads} HTTP/1.0\r\nHost: localhost:{stack.port}\r\n"
            f"Authorization: Bearer {stack.builder}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + CHUNKED_HELLO
        + stack.follow_up()
    )
    assert stack.h1(data, ["POST", "GET"]).statuses == [400]


# -- 5. pipelining after refusals ---------------------------------------------------------------


def _pipelines(stack: Stack) -> dict[str, tuple[list[bytes], list[str], list[int]]]:
    big = b"x" * (2 * MIB)
    chunked_smuggle = f"{len(SMUGGLED_GET):x}\r\n".encode() + SMUGGLED_GET + b"\r\n0\r\n\r\n"
    return {
        # case: (parts sent 0.2 s apart, methods, expected statuses)
        "method-refused-without-body": (
            [stack.head("get", "/v2/", stack.nothing)],
            ["GET", "GET"],
            [405, 200],
        ),
        "method-refused-with-body": (
            [stack.head("Post", stack.uploads, stack.builder, ["Content-Length: 5"]) + b"hello"],
            ["POST", "GET"],
            [405, 200],
        ),
        "scope-refused-with-body": (
            [
                stack.head(
                    "POST",
                    "/v2/cache/x/blobs/uploads/",
                    stack.nothing,
                    [f"Content-Length: {len(SMUGGLED_GET)}"],
                )
                + SMUGGLED_GET
            ],
            ["POST", "GET"],
            [401, 200],
        ),
        "body-refused-small-content-length": (
            [
                stack.head("GET", "/v2/", stack.nothing, [f"Content-Length: {len(SMUGGLED_PUT)}"])
                + SMUGGLED_PUT
            ],
            ["GET", "GET"],
            [400, 200],
        ),
        "body-refused-chunked": (
            [
                stack.head("GET", "/v2/", stack.nothing, ["Transfer-Encoding: chunked"])
                + chunked_smuggle
            ],
            ["GET", "GET"],
            [400],
        ),
        "body-refused-large-content-length": (
            [stack.head("GET", "/v2/", stack.nothing, [f"Content-Length: {len(big)}"]), big],
            ["GET", "GET"],
            [400],
        ),
        # The bytes after a body regauth read are a request of their own, decided on its own
        # (the catalog needs a scope the token lacks: 401).
        "request-after-refused-body": (
            [
                stack.head("GET", "/v2/", stack.nothing, ["Content-Length: 5"])
                + b"hello"
                + stack.head("GET", "/v2/_catalog", stack.nothing)
            ],
            ["GET", "GET", "GET"],
            [400, 401, 200],
        ),
        "token-post-too-large": (
            [
                stack.head(
                    "POST",
                    "/v2/token",
                    None,
                    ["Content-Type: application/x-www-form-urlencoded", "Content-Length: 70000"],
                ),
                b"a" * 70000,
            ],
            ["POST", "GET"],
            [413, 200],
        ),
        "token-get-with-body": (
            [
                stack.head(
                    "GET",
                    f"/v2/token?service={stack.service}",
                    None,
                    [f"Content-Length: {len(SMUGGLED_GET)}"],
                )
                + SMUGGLED_GET
            ],
            ["GET", "GET"],
            [400, 200],
        ),
    }


PIPELINES = [
    "method-refused-without-body",
    "method-refused-with-body",
    "scope-refused-with-body",
    "body-refused-small-content-length",
    "body-refused-chunked",
    "body-refused-large-content-length",
    "request-after-refused-body",
    "token-post-too-large",
    "token-get-with-body",
]


@pytest.mark.parametrize("case", PIPELINES)
def test_h1_pipelining_after_a_refusal(stack: Stack, case: str) -> None:
    parts, methods, statuses = _pipelines(stack)[case]
    conversation = stack.h1(parts + [stack.follow_up()], methods, pause=0.2)
    assert conversation.statuses == statuses, conversation
    assert conversation.error is None, conversation.error


def test_h2_stream_after_a_refused_stream(stack: Stack) -> None:
    with stack.h2_client() as client:
        refused = client.new_stream()
        client.send_headers(refused, "GET", "/v2/", stack.bearer(stack.nothing))
        client.send_data(refused, SMUGGLED_PUT, end_stream=True)
        first = client.reply(refused)
        follow = client.new_stream()
        client.send_headers(follow, "GET", "/v2/", stack.bearer(stack.nothing), end_stream=True)
        second = client.reply(follow)
    assert_refused(first, 400, "UNSUPPORTED")
    assert second.outcome == "200", (second.outcome, second.body[:300])


def test_h2_streams_after_a_malformed_stream_are_still_served(stack: Stack) -> None:
    """A body longer than its content-length resets its own stream only (RFC 9113 §8.1.1): the
    GET sent right behind it on the same connection is answered."""
    with stack.h2_client() as client:
        bad = client.new_stream()
        client.send_headers(
            bad,
            "POST",
            stack.uploads,
            stack.bearer(stack.builder) + [("content-length", "10")],
            flush=False,
        )
        client.conn.send_data(bad, b"x" * 50, end_stream=True)
        follow = client.new_stream()
        client.send_headers(follow, "GET", "/v2/", stack.bearer(stack.nothing), end_stream=True)
        first = client.reply(bad)
        second = client.reply(follow, timeout=3)
    assert first.outcome == "RST_STREAM(PROTOCOL_ERROR)", first.outcome
    assert second.outcome == "200", (second.outcome, second.body[:300])


# -- 6. methods -------------------------------------------------------------------------------

METHODS = [
    "get",
    "hEaD",
    "Post",
    "pUT",
    "patch",
    "dElEtE",
    "TRACE",
    "OPTIONS",
    "PROPFIND",
    "GETS",
    "G\u0130T",
]


def _method_target(stack: Stack, method: str) -> str:
    return stack.uploads if method.upper() == "POST" else "/v2/"


@pytest.mark.parametrize("method", METHODS)
def test_h1_methods_other_than_the_exact_upper_case_ones(stack: Stack, method: str) -> None:
    head = stack.head(method, _method_target(stack, method), stack.builder, ["Content-Length: 0"])
    conversation = stack.h1(head + stack.follow_up(), ["GET", "GET"])
    assert conversation.statuses == [405, 200], conversation
    if method.upper() != "HEAD":
        assert conversation.replies[0].error_codes() == ["UNSUPPORTED"]


@pytest.mark.parametrize("method", [m for m in METHODS if m.isascii()])
def test_h2_methods_other_than_the_exact_upper_case_ones(stack: Stack, method: str) -> None:
    reply = stack.h2(method, _method_target(stack, method), stack.builder)
    assert reply.outcome == "405", (reply.outcome, reply.body[:300])
    if method.upper() != "HEAD":
        assert reply.error_codes() == ["UNSUPPORTED"]


def test_mixed_case_method_is_recorded_as_sent(stack: Stack) -> None:
    """The exchange log must show what the client sent, not mitmproxy's upper-cased view."""
    reply = stack.h2("gEt", "/v2/", stack.nothing, [("x-case", "mixed-case-record")])
    assert reply.outcome == "405"
    time.sleep(0.3)
    records = [
        r for r in stack.proxy.records() if r.get("status") == 405 and r.get("path") == "/v2/"
    ]
    assert records and records[-1]["method"] == "gEt", records[-1:]


# -- 7. bodies on routes that have none ---------------------------------------------------------

BODYLESS = {
    # case: (method, target; {repo} is the builder's repository)
    "base-get": ("GET", "/v2/"),
    "base-head": ("HEAD", "/v2/"),
    "catalog": ("GET", "/v2/_catalog"),
    "tags": ("GET", "/v2/{repo}/tags/list"),
    "tags-head": ("HEAD", "/v2/{repo}/tags/list"),
    "manifest-get": ("GET", "/v2/{repo}/manifests/1"),
    "manifest-head": ("HEAD", "/v2/{repo}/manifests/1"),
    "manifest-delete": ("DELETE", "/v2/{repo}/manifests/" + DIGEST),
    "blob-get": ("GET", "/v2/{repo}/blobs/" + DIGEST),
    "blob-head": ("HEAD", "/v2/{repo}/blobs/" + DIGEST),
    "blob-delete": ("DELETE", "/v2/{repo}/blobs/" + DIGEST),
    "upload-status": ("GET", "/v2/{repo}/blobs/uploads/0f2c6a2e-1b1e-4e2a-9f4e-3d2b1c0a9e8f"),
    "upload-cancel": ("DELETE", "/v2/{repo}/blobs/uploads/0f2c6a2e-1b1e-4e2a-9f4e-3d2b1c0a9e8f"),
    "referrers": ("GET", "/v2/{repo}/referrers/" + DIGEST),
    "token-get": ("GET", "/v2/token?service={service}"),
    "jwks": ("GET", "/.well-known/jwks.json"),
}
TRANSPORTS = ["h1-content-length", "h1-chunked", "h2-data", "h2-data-with-length", "h2-large-data"]


@pytest.mark.parametrize("case", list(BODYLESS))
def test_body_on_a_route_without_one_is_refused(stack: Stack, case: str) -> None:
    """400 before any authorization, over every framing; nothing reaches the registry."""
    method, template = BODYLESS[case]
    target = template.format(repo=stack.repo, service=stack.service)
    token = None if case in ("token-get", "jwks") else stack.builder
    outcomes = {}
    for transport in TRANSPORTS:
        if transport.startswith("h1"):
            framing = (
                [f"Content-Length: {len(SMUGGLED_PUT)}"]
                if transport.endswith("length")
                else ["Transfer-Encoding: chunked"]
            )
            body = (
                SMUGGLED_PUT
                if transport.endswith("length")
                else (f"{len(SMUGGLED_PUT):x}\r\n".encode() + SMUGGLED_PUT + b"\r\n0\r\n\r\n")
            )
            conversation = stack.h1(
                stack.head(method, target, token, framing, close=True) + body, [method]
            )
            reply: h2raw.H2Reply | attacks.RawReply = conversation.replies[0]
            outcomes[transport] = reply.status
        else:
            headers = (
                [("content-length", str(len(SMUGGLED_PUT)))] if transport.endswith("length") else []
            )
            body = (
                SMUGGLED_PUT * (2 * MIB // len(SMUGGLED_PUT))
                if transport.startswith("h2-large")
                else SMUGGLED_PUT
            )
            reply = stack.h2(method, target, token, headers, body)
            outcomes[transport] = int(reply.outcome) if reply.outcome.isdigit() else reply.outcome
        if method != "HEAD" and reply.status == 400:
            assert reply.error_codes() == ["UNSUPPORTED"], (transport, reply.body[:300])
    assert outcomes == dict.fromkeys(TRANSPORTS, 400), outcomes


def test_framing_refusal_is_recorded_as_refused(stack: Stack) -> None:
    """The exchange record of a request refused for its framing says it was not forwarded and
    why (not the gate's verdict on its token)."""
    reply = stack.h2("GET", "/v2/", stack.nothing, [("x-case", "framing-record")], SMUGGLED_PUT)
    assert reply.outcome == "400"
    time.sleep(0.3)
    record = [
        r
        for r in stack.proxy.records()
        if r.get("status") == 400 and r.get("path") == "/v2/" and r.get("answered_by") == "regauth"
    ][-1]
    decision = record.get("decision", {})
    assert decision.get("forward") is False, record
    assert "framing" in decision.get("reason", "") or "body" in decision.get("reason", ""), record


# -- 8. absolute-form targets -------------------------------------------------------------------


def test_h1_absolute_form_reaches_the_registry_in_origin_form(stack: Stack) -> None:
    """The client's host never reaches the registry: the invariant compares the registry's
    request line (`GET /v2/ HTTP/1.1`) with the decision."""
    registry_host = urlsplit(stack.watch.registry.url).netloc
    data = (
        stack.head("GET", "https://evil.example/v2/", stack.nothing)
        + stack.head("GET", f"http://{registry_host}/v2/", stack.nothing)
        + stack.follow_up()
    )
    assert stack.h1(data, ["GET", "GET", "GET"]).statuses == [200, 200, 200]


def test_h1_absolute_form_with_a_body_is_refused(stack: Stack) -> None:
    data = (
        stack.head(
            "GET",
            "https://evil.example/v2/",
            stack.nothing,
            [f"Content-Length: {len(SMUGGLED_PUT)}"],
        )
        + SMUGGLED_PUT
        + stack.follow_up()
    )
    conversation = stack.h1(data, ["GET", "GET"])
    assert conversation.statuses == [400, 200], conversation
    assert conversation.replies[0].error_codes() == ["UNSUPPORTED"]


def test_h1_connect_is_refused(stack: Stack) -> None:
    """mitmproxy's reverse mode refuses CONNECT itself (400) and closes the connection, so
    the bytes that would have been tunnelled are never read."""
    registry_host = urlsplit(stack.watch.registry.url).netloc
    data = stack.head("CONNECT", registry_host, stack.nothing) + SMUGGLED_GET
    conversation = stack.h1(data, ["CONNECT", "GET"])
    assert conversation.statuses == [400], conversation
    assert conversation.replies[0].error_codes() == ["UNSUPPORTED"]
