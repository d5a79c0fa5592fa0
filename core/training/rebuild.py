"""Rebuilding a saved run's model: its config builds the base model and the adapted one, and the
tensors the store kept (RunStore.read_weights) are loaded into it, once they are checked to fit.

What the store returns may have been damaged or replaced on disk, or its config edited by hand,
so nothing is loaded that does not fit the model its config builds.
"""

from __future__ import annotations

import torch
from torch import nn

from core.store.runs import SavedWeights, StoreError
from core.training.train import build_models


def rebuild(saved: SavedWeights) -> tuple[nn.Module, nn.Module]:
    """(base model, trained model) of a saved run, rebuilt from what the store returned for it
    (RunStore.read_weights: its record, with the config, and its tensors).

    StoreError if the config cannot build a model (its row was edited by hand), or if the
    weights do not fit the model it builds (other names, shapes or kinds of number) or hold
    NaN or inf: they were damaged or replaced."""
    record = saved.record
    run_id = record.id
    try:  # a config written by hand: a seed past 2**32, 10**12 classes, a rank > d
        record.config.validate()
        base, model = build_models(record.config, record.num_classes)
    except ValueError as error:
        raise StoreError(f"run {run_id} cannot be rebuilt from its config ({error})") from None
    check_fit(run_id, saved, model.state_dict())
    model.load_state_dict(saved.tensors, strict=False)
    return base.eval(), model.eval()


def check_fit(run_id: int, saved: SavedWeights, expected: dict[str, torch.Tensor]) -> None:
    """StoreError unless every saved tensor is one of the model's (`expected`: its state dict),
    of the same shape and kind of number, and finite."""
    missing = set(saved.tensors) - set(expected)
    if missing:
        raise StoreError(f"the weights of run {run_id} do not fit its model: {sorted(missing)}")
    for name, tensor in saved.tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise StoreError(
                f"the weights of run {run_id} do not fit its model: {name} is "
                f"{_described(tensor)} in {saved.source}, {_described(expected[name])} in the "
                "model"
            )
    broken = sorted(name for name, tensor in saved.tensors.items() if not tensor.isfinite().all())
    if broken:  # a spectrum of inf is no spectrum: SVD refuses it
        raise StoreError(f"the weights of run {run_id} hold NaN or inf: {', '.join(broken)}")


def _described(tensor: torch.Tensor) -> str:
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
