"""Training jobs on a Ray cluster: the executor behind $LORA_LAB_RAY (core.jobs.pool picks it).

    LORA_LAB_RAY=auto                   join the Ray instance `ray start` began on this machine,
                                        or start one inside this process if there is none
    LORA_LAB_RAY=10.0.0.5:6379          a cluster's head, as `ray start --head` printed it
    LORA_LAB_RAY=ray://10.0.0.5:10001   the same cluster through Ray Client

Each job is one Ray task asking for `threads` CPUs (its share, `num_cpus`) and, when its config
says device=cuda, one GPU (`num_gpus=1`), so Ray places GPU runs on GPU nodes. A task rather
than an actor per job: Ray keeps its worker processes between tasks, so after the first job a
worker has torch imported and the data and model cached, and a job starts in milliseconds; an
actor would start a new process each time. Every task trains with executors.run_job and writes
its run's steps to the run store (the meeting point: any app server reads a run from there).

Live events and Stop go through one small actor per executor (core.jobs.ray_mailbox.Mailbox): a job
posts its events in batches, at most every POLL_S, and each post's reply says whether it was
asked to stop; the executor's thread collects the events every POLL_S and hands them to the
scheduler, so a point reaches the page about 0.2 s after it was computed.

A job is never retried (`max_retries=0`): a rerun would be a second run behind the student's
back. When its worker process dies (killed, out of memory, its node lost), the job fails with
Ray's reason, and a small task on the node where it ran marks its run "unfinished" in the store
(only that machine can tell the process is gone), so it never stays "running".

App servers that share a cluster share one queue: `ClassQueueHandle` finds or starts it, a
detached actor that runs core.jobs.class_queue.ClassQueue (a Pool with this executor), and so the
executor itself runs there, for the whole class.

Ray is optional (requirements-distributed.txt) and imported here only: core.jobs.pool imports this
module only when $LORA_LAB_RAY is set. A process joins one Ray cluster, the first executor's,
and stays connected until it exits (Ray's own exit handler disconnects it, and stops an instance
that "auto" started).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from core.jobs.executors import (
    Assignment,
    Reports,
    configured_workers,
    prepare_worker,
    recover_runs,
    report_end,
    run_job,
    threads_per_job,
)
from core.jobs.ray_mailbox import Mailbox
from core.store.job_record import class_id
from core.store.runs import RunStore
from core.training.train import Event

try:  # optional: without it, RayExecutor says in one line what to install
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:
    ray = None

SETTING = "LORA_LAB_RAY"
FORMS = "auto, host:port (a cluster's head) or ray://host:port"
ADDRESS = re.compile(r"(ray://)?(?P<host>[\w.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})")
CONNECT_TIMEOUT_S = 5  # an address where nothing answers is reported after this long
NAMESPACE = "lora-lab"  # the Ray namespace of the classes' queues
CALL_TIMEOUT_S = 60  # a class's queue that has not answered after this long is not reachable
POLL_S = 0.1  # how often a job posts its events, and the executor collects them and ends
log = logging.getLogger(__name__)


# -- joining the cluster --------------------------------------------------------------------------
def connect(setting: str) -> None:
    """Join the Ray cluster that `setting` ($LORA_LAB_RAY) names, unless this process already
    has, or is an actor on a cluster (a class's queue: its setting is the servers'). ValueError,
    one line naming the variable: a malformed value, Ray not installed, an address where nothing
    answers, a second cluster (a process joins one)."""
    if ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id():
        return
    address = ray_address(setting)
    if ray is None:
        raise ValueError(
            f"{SETTING} is set, but Ray is not installed: "
            "pip install -r requirements-distributed.txt, or unset it"
        )
    _join(setting.strip(), address)


@functools.cache  # once per process and setting (a failure is not kept: it is tried again)
def _join(setting: str, address: str | None) -> None:
    if ray.is_initialized():
        raise ValueError(f"{SETTING}={setting}: this process is on another Ray cluster already")
    if address is not None:
        _check_answers(setting)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as error:
        why = _line(error)  # e.g. a cluster that wants a token (RAY_AUTH_MODE) this one lacks
        raise ValueError(f"{SETTING}={setting}: Ray could not join or start it: {why}") from None


def ray_address(setting: str) -> str | None:
    """The address ray.init takes for a value of $LORA_LAB_RAY: None for "auto" (start or
    join the local instance). ValueError for anything but the forms FORMS lists."""
    setting = setting.strip()
    if setting == "auto":
        return None
    match = ADDRESS.fullmatch(setting)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{SETTING} must be {FORMS} (got {setting!r})")
    return setting


def _check_answers(setting: str) -> None:
    """ValueError unless something accepts a connection at the address: ray.init itself would
    wait minutes for a head that is not there."""
    match = ADDRESS.fullmatch(setting.strip())
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ValueError(
            f"{SETTING}={setting}: no Ray cluster answers there ({error.strerror or error}); "
            "start its head (ray start --head) or correct the address"
        ) from None


def _line(error: BaseException) -> str:
    """An error as one line: its first."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# -- the executor, in the scheduler's process ------------------------------------------------------
