"""Read and write adapters in Hugging Face PEFT's format, so they travel between tools.

A PEFT LoRA adapter is a folder with two files:

    adapter_config.json         r, lora_alpha, target_modules, use_rslora, use_dora, ...
    adapter_model.safetensors   base_model.model.<path>.lora_A.weight      (A)
                                base_model.model.<path>.lora_B.weight      (B)
                                base_model.model.<path>.lora_magnitude_vector  (DoRA's m)
                                base_model.model.<path>.weight / .bias     (modules_to_save)

Our A and B have exactly PEFT's shapes, so the files hold the same numbers either way.
Weights are safetensors and the config is JSON: nothing here ever unpickles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from core.common.config import short_repr
from core.lowrank.lora import LoRAConv2d, LoRALayer, adapted_layers, check_rank, inject
from core.lowrank.targets import eligible_layers

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MAX_CONFIG_BYTES = 2**20  # a config is a few hundred bytes: a larger "config" is an attack
# The key of each adapter tensor ends in its part's suffix: base_model.model.<path><suffix>.
ADAPTER_PARTS = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_magnitude_vector": "magnitude",
}


def export_peft(
    model: nn.Module, directory: str | Path, modules_to_save: list[str] | None = None
) -> Path:
    """Write the model's adapters (and fully trained modules such as the head) as a PEFT adapter.

    `modules_to_save` defaults to every module outside the adapters that has trainable
    parameters: in LoRA Lab that is the head, which each method trains in full.
    """
    layers = adapted_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to export.")
    first = next(iter(layers.values()))
    if modules_to_save is None:
        modules_to_save = trained_modules(model)
    tensors: dict[str, Tensor] = {}
    for path, layer in layers.items():
        A, B = shareable_factors(layer)
        tensors[f"{PREFIX}{path}.lora_A.weight"] = A
        tensors[f"{PREFIX}{path}.lora_B.weight"] = B
        if layer.dora:
            magnitude = layer.magnitude.reshape(magnitude_shape(layer))
            tensors[f"{PREFIX}{path}.lora_magnitude_vector"] = magnitude
    for name in modules_to_save:
        for pname, param in model.get_submodule(name).named_parameters():
            tensors[f"{PREFIX}{name}.{pname}"] = param
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "r": shareable_factors(first)[0].shape[0],
        "lora_alpha": shareable_alpha(first),
        "lora_dropout": getattr(first.dropout, "p", 0.0),
        "target_modules": sorted(layers),
        "modules_to_save": modules_to_save or None,
        "use_rslora": first.use_rslora,
        "use_dora": first.dora,
        "init_lora_weights": True,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(weights, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory


def magnitude_shape(layer: LoRALayer) -> tuple[int, ...]:
    """The shape of DoRA's magnitude m in a PEFT file: one number per output unit, (d,) for a
    Linear layer, and (1, d, 1, 1) for a Conv2d, as PEFT keeps it."""
    units = layer.W0.shape[0]
    return (1, units, 1, 1) if isinstance(layer, LoRAConv2d) else (units,)


def shareable_factors(layer: LoRALayer) -> tuple[Tensor, Tensor]:
    """(A, B) of an adapter that works on the original, untouched W0.

    PiSSA trains on a residual base W0 − s·B0·A0, which the receiver does not have. As HF PEFT
    recommends, share it instead as a rank-2r LoRA on W0 itself:
        s·[B, B0]·[A; −A0] = s·B·A − s·B0·A0,   so   W0 + that = residual + s·B·A.
    """
    if layer.init != "pissa":
        return layer.A, layer.B
    return torch.cat([layer.A, -layer.A0]), torch.cat([layer.B, layer.B0], dim=1)


def shareable_alpha(layer: LoRALayer) -> float:
    """The alpha that keeps the same scaling at the shared rank (2r for PiSSA)."""
    rank = shareable_factors(layer)[0].shape[0]
    return layer.scaling * (math.sqrt(rank) if layer.use_rslora else rank)


def trained_modules(model: nn.Module) -> list[str]:
    """Modules outside the adapters whose own parameters train (the head, usually)."""
    adapters = adapted_layers(model)
    inside = tuple(f"{path}." for path in adapters)
    names = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        outside = name not in adapters and not name.startswith(inside)
        if name and outside and any(p.requires_grad for p in own):
            names.append(name)
    return names


def import_peft(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """Load a PEFT LoRA adapter onto a copy of `base_model` (which stays untouched).

    Modules the adapter saved in full (PEFT's modules_to_save, such as the head) come back
    trainable, as in PEFT: saving or exporting the model again keeps them. Everything is
    checked before the copy is made: an adapter holds a complete A and B (and DoRA's
    magnitude) for layers the model has, and none of the base model's own weights.
    """
    config, tensors = read_peft(directory)
    settings = adapter_settings(config)
    layers = _adapter_layers(base_model, tensors, settings)
    saved = _saved_modules(base_model, tensors, config, set(layers))
    model = inject(
        base_model,
        sorted(layers),
        rank=settings.rank,
        alpha=settings.alpha,
        dropout=settings.dropout,
        scaling="rslora" if settings.rslora else "standard",
        dora=settings.dora,
    )
    _load_tensors(model, layers, saved)
    _check_finite_updates(model)
    return model


@torch.no_grad()
def _check_finite_updates(model: nn.Module) -> None:
    """ValueError unless every adapted layer's weight W0 + delta_W is finite. Finite factors
    (read_peft checked them) can still overflow float32 in their product (A and B of 1e30:
    B A is 1e60), and then the model computes NaN for every input."""
    for path, layer in adapted_layers(model).items():
        if not torch.isfinite(layer.merged_weight()).all():
            raise ValueError(
                f"the adapter's update of {path} is not a finite number (W0 + delta_W "
                "overflows float32, or DoRA divides by a norm of 0): the model would compute "
                "NaN. It cannot be used."
            )


@dataclass(frozen=True)
class AdapterSettings:
    """What adapter_config.json says about every adapted layer."""

    rank: int
    alpha: float
    dropout: float
    rslora: bool
    dora: bool


def adapter_settings(config: dict) -> AdapterSettings:
    """The config's LoRA settings, each checked; a ValueError names the first bad one.

    A rank of 4.7 is refused rather than read as 4: the file is not what it claims to be.
    """
    rank, alpha = config["r"], config["lora_alpha"]  # numbers: read_peft checked
    if isinstance(rank, float) and rank.is_integer():  # JSON's 4.0 is the rank 4
        rank = int(rank)
    check_rank(rank, setting=f"{CONFIG_FILE}: r")  # no layer's min(d, k) yet: A's rows say r
    check_alpha(alpha, f"{CONFIG_FILE}: lora_alpha")
    dropout = config.get("lora_dropout") or 0.0
    if not (_is_number(dropout) and 0 <= dropout < 1):
        raise ValueError(
            f"{CONFIG_FILE}: lora_dropout must be in [0, 1) (got {short_repr(dropout)})."
        )
    if config.get("init_lora_weights", True) not in (True, False, "gaussian"):
        raise ValueError(
            "only adapters trained from PEFT's default or gaussian init can be "
            "loaded (convert PiSSA/OLoRA adapters to plain LoRA in PEFT first)."
        )
    for key in ("use_rslora", "use_dora"):
        if not (config.get(key) is None or isinstance(config[key], bool)):  # 1 is not true
            raise ValueError(
                f"{CONFIG_FILE}: {key} must be true or false (got {short_repr(config[key])})."
            )
    rslora, dora = bool(config.get("use_rslora")), bool(config.get("use_dora"))
    return AdapterSettings(int(rank), float(alpha), float(dropout), rslora, dora)


def check_alpha(alpha: object, setting: str) -> None:
    """An alpha from a file (lora_alpha, an alpha_pattern's value): a finite number > 0."""
    if not (_is_number(alpha) and _finite(alpha) and alpha > 0):
        raise ValueError(f"{setting} must be a finite number > 0 (got {short_repr(alpha)}).")


def read_peft(directory: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The config and tensors of a PEFT adapter folder, with a clear error for anything else."""
    directory = Path(directory)
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(
            "adapters with per-layer ranks (rank_pattern/alpha_pattern) are not supported."
        )
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{WEIGHTS_FILE} is not a safetensors file ({error}).") from None
    if not all(k.startswith(PREFIX) for k in tensors):
        raise ValueError(f"{WEIGHTS_FILE} does not hold PEFT keys (they start with {PREFIX!r}).")
    for key, value in tensors.items():
        if not value.is_floating_point():  # an int A would be cast silently, to nonsense
            raise ValueError(
                f"{key[len(PREFIX) :]} holds {str(value.dtype).removeprefix('torch.')} numbers: "
                "an adapter's weights are floating point."
            )
    if not all(torch.isfinite(value).all() for value in tensors.values()):
        raise ValueError("the adapter holds NaN or infinite weights: it cannot be used.")
    return config, tensors


def read_config(directory: Path) -> dict:
    """The adapter_config.json of a PEFT adapter folder that has both files: a LoRA config with
    the numbers r and lora_alpha (each checked by adapter_settings), else a ValueError."""
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(
                f"{path.name} is missing: a PEFT adapter needs both {CONFIG_FILE} "
                f"and {WEIGHTS_FILE}."
            )
    config = _read_config(config_path)
    if config.get("peft_type") != "LORA":
        raise ValueError(
            f"only LoRA adapters can be loaded (peft_type={config.get('peft_type')!r})."
        )
    if not all(_is_number(config.get(key)) for key in ("r", "lora_alpha")):
        raise ValueError(f"{CONFIG_FILE} needs the numbers r and lora_alpha.")
    return config


def _read_config(path: Path) -> dict:
    """adapter_config.json as a dict: small, valid JSON, an object."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{CONFIG_FILE} is over {MAX_CONFIG_BYTES // 2**10} KB: an adapter's config is a "
            "few hundred bytes."
        )
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:  # (a 5,000-digit number is a ValueError)
        raise ValueError(f"{CONFIG_FILE} is not valid JSON ({error}).") from None
    except RecursionError:
        raise ValueError(f"{CONFIG_FILE} nests too deeply to be an adapter's config.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_FILE} does not describe an adapter (it is not a JSON object).")
    return config


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(number: float) -> bool:
    """Whether a JSON number fits a float and is finite (1e999 reads as inf, 10**400 as int)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _adapter_layers(
    base_model: nn.Module, tensors: dict[str, Tensor], settings: AdapterSettings
) -> dict[str, dict[str, Tensor]]:
    """{layer path: {"A": A, "B": B[, "magnitude": m]}}, complete, for layers LoRA can adapt.

    A layer path is a name, never a pattern: a key such as "*.lora_A.weight" names no layer.
    """
    layers: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        for suffix, part in ADAPTER_PARTS.items():
            if key.endswith(suffix):
                layers.setdefault(key[len(PREFIX) : -len(suffix)], {})[part] = value
    if not layers:
        raise ValueError(f"{WEIGHTS_FILE} holds no LoRA weights (lora_A, lora_B).")
    adaptable = [layer.name for layer in eligible_layers(base_model)]
    for path in layers:
        if path not in adaptable:
            raise ValueError(
                f"the adapter has LoRA weights for {path!r}, which is not a layer of this model "
                f"that LoRA can adapt ({', '.join(adaptable)})."
            )
    for path, parts in layers.items():
        for part in ("A", "B"):
            if part not in parts:
                raise ValueError(
                    f"the adapter is incomplete: {path} has no lora_{part} (every adapted layer "
                    "needs both lora_A and lora_B)."
                )
        if settings.dora and "magnitude" not in parts:
            raise ValueError(
                f"{path} has no lora_magnitude_vector, which a DoRA adapter (use_dora) needs "
                "for every layer."
            )
        if "magnitude" in parts and not settings.dora:
            raise ValueError(f"{path} holds a DoRA magnitude but the config has no use_dora.")
        if parts["A"].shape[:1] != (settings.rank,):
            raise ValueError(
                f"{path}.lora_A has shape {tuple(parts['A'].shape)}, but {CONFIG_FILE} says "
                f"r = {short_repr(settings.rank)}: A must have r rows."
            )
    return layers


def saved_module_names(config: dict) -> list[str]:
    """The config's modules_to_save: a list of module names (none if it has none)."""
    names = config.get("modules_to_save") or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{CONFIG_FILE}: modules_to_save must be a list of module names.")
    return names


def _saved_modules(
    base_model: nn.Module, tensors: dict[str, Tensor], config: dict, adapted: set[str]
) -> dict[str, Tensor]:
    """{parameter path: value} of the modules saved in full (PEFT's modules_to_save).

    Only those: a weight of an adapted layer (its frozen W0) or of a module the config does not
    list is refused, or importing an adapter could quietly replace the base model.
    """
    names = saved_module_names(config)
    own = dict(base_model.named_parameters())
    saved = {}
    for key, value in tensors.items():
        path = key[len(PREFIX) :]
        if key.endswith(tuple(ADAPTER_PARTS)):
            continue
        module = path.rpartition(".")[0]
        listed = any(module == name or module.endswith(f".{name}") for name in names)
        in_adapted = any(module == name or module.startswith(f"{name}.") for name in adapted)
        if in_adapted or not listed:
            raise ValueError(
                f"the adapter holds {path!r}, which is neither a LoRA weight nor part of a "
                "module in modules_to_save: an adapter never replaces the base model's weights."
            )
        if path not in own:
            raise ValueError(f"the adapter has weights for {path!r}, which this model lacks.")
        saved[path] = value
    return saved


@torch.no_grad()
def _load_tensors(
    model: nn.Module, layers: dict[str, dict[str, Tensor]], saved: dict[str, Tensor]
) -> None:
    adapters = adapted_layers(model)
    own = dict(model.named_parameters())
    for path, parts in layers.items():
        for suffix, part in ADAPTER_PARTS.items():
            if part == "magnitude" and part in parts:
                _check_magnitude(path + suffix, adapters[path], parts[part])
                _copy(path + suffix, adapters[path].magnitude, parts[part].reshape(-1))
            elif part in parts:
                _copy(path + suffix, getattr(adapters[path], part), parts[part])
    for path, value in saved.items():
        _copy(path, own[path].requires_grad_(True), value)


def _check_magnitude(path: str, layer: LoRALayer, value: Tensor) -> None:
    """DoRA's m has the shape magnitude_shape(layer): one number per output unit, never as
    many numbers in another shape ((2, 128) for 256 units is not a magnitude)."""
    if tuple(value.shape) != magnitude_shape(layer):
        raise ValueError(
            f"the adapter does not fit this model: {path} is {tuple(value.shape)} in the "
            f"file but {magnitude_shape(layer)} in the model (one number per output unit)."
        )


def _copy(path: str, target: Tensor, value: Tensor) -> None:
    if target.shape != value.shape:
        raise ValueError(
            f"the adapter does not fit this model: {path} is {tuple(value.shape)} in the "
            f"file but {tuple(target.shape)} in the model."
        )
    target.copy_(value)
