"""A run's outcome and each step of its history: what a run measured, said once.

The training reports it (core.training.train.RunResult is one), the store keeps it (each figure
is a column of the runs table, rundb.outcome_columns, and a stored run, RunRecord, is one) and
the command line prints it (as_json). Adding a metric is adding a field here; the store's
column, its row and the JSON follow from it. The same holds for a step of the curves (Step):
the training writes one, the store keeps it as a row of its metrics table, the pages draw it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(kw_only=True)
class RunOutcome:
    """How a run ended and what it measured. A figure is None where there is none: a run still
    training, one that failed (its weights are not usable), or a question the run cannot answer
    (no source task for an ImageNet model)."""

    status: str  # running | finished | stopped | failed | unfinished | imported
    reason: str  # why it stopped or failed; "" when finished
    seconds: float | None
    test_acc_before: float | None
    test_acc_after: float | None
    # Accuracy on the source task (the upright MNIST-5k test split the zoo models were
    # pretrained on: core.training.train.source_split), before and after: how much of it the
    # run forgot.
    source_acc_before: float | None
    source_acc_after: float | None
    trainable_params: int | None
    total_params: int | None
    num_classes: int | None
    # A text task's headline, in bits per character on held-out text (lower is better): on the
    # target text and on the prose the model was pretrained on. None on an image task, whose
    # accuracy above is the headline (on text it is the next-character accuracy).
    test_bpc_before: float | None = None
    test_bpc_after: float | None = None
    source_bpc_before: float | None = None
    source_bpc_after: float | None = None

    def outcome(self) -> RunOutcome:
        """Only the outcome of a RunResult or a RunRecord (no models, no history)."""
        return RunOutcome(**self.as_json())

    def as_json(self) -> dict[str, Any]:
        """The outcome's fields as plain JSON values, in their order."""
        return {name: getattr(self, name) for name in FIELDS}


FIELDS = tuple(field.name for field in fields(RunOutcome))
# What a run measured: the fields past its status and reason, which a run has from its start.
FIGURES = tuple(name for name in FIELDS if name not in ("status", "reason"))


@dataclass(frozen=True)
class Step:
    """One step of a run's history: the training loss of that step's batch, and at an
    evaluation (every eval_interval steps, and the last) the validation loss and accuracy (and
    on a text task the bits per character and a sample of the model's writing), else None.
    Step 0 is the base model, measured before any training."""

    step: int
    train_loss: float | None  # None at step 0: no batch trained yet
    val_loss: float | None
    val_acc: float | None
    elapsed: float  # seconds since the run started (building the model included)
    steps_per_s: float  # the training speed so far (0 at step 0)
    val_bpc: float | None = None  # a text task's: bits per character at an evaluation
    sample: str | None = None  # a text task's: what the model writes from its prompt

    def as_json(self) -> dict[str, Any]:
        """The step as the store and the pages take it: {"step": 3, "train_loss": …}."""
        return asdict(self)


STEP_FIELDS = tuple(field.name for field in fields(Step))
