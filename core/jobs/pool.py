"""Training jobs for many users at once: a fair scheduler in front of an executor.

    job = submit(config, owner=student)      # queued → running → finished | stopped | failed
    jobs = submit_all(configs, owner)        # a sweep: all queued, or none (ValueError)
    job.queue_position                       # 1 = next to start; None once it runs
    job.wait_estimate                        # seconds until it starts, if the pool can tell
    job.events_since(n)                      # poll from any thread (e.g. a Streamlit page)
    job.stop()                               # stops at the next step (or drops it from the queue)
    job.wait(); job.run_id                   # the run is saved in the RunStore where it ran

Two halves, so that where jobs run can change without touching who runs next:

- The scheduler (`Pool`) owns the queue. It checks every job against the limits (core.common.limits)
  when it is submitted, caps how many jobs one owner has queued or running, and starts them in
  a fair order across owners (`FairQueue`): one student's sweep of 7 runs does not hold a
  classmate's single run behind it. It knows each job's queue position and estimates its wait
  (`wait_estimate`).
- An executor runs the jobs the scheduler hands it, at most `workers` at a time, and reports
  what happens (`Executor` and `Reports` in core.jobs.executors are the whole interface). Every
  executor trains a job with `run_task`, so a job is checked and saved the same way wherever it
  runs.

Which executor, from the environment:

    LORA_LAB_RAY unset     `LocalProcesses`: worker processes on this machine, `$LORA_LAB_WORKERS`
                           of them (default: one per core). Nothing to install or start.
    LORA_LAB_RAY=auto      core.jobs.ray_jobs.RayExecutor: each job a task on a Ray cluster, here
    the LORA_LAB_RAY=host:port one `ray start` began on this machine (or one started in-process),
                           there a cluster's head; `$LORA_LAB_WORKERS` jobs at once (default: one
                           per CPU of the cluster).

One queue for a class: app servers that share a Ray cluster share their queue too. With
$LORA_LAB_RAY set, the process-wide `pool()` of each app server is a `SharedPool`, its view of
the class's one `ClassQueue` (a Pool with the Ray executor, in a detached Ray actor named after
the run store): a student's queued and running jobs, their queue positions and wait estimates,
the caps and the fair order are the same whichever server answers, and Stop works from any.
(ClassQueue's docstring says why an actor rather than a jobs table in the database.) A `Pool`
built directly, as the command line's sweep does, keeps a queue of its own.

Ray is an optional dependency (requirements-distributed.txt): this module imports the Ray
executor only when $LORA_LAB_RAY is set, so the default app neither needs Ray installed nor pays
its import. The variable is read once, when this module is first imported.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import heapq
import itertools
import logging
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from core.common.config import RunConfig
from core.common.limits import SERVER, Limits
from core.jobs.executors import (
    SHUT_DOWN_RUNNING,
    WORKERS_SETTING,
    ExecutorFactory,
    Reports,
    Task,
    check_workers,
    configured_workers,
    default_workers,
    prepare_worker,
    recover_runs,
    report_end,
    run_task,
    threads_per_job,
)
from core.store.runs import RunStore, store_location
from core.training import zoo
from core.training.train import Event

# An optional dependency, imported only when asked for: see the module's docstring.
if os.environ.get("LORA_LAB_RAY", "").strip():
    from core.jobs import ray_jobs
else:
    ray_jobs = None

SHUT_DOWN_QUEUED = "the server shut down before it started"  # why a job ended unfinished
KEEP_DONE = 500  # finished jobs the pool remembers (their owners keep their own references)
RECENT = 20  # finished jobs whose durations estimate how long the next ones take
log = logging.getLogger(__name__)


# -- jobs ---------------------------------------------------------------------------------------
@dataclass(eq=False)
class Job:
    """One training run in the pool. Read its fields from any thread; only the pool writes."""

    id: str
    owner: str
    config: RunConfig
    pool: Pool | SharedPool | None = field(repr=False)
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
        return self._done.is_set()

    def events_since(self, index: int) -> list[Event]:
        """Events from number `index` on: poll with the count already seen."""
        return self.events[index:]

    def stop(self) -> None:
        """Stop at the next training step (saved as "stopped"), or leave the queue."""
        self.pool.stop(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is done; False if `timeout` seconds passed first."""
        return self._done.wait(timeout)


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
        self._virtual, self._next[owner], self._first[owner] = tag, tag + 1, tag + 1
        if not self._queued[owner]:
            del self._queued[owner]
        return job

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
    """Jobs checked against `limits`, queued fairly, run by an executor: `executor` if given,
    else the one the environment asks for (`default_executor`), running `workers` jobs at once
    (None: that executor's default)."""

    def __init__(
        self,
        workers: int | None = None,
        store_path: str | Path | None = None,
        limits: Limits | None = None,
        executor: ExecutorFactory | None = None,
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
        self._ids = "job-"  # a job's id: this and its seq
        self._closed = False
        self._broken = ""  # why no job can run, if none can
        if workers is not None and workers < 1:
            raise ValueError(f"a pool needs at least one worker (got {workers})")
        self.executor = (executor or default_executor())(self, workers, self.store_path)

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
            submitted = [self._add(config, owner, limits) for config in configs]
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
    def _add(self, config: RunConfig, owner: str, limits: Limits) -> Job:
        seq = next(self._seq)
        job = Job(
            id=f"{self._ids}{seq}", owner=owner, config=config, pool=self, seq=seq, limits=limits
        )
        self._jobs[job.id] = job
        if self._broken:
            self._end(job, "failed", self._broken)
        else:
            self._queue.push(job)
        return job

    def _dispatch(self) -> None:
        """Start queued jobs, in the fair order, while the executor has room."""
        while not self._closed and len(self._queue) and self.executor.idle() > 0:
            job = self._queue.pop()
            job.status, job.started = "running", time.time()
            self._running[job.id] = job
            task = Task(job.id, job.config.to_dict(), job.owner, job.limits)
            if not self.executor.start(task):  # its worker just went: it says when one is back
                del self._running[job.id]
                job.status, job.started = "queued", None
                self._queue.put_back(job)
                return

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

    def _end(self, job: Job, status: str, reason: str) -> None:
        if job.done:
            return
        job.status, job.reason, job.finished = status, reason, time.time()
        job._done.set()
        forget_old(self._jobs)


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


# -- one queue for a class: app servers that share a Ray cluster --------------------------------
QUEUE_LOST = "the class's queue lost it (its Ray actor was restarted)"  # why a job failed
FOLLOW_S = 0.1  # how often an app server catches up with its class's queue
# A Job's fields that change as it runs: what a server's copy of a class's job takes over.
MIRRORED = (
    "status", "reason", "run_id", "result", "started", "finished", "steps_planned", "steps_done"
)  # fmt: skip


@dataclass(frozen=True)
class JobState:
    """A job as the class's queue tells an app server of it: plain values, no Job crosses."""

    id: str
    owner: str
    seq: int
    submitted: float
    config: RunConfig | None  # None: the server has the job already
    fields: dict[str, Any]  # the MIRRORED fields of the Job
    events: list[Event]  # those the server has not seen yet
    done: bool
    position: int | None  # in the queue, and the wait estimate, when the queue answered
    wait: float | None


@dataclass(frozen=True)
class Changes:
    """What a server asked the class's queue for (ClassQueue.changes)."""

    now: float  # the queue's clock when it answered: the `since` of the server's next ask
    jobs: list[JobState]  # every job not done, and every job done since `since`
    unknown: list[str]  # jobs the server follows that the queue does not know (restarted)


class ClassQueue(Pool):
    """The queue of a class: the one Pool that all app servers sharing a Ray cluster submit to,
    in a detached, named Ray actor (core.jobs.ray_jobs.ClassQueueHandle starts it on the cluster,
    with the Ray executor; every server's SharedPool finds it there). Its fair order, its
    per-student caps, queue positions and wait estimates are therefore the class's, not one
    server's. What it adds to a Pool is what a server in another process asks, in plain values:
    jobs by id, and what changed since the server last asked.

    Why a Ray actor, and not a jobs table in the run database that each server claims rows from
    (SELECT … FOR UPDATE SKIP LOCKED): the fair order is a property of the whole queue (each
    job's tag depends on every owner's queued and started jobs), not of a row, so every start
    would have to lock the queue and replay FairQueue in SQL, next to the Python one the local
    pool keeps; and the jobs run on Ray anyway, whose executor already watches them (a dead
    worker ends its job, with the reason) and carries their live events and Stop. An actor
    keeps one scheduler, this Pool, in one process, for both modes. Named after the run store
    and detached, it belongs to no server: the first server starts it, later ones find it
    (get_if_exists), and servers may restart while their students' jobs go on. Its state lives
    in its process: should it die, Ray restarts it empty, the servers fail the jobs they
    followed (QUEUE_LOST), and what trained is in the store. A class's queue needs LORA_LAB_RAY;
    without it every server trains on its own machine, and its queue is that machine's.
    """

    def __init__(
        self, workers: int | None, store_path: str, limits: Limits, executor: ExecutorFactory
    ) -> None:
        super().__init__(workers, store_path, limits, executor)
        # Ids that the queue restarted by Ray cannot give again: servers still hold the old ones.
        self._ids = f"job-{uuid.uuid4().hex[:8]}-"

    def about(self) -> tuple[int, int]:
        """How many jobs run at once, and the torch threads of each."""
        return self.workers, self.threads

    def enqueue(self, configs: Sequence[RunConfig], owner: str, limits: Limits) -> list[str]:
        """`submit_all` for a server whose limits are `limits`: the ids of the new jobs."""
        return [job.id for job in self.submit_all(configs, owner, limits)]

    def stop_job(self, job_id: str) -> None:
        """`stop` by id (a job the queue has forgotten is long over)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self.stop(job)

    def changes(self, since: float | None, seen: dict[str, int]) -> Changes:
        """What a server that last asked at `since` (the `now` of its last Changes; None the
        first time, when the jobs not done are all it needs) and holds `seen[id]` events of
        each job it follows that is not done, has yet to learn."""
        with self._lock:  # one moment of the queue: no job ends while it is read
            now = time.time()
            places = {job.id: (n, wait) for n, (job, wait) in enumerate(self.queue(), start=1)}
            news = [
                self._state(job, seen.get(job.id), places.get(job.id, (None, None)))
                for job in self._jobs.values()
                if not job.done or (since is not None and job.finished >= since)
            ]
            unknown = [job_id for job_id in seen if job_id not in self._jobs]
        return Changes(now, news, unknown)

    @staticmethod
    def _state(job: Job, seen: int | None, place: tuple[int | None, float | None]) -> JobState:
        return JobState(
            id=job.id,
            owner=job.owner,
            seq=job.seq,
            submitted=job.submitted,
            config=job.config if seen is None else None,
            fields={name: getattr(job, name) for name in MIRRORED},
            events=job.events[seen or 0 :],
            done=job.done,
            position=place[0],
            wait=place[1],
        )


class SharedPool:
    """An app server's pool when app servers share a Ray cluster ($LORA_LAB_RAY): the server's
    view of its class's queue (ClassQueue), with the methods of a Pool. Jobs submitted here go
    to that queue; jobs submitted through any other server appear here too, as Job objects
    kept up to date (status, events, queue position, wait estimate) by a thread that asks the
    queue what changed every FOLLOW_S. Stop goes to the queue, whichever server started the
    job. A server that shuts down only stops following: the class's jobs go on.

    `queue` builds the line to the class's queue (core.jobs.ray_jobs.ClassQueueHandle unless given:
    tests give it an address). `workers`: jobs at once for the class, used by the server that
    starts the queue ($LORA_LAB_WORKERS, else one per CPU of the cluster).
    """

    def __init__(
        self,
        workers: int | None = None,
        store_path: str | Path | None = None,
        limits: Limits | None = None,
        queue: Any = None,
    ) -> None:
        self.limits = limits or Limits.from_env(SERVER, known_models=zoo.names())
        self.store_path = store_path if store_path is not None else store_location()
        RunStore(self.store_path).close()
        link = queue or ray_jobs.ClassQueueHandle
        workers = workers if workers is not None else configured_workers()
        self._queue = link(ClassQueue, workers, str(self.store_path), self.limits)
        self.workers, self.threads = self._queue.call("about")
        self._lock = threading.Lock()  # the jobs, as the last answer left them
        self._asking = threading.Lock()  # one question to the queue at a time
        self._jobs: dict[str, Job] = {}  # every job followed and not yet forgotten
        self._places: dict[str, tuple[int | None, float | None]] = {}  # queued: position, wait
        self._since: float | None = None
        self._closed = threading.Event()
        self._lost = ""  # why the queue did not answer, while it does not
        self._catch_up()
        self._thread = threading.Thread(target=self._follow, name="lora-lab-class", daemon=True)
        self._thread.start()

    # -- what callers use (as for a Pool) ----------------------------------------------------
    def submit(self, config: RunConfig, owner: str = "local") -> Job:
        return self.submit_all([config], owner)[0]

    def submit_all(self, configs: Sequence[RunConfig], owner: str = "local") -> list[Job]:
        """Queue several runs of one owner in the class's queue: all or none (ValueError, also
        when the owner's jobs on all servers together would pass the cap)."""
        if self._closed.is_set():
            raise RuntimeError("the pool is shut down")
        ids = self._queue.call("enqueue", list(configs), owner, self.limits)
        self._catch_up()
        with self._lock:
            return [self._jobs[job_id] for job_id in ids]

    def jobs(self, owner: str | None = None) -> list[Job]:
        """The class's jobs in submission order, only `owner`'s if given."""
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def queue_position(self, job: Job) -> int | None:
        with self._lock:
            return self._places.get(job.id, (None, None))[0]

    def wait_estimate(self, job: Job) -> float | None:
        with self._lock:
            return self._places.get(job.id, (None, None))[1]

    def running(self) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if job.status == "running"]

    def stop(self, job: Job) -> None:
        self._queue.call("stop_job", job.id)
        self._catch_up()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop following the class's queue (its jobs go on)."""
        self._closed.set()
        self._thread.join(timeout)

    def close_queue(self, timeout: float = 10.0) -> None:
        """End the class's queue itself: every job of the class stops (Pool.shutdown), and its
        actor goes. For the last server of a class, and for tests."""
        self._queue.call("shutdown", timeout)
        self._catch_up()
        self.shutdown(timeout)
        self._queue.end()

    # -- following the queue -----------------------------------------------------------------
    def _follow(self) -> None:
        """The pool's thread: catch up every FOLLOW_S until shut down; while the queue does not
        answer (its actor restarting), say so once and keep asking."""
        while not self._closed.wait(FOLLOW_S):
            try:
                self._catch_up()
            except ValueError as error:
                if not self._lost:
                    log.warning("%s; asking again", error)
                self._lost = str(error)
            else:
                self._lost = ""

    def _catch_up(self) -> None:
        """Ask the queue what changed since the last answer, and apply it."""
        with self._asking:
            with self._lock:
                seen = {job.id: len(job.events) for job in self._jobs.values() if not job.done}
            changes = self._queue.call("changes", self._since, seen)
            with self._lock:
                for state in changes.jobs:
                    self._apply(state)
                for job_id in changes.unknown:
                    self._end(self._jobs[job_id], "failed", QUEUE_LOST)
                forget_old(self._jobs)
                self._since = changes.now

    def _apply(self, state: JobState) -> None:
        job = self._jobs.get(state.id)
        if job is None:  # new to this server (JobState has its config)
            job = Job(
                state.id, state.owner, state.config, self, state.seq, submitted=state.submitted
            )
            self._jobs[job.id] = job
        if job.done:
            return
        job.events.extend(state.events)  # before its end shows: a waiter sees every event
        for name, value in state.fields.items():
            setattr(job, name, value)
        self._places[job.id] = (state.position, state.wait)
        if state.done:
            self._end(job, job.status, job.reason)

    def _end(self, job: Job, status: str, reason: str) -> None:
        job.status, job.reason = status, reason
        job.finished = job.finished or time.time()
        self._places.pop(job.id, None)
        job._done.set()


