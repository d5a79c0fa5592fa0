"""The Compare page's sweep without the page: how far each of its jobs got, and its failures
grouped by reason (a sweep of a model that cannot load fails every run for the same reason,
said once), and how a run's settings read in a table ("—" for one a method has not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.common.config import RunConfig
from core.jobs.pool import Job

NO_SETTING = "—"  # a setting a method does not have (a rank for full fine-tuning): not "None"


@dataclass(frozen=True)
class SweepRow:
    """One job of a sweep as the progress table shows it."""

    method: str
    rank: str  # rank_text
    lr: str
    status: str
    progress: float  # of its planned steps, in [0, 1]


def progress(job: Job) -> float:
    """How far the job got: its last step of its planned steps (0 before the first)."""
    steps = [event.step for event in job.events if event.kind == "step"]
    return (steps[-1] if steps else 0) / max(job.config.steps or 0, 1)


def rows(sweep: Sequence[Job]) -> list[SweepRow]:
    return [
        SweepRow(
            method=job.config.method,
            rank=rank_text(job.config),
            lr=f"{job.config.learning_rate:g}",
            status=job.status,
            progress=progress(job),
        )
        for job in sweep
    ]


def failures(sweep: Sequence[Job]) -> dict[str, list[RunConfig]]:
    """The failed jobs' configs by reason, in the sweep's order ("?": no reason given)."""
    failed: dict[str, list[RunConfig]] = {}
    for job in sweep:
        if job.status == "failed":
            failed.setdefault(job.reason or "?", []).append(job.config)
    return failed


def rank_text(config: RunConfig) -> str:
    """The rank of a LoRA run, "—" for methods without one."""
    return str(config.rank) if config.method == "lora" else NO_SETTING


def setting_text(value: int | float | str | None) -> str:
    """A setting in a table: "—" for one a method does not have, 16 for an alpha of 16.0."""
    if value is None:
        return NO_SETTING
    return f"{value:g}" if isinstance(value, float) else str(value)


def busy(sweep: Sequence[Job]) -> bool:
    """Whether a job of the sweep still waits or runs (the page's button waits for them)."""
    return any(not job.done for job in sweep)
