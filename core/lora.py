"""LoRA: low-rank adaptation of a frozen layer (Hu et al. 2021, arXiv 2106.09685).

A frozen weight W0 (d × k, out × in) is adapted by a trainable low-rank update:

    h = W0 x + scaling · B A x,      B ∈ R^{d×r} starts at 0,  A ∈ R^{r×k} starts random
    delta_W = scaling · B A,         scaling = alpha / r   (rsLoRA: alpha / sqrt(r))

Only A and B train: r·(d + k) numbers instead of d·k. Because B starts at zero, the adapted
model computes exactly what the base model computes at step 0, and training moves it away
from there. Merging W0 + delta_W afterwards gives a plain layer, so inference costs nothing extra.

For Conv2d, A is a convolution with the base kernel and stride and r output channels and B is a
1×1 convolution back to the base's channels (as in HF PEFT); flattened, it is the same B A.
DoRA (arXiv 2402.09353) splits the adapted weight into a magnitude m per output unit and a
direction: W' = m · (W0 + delta_W) / ‖W0 + delta_W‖.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.config import INITS, SCALINGS


class LoRALayer(nn.Module):
    """A frozen base layer plus a trainable low-rank update. Subclasses say how A and B act on x."""

    def __init__(
        self,
        base: nn.Linear | nn.Conv2d,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        scaling: str = "standard",
        dora: bool = False,
    ) -> None:
        super().__init__()
        d, k = weight_matrix_shape(base)
        check_rank(rank, d, k)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0 (got {alpha}).")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS} (got {scaling!r}).")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.use_rslora = rank, float(alpha), scaling == "rslora"
        # rsLoRA divides by sqrt(r) so the update's size no longer shrinks as the rank grows.
        self.scaling = self.alpha / (math.sqrt(rank) if self.use_rslora else rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = nn.Parameter(torch.empty(self.A_shape(), dtype=base.weight.dtype))
        self.B = nn.Parameter(torch.zeros(self.B_shape(), dtype=base.weight.dtype))
        self.magnitude: nn.Parameter | None = None
        self.dora = dora
        self.init = "default"
        self.enabled = True

    # -- what subclasses provide ------------------------------------------------------------
    def A_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def B_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def BAx(self, x: Tensor) -> Tensor:
        """B A x, computed as two thin products: never forms the d×k matrix B A."""
        raise NotImplementedError

    def W0x(self, x: Tensor) -> Tensor:
        """W0 x without the bias."""
        raise NotImplementedError

    def per_unit(self, v: Tensor) -> Tensor:
        """Reshape a length-d vector so it broadcasts over this layer's output units."""
        raise NotImplementedError

    # -- the weights, as matrices -----------------------------------------------------------
    @property
    def W0(self) -> Tensor:
        """The frozen base weight (for PiSSA, the residual W0 − s·B0·A0 that stays frozen)."""
        return self.base.weight

    def factors(self) -> tuple[Tensor, Tensor]:
        """(B, A) as matrices d×r and r×k, so that delta_W.flatten(1) == scaling · B @ A."""
        return self.B.flatten(1), self.A.flatten(1)

    def low_rank_update(self) -> Tensor:
        """scaling · B A in W0's shape: rank at most r."""
        B, A = self.factors()
        return (self.scaling * B @ A).reshape(self.W0.shape)

    def merged_weight(self) -> Tensor:
        """The weight this layer applies: W0 + delta_W (DoRA: m · (W0 + s·BA) / ‖W0 + s·BA‖)."""
        W = self.W0 + self.low_rank_update()
        if self.magnitude is None:
            return W
        return self.per_unit_of_weight(self.magnitude / row_norms(W)) * W

    def delta_W(self) -> Tensor:
        """What adaptation adds to W0. For plain LoRA exactly scaling · B A."""
        if self.magnitude is None:
            return self.low_rank_update()
        return self.merged_weight() - self.W0

    def per_unit_of_weight(self, v: Tensor) -> Tensor:
        """Reshape a length-d vector so it scales each output unit's row (or filter) of W."""
        return v.reshape(-1, *[1] * (self.W0.dim() - 1))

    # -- initialisation ---------------------------------------------------------------------
    @torch.no_grad()
    def initialise(self, init: str = "default", generator: torch.Generator | None = None) -> None:
        """Set A and B so that the layer starts as the base layer (B A = 0, or PiSSA's split)."""
        if init == "default":  # HF PEFT's default: A like nn.Linear's own init, B = 0.
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
            self.B.zero_()
        elif init == "gaussian":
            nn.init.normal_(self.A, std=1 / self.rank, generator=generator)
            self.B.zero_()
        elif init == "pissa":
            self.initialise_pissa()
        else:
            raise ValueError(f"init must be one of {INITS} (got {init!r}).")
        self.init = init
        if self.dora:  # m starts as the norm of each output unit's weight: W' = W0 at step 0.
            self.magnitude = nn.Parameter(row_norms(self.W0 + self.low_rank_update()))

    def initialise_pissa(self) -> None:
        """PiSSA (arXiv 2404.02948): B A starts as W0's top-r singular part, the base the rest.

        The principal directions train while the residual W0 − s·B·A stays frozen, so the
        output at step 0 is unchanged.
        """
        W = self.W0.flatten(1).float()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        root = torch.sqrt(S[: self.rank] / self.scaling)
        B = U[:, : self.rank] * root
        A = root[:, None] * Vh[: self.rank]
        self.B.copy_(B.reshape(self.B.shape))
        self.A.copy_(A.reshape(self.A.shape))
        self.base.weight.copy_((W - self.scaling * B @ A).reshape(self.W0.shape))
        # Kept so the adapter can be shared as a plain LoRA on the original W0 (see peft_io).
        self.register_buffer("A0", self.A.detach().clone())
        self.register_buffer("B0", self.B.detach().clone())

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        h = self.base(x)  # W0 x + bias
        if not self.enabled:
            return h
        x_in = self.dropout(x)  # the adapter's input; dropout, when on, only hits this branch
        update = self.scaling * self.BAx(x_in)
        if self.magnitude is None:
            return h + update
        # DoRA: rescale each output unit by m / ‖W0 + s·BA‖, i.e. (without dropout)
        #     h' = scale · (W0 x + s·B A x) + bias,   scale = m / ‖W0 + s·BA‖.
        # Written as h + (scale − 1)·W0 x_in + scale · update, the way HF PEFT computes it, so
        # that with dropout on training matches PEFT too. The norm is treated as a constant (no
        # gradient), as the DoRA paper (§4.3) and PEFT do, to save memory.
        norm = row_norms(self.W0 + self.low_rank_update()).detach()
        scale = self.per_unit(self.magnitude / norm)
        bias = 0 if self.base.bias is None else self.per_unit(self.base.bias)
        W0x = h - bias if x_in is x else self.W0x(x_in)
        return h + (scale - 1) * W0x + scale * update

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:.4g}, dora={self.dora}"


