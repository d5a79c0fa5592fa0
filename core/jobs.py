"""A process-wide pool that runs trainings in the background for many users at once.

Why worker *processes*: torch.set_num_threads is global to a process, and threads of one
process share one intra-op thread pool, so threads cannot each get "their share" of the CPU.
A worker process can: each of the `workers` processes runs one job at a time with
cores // workers torch threads. A job's numbers therefore never depend on how many other jobs
run (the thread count, which changes the last bits of sums, is fixed per worker), and the
CPU is never oversubscribed. Processes also keep jobs independent: no two jobs can share a
mutable model, because they do not even share memory.

    job = submit(config, owner=session_id)   # queued in FIFO order → running → done
    job.queue_position                       # 1 = next to start; None once it runs
    job.events_since(n)                      # poll from any thread (e.g. a Streamlit page)
    job.stop()                               # stops at the next step (or drops it from the queue)
    job.wait(); job.run_id                   # the run is saved in the RunStore by its worker

The number of workers is `$LORA_LAB_WORKERS`, or the number of cores.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import itertools
import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch

from core import data, zoo
from core.config import RunConfig
from core.runs import RunStore, StoreError, store_location, train_and_save
from core.train import Event

KEEP_DONE = 500  # finished jobs the pool remembers (their owners keep their own references)


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def default_workers() -> int:
    configured = os.environ.get("LORA_LAB_WORKERS", "").strip()
    if not configured:
        return cores()
    if not configured.isdigit() or int(configured) < 1:
        raise ValueError(f"LORA_LAB_WORKERS must be a whole number ≥ 1 (got {configured!r})")
    return int(configured)


def threads_per_job(workers: int) -> int:
    """Each job's share of the cores: together the workers use every core, never more."""
    return max(1, cores() // workers)


@dataclass(eq=False)
class Job:
    """One training run in the pool. Read its fields from any thread; only the pool writes."""

    id: str
    owner: str
    config: RunConfig
    pool: Pool = field(repr=False)
    status: str = "queued"  # queued → running → finished | stopped | failed
    reason: str = ""
    events: list[Event] = field(default_factory=list)
    run_id: int | None = None  # the stored run, once done (None if it failed before starting)
    result: dict[str, Any] | None = None  # RunResult.summary() once done
    submitted: float = field(default_factory=time.time)
    started: float | None = None  # wall-clock times: left the queue for a worker, ended
    finished: float | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def queue_position(self) -> int | None:
        """1 for the next job to start, 2 for the one after, …; None unless queued."""
        return self.pool.queue_position(self)

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


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection  # duplex: jobs go out, events come back
    stop_flag: Any  # multiprocessing.Event, polled by train() at every step
    job: Job | None = None
    ready: bool = False  # it has started up (imported torch, warmed its caches)


class Pool:
    """`workers` worker processes fed from one FIFO queue."""

    def __init__(self, workers: int | None = None, store_path: str | Path | None = None) -> None:
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ValueError(f"a pool needs at least one worker (got {self.workers})")
        self.threads = threads_per_job(self.workers)
        # Opening the store here shows a bad file before any worker starts.
        self.store_path = store_path if store_path is not None else store_location()
        RunStore(self.store_path).close()
        self._context = multiprocessing.get_context("spawn")  # fork is unsafe with threads
        self._lock = threading.RLock()
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._broken = ""  # why no worker could start, if none could
        self._slots = [self._start_worker() for _ in range(self.workers)]
        self._thread = threading.Thread(target=self._collect, name="lora-lab-pool", daemon=True)
        self._thread.start()

    # -- what callers use -------------------------------------------------------------------
    def submit(self, config: RunConfig, owner: str = "local") -> Job:
        """Queue a run. Settings are checked now (ValueError); what needs the model (rank
        above a layer's min(d, k), unknown layer) fails the job with that message."""
        config.validate()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            job_id, config = f"job-{next(self._ids)}", copy.deepcopy(config)  # the job's own
            job = Job(id=job_id, owner=owner, config=config, pool=self)
            self._jobs[job.id] = job
            if self._broken:
                self._end(job, "failed", self._broken)
                return job
            self._queue.append(job)
            self._dispatch()
        return job

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs in submission order, only `owner`'s if given."""
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def queue_position(self, job: Job) -> int | None:
        with self._lock:
            return self._queue.index(job) + 1 if job in self._queue else None

    def running(self) -> list[Job]:
        with self._lock:
            return [w.job for w in self._slots if w.job is not None]

    def stop(self, job: Job) -> None:
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                self._end(job, "stopped", "stopped before it started")
            for worker in self._slots:
                if worker.job is job:
                    worker.stop_flag.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job (running ones save as "stopped") and end the workers."""
        with self._lock:
            self._closed = True
            for job in list(self._queue):
                self.stop(job)
            for worker in self._slots:
                worker.stop_flag.set()
        self._thread.join(timeout)  # the running jobs end at their next step
        for worker in self._slots:
            with contextlib.suppress(OSError):  # already gone
                worker.conn.send(None)
        for worker in self._slots:
            worker.process.join(1.0)
            if worker.process.is_alive():  # still starting up, or stuck: nothing to save
                worker.process.terminate()
                worker.process.join()

    # -- inside the pool ----------------------------------------------------------------------
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

    def _dispatch(self) -> None:
        """Hand queued jobs to idle workers (called with the lock held)."""
        for worker in self._slots:
            if worker.job is None and self._queue and not self._closed:
                job = self._queue.popleft()
                worker.stop_flag.clear()
                try:
                    worker.conn.send((job.config.to_dict(), job.owner))
                except OSError:  # the worker just died: the job waits for its replacement
                    self._queue.appendleft(job)
                    continue
                worker.job, job.status, job.started = job, "running", time.time()

    def _collect(self) -> None:
        """The pool's thread: take messages from workers, replace dead ones, dispatch."""
        while True:
            with self._lock:
                if self._closed and not self.running():
                    return
                slots = list(self._slots)
            ready = wait([w.conn for w in slots] + [w.process.sentinel for w in slots], 0.2)
            for worker in slots:
                if worker.conn in ready:
                    self._receive(worker)
                if worker.process.sentinel in ready:
                    self._replace(worker)
            with self._lock:
                self._dispatch()

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                self._handle(worker, kind, payload)
        except (EOFError, OSError):
            pass  # the worker died; its sentinel says so too

    def _handle(self, worker: _Worker, kind: str, payload: Any) -> None:
        if kind == "ready":
            worker.ready = True
        job = worker.job
        if job is None:
            return
        if kind == "event":
            job.events.append(payload)
        elif kind in ("done", "error"):
            with self._lock:
                worker.job = None
                if kind == "done":
                    job.result, job.run_id = payload, payload["run_id"]
                    self._end(job, payload["status"], payload["reason"])
                else:
                    self._end(job, "failed", payload)

    def _replace(self, worker: _Worker) -> None:
        """A worker process died. Killed while working (out of memory?): its job fails and a
        new worker takes its place. Died while starting up: a new one would die the same way,
        so its job goes back to the queue, and once no worker is left the queue fails."""
        self._receive(worker)  # anything it sent before dying
        worker.process.join()  # reap it, so its process id is really gone (runs.recover checks)
        worker.conn.close()
        if worker.job is not None:
            self._recover_runs()  # before the job ends: whoever waits on it sees the run repaired
        with self._lock:
            self._slots.remove(worker)
            job, worker.job = worker.job, None
            if not worker.ready:
                if job is not None:
                    job.status, job.started = "queued", None
                    self._queue.appendleft(job)
                if not self._slots:
                    self._give_up(worker.process.exitcode)
                return
            if job is not None:
                self._end(job, "failed", "the worker process died (out of memory?)")
            if not self._closed:
                self._slots.append(self._start_worker())

    def _recover_runs(self) -> None:
        """Mark the runs of dead processes (the worker that just died) "unfinished" in the
        store now, rather than whenever some process next opens it."""
        try:
            with RunStore(self.store_path) as store:
                store.recover()  # (opening it recovers too)
        except StoreError as error:  # the file went bad meanwhile: the next opener says so
            logging.getLogger(__name__).warning("a dead worker's run stays 'running': %s", error)

    def _give_up(self, exitcode: int | None) -> None:
        self._broken = (
            f"the training processes could not start (exit code {exitcode}); "
            "the server's log says why"
        )
        while self._queue:
            self._end(self._queue.popleft(), "failed", self._broken)

    def _end(self, job: Job, status: str, reason: str) -> None:
        job.status, job.reason, job.finished = status, reason, time.time()
        job._done.set()
        done = [j for j in self._jobs.values() if j.done]
        for old in done[: max(0, len(done) - KEEP_DONE)]:
            del self._jobs[old.id]


def _worker_main(conn: Connection, stop_flag: Any, store_path: str, threads: int) -> None:
    """A worker process: set its thread share once, then train jobs until told to quit."""
    torch.set_num_threads(threads)
    store = RunStore(store_path)
    # Warm the per-process caches so the classroom's first run starts at once.
    data.load_task()
    zoo.load(zoo.DEFAULT_MODEL)
    try:
        conn.send(("ready", None))
        while (task := conn.recv()) is not None:
            conn.send(_run_job(conn, stop_flag, store, *task))
    except (EOFError, OSError):  # the parent process is gone
        return


def _run_job(conn: Connection, stop_flag: Any, store: Any, config: dict, owner: str) -> tuple:
    """Train one job, sending its events as they come; returns the final message."""

    def forward(event: Event) -> None:
        try:
            conn.send(("event", event))
        except OSError:  # the app is gone and nobody watches: stop, the run is saved
            stop_flag.set()

    try:
        run_id, result = train_and_save(
            RunConfig.from_dict(config), store, owner, forward, stop_flag
        )
    except Exception as error:  # the job fails, the worker lives on
        message = str(error) or type(error).__name__
        if not isinstance(error, ValueError | RuntimeError):
            message = traceback.format_exception_only(error)[-1].strip()
        return ("error", message)
    return ("done", {"run_id": run_id, **result.summary()})


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """The process-wide pool, started on first use and shut down when the process exits."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool()
            atexit.register(_pool.shutdown)
        return _pool


def submit(config: RunConfig, owner: str = "local") -> Job:
    """Queue a run in the process-wide pool."""
    return pool().submit(config, owner)
