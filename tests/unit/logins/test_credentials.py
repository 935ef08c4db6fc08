import bcrypt
import pytest

from regauth.logins import credentials
from regauth.logins.credentials import AuthenticationFailed
from regauth.logins.credentials import Authenticator
from regauth.logins.credentials import hash_password
from regauth.logins.credentials import is_password_attempt
from regauth.logins.limits import Limit
from regauth.logins.limits import LoginLimiter
from regauth.logins.limits import RateLimited
from regauth.policy.model import Account
from tests.unit.helpers import FakeClock

PASSWORD = "correct horse"


def _hash(password, rounds=4):
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds))


@pytest.fixture(scope="module")
def accounts():
    return {"ci": Account("ci", _hash(PASSWORD)), "alice": Account("alice", _hash("alice-pw"))}


@pytest.fixture
def checkpw_calls(monkeypatch):
    calls = []
    original = bcrypt.checkpw

    def counting(password, hashed):
        calls.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(credentials.bcrypt, "checkpw", counting)
    return calls


def test_correct_password(accounts, checkpw_calls):
    auth = Authenticator()
    assert auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1") is accounts["ci"]
    assert len(checkpw_calls) == 1


def test_cache_hit_avoids_bcrypt(accounts, checkpw_calls):
    auth = Authenticator(clock=FakeClock())
    for _ in range(5):
        assert auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1") is accounts["ci"]
    assert len(checkpw_calls) == 1


def test_cache_entry_expires(accounts, checkpw_calls):
    clock = FakeClock()
    auth = Authenticator(cache_ttl=60, clock=clock)
    auth.authenticate(accounts, "ci", PASSWORD, "c")
    clock.advance(59)
    auth.authenticate(accounts, "ci", PASSWORD, "c")
    assert len(checkpw_calls) == 1
    clock.advance(2)
    auth.authenticate(accounts, "ci", PASSWORD, "c")
    assert len(checkpw_calls) == 2


def test_cache_is_invalidated_by_a_different_stored_hash(accounts, checkpw_calls):
    auth = Authenticator(clock=FakeClock())
    auth.authenticate(accounts, "ci", PASSWORD, "c")
    rehashed = {"ci": Account("ci", _hash(PASSWORD))}  # same password, new salt
    auth.authenticate(rehashed, "ci", PASSWORD, "c")
    assert len(checkpw_calls) == 2
    changed = {"ci": Account("ci", _hash("new password"))}
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(changed, "ci", PASSWORD, "c")
    assert len(checkpw_calls) == 3


def test_cache_does_not_accept_another_password(accounts, checkpw_calls):
    auth = Authenticator(clock=FakeClock())
    auth.authenticate(accounts, "ci", PASSWORD, "c")
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", PASSWORD + "x", "c")
    assert len(checkpw_calls) == 2


def test_cache_is_per_account(accounts, checkpw_calls):
    auth = Authenticator(clock=FakeClock())
    auth.authenticate(accounts, "ci", PASSWORD, "c")
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "alice", PASSWORD, "c")


def test_wrong_password_is_refused(accounts, checkpw_calls):
    with pytest.raises(AuthenticationFailed):
        Authenticator().authenticate(accounts, "ci", "wrong", "c")
    assert len(checkpw_calls) == 1


def test_unknown_user_still_runs_bcrypt(accounts, checkpw_calls):
    auth = Authenticator()
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "mallory", PASSWORD, "c")
    assert len(checkpw_calls) == 1
    # against a dummy of the accounts' cost, not one of the real hashes
    assert checkpw_calls[0] not in {a.password_hash for a in accounts.values()}
    assert checkpw_calls[0].split(b"$")[2] == b"04"


def test_unknown_user_with_no_accounts_at_all(checkpw_calls, monkeypatch):
    # With no accounts the dummy uses the default cost; keep the test fast by faking gensalt.
    gensalt = bcrypt.gensalt
    monkeypatch.setattr(credentials.bcrypt, "gensalt", lambda rounds=12: gensalt(4))
    with pytest.raises(AuthenticationFailed):
        Authenticator().authenticate({}, "nobody", "pw", "c")
    assert len(checkpw_calls) == 1


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("", "pw"),
        ("ci", ""),
        ("ci", "p" * 73),
        ("-ci", "pw"),
        ("ci:x", "pw"),
        ("c" * 65, "pw"),
        ("ci\n", "pw"),
    ],
)
def test_what_can_never_be_valid_costs_no_bcrypt_and_counts_nothing(
    accounts, checkpw_calls, username, password
):
    auth = Authenticator(clock=FakeClock())
    for _ in range(10):
        with pytest.raises(AuthenticationFailed) as e:
            auth.authenticate(accounts, username, password, "c")
        assert e.value.counted is False
    assert checkpw_calls == []
    assert len(auth.limiter.store) == 0
    assert auth.authenticate(accounts, "ci", PASSWORD, "c") is accounts["ci"]


def test_only_names_of_the_policy_grammar_are_password_attempts():
    # One grammar (policy.model.ACCOUNT_NAME_RE): a name the loader refuses never runs bcrypt.
    assert is_password_attempt("ci", b"x") and is_password_attempt("a" * 64, b"x")
    assert not is_password_attempt("", b"x") and not is_password_attempt("a" * 65, b"x")
    assert not is_password_attempt("-ci", b"x")


def test_passwords_longer_than_72_bytes_are_refused_not_truncated(checkpw_calls):
    password = "p" * 72
    accounts = {"ci": Account("ci", _hash(password))}
    auth = Authenticator()
    assert auth.authenticate(accounts, "ci", password, "c") is accounts["ci"]
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", password + "extra", "c")
    # never tried truncated: a password no hash can hold is refused without bcrypt
    assert len(checkpw_calls) == 1


