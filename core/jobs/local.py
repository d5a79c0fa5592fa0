"""The local executor: training jobs in worker processes on this machine, the default where
$LORA_LAB_RAY is unset (nothing to install or start). `$LORA_LAB_WORKERS` of them (default: one
per core), each running one job at a time; LocalProcesses's docstring says why processes.

It implements the executor interface of core.jobs.executors and trains every job with
`run_job`, as the Ray executor (core.jobs.ray_jobs) does, so a job is checked and saved the same
way wherever it runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from core.jobs.executors import (
    SHUT_DOWN_RUNNING,
    WORKERS_SETTING,
    Assignment,
    Reports,
    check_workers,
    default_workers,
    prepare_worker,
    recover_runs,
    report_end,
    run_job,
    threads_per_job,
)
from core.training.train import Event


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection  # duplex: assignments go out, events come back
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

    def start(self, assignment: Assignment) -> bool:
        with self._lock:
            worker = next((w for w in self._slots if w.job is None), None)
            if worker is None or self._closing:
                return False
            worker.stop_flag.clear()
            try:  # a worker still starting up takes the assignment once it is ready
                worker.conn.send(assignment)
            except OSError:  # it just died: _replace says when a new one is up
                return False
            worker.job = assignment.job_id
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
    """A worker process: get ready once, then train the jobs it is assigned until told to quit."""
    store = prepare_worker(store_path, threads)

    def forward(event: Event) -> None:
        try:
            conn.send(("event", event))
        except OSError:  # the app is gone and nobody watches: stop, the run is saved
            stop_flag.set()

    try:
        conn.send(("ready", None))
        while (assignment := conn.recv()) is not None:
            conn.send(run_job(assignment, store, forward, stop_flag))
    except (EOFError, OSError):  # the parent process is gone
        return
