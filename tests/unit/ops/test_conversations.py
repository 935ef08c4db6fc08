from regauth.ops.conversations import Conversations
from regauth.ops.conversations import new_id
from tests.unit.helpers import FakeClock

A = "repository:a:pull"
B = "repository:b:pull,push"


def test_new_ids_are_random_hex():
    ids = {new_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_token_request_joins_the_challenge_of_the_same_client():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("10.0.0.1", [A])
    assert conv.token_requested("10.0.0.1", [A]) == cid


def test_token_request_for_a_superset_joins_the_challenge():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("10.0.0.1", [A])
    assert conv.token_requested("10.0.0.1", [A, B]) == cid


def test_token_request_for_fewer_scopes_starts_a_new_conversation():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("10.0.0.1", [A, B])
    other = conv.token_requested("10.0.0.1", [A])
    assert other != cid


def test_a_different_client_gets_a_new_id():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("10.0.0.1", [A])
    other = conv.token_requested("10.0.0.2", [A])
    assert other != cid
    assert len(other) == 16


def test_the_best_matching_challenge_wins():
    conv = Conversations(clock=FakeClock())
    ping = conv.challenged("c", [])
    only_a = conv.challenged("c", [A])
    both = conv.challenged("c", [A, B])
    assert conv.token_requested("c", [A, B]) == both
    assert conv.token_requested("c", [A]) == only_a
    assert conv.token_requested("c", ["repository:z:pull"]) == ping


def test_an_exact_match_ends_the_search_at_the_latest_challenge():
    conv = Conversations(clock=FakeClock())
    conv.challenged("c", [A])
    latest = conv.challenged("c", [A])
    assert conv.token_requested("c", [A]) == latest


def test_ping_challenge_without_scope_links_a_later_token_request():
    conv = Conversations(clock=FakeClock())
    ping = conv.challenged("10.0.0.1", [])
    assert conv.token_requested("10.0.0.1", [A, B]) == ping
    assert conv.token_requested("10.0.0.1", []) == ping


def test_a_ping_challenge_links_only_a_token_request_that_follows_soon():
    # skopeo pinging /v2/ anonymously, then ctr asking for a token minutes later from the
    # same host: two conversations, not one.
    clock = FakeClock()
    conv = Conversations(clock=clock)
    ping = conv.challenged("10.0.0.1", [])
    clock.advance(conv.ping_window + 1)
    assert conv.token_requested("10.0.0.1", [A]) != ping


def test_challenge_may_continue_an_existing_conversation():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("c", [])
    assert conv.challenged("c", [A], conversation=cid) == cid
    assert conv.token_requested("c", [A]) == cid


def test_jti_lookup():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("c", [A])
    conv.token_issued("jti-1", cid)
    assert conv.for_token("jti-1") == cid
    assert conv.for_token("jti-unknown") is None
    assert conv.for_token(None) is None
    assert conv.for_token("") is None


def test_old_challenges_are_forgotten():
    clock = FakeClock()
    conv = Conversations(window=300, clock=clock)
    cid = conv.challenged("c", [A])
    clock.advance(300)
    assert conv.token_requested("c", [A]) == cid  # exactly at the edge: still known
    clock.advance(1)
    assert conv.token_requested("c", [A]) != cid


def test_memory_is_bounded():
    conv = Conversations(max_entries=3, clock=FakeClock())
    first = conv.challenged("c0", [A])
    for i in range(1, 6):
        conv.challenged(f"c{i}", [A])
    conv.token_requested("c5", [A])  # triggers expiry
    assert len(conv._challenges) == 3
    assert conv.token_requested("c0", [A]) != first
    for i in range(5):
        conv.token_issued(f"jti-{i}", "conv")
    assert conv.for_token("jti-0") is None
    assert conv.for_token("jti-4") == "conv"


def test_two_accounts_behind_one_address_are_two_conversations():
    conv = Conversations(clock=FakeClock())
    scope = ["repository:teams/web/app:pull,push"]
    first = conv.challenged("203.0.113.7", scope)
    second = conv.challenged("203.0.113.7", scope)  # another client behind the same NAT
    alice = conv.token_requested("203.0.113.7", scope, "alice")
    bob = conv.token_requested("203.0.113.7", scope, "bob")
    assert alice == second  # the latest matching challenge, now alice's
    assert bob == first  # not alice's: the other unbound challenge
    carol = conv.token_requested("203.0.113.7", scope, "carol")
    assert carol not in (alice, bob)  # no challenge of nobody's left: a conversation of its own
    assert conv.token_requested("203.0.113.7", scope, "alice") == alice


def test_a_refused_login_does_not_bind_a_conversation():
    conv = Conversations(clock=FakeClock())
    cid = conv.challenged("10.0.0.1", ["repository:a:pull"])
    assert conv.token_requested("10.0.0.1", ["repository:a:pull"], None) == cid
    assert conv.token_requested("10.0.0.1", ["repository:a:pull"], "alice") == cid


def test_a_challenge_to_a_token_holder_belongs_to_that_account():
    conv = Conversations(clock=FakeClock())
    cid = conv.token_requested("10.0.0.1", ["repository:a:pull"], "alice")
    conv.token_issued("jti-a", cid, "alice")
    assert conv.identity_of_token("jti-a") == "alice" and conv.identity_of_token("x") is None
    again = conv.challenged(
        "10.0.0.1",
        ["repository:a:pull,push"],
        conv.for_token("jti-a"),
        conv.identity_of_token("jti-a"),
    )
    assert again == cid
    assert conv.token_requested("10.0.0.1", ["repository:a:pull,push"], "bob") != cid
    assert conv.token_requested("10.0.0.1", ["repository:a:pull,push"], "alice") == cid