# -- the local executor: worker processes on this machine ---------------------------------------
@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection  # duplex: tasks go out, events come back
    stop_flag: Any  # multiprocessing.Event, polled by train() at every step
    job: str | None = None  # the id of the job it runs
    ready: bool = False  # it has started up (imported torch, warmed its caches)


class LocalProcesses:
    """`workers` worker processes, each running one job at a time with cores // workers torch
    threads.

    Why processes: torch.set_num_threads is global to a process, and threads of one process
    share one intra-op thread pool, so threads cannot each get "their share" of the CPU. A
    process can. A job's numbers therefore never depend on how many other jobs run (the thread
    count, which changes the last bits of sums, is fixed per worker), and the CPU is never
    oversubscribed. Processes also keep jobs independent: no two jobs can share a mutable
    model, because they do not even share memory.
    """

    def __init__(self, reports: Reports, workers: int | None, store_path: Path) -> None:
        self.reports, self.store_path = reports, store_path
        if not workers:  # $LORA_LAB_WORKERS has the bound of the command line's --workers
            workers = default_workers()
            check_workers(WORKERS_SETTING, workers)
        self.workers = workers
        self.threads = threads_per_job(self.workers)
        self._context = multiprocessing.get_context("spawn")  # fork is unsafe with threads
        self._lock = threading.Lock()
        self._closing = False
        self._slots = [self._start_worker() for _ in range(self.workers)]
        self._thread = threading.Thread(target=self._collect, name="lora-lab-pool", daemon=True)
        self._thread.start()

    # -- Executor ---------------------------------------------------------------------------
    def idle(self) -> int:
        with self._lock:
            return 0 if self._closing else sum(1 for w in self._slots if w.job is None)

    def start(self, task: Task) -> bool:
        with self._lock:
            worker = next((w for w in self._slots if w.job is None), None)
            if worker is None or self._closing:
                return False
            worker.stop_flag.clear()
            try:  # a worker still starting up takes the task once it is ready
                worker.conn.send(task)
            except OSError:  # it just died: _replace says when a new one is up
                return False
            worker.job = task.job_id
            return True

    def stop(self, job_id: str) -> None:
        with self._lock:
            for worker in self._slots:
                if worker.job == job_id:
                    worker.stop_flag.set()

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            self._closing = True
            for worker in self._slots:
                worker.stop_flag.set()
        self._thread.join(timeout)  # the running jobs end at their next step
        with self._lock:
            slots = list(self._slots)
        for worker in slots:
            with contextlib.suppress(OSError):  # already gone
                worker.conn.send(None)
        for worker in slots:
            worker.process.join(1.0)
            if worker.process.is_alive():  # still starting up, or stuck: nothing to save
                worker.process.terminate()
                worker.process.join()

    # -- inside ------------------------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        stop_flag = self._context.Event()
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, stop_flag, str(self.store_path), self.threads),
            name="lora-lab-worker",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end, stop_flag)

    def _collect(self) -> None:
        """The executor's thread: take messages from workers and replace dead ones, until it
        is closing and no job runs."""
        while True:
            with self._lock:
                slots = list(self._slots)
                if self._closing and not any(w.job for w in slots):
                    return
            ready = wait([w.conn for w in slots] + [w.process.sentinel for w in slots], 0.2)
            for worker in slots:
                if worker.conn in ready:
                    self._receive(worker)
                if worker.process.sentinel in ready:
                    self._replace(worker)

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                self._handle(worker, *worker.conn.recv())
        except (EOFError, OSError):
            pass  # the worker died; its sentinel says so too

    def _handle(self, worker: _Worker, kind: str, payload: Any) -> None:
        if kind == "ready":
            worker.ready = True
            return
        job_id = worker.job
        if job_id is None:
            return
        if kind == "event":
            self.reports.job_event(job_id, payload)
            return
        with self._lock:  # free before reporting, so the scheduler can start the next job here
            worker.job = None
        report_end(self.reports, job_id, (kind, payload))

    def _replace(self, worker: _Worker) -> None:
        """A worker process died. Killed while working (out of memory?): its job fails and a
        new worker takes its place. Died while starting up: a new one would die the same way,
        so its job goes back to the queue, and once no worker is left nothing can run."""
        self._receive(worker)  # anything it sent before dying
        worker.process.join()  # reap it, so its process id is really gone (runs.recover checks)
        worker.conn.close()
        if worker.job is not None:
            recover_runs(self.store_path)  # before the job ends: whoever waits sees it repaired
        with self._lock:
            self._slots.remove(worker)
            job_id, worker.job = worker.job, None
            replaced = worker.ready and not self._closing
            if replaced:
                self._slots.append(self._start_worker())
            none_left = not self._slots
        if job_id is not None and not worker.ready:
            self.reports.job_lost(job_id)
        elif job_id is not None and self._closing:  # terminated by shutdown()
            self.reports.job_ended(job_id, "stopped", SHUT_DOWN_RUNNING)
        elif job_id is not None:
            self.reports.job_ended(job_id, "failed", "the worker process died (out of memory?)")
        if none_left and not self._closing:
            self.reports.broken(
                f"the training processes could not start (exit code "
                f"{worker.process.exitcode}); the server's log says why"
            )
        elif replaced:
            self.reports.capacity()


