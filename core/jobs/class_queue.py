"""One queue for a class: app servers that share a Ray cluster share their queue too.

With $LORA_LAB_RAY set, the process-wide pool of each app server (core.jobs.pool.pool) is a
`SharedPool`, its view of the class's one `ClassQueue` (a core.jobs.scheduler.Pool with the Ray
executor, in a detached Ray actor named after the run store): a student's queued and running
jobs, their queue positions and wait estimates, the caps and the fair order are the same
whichever server answers, and Stop works from any. (ClassQueue's docstring says why an actor
rather than a jobs table in the database.) Only plain values cross between the two processes:
`JobState` and `Changes`, never a Job.

This module knows no Ray: a SharedPool is given the line to its queue
(core.jobs.ray_jobs.ClassQueueHandle, or one in this process in tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.common.config import RunConfig
from core.common.limits import SERVER, Limits
from core.jobs.executors import ExecutorFactory, configured_workers
from core.jobs.scheduler import Job, Pool, forget_old
from core.store.job_record import OPEN, JobRow
from core.store.runs import RunStore, store_location
from core.training import zoo
from core.training.train import Event

QUEUE_LOST = "the class's queue lost it (its Ray actor was restarted)"  # why a job failed
CLASS_QUEUE = "class"  # the name of the class's queue in its run database's job record
FOLLOW_S = 0.1  # how often an app server catches up with its class's queue, while it must
WATCH_S = 2.0  # a page that read the pool this recently is still watching it (pages poll)
# A Job's fields that change as it runs: what a server's copy of a class's job takes over.
MIRRORED = (
    "status", "reason", "run_id", "result", "started", "finished", "steps_planned", "steps_done"
)  # fmt: skip
log = logging.getLogger(__name__)


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
    (SELECT … FOR UPDATE SKIP LOCKED) as the scheduler: the fair order is a property of the whole
    queue (each job's tag depends on every owner's queued and started jobs), not of a row, so every
    start would have to lock the queue and replay FairQueue in SQL, next to the Python one the local
    pool keeps; and the jobs run on Ray anyway, whose executor already watches them (a dead worker
    ends its job, with the reason) and carries their live events and Stop. An actor keeps one
    scheduler, this Pool, in one process, for both modes. Named after the class (the id its run
    database keeps) and detached, it belongs to no server: the first server starts it, later ones
    find it (get_if_exists), and servers may restart while their students' jobs go on. The database
    is its memory all the same: the Pool writes every job and each change of it down (its record,
    CLASS_QUEUE), so that when its process dies and Ray restarts it, it rebuilds itself from the
    record (queued jobs keep their places; those that were training end with the reason), and a
    server that followed a job through the restart learns how it ended. A class's queue needs
    LORA_LAB_RAY; without it every server trains on its own machine, and its queue is that
    machine's.
    """

    def __init__(
        self, workers: int | None, store_path: str, limits: Limits, executor: ExecutorFactory
    ) -> None:
        super().__init__(
            workers, store_path, limits, executor=executor, record_as=CLASS_QUEUE, exclusive=True
        )

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
        ended = [row for row in self._record.get(unknown) if row.status not in OPEN]
        news += [self._ended_state(row) for row in ended]
        gone = {row.id for row in ended}
        return Changes(now, news, [job_id for job_id in unknown if job_id not in gone])

    @staticmethod
    def _ended_state(row: JobRow) -> JobState:
        """A job that ended before this queue (re)started, as its record tells it: a server
        that followed it through the queue's restart learns how it ended."""
        fields = {"status": row.status, "reason": row.reason, "run_id": row.run_id}
        fields |= {"started": row.started, "finished": row.ended}
        return JobState(
            id=row.id,
            owner=row.owner,
            seq=row.seq,
            submitted=row.submitted,
            config=None,
            fields=fields,
            events=[],
            done=True,
            position=None,
            wait=None,
        )

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
    queue what changed every FOLLOW_S, while anyone here needs to know: a job submitted through
    this server is not done, or a page (or a waiter) read the pool or one of its jobs within
    WATCH_S (`watch`). An idle server asks the
    queue nothing, and a busy one asks once per FOLLOW_S whatever the size of the class. Stop
    goes to the queue, whichever server started the job. A server that shuts down only stops
    following: the class's jobs go on.

    `queue` builds the line to the class's queue: core.jobs.ray_jobs.ClassQueueHandle (tests
    give it an address, or build a line in their own process). `workers`: jobs at once for the
    class, used by the server that starts the queue ($LORA_LAB_WORKERS, else one per CPU of the
    cluster).
    """

    def __init__(
        self,
        workers: int | None = None,
        store_path: str | Path | None = None,
        limits: Limits | None = None,
        *,
        queue: Callable[..., Any],
    ) -> None:
        self.limits = limits or Limits.from_env(SERVER, known_models=zoo.names())
        self.store_path = store_path if store_path is not None else store_location()
        RunStore(self.store_path).close()
        workers = workers if workers is not None else configured_workers()
        self._queue = queue(ClassQueue, workers, str(self.store_path), self.limits)
        self.workers, self.threads = self._queue.call("about")
        self._lock = threading.Lock()  # the jobs, as the last answer left them
        self._asking = threading.Lock()  # one question to the queue at a time
        self._jobs: dict[str, Job] = {}  # every job followed and not yet forgotten
        self._places: dict[str, tuple[int | None, float | None]] = {}  # queued: position, wait
        self._since: float | None = None
        self._mine: set[str] = set()  # jobs submitted through this server, until done
        self._read_at = time.monotonic()  # when a page last read the pool
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
        with self._lock:
            self._mine.update(ids)
        self._catch_up()
        with self._lock:
            return [self._jobs[job_id] for job_id in ids]

    def jobs(self, owner: str | None = None) -> list[Job]:
        """The class's jobs in submission order, only `owner`'s if given. (A page that reads
        them is watching: the pool keeps them up to date for WATCH_S.)"""
        self.watch()
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def queue_position(self, job: Job) -> int | None:
        self.watch()
        with self._lock:
            return self._places.get(job.id, (None, None))[0]

    def wait_estimate(self, job: Job) -> float | None:
        self.watch()
        with self._lock:
            return self._places.get(job.id, (None, None))[1]

    def running(self) -> list[Job]:
        self.watch()
        with self._lock:
            return [job for job in self._jobs.values() if job.status == "running"]

    def watch(self) -> None:
        """A page or a waiter reads the jobs: follow the queue for the next WATCH_S."""
        self._read_at = time.monotonic()

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
        """The pool's thread: catch up every FOLLOW_S while someone here needs to (`_wanted`),
        until shut down; while the queue does not answer (its actor restarting), say so once
        and keep asking."""
        while not self._closed.wait(FOLLOW_S):
            if not self._wanted():
                continue
            try:
                self._catch_up()
            except ValueError as error:
                if not self._lost:
                    log.warning("%s; asking again", error)
                self._lost = str(error)
            else:
                self._lost = ""

    def _wanted(self) -> bool:
        """Whether anyone on this server needs news of the queue: a page read the pool within
        WATCH_S, or a job submitted here is not done (its student may come back to it, and
        whoever waits on it must learn its end)."""
        if time.monotonic() - self._read_at < WATCH_S:
            return True
        with self._lock:
            self._mine -= {i for i in self._mine if i in self._jobs and self._jobs[i].done}
            return bool(self._mine)

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
