"""An update delta_W against the weight W0 it changes: which directions of W0 it works in, and
how much it moves.

    amplification (LoRA paper §7.3), with U, V the top-r singular vectors of delta_W:
                     ‖delta_W‖_F / ‖Uᵀ W0 V‖_F
    intruder dimensions (arXiv 2410.21228): a top-k left singular vector of W0 + delta_W whose
                     |cos| with every left singular vector of W0 stays below ε.
    relative size    ‖delta_W‖_F / ‖W0‖_F and σ1(delta_W) / σ1(W0)
    DoRA view (arXiv 2402.09353): how much training changed each output unit's magnitude
                     (ΔM) and its direction (ΔD).

Each takes tensors (or their SVDs, core.lowrank.svd) and returns a small dataclass of numbers;
core.analyses.layer_reports puts them together into a layer's report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from core.lowrank.similarity import random_orthonormal_rows
from core.lowrank.spectrum import DEFAULT_TOP_K
from core.lowrank.svd import SVD, as_matrix

DEFAULT_EPSILON = 0.5  # an intruder's |cos| with every W0 direction stays below this


# -- amplification --------------------------------------------------------------------------------
def projection_norm(W0: Tensor, U: Tensor, Vh: Tensor) -> float:
    """‖Uᵀ W0 V‖_F: how much of W0 lies in the directions U (d, r) and V = Vhᵀ (k, r)."""
    return torch.linalg.matrix_norm(U.T @ as_matrix(W0) @ Vh.T).item()


@dataclass(frozen=True)
class Amplification:
    """How strongly delta_W amplifies directions of W0 (LoRA paper §7.3, Table 7).

    W0 is projected onto three sets of r directions and ‖delta_W‖_F divided by each:
      amplification         delta_W's own top-r directions. Large: the update boosts
                            directions that W0 barely uses.
      amplification_w0      W0's own top-r directions (what W0 already emphasises).
      amplification_random  r random directions (one draw of the chance level).
    The projections themselves are kept as projection_delta / _w0 / _random, and
    projection_chance is the random one's expected size (see amplification_reading).
    """

    amplification: float
    amplification_w0: float
    amplification_random: float
    projection_delta: float
    projection_w0: float
    projection_random: float
    projection_chance: float
    delta_norm: float  # ‖delta_W‖_F
    amplification_rank: int  # r


def amplification(W0: Tensor, base: SVD, delta: SVD, rank: int, seed: int = 0) -> Amplification:
    """Amplification of the update whose SVD is `delta` on W0 (whose SVD is `base`), along its
    top `rank` directions; `seed` draws the random ones."""
    W = as_matrix(W0)
    d, k = W.shape
    generator = torch.Generator().manual_seed(seed)
    U_random = random_orthonormal_rows(rank, d, generator).T
    Vh_random = random_orthonormal_rows(rank, k, generator)
    delta_norm = torch.linalg.vector_norm(delta.S).item()
    projection_delta = projection_norm(W, delta.U[:, :rank], delta.Vh[:rank])
    projection_w0 = torch.linalg.vector_norm(base.S[:rank]).item()  # = ‖U0ᵀ W0 V0‖_F
    projection_random = projection_norm(W, U_random, Vh_random)
    return Amplification(
        amplification=_ratio(delta_norm, projection_delta),
        amplification_w0=_ratio(delta_norm, projection_w0),
        amplification_random=_ratio(delta_norm, projection_random),
        projection_delta=projection_delta,
        projection_w0=projection_w0,
        projection_random=projection_random,
        projection_chance=rank * torch.linalg.matrix_norm(W).item() / math.sqrt(d * k),
        delta_norm=delta_norm,
        amplification_rank=rank,
    )


CHANCE_FACTOR = 2.0  # within this factor of chance either way, a share of W0 is "chance"


@dataclass(frozen=True)
class AmplificationReading:
    """What a layer's amplification says. times = projection_delta / projection_chance: how
    much of W0 lies in delta_W's top r directions against random r directions on average
    (√E‖Uᵀ W0 V‖_F² = r ‖W0‖_F / √(d k) for random orthonormal U, V).

    "familiar"    times ≥ CHANCE_FACTOR: the update works in directions W0 already uses, so
                  its amplification is below the random baseline's (which divides by less)
    "chance"      within CHANCE_FACTOR of 1: no more of W0 there than in any directions
    "unfamiliar"  times ≤ 1 / CHANCE_FACTOR: directions W0 barely uses (the LoRA paper's §7.3)
    "none"        no update at all
    """

    word: str
    times: float


def amplification_reading(numbers: Amplification) -> AmplificationReading:
    """AmplificationReading of amplification()'s numbers (a LayerReport holds them too). Judged
    on the expected chance level, not the one random draw of amplification_random: a draw of
    r = 1 direction can miss its expectation many times over."""
    if numbers.delta_norm == 0:
        return AmplificationReading("none", 0.0)
    times = _ratio(numbers.projection_delta, numbers.projection_chance)
    if times >= CHANCE_FACTOR:
        return AmplificationReading("familiar", times)
    if times <= 1 / CHANCE_FACTOR:
        return AmplificationReading("unfamiliar", times)
    return AmplificationReading("chance", times)


def _ratio(numerator: float, denominator: float) -> float:
    if numerator == 0:
        return 0.0
    return numerator / denominator if denominator > 0 else math.inf


# -- intruder dimensions --------------------------------------------------------------------------
@dataclass(frozen=True)
class IntruderDimensions:
    """Which top singular directions of W0 + delta_W are intruders, and how close each comes
    to a direction of W0 (its largest |cos| with one)."""

    intruders: int
    intruder_indices: list[int]
    intruder_max_cos: list[float]


def intruder_dimensions(
    U0: Tensor, U: Tensor, k: int = DEFAULT_TOP_K, eps: float = DEFAULT_EPSILON
) -> IntruderDimensions:
    """Which of the top-k left singular vectors of W0 + delta_W are new (arXiv 2410.21228).

    U0 (d, m): every left singular vector of W0; U (d, ·): those of the adapted weight,
    strongest first. Vector i is an intruder when max_j |cos(U[:, i], U0[:, j])| < eps:
    no direction of the pretrained weight resembles it.
    """
    max_cos = (U[:, :k].T.to(torch.float64) @ U0.to(torch.float64)).abs().max(dim=1).values
    indices = [i for i, cos in enumerate(max_cos.tolist()) if cos < eps]
    return IntruderDimensions(len(indices), indices, max_cos.tolist())


# -- the size of the update -----------------------------------------------------------------------
@dataclass(frozen=True)
class RelativeNorms:
    """How big delta_W is next to W0 (see relative_norms)."""

    relative_norm_fro: float  # ‖delta_W‖_F / ‖W0‖_F
    relative_norm_spectral: float  # σ1(delta_W) / σ1(W0)


def relative_norms(S_W0: Tensor, S_delta: Tensor) -> RelativeNorms:
    """How big delta_W is next to W0, from their singular values: ‖delta_W‖_F / ‖W0‖_F (the
    Frobenius norm is the root of Σσ²) and σ1(delta_W) / σ1(W0) (the spectral norm). A
    low-rank update need not be small: a ratio near or above 1 is a large change."""
    S_W0, S_delta = S_W0.to(torch.float64), S_delta.to(torch.float64)
    top = S_delta.max().item() if S_delta.numel() else 0.0
    return RelativeNorms(
        _ratio(S_delta.norm().item(), S_W0.norm().item()), _ratio(top, S_W0.max().item())
    )


# -- DoRA view ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MagnitudeDirection:
    """DoRA's view of a change W0 → W: ΔM, the mean change of an output unit's magnitude, and
    ΔD, the mean 1 − cos between its directions."""

    delta_M: float
    delta_D: float


def magnitude_direction_change(W0: Tensor, W: Tensor) -> MagnitudeDirection:
    """DoRA's ΔM and ΔD between a weight W and its starting point W0 (arXiv 2402.09353 §2.2).

    Each output unit n (a row of the out × in matrix) has a magnitude ‖W[n]‖ and a
    direction W[n]/‖W[n]‖. The paper writes W as in × out and speaks of columns; the units
    are the same ones core.lowrank.lora's DoRA (and HF PEFT) rescales, one per output:
        delta_M = mean_n |‖W[n]‖ − ‖W0[n]‖|,   delta_D = mean_n (1 − cos(W[n], W0[n])).
    """
    W0, W = as_matrix(W0), as_matrix(W)
    delta_M = (W.norm(dim=1) - W0.norm(dim=1)).abs().mean()
    delta_D = (1 - torch.nn.functional.cosine_similarity(W, W0, dim=1)).mean()
    return MagnitudeDirection(delta_M.item(), delta_D.item())
