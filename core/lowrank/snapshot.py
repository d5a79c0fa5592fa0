"""What the training loop records of the update while it runs: per changed layer, the top σ of
delta_W and DoRA's ΔM / ΔD. Cheap enough to take every few steps (LoRA's σ come from its
factors), so that a run can later be played back through training
(core.analyses.layer_reports.spectrum_evolution).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from core.lowrank.against_w0 import magnitude_direction_change
from core.lowrank.svd import Delta, LowRankDelta, as_matrix, delta_svd, dense_delta
from core.lowrank.updates import layer_updates


def top_singular_values(delta_W: Delta, n: int = 16) -> list[float]:
    """The n largest singular values of an update (fewer if its rank bound is lower)."""
    if isinstance(delta_W, LowRankDelta):
        return delta_svd(delta_W).S[:n].tolist()
    return torch.linalg.svdvals(as_matrix(delta_W))[:n].tolist()


@torch.no_grad()
def model_snapshot(base_model: nn.Module, model: nn.Module, n: int = 16) -> dict[str, dict]:
    """What the training engine records at a snapshot: per changed layer, the top-n σ of
    delta_W and DoRA's delta_M / delta_D. Cheap for LoRA (QR path, no d×k SVD)."""
    snapshot = {}
    for name, update in layer_updates(base_model, model).items():
        W = as_matrix(update.W0) + dense_delta(update.delta_W)
        snapshot[name] = {
            "sigma": top_singular_values(update.delta_W, n),
            "shape": list(W.shape),  # what tells its σ at rounding level (spectrum.resolved)
            **asdict(magnitude_direction_change(update.W0, W)),
        }
    return snapshot
