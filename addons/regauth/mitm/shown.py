"""Capability ids hidden in everything shown: mitmweb's copies of flows, its comments and the
console (`mitm/log_safety.py`).

Capability ids (`builds/{build-id}`: an anonymous write right while the build lives) are not
removed from the flow, which must still carry them, but from every copy shown
(`scrub.display_copy`) and from the console, in the exchange log's form: `<id:HASH10>`, the
first 10 hex digits of the id's SHA-256, the same in the log, in `regauth trace` and in
mitmweb, so one id can be followed across them (`CapabilityRedaction`). Ids are found where
the log finds them (after a `/`), alone (`"repository":"<id>"`), percent-encoded
(`scope=repository%3Abuilds%2F<id>`), in distribution's `_state` upload parameter and in base64
JSON (a token's claims), in time linear in the text.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import re2
from mitmproxy import http

from regauth.ops.safe_text import escape
from regauth.runtime import Active
from regauth.runtime import Runtime

# --- capability ids --------------------------------------------------------------------------

# What stands in a copy shown in place of a secret or of text that names an id.
REDACTED = "<redacted>"


# A run of URL text holding a percent escape: the id in `scope=repository%3Abuilds%2F<id>%3A…`
# (a form or query, or a `Link` header) stands after an encoded slash.
# Each match starts where a run starts (after a delimiter): linear in the text, whatever it holds.
_ENCODED_RUN = re.compile(
    r"(?<![^/?&=#\s<>\"',;])[^/?&=#\s<>\"',;%]*"
    r"(?:%[0-9A-Fa-f]{2}[^/?&=#\s<>\"',;%]*)+"
)
# distribution's upload state (`_state=` in an upload's Location and the client's PATCH and PUT
# targets): base64url of an HMAC and JSON naming the repository, so the id in base64.
_UPLOAD_STATE = re.compile(r"(?<=_state=)[A-Za-z0-9_%=+/-]+")
# base64url JSON objects (`{"` is `eyJ`): a JWT's header and claims (a token's `access` names
# its repositories), wherever they are shown (Authorization headers, token responses).
_BASE64_JSON = re.compile(r"eyJ[A-Za-z0-9_-]{4,}")
# How many policies' id shapes are remembered (a reload may drop a capability while flows
# that carry its ids are still shown).
MAX_POLICIES = 16


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


# Policy.capability_redactor's pattern: `(?<=/)(?:SHAPES)(?![A-Za-z0-9._-])`.
_AFTER_SLASH = "(?<=/)"
_NAME_ENDS = "(?![A-Za-z0-9._-])"


class _Hider:
    """One policy's capability ids: its exchange-log redaction (`Runtime.redact`: an id after a
    `/`), and the same shapes standing alone anywhere (`"repository":"<id>"`, a token's claims
    decoded), hashed by the runtime itself so the hash is the log's.

    `might_hold(data)` is a linear-time RE2 test on raw bytes (a few ms per MiB) that is false
    when no id can be found in `data` by `__call__`: an id shape between non-name characters or
    after an encoded `/` or `:`, an upload state, base64 JSON. Bodies are tested with it first:
    the Python passes cost a hundred times more, and mitmweb shows (and filters) flows on the
    proxy's event loop."""

    def __init__(self, runtime: Runtime) -> None:
        assert runtime.redactor is not None
        self.redact = runtime.redact
        pattern = runtime.redactor.pattern
        self.broad: re.Pattern[str] | None = None
        self.candidate: Any = None  # an RE2 pattern on bytes (google-re2 is untyped)
        if pattern.startswith(_AFTER_SLASH) and pattern.endswith(_NAME_ENDS):
            shapes = pattern[len(_AFTER_SLASH) : -len(_NAME_ENDS)]
            # Any non-name character may precede an id here; hiding a look-alike costs nothing.
            self.broad = re.compile("(?<![A-Za-z0-9._-])" + shapes + _NAME_ENDS)
            try:
                self.candidate = re2.compile(
                    rb"(?:^|[^A-Za-z0-9._-])" + shapes.encode() + rb"(?:[^A-Za-z0-9._-]|$)|"
                    rb"%(?:2[Ff]|3[Aa])" + shapes.encode() + rb"|_state=|eyJ"
                )
            except re2.error:
                self.candidate = None  # then every body gets the full passes

    def might_hold(self, data: bytes) -> bool:
        return self.candidate is None or self.candidate.search(data) is not None

    def __call__(self, text: str) -> str:
        text = self.redact(text)
        if self.broad is not None:
            text = self.broad.sub(lambda m: self.redact("/" + m.group(0))[1:], text)
        return text


