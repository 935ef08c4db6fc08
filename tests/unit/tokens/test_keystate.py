"""The signing-key lifecycle (regauth.tokens.keystate): staged rotation, activation, retirement."""

from __future__ import annotations

import base64
import json
import time

import pytest

from regauth.ops import pki
from regauth.policy.model import TokenSettings
from regauth.protocol.scope import parse_scope
from regauth.tokens import keystate
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyring import KeyRing
from regauth.tokens.verify import TokenVerifier
from tests.unit.helpers import build_runtime

SETTINGS = TokenSettings(lifetime=300, refresh_lifetime=3600)
DAY = 86400.0
POLICY = """version: 1
service: svc
issuer: iss
token: {lifetime: 300, refresh_lifetime: 3600}
upstreams: [{url: "*", mode: enforce}]
rules: []
"""


def _header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _kid(certs, name: str) -> str:
    return libtrust_kid(next(k for k in pki.load_signing_keys(certs) if k.name == name).public_key)


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


def test_without_a_state_file_the_newest_key_with_a_private_key_signs(certs):
    time.sleep(1.1)  # a later not-before second
    pki.rotate_signing_key(certs)
    public_only = pki.rotate_signing_key(certs)[0]  # newest, but without its private key
    public_only.unlink()
    keys = pki.load_signing_keys(certs)
    life = keystate.lifecycle(certs, time.time())
    assert not life.managed and life.signer.name == keys[1].name
    first, _, last = life.statuses
    assert (first.state, first.signed_until) == ("trusted-only", keys[1].created)
    assert (last.state, last.signed_until) == ("trusted-only", None)
    assert not (certs / keystate.STATE_FILE).exists()  # reading changes nothing


def test_a_staged_key_is_published_but_never_signs_before_activation(certs, tmp_path):
    now = time.time()
    old = pki.load_signing_keys(certs)[0].name
    name, written = keystate.stage(certs, "ES256", None, now)
    assert [p.name for p in written] == [f"{name}.key", f"{name}.crt"]
    runtime = build_runtime(tmp_path, certs, POLICY)
    assert runtime.keyring.signer.name == old and runtime.key_change_at is None
    assert {k.name for k in runtime.keyring.keys} == {old, name}
    # Published: in the bundle and the JWKS, and tokens it would sign verify.
    new_key = next(k for k in runtime.keyring.keys if k.name == name)
    assert pki.bundle_pem([new_key]) in pki.bundle_pem(pki.load_signing_keys(certs))
    assert _kid(certs, name) in {k["kid"] for k in runtime.keyring.jwks("libtrust")["keys"]}
    # Not signing: every token, access or refresh, carries the old key.
    for _ in range(5):
        token = runtime.issuer.issue_access("ci", [parse_scope("repository:a:pull")]).token
        assert _header(token)["kid"] == _kid(certs, old)
    life = keystate.lifecycle(certs, now + DAY)
    assert life.signer.name == old and life.status(name).state == "pending"


def test_the_state_file_names_a_staged_key_before_its_files_exist(certs, monkeypatch):
    write = pki.write_signing_pair
    seen = {}

    def checked(certs_dir, stem, algorithm):
        seen[stem] = keystate.read_activations(certs_dir)
        return write(certs_dir, stem, algorithm)

    monkeypatch.setattr(pki, "write_signing_pair", checked)
    name, _ = keystate.stage(certs, "ES256", None, time.time())
    # Otherwise a reader between the two steps would take it for "the newest, which signs".
    assert seen[name] is not None and name in seen[name] and seen[name][name] is None


def test_a_scheduled_activation_switches_at_its_time(certs, tmp_path):
    now = time.time()
    old = pki.load_signing_keys(certs)[0].name
    name, _ = keystate.stage(certs, "ES256", now + 60, now)
    before = keystate.lifecycle(certs, now + 59)
    assert before.signer.name == old and before.next_change == pytest.approx(now + 60)
    assert before.status(name).state == "pending"
    runtime = build_runtime(tmp_path, certs, POLICY)
    assert runtime.keyring.signer.name == old
    assert runtime.key_change_at == pytest.approx(now + 60, abs=1e-5)
    after = keystate.lifecycle(certs, now + 61)
    assert after.signer.name == name and after.next_change is None
    assert after.status(old).signed_until == pytest.approx(now + 60, abs=1e-5)
    later = runtime_at(tmp_path, certs, now + 61)
    assert later.keyring.signer.name == name


