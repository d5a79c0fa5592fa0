"""What an adapter file learned, layer by layer, and a smaller adapter that keeps what matters.

For each layer of an adapter (core.lowrank.adapter_files) the exact spectrum of
delta_W = scaling · B A comes from its factors (svd.lowrank_svd: QR of B and Aᵀ, an r × r SVD),
never from the d × k matrix, so a 7B model's adapter is read in seconds. From σ: ‖ΔW‖_F, the
effective and stable rank and the energy of the top k (core.lowrank.spectrum), σ1/σ2 (a spike:
one direction far above the rest), and the rank each resize criterion would keep:

    rank=K     the top K directions (at most the layer's rank)
    energy=F   the fewest directions whose σ² hold the share F of Σσ² (cumulative energy)
    ratio=R    the directions with σ_i ≥ σ1 / R (kohya's sv_ratio)
    fro=F      the fewest directions that keep the share F of ‖ΔW‖_F (kohya's sv_fro:
               √(Σ_{i≤k} σ_i² / Σσ²) ≥ F)

`resize_adapter` writes the truncated SVD of each layer's ΔW as a PEFT adapter (U_k √S_k as B,
√S_k V_kᵀ as A, alpha = rank so that scaling = 1; a rank_pattern where layers keep different
ranks). DoRA's magnitudes and whole saved modules are carried over as they are.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from core.lowrank import peft_io
from core.lowrank.adapter_files import (
    PEFT,
    AdapterFile,
    LayerFactors,
    opened,
    read_layer,
    read_layers,
)
from core.lowrank.spectrum import effective_rank, energy_top_k, stable_rank
from core.lowrank.svd import lowrank_svd

TOP_K = 4  # "energy in the top k" of an adapter's report: adapters have r of 4 to 64
CRITERIA = ("rank", "energy", "ratio", "fro")
# The criteria every report shows, beside the one a resize asks for: two energy levels, kohya's
# common sv_ratio and sv_fro settings.
REPORT_CRITERIA = ("energy=0.9", "energy=0.99", "ratio=10", "fro=0.9")
# A layer's position in its model: its name up to its last number (model.layers.12 of
# model.layers.12.self_attn.q_proj; kohya's lora_unet_..._blocks_0 of ..._blocks_0_attn1_to_q).
POSITION = re.compile(r"^(.*[._]\d+)[._](.+)$")


@dataclass(frozen=True)
class Criterion:
    """How many singular directions a resize keeps: `kind` (one of CRITERIA) at `value`."""

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Criterion:
        """rank=K (K ≥ 1 whole), energy=F or fro=F (0 < F ≤ 1), ratio=R (R ≥ 1); else a
        one-line ValueError saying the forms."""
        kind, _, value = text.partition("=")
        forms = "rank=K (K ≥ 1), energy=F or fro=F (0 < F ≤ 1), ratio=R (R ≥ 1)"
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        ok = {
            "rank": number >= 1 and number.is_integer() if math.isfinite(number) else False,
            "energy": 0 < number <= 1,
            "fro": 0 < number <= 1,
            "ratio": 1 <= number < math.inf,
        }
        if not ok.get(kind, False):
            raise ValueError(f"--resize {text!r} is not a criterion: use {forms}.")
        return cls(kind, number)

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"

    def keep(self, S: Tensor) -> int:
        """How many of the descending σ `S` this criterion keeps: at least 1 (a PEFT layer has
        a rank ≥ 1), at most len(S)."""
        n = S.numel()
        energy = (S.to(torch.float64) ** 2).cumsum(0)
        total = energy[-1].item() if n else 0.0
        if self.kind == "rank":
            kept = int(self.value)
        elif total <= 0:
            kept = 1
        elif self.kind == "ratio":
            kept = int((S[0] / self.value <= S).sum().item())
        else:
            share = self.value if self.kind == "energy" else self.value**2
            # (a relative tolerance: F = 1 keeps every direction with energy, not one more)
            kept = int((energy < share * total * (1 - 1e-12)).sum().item()) + 1
        return max(1, min(kept, n))


@dataclass(frozen=True)
class LayerInspection:
    """One layer's report. sigma: all of ΔW's singular values (its rank's worth)."""

    name: str
    shape: tuple[int, int]
    rank: int
    alpha: float
    scaling: float
    dtype: str
    frobenius: float
    sigma: tuple[float, ...]
    effective_rank: float
    stable_rank: float
    energy_top_k: float
    spike: float  # σ1/σ2; inf where σ2 = 0
    kept: dict[str, int]  # criterion (str) → the rank it keeps
    dora: bool

    @property
    def position(self) -> str:
        """Where the layer sits in its model: its name up to its last number ("" if none)."""
        match = POSITION.match(self.name)
        return match.group(1) if match else ""

    @property
    def kind(self) -> str:
        """What the layer is within its block: its name after the last number (q_proj)."""
        match = POSITION.match(self.name)
        return match.group(2) if match else self.name


@dataclass(frozen=True)
class AdapterInspection:
    """An adapter's report: each layer's, and what the file holds besides."""

    source: str  # the file or folder, as given
    format: str
    bytes: int
    top_k: int
    criteria: tuple[str, ...]
    layers: tuple[LayerInspection, ...]
    saved: tuple[str, ...]  # whole modules saved beside the adapters
    rslora: bool
    dora: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def total_rank(self) -> int:
        return sum(layer.rank for layer in self.layers)

    def positions(self) -> list[str]:
        """The layers' positions in file order, each once: the model's depth."""
        return list(dict.fromkeys(layer.position for layer in self.layers))

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(layer.kind for layer in self.layers))


