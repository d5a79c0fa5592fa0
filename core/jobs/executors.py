"""Where jobs run, seen from the scheduler (core.jobs.scheduler): what an executor is given (an
`Assignment`), what it reports, and how it trains a job.

The scheduler decides which job starts next; an executor decides nothing, it runs what it is
handed, at most `workers` jobs at a time, and says what happened. Two executors implement this
interface: core.jobs.local.LocalProcesses (worker processes on this machine, the default) and
core.jobs.ray_jobs.RayExecutor (tasks on a Ray cluster). Both train a job with `run_job`, so a job
is checked, trained and saved the same way wherever it runs, and both mark the run of a worker that
died with `recover_runs`.

This module sits below both executors and the scheduler, so that core.jobs.pool can import the Ray
executor (when $LORA_LAB_RAY asks for it) without the Ray executor importing the scheduler.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from core.common.config import Bound, RunConfig, check_bound
from core.common.limits import Limits, parse_count
from core.store.runs import RunStore, StoreError
from core.training import data, zoo
from core.training.record import train_and_save
from core.training.train import Event, StopFlag, load_task, planned_steps

WORKERS_SETTING = "LORA_LAB_WORKERS"
SHUT_DOWN_RUNNING = "the server shut down while it ran"  # why a running job ended unfinished


# -- how many jobs, how many threads each -------------------------------------------------------
def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def configured_workers() -> int | None:
    """$LORA_LAB_WORKERS, the jobs that run at once; None when it is not set (each executor
    then has its own default: this machine's cores, or a Ray cluster's CPUs). Read as every
    count in the environment is (core.common.limits.parse_count): a ValueError naming the
    variable."""
    configured = os.environ.get(WORKERS_SETTING, "").strip()
    return parse_count(WORKERS_SETTING, configured) if configured else None


def check_workers(setting: str, workers: int) -> None:
    """No more worker processes on this machine than it has cores (`setting`, the flag or
    variable that asked, is named if there are): each worker is a process with a copy of
    torch and its share of the threads, so more would only share the same cores, in more
    memory."""
    check_bound(setting, workers, Bound(1, cores(), whole=True))


def default_workers() -> int:
    """Jobs at once on this machine: $LORA_LAB_WORKERS, or the number of cores. (Worker
    processes here are held to check_workers where they start: core.jobs.local.LocalProcesses.)"""
    return configured_workers() or cores()


def threads_per_job(workers: int, cpus: int | None = None) -> int:
    """Each job's share of the CPUs (this machine's cores unless `cpus` says otherwise):
    together the workers use every CPU, never more."""
    return max(1, (cpus or cores()) // workers)


# -- what an executor is given, and the interface ------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    """What an executor needs to run a job: plain values, so it can cross to another process
    or machine. The limits travel along because only the data says how many steps a run
    planned by epochs takes (`run_job` checks it)."""

    job_id: str
    config: dict[str, Any]  # RunConfig.to_dict()
    owner: str
    limits: Limits


class Executor(Protocol):
    """Runs the jobs the scheduler hands it and reports back through `Reports`.

    Built as `executor(reports, workers, store_path)`, `workers` None for the executor's own
    default. The scheduler calls these methods with its lock held, so an executor never calls
    `Reports` while holding a lock of its own that these methods take.
    """

    workers: int  # jobs it runs at once (the queue's wait estimate counts on them)
    threads: int  # torch threads of each job (the same numbers need the same count)

    def idle(self) -> int:
        """How many more jobs it would start right now."""

    def start(self, assignment: Assignment) -> bool:
        """Begin running the job; False if it cannot right now (the job goes back to the
        queue and starts when `Reports.capacity` says so)."""

    def stop(self, job_id: str) -> None:
        """Ask a started job to stop at its next step (it then reports its end)."""

    def shutdown(self, timeout: float) -> None:
        """Stop every job, wait up to `timeout` seconds for their ends, release the workers."""


class Reports(Protocol):
    """What an executor tells the scheduler (the Pool implements it). Calls may come from any
    thread of the executor; a job id the scheduler no longer runs is ignored."""

    def job_event(self, job_id: str, event: Event) -> None:
        """A training event of a running job (core.training.train.Event), in order."""

    def job_ended(
        self, job_id: str, status: str, reason: str, result: dict[str, Any] | None = None
    ) -> None:
        """The job is over ("finished", "stopped" or "failed"), `result` from `run_job`."""

    def job_lost(self, job_id: str) -> None:
        """The job never began (its worker could not start): queue it again."""

    def capacity(self) -> None:
        """A worker came (back): queued jobs may start now."""

    def broken(self, reason: str) -> None:
        """No job can run at all: every queued and every later job fails with `reason`."""


ExecutorFactory = Callable[[Reports, int | None, Path], Executor]


# -- running a job, wherever it runs ------------------------------------------------------------
def prepare_worker(store_path: str | Path, threads: int) -> RunStore:
    """Ready a worker process for jobs, once: its thread share, its store, and the default data
    and model in the per-process caches, so that the classroom's first run starts at once."""
    torch.set_num_threads(threads)
    store = RunStore(store_path)
    data.load_task()
    zoo.load(zoo.DEFAULT_MODEL)
    return store


def check_planned(config: RunConfig, limits: Limits) -> None:
    """The limit on steps for a run planned by epochs: only its data says how many steps those
    are (a run that sets its steps was checked in full by Limits.check)."""
    if config.steps is None:
        limits.check_planned(config, planned_steps(config, len(load_task(config).y_train)))


def run_job(
    assignment: Assignment, store: RunStore, on_event: Callable[[Event], None], stop: StopFlag
) -> tuple[str, Any]:
    """Train one job and save it in `store`; the message to report: ("done", its result with
    its run id) or ("error", why it failed, in one line). Every executor trains with this."""
    try:
        config = RunConfig.from_dict(assignment.config)
        check_planned(config, assignment.limits)
        run_id, result = train_and_save(config, store, assignment.owner, on_event, stop)
    except Exception as error:  # the job fails, the worker lives on
        message = str(error) or type(error).__name__
        if not isinstance(error, ValueError | RuntimeError):
            message = traceback.format_exception_only(error)[-1].strip()
        return ("error", message)
    return ("done", {"run_id": run_id, **result.summary()})


def report_end(reports: Reports, job_id: str, message: tuple[str, Any]) -> None:
    """Tell the scheduler how a job ended, from the message `run_job` returned."""
    kind, payload = message
    if kind == "done":
        reports.job_ended(job_id, payload["status"], payload["reason"], payload)
    else:
        reports.job_ended(job_id, "failed", payload)


def recover_runs(store_path: str | Path) -> list[int]:
    """Mark the runs of dead processes (a worker that just died) "unfinished" in the store now,
    rather than whenever some process on that machine next opens it; their ids. Run it on the
    machine where the worker ran: only there can the store tell its process is gone."""
    try:
        with RunStore(store_path) as store:
            return store.recover()  # (opening it recovers too)
    except StoreError as error:  # the file went bad meanwhile: the next opener says so
        logging.getLogger(__name__).warning("a dead worker's run stays 'running': %s", error)
        return []
