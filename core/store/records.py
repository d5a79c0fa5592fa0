"""A stored run as the store returns it (RunRecord: its outcome, config and curves), what a live
view polls (RunProgress), and the runs as the table of runs shows them (TableRow) and which of
them compare with one another (comparable_runs)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.common.config import RunConfig, kind_of_dataset
from core.store.names import targets_text
from core.store.outcome import RunOutcome
from core.store.rundb import StoreError


@dataclass(kw_only=True)
class RunRecord(RunOutcome):
    """A stored run: its outcome, and whose and what it is. `history` and `snapshots` are
    filled by RunStore.get, empty in list()."""

    id: int
    name: str
    owner: str
    config: RunConfig
    created: float
    torch_threads: int | None
    has_weights: bool
    folder: str = field(default="", repr=False)  # its folder under runs/ (RunStore's)
    history: list[dict] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """What its task's data is, "images" or "text": which metric judges it."""
        return kind_of_dataset(self.config.dataset)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly fields for tables and the command line (no history)."""
        return {
            "run_id": self.id,
            "name": self.name,
            "owner": self.owner,
            "created": self.created,
            **self.as_json(),
            "lr": self.config.learning_rate,  # the rate it trained at (the method's, if unset)
            "config": self.config.to_dict(),
        }


@dataclass
class RunProgress:
    """What a run logged after a step, and where it stands now: what a live view polls."""

    status: str
    reason: str
    history: list[dict]  # metrics after the step, in order (as RunRecord.history)
    snapshots: list[dict]  # spectrum snapshots after the step, in order


@dataclass(frozen=True)
class TableRow:
    """A run as the table of runs shows it (the Compare page, and its CSV): its results first
    (by one metric: table_row's), then every setting that tells two runs of a class apart. A
    setting a method does not have (rank, alpha, target layers) is None; only a LoRA run can be
    a DoRA one."""

    id: int
    name: str
    student: str  # the name its owner gave, "" if none
    before: float | None  # the metric on the test split before training
    after: float | None  # and after
    source_after: float | None  # on its source (pretraining) task after training
    method: str
    rank: int | None
    alpha: float | None
    dora: bool
    targets: str | None  # "all-linear", or the layers' names and globs, comma-separated
    lr: float
    status: str
    trainable_params: int | None
    seconds: float | None


def table_row(record: RunRecord, student: str = "", metric: str = "acc") -> TableRow:
    """`record` as a row of the table of runs; `student`: the name its owner gave; `metric`:
    the field of the results shown ("acc": accuracy, "bpc": bits per character)."""
    config = record.config
    lora = config.method == "lora"
    return TableRow(
        id=record.id,
        name=record.name,
        student=student,
        before=getattr(record, f"test_{metric}_before"),
        after=getattr(record, f"test_{metric}_after"),
        source_after=getattr(record, f"source_{metric}_after"),
        method=config.method,
        rank=config.rank if lora else None,
        alpha=config.alpha if lora else None,
        dora=lora and config.dora,
        targets=targets_text(config.targets) if lora else None,
        lr=config.learning_rate,
        status=record.status,
        trainable_params=record.trainable_params,
        seconds=record.seconds,
    )


def of_kind(records: Iterable[RunRecord], kind: str) -> list[RunRecord]:
    """The runs on data of `kind` ("images" or "text"): the runs one metric axis can hold (an
    accuracy and a count of bits are not one number), as comparable_runs keeps to one model."""
    return [record for record in records if record.kind == kind]


def comparable_runs(
    record: RunRecord,
    layer: str,
    candidates: Iterable[RunRecord],
    changed_layers: Callable[[int], Collection[str]],
) -> list[int]:
    """The ids of the candidates whose update of `layer` can be compared with `record`'s (the
    subspace similarity φ of two runs): the same model, so the same W0 and the same shape, and
    a change in that layer. `changed_layers(run_id)` names the layers a run changed (the caller
    decides how to find and keep them); a run it cannot read (StoreError) is left out."""
    ids = []
    for other in candidates:
        if other.id == record.id or other.config.model != record.config.model:
            continue
        with contextlib.suppress(StoreError):
            if layer in changed_layers(other.id):
                ids.append(other.id)
    return ids