def runtime_at(tmp_path, certs, now):
    from regauth import runtime

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return runtime.build_runtime(path, certs, "http://127.0.0.1:5000", now=now)


def test_activate_switches_signing_and_records_when_the_old_key_stopped(certs):
    now = time.time()
    old = pki.load_signing_keys(certs)[0].name
    name, _ = keystate.stage(certs, "ES256", None, now)
    life = keystate.activate(certs, name, now + 10, SETTINGS)
    assert life.signer.name == name
    assert life.status(old).state == "trusted-only"
    assert life.status(old).signed_until == pytest.approx(now + 10, abs=1e-5)
    # Switching back and forth keeps each key's latest end.
    keystate.activate(certs, old, now + 20)
    back = keystate.activate(certs, name, now + 30)
    assert back.status(old).signed_until == pytest.approx(now + 30, abs=1e-5)
    assert keystate.activate(certs, name, now + 40).status(old).signed_until == pytest.approx(
        now + 30, abs=1e-5
    )  # activating the signer again changes nothing


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TokenSettings(signing_key="token-signing"), "pins token.signing_key: token-signing"),
        (TokenSettings(algorithm="RS256"), "an ES256 key but the policy asks for RS256"),
    ],
)
def test_activate_refuses_what_regauth_could_not_sign_with(certs, settings, message):
    name, _ = keystate.stage(certs, "ES256", None, time.time())
    with pytest.raises(ValueError, match=message):
        keystate.activate(certs, name, time.time(), settings)
    with pytest.raises(ValueError, match="no signing key 'nope'"):
        keystate.activate(certs, "nope", time.time())


def test_a_key_without_its_private_key_cannot_be_activated(certs):
    name, written = keystate.stage(certs, "ES256", None, time.time())
    written[0].unlink()
    with pytest.raises(ValueError, match="no private key here"):
        keystate.activate(certs, name, time.time())
    assert keystate.lifecycle(certs, time.time()).status(name).state == "trusted-only"


def test_retire_is_refused_while_tokens_the_key_signed_may_be_valid(certs):
    now = time.time()
    old = pki.load_signing_keys(certs)[0].name
    name, _ = keystate.stage(certs, "ES256", None, now)
    with pytest.raises(keystate.RetireRefused, match="signs tokens now"):
        keystate.retire(certs, old, SETTINGS, now)
    keystate.activate(certs, name, now + 10)
    # Refresh tokens (3600 s) outlive access tokens (300 s); then the margin.
    last_valid = now + 10 + 3600 + keystate.RETIRE_MARGIN + 0.001  # the file keeps µs
    for at in (now + 11, now + 10 + 300 + keystate.RETIRE_MARGIN + 1, last_valid - 1):
        with pytest.raises(keystate.RetireRefused, match="may be valid until"):
            keystate.retire(certs, old, SETTINGS, at)
    assert {k.name for k in pki.load_signing_keys(certs)} == {old, name}
    removed = keystate.retire(certs, old, SETTINGS, last_valid)
    assert [p.name for p in removed] == [f"{old}.crt", f"{old}.key"]
    assert [k.name for k in pki.load_signing_keys(certs)] == [name]
    assert old not in keystate.read_activations(certs)
    with pytest.raises(keystate.RetireRefused, match="signs tokens now"):
        keystate.retire(certs, name, SETTINGS, last_valid, force=True)


