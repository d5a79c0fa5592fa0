"""Adapter files of any model, read without the model: where each layer's A and B are, and
each layer's factors, one layer at a time.

Two formats are understood:

    a PEFT folder       adapter_config.json + adapter_model.safetensors (see peft_io): keys
                        base_model.model.<path>.lora_A.weight / .lora_B.weight, DoRA's
                        .lora_magnitude_vector, whole modules (modules_to_save); per-layer
                        ranks and alphas in rank_pattern / alpha_pattern; rsLoRA's α/√r
    a kohya / diffusers one .safetensors file: <name>.lora_down.weight / .lora_up.weight and
      .safetensors      a scalar <name>.alpha (kohya), <name>.lora.down.weight / .lora.up.weight
                        (diffusers' attention processors), or <name>.lora_A.weight /
                        .lora_B.weight without a config (diffusers' PEFT-style keys); kohya's
                        DoRA keeps its magnitude as <name>.dora_scale

`open_adapter` reads only the safetensors header (names, shapes, dtypes: `safe_open`), so a
file of gigabytes opens at once; `read_layer` then reads one layer's tensors. Memory stays near
one layer's size, whatever the file's. Everything a file may get wrong is a one-line ValueError:
neither format, factors whose shapes do not chain, a rank above min(d, k), a header claiming
more bytes than the file has, NaN or infinite weights, integer weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from core.common.config import short_repr
from core.lowrank import peft_io
from core.lowrank.lora import check_rank
from core.lowrank.svd import LowRankDelta, as_matrix

PEFT, KOHYA = "peft", "kohya"
# (A's suffix, B's suffix) of a layer's factors in a file without a config: kohya's, diffusers'
# attention processors', diffusers' PEFT-style keys. A is "down" (r × k), B is "up" (d × r).
LOOSE_FACTORS = (
    (".lora_down.weight", ".lora_up.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
)
LOOSE_ALPHA = ".alpha"
LOOSE_MAGNITUDE = ".dora_scale"
PEFT_A, PEFT_B, PEFT_MAGNITUDE = peft_io.ADAPTER_PARTS  # lora_A, lora_B, lora_magnitude_vector


@dataclass(frozen=True)
class LayerKeys:
    """Where one adapted layer's tensors are in the file (None: the file has no such tensor),
    and what the config says of its rank and alpha (None: the file says it, or nothing)."""

    name: str  # the layer's path in its model (PEFT) or its key's stem (kohya)
    A: str
    B: str
    alpha: str | None = None  # kohya's scalar alpha tensor
    magnitude: str | None = None  # DoRA's m
    rank: int | None = None  # PEFT: r, or this layer's rank_pattern
    config_alpha: float | None = None  # PEFT: lora_alpha, or this layer's alpha_pattern


@dataclass(frozen=True)
class AdapterFile:
    """An adapter on disk, its header read and checked: its layers, not yet their numbers."""

    weights: Path  # the safetensors file
    format: str  # PEFT or KOHYA
    layers: tuple[LayerKeys, ...]  # in the model's order (depth_order)
    saved: tuple[str, ...]  # keys of whole modules saved beside the adapters (modules_to_save)
    modules_to_save: tuple[str, ...]  # the config's names of those modules (PEFT)
    rslora: bool
    dora: bool

    @property
    def bytes(self) -> int:
        return self.weights.stat().st_size


@dataclass(frozen=True)
class LayerFactors:
    """One layer's update as its factors (float64 matrices, conv kernels flattened), with the
    shapes its A and B have in the file (a conv's are 4-d) and DoRA's magnitude if any."""

    name: str
    delta: LowRankDelta
    alpha: float
    dtype: str  # as stored: float32, float16, bfloat16
    A_shape: tuple[int, ...]
    B_shape: tuple[int, ...]
    magnitude: Tensor | None

    @property
    def shape(self) -> tuple[int, int]:
        """(d, k) of delta_W: out × in (a conv's in · kh · kw)."""
        return self.delta.B.shape[0], self.delta.A.shape[1]


def open_adapter(path: str | Path) -> AdapterFile:
    """The adapter at `path`: a PEFT folder, or a kohya / diffusers .safetensors file (a PEFT
    adapter_model.safetensors with its config beside it counts as its folder). ValueError
    naming what is wrong; nothing is read beyond the header and the config."""
    path = Path(path)
    if path.is_dir():
        return _peft_adapter(path)
    if path.name == peft_io.WEIGHTS_FILE and (path.parent / peft_io.CONFIG_FILE).is_file():
        return _peft_adapter(path.parent)
    if path.is_file() and path.suffix == ".safetensors":
        return _loose_adapter(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist.")
    raise ValueError(
        f"{path.name} is neither adapter format: give a PEFT adapter folder or zip "
        f"({peft_io.CONFIG_FILE} + {peft_io.WEIGHTS_FILE}) or a kohya / diffusers LoRA "
        ".safetensors file."
    )


def read_layers(adapter: AdapterFile) -> Iterator[LayerFactors]:
    """Each layer's factors in turn, read from the file as they are asked for."""
    with opened(adapter.weights) as file:
        for layer in adapter.layers:
            yield read_layer(file, adapter, layer)


def read_layer(file: object, adapter: AdapterFile, layer: LayerKeys) -> LayerFactors:
    """One layer's tensors from an open safe_open `file`, checked: floating point, finite, A
    and B that chain (B's columns = A's rows = the rank), a rank no larger than min(d, k) and
    the one the config says, DoRA's magnitude one number per output unit."""
    A, B = _tensor(file, layer.A), _tensor(file, layer.B)
    if A.dim() < 2 or B.dim() < 2 or B.shape[1] != A.shape[0] or math.prod(B.shape[2:]) != 1:
        raise ValueError(
            f"{layer.name}: its factors do not chain: A is {tuple(A.shape)} and B is "
            f"{tuple(B.shape)}, but B's columns must equal A's rows (the rank)."
        )
    rank, d, k = A.shape[0], B.shape[0], math.prod(A.shape[1:])
    check_rank(rank, d, k, layer.name)
    if layer.rank is not None and rank != layer.rank:
        raise ValueError(
            f"{layer.name}: A has {rank} rows, but {peft_io.CONFIG_FILE} says r = {layer.rank} "
            "for it (r, or its rank_pattern)."
        )
    alpha = _alpha(file, layer, rank)
    scaling = alpha / (math.sqrt(rank) if adapter.rslora else rank)
    magnitude = None if layer.magnitude is None else _tensor(file, layer.magnitude)
    if magnitude is not None and magnitude.numel() != d:
        raise ValueError(
            f"{layer.name}: DoRA's magnitude holds {magnitude.numel()} numbers for {d} output "
            "units (one each)."
        )
    return LayerFactors(
        layer.name,
        LowRankDelta(as_matrix(B), as_matrix(A), scaling),
        alpha,
        str(A.dtype).removeprefix("torch."),
        tuple(A.shape),
        tuple(B.shape),
        magnitude,
    )


class opened:
    """safe_open of a weights file, its errors (a header that claims more bytes than the file
    has, a file that is not safetensors at all) as one-line ValueErrors."""

    def __init__(self, weights: Path) -> None:
        self.weights = weights

    def __enter__(self) -> object:
        try:
            self.file = safe_open(str(self.weights), framework="pt")
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{self.weights.name} is not a readable safetensors file ({error})."
            ) from None
        return self.file.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.file.__exit__(*exc)


def _tensor(file: object, key: str) -> Tensor:
    try:
        value = file.get_tensor(key)
    except SafetensorError as error:
        raise ValueError(f"{key} cannot be read ({error}).") from None
    if not value.is_floating_point():  # an int A would be cast silently, to nonsense
        raise ValueError(f"{key} holds {str(value.dtype).removeprefix('torch.')} numbers.")
    if not torch.isfinite(value).all():
        raise ValueError(f"{key} holds NaN or infinite weights: it cannot be used.")
    return value


def _alpha(file: object, layer: LayerKeys, rank: int) -> float:
    """The layer's alpha: the config's (PEFT), the file's scalar (kohya), or the rank where
    the file gives none (kohya's convention: then scaling = 1)."""
    if layer.config_alpha is not None:
        return layer.config_alpha
    if layer.alpha is None:
        return float(rank)
    value = _tensor(file, layer.alpha)
    if value.numel() != 1:
        raise ValueError(f"{layer.alpha} holds {value.numel()} numbers: an alpha is one.")
    alpha = value.item()
    peft_io.check_alpha(alpha, layer.alpha)
    return alpha


def _header(weights: Path) -> list[str]:
    """The tensor names of a safetensors file, its header checked against the file's size."""
    with opened(weights) as file:
        return list(file.keys())


# -- PEFT -----------------------------------------------------------------------------------------
def _peft_adapter(folder: Path) -> AdapterFile:
    config = peft_io.read_config(folder)
    settings = peft_io.adapter_settings(config)
    rank_pattern = _pattern(config, "rank_pattern")
    alpha_pattern = _pattern(config, "alpha_pattern")
    for name, rank in rank_pattern.items():
        check_rank(rank, setting=f"{peft_io.CONFIG_FILE}: rank_pattern[{short_repr(name)}]")
    for name, alpha in alpha_pattern.items():
        peft_io.check_alpha(alpha, f"{peft_io.CONFIG_FILE}: alpha_pattern[{short_repr(name)}]")
    weights = folder / peft_io.WEIGHTS_FILE
    keys = _header(weights)
    if not all(key.startswith(peft_io.PREFIX) for key in keys):
        raise ValueError(
            f"{peft_io.WEIGHTS_FILE} does not hold PEFT keys (they start with {peft_io.PREFIX!r})."
        )
    parts: dict[str, dict[str, str]] = {}
    saved = []
    for key in keys:
        suffix = next((s for s in peft_io.ADAPTER_PARTS if key.endswith(s)), None)
        if suffix is None:
            saved.append(key)
        else:
            name = key[len(peft_io.PREFIX) : -len(suffix)]
            parts.setdefault(name, {})[suffix] = key
    layers = []
    for name, found in parts.items():
        _check_complete(name, found, PEFT_A, PEFT_B)
        if settings.dora != (PEFT_MAGNITUDE in found):
            raise ValueError(
                f"{name}: a DoRA adapter (use_dora) has a lora_magnitude_vector for every layer, "
                "and a LoRA adapter none."
            )
        rank = rank_pattern.get(_matching(name, rank_pattern), settings.rank)
        alpha = alpha_pattern.get(_matching(name, alpha_pattern), settings.alpha)
        magnitude = found.get(PEFT_MAGNITUDE)
        layers.append(LayerKeys(name, found[PEFT_A], found[PEFT_B], None, magnitude, rank, alpha))
    modules = peft_io.saved_module_names(config)
    return _adapter(weights, PEFT, layers, saved, modules, settings.rslora, settings.dora)


def _pattern(config: dict, key: str) -> dict:
    pattern = config.get(key) or {}
    if not isinstance(pattern, dict) or not all(isinstance(name, str) for name in pattern):
        raise ValueError(f"{peft_io.CONFIG_FILE}: {key} must map layer names to numbers.")
    return pattern


def _matching(name: str, pattern: dict) -> str | None:
    """The pattern key that names layer `name`: the name itself or a dotted suffix of it
    ("q_proj", "layers.0.self_attn.q_proj"), as PEFT writes them. Keys are matched as names,
    never run as regular expressions: a config from a stranger cannot make matching slow."""
    for key in pattern:
        if name == key or name.endswith(f".{key}"):
            return key
    return None


# -- kohya / diffusers ----------------------------------------------------------------------------
def _loose_adapter(weights: Path) -> AdapterFile:
    keys = _header(weights)
    suffixes = next(
        (pair for pair in LOOSE_FACTORS if any(key.endswith(pair[0]) for key in keys)), None
    )
    if suffixes is None:
        if any(key.startswith(peft_io.PREFIX) for key in keys):
            raise ValueError(
                f"{weights.name} holds PEFT keys: put it in a folder as {peft_io.WEIGHTS_FILE} "
                f"beside its {peft_io.CONFIG_FILE} (its r and lora_alpha give each layer's scale)."
            )
        raise ValueError(
            f"{weights.name} is neither adapter format: it holds no LoRA factors "
            "(lora_down/lora_up, lora.down/lora.up or lora_A/lora_B keys)."
        )
    a_suffix, b_suffix = suffixes
    names = [key[: -len(a_suffix)] for key in keys if key.endswith(a_suffix)]
    present = set(keys)
    layers = []
    for name in names:
        found = {s: name + s for s in (a_suffix, b_suffix) if name + s in present}
        _check_complete(name, found, a_suffix, b_suffix)
        alpha = name + LOOSE_ALPHA if name + LOOSE_ALPHA in present else None
        magnitude = name + LOOSE_MAGNITUDE if name + LOOSE_MAGNITUDE in present else None
        layers.append(LayerKeys(name, found[a_suffix], found[b_suffix], alpha, magnitude))
    used = {key for layer in layers for key in (layer.A, layer.B, layer.alpha, layer.magnitude)}
    dora = any(layer.magnitude for layer in layers)
    others = [key for key in keys if key not in used]
    return _adapter(weights, KOHYA, layers, others, [], False, dora)


def _check_complete(name: str, found: dict[str, str], a_suffix: str, b_suffix: str) -> None:
    for suffix in (a_suffix, b_suffix):
        if suffix not in found:
            raise ValueError(
                f"the adapter is incomplete: {name} has no {suffix.strip('.')} (every adapted "
                "layer needs both factors)."
            )


def depth_order(name: str) -> tuple:
    """A sort key that puts layers in their model's order: the numbers in a name compared as
    numbers (layers.2 before layers.10, which a file's sorted keys put first)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _adapter(
    weights: Path,
    kind: str,
    layers: list[LayerKeys],
    saved: list[str],
    modules: list[str],
    rslora: bool,
    dora: bool,
) -> AdapterFile:
    if not layers:
        raise ValueError(f"{weights.name} holds no LoRA weights (lora_A, lora_B).")
    layers = sorted(layers, key=lambda layer: depth_order(layer.name))
    return AdapterFile(weights, kind, tuple(layers), tuple(saved), tuple(modules), rslora, dora)