class LoRALinear(LoRALayer):
    def A_shape(self) -> tuple[int, ...]:
        return (self.rank, self.base.in_features)

    def B_shape(self) -> tuple[int, ...]:
        return (self.base.out_features, self.rank)

    def BAx(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.A), self.B)

    def W0x(self, x: Tensor) -> Tensor:
        return F.linear(x, self.W0)

    def per_unit(self, v: Tensor) -> Tensor:
        return v


class LoRAConv2d(LoRALayer):
    def A_shape(self) -> tuple[int, ...]:
        return (self.rank, self.base.in_channels, *self.base.kernel_size)

    def B_shape(self) -> tuple[int, ...]:
        return (self.base.out_channels, self.rank, 1, 1)

    def BAx(self, x: Tensor) -> Tensor:
        c = self.base
        Ax = F.conv2d(x, self.A, stride=c.stride, padding=c.padding, dilation=c.dilation)
        return F.conv2d(Ax, self.B)

    def W0x(self, x: Tensor) -> Tensor:
        c = self.base
        return F.conv2d(x, self.W0, stride=c.stride, padding=c.padding, dilation=c.dilation)

    def per_unit(self, v: Tensor) -> Tensor:
        return v.reshape(-1, 1, 1)


def row_norms(W: Tensor) -> Tensor:
    """‖W[n]‖ for each output unit n (a row of a Linear weight, a filter of a Conv2d)."""
    return W.flatten(1).norm(dim=1)