@dataclass(frozen=True)
class ResizePoint:
    """A resize's outcome over the whole adapter: the ranks kept, and the share of all layers'
    Σσ² they hold."""

    criterion: str
    total_rank: int
    energy: float


def inspect_layer(
    layer: LayerFactors, top_k: int, criteria: Sequence[Criterion]
) -> LayerInspection:
    S = lowrank_svd(layer.delta.B, layer.delta.A, layer.delta.scaling).S
    sigma = tuple(S.tolist())
    return LayerInspection(
        name=layer.name,
        shape=layer.shape,
        rank=layer.delta.rank,
        alpha=layer.alpha,
        scaling=layer.delta.scaling,
        dtype=layer.dtype,
        frobenius=math.sqrt(sum(s * s for s in sigma)),
        sigma=sigma,
        effective_rank=effective_rank(S),
        stable_rank=stable_rank(S),
        energy_top_k=energy_top_k(S, top_k),
        spike=spike(sigma),
        kept={str(c): c.keep(S) for c in criteria},
        dora=layer.magnitude is not None,
    )


def spike(sigma: Sequence[float]) -> float:
    """σ1/σ2: how far the strongest direction stands above the next (inf if σ2 = 0 < σ1, 1.0
    for a zero update or a single σ, which has no second to stand above)."""
    if len(sigma) < 2 or sigma[0] <= 0:
        return 1.0
    return sigma[0] / sigma[1] if sigma[1] > 0 else math.inf


def report_criteria(extra: Criterion | None = None) -> tuple[Criterion, ...]:
    """The criteria of a report: REPORT_CRITERIA, and `extra` (a resize's) if it is another."""
    criteria = [Criterion.parse(text) for text in REPORT_CRITERIA]
    return tuple(criteria + ([extra] if extra and extra not in criteria else []))


def inspect_adapter(
    adapter: AdapterFile, source: str, top_k: int = TOP_K, extra: Criterion | None = None
) -> AdapterInspection:
    """Every layer's report, reading the file one layer at a time (ValueError at the first bad
    layer, before anything is written anywhere)."""
    if top_k < 1:
        raise ValueError(f"--top must be a whole number ≥ 1 (got {top_k}).")
    criteria = report_criteria(extra)
    layers = tuple(inspect_layer(layer, top_k, criteria) for layer in read_layers(adapter))
    return AdapterInspection(
        source=source,
        format=adapter.format,
        bytes=adapter.bytes,
        top_k=top_k,
        criteria=tuple(str(c) for c in criteria),
        layers=layers,
        saved=tuple(key.removeprefix(peft_io.PREFIX) for key in adapter.saved),
        rslora=adapter.rslora,
        dora=adapter.dora,
    )


def resize_preview(report: AdapterInspection) -> list[ResizePoint]:
    """Kept energy against total rank for each fixed rank K = 1 … the largest layer's rank: the
    curve a resize moves along."""
    largest = max(layer.rank for layer in report.layers)
    return [_point(report, f"rank={K}", [K] * len(report.layers)) for K in range(1, largest + 1)]


def criterion_points(report: AdapterInspection) -> list[ResizePoint]:
    """Where each of the report's criteria (report.criteria) lands on that curve."""
    return [
        _point(report, criterion, [layer.kept[criterion] for layer in report.layers])
        for criterion in report.criteria
    ]


def _point(report: AdapterInspection, criterion: str, ranks: list[int]) -> ResizePoint:
    """The whole adapter cut to `ranks` (one per layer, at most its rank): the ranks kept in
    all, and the share of every layer's Σσ² they hold."""
    total = sum(s * s for layer in report.layers for s in layer.sigma) or 1.0
    kept = [layer.sigma[:K] for layer, K in zip(report.layers, ranks, strict=True)]
    energy = sum(s * s for sigma in kept for s in sigma) / total
    return ResizePoint(criterion, sum(map(len, kept)), energy)