def test_retire_at_once_a_key_that_never_signed_or_with_force(certs):
    now = time.time()
    pending, _ = keystate.stage(certs, "ES256", None, now)
    scheduled, _ = keystate.stage(certs, "ES256", now + 100, now)
    assert keystate.retire(certs, pending, SETTINGS, now)
    assert keystate.retire(certs, scheduled, SETTINGS, now)  # cancels its activation
    assert keystate.lifecycle(certs, now + 200).next_change is None
    old = pki.load_signing_keys(certs)[0].name
    new, _ = keystate.stage(certs, "ES256", None, now)
    keystate.activate(certs, new, now)
    with pytest.raises(keystate.RetireRefused):
        keystate.retire(certs, old, SETTINGS, now + 1)
    assert keystate.retire(certs, old, SETTINGS, now + 1, force=True)


def test_a_legacy_directory_keeps_its_history_when_first_changed(certs):
    # Without a state file, the key that signed until the newer one appeared stopped then.
    time.sleep(1.1)
    pki.rotate_signing_key(certs)
    first, second = pki.load_signing_keys(certs)
    now = time.time()
    with pytest.raises(keystate.RetireRefused, match="may be valid until"):
        keystate.retire(certs, first.name, SETTINGS, now)
    assert keystate.read_activations(certs) is None  # a refusal writes nothing
    third, _ = keystate.stage(certs, "ES256", None, now)
    life = keystate.lifecycle(certs, now)
    assert life.managed and life.signer.name == second.name
    assert life.status(first.name).signed_until == second.created
    assert life.status(third).state == "pending"


def test_a_policy_pin_is_recorded_as_an_activation(certs, tmp_path):
    old = pki.load_signing_keys(certs)[0].name
    name, _ = keystate.stage(certs, "ES256", None, time.time())
    pinned = POLICY.replace(
        "refresh_lifetime: 3600}", f"refresh_lifetime: 3600, signing_key: {name}}}"
    )
    runtime = build_runtime(tmp_path, certs, pinned)
    assert runtime.keyring.signer.name == name
    assert keystate.read_activations(certs)[name] is not None
    life = keystate.lifecycle(certs, time.time())  # the pin is history now, not a guess
    assert life.signer.name == name and life.status(old).signed_until is not None
    with pytest.raises(ValueError, match="'nope' not found"):
        build_runtime(tmp_path, certs, POLICY.replace("3600}", "3600, signing_key: nope}"))


def test_a_pin_is_honoured_where_the_state_cannot_be_written(certs, tmp_path, monkeypatch):
    name, _ = keystate.stage(certs, "ES256", None, time.time())
    before = (certs / keystate.STATE_FILE).read_bytes()

    def read_only(*_args):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(keystate, "write_activations", read_only)
    pinned = POLICY.replace("3600}", f"3600, signing_key: {name}}}")
    assert build_runtime(tmp_path, certs, pinned).keyring.signer.name == name
    assert (certs / keystate.STATE_FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"version": 2, "keys": {}}', "expected"),
        ('{"version": 1, "keys": {"token-signing": {"activated": 5}}}', "RFC 3339 time string"),
        (
            '{"version": 1, "keys": {"token-signing": {"activated": "2026-01-01T00:00:00"}}}',
            "time zone",
        ),
        ('{"version": 1, "keys": {"token-signing": {"signing": true}}}', "an entry is"),
        ('{"version": 1, "keys": {"token-signing": {}}}', "no token-signing key is active"),
    ],
)
def test_a_broken_state_file_is_refused_with_its_name(certs, tmp_path, text, message):
    (certs / keystate.STATE_FILE).write_text(text)
    with pytest.raises(ValueError, match=message):
        build_runtime(tmp_path, certs, POLICY)


def test_the_state_file_is_replaced_whole(certs):
    keystate.stage(certs, "ES256", None, time.time())
    data = json.loads((certs / keystate.STATE_FILE).read_text())
    assert data["version"] == 1 and len(data["keys"]) == 2
    assert [p.name for p in certs.iterdir() if p.name.endswith(".tmp")] == []


def test_tokens_name_the_key_that_signed_them(certs):
    ring = KeyRing(pki.load_signing_keys(certs))
    token = TokenIssuer(ring, TokenSettings(), "svc", "iss").issue_access("ci", []).token
    verified = TokenVerifier(ring, "svc", "iss").verify_access(token)
    assert verified.signing_key == "token-signing"