# -- which layers can be adapted --------------------------------------------------------------
ADAPTERS: dict[type[nn.Module], type[LoRALayer]] = {nn.Linear: LoRALinear, nn.Conv2d: LoRAConv2d}


def why_not_adaptable(layer: nn.Module) -> str | None:
    """Why this layer cannot take an adapter, or None if it can.

    Exactly nn.Linear or a plain nn.Conv2d: a subclass may skip its own forward (as
    MultiheadAttention's out_proj does), and a grouped or depthwise conv is not one matrix W0.
    """
    if type(layer) not in ADAPTERS:
        return f"a {type(layer).__name__} cannot take an adapter: only nn.Linear and nn.Conv2d can."
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
        return "LoRA here supports Conv2d with groups=1 and zero padding only."
    return None


def adapter_type(layer: nn.Module) -> type[LoRALayer]:
    reason = why_not_adaptable(layer)
    if reason:
        raise ValueError(reason)
    return ADAPTERS[type(layer)]


def weight_matrix_shape(layer: nn.Module) -> tuple[int, int]:
    """(d, k) of the layer's weight seen as a matrix: out × in (Conv2d: out × in·kh·kw)."""
    adapter_type(layer)
    W = layer.weight
    return W.shape[0], W[0].numel()


def check_rank(rank: int, d: int, k: int, name: str = "this layer") -> None:
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a whole number ≥ 1 (got {rank!r}).")
    if rank > min(d, k):
        raise ValueError(
            f"rank {rank} is above min(d, k) = {min(d, k)} for {name} ({d}×{k}): "
            "a rank that large adds parameters without adding any expressive power."
        )


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
        return self.rank * (self.d + self.k)


def eligible_layers(model: nn.Module, rank: int = 4) -> list[EligibleLayer]:
    """Every Linear and Conv2d of the model, with its shape and trainable cost r·(d + k)."""
    from core.methods import head_name  # methods builds on lora; import late to keep it one-way

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
    if pattern in modules:  # it exists, so its type is the problem
        adapter_type(modules[pattern])
    raise ValueError(f"target {pattern!r} matches no layer. Layers that can be adapted: {names}.")


# -- adapting, reading and merging a model ----------------------------------------------------
def inject(
    model: nn.Module,
    targets: str | list[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    init: str = "default",
    scaling: str = "standard",
    dora: bool = False,
    seed: int | None = None,
) -> nn.Module:
    """Return a copy of `model` whose target layers carry LoRA adapters; `model` is untouched.

    Every base weight of the copy is frozen. Only A, B (and DoRA's magnitude) require grad:
    methods.trainable_parameters decides what else trains (the head, usually).
    """
    if adapted_layers(model):
        raise ValueError("this model already has adapters: inject into the base model.")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS} (got {init!r}).")
    names = resolve_targets(model, targets)
    adapted = copy.deepcopy(model).requires_grad_(False)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    for name in names:
        base = adapted.get_submodule(name)
        check_rank(rank, *weight_matrix_shape(base), name=name)
        layer = adapter_type(base)(base, rank, alpha, dropout, scaling, dora)
        layer.initialise(init, generator)
        _replace(adapted, name, layer)
    return adapted


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def adapted_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """Module path → adapter, e.g. {"blocks.0.attn.q": LoRALinear(...)}."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALayer)}


@torch.no_grad()
def delta_weights(model: nn.Module) -> dict[str, Tensor]:
    """Module path → delta_W in W0's shape, for every adapted layer."""
    return {name: layer.delta_W().detach().clone() for name, layer in adapted_layers(model).items()}


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """A plain copy with W0 + delta_W folded into each layer: the base architecture, same cost."""
    merged = copy.deepcopy(model)
    for name, layer in adapted_layers(merged).items():
        plain = layer.base
        plain.weight.copy_(layer.merged_weight())
        _replace(merged, name, plain)
    return merged


def set_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every adapter on or off; off gives back the base model's output (for PiSSA,
    the residual model's)."""
    for layer in adapted_layers(model).values():
        layer.enabled = enabled
