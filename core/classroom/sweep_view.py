"""The Compare page's sweep without the page: its settings as one typed value and the runs they
make, how far each of its jobs got, its failures grouped by reason (a sweep of a model that
cannot load fails every run for the same reason, said once), and how a run's settings read in
a table ("—" for one a method has not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.classroom import links
from core.common import config
from core.common.config import RunConfig
from core.jobs.scheduler import Job
from core.training import zoo
from core.training.kinds import KINDS, Metric

NO_SETTING = "—"  # a setting a method does not have (a rank for full fine-tuning): not "None"


@dataclass(frozen=True)
class SweepForm:
    """The Compare page's sweep settings (links.COMPARE_DEFAULTS' keys for the sweep)."""

    model: str
    dataset: str
    shift: str
    ranks: list[int]
    baselines: bool  # also head-only and full fine-tuning
    steps: int
    seed: int

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> SweepForm:
        return cls(**{field.name: settings[field.name] for field in fields(cls)})

    def configs(self) -> list[RunConfig]:
        """The runs the sweep launches (links.compare_configs), LoRA on the layers a run on the
        model starts from (sweep_targets)."""
        return links.compare_configs(asdict(self), sweep_targets(self.model))

    def task(self, model: str) -> RunConfig:
        """The sweep's task (dataset, shift, seed) for ``model``: what an imported adapter is
        measured on."""
        return RunConfig(model=model, dataset=self.dataset, shift=self.shift, seed=self.seed)

    @property
    def kind(self) -> str:
        """What the sweep's model reads, "images" or "text": the runs the page compares."""
        return config.kind_of_model(self.model)

    @property
    def metric(self) -> Metric:
        """How runs of the sweep's kind are judged (its model's kind of data)."""
        return KINDS[self.kind].metric


def sweep_targets(model: str) -> str | list[str]:
    """The layers a sweep's LoRA runs adapt: the model's own starting targets where it has
    them (config.MODEL_DEFAULTS: W_q and W_v of the language model, the LoRA paper's choice),
    else zoo.default_targets, which picks a layer of every model."""
    return config.MODEL_DEFAULTS.get(model, {}).get("targets") or zoo.default_targets(model)


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
