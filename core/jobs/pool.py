"""A server's training jobs: the process-wide pool that every page submits to.

    job = submit(config, owner=student)      # a core.jobs.scheduler.Job: see there what it tells
    jobs = submit_all(configs, owner)        # a sweep: all queued, or none (ValueError)
    pool().jobs(owner=student)               # the jobs the server knows of

This module chooses, from the environment, where the jobs run and whose queue they wait in; the
scheduler (core.jobs.scheduler), the class's queue (core.jobs.class_queue) and the executors
(core.jobs.local, core.jobs.ray_jobs) do the work.

    LORA_LAB_RAY unset     `LocalProcesses`: worker processes on this machine, `$LORA_LAB_WORKERS`
                           of them (default: one per core). Nothing to install or start. The pool
                           is a `Pool` of its own, written down in the run database as LOCAL_QUEUE
                           (core.store.job_record): a server restarted after a crash takes up its
                           queued jobs again.
    LORA_LAB_RAY=auto      core.jobs.ray_jobs.RayExecutor: each job a task on a Ray cluster, here
    the LORA_LAB_RAY=host:port one `ray start` began on this machine (or one started in-process),
                           there a cluster's head; `$LORA_LAB_WORKERS` jobs at once (default: one
                           per CPU of the cluster). The pool is a `SharedPool`, this server's view
                           of its class's one queue: app servers that share a Ray cluster share
                           their queue too.

A `Pool` built directly, as the command line's sweep does, keeps a queue of its own (with
`default_executor()`, the executor the environment asks for).

Ray is an optional dependency (requirements-distributed.txt): this module imports the Ray
executor only when $LORA_LAB_RAY is set, so the default app neither needs Ray installed nor pays
its import. The variable is read once, when this module is first imported.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence

from core.common.config import RunConfig
from core.jobs.class_queue import SharedPool
from core.jobs.executors import ExecutorFactory
from core.jobs.local import LocalProcesses
from core.jobs.scheduler import Job, Pool
from core.store.runs import HOST

# An optional dependency, imported only when asked for: see the module's docstring.
if os.environ.get("LORA_LAB_RAY", "").strip():
    from core.jobs import ray_jobs
else:
    ray_jobs = None


def default_executor() -> ExecutorFactory:
    """The executor $LORA_LAB_RAY asks for: Ray's if set (when this module was imported), else
    local worker processes."""
    return LocalProcesses if ray_jobs is None else ray_jobs.RayExecutor


LOCAL_QUEUE = f"server@{HOST}"  # the name of a server's own queue in its run database's record
_pool: Pool | SharedPool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool | SharedPool:
    """The process-wide pool, started on first use and shut down when the process exits: with
    $LORA_LAB_RAY set, this server's view of its class's queue (SharedPool), else a Pool of worker
    processes that keeps its record (LOCAL_QUEUE). Its limits are the server's
    (core.common.limits.SERVER, changed by the environment)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            if ray_jobs is None:
                _pool = Pool(executor=LocalProcesses, record_as=LOCAL_QUEUE)
            else:
                _pool = SharedPool(queue=ray_jobs.ClassQueueHandle)
            atexit.register(_pool.shutdown)
        return _pool


def submit(config: RunConfig, owner: str = "local") -> Job:
    """Queue a run in the process-wide pool."""
    return pool().submit(config, owner)


def submit_all(configs: Sequence[RunConfig], owner: str = "local") -> list[Job]:
    """Queue several runs in the process-wide pool: all of them, or none."""
    return pool().submit_all(configs, owner)
