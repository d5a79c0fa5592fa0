"""What training did to each layer, read from the models: W0 and delta_W, for LoRA as its
factors (so that its SVD never needs the d × k matrix), for everything else dense.

Every analysis of a trained model starts here: the snapshots training records
(core.lowrank.snapshot), the similarity of two runs' updates, the reports and what-ifs of
core.analyses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.lowrank.lora import LoRALayer, adapted_layers
from core.lowrank.svd import Delta, LowRankDelta, as_matrix


@dataclass(frozen=True)
class LayerUpdate:
    """What training did to one layer."""

    W0: Tensor  # the pretrained weight, in its own shape
    delta_W: Delta  # LoRA's factors, or dense (full fine-tuning, DoRA, PiSSA)
    rank: int | None  # LoRA's r; None for full fine-tuning


@torch.no_grad()
def layer_updates(base_model: nn.Module, model: nn.Module) -> dict[str, LayerUpdate]:
    """Layer path → LayerUpdate for every layer that training changed.

    A LoRA model gives its adapted layers with their factors (or, for DoRA and PiSSA, whose
    update is not s·B A on top of the pretrained W0, the dense merged weight − W0). A fully or
    partly fine-tuned model gives each Linear/Conv2d whose weight differs from the base.
    """
    adapters = adapted_layers(model)
    if adapters:
        return {name: _lora_update(base_model, name, layer) for name, layer in adapters.items()}
    updates = {}
    for name, module in base_model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            W0, W = module.weight, model.get_submodule(name).weight
            if W.shape == W0.shape and not torch.equal(W.detach().cpu(), W0.detach().cpu()):
                updates[name] = LayerUpdate(W0, as_matrix(W) - as_matrix(W0), None)
    return updates


def _lora_update(base_model: nn.Module, name: str, layer: LoRALayer) -> LayerUpdate:
    W0 = base_model.get_submodule(name).weight
    if not layer.dora and torch.equal(layer.W0.detach().cpu(), W0.detach().cpu()):
        return LayerUpdate(W0, LowRankDelta.of_layer(layer), layer.rank)
    return LayerUpdate(W0, as_matrix(layer.merged_weight()) - as_matrix(W0), layer.rank)
