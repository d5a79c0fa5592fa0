"""What the scheduler tests check of a job, on any back end (the local pool, Ray, the class
queue)."""

from __future__ import annotations

import time

from core.jobs.scheduler import Job, Pool
from core.store.runs import RunStore


def finish(*submitted: Job) -> None:
    for job in submitted:
        assert job.wait(120), f"{job.id} did not finish"


def numbers(pool: Pool, job: Job) -> tuple:
    """What the job's run computed (not its timings), as stored."""
    with RunStore(pool.store_path) as store:
        record = store.get(job.run_id)
    curve = [(h["train_loss"], h["val_loss"], h["val_acc"]) for h in record.history]
    return curve, record.snapshots, record.test_acc_after


def wait_for_steps(job: Job, steps: int) -> None:
    """Until the job has trained `steps` steps (AssertionError if it ends first, or takes 2 min)."""
    deadline = time.time() + 120
    while job.steps_done < steps:
        assert time.time() < deadline and not job.done, f"{job.id} made no progress"
        time.sleep(0.02)