class RayExecutor:
    """Runs jobs as Ray tasks, at most `workers` at a time (default: $LORA_LAB_WORKERS, else one
    per CPU of the cluster), each with the cluster's CPUs // workers threads (at most the CPUs
    of its largest node). Built as the other executors are, `address` standing in for
    $LORA_LAB_RAY (tests, benchmarks). It runs where its scheduler does: in an app server's
    class queue (ClassQueueHandle), or in the command line's process."""

    def __init__(
        self,
        reports: Reports,
        workers: int | None,
        store_path: str | Path,
        address: str | None = None,
    ) -> None:
        connect(os.environ.get(SETTING, "") if address is None else address)
        self.reports, self.store_path = reports, str(store_path)
        resources = ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 0)))
        self.workers = workers or configured_workers() or cpus
        # A job runs on one node: never more threads than the largest node has CPUs, or Ray
        # could place no job at all (2 workers of 1 CPU, with LORA_LAB_WORKERS=1).
        nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        largest = max(nodes, default=cpus)
        self.threads = min(threads_per_job(self.workers, cpus), max(1, int(largest)))
        self._has_gpus = resources.get("GPU", 0) > 0  # else a cuda run fails at once, not waits
        self._lock = threading.Lock()
        self._closing = False
        self._running: dict[str, Any] = {}  # job id → its task's ObjectRef
        self._nodes: dict[str, str] = {}  # job id → the node it runs on (from its hello)
        # Restarted if its process dies (with the events in it then lost), calls retried.
        mailbox = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Mailbox)
        self._mailbox = mailbox.remote()
        self._job = ray.remote(max_retries=0)(train_job)
        self._recover = ray.remote(num_cpus=0, max_retries=0)(recover_runs)
        # Only this executor's thread uses these two: refs of tasks that are not jobs.
        self._ending: dict[Any, tuple[str, str]] = {}  # recovery task → (job id, reason)
        warm = ray.remote(num_cpus=self.threads, scheduling_strategy="SPREAD")(warm_worker)
        self._warming = [warm.remote(self.store_path, self.threads) for _ in range(self.workers)]
        self._thread = threading.Thread(target=self._watch, name="lora-lab-ray", daemon=True)
        self._thread.start()

    # -- Executor ---------------------------------------------------------------------------
    def idle(self) -> int:
        with self._lock:
            return 0 if self._closing else self.workers - len(self._running)

    def start(self, assignment: Assignment) -> bool:
        gpus = 1 if assignment.config.get("device") == "cuda" and self._has_gpus else 0
        with self._lock:
            if self._closing or len(self._running) >= self.workers:
                return False
            job = self._job.options(num_cpus=self.threads, num_gpus=gpus)
            self._running[assignment.job_id] = job.remote(
                assignment, self._mailbox, self.store_path, self.threads
            )
            return True

    def stop(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._running:
                self._mailbox.stop.remote(job_id)

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            self._closing = True
            for job_id in self._running:
                self._mailbox.stop.remote(job_id)
        self._thread.join(timeout)  # the running jobs end at their next step
        with self._lock:
            stuck = list(self._running.values())
        for ref in stuck:  # its run is marked when its machine next opens the store
            ray.cancel(ref, force=True)
        ray.kill(self._mailbox)

    # -- inside ------------------------------------------------------------------------------
    def _watch(self) -> None:
        """The executor's thread: pass events on and report ends, every POLL_S, until it is
        closing and no job runs."""
        while ray.is_initialized():  # (not once Ray's exit handler has disconnected)
            with self._lock:
                if self._closing and not self._running and not self._ending:
                    return
                jobs = {ref: job_id for job_id, ref in self._running.items()}
            refs = [*jobs, *self._ending, *self._warming]
            if not refs:
                time.sleep(POLL_S)
                continue
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
            try:
                self._deliver()  # after the wait: a job that ended has posted all its events
            except ray.exceptions.RayError as error:
                log.warning("the jobs' mailbox is gone (%s): their events are lost", _line(error))
            for ref in ready:
                if ref in jobs:
                    self._ended(jobs[ref], ref)
                elif ref in self._ending:
                    self._recovered(ref)
                else:
                    self._warmed(ref)

    def _deliver(self) -> None:
        events, nodes = ray.get(self._mailbox.take.remote())
        self._nodes.update(nodes)
        for job_id, kind, step, data in events:
            self.reports.job_event(job_id, Event(kind, step, data))

    def _ended(self, job_id: str, ref: Any) -> None:
        with self._lock:  # free before reporting, so the scheduler can start the next job
            del self._running[job_id]
        self._mailbox.forget.remote(job_id)
        node = self._nodes.pop(job_id, None)
        try:
            message = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # around run_job: its code, its mailbox
            message = ("error", _cause(error))
        except ray.exceptions.RayError as error:  # its worker process died, or its node
            reason = f"its Ray worker died: {_line(error)}"
            if node is None:  # before it began: no run was created
                self.reports.job_ended(job_id, "failed", reason)
            else:  # mark its run before the job ends: whoever waits on it sees it repaired
                on_node = NodeAffinitySchedulingStrategy(node, soft=False)
                recovery = self._recover.options(scheduling_strategy=on_node)
                self._ending[recovery.remote(self.store_path)] = (job_id, reason)
            return
        report_end(self.reports, job_id, message)

    def _recovered(self, ref: Any) -> None:
        job_id, reason = self._ending.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as error:  # its node is gone too
            log.warning("run of %s stays 'running' in the store: %s", job_id, _line(error))
        self.reports.job_ended(job_id, "failed", reason)

    def _warmed(self, ref: Any) -> None:
        self._warming.remove(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as error:  # its jobs will fail the same way, and say so
            log.warning("a Ray worker could not get ready for LoRA Lab: %s", _cause(error))


def _cause(error: Any) -> str:
    """What went wrong inside a Ray task, in one line (not Ray's traceback)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return traceback.format_exception_only(cause)[-1].strip()
    return _line(error)


# -- the class's queue: one for all app servers of a class ----------------------------------------
class ClassQueueHandle:
    """An app server's line to its class's queue: a detached Ray actor running `body`
    (core.jobs.class_queue.ClassQueue, a Pool) with the Ray executor, named after the class whose
    runs the run store keeps (`queue_name`) in the NAMESPACE namespace. The first server of a class
    starts it, with its `workers`, `store_path` and `limits`; every later one finds it by name
    (get_if_exists), so all servers over one run store and one cluster share one queue. Detached, it
    outlives the server that started it, and lives as long as the cluster (or until `end`); after an
    update of LoRA Lab, restart the cluster so that the queue runs the new code. It asks for no CPU:
    it schedules, the jobs train. Ray restarts it if its process dies, and it rebuilds its queue
    from the run database (ClassQueue).

    Built as core.jobs.class_queue.SharedPool builds it, `address` standing in for $LORA_LAB_RAY
    (tests).
    """

    def __init__(
        self,
        body: type,
        workers: int | None,
        store_path: str,
        limits: Any,
        address: str | None = None,
    ) -> None:
        connect(os.environ.get(SETTING, "") if address is None else address)
        actor = ray.remote(num_cpus=0, max_restarts=-1)(body).options(
            name=queue_name(store_path),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        )
        self._actor = actor.remote(workers, store_path, limits, RayExecutor)

    def call(self, method: str, *args: Any) -> Any:
        """The queue's answer to `method(*args)`. What the method raised, if a ValueError or a
        RuntimeError (a limit, a bad setting); any other failure, or no answer within
        CALL_TIMEOUT_S, is a one-line ValueError naming $LORA_LAB_RAY."""
        try:
            return ray.get(getattr(self._actor, method).remote(*args), timeout=CALL_TIMEOUT_S)
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, ValueError | RuntimeError):
                raise error.cause from None
            why = f"failed: {_cause(error)}"
        except ray.exceptions.RayError as error:  # its actor died (restarting), a timeout
            why = f"does not answer: {_line(error)}"
        raise ValueError(f"the class's queue on the Ray cluster ({SETTING}) {why}")

    def end(self) -> None:
        """End the queue's actor (its jobs first: ClassQueue.shutdown)."""
        ray.kill(self._actor)


def queue_name(store_path: str) -> str:
    """The name of the queue of the class whose runs are kept at `store_path`: the id that its
    run database keeps (core.store.job_record.class_id), so that servers that share a run
    database share a queue however they spell its URL (localhost or 127.0.0.1); and it
    carries no password."""
    return f"queue-{class_id(store_path)}"


# -- on a Ray worker ------------------------------------------------------------------------------
@functools.cache
def _prepared(store_path: str) -> RunStore:
    """This worker process's store, opened once and kept across its jobs (with the caches
    warmed), as a local worker process keeps its own."""
    return prepare_worker(store_path, torch.get_num_threads())


def warm_worker(store_path: str, threads: int) -> None:
    """A Ray worker gets ready before the first job comes (torch, the store, the caches)."""
    torch.set_num_threads(threads)
    _prepared(store_path)


def train_job(
    assignment: Assignment, mailbox: Any, store_path: str, threads: int
) -> tuple[str, Any]:
    """One job, as a Ray task: train it with run_job, posting its events to the mailbox."""
    torch.set_num_threads(threads)  # (a worker may have run jobs of another thread share)
    store = _prepared(store_path)
    node = ray.get_runtime_context().get_node_id()
    ray.get(mailbox.hello.remote(assignment.job_id, node))  # before any run exists to be marked
    outbox = _Outbox(mailbox, assignment.job_id)
    message = run_job(assignment, store, outbox, outbox)
    outbox.close()
    return message


class _Outbox:
    """A job's end of the mailbox, inside its task: both its `on_event` and its stop flag.

    Events go out in batches, one actor call per POLL_S rather than one per event, and each
    post's reply says whether the job was asked to stop; `is_set` reads a reply once it has
    come, never waiting for it, and asks again when nothing was posted for POLL_S."""

    def __init__(self, mailbox: Any, job_id: str) -> None:
        self.mailbox, self.job_id = mailbox, job_id
        self.batch: list[tuple[str, int, dict[str, Any]]] = []
        self.reply: Any = None  # the last post's answer, until read
        self.sent = 0.0  # time.monotonic() of the last post
        self.stopping = False

    def __call__(self, event: Event) -> None:
        self.batch.append((event.kind, event.step, event.data))
        if event.kind == "start" or time.monotonic() - self.sent >= POLL_S:
            self.post()

    def post(self) -> None:
        self.reply = self.mailbox.post.remote(self.job_id, self.batch)
        self.batch, self.sent = [], time.monotonic()

    def is_set(self) -> bool:
        if self.reply is not None and ray.wait([self.reply], timeout=0)[0]:
            with contextlib.suppress(ray.exceptions.RayError):  # the mailbox was lost: ask again
                self.stopping = self.stopping or ray.get(self.reply)
            self.reply = None
        if self.reply is None and time.monotonic() - self.sent >= POLL_S:
            self.post()
        return self.stopping

    def close(self) -> None:
        """Post what is left and wait until the mailbox has it: one caller's calls to an actor
        run in order, so every event is there before the job's end is reported. (If the
        mailbox was lost meanwhile, so are they; the run is in the store all the same.)"""
        self.post()
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get(self.reply)