class CapabilityRedaction:
    """Hides capability ids in what is shown outside the exchange log, as `<id:HASH10>`.

    Follows the configuration in force (`follow`, given by the recorder) and keeps the id
    shapes of every policy in force since start (up to MAX_POLICIES): flows recorded under an
    earlier policy are still shown. `__call__(text)` handles ids after a slash or standing
    alone, percent-encoded (`%2F<id>`), in distribution's `_state` upload parameter, and in
    base64url JSON (JWT header and claims). Thread-safe (the console filter runs wherever a
    record is logged): the set of hiders is replaced, never changed in place.
    """

    def __init__(self) -> None:
        self._active: Callable[[], Active | None] = lambda: None
        self._hiders: dict[str, _Hider] = {}

    def follow(self, active: Callable[[], Active | None]) -> None:
        """Read the configuration in force from `active()` (ConfigLoader.active)."""
        self._active = active

    def hiders(self) -> list[_Hider]:
        active = self._active()
        runtime = active.runtime if active is not None else None
        if runtime is not None and runtime.redactor is not None:
            key = runtime.redactor.pattern
            if key not in self._hiders:
                hiders = {**self._hiders, key: _Hider(runtime)}
                while len(hiders) > MAX_POLICIES:
                    del hiders[next(iter(hiders))]
                self._hiders = hiders
        return list(self._hiders.values())

    def __call__(self, text: str) -> str:
        for hider in self.hiders():
            text = _hide_everywhere(hider, text)
        return text

    def body(self, data: bytes) -> bytes:
        """`data` (a body, decoded) with ids hidden; the same object when it holds none."""
        hiders = [h for h in self.hiders() if h.might_hold(data)]
        if not hiders:
            return data
        text = data.decode("latin-1")  # bytes as they are: ids are ASCII
        hidden = text
        for hider in hiders:
            hidden = _hide_everywhere(hider, hidden)
        return data if hidden == text else hidden.encode("latin-1")


def _hide_everywhere(hide: _Hider, text: str) -> str:
    text = hide(text)
    if "%" in text:
        text = _ENCODED_RUN.sub(lambda m: _hide_decoded(hide, m.group(0)), text)
    if "_state=" in text:
        text = _UPLOAD_STATE.sub(lambda m: _hide_state(hide, m.group(0)), text)
    if "eyJ" in text:
        text = _BASE64_JSON.sub(lambda m: _hide_base64_json(hide, m.group(0)), text)
    return text


def _hide_decoded(hide: _Hider, run: str) -> str:
    """A percent-encoded run, decoded and hidden if it holds an id (shown decoded then)."""
    decoded = unquote(run, errors="replace")
    hidden = hide(decoded)
    return run if hidden == decoded else hidden


def _hide_state(hide: _Hider, value: str) -> str:
    raw = _b64decode(unquote(value))
    if raw is None:
        return value
    text = raw.decode("latin-1")  # an HMAC, then JSON; latin-1 maps each byte to a char
    return REDACTED if hide(text) != text else value


def _hide_base64_json(hide: _Hider, value: str) -> str:
    raw = _b64decode(value)
    if raw is None:
        return value
    text = raw.decode("latin-1")
    hidden = hide(text)
    if hidden == text:
        return value
    return base64.urlsafe_b64encode(hidden.encode("latin-1")).rstrip(b"=").decode()


# What hides capability ids in everything shown; the recorder makes it follow the configuration.
SHOWN = CapabilityRedaction()


def shown_text(text: str) -> str:
    """Text for mitmweb or the console that regauth made from a flow (a comment): capability
    ids hidden, control characters escaped (regauth.ops.safe_text)."""
    return escape(SHOWN(text))


def _hide_in_headers(headers: http.Headers, hide: Callable[[str], str]) -> None:
    fields = []
    changed = False
    for name, value in headers.fields:
        text = value.decode("latin-1")
        hidden = hide(text)
        changed = changed or hidden != text
        fields.append((name, hidden.encode("latin-1")))
    if changed:
        headers.fields = tuple(fields)


def _hide_in_body(message: http.Message, redaction: CapabilityRedaction) -> None:
    content = message.get_content(strict=False)
    if not content:
        return
    hidden = redaction.body(content)
    if hidden is not content:
        message.content = hidden


def hide_capabilities(copy: http.HTTPFlow, redaction: CapabilityRedaction | None = None) -> None:
    """Capability ids out of a flow copy that is only shown: request target, headers, trailers
    and bodies of request and response, the error, the comment and string metadata (a flow
    dump writes it). A no-op without any capability in the policies in force."""
    redaction = redaction or SHOWN
    if not redaction.hiders():
        return
    request = copy.request
    hidden_path = redaction(request.path)
    if hidden_path != request.path:
        request.path = hidden_path
    messages: list[http.Message] = [request]
    if copy.response is not None:
        messages.append(copy.response)
    for message in messages:
        _hide_in_headers(message.headers, redaction)
        if message.trailers:
            _hide_in_headers(message.trailers, redaction)
        _hide_in_body(message, redaction)
    if copy.error is not None:
        copy.error.msg = redaction(copy.error.msg)
    copy.comment = redaction(copy.comment)
    for key, value in list(copy.metadata.items()):
        if isinstance(value, str):
            copy.metadata[key] = redaction(value)
