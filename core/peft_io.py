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
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from core.lora import LoRAConv2d, LoRALayer, adapted_layers, inject

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector")


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
        if layer.dora:  # PEFT keeps a conv's m as (1, d, 1, 1)
            shape = (1, -1, 1, 1) if isinstance(layer, LoRAConv2d) else (-1,)
            tensors[f"{PREFIX}{path}.lora_magnitude_vector"] = layer.magnitude.reshape(shape)
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
    trainable, as in PEFT: saving or exporting the model again keeps them.
    """
    config, tensors = read_peft(directory)
    adapters = {k for k in tensors if k.endswith(LORA_SUFFIXES)}
    targets = sorted({k[len(PREFIX) :].rsplit(".lora_", 1)[0] for k in adapters})
    if not targets:
        raise ValueError(f"{WEIGHTS_FILE} holds no LoRA weights (lora_A, lora_B).")
    if config.get("init_lora_weights", True) not in (True, False, "gaussian"):
        raise ValueError(
            "only adapters trained from PEFT's default or gaussian init can be "
            "loaded (convert PiSSA/OLoRA adapters to plain LoRA in PEFT first)."
        )
    model = inject(
        base_model,
        targets,
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        dropout=float(config.get("lora_dropout") or 0.0),
        scaling="rslora" if config.get("use_rslora") else "standard",
        dora=bool(config.get("use_dora")),
    )
    _load_tensors(model, tensors, adapters)
    return model


def read_peft(directory: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The config and tensors of a PEFT adapter folder, with a clear error for anything else."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(
                f"{path.name} is missing: a PEFT adapter needs both {CONFIG_FILE} "
                f"and {WEIGHTS_FILE}."
            )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{CONFIG_FILE} is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_FILE} does not describe an adapter (it is not a JSON object).")
    if config.get("peft_type") != "LORA":
        raise ValueError(
            f"only LoRA adapters can be loaded (peft_type={config.get('peft_type')!r})."
        )
    if not all(isinstance(config.get(key), int | float) for key in ("r", "lora_alpha")):
        raise ValueError(f"{CONFIG_FILE} needs the numbers r and lora_alpha.")
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
    return config, tensors


@torch.no_grad()
def _load_tensors(model: nn.Module, tensors: dict[str, Tensor], adapters: set[str]) -> None:
    layers = adapted_layers(model)
    own = dict(model.named_parameters())
    for key, value in tensors.items():
        path = key[len(PREFIX) :]
        if key in adapters:
            layer_path, _, what = path.rpartition(".lora_")
            param = {"A.weight": "A", "B.weight": "B", "magnitude_vector": "magnitude"}[what]
            target = getattr(layers[layer_path], param, None)  # no magnitude without DoRA
            if target is None:
                raise ValueError(f"{path} holds a DoRA magnitude but the config has no use_dora.")
            value = value.reshape(-1) if param == "magnitude" else value
        elif path in own:
            target = own[path].requires_grad_(True)
        else:
            raise ValueError(f"the adapter has weights for {path!r}, which this model lacks.")
        if target.shape != value.shape:
            raise ValueError(
                f"the adapter does not fit this model: {path} is {tuple(value.shape)} in the "
                f"file but {tuple(target.shape)} in the model."
            )
        target.copy_(value)
