"""Which layers of a model to adapt: names, globs, "all-linear", and what each choice costs.

core.lowrank.lora adapts the layers it is given by name; this module turns what a student or a
config says ("all-linear", "blocks.*.attn.q", a list of names) into those names, explains a choice
that picks nothing, and lists every layer that can take an adapter with its cost r·(d + k)
against d·k for the app's table. It also knows where a model's output head and blocks are,
which the fine-tuning methods (core.lowrank.methods) need too.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

from core.lowrank.lora import (
    LoRALayer,
    adapter_parameters,
    adapter_type,
    check_rank,
    weight_matrix_shape,
)


def head_name(model: nn.Module) -> str:
    """The output layer's module path: `model.head_name` if the model says, else the last Linear."""
    name = getattr(model, "head_name", None)
    if name:
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear layer to serve as its head.")
    return linears[-1]


def block_names(model: nn.Module) -> list[str]:
    """The blocks, input → output: `model.block_names`, else the model's top-level children."""
    names = getattr(model, "block_names", None)
    return list(names) if names else [n for n, _ in model.named_children()]


def why_not_adaptable(layer: nn.Module) -> str | None:
    """Why this layer cannot take an adapter (core.lowrank.lora.adapter_type's reason), or None."""
    try:
        adapter_type(layer)
    except ValueError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class EligibleLayer:
    """A layer that can take an adapter, with what adapting it at a given rank costs."""

    name: str
    kind: str  # "Linear" or "Conv2d"
    d: int  # output units
    k: int  # inputs per output unit (Conv2d: in_channels · kh · kw)
    rank: int
    is_head: bool

    @property
    def max_rank(self) -> int:
        return min(self.d, self.k)

    @property
    def full_params(self) -> int:
        return self.d * self.k

    @property
    def lora_params(self) -> int:
        return adapter_parameters(self.d, self.k, self.rank)


def eligible_layers(model: nn.Module, rank: int = 4) -> list[EligibleLayer]:
    """Every Linear and Conv2d of the model, with its shape and trainable cost r·(d + k)."""
    head = head_name(model)
    layers = []
    for name, module in model.named_modules():
        if why_not_adaptable(module) is None and not _inside_adapter(model, name):
            d, k = weight_matrix_shape(module)
            kind = type(module).__name__
            layers.append(EligibleLayer(name, kind, d, k, rank, is_head=name == head))
    return layers


def _inside_adapter(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0]
    return bool(name) and isinstance(model.get_submodule(parent), LoRALayer)


def resolve_targets(model: nn.Module, targets: str | list[str]) -> list[str]:
    """Turn names, glob patterns ("blocks.*.attn.q") or "all-linear" into layer names.

    "all-linear" means every Linear except the output head, as in HF PEFT: the head is
    task-specific and is usually trained in full.
    """
    layers = eligible_layers(model)
    if targets == "all-linear":
        return [layer.name for layer in layers if layer.kind == "Linear" and not layer.is_head]
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise ValueError("choose at least one target layer to adapt.")
    names = [layer.name for layer in layers]
    chosen: list[str] = []
    for pattern in targets:
        matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            _explain_no_match(model, pattern, names)
        chosen += [n for n in matches if n not in chosen]
    return chosen


def _explain_no_match(model: nn.Module, pattern: str, names: list[str]) -> None:
    modules = dict(model.named_modules())
    reason = why_not_adaptable(modules[pattern]) if pattern in modules else None
    if reason:  # it exists, so its type is the problem
        raise ValueError(reason)
    raise ValueError(f"target {pattern!r} matches no layer. Layers that can be adapted: {names}.")


def check_targets(model: nn.Module, targets: list[str] | str, rank: int) -> list[str]:
    """The layer names `targets` picks in `model`; ValueError if none, or if rank > min(d, k)."""
    names = resolve_targets(model, targets)
    if not names:
        raise ValueError(f"no target layer: {targets!r} picks no layer of this model")
    for name in names:
        d, k = weight_matrix_shape(model.get_submodule(name))
        check_rank(rank, d, k, name=name)
    return names
