"""Issue 20 item 7 against a real regauth and a real registry: a flood of wrong passwords from
8 networks must not make a correct password wait behind the attacker's guesses.

Before the login queue, 30 concurrent wrong-password logins from each of 8 networks (240
bcrypt checks in one FIFO behind two threads) held a correct login for 27.8 s. Now each
network gets 4 places (the others are refused at once with 429, not counted as failed logins)
and networks take turns, so the correct login waits for at most one guess of each network.

The accounts' hashes have bcrypt cost 11 (0.16 s per check on this machine when idle, the
cost closest to the issue's 0.23 s; the other tests use 4). The wait is bounded twice: in
guesses (how many of the attackers' checks finished while the correct login waited: the
design's bound, no margin needed) and in seconds (that bound times the time one check took in
regauth during the same flood, doubled: the machine is shared). The measured numbers are
printed; bench/login_flood.py prints the same measurements as a table.
"""

from __future__ import annotations

import ssl
import statistics
import time
from collections import Counter

import bcrypt
import pytest

from regauth.logins.queue import PER_SOURCE
from regauth.logins.queue import WORKERS
from tests.support.login_flood import Flood
from tests.support.login_flood import connect
from tests.support.login_flood import percentile
from tests.support.login_flood import push_image
from tests.support.login_flood import timed_token
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.policies import policy_text

pytestmark = pytest.mark.integration

COST = 11
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 10)]  # 8 networks
PER_ATTACKER = 30
LEGIT = "127.0.0.10"
SCOPE = "repository:demo/app:pull"


def _bcrypt_seconds(cost: int) -> float:
    hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(cost))
    samples = []
    for _ in range(3):
        started = time.monotonic()
        bcrypt.checkpw(b"y", hashed)
        samples.append(time.monotonic() - started)
    return statistics.median(samples)


def test_a_flood_of_wrong_passwords_does_not_starve_a_correct_one(
    write_policy, make_registry, make_proxy
):
    hashes = {
        name: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(COST)).decode()
        for name, pw in PASSWORDS.items()
    }
    registry = make_registry()
    proxy = make_proxy(write_policy(text=policy_text(hashes)), registry.url)
    idle_check = _bcrypt_seconds(COST)
    legit = connect(proxy.port, ssl.create_default_context(cafile=str(proxy.ca)), LEGIT)
    # Idle: one uncached login (alice: ci's first login must be the one under attack).
    idle = timed_token(legit, SERVICE, SCOPE, ("alice", PASSWORDS["alice"]))
    assert idle.status == 200, idle.body

    flood = Flood(proxy.port, proxy.ca, SERVICE, ATTACKERS, PER_ATTACKER, SCOPE)
    flood.start()
    time.sleep(0.5)  # all 240 guesses have reached regauth
    first = timed_token(legit, SERVICE, SCOPE, ("ci", PASSWORDS["ci"]))
    assert first.status == 200, first.body
    tokens = [first.seconds]
    push = push_image(legit, SERVICE, ("ci", PASSWORDS["ci"]), "demo/flood", "1")
    while flood.running:
        answer = timed_token(legit, SERVICE, SCOPE, ("ci", PASSWORDS["ci"]))
        assert answer.status == 200
        tokens.append(answer.seconds)
    result = flood.join()
    legit.close()

    statuses = result.statuses
    # Behind the correct login: the checks running when it came (2), one guess of each of
    # the 8 networks, and up to two per thread finishing around it (while regauth's loop
    # reads it, and while its own check runs: check times vary twofold on a loaded machine).
    # Counted from the attackers' answers, so the machine's speed does not matter; before
    # the login queue it was all 240.
    overtook = result.between(first.started, first.ended, 401)
    most = len(ATTACKERS) + 3 * WORKERS
    # The same bound in seconds, with the time one check took in regauth during this very
    # flood (the machine is shared: a check took 0.16-1.5 s in different runs), doubled.
    check = result.seconds * WORKERS / (statuses[401] + 1)  # the guesses and ci's login
    bound = 2 * (len(ATTACKERS) / WORKERS + 2) * check
    print(
        f"\nbcrypt cost {COST}: {idle_check:.3f} s per check idle, {check:.3f} s in regauth "
        f"during the flood; legitimate login idle {idle.seconds:.2f} s, under attack "
        f"{first.seconds:.2f} s behind {overtook} guesses (bounds {bound:.2f} s, {most} "
        "guesses; before the login queue: 27.8 s behind 240)"
    )
    print(
        f"legitimate client during the attack: {len(tokens)} token requests, p50 "
        f"{percentile(tokens, 0.5) * 1000:.0f} ms, p99 {percentile(tokens, 0.99) * 1000:.0f} "
        f"ms; one push (token, 2 blobs, manifest, read back) {push:.2f} s"
    )
    print(
        f"attackers: {dict(statuses)} in {result.seconds:.1f} s; per network: "
        + ", ".join(f"{s}: {dict(c)}" for s, c in result.by_source.items())
    )
    assert overtook <= most
    assert first.seconds < bound
    assert percentile(tokens, 0.99) < bound

    # Each network got its few places and was refused the rest at once.
    assert set(statuses) <= {401, 429}
    for source, counts in result.by_source.items():
        assert counts[429] >= PER_ATTACKER - 2 * PER_SOURCE, (source, counts)
    # The refusals are 429 "login queue" in the exchange log and count no failed login; every
    # 401 is a counted one.
    records = [
        r
        for r in proxy.records()
        if r["kind"] == "token" and r["client"].split(":")[0] in ATTACKERS
    ]
    assert len(records) == len(ATTACKERS) * PER_ATTACKER
    refused = [r for r in records if r["status"] == 429]
    assert len(refused) == statuses[429]
    assert {r["token_response"]["rate_limited"] for r in refused} == {"login queue"}
    assert not any(r["token_response"]["failed_login_counted"] for r in refused)
    counted = Counter(r["status"] for r in records if r["token_response"]["failed_login_counted"])
    assert counted == Counter({401: statuses[401]})