def test_multibyte_password_over_72_bytes_is_refused():
    password = "é" * 36  # 72 bytes
    accounts = {"ci": Account("ci", _hash(password))}
    auth = Authenticator()
    assert auth.authenticate(accounts, "ci", password, "c")
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", password + "é", "c")


def test_hash_password():
    hashed = hash_password("pw", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert bcrypt.checkpw(b"pw", hashed.encode())
    with pytest.raises(ValueError, match="72"):
        hash_password("x" * 73, rounds=4)
    with pytest.raises(ValueError, match="empty"):
        hash_password("", rounds=4)


def _limited(clock, **limits):
    return Authenticator(clock=clock, limiter=LoginLimiter(clock=clock, **limits))


def test_rate_limit_after_repeated_failures(accounts, checkpw_calls):
    clock = FakeClock(1000.0)
    auth = _limited(clock, per_account_network=Limit(3, 60))
    for i in range(3):
        with pytest.raises(AuthenticationFailed) as e:
            auth.authenticate(accounts, "ci", f"wrong{i}", "10.0.0.1")
        assert e.value.counted
        clock.advance(1)
    assert len(checkpw_calls) == 3
    with pytest.raises(RateLimited) as e:
        auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1")  # even the right password
    assert len(checkpw_calls) == 3  # refused before any bcrypt
    # first failure at t=1000, now t=1003: the window closes at t=1060
    assert e.value.retry_after == 58
    assert e.value.limit == "account and network"
    assert "retry after 58 s" in str(e.value)


def test_a_repeated_wrong_password_is_one_guess(accounts, checkpw_calls):
    clock = FakeClock()
    auth = _limited(clock, per_account_network=Limit(2, 60))
    for _ in range(10):  # e.g. containerd: POST grant refused, then the same as GET
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(accounts, "ci", "wrong", "10.0.0.1")
    assert len(checkpw_calls) == 1
    assert auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1") is accounts["ci"]
    clock.advance(61)  # remembered for refused_ttl only
    with pytest.raises(AuthenticationFailed) as e:
        auth.authenticate(accounts, "ci", "wrong", "10.0.0.1")
    assert e.value.counted and len(checkpw_calls) == 3


def test_rate_limit_is_per_account_and_client(accounts):
    clock = FakeClock()
    auth = _limited(clock, per_account_network=Limit(2, 60))
    for i in range(2):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(accounts, "ci", f"wrong{i}", "10.0.0.1")
    with pytest.raises(RateLimited):
        auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1")
    assert auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.2") is accounts["ci"]
    assert auth.authenticate(accounts, "alice", "alice-pw", "10.0.0.1") is accounts["alice"]


def test_rate_limit_window_slides(accounts):
    clock = FakeClock(0.0)
    auth = _limited(clock, per_account_network=Limit(2, 60))
    limiter = auth.limiter
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", "wrong1", "c")
    clock.now = 30.0
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", "wrong2", "c")
    clock.now = 59.5
    with pytest.raises(RateLimited) as e:
        limiter.check("ci", "c")
    assert e.value.retry_after == 1
    clock.now = 60.0  # the failure at t=0 has left the window
    limiter.check("ci", "c")
    assert auth.authenticate(accounts, "ci", PASSWORD, "c") is accounts["ci"]
    clock.now = 89.0
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", "wrong3", "c")
    with pytest.raises(RateLimited):  # failures at t=30 and t=89
        limiter.check("ci", "c")
    clock.now = 90.1
    limiter.check("ci", "c")


def test_unknown_users_are_rate_limited_too(accounts):
    auth = _limited(FakeClock(), per_account_network=Limit(2, 60))
    for i in range(2):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(accounts, "mallory", f"x{i}", "c")
    with pytest.raises(RateLimited):
        auth.authenticate(accounts, "mallory", "x", "c")


def test_failure_table_is_bounded(accounts):
    auth = Authenticator(clock=FakeClock(), max_entries=3)
    for i in range(6):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(accounts, "ci", "wrong", f"10.0.0.{i}")
    assert len(auth._refused) == 1  # the same credential each time
    for i in range(6):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(accounts, "ci", f"wrong{i}", f"10.0.1.{i}")
    assert len(auth._refused) == 3


def test_the_recently_verified_rule_outlasts_every_limit(accounts):
    clock = FakeClock()
    auth = _limited(
        clock, per_account_network=Limit(1, 60), per_network=Limit(1, 60), per_account=Limit(1, 300)
    )
    assert auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1")
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(accounts, "ci", "guess", "10.0.0.1")
    with pytest.raises(RateLimited):
        auth.limiter.check("ci", "10.0.0.1")
    clock.advance(30)
    assert auth.authenticate(accounts, "ci", PASSWORD, "10.0.0.1") is accounts["ci"]


def test_verified_recently_says_when_no_bcrypt_will_run():
    from regauth.logins.credentials import Authenticator
    from regauth.policy.model import Account
    from tests.unit.helpers import FakeClock

    clock = FakeClock()
    account = Account("ci", hash_password("right-one", rounds=4).encode())
    accounts = {"ci": account}
    auth = Authenticator(clock=clock)
    assert not auth.verified_recently(accounts, "ci", "right-one")
    auth.authenticate(accounts, "ci", "right-one", "10.0.0.1")
    assert auth.verified_recently(accounts, "ci", "right-one")
    assert not auth.verified_recently(accounts, "ci", "wrong")
    assert not auth.verified_recently(accounts, "nobody", "right-one")
    clock.advance(auth.cache_ttl - 4)  # within the margin of expiry: treat as not cached
    assert not auth.verified_recently(accounts, "ci", "right-one")