# -- resize ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResizedLayer:
    name: str
    rank_before: int
    rank_after: int
    energy: float  # the share of the layer's Σσ² kept


@dataclass(frozen=True)
class ResizeResult:
    out: Path
    criterion: str
    layers: tuple[ResizedLayer, ...]
    bytes_before: int
    bytes_after: int

    def to_dict(self) -> dict:
        return {**asdict(self), "out": str(self.out)}


def check_new_folder(out: Path) -> None:
    """A resize writes a new folder: never into one that exists (not even an empty one the user
    may have meant for something else), never over a file."""
    if out.exists() or out.is_symlink():
        raise ValueError(f"--out {out} exists: name a new folder (nothing was written).")
    if not out.parent.is_dir():
        raise ValueError(
            f"--out {out}: its folder {out.parent} does not exist (nothing was written)."
        )


def truncated_factors(layer: LayerFactors, rank: int) -> tuple[Tensor, Tensor]:
    """(A, B) of the rank-`rank` truncated SVD of the layer's ΔW, in the file's shapes and
    dtype, for scaling 1: B = U_k √S_k, A = √S_k V_kᵀ, so B A = U_k S_k V_kᵀ."""
    U, S, Vh = lowrank_svd(layer.delta.B, layer.delta.A, layer.delta.scaling)
    root = S[:rank].sqrt()
    B = U[:, :rank] * root
    A = root[:, None] * Vh[:rank]
    dtype = getattr(torch, layer.dtype)
    A = A.reshape(rank, *layer.A_shape[1:]).to(dtype).contiguous()
    B = B.reshape(B.shape[0], rank, *layer.B_shape[2:]).to(dtype).contiguous()
    return A, B


def resize_adapter(adapter: AdapterFile, criterion: Criterion, out: str | Path) -> ResizeResult:
    """Write the adapter cut by `criterion` as a PEFT folder `out` (new), and say what each
    layer kept. Written into a temporary folder beside `out` and renamed into place whole: on
    a full disk or a bad layer nothing is left at `out`."""
    out = Path(out)
    check_new_folder(out)
    tensors: dict[str, Tensor] = {}
    layers, ranks = [], {}
    with opened(adapter.weights) as file:
        for keys in adapter.layers:
            layer = read_layer(file, adapter, keys)
            S = lowrank_svd(layer.delta.B, layer.delta.A, layer.delta.scaling).S
            rank = criterion.keep(S)
            A, B = truncated_factors(layer, rank)
            tensors[f"{peft_io.PREFIX}{layer.name}{_suffix('A')}"] = A
            tensors[f"{peft_io.PREFIX}{layer.name}{_suffix('B')}"] = B
            if layer.magnitude is not None:
                tensors[f"{peft_io.PREFIX}{layer.name}{_suffix('magnitude')}"] = layer.magnitude
            energy = (S[:rank] ** 2).sum() / (S**2).sum() if S.pow(2).sum() > 0 else 1.0
            layers.append(ResizedLayer(layer.name, layer.delta.rank, rank, float(energy)))
            ranks[layer.name] = rank
        if adapter.format == PEFT:  # (a kohya file's other keys mean nothing to PEFT)
            tensors.update({key: file.get_tensor(key) for key in adapter.saved})
    config = resized_config(ranks, adapter)
    _write_folder(out, tensors, config)
    size = (out / peft_io.WEIGHTS_FILE).stat().st_size
    return ResizeResult(out, str(criterion), tuple(layers), adapter.bytes, size)


def _suffix(part: str) -> str:
    return next(s for s, p in peft_io.ADAPTER_PARTS.items() if p == part)


def resized_config(ranks: dict[str, int], adapter: AdapterFile) -> dict:
    """A PEFT LoRA config for layers of these ranks at scaling 1: r and lora_alpha the commonest
    rank, a rank_pattern and alpha_pattern for each layer of another."""
    common = Counter(ranks.values()).most_common(1)[0][0]
    others = {name: rank for name, rank in ranks.items() if rank != common}
    return {
        "peft_type": "LORA",
        "task_type": None,
        "r": common,
        "lora_alpha": common,
        "rank_pattern": others,
        "alpha_pattern": dict(others),
        "target_modules": sorted(ranks),
        "modules_to_save": list(adapter.modules_to_save) or None,
        "use_rslora": False,
        "use_dora": adapter.dora,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _write_folder(out: Path, tensors: dict[str, Tensor], config: dict) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_file(tensors, scratch / peft_io.WEIGHTS_FILE)
        (scratch / peft_io.CONFIG_FILE).write_text(json.dumps(config, indent=2))
        os.rename(scratch, out)  # fails, rather than merging, if out appeared meanwhile
    except OSError as error:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ValueError(
            f"cannot write {out} ({error.strerror or error}): nothing was written."
        ) from None
