"""Measuring a trained run again: its models, its task's test split, and edited copies.

The what-if views (core.analyses.whatif) and the example strips (core.training.examples) all ask
the same question in different ways: "how well does this model do on the test split, and what
if its weights were a little different?". They share what is here: a saved run rebuilt from
the run store (its base model, its trained model and its task's test split, made exactly as
training made them), and the score of a model (its task's headline metric: accuracy on images,
bits per character on text) with some layers' weights swapped for others for the length of one
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.common.config import RunConfig
from core.store.runs import RunStore
from core.training.data import Split, kind_of
from core.training.kinds import Metric
from core.training.rebuild import rebuild
from core.training.train import RunResult, evaluate, load_task


@dataclass
class TrainedRun:
    """A run as the analyses need it: the base model it started from, the model training made
    (with its adapters, if any), and the target task's test split. Nothing here is ever
    modified: edits go to copies."""

    config: RunConfig
    base: nn.Module
    model: nn.Module
    test: Split
    num_classes: int

    @classmethod
    def of_result(cls, result: RunResult) -> TrainedRun:
        """A run that has just trained (core.training.train.train's result)."""
        task = result.task
        base, model = result.base.eval(), result.model.eval()
        return cls(result.config, base, model, task.split("test"), task.num_classes)

    @property
    def metric(self) -> Metric:
        """The headline metric of its task's kind: how every what-if judges it."""
        return kind_of(self.config.dataset).metric


def open_run(run_id: int, store: RunStore) -> TrainedRun:
    """A saved run, rebuilt: its weights from the store (core.training.rebuild), its task
    built from its config as training built it (same split, same shift and seed)."""
    saved = store.read_weights(run_id)
    config = saved.record.config
    base, model = rebuild(saved)
    task = load_task(config)
    return TrainedRun(config, base, model, task.split("test"), task.num_classes)


def score(model: nn.Module, split: Split, metric: Metric) -> float:
    """The model's `metric` on the split (core.training.train.evaluate): its accuracy on
    images, its bits per character on text."""
    return evaluate(model, split)[metric.field]


@contextmanager
@torch.no_grad()
def swapped_weights(model: nn.Module, weights: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """`model` with the weight of each named layer replaced (reshaped to the layer's weight
    and cast to its dtype) for the duration of the block, then put back as it was."""
    layers = {name: model.get_submodule(name) for name in weights}
    saved = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer.weight.copy_(weights[name].reshape(layer.weight.shape))
        yield model
    finally:
        for name, layer in layers.items():
            layer.weight.copy_(saved[name])


def score_with(
    model: nn.Module, weights: Mapping[str, Tensor], split: Split, metric: Metric
) -> float:
    """score() of `model` with some layers' weights swapped (see swapped_weights)."""
    with swapped_weights(model, weights):
        return score(model, split, metric)
