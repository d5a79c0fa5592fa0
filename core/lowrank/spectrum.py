"""Numbers that summarise one spectrum σ1 ≥ σ2 ≥ … ≥ 0, and which of its σ are only rounding.

    effective rank   exp(−Σ p_i ln p_i),  p_i = σ_i / Σσ    (how many directions really count)
    stable rank      Σσ² / σ1²                              (energy relative to the strongest)
    energy in top k  Σ_{i≤k} σ_i² / Σσ²
    numerical rank   how many σ exceed numpy.linalg.matrix_rank's tolerance

A σ at rounding level says "about zero", not how small; SigmaAxis is the log axis every σ
figure of the app draws on, set by the σ above it. Tensors in, numbers out: testable against
numpy on hand-made spectra.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_TOP_K = 10  # how many top directions "energy" and "intruders" look at
FLOAT32_EPS = torch.finfo(torch.float32).eps


def effective_rank(S: Tensor) -> float:
    """exp of the entropy of p = σ / Σσ (Roy & Vetterli 2007): equals n when n singular values
    are equal and the rest zero, and falls smoothly as the spectrum gets steeper. 0 for a
    zero matrix."""
    S = S.to(torch.float64)
    total = S.sum()
    if total <= 0:
        return 0.0
    p = S[S > 0] / total
    return math.exp(-(p * p.log()).sum().item())


def stable_rank(S: Tensor) -> float:
    """Σσ² / σ1² = ‖W‖_F² / ‖W‖_2²: never above the rank, and unlike the rank it does not
    jump when a tiny singular value appears. 0 for a zero matrix."""
    S = S.to(torch.float64)
    if S.numel() == 0 or S.max() <= 0:
        return 0.0
    return ((S**2).sum() / S.max() ** 2).item()


def energy_top_k(S: Tensor, k: int = DEFAULT_TOP_K) -> float:
    """Share of the squared Frobenius norm held by the top k directions. 0 for a zero matrix."""
    energy = S.to(torch.float64) ** 2
    total = energy.sum()
    if total <= 0:
        return 0.0
    return (energy.sort(descending=True).values[:k].sum() / total).item()


def rounding_tolerance(S: Tensor, shape: tuple[int, int], eps: float = FLOAT32_EPS) -> float:
    """numpy.linalg.matrix_rank's tolerance σ1 · max(d, k) · eps (0 for an empty spectrum).

    eps is the precision the weights are stored in (float32 by default): singular values at
    or below the tolerance are indistinguishable from rounding noise in such a matrix.
    """
    return S.max().item() * max(shape) * eps if S.numel() else 0.0


def at_rounding_level(S: Tensor, shape: tuple[int, int], eps: float = FLOAT32_EPS) -> Tensor:
    """Which σ are at rounding level (at or below rounding_tolerance; a zero spectrum is all
    rounding). Such a σ says "about zero", not how small: 1e-16 is no smaller than 1e-9."""
    return S.le(rounding_tolerance(S, shape, eps))


def resolved(sigma: Sequence[float], shape: Sequence[int] | None) -> list[float]:
    """The σ of a spectrum (or of its top n: σ1 is among them) above rounding level, the ones a
    log axis may show; all σ > 0 for a snapshot that did not record its matrix' shape (runs
    saved before snapshots did)."""
    S = torch.tensor(list(sigma), dtype=torch.float64)
    kept = S[S > 0] if shape is None else S[~at_rounding_level(S, tuple(shape))]
    return kept.tolist()


ROUNDING_FLOOR = 0.5  # decades below the smallest resolved σ where σ at rounding level are drawn


@dataclass(frozen=True)
class SigmaAxis:
    """The log axis of a σ figure: set by σ above rounding level only (see `resolved`). A full
    fine-tuning ΔW whose last σ are 1e-16 would otherwise stretch it over 17 decades of noise
    and squash the real spectrum into its top tenth. Every σ figure of the app uses this."""

    low: float  # the smallest resolved σ
    high: float  # the largest

    @classmethod
    def of(cls, spectra: Iterable[Sequence[float]]) -> SigmaAxis:
        """The axis holding every σ of `spectra` (each already `resolved`)."""
        values = [value for sigma in spectra for value in sigma]
        return cls(min(values, default=1.0), max(values, default=1.0))

    @property
    def floor(self) -> float:
        """Where σ at rounding level sit: below every resolved σ, marked as ≈ 0."""
        return self.low / 10**ROUNDING_FLOOR

    def log_range(self, pad: float) -> list[float]:
        """plotly's range of a log axis (in decades) from the floor to the top, `pad` decades
        of room on each side."""
        return [math.log10(self.floor) - pad, math.log10(self.high) + pad]


def numerical_rank(S: Tensor, shape: tuple[int, int], eps: float = FLOAT32_EPS) -> int:
    """How many σ exceed numpy.linalg.matrix_rank's tolerance (see rounding_tolerance)."""
    return int((~at_rounding_level(S, shape, eps)).sum().item())


@dataclass(frozen=True)
class SpectrumSummary:
    """The four numbers above for one spectrum."""

    effective_rank: float
    stable_rank: float
    energy_top_k: float
    numerical_rank: int


def spectrum_summary(S: Tensor, shape: tuple[int, int], k: int = DEFAULT_TOP_K) -> SpectrumSummary:
    return SpectrumSummary(
        effective_rank(S), stable_rank(S), energy_top_k(S, k), numerical_rank(S, shape)
    )