def _worker_main(conn: Connection, stop_flag: Any, store_path: str, threads: int) -> None:
    """A worker process: get ready once, then train tasks until told to quit."""
    store = prepare_worker(store_path, threads)

    def forward(event: Event) -> None:
        try:
            conn.send(("event", event))
        except OSError:  # the app is gone and nobody watches: stop, the run is saved
            stop_flag.set()

    try:
        conn.send(("ready", None))
        while (task := conn.recv()) is not None:
            conn.send(run_task(task, store, forward, stop_flag))
    except (EOFError, OSError):  # the parent process is gone
        return


def default_executor() -> ExecutorFactory:
    """The executor $LORA_LAB_RAY asks for: Ray's if set (when this module was imported), else
    local worker processes."""
    return LocalProcesses if ray_jobs is None else ray_jobs.RayExecutor


# -- the process-wide pool ----------------------------------------------------------------------
_pool: Pool | SharedPool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool | SharedPool:
    """The process-wide pool, started on first use and shut down when the process exits: with
    $LORA_LAB_RAY set, this server's view of its class's queue (SharedPool), else a Pool of
    worker processes. Its limits are the server's (core.common.limits.SERVER, changed by the
    environment)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool() if ray_jobs is None else SharedPool()
            atexit.register(_pool.shutdown)
        return _pool


def submit(config: RunConfig, owner: str = "local") -> Job:
    """Queue a run in the process-wide pool."""
    return pool().submit(config, owner)


def submit_all(configs: Sequence[RunConfig], owner: str = "local") -> list[Job]:
    """Queue several runs in the process-wide pool: all of them, or none."""
    return pool().submit_all(configs, owner)
