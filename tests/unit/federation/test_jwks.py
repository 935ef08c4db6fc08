"""An issuer's JWK Set (federation/jwks.py): only asymmetric signing keys of an allowed
algorithm are kept (no `oct`, no `use: enc`), the document is bounded in size and nesting; the
cache refetches on an unknown kid at most once per interval, refreshes after `max_age`, keeps
the last good keys when a fetch fails and reports it in `status()`; `IssuerKeySets` keeps one
cache per issuer across policy reloads. A FakeClock drives every time decision."""

from __future__ import annotations

import base64
import json

import pytest

from regauth.federation.jwks import MAX_DEPTH
from regauth.federation.jwks import MAX_JWKS_BYTES
from regauth.federation.jwks import IssuerKeySets
from regauth.federation.jwks import JwksCache
from regauth.federation.jwks import JwksError
from regauth.federation.jwks import parse_jwks
from regauth.policy.model import FederatedIssuer
from tests.unit.federation.idp import AUDIENCE
from tests.unit.federation.idp import ISSUER
from tests.unit.federation.idp import Idp
from tests.unit.helpers import FakeClock

BOTH = ("RS256", "ES256")


@pytest.fixture(scope="module")
def idp() -> Idp:
    idp = Idp()
    idp.add_key("RS256")
    idp.add_key("ES256")
    return idp


def _entries(idp: Idp) -> list[dict]:
    return json.loads(idp.jwks())["keys"]


def _doc(*entries: object, **extra: object) -> bytes:
    return json.dumps({"keys": list(entries), **extra}).encode()


def _oct(kid: str = "hmac") -> dict:
    return {"kty": "oct", "kid": kid, "k": base64.urlsafe_b64encode(b"s" * 32).decode()}


# -- parse_jwks ------------------------------------------------------------------------------


def test_rsa_and_ec_keys_are_kept_by_kid(idp):
    rsa_kid, ec_kid = list(idp.keys)
    keyset = parse_jwks(idp.jwks(), BOTH)
    assert set(keyset.keys) == {rsa_kid, ec_kid}
    assert keyset.find(rsa_kid, "RS256") is not None
    assert keyset.find(ec_kid, "ES256") is not None
    # A kid of the wrong key type for the token's alg finds nothing (key confusion).
    assert keyset.find(ec_kid, "RS256") is None
    assert keyset.find(rsa_kid, "ES256") is None
    assert keyset.find("nope", "RS256") is None


def test_only_the_key_types_of_allowed_algorithms_are_kept(idp):
    rsa_kid, _ = list(idp.keys)
    assert set(parse_jwks(idp.jwks(), ("RS256",)).keys) == {rsa_kid}


def test_symmetric_and_encryption_keys_are_ignored(idp):
    rsa, ec = _entries(idp)
    enc = {**ec, "kid": "enc", "use": "enc"}
    keyset = parse_jwks(_doc(_oct(), enc, rsa), BOTH)
    assert set(keyset.keys) == {rsa["kid"]}
    with pytest.raises(JwksError, match="no usable signing key"):
        parse_jwks(_doc(_oct(), enc), BOTH)
    # An `oct` key even with an HMAC alg the caller (wrongly) passed stays out.
    with pytest.raises(JwksError, match="no usable signing key"):
        parse_jwks(_doc({**_oct(), "alg": "HS256"}), ("HS256", *BOTH))


def test_an_entry_whose_alg_is_not_allowed_is_ignored(idp):
    rsa, _ = _entries(idp)
    keyset = parse_jwks(_doc({**rsa, "alg": "RS512", "kid": "a"}, {**rsa, "kid": "b"}), BOTH)
    assert set(keyset.keys) == {"b"}


def test_malformed_entries_and_duplicate_kids_are_skipped(idp):
    rsa, ec = _entries(idp)
    keyset = parse_jwks(
        _doc(
            "not an object",
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {**rsa, "kid": 7},
            {**rsa, "kid": "k" * 257},
            {**rsa, "kid": "same"},
            {**ec, "kid": "same"},  # the first one with a kid wins
        ),
        BOTH,
    )
    assert list(keyset.keys) == ["same"]
    assert str(keyset.keys["same"].key_type) == "RSA"


