"""What LoRA costs, by hand: the Learn page's toy and its calculator for real models.

A LoRA adapter on a weight W0 ∈ R^{d×k} trains B ∈ R^{d×r} and A ∈ R^{r×k}:
r·(d + k) numbers instead of d·k. Everything here is that one formula applied
to a small random matrix (the toy) or to the shapes of a real transformer (the
calculator), so a student can check every figure with a pocket calculator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- the toy


@dataclass(frozen=True)
class Toy:
    """A small frozen W0, LoRA factors B and A, and the update ΔW = s·B·A they make."""

    W0: np.ndarray  # (d, k)
    B: np.ndarray  # (d, r)
    A: np.ndarray  # (r, k)
    delta_W: np.ndarray  # (d, k) = scaling · B @ A
    scaling: float
    rank_delta_W: int  # numerical rank of ΔW: at most r, 0 while B is zero

    @property
    def lora_params(self) -> int:
        return self.B.size + self.A.size  # r·(d + k)

    @property
    def full_params(self) -> int:
        return self.W0.size  # d·k

    @property
    def rank_cap(self) -> int:
        """min(d, k): no d×k matrix has a higher rank, so a rank r above it buys nothing."""
        return min(self.W0.shape)

    @property
    def break_even(self) -> float:
        """dk / (d + k): the rank from which LoRA's r(d + k) numbers are as many as full
        fine-tuning's dk. Always below min(d, k): LoRA saves only at a rank well under it."""
        d, k = self.W0.shape
        return d * k / (d + k)

    @property
    def saves(self) -> bool:
        """Whether LoRA trains fewer numbers than full fine-tuning (r < dk / (d + k))."""
        return self.lora_params < self.full_params


def toy(d: int, k: int, rank: int, alpha: float = 1.0, trained: bool = True, seed: int = 0) -> Toy:
    """Random W0, A and B of the given sizes.

    With ``trained=False`` B is zero, as LoRA initialises it, so ΔW = 0 and the
    adapted model starts exactly at the pretrained one. With ``trained=True`` B is
    random, standing in for what training would have learned: ΔW then has rank r
    (when r ≤ min(d, k)), never more, however large d and k are.
    """
    if min(d, k, rank) < 1:
        raise ValueError(f"d, k and r must be at least 1 (got d={d}, k={k}, r={rank})")
    rng = np.random.default_rng(seed)
    W0 = rng.standard_normal((d, k))
    A = rng.standard_normal((rank, k)) / np.sqrt(k)
    B = rng.standard_normal((d, rank)) if trained else np.zeros((d, rank))
    scaling = alpha / rank
    delta_W = scaling * B @ A
    return Toy(W0, B, A, delta_W, scaling, int(np.linalg.matrix_rank(delta_W)))


# ----------------------------------------------------------------------------- real models


@dataclass(frozen=True)
class ModelShape:
    """The weight matrices of one transformer block, repeated ``layers`` times.

    ``matrices`` maps a short name (as the LoRA paper uses: W_q, W_v, ...) to its
    shape (d, k) = (out, in). ``total_params`` is the published size of the whole
    model (embeddings and all), used for the percentage.
    """

    name: str
    layers: int
    matrices: dict[str, tuple[int, int]]
    total_params: int
    default_targets: tuple[str, ...] = ("W_q", "W_v")


def _attention(d_model: int) -> dict[str, tuple[int, int]]:
    return {name: (d_model, d_model) for name in ("W_q", "W_k", "W_v", "W_o")}


MODELS: dict[str, ModelShape] = {
    # Devlin et al. 2018: 12 layers, hidden 768, FFN 3072, 110M parameters.
    "BERT-base": ModelShape(
        "BERT-base",
        layers=12,
        matrices=_attention(768) | {"W_up": (3072, 768), "W_down": (768, 3072)},
        total_params=110_000_000,
    ),
    # Touvron et al. 2023: 32 layers, hidden 4096, SwiGLU FFN 11008, 6.74B parameters.
    "LLaMA-2-7B": ModelShape(
        "LLaMA-2-7B",
        layers=32,
        matrices=_attention(4096)
        | {"W_gate": (11008, 4096), "W_up": (11008, 4096), "W_down": (4096, 11008)},
        total_params=6_738_000_000,
    ),
    # Brown et al. 2020: 96 layers, d_model 12288, FFN 4·d_model, 175B parameters.
    "GPT-3 175B": ModelShape(
        "GPT-3 175B",
        layers=96,
        matrices=_attention(12288) | {"W_up": (49152, 12288), "W_down": (12288, 49152)},
        total_params=175_000_000_000,
    ),
}

