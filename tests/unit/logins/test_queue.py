"""The login queue (regauth.logins.queue), step by step and in simulated time: admission per
source and per lane, round robin, the global bound with eviction, the known lane.

No threads: a test calls submit/take/finish the way mitm/login_pool.py does, and
`simulate` plays a whole attack on a fake clock with jobs of a fixed bcrypt time.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from regauth.logins.queue import MAX_WAITING
from regauth.logins.queue import PER_SOURCE
from regauth.logins.queue import QUEUE_FULL
from regauth.logins.queue import SOURCE_BUSY
from regauth.logins.queue import WORKERS
from regauth.logins.queue import FairQueue
from regauth.logins.queue import Refusal

BCRYPT = 0.23  # seconds per check, as measured in issue 20 (cost 12)


def _drain(queue: FairQueue[str]) -> list[str]:
    """Run every job to completion, one at a time: the order the queue hands them out."""
    order = []
    while (taken := queue.take()) is not None:
        order.append(taken.job)
        queue.finish(taken)
    return order


def test_sources_take_turns_one_job_each():
    queue: FairQueue[str] = FairQueue(workers=1, per_source=3, max_waiting=100)
    for job in ("a1", "a2", "a3", "b1", "b2", "c1"):
        assert queue.submit(job[0], job).admitted
    assert _drain(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_source_joining_late_waits_one_job_of_each_source_ahead():
    queue: FairQueue[str] = FairQueue(workers=1, per_source=4, max_waiting=100)
    for job in ("a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"):
        queue.submit(job[0], job)
    first = queue.take()
    assert first is not None and first.job == "a1"
    queue.submit("z", "z1")  # the correct password, arriving during the flood
    queue.finish(first)
    assert _drain(queue) == ["b1", "a2", "z1", "b2", "a3", "b3", "a4", "b4"]


def test_per_source_cap_counts_running_and_waiting_jobs_and_refuses_at_once():
    queue: FairQueue[str] = FairQueue(workers=2, per_source=2, max_waiting=100)
    assert queue.submit("a", "a1").admitted
    running = queue.take()
    assert queue.submit("a", "a2").admitted
    refused = queue.submit("a", "a3")
    assert refused.refused == Refusal(SOURCE_BUSY) and refused.refused.retry_after == 1
    assert "from this network" in refused.refused.message
    assert queue.submit("b", "b1").admitted  # another network is not affected
    assert running is not None
    queue.finish(running)
    assert queue.submit("a", "a3").admitted  # a place became free
    assert queue.submit("a", "a4").refused is not None


def test_no_more_than_workers_run_at_once():
    queue: FairQueue[str] = FairQueue(workers=2, per_source=10, max_waiting=100)
    for i in range(5):
        queue.submit("a", f"a{i}")
    first, second = queue.take(), queue.take()
    assert first is not None and second is not None
    assert queue.take() is None and queue.running == 2 and queue.waiting == 3
    queue.finish(first)
    assert queue.take() is not None and queue.take() is None


def test_a_full_lane_makes_room_from_the_source_with_the_most_waiting():
    queue: FairQueue[str] = FairQueue(workers=1, per_source=10, max_waiting=4)
    for job in ("a1", "a2", "a3", "b1"):
        queue.submit(job[0], job)
    admission = queue.submit("c", "c1")  # full: a has 3 waiting, c none
    assert admission.admitted and admission.evicted == ["a3"]
    admission = queue.submit("d", "d1")  # a has 2, d none: a gives its newest again
    assert admission.admitted and admission.evicted == ["a2"]
    # Now every source waits with one job: nobody has two more than a newcomer.
    full = queue.submit("e", "e1")
    assert full.refused == Refusal(QUEUE_FULL) and full.evicted == []
    assert "from this network" not in full.refused.message
    # A source with one waiting job never loses it to a source with more.
    assert queue.submit("b", "b2").refused == Refusal(QUEUE_FULL)
    assert _drain(queue) == ["a1", "b1", "c1", "d1"]


def test_known_pairs_have_a_lane_of_their_own_served_first():
    queue: FairQueue[str] = FairQueue(workers=1, per_source=2, max_waiting=2)
    for job in ("a1", "a2", "b1"):
        queue.submit(job[0], job)
    assert queue.submit("c", "c1").refused == Refusal(QUEUE_FULL)
    # The same network in the known lane: its own cap and budget, and it goes first.
    assert queue.submit("a", "k1", known=True).admitted
    assert queue.submit("a", "k2", known=True).admitted
    assert queue.submit("a", "k3", known=True).refused == Refusal(SOURCE_BUSY)
    assert _drain(queue) == ["k1", "k2", "a1", "b1"]


def test_a_withdrawn_job_leaves_no_trace():
    queue: FairQueue[str] = FairQueue(workers=1, per_source=2, max_waiting=10)
    queue.submit("a", "a1")
    queue.submit("a", "a2")
    queue.submit("b", "b1")
    assert queue.withdraw("a", "a1") and not queue.withdraw("a", "a1")
    assert not queue.withdraw("a", "a2", known=True)  # not in that lane
    assert queue.waiting == 2
    assert _drain(queue) == ["a2", "b1"]
    assert queue.withdraw("b", "b1") is False  # ran already


def test_bounds_below_one_are_refused():
    with pytest.raises(ValueError):
        FairQueue(workers=0)


# --- the attack of issue 20, in simulated time ------------------------------------------------


@dataclass
class Outcome:
    admitted: bool
    start: float | None = None
    end: float | None = None


def simulate(
    queue: FairQueue[str], arrivals: list[tuple[float, str, str, bool]], seconds: float = BCRYPT
) -> dict[str, Outcome]:
    """Play `arrivals` (time, source, job name, known) with `queue.workers` workers that each
    take `seconds` per job, on a fake clock; the outcome of every job."""
    outcomes: dict[str, Outcome] = {}
    events: list[tuple[float, int, str, object]] = []
    for n, arrival in enumerate(arrivals):
        heapq.heappush(events, (arrival[0], n, "arrive", arrival))
    n = len(arrivals)
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            _, source, name, known = payload  # type: ignore[misc]
            admission = queue.submit(source, name, known)
            outcomes[name] = Outcome(admission.admitted)
            for evicted in admission.evicted:
                outcomes[evicted].admitted = False
        else:
            queue.finish(payload)  # type: ignore[arg-type]
            outcomes[payload.job].end = now  # type: ignore[attr-defined]
        while (taken := queue.take()) is not None:
            outcomes[taken.job].start = now
            n += 1
            heapq.heappush(events, (now + seconds, n, "finish", taken))
    return outcomes


def _flood(
    networks: int, per_network: int, gap: float = 1e-4
) -> list[tuple[float, str, str, bool]]:
    """`per_network` guesses from each network, round after round, `gap` seconds apart."""
    return [
        ((i * networks + k) * gap, f"net{k}", f"net{k}-{i}", False)
        for i in range(per_network)
        for k in range(networks)
    ]


def test_the_issue_20_flood_no_longer_delays_a_correct_password():
    # 30 concurrent wrong passwords from each of 8 networks, then the real client's login.
    arrivals = [*_flood(8, 30), (0.5, "ci-net", "ci", False)]
    outcomes = simulate(FairQueue(), arrivals)
    ci = outcomes["ci"]
    assert ci.admitted and ci.start is not None
    waited = ci.start - 0.5
    # Behind it: at most one job of each of the 8 networks and what was running, 2 workers.
    bound = (8 / WORKERS + 1) * BCRYPT
    print(
        f"\nsimulated wait of the correct password: {waited:.2f} s (bound {bound:.2f} s; "
        f"a single FIFO: {240 / WORKERS * BCRYPT:.1f} s)"
    )
    assert waited <= bound
    refused = sum(not o.admitted for o in outcomes.values())
    assert refused == 8 * (30 - PER_SOURCE)  # refused at once, not queued


def test_a_new_network_waits_at_most_one_job_of_each_waiting_network():
    # 31 networks with 4 guesses each: more than the lane holds, so the biggest give way.
    arrivals = [*_flood(31, 4), (0.5, "new-net", "newcomer", False)]
    outcomes = simulate(FairQueue(), arrivals)
    newcomer = outcomes["newcomer"]
    assert newcomer.admitted and newcomer.start is not None
    bound = (MAX_WAITING / WORKERS + 1) * BCRYPT
    print(
        f"\nsimulated wait behind 31 networks: {newcomer.start - 0.5:.2f} s (bound {bound:.2f} s)"
    )
    assert newcomer.start - 0.5 <= bound


def test_when_a_thousand_networks_fill_the_lane_a_known_client_still_goes_first():
    # 1,000 IPv6 /64s with 4 guesses each, sent over 2 s: the lane stays full of single
    # jobs, every place a finished job frees is taken by the next guess within a millisecond.
    arrivals = [
        *_flood(1000, 4, gap=5e-4),
        (1.0, "new-net", "newcomer", False),
        (1.0, "ci-net", "ci", True),
    ]
    outcomes = simulate(FairQueue(), arrivals)
    assert not outcomes["newcomer"].admitted  # refused at once (429, Retry-After: 1)
    ci = outcomes["ci"]
    assert ci.start is not None and ci.start - 1.0 <= BCRYPT  # only what was running


# --- properties -------------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("take"), st.just(0), st.just(False)),
        st.tuples(st.just("finish"), st.integers(0, 10), st.just(False)),
        st.tuples(st.just("withdraw"), st.integers(0, 30), st.booleans()),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=_OPS, workers=st.integers(1, 3), per_source=st.integers(1, 4), max_waiting=st.integers(1, 8)
)
def test_bounds_hold_and_no_source_waits_behind_two_jobs_of_another(
    ops, workers, per_source, max_waiting
):
    queue: FairQueue[int] = FairQueue(workers, per_source, max_waiting)
    waiting: dict[tuple[bool, int], deque[int]] = {}
    running: list = []
    # Per lane and source with a job at the head of its queue: how many jobs each other
    # source of the lane started since it got there.
    overtaken: dict[tuple[bool, int], Counter[int]] = {}
    next_job = 0
    for op, arg, known in ops:
        if op == "submit":
            next_job += 1
            before = {k: len(v) for k, v in waiting.items()}
            admission = queue.submit(arg, next_job, known)
            for evicted in admission.evicted:
                (lane_source,) = [k for k, v in waiting.items() if evicted in v]
                assert lane_source[0] == known
                # Only a source with at least two more waiting than the newcomer loses one,
                # and always its newest job.
                assert before[lane_source] >= before.get((known, arg), 0) + 2
                assert waiting[lane_source][-1] == evicted
                waiting[lane_source].pop()
                if not waiting[lane_source]:
                    del waiting[lane_source]
                    overtaken.pop(lane_source, None)
            if admission.admitted:
                queue_of = waiting.setdefault((known, arg), deque())
                if not queue_of:
                    overtaken[(known, arg)] = Counter()
                queue_of.append(next_job)
            else:
                assert admission.refused is not None
                admitted = len(waiting.get((known, arg), ())) + sum(
                    1 for t in running if (t.known, t.source) == (known, arg)
                )
                assert admission.refused.reason == QUEUE_FULL or admitted >= per_source
        elif op == "take":
            taken = queue.take()
            if taken is None:
                assert len(running) >= workers or not waiting
                continue
            lane_source = (taken.known, taken.source)
            # The known lane first.
            assert taken.known or not any(k for k, _ in waiting)
            assert waiting[lane_source][0] == taken.job
            waiting[lane_source].popleft()
            for other, counts in overtaken.items():
                if other != lane_source and other[0] == taken.known:
                    counts[taken.source] += 1
                    assert counts[taken.source] <= 1, (other, taken.source)
            if waiting[lane_source]:
                overtaken[lane_source] = Counter()
            else:
                del waiting[lane_source]
                del overtaken[lane_source]
            running.append(taken)
        elif op == "finish" and running:
            queue.finish(running.pop(arg % len(running)))
        elif op == "withdraw":
            candidates = [(k, j) for k, v in waiting.items() for j in v if k[0] == known]
            if candidates:
                lane_source, job = candidates[arg % len(candidates)]
                assert queue.withdraw(lane_source[1], job, known)
                waiting[lane_source].remove(job)
                if not waiting[lane_source]:
                    del waiting[lane_source]
                    del overtaken[lane_source]
        assert queue.running == len(running) <= workers
        assert queue.waiting == sum(len(v) for v in waiting.values())
        for lane in (True, False):
            assert sum(len(v) for k, v in waiting.items() if k[0] == lane) <= max_waiting
        for (lane, source), jobs in waiting.items():
            assert (
                len(jobs) + sum(1 for t in running if (t.known, t.source) == (lane, source))
                <= per_source
            )
