"""Which parameters train, for each fine-tuning method LoRA Lab compares on one task.

    full     every weight                          (the baseline everything is measured against)
    head     the output layer only                 (a linear probe of the frozen features)
    top-k    the last k blocks + the head          (the classic "unfreeze the top" recipe)
    bitfit   every bias + the head                 (BitFit, arXiv 2106.10199)
    lora     the LoRA adapters + the head          (call lora.inject first)

The head trains in every method: a new task needs its own read-out. The exceptions: a head
picked as a LoRA target trains through its adapter only (its own W0 and bias stay frozen, as
every adapted layer's do); a run may keep it frozen (RunConfig.train_head=False: the run then
forgets only what the rest changed); and a task whose read-out is the base model's own
(data.ShiftInfo.keeps_head, planted-rank) keeps it frozen in every method but head-only. An
adapter on the head still trains in the last two. core.training.train.head_trains decides whether
the head's own weights train; ParamCount.head_training says which of these a model is in.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core.common.config import METHODS
from core.lowrank.lora import adapted_layers, adapter_parameters, weight_matrix_shape
from core.lowrank.targets import block_names, head_name


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _adapter_parameters(model: nn.Module) -> set[str]:
    """Names of A, B and DoRA magnitudes: everything an adapter owns except its frozen base."""
    names = set()
    for path, layer in adapted_layers(model).items():
        for pname, _ in layer.named_parameters():
            if not _under(pname, "base"):
                names.add(f"{path}.{pname}")
    return names


def _frozen_bases(model: nn.Module) -> list[str]:
    return [f"{path}.base" for path in adapted_layers(model)]


def _chosen(model: nn.Module, method: str, top_k: int) -> set[str]:
    head = head_name(model)
    names = [n for n, _ in model.named_parameters()]
    in_head = {n for n in names if _under(n, head)}
    if method == "full":
        return set(names)
    if method == "head":
        return in_head
    if method == "bitfit":
        return in_head | {n for n in names if n.rsplit(".", 1)[-1] == "bias"}
    if method == "top-k":
        blocks = block_names(model)
        if not 1 <= top_k <= len(blocks):
            raise ValueError(f"top-k needs 1 ≤ k ≤ {len(blocks)} blocks (got {top_k}).")
        top = blocks[-top_k:]
        return in_head | {n for n in names if any(_under(n, b) for b in top)}
    if method == "lora":
        adapters = _adapter_parameters(model)
        if not adapters:
            raise ValueError("method 'lora' needs adapters: call lora.inject on the model first.")
        # The head trains too, but if it carries an adapter its own W0 stays frozen.
        bases = _frozen_bases(model)
        return adapters | {n for n in in_head if not any(_under(n, b) for b in bases)}
    raise ValueError(f"method must be one of {METHODS} (got {method!r}).")


def trainable_parameters(
    model: nn.Module, method: str, top_k: int = 1, train_head: bool = True
) -> list[tuple[str, nn.Parameter]]:
    """Mark exactly the parameters `method` trains as requiring grad, and return them.
    With train_head=False the head's own parameters stay frozen (an adapter on it trains)."""
    chosen = _chosen(model, method, top_k)
    if not train_head:
        head, adapters = head_name(model), _adapter_parameters(model)
        chosen = {n for n in chosen if n in adapters or not _under(n, head)}
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
        if name in chosen:
            trainable.append((name, param))
    return trainable


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int
    head: int = 0  # of the trainable ones, those of the output head's own weight and bias
    head_adapted: bool = False  # the head carries a LoRA adapter

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    @property
    def head_training(self) -> str:
        """How the output head trains: "full" (its own weights train), "adapter" (only the
        LoRA adapter on it trains) or "frozen" (neither: a task that keeps the base's head)."""
        if self.head:
            return "full"
        return "adapter" if self.head_adapted else "frozen"


def count_parameters(model: nn.Module) -> ParamCount:
    """Trainable vs total parameters (adapters included in the total), and how many of the
    trainable ones are the head's own (an adapter on the head counts as an adapter)."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    try:
        head = head_name(model)
    except ValueError:  # no Linear layer: no head to count
        head = None
    adapters = _adapter_parameters(model)
    in_head = sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and head is not None and _under(n, head) and n not in adapters
    )
    return ParamCount(
        trainable=trainable,
        total=sum(p.numel() for p in params),
        head=in_head,
        head_adapted=head is not None and head in adapted_layers(model),
    )


def planned_count(
    model: nn.Module,
    method: str,
    top_k: int = 1,
    train_head: bool = True,
    targets: list[str] | None = None,
    rank: int = 1,
    dora: bool = False,
) -> ParamCount:
    """What count_parameters will say of `model` once it is adapted (LoRA: adapters of `rank`
    on the layers `targets`, with DoRA's magnitude if `dora`) and trainable_parameters has
    chosen what trains, counted from the layers' shapes: nothing is copied, injected or
    marked, so a page may ask on every redraw of a model it holds (the model is unchanged)."""
    head = head_name(model)
    targets = targets or []
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    adapters = sum(
        adapter_parameters(*weight_matrix_shape(model.get_submodule(name)), rank, dora)
        for name in targets
    )
    if method == "lora":  # the head's own weights train, unless an adapter on it trains instead
        chosen = {n for n in sizes if _under(n, head) and not any(_under(n, t) for t in targets)}
    else:
        chosen = _chosen(model, method, top_k)
    if not train_head:
        chosen = {n for n in chosen if not _under(n, head)}
    return ParamCount(
        trainable=adapters + sum(sizes[n] for n in chosen),
        total=sum(sizes.values()) + adapters,
        head=sum(sizes[n] for n in chosen if _under(n, head)),
        head_adapted=head in targets,
    )
