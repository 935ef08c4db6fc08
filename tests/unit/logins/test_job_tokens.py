"""regauth.logins.job_tokens: the file store (the Redis one is tested against a real Redis in
tests/integration/test_job_tokens.py)."""

from __future__ import annotations

import json
import time

import pytest

from regauth.logins.job_tokens import FileJobStore
from regauth.logins.job_tokens import JobRecord
from regauth.logins.job_tokens import JobStoreUnavailable


def _record(jti="j1", exp=None):
    return JobRecord(
        jti, "regauth:build:b1", ("repository:builds/b1:push",), 1, exp or 4_000_000_000
    )


def test_records_and_revocations_round_trip(tmp_path):
    store = FileJobStore(tmp_path)
    assert store.entries() == [] and not store.is_revoked("j1")
    store.record(_record("j1"))
    store.record(_record("j2"))
    with open(store.issued, "a") as f:
        f.write('{"torn"\n')
    assert [e.jti for e in store.entries()] == ["j1", "j2"]
    store.revoke("j1", 4_000_000_000)
    assert store.is_revoked("j1") and not store.is_revoked("j2")
    assert FileJobStore(tmp_path).is_revoked("j1")  # another process reads the same file


def test_expired_revocations_are_dropped_when_the_list_is_rewritten(tmp_path):
    store = FileJobStore(tmp_path)
    store.revoke("old", int(time.time()) - 10)
    store.revoke("new", int(time.time()) + 600)
    assert set(json.loads(store.revoked.read_text())["revoked"]) == {"new"}


@pytest.mark.parametrize("text", ["{", '{"version": 2}', '{"version": 1, "revoked": []}'])
def test_an_unreadable_list_fails_closed(tmp_path, text):
    store = FileJobStore(tmp_path)
    store.directory.mkdir()
    store.revoked.write_text(text)
    with pytest.raises(JobStoreUnavailable):
        store.is_revoked("j1")


def test_records_hold_no_token():
    assert set(_record().to_json()) == {"jti", "subject", "scopes", "issued_at", "exp"}
