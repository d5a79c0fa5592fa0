"""What one job may ask for, so that one link cannot take a worker away from a class for hours.

A shared server bounds every job it accepts; the command line on one's own machine has wider
bounds, never none. Both start from a default here and read the same environment variables:

    LORA_LAB_MAX_STEPS             training steps a run may plan (epochs × batches count too)
    LORA_LAB_MAX_BATCH_SIZE        images per step
    LORA_LAB_MODELS                the models runs may use: names separated by commas, or "all"
    LORA_LAB_MAX_JOBS_PER_STUDENT  one owner's runs queued or running at once
    LORA_LAB_MAX_UPLOAD_MB         the size of an adapter file to inspect (MiB): the Compare page's
                                   upload, a zip on the command line (a laptop's user raises it)

    limits = Limits.from_env(SERVER, known_models=zoo.names())   # ValueError naming a variable
    limits.check(config)           # before queueing: LimitError naming the limit and its variable
    limits.check_planned(config, steps)       # once the data says how many steps epochs make
    limits.check_jobs(active, adding)         # one owner's runs queued or running

The other settings need no limit of their own: rank and the planted rank cannot exceed the
model's layers (RunConfig.validate), top_k beyond the model's blocks trains them all, and the
eval and snapshot intervals cost at most one evaluation and one snapshot per step, so the steps
bound them too. This module imports no torch: the app reads it before any training starts.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from core.common.config import RunConfig, SettingError

VARIABLES = {  # field → the environment variable that sets it
    "max_steps": "LORA_LAB_MAX_STEPS",
    "max_batch_size": "LORA_LAB_MAX_BATCH_SIZE",
    "models": "LORA_LAB_MODELS",
    "max_jobs_per_student": "LORA_LAB_MAX_JOBS_PER_STUDENT",
    "max_upload_mb": "LORA_LAB_MAX_UPLOAD_MB",
}
EVERY_MODEL = "all"  # LORA_LAB_MODELS=all: no limit on the model


class LimitError(SettingError):
    """A job over one limit: which (`limit`), what the job asked for, what is allowed. Its text
    is the command line's line, naming the variable that changes the limit; a page says it in
    the student's language (the catalog's limits.<limit>)."""

    def __init__(self, line: str, limit: str, asked: object, allowed: object) -> None:
        super().__init__(line, f"limits.{limit}", {"asked": asked, "allowed": allowed})
        self.limit, self.asked, self.allowed = limit, asked, allowed

    def __reduce__(self) -> tuple:
        return LimitError, (str(self), self.limit, self.asked, self.allowed)


@dataclass(frozen=True)
class Limits:
    """The bounds on one job (and on one owner's jobs), and whose they are for messages."""

    scope: str  # "this server" or "the command line", as the messages say it
    max_steps: int
    max_batch_size: int
    models: tuple[str, ...] | None  # None: every model in the zoo
    max_jobs_per_student: int
    max_upload_mb: int  # an adapter to inspect: the page's upload, a zip on the command line

    @classmethod
    def from_env(
        cls,
        defaults: Limits,
        known_models: Collection[str] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Limits:
        """`defaults` with what the environment sets. A value that does not parse, or names a
        model not in `known_models`, is a one-line ValueError naming its variable."""
        changes: dict = {}
        for name, variable in VARIABLES.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            if name == "models":
                changes[name] = _parse_models(text, known_models)
            else:
                changes[name] = parse_count(variable, text)
        return replace(defaults, **changes)

    def check(self, config: RunConfig) -> None:
        """Raise a one-line ValueError for the first limit the config is over. A run planned
        by epochs is checked here only as far as its settings tell (each epoch is at least one
        step); `check_planned` checks its real number of steps."""
        if self.models is not None and config.model not in self.models:
            allowed = ", ".join(self.models)
            raise LimitError(
                f"model {config.model!r} is not allowed on {self.scope} (allowed: "
                f"{allowed}; set {VARIABLES['models']} to change it)",
                "models",
                config.model,
                allowed,
            )
        if config.batch_size > self.max_batch_size:
            raise self._over(f"batch_size {config.batch_size}", "max_batch_size", config.batch_size)
        if config.steps is not None:
            self.check_planned(config, config.steps)
        elif config.epochs > self.max_steps:
            raise self._over(
                f"epochs {config.epochs} (at least one step each)", "max_steps", config.epochs
            )

    def check_planned(self, config: RunConfig, steps: int) -> None:
        """The steps the run will take (core.training.train.planned_steps) must be within the
        limit."""
        if steps <= self.max_steps:
            return
        if config.steps is not None:
            raise self._over(f"steps {steps}", "max_steps", steps)
        raise self._over(
            f"epochs {config.epochs} at batch_size {config.batch_size} ({steps} steps)",
            "max_steps",
            steps,
        )

    def check_jobs(self, active: int, adding: int = 1) -> None:
        """An owner with `active` runs queued or running may add `adding` more, within the cap."""
        if active + adding > self.max_jobs_per_student:
            raise self._over(
                f"{active + adding} runs queued or running for one student",
                "max_jobs_per_student",
                active + adding,
            )

    def _over(self, what: str, name: str, asked: int) -> LimitError:
        allowed = getattr(self, name)
        line = f"{what} is above {self.scope}'s limit of {allowed}"
        return LimitError(f"{line} (set {VARIABLES[name]} to change it)", name, asked, allowed)


# Every lesson, preset and sweep fits the server's defaults (tests/common/test_limits.py checks it):
# the pages' runs are 200 steps at batch size 64, and the largest sweep the Compare page offers
# is 9 runs. The ImageNet models take 1-3 s a step on one core (the digit models 0.03-0.07 s,
# gpt's default run about 0.05 s), so a classroom server offers the models pretrained here
# unless its teacher sets LORA_LAB_MODELS.
SERVER = Limits(
    scope="this server",
    max_steps=2000,
    max_batch_size=256,
    models=("mlp", "cnn", "vit", "gpt"),
    max_jobs_per_student=10,
    max_upload_mb=64,  # a LLaMA-7B adapter at r = 16 in bf16 (76 MiB) needs it raised
)
COMMAND_LINE = Limits(
    scope="the command line",
    max_steps=100_000,
    max_batch_size=4096,
    models=None,
    max_jobs_per_student=100,
    max_upload_mb=4096,
)


def parse_count(variable: str, text: str) -> int:
    """A count from the environment variable `variable`: digits 0-9 only (Python's int() also
    reads "٣" and fails on "²", which str.isdigit() accepts), ≥ 1; else a ValueError naming
    the variable."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{variable} must be a whole number ≥ 1 (got {text!r})")
    return int(text)


def _parse_models(text: str, known: Collection[str] | None) -> tuple[str, ...] | None:
    variable = VARIABLES["models"]
    if text.lower() == EVERY_MODEL:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError(f"{variable} must name at least one model, or be {EVERY_MODEL!r}")
    unknown = [name for name in names if known is not None and name not in known]
    if unknown:
        raise ValueError(
            f"{variable} names unknown model(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(known)}"
        )
    return names
