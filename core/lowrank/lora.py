"""LoRA: low-rank adaptation of a frozen layer (Hu et al. 2021, arXiv 2106.09685).

A frozen weight W0 (d × k, out × in) is adapted by a trainable low-rank update:

    h = W0 x + scaling · B A x,      B ∈ R^{d×r} starts at 0,  A ∈ R^{r×k} starts random
    delta_W = scaling · B A,         scaling = alpha / r   (rsLoRA: alpha / sqrt(r))

Only A and B train: r·(d + k) numbers instead of d·k. Because B starts at zero, the adapted
model computes exactly what the base model computes at step 0, and training moves it away
from there. Merging W0 + delta_W afterwards gives a plain layer, so inference costs nothing extra.

For Conv2d, A is a convolution with the base kernel and stride and r output channels and B is a
1×1 convolution back to the base's channels (as in HF PEFT); flattened, it is the same B A.
DoRA (arXiv 2402.09353), at the end of this file, splits the adapted weight into a magnitude m
per output unit and a direction: W' = m · (W0 + delta_W) / ‖W0 + delta_W‖.

Which layers to adapt (names, globs, "all-linear") is chosen in core.lowrank.targets; this module
takes layer names as they are.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.common.config import BOUNDS, INITS, SCALINGS, SettingError, short_repr


class LoRALayer(nn.Module):
    """A frozen base layer plus a trainable low-rank update. Subclasses say how A and B act on x.

    Built ready to use: A and B are initialised here (`init`, seeded by `generator`), so that the
    layer starts as the base layer (B A = 0, or PiSSA's split of W0).
    """

    dora = False

    def __init__(
        self,
        base: nn.Linear | nn.Conv2d,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        scaling: str = "standard",
        init: str = "default",
        generator: torch.Generator | None = None,
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
        self.scaling = scale(self.alpha, rank, scaling)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = nn.Parameter(torch.empty(self.A_shape(), dtype=base.weight.dtype))
        self.B = nn.Parameter(torch.empty(self.B_shape(), dtype=base.weight.dtype))
        self.enabled = True
        self._initialise(init, generator)

    # -- the equation -----------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """h = W0 x + scaling · B A x (plus the base's bias). Dropout, when on, only hits the
        adapter's input x."""
        h = self.base(x)
        if not self.enabled:
            return h
        return h + self.scaling * self.BAx(self.dropout(x))

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
        """The weight this layer applies: W0 + delta_W."""
        return self.W0 + self.low_rank_update()

    def delta_W(self) -> Tensor:
        """What adaptation adds to W0: scaling · B A."""
        return self.low_rank_update()

    # -- initialisation ---------------------------------------------------------------------
    @torch.no_grad()
    def _initialise(self, init: str, generator: torch.Generator | None) -> None:
        if init == "default":  # HF PEFT's default: A like nn.Linear's own init, B = 0.
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
            self.B.zero_()
        elif init == "gaussian":
            nn.init.normal_(self.A, std=1 / self.rank, generator=generator)
            self.B.zero_()
        elif init == "pissa":
            self._initialise_pissa()
        else:
            raise ValueError(f"init must be one of {INITS} (got {init!r}).")
        self.init = init

    def _initialise_pissa(self) -> None:
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


# -- which layers an adapter can wrap ---------------------------------------------------------
def adapter_type(base: nn.Module, dora: bool = False) -> type[LoRALayer]:
    """The adapter class for `base`; ValueError saying why, for a layer that cannot take one.

    Exactly nn.Linear or a plain nn.Conv2d: a subclass may skip its own forward (as
    MultiheadAttention's out_proj does), and a grouped or depthwise conv is not one matrix W0.
    """
    adapters = DORA_ADAPTERS if dora else LORA_ADAPTERS
    if type(base) not in adapters:
        name = type(base).__name__
        raise ValueError(f"a {name} cannot take an adapter: only nn.Linear and nn.Conv2d can.")
    if isinstance(base, nn.Conv2d) and (base.groups != 1 or base.padding_mode != "zeros"):
        raise ValueError("LoRA here supports Conv2d with groups=1 and zero padding only.")
    return adapters[type(base)]


def weight_matrix_shape(layer: nn.Module) -> tuple[int, int]:
    """(d, k) of the layer's weight seen as a matrix: out × in (Conv2d: out × in·kh·kw)."""
    adapter_type(layer)
    W = layer.weight
    return W.shape[0], W[0].numel()


def scale(alpha: float, rank: int, scaling: str = "standard") -> float:
    """s = alpha / r, or with rsLoRA alpha / sqrt(r): rsLoRA's update no longer shrinks as the
    rank grows."""
    return alpha / (math.sqrt(rank) if scaling == "rslora" else rank)


def adapter_parameters(d: int, k: int, rank: int, dora: bool = False) -> int:
    """What an adapter of a d×k layer trains: B (d×r) and A (r×k), and DoRA's magnitude (one
    per output unit). The same for a Conv2d, whose k is in_channels · kh · kw."""
    return rank * (d + k) + (d if dora else 0)


def check_rank(
    rank: int,
    d: int | None = None,
    k: int | None = None,
    name: str = "this layer",
    setting: str = "rank",
) -> None:
    """The one check of a rank, wherever one comes from (a config, a layer, a PEFT file named by
    `setting`): a whole number from BOUNDS["rank"]'s low end (RunConfig.validate also bounds it
    above), and for a d×k layer at most min(d, k)."""
    low = BOUNDS["rank"].low
    if not isinstance(rank, int) or rank < low:
        raise ValueError(f"{setting} must be a whole number ≥ {low} (got {short_repr(rank)}).")
    if d is not None and k is not None and rank > min(d, k):
        values = {"rank": rank, "most": min(d, k), "layer": name, "shape": f"{d}×{k}"}
        raise SettingError(
            f"rank {rank} is above min(d, k) = {min(d, k)} for {name} ({d}×{k}): "
            "a rank that large adds parameters without adding any expressive power.",
            "errors.rank_above_layer",
            values,
        )


def row_norms(W: Tensor) -> Tensor:
    """‖W[n]‖ for each output unit n (a row of a Linear weight, a filter of a Conv2d)."""
    return W.flatten(1).norm(dim=1)


# -- adapting, reading and merging a model ----------------------------------------------------
def inject(
    model: nn.Module,
    names: list[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    init: str = "default",
    scaling: str = "standard",
    dora: bool = False,
    seed: int | None = None,
) -> nn.Module:
    """Return a copy of `model` whose layers `names` carry LoRA adapters; `model` is untouched.

    `names` are module paths such as "blocks.0.attn.q" (core.lowrank.targets.resolve_targets turns
    "all-linear" or globs into them). Every base weight of the copy is frozen. Only A, B (and
    DoRA's magnitude) require grad: methods.trainable_parameters decides what else trains.
    """
    if isinstance(names, str) or not names:
        raise ValueError(
            f"inject needs a list of layer names (got {names!r}): "
            "core.lowrank.targets.resolve_targets turns 'all-linear' or globs into names."
        )
    if adapted_layers(model):
        raise ValueError("this model already has adapters: inject into the base model.")
    adapted = copy.deepcopy(model).requires_grad_(False)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    for name in names:
        base = adapted.get_submodule(name)
        check_rank(rank, *weight_matrix_shape(base), name=name)
        adapter = adapter_type(base, dora)
        _replace(adapted, name, adapter(base, rank, alpha, dropout, scaling, init, generator))
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


# -- DoRA: a trained magnitude per output unit ------------------------------------------------
def per_unit(v: Tensor, trailing: int) -> Tensor:
    """v, one number per output unit, shaped to scale a tensor whose unit axis has `trailing`
    axes after it: W.dim() − 1 for the weight W; for the output h, none (Linear: units are the
    last axis) or two (Conv2d: channels, then height and width)."""
    return v.reshape(-1, *[1] * trailing)


class DoRALayer(LoRALayer):
    """DoRA (Liu et al. 2024, arXiv 2402.09353): LoRA turns the direction of each output unit's
    weight, and a trained magnitude m sets its length:

        W' = m · (W0 + scaling · B A) / ‖W0 + scaling · B A‖      (one norm per output unit)

    m starts as ‖W0 + scaling · B A‖, so W' = W0 at step 0.
    """

    dora = True

    @torch.no_grad()
    def _initialise(self, init: str, generator: torch.Generator | None) -> None:
        super()._initialise(init, generator)
        self.magnitude = nn.Parameter(row_norms(self.W0 + self.low_rank_update()))

    def forward(self, x: Tensor) -> Tensor:
        """h' = scale · (W0 x + scaling · B A x) + bias,   scale = m / ‖W0 + scaling · B A‖.

        Written as h + (scale − 1)·W0 x̃ + scale · scaling · B A x̃, with x̃ = dropout(x), the way
        HF PEFT computes it, so that with dropout on training matches PEFT too. The norm is
        treated as a constant (no gradient), as the DoRA paper (§4.3) and PEFT do, to save
        memory.
        """
        h = self.base(x)  # W0 x + bias
        if not self.enabled:
            return h
        x_in = self.dropout(x)
        update = self.scaling * self.BAx(x_in)
        norm = row_norms(self.W0 + self.low_rank_update()).detach()
        units = self.W0.dim() - 2  # h's output units: Linear's last axis, Conv2d's channels
        scale = per_unit(self.magnitude / norm, units)
        bias = 0 if self.base.bias is None else per_unit(self.base.bias, units)
        W0x = h - bias if x_in is x else self.W0x(x_in)
        return h + (scale - 1) * W0x + scale * update

    def merged_weight(self) -> Tensor:
        """m · (W0 + scaling · B A) / ‖W0 + scaling · B A‖."""
        W = self.W0 + self.low_rank_update()
        return per_unit(self.magnitude / row_norms(W), W.dim() - 1) * W

    def delta_W(self) -> Tensor:
        """W' − W0: no longer of rank ≤ r, since each unit is rescaled."""
        return self.merged_weight() - self.W0


class DoRALinear(DoRALayer, LoRALinear):
    pass


class DoRAConv2d(DoRALayer, LoRAConv2d):
    pass


LORA_ADAPTERS: dict[type[nn.Module], type[LoRALayer]] = {
    nn.Linear: LoRALinear,
    nn.Conv2d: LoRAConv2d,
}
DORA_ADAPTERS: dict[type[nn.Module], type[LoRALayer]] = {
    nn.Linear: DoRALinear,
    nn.Conv2d: DoRAConv2d,
}