def test_a_key_without_kid_is_found_for_a_token_without_kid(idp):
    rsa, ec = _entries(idp)
    del rsa["kid"]
    keyset = parse_jwks(_doc(rsa, ec), BOTH)
    assert keyset.find(None, "RS256") is keyset.keys[""]
    assert keyset.find(None, "ES256") is keyset.keys[ec["kid"]]  # one EC key: it is the one
    two_rsa = parse_jwks(_doc(rsa, {**rsa, "kid": "other"}), BOTH)
    assert two_rsa.find(None, "RS256") is None  # ambiguous: refused


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502</html>", "not JSON"),
        (b'{"keys": [], "keys": []}', "not JSON"),  # duplicate member
        (b"[]", "no `keys` list"),
        (b'{"keys": {}}', "no `keys` list"),
        (b'{"keys": []}', "no usable signing key"),
    ],
)
def test_documents_that_are_not_key_sets(body, message):
    with pytest.raises(JwksError, match=message):
        parse_jwks(body, BOTH)


def test_size_bound(idp):
    rsa, _ = _entries(idp)
    body = _doc(rsa)
    head = body[:-1] + b',"pad":"'
    padded = head + b"x" * (MAX_JWKS_BYTES - len(head) - 2) + b'"}'
    assert len(padded) == MAX_JWKS_BYTES
    assert set(parse_jwks(padded, BOTH).keys) == {rsa["kid"]}
    over = padded[:-2] + b'x"}'
    assert len(over) == MAX_JWKS_BYTES + 1
    with pytest.raises(JwksError, match="larger than 262144 bytes"):
        parse_jwks(over, BOTH)


def test_nesting_bound(idp):
    rsa, _ = _entries(idp)
    # {"keys": [ {...,"x": [[...]]} ]}: the object, the list and the entry are 3 levels.
    allowed = MAX_DEPTH - 3
    deep_ok = {**rsa, "x": json.loads("[" * allowed + "]" * allowed)}
    assert set(parse_jwks(_doc(deep_ok), BOTH).keys) == {rsa["kid"]}
    deeper = {**rsa, "x": json.loads("[" * (allowed + 1) + "]" * (allowed + 1))}
    with pytest.raises(JwksError, match="nested deeper"):
        parse_jwks(_doc(deeper), BOTH)


# -- JwksCache ----------------------------------------------------------------------------------


class Source:
    """A fetch callable: the idp's JWKS, or an error while `failing` is set."""

    def __init__(self, idp: Idp) -> None:
        self.idp = idp
        self.calls = 0
        self.failing: Exception | None = None

    def __call__(self) -> bytes:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        return self.idp.jwks()


def _cache(
    source: Source, clock: FakeClock, refetch_interval: float = 60, max_age: float = 3600
) -> JwksCache:
    return JwksCache("https://idp.test/jwks", source, BOTH, refetch_interval, max_age, clock=clock)


def test_the_first_find_fetches_and_later_ones_use_the_cache(idp):
    source, clock = Source(idp), FakeClock()
    cache = _cache(source, clock)
    kid = next(iter(idp.keys))
    for _ in range(5):
        assert cache.find(kid, "RS256") is not None
        clock.advance(10)
    assert source.calls == 1


def test_an_unknown_kid_refetches_at_most_once_per_interval(idp):
    source, clock = Source(idp), FakeClock()
    cache = _cache(source, clock, refetch_interval=60, max_age=3600)
    cache.refresh()
    assert source.calls == 1
    for i in range(20):  # a flood of random kids
        assert cache.find(f"random-{i}", "RS256") is None
        clock.advance(1)
    assert source.calls == 2  # one refetch for the whole flood
    clock.advance(40)  # 60 s after the refetch
    assert cache.find("random-x", "RS256") is None
    assert source.calls == 3
    assert cache.find("random-y", "RS256") is None
    assert source.calls == 3


def test_a_rotated_key_is_found_by_the_refetch_its_kid_causes(idp):
    source, clock = Source(Idp()), FakeClock()
    source.idp.add_key("ES256")
    cache = _cache(source, clock)
    cache.refresh()
    new = source.idp.add_key("ES256")  # the issuer rotates
    clock.advance(5)
    assert cache.find(new, "ES256") is not None
    assert source.calls == 2


def test_the_key_set_is_refreshed_after_max_age(idp):
    source, clock = Source(idp), FakeClock()
    cache = _cache(source, clock, refetch_interval=60, max_age=600)
    kid = next(iter(idp.keys))
    cache.find(kid, "RS256")
    clock.advance(599)
    cache.find(kid, "RS256")
    assert source.calls == 1
    clock.advance(1)
    cache.find(kid, "RS256")
    assert source.calls == 2
    assert cache.fetched_at == clock.now


