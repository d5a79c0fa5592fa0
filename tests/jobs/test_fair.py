"""The scheduler's fair order, queue positions and wait estimate, without worker processes."""

import random
from collections import Counter

import pytest

from core.common.config import RunConfig
from core.jobs.scheduler import FairQueue, Job, wait_estimate

CONFIG = RunConfig(steps=2)


class Submitter:
    """Jobs numbered in submission order, as the pool numbers them."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, owner: str) -> Job:
        self.seq += 1
        return Job(id=f"{owner}{self.seq}", owner=owner, config=CONFIG, pool=None, seq=self.seq)


def start_order(queue: FairQueue) -> list[str]:
    order = []
    while (job := queue.pop()) is not None:
        order.append(job.owner)
    return order


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_of_seven_does_not_hold_five_single_runs_behind_it(workers):
    """A queues 7 runs, then B..F one each: with W workers, A's first W runs start at once,
    and every classmate's run starts before A's next one."""
    submit, queue = Submitter(), FairQueue()
    sweep = [submit("A") for _ in range(7)]
    for job in sweep:
        queue.push(job)
    started = [queue.pop() for _ in range(workers)]  # the idle workers take A's first runs
    assert started == sweep[:workers]
    for owner in "BCDEF":
        queue.push(submit(owner))
    assert [job.owner for job in queue.order()] == list("BCDEF") + ["A"] * (7 - workers)
    assert start_order(queue) == list("BCDEF") + ["A"] * (7 - workers)


def test_every_first_run_starts_before_any_second_run():
    """Owners arriving at once with different numbers of runs: every prefix of the start order
    has served each owner who is still waiting within one run of every other."""
    rng = random.Random(7)
    submit, queue = Submitter(), FairQueue()
    wanted = {f"s{i}": rng.randint(1, 7) for i in range(30)}
    jobs = [submit(owner) for owner, n in wanted.items() for _ in range(n)]
    rng.shuffle(jobs)  # submission order mixes the owners
    for job in sorted(jobs, key=lambda job: job.seq):
        queue.push(job)
    served: Counter = Counter()
    for owner in start_order(queue):
        served[owner] += 1
        waiting = [o for o in wanted if served[o] < wanted[o]]
        assert all(served[o] >= served[owner] - 1 for o in waiting)
    assert served == Counter(wanted)


def test_an_owner_returning_later_is_not_credited_for_the_time_away():
    """A ran 5 runs alone earlier; B ran none. Now both queue: B is not owed 5 runs first."""
    submit, queue = Submitter(), FairQueue()
    for _ in range(5):
        queue.push(submit("A"))
        queue.pop()
    for _ in range(4):
        queue.push(submit("B"))
    queue.push(submit("A"))
    assert start_order(queue) == ["B", "B", "A", "B", "B"]


def test_one_owner_alone_is_first_in_first_out():
    submit, queue = Submitter(), FairQueue()
    jobs = [submit("A") for _ in range(5)]
    for job in jobs:
        queue.push(job)
    assert [queue.position(job) for job in jobs] == [1, 2, 3, 4, 5]
    assert [queue.pop() for _ in jobs] == jobs


def test_positions_are_the_start_order():
    rng = random.Random(3)
    submit, queue = Submitter(), FairQueue()
    for _ in range(40):
        queue.push(submit(rng.choice("ABCDE")))
        if rng.random() < 0.3:
            queue.pop()
    queued = queue.order()
    positions = {job.id: queue.position(job) for job in queued}
    started = []
    while (job := queue.pop()) is not None:
        started.append(job)
        assert queue.position(job) is None and job not in queue
    assert [positions[job.id] for job in started] == list(range(1, len(queued) + 1))


def test_leaving_the_queue_moves_the_owners_later_runs_up():
    submit, queue = Submitter(), FairQueue()
    a1, a2, a3 = (submit("A") for _ in range(3))
    b1, b2 = submit("B"), submit("B")
    for job in (a1, a2, a3, b1, b2):
        queue.push(job)
    assert queue.order() == [a1, b1, a2, b2, a3]
    assert queue.remove(a1) and not queue.remove(a1)
    assert queue.order() == [a2, b1, a3, b2]  # A's runs keep their turns: a2 takes a1's
    assert queue.remove(a3)
    assert queue.order() == [a2, b1, b2] and len(queue) == 3


def test_a_job_put_back_starts_first_again():
    """A job taken for a worker that died at once goes back where it was: ahead of its owner's
    other runs, or alone."""
    submit, queue = Submitter(), FairQueue()
    for owner in "AABBC":
        queue.push(submit(owner))
    before = queue.order()
    assert [job.owner for job in before] == list("ABCAB")
    taken = queue.pop()
    queue.put_back(taken)
    assert queue.order() == before
    queue.pop(), queue.pop()
    last_of_c = queue.pop()
    queue.put_back(last_of_c)
    assert [job.owner for job in queue.order()] == list("CAB")


# -- the wait estimate --------------------------------------------------------------------------
def simulate(position: int, workers: int, remaining: list[float], duration: float) -> float:
    """An independent event-by-event simulation: at every moment a worker comes free, the next
    job in the queue starts on it."""
    clock = 0.0
    ends = list(remaining)
    free = workers - len(remaining)
    ahead = position - 1
    while True:
        if free > 0:
            if ahead == 0:
                return clock
            free, ahead = free - 1, ahead - 1
            ends.append(clock + duration)
            continue
        clock = min(ends)
        ends.remove(clock)
        free += 1


@pytest.mark.parametrize(
    "position, workers, remaining, duration, expected",
    [
        (1, 1, [10.0], 30.0, 10.0),
        (3, 1, [10.0], 30.0, 70.0),  # 10 for the running one, then two of 30 ahead
        (1, 2, [10.0, 20.0], 30.0, 10.0),
        (2, 2, [10.0, 20.0], 30.0, 20.0),
        (3, 2, [10.0, 20.0], 30.0, 40.0),
        (4, 2, [10.0, 20.0], 30.0, 50.0),
        (1, 2, [10.0], 30.0, 0.0),  # a worker is free
        (2, 2, [10.0], 30.0, 10.0),
    ],
)
def test_wait_estimate_by_hand(position, workers, remaining, duration, expected):
    assert wait_estimate(position, workers, remaining, duration) == pytest.approx(expected)


def test_wait_estimate_matches_a_simulation():
    rng = random.Random(11)
    for _ in range(300):
        workers = rng.randint(1, 4)
        remaining = [rng.uniform(0, 60) for _ in range(rng.randint(0, workers))]
        position, duration = rng.randint(1, 12), rng.uniform(1, 60)
        expected = simulate(position, workers, remaining, duration)
        assert wait_estimate(position, workers, remaining, duration) == pytest.approx(expected)


def test_wait_estimate_with_idle_workers_is_whole_rounds():
    for workers in (1, 2, 3):
        for position in range(1, 10):
            expected = (position - 1) // workers * 30.0
            assert wait_estimate(position, workers, [], 30.0) == pytest.approx(expected)


def test_with_one_worker_the_wait_is_a_plain_sum():
    """The running job's rest, then one duration per job ahead."""
    for position in range(1, 6):
        assert wait_estimate(position, 1, [7.0], 5.0) == pytest.approx(7.0 + 5.0 * (position - 1))
