"""The fair scheduler: who trains next when many students submit runs to one server.

    pool = Pool(workers, limits=limits, executor=LocalProcesses)
    job = pool.submit(config, owner=student) # queued → running → finished | stopped | failed
    jobs = pool.submit_all(configs, owner)   # a sweep: all queued, or none (ValueError)
    job.queue_position                       # 1 = next to start; None once it runs
    job.wait_estimate                        # seconds until it starts, if the pool can tell
    job.events_since(n)                      # poll from any thread (e.g. a Streamlit page)
    job.stop()                               # stops at the next step (or drops it from the queue)
    job.wait(); job.run_id                   # the run is saved in the RunStore where it ran

The scheduler (`Pool`) owns the queue. It checks every job against the limits
(core.common.limits) when it is submitted, caps how many jobs one owner has queued or running,
and starts them in a fair order across owners (`FairQueue`): one student's sweep of 7 runs does
not hold a classmate's single run behind it. It knows each job's queue position and estimates
its wait (`wait_estimate`).

Where the jobs run is the executor's business, not the scheduler's: a Pool is given one (an
`ExecutorFactory`: core.jobs.local.LocalProcesses, core.jobs.ray_jobs.RayExecutor) and hands it
the jobs to start, at most `workers` at a time; the executor reports what happens (`Executor`
and `Reports` in core.jobs.executors are the whole interface). So where jobs run can change
without touching who runs next. Which executor the environment asks for is core.jobs.pool's
choice (`default_executor`), as is the server's one process-wide pool.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.common.config import RunConfig
from core.common.limits import SERVER, Limits
from core.jobs.executors import SHUT_DOWN_RUNNING, Assignment, ExecutorFactory
from core.store.job_record import QUEUED, JobRecord, JobRow
from core.store.runs import RunStore, StoreError, store_location
from core.training import zoo
from core.training.train import Event

SHUT_DOWN_QUEUED = "the server shut down before it started"  # why a job ended unfinished
RESTARTED = (  # why a job whose queue died while it trained ended unfinished
    "its queue restarted while it trained (its process died); its run keeps what it saved"
)
TAKEN = "another process of its queue took it"  # a job this one must not run (the record says)
KEEP_DONE = 500  # finished jobs the pool remembers (their owners keep their own references)
RECENT = 20  # finished jobs whose durations estimate how long the next ones take
WAIT_TICK_S = 0.5  # a waiter tells the pool it still watches this often
log = logging.getLogger(__name__)


# -- jobs ---------------------------------------------------------------------------------------
class JobPool(Protocol):
    """What a Job asks of the pool that holds it: a Pool, or an app server's view of its class's
    queue (core.jobs.class_queue.SharedPool)."""

    def queue_position(self, job: Job) -> int | None: ...

    def wait_estimate(self, job: Job) -> float | None: ...

    def stop(self, job: Job) -> None: ...

    def watch(self) -> None:
        """Someone reads its jobs (a page, a waiter): keep them up to date for a while."""


@dataclass(eq=False)
class Job:
    """One training run in the pool. Read its fields from any thread; only the pool writes."""

    id: str
    owner: str
    config: RunConfig
    pool: JobPool | None = field(repr=False)
    seq: int = 0  # submission order: the fair queue's tie-break
    status: str = "queued"  # queued → running → finished | stopped | failed
    reason: str = ""
    events: list[Event] = field(default_factory=list)
    run_id: int | None = None  # the stored run, once done (None if it failed before starting)
    result: dict[str, Any] | None = None  # RunResult.summary() once done
    submitted: float = field(default_factory=time.time)
    started: float | None = None  # wall-clock times: left the queue for a worker, ended
    finished: float | None = None
    steps_planned: int | None = None  # from its "start" event
    steps_done: int = 0  # from its latest "step" event
    tag: int | None = None  # its tag in the fair order when it last left the queue (FairQueue)
    limits: Limits | None = field(default=None, repr=False)  # its server's, checked at submit
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def queue_position(self) -> int | None:
        """1 for the next job to start, 2 for the one after, …; None unless queued."""
        return self.pool.queue_position(self)

    @property
    def wait_estimate(self) -> float | None:
        """Seconds until it starts, estimated from what ran recently; None unless queued (or
        when nothing has run long enough to tell)."""
        return self.pool.wait_estimate(self)

    @property
    def done(self) -> bool:
        self.pool.watch()
        return self._done.is_set()

    def events_since(self, index: int) -> list[Event]:
        """Events from number `index` on: poll with the count already seen."""
        self.pool.watch()
        return self.events[index:]

    def stop(self) -> None:
        """Stop at the next training step (saved as "stopped"), or leave the queue."""
        self.pool.stop(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is done; False if `timeout` seconds passed first. (Its pool
        keeps it up to date meanwhile: a waiter watches it, as a page does.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            left = WAIT_TICK_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            self._done.wait(min(WAIT_TICK_S, left))
        return True


# -- the fair order -----------------------------------------------------------------------------
class FairQueue:
    """Queued jobs in a fair order across owners: start-time fair queuing (Goyal, Vin and Cheng,
    SIGCOMM 1996) with every job counting as one unit of work.

    Each queued job has a tag; the job with the smallest tag starts next (on a tie, the one
    submitted first). An owner's queued jobs have consecutive tags, and the first of them is
    one more than the tag of the owner's last started job, but never below the tag of the job
    that started last overall (the "virtual time"). So one owner's 7 jobs get tags v … v+6
    while a classmate's single job gets v: everyone's first job starts before anyone's second,
    everyone's second before anyone's third. An owner who was away rejoins at the current
    round, with no credit for the time they were away; one who leaves the queue moves the rest
    of their jobs up.

    Pure bookkeeping, no threads and no processes: the Pool calls it under its lock.
    """

    def __init__(self) -> None:
        self._queued: dict[str, deque[Job]] = {}  # owner → their queued jobs, oldest first
        self._first: dict[str, int] = {}  # owner → tag of their first queued job
        self._next: dict[str, int] = {}  # owner → least tag of their next job (last started + 1)
        self._virtual = 0  # tag of the job that started last

    def __len__(self) -> int:
        return sum(len(queued) for queued in self._queued.values())

    def __contains__(self, job: Job) -> bool:
        return job in self._queued.get(job.owner, ())

    def push(self, job: Job) -> None:
        """Queue a job behind its owner's queued ones."""
        queued = self._queued.setdefault(job.owner, deque())
        if not queued:
            self._first[job.owner] = max(self._virtual, self._next.get(job.owner, 0))
        queued.append(job)

    def pop(self) -> Job | None:
        """Take the job that starts next; None if none is queued."""
        heads = [
            (self._first[owner], queued[0].seq, owner) for owner, queued in self._queued.items()
        ]
        if not heads:
            return None
        tag, _, owner = min(heads)
        job = self._queued[owner].popleft()
        job.tag = tag
        self._virtual, self._next[owner], self._first[owner] = tag, tag + 1, tag + 1
        if not self._queued[owner]:
            del self._queued[owner]
        return job

    def restore(self, virtual: int, next_tags: dict[str, int]) -> None:
        """Start from where a queue's order stood (before any job is pushed): the tag of the
        job that started last, and each owner's next tag. A rebuilt queue given these and its
        queued jobs, in submission order, gives them the tags they had."""
        self._virtual, self._next = virtual, dict(next_tags)

    def put_back(self, job: Job) -> None:
        """A job just taken that could not start after all: first again among its owner's."""
        queued = self._queued.setdefault(job.owner, deque())
        self._first[job.owner] = (self._first[job.owner] if queued else self._next[job.owner]) - 1
        queued.appendleft(job)

    def remove(self, job: Job) -> bool:
        """Take a queued job out (stopped before it started); False if it was not queued. Its
        owner's later jobs move up: the first queued keeps the first tag."""
        queued = self._queued.get(job.owner)
        if queued is None or job not in queued:
            return False
        queued.remove(job)
        if not queued:
            del self._queued[job.owner]
        return True

    def order(self) -> list[Job]:
        """Every queued job, the next to start first."""
        tagged = [
            (self._first[owner] + index, job.seq, job)
            for owner, queued in self._queued.items()
            for index, job in enumerate(queued)
        ]
        return [job for *_, job in sorted(tagged, key=lambda item: item[:2])]

    def position(self, job: Job) -> int | None:
        """1 for the job that starts next, 2 for the one after, …; None unless queued."""
        if job not in self:
            return None
        return self.order().index(job) + 1


