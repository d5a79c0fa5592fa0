"""Recording a training run into the run store: train and save in one call.

A run's steps reach the store while it trains (_Recorder: at each evaluation, and at least
every FLUSH_S seconds), so a page on any app server shows a run's live curves by reading them
(RunStore.steps_since), whichever server or command line started it. Its outcome and what it
trained (trained_tensors) are saved when it ends. If the database cannot be reached when the run
writes to it (a PostgreSQL server restarting), the run waits up to SAVE_WAIT_S for it to come
back: whether it is starting, saving its steps, or finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from core.common.config import RunConfig
from core.store import rundb
from core.store.runs import RunStore, StoreError
from core.training.train import Event, RunResult, StopFlag, train

FLUSH_S = 1.0  # a training saves its steps at least this often, for live views elsewhere
SAVE_WAIT_S = 30.0  # how long a run waits for an unreachable database to come back
RETRY_EVERY_S = 1.0
T = TypeVar("T")


def train_and_save(
    config: RunConfig,
    store: RunStore,
    owner: str = "local",
    on_event: Callable[[Event], None] | None = None,
    stop: StopFlag | None = None,
) -> tuple[int, RunResult]:
    """Train one run and keep it in the store; returns (run_id, result). If the database
    cannot be reached (a PostgreSQL server restarting), a finished run waits up to SAVE_WAIT_S
    for it to come back; if it does not, StoreError says what became of the run."""
    recorder = _Recorder(store, config, owner, on_event or (lambda event: None))
    trained = False  # (then the run waited for the database while it trained)
    try:
        result = train(config, recorder, stop)
        trained = True
        _patiently(lambda: finish(store, recorder.run_id, result))
    except Exception as error:
        if recorder.run_id is not None:
            store.fail(recorder.run_id, str(error))  # never raises: this error is the one
            if isinstance(error, rundb.Unreachable):
                raise StoreError(_not_saved(recorder.run_id, error, trained)) from None
        raise
    return recorder.run_id, result


def finish(store: RunStore, run_id: int, result: RunResult) -> None:
    """Save a run's outcome, its history and (unless it failed: its weights are not usable)
    what it trained, as RunStore.finish does: all or nothing."""
    tensors = None if result.status == "failed" else trained_tensors(result.model)
    store.finish(run_id, result.outcome(), result.history, result.snapshots, tensors)


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run changed: its trainable parameters, plus for PiSSA the base weights of the
    adapted layers (PiSSA moves W0's top singular part into B A and keeps only the residual)."""
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if getattr(module, "init", None) == "pissa":
            tensors[f"{name}.base.weight"] = module.base.weight
    return {n: t.detach().cpu().contiguous().clone() for n, t in tensors.items()}


class _Recorder:
    """Passes events on, and saves progress to the store after each evaluation and at least
    every FLUSH_S seconds, so a crash loses at most that much, and a page on any server sees
    the curve grow (RunStore.steps_since). A step is saved whole, with its snapshot: when the
    next step begins (a snapshot follows the step it belongs to), so a reader that has step s
    has everything up to s. The run row is created at the "start" event: a config the model
    rejects (rank too large, unknown layer) fails before and leaves no row."""

    def __init__(self, store: RunStore, config: RunConfig, owner: str, forward: Callable) -> None:
        self.store, self.config, self.owner, self.forward = store, config, owner, forward
        self.run_id: int | None = None
        self.history: list[dict] = []
        self.snapshots: list[dict] = []
        self.saved = time.monotonic()
        self.due = False  # the steps so far are to be saved once the last one is whole

    def __call__(self, event: Event) -> None:
        if event.kind == "start":
            self.run_id = _patiently(lambda: self.store.create(self.config, self.owner))
        elif event.kind == "step":
            if self.due:
                _patiently(lambda: self.store.append(self.run_id, self.history, self.snapshots))
                self.history, self.snapshots = [], []
                self.saved, self.due = time.monotonic(), False
            self.history.append(event.data)
            evaluated = event.data["val_loss"] is not None
            self.due = evaluated or time.monotonic() - self.saved >= FLUSH_S
        elif event.kind == "snapshot":
            self.snapshots.append(event.data)
        self.forward(event)


def _patiently(write: Callable[[], T]) -> T:
    """A write of the run, tried again every RETRY_EVERY_S for up to SAVE_WAIT_S while the
    database cannot be reached: the run waits for its store (a PostgreSQL server restarting
    takes seconds) rather than fail. A try whose commit went through unheard does no harm when
    it finishes (finishing twice writes the same rows); one that started the run or saved its
    steps then fails the run, which says why."""
    deadline = time.monotonic() + SAVE_WAIT_S
    while True:
        try:
            return write()
        except rundb.Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(RETRY_EVERY_S)


def _not_saved(run_id: int, error: rundb.Unreachable, trained: bool) -> str:
    """What became of a run whose database went away under it, and what the user can do."""
    when = f"{'' if trained else 'while it trained, '}and was not back within {SAVE_WAIT_S:g} s"
    return (
        f"run {run_id} could not be saved: the run database at {error.where} is not reachable "
        f"({error.why}), {when}. What it saved before stays; the run shows as unfinished once "
        "the database is back and this process has ended. Train it again then"
    )