@pytest.mark.parametrize("error", [JwksError("garbage"), OSError("connection refused")])
def test_a_failed_fetch_keeps_the_last_good_keys_and_says_so(idp, error):
    source, clock = Source(idp), FakeClock()
    cache = _cache(source, clock, refetch_interval=60, max_age=600)
    kid = next(iter(idp.keys))
    cache.refresh()
    good_at = clock.now
    source.failing = error
    clock.advance(600)
    assert cache.find(kid, "RS256") is not None  # fetched (stale), failed, old key used
    assert source.calls == 2
    status = cache.status()
    assert status.keys == tuple(sorted(idp.keys))
    assert status.fetched_at == good_at
    assert status.last_error == str(error)
    assert (status.fetches, status.failures) == (2, 1)
    # While it keeps failing, a stale set is retried once per refetch interval, not per login.
    for _ in range(20):  # 100 s of logins: one retry, 60 s after the failure
        cache.find(kid, "RS256")
        clock.advance(5)
    assert source.calls == 3
    source.failing = None
    clock.advance(20)  # 60 s after that retry
    cache.find(kid, "RS256")
    status = cache.status()
    assert status.last_error is None and status.fetched_at == clock.now
    assert (status.fetches, status.failures) == (4, 2)


def test_no_keys_at_all_when_the_first_fetch_fails(idp):
    source, clock = Source(idp), FakeClock()
    source.failing = JwksError("https://idp.test/jwks: answered 500")
    cache = _cache(source, clock)
    assert cache.find("any", "RS256") is None
    status = cache.status()
    assert status.keys == () and status.fetched_at is None
    assert status.last_error == "https://idp.test/jwks: answered 500"
    assert status.source == "https://idp.test/jwks"


def test_error_messages_are_bounded(idp):
    source, clock = Source(idp), FakeClock()
    source.failing = JwksError("x" * 5000)
    cache = _cache(source, clock)
    cache.refresh()
    assert cache.status().last_error == "x" * 300


# -- IssuerKeySets ------------------------------------------------------------------------------


def _issuer(name: str = "github", jwks_uri: str = "https://idp.test/jwks", **kw) -> FederatedIssuer:
    fields: dict = {
        "name": name,
        "issuer": kw.pop("issuer", ISSUER),
        "audience": AUDIENCE,
        "jwks_uri": jwks_uri,
        "jwks_file": None,
        "ca_file": None,
        "algorithms": BOTH,
        "leeway": 60,
        "subject": "{sub}",
        "groups_claim": None,
        "max_token_age": 3600,
        "line": 1,
    }
    fields.update(kw)
    return FederatedIssuer(**fields)


def test_issuer_key_sets_survive_reloads_that_keep_the_source(idp):
    made: list[str] = []

    def make_fetch(issuer: FederatedIssuer) -> Source:
        made.append(issuer.name)
        return Source(idp)

    sets = IssuerKeySets(make_fetch, clock=FakeClock())
    a, b = _issuer(), _issuer("gitlab", issuer="https://gitlab.test")
    new = sets.sync((a, b))
    assert [c.source for c in new] == [a.source, b.source] and made == ["github", "gitlab"]
    new[0].refresh()
    # Reloaded, same sources: the same caches; only the unfetched one is still to fetch.
    again = sets.sync((_issuer(line=9), b))
    assert again == [new[1]]
    assert sets.finder(a) is new[0]
    assert made == ["github", "gitlab"]
    # Another JWKS URL (or CA, or algorithms): a new cache; the dropped issuer is forgotten.
    moved = _issuer(jwks_uri="https://idp.test/other")
    assert [c.source for c in sets.sync((moved,))] == ["https://idp.test/other"]
    assert list(sets.status()) == [ISSUER]
    assert sets.status()[ISSUER].source == "https://idp.test/other"


def test_a_slow_fetch_holds_no_lookup_that_has_keys(idp) -> None:
    """One fetch at a time, outside the lock: while a rotation fetch hangs, known kids are
    found at once and made-up kids are refused at once (no login worker waits)."""
    import threading
    import time

    release = threading.Event()
    calls = []

    def fetch() -> bytes:
        calls.append(1)
        if len(calls) > 1:
            release.wait(10)
        return idp.jwks()

    clock = FakeClock()
    cache = JwksCache("test", fetch, ("RS256", "ES256"), clock=clock)
    kid = next(iter(idp.keys))
    assert cache.find(kid, "RS256") is not None  # the first fetch
    clock.advance(120)
    slow = threading.Thread(target=cache.find, args=("rotated", "RS256"))
    slow.start()  # an unknown kid: the second fetch, which hangs
    while len(calls) < 2:
        time.sleep(0.01)
    started = time.monotonic()
    assert cache.find(kid, "RS256") is not None
    assert cache.find("made-up", "RS256") is None
    assert time.monotonic() - started < 0.5
    assert len(calls) == 2  # no second fetch while one runs
    release.set()
    slow.join(5)
    assert not slow.is_alive()
