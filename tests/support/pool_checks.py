"""What the scheduler tests check of a job, on any back end (the local pool, Ray, the class
queue)."""

from __future__ import annotations

import time

from core.jobs.scheduler import Job, Pool
from core.store.runs import RunStore


def finish(*submitted: Job) -> None:
    for job in submitted:
        assert job.wait(120), f"{job.id} did not finish"


CURVE = ("train_loss", "val_loss", "val_acc", "val_bpc", "sample")
"""What a history step holds that a run computed (not its timings; a text run's bits per
character and sample too, None on an image run)."""


def curve(history: list[dict]) -> list[tuple]:
    """A run's history as what it computed (CURVE), step by step."""
    return [tuple(step.get(key) for key in CURVE) for step in history]


def numbers(pool: Pool, job: Job) -> tuple:
    """What the job's run computed (not its timings), as stored."""
    with RunStore(pool.store_path) as store:
        record = store.get(job.run_id)
    return curve(record.history), record.snapshots, record.test_acc_after, record.test_bpc_after


def samples(job: Job) -> list[tuple[int, str]]:
    """A text job's samples as its events brought them to the app: (step, text), in order."""
    return [
        (event.step, event.data["sample"])
        for event in job.events_since(0)
        if event.kind == "step" and event.data.get("sample") is not None
    ]


def wait_for_steps(job: Job, steps: int) -> None:
    """Until the job has trained `steps` steps (AssertionError if it ends first, or takes 2 min)."""
    deadline = time.time() + 120
    while job.steps_done < steps:
        assert time.time() < deadline and not job.done, f"{job.id} made no progress"
        time.sleep(0.02)