BYTES_PER_VALUE = {"fp32": 4, "fp16": 2, "bf16": 2}
# Training in 16 bits keeps a 32-bit master copy of every trainable weight for the optimizer
# (mixed precision); training in fp32 updates the weights themselves.
MASTER_BYTES = {"fp32": 0, "fp16": 4, "bf16": 4}
ADAM_STATE_BYTES = 8  # Adam keeps two fp32 numbers (m and v) per trainable parameter

# What the LoRA paper reports for GPT-3 175B with r = 4 on W_q and W_v (§4.2): training memory
# 1.2 TB → 350 GB. It does not say how it counted; PAPER_SETTING is that setting here.
PAPER_FULL_BYTES = 1.2e12
PAPER_LORA_BYTES = 350e9
PAPER_SETTING = ("GPT-3 175B", ("W_q", "W_v"), 4, "fp16")  # model, targets, rank, format


@dataclass(frozen=True)
class Budget:
    """What adapting ``targets`` at ``rank`` costs, against full fine-tuning."""

    trainable_params: int
    total_params: int
    adapter_bytes: int  # the saved adapter: trainable_params · bytes per value
    frozen_bytes: int  # every weight of the model, held in memory by both methods
    full_training_bytes: int  # every weight trains: weight, gradient, master copy, Adam
    lora_training_bytes: int  # the frozen weights, plus the same for the LoRA factors only

    @property
    def fraction(self) -> float:
        return self.trainable_params / self.total_params

    @property
    def saved_bytes(self) -> int:
        return self.full_training_bytes - self.lora_training_bytes


def training_bytes_per_parameter(dtype: str) -> int:
    """Memory one trainable parameter takes while training with Adam: its weight and its
    gradient in ``dtype``, a master copy (mixed precision only) and Adam's two fp32 moments.
    16 bytes in every format offered (ZeRO, Rajbhandari et al. 2020, §3: 2 + 2 + 12)."""
    value_bytes = BYTES_PER_VALUE[dtype]
    return 2 * value_bytes + MASTER_BYTES[dtype] + ADAM_STATE_BYTES


def budget(model: ModelShape, targets: list[str], rank: int, dtype: str = "fp16") -> Budget:
    """Trainable parameters, adapter size and training memory of LoRA on ``model``.

    Every matrix named in ``targets`` gets an adapter in every layer:
    trainable = layers · Σ r·(d + k). Both methods hold every weight of the model; full
    fine-tuning needs training_bytes_per_parameter for each of them, LoRA the frozen
    weights plus that much for each adapter parameter. Activations (both need them; they
    depend on batch and sequence length) are left out.
    """
    unknown = sorted(set(targets) - set(model.matrices))
    if unknown:
        raise ValueError(
            f"{model.name} has no matrix {', '.join(unknown)}; it has {', '.join(model.matrices)}"
        )
    if rank < 1:
        raise ValueError(f"rank must be at least 1 (got {rank})")
    value_bytes = BYTES_PER_VALUE[dtype]
    per_layer = sum(rank * (d + k) for d, k in (model.matrices[name] for name in targets))
    trainable = model.layers * per_layer
    frozen = model.total_params * value_bytes
    per_trainable = training_bytes_per_parameter(dtype)
    return Budget(
        trainable_params=trainable,
        total_params=model.total_params,
        adapter_bytes=trainable * value_bytes,
        frozen_bytes=frozen,
        full_training_bytes=model.total_params * per_trainable,
        lora_training_bytes=frozen + trainable * per_trainable,
    )


def paper_budget() -> Budget:
    """Our count for the setting the LoRA paper reports training memory for (PAPER_SETTING),
    to show beside its 1.2 TB → 350 GB."""
    model, targets, rank, dtype = PAPER_SETTING
    return budget(MODELS[model], list(targets), rank, dtype)


def human_bytes(n: float) -> str:
    """1234567 → '1.2 MB' (decimal units, as disk sizes are sold)."""
    units = ("B", "kB", "MB", "GB", "TB")
    step = 0
    while abs(n) >= 1000 and step < len(units) - 1:
        n /= 1000
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def human_count(n: float) -> str:
    """4718592 → '4.7M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"
