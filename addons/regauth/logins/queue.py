"""Admission and order of the login jobs (bcrypt) across client networks; sans-IO.

Why: bcrypt runs on a small pool (two threads), so whoever queues the most jobs decides how long
everybody else waits. With one FIFO, 240 wrong passwords from 8 networks made a correct one
wait 27.8 s (issue 20). This queue gives every *source* (a client network,
`logins.limits.client_network`) its turn, and refuses at once what would only wait:

- **per source**: at most `per_source` jobs admitted (waiting or running) per source and lane;
  one more is refused at once (`Refusal` "login queue", `Retry-After: 1`). Nothing was
  checked, so a refusal is never a failed login;
- **round robin**: sources take turns, one job per turn: a job that reaches the head of its
  source's queue runs after at most one job of each other source of its lane;
- **global**: at most `max_waiting` jobs wait per lane. A job arriving at a full lane takes the
  place of the newest waiting job of the source with the most waiting jobs, if that source has
  at least two more than the newcomer's (the evicted job is refused like a per-source one);
  otherwise the newcomer is refused ("login queue full"). So a lane refuses newcomers only
  when `max_waiting` sources wait, a source's only waiting job is never taken from it, and an
  admitted newcomer waits for at most (`max_waiting` / `workers` + 1) checks;
- **two lanes**: a job whose pair is *known* (this process saw the account log in from this
  network in the last 24 h, `LoginLimiter.known_here`) waits in a lane of its own, served
  first. An attacker gets there only by guessing that account from a network it logs in
  from (a shared NAT), where the limit per account and network stops it after 5 guesses a
  minute; however many networks flood the other lane, the usual clients wait for the running
  checks only. The lanes have separate sources, caps and budgets;
- at most `workers` jobs run at once (`take` returns None otherwise).

Nothing here runs a job, measures time or takes a lock: the caller (mitm/login_pool.py, on the
event loop) calls `submit` when a login arrives, `take` when a worker may start one and
`finish` when it is done, so every decision can be tested step by step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from dataclasses import field

SOURCE_BUSY = "login queue"
QUEUE_FULL = "login queue full"
RETRY_AFTER = 1  # seconds: a turn of the queue is a few bcrypts

# Defaults (README "Login limits"): two bcrypt threads; four jobs per network and lane (a CI
# host starting pipelines with several accounts at once; identical credentials share one job,
# mitm/login_pool.py); 32 waiting per lane, which bounds a new network's wait to 17 checks
# (4-5 s at cost 12, 0.25-0.3 s per check on a current core).
WORKERS = 2
PER_SOURCE = 4
MAX_WAITING = 32


@dataclass(frozen=True)
class Refusal:
    """Why a job was not admitted (or was evicted), for the 429 and the exchange log."""

    reason: str  # SOURCE_BUSY or QUEUE_FULL
    retry_after: int = RETRY_AFTER

    @property
    def message(self) -> str:
        """The client-facing explanation (the 429's `error_description`)."""
        whose = "from this network " if self.reason == SOURCE_BUSY else ""
        return (
            f"too many logins {whose}are waiting for a password check; retry after "
            f"{self.retry_after} s"
        )


@dataclass
class Admission[T]:
    """The outcome of `submit`: `refused` is None when the job was admitted; `evicted` lists
    waiting jobs (of other submissions) that lost their place to it and must be refused with
    `Refusal(SOURCE_BUSY)`."""

    refused: Refusal | None = None
    evicted: list[T] = field(default_factory=list)

    @property
    def admitted(self) -> bool:
        return self.refused is None


@dataclass(frozen=True)
class Taken[T]:
    """A job handed to a worker by `take`; give it back to `finish` when it is done."""

    job: T
    source: Hashable
    known: bool


@dataclass
class _Lane[T]:
    waiting: dict[Hashable, deque[T]] = field(default_factory=dict)
    running: dict[Hashable, int] = field(default_factory=dict)
    rotation: deque[Hashable] = field(default_factory=deque)  # sources with waiting jobs
    size: int = 0  # waiting jobs

    def admitted(self, source: Hashable) -> int:
        return len(self.waiting.get(source, ())) + self.running.get(source, 0)


class FairQueue[T]:
    """See the module docstring. Not thread-safe: call it from one thread (the event loop).

    Raises ValueError for a bound below 1.
    """

    def __init__(
        self, workers: int = WORKERS, per_source: int = PER_SOURCE, max_waiting: int = MAX_WAITING
    ) -> None:
        if min(workers, per_source, max_waiting) < 1:
            raise ValueError("workers, per_source and max_waiting must be at least 1")
        self.workers = workers
        self.per_source = per_source
        self.max_waiting = max_waiting
        self._lanes: dict[bool, _Lane[T]] = {True: _Lane(), False: _Lane()}
        self.running = 0

    @property
    def waiting(self) -> int:
        """Jobs waiting in both lanes."""
        return sum(lane.size for lane in self._lanes.values())

    def submit(self, source: Hashable, job: T, known: bool = False) -> Admission[T]:
        """Admit `job` from `source` (into the known lane if `known`), or refuse it."""
        lane = self._lanes[known]
        if lane.admitted(source) >= self.per_source:
            return Admission(Refusal(SOURCE_BUSY))
        evicted: list[T] = []
        if lane.size >= self.max_waiting:
            victim = self._victim(lane, len(lane.waiting.get(source, ())))
            if victim is None:
                return Admission(Refusal(QUEUE_FULL))
            evicted.append(self._remove_newest(lane, victim))
        queue = lane.waiting.get(source)
        if queue is None:
            queue = lane.waiting[source] = deque()
            lane.rotation.append(source)  # behind every source already waiting
        queue.append(job)
        lane.size += 1
        return Admission(None, evicted)

    @staticmethod
    def _victim(lane: _Lane[T], newcomer_waiting: int) -> Hashable | None:
        """The source with the most waiting jobs, if it has at least two more than the
        newcomer: after the swap it still has at least as many as the newcomer."""
        best, most = None, newcomer_waiting + 1
        for source in lane.rotation:
            count = len(lane.waiting[source])
            if count > most:
                best, most = source, count
        return best

    @staticmethod
    def _remove_newest(lane: _Lane[T], source: Hashable) -> T:
        queue = lane.waiting[source]
        job = queue.pop()
        lane.size -= 1
        if not queue:
            del lane.waiting[source]
            lane.rotation.remove(source)
        return job

    def take(self) -> Taken[T] | None:
        """The next job to run, if fewer than `workers` run and one waits: the known lane
        first, then the other; within a lane, the source at the head of the rotation, which
        then goes to its back if it has more jobs waiting."""
        if self.running >= self.workers:
            return None
        for known in (True, False):
            lane = self._lanes[known]
            if not lane.rotation:
                continue
            source = lane.rotation.popleft()
            queue = lane.waiting[source]
            job = queue.popleft()
            lane.size -= 1
            if queue:
                lane.rotation.append(source)
            else:
                del lane.waiting[source]
            lane.running[source] = lane.running.get(source, 0) + 1
            self.running += 1
            return Taken(job, source, known)
        return None

    def finish(self, taken: Taken[T]) -> None:
        """A job returned by `take` is done (whatever its outcome). Raises KeyError for a job
        that is not running."""
        lane = self._lanes[taken.known]
        count = lane.running[taken.source] - 1
        if count:
            lane.running[taken.source] = count
        else:
            del lane.running[taken.source]
        self.running -= 1

    def withdraw(self, source: Hashable, job: T, known: bool = False) -> bool:
        """Remove a waiting job (its client is gone); False if it is not waiting (running,
        done, or never admitted)."""
        lane = self._lanes[known]
        queue = lane.waiting.get(source)
        if queue is None:
            return False
        for i, candidate in enumerate(queue):
            if candidate is job:
                del queue[i]
                lane.size -= 1
                if not queue:
                    del lane.waiting[source]
                    lane.rotation.remove(source)
                return True
        return False
