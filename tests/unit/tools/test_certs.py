"""`regauth certs list|rotate|activate|retire` (`regauth.tools.certs`): through the command line
and function by function (in process, real files). The lifecycle itself is
tokens/test_keystate.py."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from regauth.cli import main
from regauth.ops import pki
from regauth.policy.model import TokenSettings
from regauth.tokens import keystate
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import rfc7638_thumbprint
from regauth.tools import certs as certs_tool

POLICY = """version: 1
service: svc
issuer: iss
token: {lifetime: 300, refresh_lifetime: 3600}
upstreams: [{url: "*", mode: enforce}]
rules: []
"""


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def _certs(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["certs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_state_fingerprint_both_kids_and_expiry(certs, policy, capsys):
    key = pki.load_signing_keys(certs)[0]
    code, out, _ = _certs(capsys, "list", "--dir", str(certs), "--policy", str(policy))
    assert code == 0
    assert "no state file: the newest key with a private key signs" in out
    assert re.search(r"^token-signing\s+signing\s+ES256\s+since ", out, re.M)
    openssl = (
        subprocess.run(
            [
                "openssl",
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                str(certs / "token-signing.crt"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split("=", 1)[1]
    )
    assert f"fingerprint  SHA256 {openssl}" in out
    assert f"libtrust {libtrust_kid(key.public_key)}" in out
    assert f"rfc7638  {rfc7638_thumbprint(key.public_key)}" in out
    assert f"not after    {key.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}" in out


def test_rotate_activate_retire_through_the_command_line(certs, policy, capsys):
    dirs = ["--dir", str(certs)]
    code, out, _ = _certs(capsys, "rotate", *dirs)
    assert code == 0
    name = re.search(r"(token-signing-\S+) is published", out).group(1)
    assert f"regauth certs activate {name}" in out
    code, out, _ = _certs(capsys, "list", *dirs, "--policy", str(policy), "--json")
    states = {k["name"]: k["state"] for k in json.loads(out)["keys"]}
    assert states == {"token-signing": "signing", name: "pending"}
    assert _certs(capsys, "bundle", *dirs)[1].count("BEGIN CERTIFICATE") == 2
    code, _, err = _certs(capsys, "activate", "token-signing-nope", *dirs, "--policy", str(policy))
    assert code == 1 and "no signing key 'token-signing-nope'" in err
    code, out, _ = _certs(capsys, "activate", name, *dirs, "--policy", str(policy))
    assert code == 0 and f"{name} signs from now on" in out
    assert "Retire token-signing after " in out
    code, _, err = _certs(capsys, "retire", "token-signing", *dirs, "--policy", str(policy))
    assert code == 1 and "may be valid until" in err and "--force" in err
    code, _, err = _certs(capsys, "retire", name, *dirs, "--policy", str(policy))
    assert code == 1 and "signs tokens now" in err
    code, out, _ = _certs(
        capsys, "retire", "token-signing", *dirs, "--policy", str(policy), "--force"
    )
    assert code == 0 and "removed" in out
    code, out, _ = _certs(capsys, "list", *dirs, "--json")
    assert [(k["name"], k["state"]) for k in json.loads(out)["keys"]] == [(name, "signing")]


def test_scheduled_rotation_and_bad_input(certs, tmp_path, capsys):
    dirs = ["--dir", str(certs)]
    code, _, err = _certs(capsys, "rotate", *dirs, "--activate-after", "soon")
    assert code == 2 and "--activate-after" in err
    code, out, _ = _certs(capsys, "rotate", *dirs, "--activate-after", "1h")
    assert code == 0 and "It signs from " in out
    code, out, _ = _certs(capsys, "list", *dirs, "--policy", str(tmp_path / "none.yaml"))
    assert "published, signs from " in out
    code, _, err = _certs(
        capsys, "retire", "token-signing", *dirs, "--policy", str(tmp_path / "none.yaml")
    )
    assert code == 2


def test_as_json_says_which_keys_may_be_retired_and_until_when(certs):
    now = time.time()
    settings = TokenSettings(lifetime=300, refresh_lifetime=3600)
    name, _ = keystate.stage(certs, "ES256", None, now)
    keystate.activate(certs, name, now, settings)
    later = now + 10
    old, new = certs_tool.as_json(keystate.lifecycle(certs, later), settings, later)
    assert (old["name"], old["state"], new["name"], new["state"]) == (
        "token-signing",
        "trusted-only",
        name,
        "signing",
    )
    assert old["retirable"] is False and new["retirable"] is False
    assert old["valid_until"] is not None and old["signed_until"] is not None
    after = now + 3600 + 3600  # past the refresh lifetime and the margin
    old_then, _ = certs_tool.as_json(keystate.lifecycle(certs, after), settings, after)
    assert old_then["retirable"] is True
    assert old["private_key"] is True and old["kid_libtrust"] != new["kid_libtrust"]
    # Without the policy's lifetimes nothing is known about how long tokens live.
    unknown, _ = certs_tool.as_json(keystate.lifecycle(certs, later), None, later)
    assert unknown["valid_until"] is None and unknown["retirable"] is True


def test_an_unusable_policy_is_one_line_when_quiet_and_every_problem_otherwise(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nservice: s\nrules: []\nsurprise: 1\ntoken: {lifetim: 3}\n")
    assert certs_tool.load_token_settings(bad, quiet=True) is None
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"regauth certs: {bad} not used (") and "surprise" in line
    assert certs_tool.load_token_settings(bad, quiet=False) is None
    problems = capsys.readouterr().err.splitlines()
    assert len(problems) >= 2 and all(p.startswith(f"{bad}:") for p in problems)
    good = tmp_path / "good.yaml"
    good.write_text(POLICY)
    settings = certs_tool.load_token_settings(good, quiet=True)
    assert settings is not None and settings.refresh_lifetime == 3600
