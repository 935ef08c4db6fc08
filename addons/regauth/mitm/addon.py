"""The regauth addon: adapts mitmproxy flows to the core (token service, gate, rewriting, log)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.utils import asyncio_utils

from regauth import gate
from regauth import pki
from regauth import rewrite
from regauth.authorization import describe
from regauth.credentials import Authenticator
from regauth.errors import JSON_HEADERS
from regauth.errors import error_body
from regauth.exchange import Conversations
from regauth.exchange import new_id
from regauth.exchange_log import ExchangeLog
from regauth.mitm.flow_state import FlowState
from regauth.mitm.flow_state import build_record
from regauth.mitm.flow_state import comment_and_marker
from regauth.mitm.guard import FORWARD_MARK
from regauth.mitm.guard import LOCAL_MARK
from regauth.mitm.guard import fail_closed
from regauth.mitm.refusal_sink import NONCE_HEADER
from regauth.mitm.refusal_sink import RefusalSink
from regauth.mitm.scrub import scrub_request
from regauth.mitm.scrub import scrub_token_response
from regauth.policy_loader import PolicyError
from regauth.routes import RouteError
from regauth.routes import is_registry_path
from regauth.routes import parse_query
from regauth.runtime import Runtime
from regauth.runtime import build_runtime
from regauth.token_service import MAX_FORM_BYTES
from regauth.token_service import TOKEN_PATH
from regauth.token_service import TokenRequest
from regauth.token_service import handle_token_request
from regauth.upstream_auth import UpstreamAuth
from regauth.upstream_auth import UpstreamAuthError
from regauth.upstream_auth import make_fetcher
from regauth.urls import Origin
from regauth.urls import default_public_url
from regauth.urls import parse_origin

logger = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
_BODY_METHODS = ("POST", "PUT", "PATCH")
# Options that pass traffic around the addon (ignore/allow/tcp/udp hosts), change requests after
# regauth decided (map_remote, modify_headers, keep_host_header), replay flows to other hosts,
# add credentials of their own, crash per-flow streaming, allow request smuggling, or write
# flows to disk before regauth scrubbed their secrets.
FORBIDDEN_OPTIONS = frozenset({
    "ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts", "keep_host_header",
    "upstream_auth", "map_remote", "modify_headers", "map_local", "client_replay",
    "server_replay", "stream_large_bodies", "validate_inbound_headers", "save_stream_file",
})


def upstream_from_modes(modes: list[str]) -> Origin:
    """The single reverse-proxy target regauth guards; raise ValueError otherwise."""
    parsed = [ProxyMode.parse(spec) for spec in modes]
    if len(parsed) != 1 or not isinstance(parsed[0], ReverseMode):
        raise ValueError("regauth needs exactly one --mode reverse:URL (the registry it guards) "
                         "and no other proxy mode")
    mode = parsed[0]
    if mode.scheme not in ("http", "https"):
        raise ValueError(f"the upstream must be http or https, not {mode.scheme}")
    host, port = mode.address
    return Origin(mode.scheme, host.lower(), port)


def _stamp(paths: list[Path]) -> tuple[object, ...]:
    out: list[object] = []
    for path in paths:
        try:
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(path), None))
    return tuple(out)


class RegistryAuth:
    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.authenticator = Authenticator()
        self.conversations = Conversations()
        self.sink = RefusalSink()
        self.exchange_log: ExchangeLog | None = None
        self.public: Origin | None = None
        self.upstream: Origin | None = None
        self.upstream_auth: UpstreamAuth | None = None
        # Keyed by the flow object: gone with the flow, never evicted while it is in flight.
        self.states: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = \
            weakref.WeakKeyDictionary()
        # bcrypt runs here, bounded, so failed logins cannot take every thread of the loop.
        self.login_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="regauth-login")
        self._stamp: tuple[object, ...] = ()
        self._watcher: asyncio.Task[None] | None = None
        self._config_error: str | None = None

    # -- options ---------------------------------------------------------------------------
    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("regauth_policy", str, "",
                          "Policy file (YAML, format v1). Without one, every request is refused.")
        loader.add_option("regauth_certs_dir", str, "certs",
                          "Directory with ca.crt, token-signing*.crt and private/.")
        loader.add_option("regauth_public_url", str, "",
                          "URL clients use to reach regauth (realm and rewritten URLs point "
                          "here). Default: https://localhost:<listen port>.")
        loader.add_option("regauth_log", str, "logs/exchange.jsonl",
                          "JSONL exchange log file.")
        loader.add_option("regauth_upstream_ca", str, "",
                          "PEM CA bundle for https upstreams and upstream token realms.")
        loader.add_option("regauth_stream_threshold", int, 1024 * 1024,
                          "Bodies larger than this many bytes (or of unknown size) stream "
                          "through without being kept.")
        loader.add_option("regauth_reload_seconds", int, 1,
                          "How often the policy file is checked for changes (0 disables).")

    def configure(self, updated: set[str]) -> None:
        for name in sorted(updated & FORBIDDEN_OPTIONS):
            if getattr(ctx.options, name) != ctx.options.default(name):
                raise exceptions.OptionsError(
                    f"mitmproxy option {name} is not allowed with regauth: it would let "
                    "requests bypass regauth's decisions or keep secrets it removes")
        if "mode" in updated and list(ctx.options.mode) != list(ctx.options.default("mode")):
            # mitmproxy applies --set before --mode, so the default mode is not yet an error
            # (running() refuses to serve if it stays); any other mode list must be exactly
            # the one reverse proxy regauth guards.
            try:
                upstream_from_modes(list(ctx.options.mode))
            except ValueError as e:
                raise exceptions.OptionsError(f"regauth: {e}") from None
        if not updated & {"regauth_policy", "regauth_certs_dir", "regauth_public_url",
                          "regauth_log", "regauth_upstream_ca", "mode", "listen_port",
                          "regauth_stream_threshold", "regauth_reload_seconds"}:
            return
        if ctx.options.regauth_stream_threshold < 0:
            raise exceptions.OptionsError("regauth_stream_threshold must be >= 0")
        if ctx.options.regauth_reload_seconds < 0:
            raise exceptions.OptionsError("regauth_reload_seconds must be >= 0")
        if not ctx.options.regauth_policy:
            self.runtime = None
            return
        try:
            self.upstream = upstream_from_modes(list(ctx.options.mode))
        except ValueError as e:
            # mitmproxy applies --set before --mode: wait for the mode, and refuse to run
            # (in `running`) if it never comes.
            self.runtime = None
            self._config_error = str(e)
            return
        self._config_error = None
        try:
            public_url = ctx.options.regauth_public_url or default_public_url(
                "127.0.0.1", ctx.options.listen_port or 8080)
            self.public = parse_origin(public_url)
            runtime = build_runtime(self._policy_path(), self._certs_dir(), self.upstream.url)
        except PolicyError as e:
            raise exceptions.OptionsError(f"invalid policy:\n{e}") from None
        except ValueError as e:
            raise exceptions.OptionsError(f"regauth: {e}") from None
        self._install(runtime)
        self._stamp = self._watch_stamp()
        log_path = Path(ctx.options.regauth_log)
        if self.exchange_log is None or self.exchange_log.path != log_path:
            if self.exchange_log is not None:
                self.exchange_log.close()
            self.exchange_log = ExchangeLog(log_path, self._redact)
        logger.info("regauth: policy %s loaded (service %s, %d rules, upstream %s in %s mode)",
                    self._policy_path(), runtime.policy.service, len(runtime.policy.rules),
                    self.upstream.url, runtime.upstream.mode)

    def _policy_path(self) -> Path:
        return Path(ctx.options.regauth_policy)

    def _certs_dir(self) -> Path:
        return Path(ctx.options.regauth_certs_dir)

    def _realm(self) -> str:
        assert self.public is not None
        return self.public.url + TOKEN_PATH

    def _install(self, runtime: Runtime) -> None:
        self.runtime = runtime
        credentials = runtime.upstream.credentials
        if credentials is None:
            self.upstream_auth = None
            return
        assert self.upstream is not None
        context = None
        if self.upstream.scheme == "https" or credentials.kind == "bearer":
            cafile = ctx.options.regauth_upstream_ca or None
            context = ssl.create_default_context(cafile=cafile)
        self.upstream_auth = UpstreamAuth(credentials, self.upstream, make_fetcher(context))

    def _redact(self, line: str) -> str:
        return self.runtime.redact(line) if self.runtime is not None else line

    def _watch_stamp(self) -> tuple[object, ...]:
        paths = [self._policy_path(), *sorted(self._certs_dir().glob(f"{pki.SIGNING_STEM}*.crt"))]
        return _stamp(paths)

    # -- lifecycle -------------------------------------------------------------------------
    async def running(self) -> None:
        if self._config_error:
            logger.error("regauth: %s", self._config_error)  # errorcheck exits on this
            return
        await self.sink.start()
        if ctx.options.regauth_policy and ctx.options.regauth_reload_seconds:
            self._watcher = asyncio_utils.create_task(self._watch(), name="regauth policy watch",
                                                      keep_ref=True)
        if self.runtime is None:
            logger.warning("regauth: no policy loaded; every request is refused")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(ctx.options.regauth_reload_seconds)
            stamp = self._watch_stamp()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            assert self.upstream is not None
            try:
                runtime = await asyncio.to_thread(build_runtime, self._policy_path(),
                                                  self._certs_dir(), self.upstream.url)
            except (PolicyError, ValueError, OSError) as e:
                logger.error("regauth: policy change refused, the last good policy stays in "
                             "force:\n%s", e)
                continue
            self._install(runtime)
            logger.info("regauth: policy %s reloaded (%d rules)", self._policy_path(),
                        len(runtime.policy.rules))

    async def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self.login_pool.shutdown(wait=False, cancel_futures=True)
        await self.sink.stop()
        if self.exchange_log is not None:
            self.exchange_log.close()

    # -- helpers ---------------------------------------------------------------------------
    def _state(self, flow: http.HTTPFlow) -> FlowState:
        state = self.states.get(flow)
        if state is None:
            state = FlowState(started=time.time())
            self.states[flow] = state
        return state

    def _goes_to_upstream(self, flow: http.HTTPFlow) -> bool:
        """Only live flows of the reverse proxy, aimed at the configured upstream."""
        if flow.is_replay or not isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return False
        request = flow.request
        assert self.upstream is not None
        return (request.scheme, request.host.lower(), request.port) == \
            (self.upstream.scheme, self.upstream.host, self.upstream.port)

    def _may_carry_large_body(self, request: http.Request) -> bool:
        if "transfer-encoding" in request.headers:
            return True
        length = request.headers.get("content-length")
        if length is None:
            return request.method in _BODY_METHODS
        try:
            return int(length) > ctx.options.regauth_stream_threshold
        except ValueError:
            return True

    def _respond(self, flow: http.HTTPFlow, state: FlowState, status: int,
                 headers: dict[str, str], body: bytes) -> None:
        """Answer locally; a large or unknown-size request body goes to the refusal sink."""
        flow.metadata[LOCAL_MARK] = True
        flow.metadata.pop(FORWARD_MARK, None)
        state.answered_by = "regauth"
        request = flow.request
        if self._may_carry_large_body(request) and self.sink.running:
            nonce = self.sink.prepare(status, headers, body)
            request.headers.pop("expect", None)
            request.headers[NONCE_HEADER] = nonce
            request.headers.pop("authorization", None)
            request.scheme = "http"
            request.host = "127.0.0.1"
            request.port = self.sink.port
            request.stream = state.counter("request")
            state.via_sink = True
            return
        if request.method == "HEAD":
            body = b""  # a HEAD response has no body; sending one desynchronizes HTTP/1
        flow.response = http.Response.make(status, body, headers)

    def _refuse(self, flow: http.HTTPFlow, state: FlowState, status: int, code: str,
                message: str) -> None:
        state.reason = message
        self._respond(flow, state, status, dict(JSON_HEADERS), error_body(code, message))

    # -- hooks -----------------------------------------------------------------------------
    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        # Marks from an earlier life of this flow (a replay, a loaded file) decide nothing.
        flow.metadata.pop(FORWARD_MARK, None)
        flow.metadata.pop(LOCAL_MARK, None)
        state = self._state(flow)
        request = flow.request
        state.client_authorization = request.headers.get("authorization")
        state.auth = describe(state.client_authorization)
        runtime = self.runtime
        if runtime is None or self.public is None or self.upstream is None:
            self._refuse(flow, state, 503, "UNAVAILABLE",
                         "regauth has no valid policy loaded; nothing is forwarded")
            return
        if not self._goes_to_upstream(flow):
            self._refuse(flow, state, 403, "DENIED", "regauth forwards only to its upstream "
                                                     "registry, and never replays requests")
            return
        path = request.path.partition("?")[0]
        if path == TOKEN_PATH:
            await self._token_headers(flow, state, runtime)
            return
        if path == JWKS_PATH and request.method in ("GET", "HEAD"):
            state.kind = "jwks"
            body = json.dumps(runtime.keyring.jwks(runtime.policy.token.kid_format)).encode()
            self._respond(flow, state, 200, {"Content-Type": "application/json"}, body)
            return
        decision = gate.decide(runtime, request.method, request.path,
                               request.headers.get("authorization"), self._realm(),
                               request.headers.get_all("content-type"))
        state.kind = "registry" if is_registry_path(path) else "other"
        state.route = decision.route
        state.gate = decision.record
        state.reason = decision.reason
        state.token = decision.token
        if not decision.forward:
            self._respond(flow, state, decision.status, decision.headers, decision.body)
            return
        if self.upstream_auth is not None:
            scopes = decision.route.required if decision.route else ()
            try:
                header = await asyncio.to_thread(self.upstream_auth.header_for, scopes)
            except UpstreamAuthError as e:
                logger.warning("regauth: upstream credentials unavailable: %s", e)
                self._refuse(flow, state, 502, "UNAVAILABLE",
                             "regauth could not obtain upstream credentials (see its log)")
                return
            request.headers["authorization"] = header
            state.injected = True
        assert self.public is not None
        if not (request.is_http2 or request.is_http3):
            # An absolute-form target would reach the upstream with the client's host in it.
            request.authority = ""
        request.headers.pop("forwarded", None)
        # No protocol switch: a 101 would turn the connection into an unchecked tunnel.
        request.headers.pop("upgrade", None)
        if decision.route is not None and decision.route.kind in ("upload-start", "upload") \
                and request.method in _BODY_METHODS:
            # distribution ignores the type of blob data; a fixed one leaves Go nothing to
            # parse as a form (the mount source must come from the authorized query).
            request.headers["content-type"] = "application/octet-stream"
        request.headers["X-Forwarded-Host"] = self.public.netloc
        request.headers["X-Forwarded-Proto"] = self.public.scheme
        if self._may_carry_large_body(request):
            request.stream = state.counter("request")
        flow.metadata[FORWARD_MARK] = True
        state.answered_by = "upstream"

    async def _token_headers(self, flow: http.HTTPFlow, state: FlowState,
                             runtime: Runtime) -> None:
        state.kind = "token"
        request = flow.request
        if request.method == "GET":
            await self._answer_token(flow, state, runtime, None)
            return
        if request.method != "POST":
            self._refuse(flow, state, 405, "UNSUPPORTED", "the token endpoint accepts GET and "
                                                          "POST")
            return
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_FORM_BYTES:
            self._refuse(flow, state, 413 if length.isdigit() else 411, "SIZE_INVALID",
                         f"token requests need a Content-Length of at most {MAX_FORM_BYTES}")
            return
        # The form is read (bounded above) and answered in the `request` hook.
        flow.metadata[LOCAL_MARK] = True
        state.answered_by = "regauth"

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        state = self.states.get(flow)
        if state is None or state.kind != "token" or flow.request.method != "POST":
            return
        runtime = self.runtime
        if runtime is None:
            self._refuse(flow, state, 503, "UNAVAILABLE", "regauth has no valid policy loaded")
            return
        form = None
        content_type = flow.request.headers.get("content-type", "").split(";")[0].strip()
        if content_type.lower() == "application/x-www-form-urlencoded":
            try:
                text = (flow.request.raw_content or b"").decode("utf-8")
                form = {}
                for key, value in parse_qsl(text, keep_blank_values=True, max_num_fields=64):
                    form.setdefault(key, []).append(value)
            except (UnicodeDecodeError, ValueError):
                form = None
        await self._answer_token(flow, state, runtime, form)

    async def _answer_token(self, flow: http.HTTPFlow, state: FlowState, runtime: Runtime,
                            form: dict[str, list[str]] | None) -> None:
        request = flow.request
        try:
            query = parse_query(request.path.partition("?")[2])
        except RouteError as e:
            self._refuse(flow, state, e.status, e.code, f"token request refused: {e.message}")
            return
        client_ip = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        token_request = TokenRequest(request.method, query, form,
                                     request.headers.get("authorization"), client_ip)
        response = await asyncio.get_running_loop().run_in_executor(
            self.login_pool, handle_token_request, runtime, self.authenticator, token_request)
        state.token_record = response.record
        requested = [str(s) for s in response.record.get("requested", [])]  # type: ignore[union-attr]
        state.conversation = self.conversations.token_requested(client_ip, requested)
        if response.jti:
            self.conversations.token_issued(response.jti, state.conversation)
        self._respond(flow, state, response.status, response.headers, response.body)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.states.get(flow)
        if state is None or state.answered_by != "upstream" or flow.response is None:
            return
        response = flow.response
        assert self.upstream is not None and self.public is not None
        for name in ("location", "content-location"):
            if name in response.headers:
                response.headers[name] = rewrite.relative_location(response.headers[name],
                                                                   self.upstream, self.public)
        if "link" in response.headers:
            response.headers["link"] = rewrite.rewrite_link(response.headers["link"],
                                                            self.upstream, self.public)
        path = flow.request.path.partition("?")[0]
        challenges = response.headers.get_all("www-authenticate")
        if challenges and is_registry_path(path) and self.runtime is not None:
            rewritten = []
            for value in challenges:
                new, records = rewrite.rewrite_challenge(value, self._realm(),
                                                         self.runtime.policy.service)
                state.upstream_challenge.extend(records)
                rewritten.append(new)
            response.headers.set_all("www-authenticate", rewritten)
        if response.status_code == 101:
            flow.kill()  # never let a registry route become a tunnel
            return
        if state.injected and response.status_code == 401:
            state.upstream_refused_credentials = True
        length = response.headers.get("content-length")
        if length is None or not length.isdigit() or \
                int(length) > ctx.options.regauth_stream_threshold:
            if not state.upstream_refused_credentials:
                response.stream = state.counter("response")

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        state = self.states.pop(flow, None)
        if state is None or flow.response is None:
            return
        if state.upstream_refused_credentials:
            if self.upstream_auth is not None and state.route is not None:
                self.upstream_auth.forget(state.route.required)
            flow.response = http.Response.make(
                502, error_body("UNAVAILABLE", "the upstream registry refused regauth's "
                                               "credentials"), JSON_HEADERS)
            state.reason = "upstream refused the injected credentials"
        self._finish(flow, state)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        state = self.states.pop(flow, None)
        if state is None:
            return
        self._finish(flow, state)

    def _finish(self, flow: http.HTTPFlow, state: FlowState) -> None:
        client_ip = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        sent = flow.response.headers.get_all("www-authenticate") if flow.response else []
        challenge_scopes = None
        if flow.response is not None and flow.response.status_code == 401:
            for value in sent:
                if value.lower().startswith("bearer"):
                    challenge_scopes = rewrite.challenge_scopes(value)
                    break
        if challenge_scopes is not None and state.kind == "registry":
            state.conversation = self.conversations.challenged(client_ip, challenge_scopes)
        elif state.conversation is None:
            state.conversation = self.conversations.for_token(state.presented_jti()) or new_id()
        record = build_record(flow, state, sent)
        scrub_request(flow.request, state.client_authorization)
        if state.kind == "token" and flow.response is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(1.0, scrub_token_response, flow.response)
        comment, marker = comment_and_marker(flow, state, record)
        flow.comment = comment
        flow.marked = marker
        if self.exchange_log is not None:
            self.exchange_log.write(record)


__all__ = ["RegistryAuth", "upstream_from_modes"]