def wait_estimate(
    position: int, workers: int, remaining: Sequence[float], duration: float
) -> float:
    """Seconds until the job at `position` in the queue starts, if the running jobs end after
    `remaining` seconds each and every job ahead of it in the queue takes `duration`."""
    return start_times(position, workers, remaining, duration)[-1]


def start_times(
    count: int, workers: int, remaining: Sequence[float], duration: float
) -> list[float]:
    """`wait_estimate` of the jobs at positions 1 … `count`, in one pass.

    Jobs start in queue order on the first worker to come free (list scheduling): each job
    takes the earliest free worker, which is then busy for `duration` more.
    """
    free = sorted(remaining)[:workers] + [0.0] * max(0, workers - len(remaining))
    heapq.heapify(free)
    starts = []
    for _ in range(count):
        starts.append(free[0])
        heapq.heapreplace(free, free[0] + duration)
    return starts


# -- the scheduler ------------------------------------------------------------------------------
class Pool:
    """Jobs checked against `limits`, queued fairly, run by `executor` (core.jobs.pool's
    `default_executor()` is the one the environment asks for), `workers` jobs at once (None:
    that executor's default).

    With `record_as`, a name, the pool writes its queue down in its run database
    (core.store.job_record: every job and each change of its state) and starts by taking up
    what that record holds open under that name, as a queue restarted after its process died:
    its queued jobs keep their places in the fair order, and a job that had started ends
    "failed" (RESTARTED) rather than run a second time behind its student's back. The record
    decides who may start and end a job, so that none is run to completion twice. It takes up
    only the jobs of a queue process that has died, unless `exclusive` says no other process
    keeps a queue of that name (the class's Ray actor: then all). Without a name (the command
    line's sweep, most tests) the queue lives in memory only.
    """

    def __init__(
        self,
        workers: int | None = None,
        store_path: str | Path | None = None,
        limits: Limits | None = None,
        *,
        executor: ExecutorFactory,
        record_as: str | None = None,
        exclusive: bool = False,
    ) -> None:
        self.limits = limits or Limits.from_env(SERVER, known_models=zoo.names())
        # Opening the store here shows a bad file before any worker starts.
        self.store_path = store_path if store_path is not None else store_location()
        RunStore(self.store_path).close()
        self._lock = threading.RLock()
        self._queue = FairQueue()
        self._jobs: dict[str, Job] = {}  # every job not yet forgotten, in submission order
        self._running: dict[str, Job] = {}
        self._durations: deque[float] = deque(maxlen=RECENT)
        self._seq = itertools.count(1)
        # A job's id: this and its seq. A recorded queue's ids are unique in its database: the
        # queue rebuilt after its process died gives none of its old ids again.
        self._ids = f"job-{uuid.uuid4().hex[:8]}-" if record_as else "job-"
        self._closed = False
        self._broken = ""  # why no job can run, if none can
        if workers is not None and workers < 1:
            raise ValueError(f"a pool needs at least one worker (got {workers})")
        self._record = JobRecord(self.store_path, record_as, exclusive) if record_as else None
        self.executor = executor(self, workers, self.store_path)
        if self._record is not None:
            self._rebuild()

    @property
    def workers(self) -> int:
        return self.executor.workers

    @property
    def threads(self) -> int:
        return self.executor.threads

    # -- what callers use -------------------------------------------------------------------
    def submit(self, config: RunConfig, owner: str = "local") -> Job:
        """Queue a run. Settings and limits are checked now (a one-line ValueError); what
        needs the model (rank above a layer's min(d, k), unknown layer) fails the job."""
        return self.submit_all([config], owner)[0]

    def submit_all(
        self, configs: Sequence[RunConfig], owner: str = "local", limits: Limits | None = None
    ) -> list[Job]:
        """Queue several runs of one owner (a sweep): all of them, or none (ValueError).
        `limits`: those of the server that asks, if not the pool's (a class's queue serves
        several servers, ClassQueue)."""
        limits = limits or self.limits
        configs = [copy.deepcopy(config) for config in configs]  # the jobs' own
        for config in configs:
            config.validate()
            limits.check(config)
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            active = sum(1 for job in self._jobs.values() if job.owner == owner and not job.done)
            limits.check_jobs(active, len(configs))
            submitted = [self._new_job(config, owner, limits) for config in configs]
            if self._record is not None:  # written down before anyone hears "queued"
                self._record.add([_row(job) for job in submitted])
            for job in submitted:
                self._add(job)
            self._dispatch()
        return submitted

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs in submission order, only `owner`'s if given."""
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def queue_position(self, job: Job) -> int | None:
        with self._lock:
            return self._queue.position(job)

    def wait_estimate(self, job: Job) -> float | None:
        """Seconds until a queued job starts: its position, the workers, how far the running
        jobs are and how long recent jobs took (`wait_estimate`). None unless queued, or
        before any job has finished or made progress."""
        with self._lock:
            position = self._queue.position(job)
            return None if position is None else self._start_times(position)[-1]

    def queue(self) -> list[tuple[Job, float | None]]:
        """Every queued job, the next to start first, with its `wait_estimate`."""
        with self._lock:
            order = self._queue.order()
            return list(zip(order, self._start_times(len(order)), strict=True))

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def watch(self) -> None:
        """(A Pool's jobs are always up to date: it runs them.)"""

    def stop(self, job: Job) -> None:
        with self._lock:
            if self._queue.remove(job):
                self._end(job, "stopped", "stopped before it started")
            elif job.id in self._running:
                self.executor.stop(job.id)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job: queued ones end "stopped" at once, running ones stop at their next
        step (and save as "stopped"); a job still running after `timeout` seconds is ended
        here, so none stays "running" in memory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for job in self._queue.order():
                self._queue.remove(job)
                self._end(job, "stopped", SHUT_DOWN_QUEUED)
        self.executor.shutdown(timeout)  # without the lock: the jobs report their ends meanwhile
        with self._lock:
            for job_id in list(self._running):
                self._end(self._running.pop(job_id), "stopped", SHUT_DOWN_RUNNING)

    # -- what executors report (Reports) ----------------------------------------------------
    def job_event(self, job_id: str, event: Event) -> None:
        job = self._running.get(job_id)
        if job is None:
            return
        if event.kind == "start":
            job.steps_planned = event.data["steps"]
        elif event.kind == "step":
            job.steps_done = event.step
        job.events.append(event)

    def job_ended(
        self, job_id: str, status: str, reason: str, result: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            job = self._running.pop(job_id, None)
            if job is None:
                return
            if result is not None:
                job.result, job.run_id = result, result["run_id"]
            if status == "finished":
                self._durations.append(time.time() - job.started)
            self._end(job, status, reason)
            self._dispatch()

    def job_lost(self, job_id: str) -> None:
        with self._lock:
            job = self._running.pop(job_id, None)
            if job is None:
                return
            if self._closed:
                self._end(job, "stopped", SHUT_DOWN_QUEUED)
                return
            job.status, job.started = "queued", None
            self._queue.put_back(job)
            self._requeued(job)
            self._dispatch()

    def capacity(self) -> None:
        with self._lock:
            self._dispatch()

    def broken(self, reason: str) -> None:
        with self._lock:
            self._broken = reason
            while (job := self._queue.pop()) is not None:
                self._end(job, "failed", reason)

    # -- inside the scheduler (called with the lock held) ------------------------------------
    def _new_job(self, config: RunConfig, owner: str, limits: Limits) -> Job:
        seq = next(self._seq)
        return Job(
            id=f"{self._ids}{seq}", owner=owner, config=config, pool=self, seq=seq, limits=limits
        )

    def _add(self, job: Job) -> None:
        self._jobs[job.id] = job
        if self._broken:
            self._end(job, "failed", self._broken)
        else:
            self._queue.push(job)

    def _rebuild(self) -> None:
        """Take up the jobs the record holds open under this queue's name: those queued go back
        in the fair order where they stood, those started (their process died with the queue's)
        end with the reason."""
        with self._lock:
            fair = self._record.fair_state()
            self._seq = itertools.count(fair.last_seq + 1)
            self._queue.restore(fair.virtual, fair.next_tags)
            for row in self._record.take_open():
                job = _job(row, self)
                self._jobs[job.id] = job
                if row.status == QUEUED:
                    self._queue.push(job)
                else:
                    self._end(job, "failed", RESTARTED)
            self._dispatch()

    def _dispatch(self) -> None:
        """Start queued jobs, in the fair order, while the executor has room (and, for a
        recorded queue, the record lets this queue start them)."""
        while not self._closed and len(self._queue) and self.executor.idle() > 0:
            job = self._queue.pop()
            if not self._claim(job):
                continue
            job.status, job.started = "running", time.time()
            self._running[job.id] = job
            assignment = Assignment(job.id, job.config.to_dict(), job.owner, job.limits)
            if not self.executor.start(
                assignment
            ):  # its worker just went: it says when one is back
                del self._running[job.id]
                job.status, job.started = "queued", None
                self._queue.put_back(job)
                self._requeued(job)
                return

    def _claim(self, job: Job) -> bool:
        """Whether this queue may start the job it took: always without a record; with one,
        if the record still says "queued" (else it is another's, or over: it ends here, and
        only here)."""
        if self._record is None or _recorded(lambda: self._record.started(job.id, job.tag)):
            return True
        self._end(job, "failed", TAKEN, record=False)
        return False

    def _requeued(self, job: Job) -> None:
        if self._record is not None:
            _recorded(lambda: self._record.requeued(job.id))

    def _start_times(self, count: int) -> list[float | None]:
        """The wait estimates of the first `count` queued jobs (all None before any job has
        finished or made progress)."""
        now = time.time()
        duration = self._typical_duration(now)
        if duration is None:
            return [None] * count
        remaining = [_remaining(job, now, duration) for job in self._running.values()]
        return start_times(count, self.workers, remaining, duration)

    def _typical_duration(self, now: float) -> float | None:
        """How long a job takes: the mean of the recent finished ones, else what the running
        ones are on course for; None before either says anything."""
        if self._durations:
            return statistics.fmean(self._durations)
        projected = [
            (now - job.started) * job.steps_planned / job.steps_done
            for job in self._running.values()
            if job.steps_done and job.steps_planned
        ]
        return statistics.fmean(projected) if projected else None

    def _end(self, job: Job, status: str, reason: str, record: bool = True) -> None:
        if job.done:
            return
        if record and self._record is not None:
            counts = _recorded(lambda: self._record.ended(job.id, status, reason, job.run_id))
            if not counts:  # it ended elsewhere first: the record says how
                [row] = self._record.get([job.id])
                status, reason = row.status, row.reason
        job.status, job.reason, job.finished = status, reason, time.time()
        job._done.set()
        forget_old(self._jobs)


def _row(job: Job) -> JobRow:
    """A job as its queue's record keeps it."""
    return JobRow(
        id=job.id,
        seq=job.seq,
        owner=job.owner,
        config=job.config.to_dict(),
        limits=asdict(job.limits),
        submitted=job.submitted,
    )


def _job(row: JobRow, pool: Pool) -> Job:
    """A job of a queue's record, taken up by the queue rebuilt from it."""
    limits = row.limits | {"models": row.limits["models"] and tuple(row.limits["models"])}
    return Job(
        id=row.id,
        owner=row.owner,
        config=RunConfig.from_dict(row.config),
        pool=pool,
        seq=row.seq,
        submitted=row.submitted,
        started=row.started,
        limits=Limits(**limits),
    )


def _recorded(change: Callable[[], Any]) -> Any:
    """A change to the queue's record that the queue cannot wait on any longer (its database
    was unreachable for JobRecord's RETRY_S, or cannot be written): the queue goes on from
    memory, and says so in the log, rather than stop every class's job. (True: go on.)"""
    try:
        return change()
    except StoreError as error:
        log.warning("the queue goes on without its record: %s", error)
        return True


def forget_old(jobs: dict[str, Job]) -> None:
    """Let go of all but the KEEP_DONE newest finished jobs of `jobs` (in submission order)."""
    done = [job for job in jobs.values() if job.done]
    for old in done[: max(0, len(done) - KEEP_DONE)]:
        del jobs[old.id]


def _remaining(job: Job, now: float, duration: float) -> float:
    """Seconds a running job still needs: from its pace once it has made steps, else the
    typical `duration` less the time it has run."""
    elapsed = now - job.started
    if job.steps_done and job.steps_planned:
        return elapsed * (job.steps_planned - job.steps_done) / job.steps_done
    return max(0.0, duration - elapsed)
