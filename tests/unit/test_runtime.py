"""The snapshot every request is decided with (`regauth.runtime`): `build_runtime` loads the
policy and the signing keys and checks them together (the upstream's entry, the key the
lifecycle names, the next scheduled switch); `Runtime.redact` hides capability ids;
`Active.realm` is the token URL clients are sent to."""

from __future__ import annotations

import hashlib
import time

import pytest

from regauth import runtime as runtime_module
from regauth.ops import pki
from regauth.protocol.scope import parse_scope
from regauth.protocol.urls import parse_origin
from regauth.runtime import Active
from regauth.tokens import keystate
from tests.support.policies import policy_text
from tests.unit.helpers import BUILD_ID
from tests.unit.helpers import build_runtime


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    pki.init_certs(directory)
    return directory


def test_what_is_built_fits_together(tmp_path, certs_dir, password_hashes):
    built = build_runtime(tmp_path, certs_dir, policy_text(password_hashes))
    assert built.keyring.signer is built.keyring.keys[-1]
    token = built.issuer.issue_access("ci", [parse_scope("repository:public/a:pull")]).token
    assert built.verifier.verify_access(token).subject == "ci"
    assert built.upstream_entry.url == "*" and built.upstream_entry.mode == "enforce"
    assert built.key_change_at is None


def test_an_upstream_no_entry_names_is_refused(tmp_path, certs_dir, password_hashes):
    text = policy_text(password_hashes).replace(
        '  - url: "*"\n', '  - url: "https://other.example"\n'
    )
    with pytest.raises(ValueError, match="no `upstreams:` entry matches http://127.0.0.1:5000"):
        build_runtime(tmp_path, certs_dir, text)
    built = build_runtime(tmp_path, certs_dir, text, upstream="https://other.example")
    assert built.upstream_entry.url == "https://other.example"


def test_the_signer_is_the_one_the_lifecycle_names_until_the_next_switch(
    tmp_path, certs, password_hashes
):
    now = time.time()
    name, _ = keystate.stage(certs, "ES256", now + 3600, now)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(password_hashes))
    before = runtime_module.build_runtime(policy, certs, "http://127.0.0.1:5000", now)
    assert before.keyring.signer.name == "token-signing"
    assert (
        before.key_change_at is not None and before.key_change_at >= now + 3600 - 0.001
    )  # stored to the microsecond
    after = runtime_module.build_runtime(
        policy, certs, "http://127.0.0.1:5000", before.key_change_at + 1
    )
    assert after.keyring.signer.name == name and after.key_change_at is None


def test_capability_ids_are_replaced_by_a_short_stable_hash(tmp_path, certs_dir, password_hashes):
    built = build_runtime(tmp_path, certs_dir, policy_text(password_hashes))
    hidden = "<id:" + hashlib.sha256(BUILD_ID.encode()).hexdigest()[:10] + ">"
    assert (
        built.redact(f"/v2/builds/{BUILD_ID}/blobs/uploads/")
        == f"/v2/builds/{hidden}/blobs/uploads/"
    )
    assert built.redact(f"x{BUILD_ID}") == f"x{BUILD_ID}"  # not a path segment
    plain = build_runtime(tmp_path, certs_dir, "version: 1\nservice: svc\nrules: []\n")
    assert plain.redactor is None
    assert plain.redact(f"/v2/builds/{BUILD_ID}/") == f"/v2/builds/{BUILD_ID}/"


def test_the_realm_is_the_public_origins_token_url(tmp_path, certs_dir, password_hashes):
    built = build_runtime(tmp_path, certs_dir, policy_text(password_hashes))
    active = Active(
        built, parse_origin("https://Registry.Example:443"), parse_origin("http://127.0.0.1:5000")
    )
    assert active.realm == "https://registry.example/v2/token"
    assert active.upstream_auth is None and active.stream_threshold == 1024 * 1024
