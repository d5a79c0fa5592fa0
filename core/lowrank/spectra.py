"""Looking inside a learned update: the singular values of delta_W against those of W0.

A weight W (d × k, out × in; a Conv2d kernel is flattened to out × in·kh·kw) has a singular
value decomposition W = U diag(σ) Vᵀ with σ1 ≥ σ2 ≥ … ≥ 0. The columns of U are the output
directions the layer writes to, the rows of Vᵀ (= Vh) the input directions it reads, and σ
says how strongly. Everything here compares three such spectra per layer: of the frozen W0,
of the update delta_W, and of the adapted weight W0 + delta_W.

    effective rank   exp(−Σ p_i ln p_i),  p_i = σ_i / Σσ    (how many directions really count)
    stable rank      Σσ² / σ1²                              (energy relative to the strongest)
    energy in top k  Σ_{i≤k} σ_i² / Σσ²
    subspace similarity (LoRA paper, arXiv 2106.09685, eq. 4), between two bases U1, U2:
                     φ(i, j) = ‖U1[:, :i]ᵀ U2[:, :j]‖_F² / min(i, j)            ∈ [0, 1]
    amplification (LoRA paper §7.3), with U, V the top-r singular vectors of delta_W:
                     ‖delta_W‖_F / ‖Uᵀ W0 V‖_F
    intruder dimensions (arXiv 2410.21228): a top-k left singular vector of W0 + delta_W whose
                     |cos| with every left singular vector of W0 stays below ε.
    DoRA view (arXiv 2402.09353): how much training changed each output unit's magnitude
                     (ΔM) and its direction (ΔD).

LoRA's update delta_W = scaling · B A has rank ≤ r, so its exact SVD comes from the factors:
a QR of B and of Aᵀ and an r × r SVD (`lowrank_svd`), never a d × k SVD. All arithmetic runs
in float64 on the CPU: the matrices are small and the extra digits make the tiny singular
values trustworthy.

This module is pure math on tensors: it takes weights (or the models that hold them, read
through core.lowrank.lora) and returns numbers, and knows nothing of runs, configs, datasets or the
store. That keeps it testable against numpy on hand-made matrices and lets the training loop
use it without a cycle. Putting a saved run through these analyses, and printing them as
text, is core.analyses.reports' job.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from core.lowrank.lora import LoRALayer, adapted_layers

DEFAULT_TOP_K = 10  # how many top directions "energy" and "intruders" look at
DEFAULT_EPSILON = 0.5  # an intruder's |cos| with every W0 direction stays below this
FLOAT32_EPS = torch.finfo(torch.float32).eps


# -- singular value decompositions --------------------------------------------------------------
class SVD(NamedTuple):
    """W = U diag(S) Vh, thin: U (d, m) has the left singular vectors as columns, S (m,) is
    descending, Vh (m, k) has the right singular vectors as rows."""

    U: Tensor
    S: Tensor
    Vh: Tensor


@dataclass(frozen=True)
class LowRankDelta:
    """delta_W = scaling · B A kept as its factors: B (d, r), A (r, k); conv factors are
    flattened (B (out, r, 1, 1) → (out, r), A (r, in, kh, kw) → (r, in·kh·kw))."""

    B: Tensor
    A: Tensor
    scaling: float

    @classmethod
    def of_layer(cls, layer: LoRALayer) -> LowRankDelta:
        """The update of a core.lowrank.lora.LoRALayer: its factors() and scaling."""
        B, A = layer.factors()
        return cls(as_matrix(B), as_matrix(A), float(layer.scaling))

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def dense(self) -> Tensor:
        """The d × k matrix itself, for what cannot be done on the factors (W0 + delta_W)."""
        return self.scaling * as_matrix(self.B) @ as_matrix(self.A)


Delta = Tensor | LowRankDelta  # a dense delta_W (full fine-tuning) or LoRA's factors


@dataclass(frozen=True)
class LayerUpdate:
    """What training did to one layer."""

    W0: Tensor  # the pretrained weight, in its own shape
    delta_W: Delta  # LoRA's factors, or dense (full fine-tuning, DoRA, PiSSA)
    rank: int | None  # LoRA's r; None for full fine-tuning


def as_matrix(W: Tensor) -> Tensor:
    """A weight as a float64 CPU matrix: out × in, a Conv2d kernel as out × in·kh·kw."""
    return W.detach().to("cpu", torch.float64).reshape(W.shape[0], -1)


def dense_svd(W: Tensor) -> SVD:
    """The thin SVD of a full matrix: O(d·k·min(d, k)) work."""
    return SVD(*torch.linalg.svd(as_matrix(W), full_matrices=False))


def lowrank_svd(B: Tensor, A: Tensor, scaling: float = 1.0) -> SVD:
    """The exact thin SVD of delta_W = scaling · B A from its factors, in O((d + k)·r²) work.

    With B = Q_B R_B and Aᵀ = Q_A R_A (QR: Q has orthonormal columns, R is small, ≤ r × r),
        delta_W = Q_B (scaling · R_B R_Aᵀ) Q_Aᵀ,
    so the SVD of the small core, scaling · R_B R_Aᵀ = U_c diag(S) V_cᵀ, gives
        delta_W = (Q_B U_c) diag(S) (Q_A V_c)ᵀ:  same singular values, rotated vectors.
    Returns min(d, k, r) singular values; beyond rank(B A) they are zero.
    """
    Q_B, R_B = torch.linalg.qr(as_matrix(B))
    Q_A, R_A = torch.linalg.qr(as_matrix(A).T)
    U_core, S, Vh_core = torch.linalg.svd(scaling * R_B @ R_A.T, full_matrices=False)
    return SVD(Q_B @ U_core, S, Vh_core @ Q_A.T)


def delta_svd(delta_W: Delta) -> SVD:
    """The SVD of an update: through the factors for LoRA, dense for a full update."""
    if isinstance(delta_W, LowRankDelta):
        return lowrank_svd(delta_W.B, delta_W.A, delta_W.scaling)
    return dense_svd(delta_W)


def dense_delta(delta_W: Delta) -> Tensor:
    return delta_W.dense() if isinstance(delta_W, LowRankDelta) else as_matrix(delta_W)


# -- the SVD of W0, computed once per set of weights ----------------------------------------------
W0_CACHE_SIZE = 128
_w0_cache: OrderedDict[tuple, SVD] = OrderedDict()
_w0_cache_lock = threading.Lock()


def weights_key(W: Tensor) -> tuple:
    """Shape, dtype and a hash of the bytes: a fresh copy of the same weights gets the same
    key (zoo.load hands out copies), different weights never do."""
    data = W.detach().cpu().contiguous()
    digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=20)
    return tuple(data.shape), str(data.dtype), digest.hexdigest()


def w0_svd(W0: Tensor) -> SVD:
    """SVD of a frozen base weight, cached by content (least recently used entries leave
    first). The tensors are shared between callers: read them, do not modify them."""
    key = weights_key(W0)
    with _w0_cache_lock:
        if key in _w0_cache:
            _w0_cache.move_to_end(key)
            return _w0_cache[key]
    svd = dense_svd(W0)
    with _w0_cache_lock:
        _w0_cache[key] = svd
        while len(_w0_cache) > W0_CACHE_SIZE:
            _w0_cache.popitem(last=False)
    return svd


def clear_w0_cache() -> None:
    with _w0_cache_lock:
        _w0_cache.clear()


# -- numbers that summarise a spectrum ------------------------------------------------------------
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


# -- subspace similarity --------------------------------------------------------------------------
def top_right_directions(A: Tensor, n: int | None = None) -> Tensor:
    """The top-n right singular vectors of A as rows (n, k): the input directions A reads.
    This is the "U" of the LoRA paper's eq. 4 (it compares A matrices of two runs)."""
    return dense_svd(A).Vh[:n]


def subspace_similarity(U1: Tensor, U2: Tensor) -> Tensor:
    """The grid φ[i-1, j-1] = ‖U1[:i] U2[:j]ᵀ‖_F² / min(i, j) for every i ≤ n1, j ≤ n2.

    U1 (n1, k) and U2 (n2, k) hold orthonormal directions as rows, strongest first. φ is the
    mean squared cosine of the principal angles between the span of U1's top i and U2's top j
    directions: 1 when one span contains the other, 0 when they are orthogonal.
    """
    squared_cosines = (U1.to(torch.float64) @ U2.to(torch.float64).T) ** 2  # (n1, n2)
    overlap = squared_cosines.cumsum(0).cumsum(1)  # Σ over the top-left i × j block
    return overlap / torch.minimum(*_index_grids(U1.shape[0], U2.shape[0]))


def random_similarity_expected(n1: int, n2: int, dim: int) -> Tensor:
    """E φ(i, j) = max(i, j) / dim when either subspace is uniformly random in R^dim.

    A uniformly random unit vector v has E (uᵀv)² = 1/dim for any unit u, so the i × j
    squared cosines sum to i·j/dim on average; divided by min(i, j) that is max(i, j)/dim.
    """
    i, j = _index_grids(n1, n2)
    return torch.maximum(i, j) / dim


def random_similarity_sampled(
    n1: int, n2: int, dim: int, samples: int = 20, seed: int = 0
) -> Tensor:
    """The same baseline measured: mean φ grid of `samples` pairs of random subspaces."""
    generator = torch.Generator().manual_seed(seed)
    grids = [
        subspace_similarity(
            random_orthonormal_rows(n1, dim, generator),
            random_orthonormal_rows(n2, dim, generator),
        )
        for _ in range(samples)
    ]
    return torch.stack(grids).mean(0)


def random_orthonormal_rows(n: int, dim: int, generator: torch.Generator) -> Tensor:
    """n orthonormal directions in R^dim, uniformly random (QR of a Gaussian matrix)."""
    gaussian = torch.randn(dim, n, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian).Q.T


def _index_grids(n1: int, n2: int) -> tuple[Tensor, Tensor]:
    """i (n1, 1) and j (1, n2), counting from 1: they broadcast to the n1 × n2 grid."""
    i = torch.arange(1, n1 + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, n2 + 1, dtype=torch.float64)[None, :]
    return i, j


@dataclass(frozen=True)
class Similarity:
    """Everything a heatmap of φ needs: the grid φ[i-1][j-1] between two sets of directions in
    R^dim, and the random baseline both as its expectation and as sampled."""

    phi: list[list[float]]
    random_expected: list[list[float]]
    random_sampled: list[list[float]]
    dim: int


def similarity_report(U1: Tensor, U2: Tensor, samples: int = 20, seed: int = 0) -> Similarity:
    """Similarity between the directions U1 (n1, dim) and U2 (n2, dim)."""
    (n1, dim), n2 = U1.shape, U2.shape[0]
    return Similarity(
        phi=subspace_similarity(U1, U2).tolist(),
        random_expected=random_similarity_expected(n1, n2, dim).tolist(),
        random_sampled=random_similarity_sampled(n1, n2, dim, samples, seed).tolist(),
        dim=dim,
    )


def input_directions(update: LayerUpdate, n: int = 16) -> Tensor:
    """The top-n input directions of an update (right singular vectors of delta_W, as rows),
    stopping at its numerical rank: beyond it the directions are arbitrary. For LoRA they
    span the part of A's row space that B does not cancel."""
    delta = delta_svd(update.delta_W)
    rank = numerical_rank(delta.S, tuple(as_matrix(update.W0).shape))
    return delta.Vh[: max(1, min(n, rank))]


def update_similarity(update_1: LayerUpdate, update_2: LayerUpdate, n: int = 16) -> Similarity:
    """similarity_report of the input directions two runs learned for one layer: works for
    any pair of methods (LoRA at different ranks, LoRA against full fine-tuning).

    These are the right singular vectors of delta_W, not of A as in the LoRA paper's eq. 4
    (compare_adapters does that): the same span where B does not cancel part of A's rows.
    Both updates must belong to the same layer of the same model (equal shapes of W0), else
    a ValueError says so.
    """
    shape_1, shape_2 = (tuple(as_matrix(u.W0).shape) for u in (update_1, update_2))
    if shape_1 != shape_2:
        raise ValueError(
            f"cannot compare updates of different shapes ({shape_1[0]} × {shape_1[1]} and "
            f"{shape_2[0]} × {shape_2[1]}): compare the same layer of runs of the same model."
        )
    return similarity_report(input_directions(update_1, n), input_directions(update_2, n))


def compare_adapters(model_1: nn.Module, model_2: nn.Module, layer: str) -> Similarity:
    """similarity_report of the A matrices of one layer in two LoRA runs (LoRA paper, Fig. 3:
    e.g. an r = 8 run against an r = 64 run; rows = the top right singular vectors of A)."""
    A = []
    for model in (model_1, model_2):
        adapters = adapted_layers(model)
        if layer not in adapters:
            raise ValueError(
                f"layer {layer!r} has no adapter in both runs: compare an adapted layer."
            )
        A.append(adapters[layer].A.detach())
    return similarity_report(top_right_directions(A[0]), top_right_directions(A[1]))


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


# -- the size of the update ----------------------------------------------------------------------
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


# -- one layer, one model -------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerReport(
    MagnitudeDirection, RelativeNorms, IntruderDimensions, Amplification, SpectrumSummary
):
    """Every analysis of one layer, as plain numbers and lists (ready for JSON and plots): it
    holds the fields of each part (SpectrumSummary of delta_W, Amplification,
    IntruderDimensions, RelativeNorms, MagnitudeDirection), so it goes wherever one of them is
    read, and adding a number to a part adds it here. Besides:

      shape          [d, k] of the weight as a matrix
      sigma_W0, sigma_delta_W, sigma_W      the three spectra, largest first
      planted        a planted-rank run's comparison with its secret update (analyses.reports
                     adds it to the layer that holds it), else None
    """

    shape: list[int]
    sigma_W0: list[float]
    sigma_delta_W: list[float]
    sigma_W: list[float]
    planted: PlantedComparison | None = None

    def to_dict(self) -> dict:
        """The report as JSON-ready data, one key per field, "shape" first as the command line
        has always printed it; no "planted" key without one."""
        numbers = {"shape": self.shape} | asdict(self)
        if self.planted is None:
            del numbers["planted"]
        return numbers


def layer_report(
    W0: Tensor,
    delta_W: Delta,
    k: int = DEFAULT_TOP_K,
    eps: float = DEFAULT_EPSILON,
    rank: int | None = None,
) -> LayerReport:
    """The LayerReport of one layer.

    W0 is the pretrained weight; delta_W a LowRankDelta (LoRA) or a dense tensor in W0's shape
    (full fine-tuning: W_ft − W0). `rank` is how many top directions amplification uses: by
    default LoRA's r, and k for a dense update. Spectrum numbers are those of delta_W; DoRA's
    change is W0 → W0 + delta_W.
    """
    W0_matrix = as_matrix(W0)
    if rank is None:
        rank = delta_W.rank if isinstance(delta_W, LowRankDelta) else k
    rank = min(rank, *W0_matrix.shape)
    base, delta = w0_svd(W0), delta_svd(delta_W)
    W = W0_matrix + dense_delta(delta_W)
    adapted = dense_svd(W)
    parts = (
        spectrum_summary(delta.S, tuple(W0_matrix.shape), k),
        amplification(W0, base, delta, rank),
        intruder_dimensions(base.U, adapted.U, k, eps),
        relative_norms(base.S, delta.S),
        magnitude_direction_change(W0_matrix, W),
    )
    return LayerReport(
        **{name: value for part in parts for name, value in vars(part).items()},
        shape=list(W0_matrix.shape),
        sigma_W0=base.S.tolist(),
        sigma_delta_W=delta.S.tolist(),
        sigma_W=adapted.S.tolist(),
    )


SPECTRA = ("sigma_W0", "sigma_W", "sigma_delta_W")  # a LayerReport's three spectra (fields)


@dataclass(frozen=True)
class SpectrumPlot:
    """A layer_report's three spectra as a log plot shows them (see SigmaAxis)."""

    resolved: dict[str, list[float]]  # σ above rounding level, largest first (÷ σ1 if normalised)
    rounding: dict[str, int]  # how many σ after those are at rounding level (≈ 0)
    axis: SigmaAxis


def spectrum_plot(report: LayerReport, normalised: bool = False) -> SpectrumPlot:
    """SpectrumPlot of one LayerReport; `normalised` divides each spectrum by its own σ1."""
    kept, rounding = {}, {}
    for name in SPECTRA:
        sigma = getattr(report, name)
        kept[name] = resolved(sigma, report.shape)  # the first numerical_rank σ
        if normalised and kept[name]:
            kept[name] = [value / kept[name][0] for value in kept[name]]
        rounding[name] = len(sigma) - len(kept[name])
    return SpectrumPlot(kept, rounding, SigmaAxis.of(kept.values()))


@torch.no_grad()
def layer_updates(base_model: nn.Module, model: nn.Module) -> dict[str, LayerUpdate]:
    """Layer path → LayerUpdate for every layer that training changed.

    A LoRA model gives its adapted layers with their factors (or, for DoRA and PiSSA, whose
    update is not s·B A on top of the pretrained W0, the dense merged weight − W0). A fully or
    partly fine-tuned model gives each Linear/Conv2d whose weight differs from the base.
    """
    adapters = adapted_layers(model)
    if adapters:
        return {name: _lora_update(base_model, name, layer) for name, layer in adapters.items()}
    updates = {}
    for name, module in base_model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            W0, W = module.weight, model.get_submodule(name).weight
            if W.shape == W0.shape and not torch.equal(W.detach().cpu(), W0.detach().cpu()):
                updates[name] = LayerUpdate(W0, as_matrix(W) - as_matrix(W0), None)
    return updates


def _lora_update(base_model: nn.Module, name: str, layer: LoRALayer) -> LayerUpdate:
    W0 = base_model.get_submodule(name).weight
    if not layer.dora and torch.equal(layer.W0.detach().cpu(), W0.detach().cpu()):
        return LayerUpdate(W0, LowRankDelta.of_layer(layer), layer.rank)
    return LayerUpdate(W0, as_matrix(layer.merged_weight()) - as_matrix(W0), layer.rank)


@torch.no_grad()
def model_report(
    base_model: nn.Module,
    model: nn.Module,
    k: int = DEFAULT_TOP_K,
    eps: float = DEFAULT_EPSILON,
) -> dict[str, LayerReport]:
    """layer_report for every layer training changed: {layer path: report}.

    `model` is the LoRA-adapted model or the fine-tuned one; `base_model` the pretrained
    model both started from (training never modifies it).
    """
    return {
        name: layer_report(update.W0, update.delta_W, k, eps, update.rank)
        for name, update in layer_updates(base_model, model).items()
    }


# -- spectra recorded during training -------------------------------------------------------------
def top_singular_values(delta_W: Delta, n: int = 16) -> list[float]:
    """The n largest singular values of an update (fewer if its rank bound is lower)."""
    if isinstance(delta_W, LowRankDelta):
        return delta_svd(delta_W).S[:n].tolist()
    return torch.linalg.svdvals(as_matrix(delta_W))[:n].tolist()


@torch.no_grad()
def model_snapshot(base_model: nn.Module, model: nn.Module, n: int = 16) -> dict[str, dict]:
    """What the training engine records at a snapshot: per changed layer, the top-n σ of
    delta_W and DoRA's delta_M / delta_D. Cheap for LoRA (QR path, no d×k SVD)."""
    snapshot = {}
    for name, update in layer_updates(base_model, model).items():
        W = as_matrix(update.W0) + dense_delta(update.delta_W)
        snapshot[name] = {
            "sigma": top_singular_values(update.delta_W, n),
            "shape": list(W.shape),  # what tells its σ at rounding level (see `resolved`)
            **asdict(magnitude_direction_change(update.W0, W)),
        }
    return snapshot


@dataclass(frozen=True)
class SpectrumEvolution:
    """One layer's update through training, one entry per snapshot: its top n σ (those
    model_snapshot records only), DoRA's ΔM and ΔD, and ΔW's shape (None if the run's
    snapshots did not record it).

    No effective or stable rank here: from the top 16 σ of a dense update they would be
    numbers of a truncated spectrum, not of delta_W (layer_report has the real ones)."""

    steps: list[int]
    sigma: list[list[float]]
    delta_M: list[float]
    delta_D: list[float]
    shape: list[int] | None


def spectrum_evolution(snapshots: list[dict]) -> dict[str, SpectrumEvolution]:
    """Turn snapshots [{"step": s, "layers": model_snapshot(...)}, ...] into per-layer series
    for playing the spectrum's evolution: {layer: SpectrumEvolution}. A layer missing from a
    snapshot (full fine-tuning before its first step) has not moved yet: delta_W = 0 there."""
    names = list(dict.fromkeys(name for snap in snapshots for name in snap["layers"]))
    still = {"sigma": [], "delta_M": 0.0, "delta_D": 0.0}
    evolution = {}
    for name in names:
        records = [snap["layers"].get(name, still) for snap in snapshots]
        evolution[name] = SpectrumEvolution(
            steps=[snap["step"] for snap in snapshots],
            sigma=[record["sigma"] for record in records],
            delta_M=[record["delta_M"] for record in records],
            delta_D=[record["delta_D"] for record in records],
            shape=next((r["shape"] for r in reversed(records) if "shape" in r), None),
        )
    return evolution


# -- planted-rank tasks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PlantedComparison:
    """The learned update against the planted one delta_W* (rank r*) that made the labels.

    Both spectra, the subspace similarity grids of their top directions on the output side
    (left singular vectors) and the input side (right), and the overlap on each side: the
    share of delta_W*'s r*-dimensional subspace that the learned update's top r* directions
    cover, ‖U*ᵀ U[:, :r*]‖_F² / r* (V on the input side). It is 1 when training found the
    planted directions; an update of rank r < r* covers at most r / r*; random directions
    cover r*/d (left, baseline_left) and r*/k (right, baseline_right) on average.
    """

    sigma_learned: list[float]
    sigma_planted: list[float]
    planted_rank: int
    similarity_left: list[list[float]]
    similarity_right: list[list[float]]
    overlap_left: float
    overlap_right: float
    baseline_left: float
    baseline_right: float


def planted_comparison(
    delta_W: Delta, planted_delta_W: Tensor, planted_rank: int
) -> PlantedComparison:
    """PlantedComparison of a learned update delta_W with the planted delta_W*."""
    learned, planted = delta_svd(delta_W), dense_svd(planted_delta_W)
    d, k = planted.U.shape[0], planted.Vh.shape[1]
    n = min(max(planted_rank, DEFAULT_TOP_K), learned.S.numel())
    left = subspace_similarity(planted.U[:, :planted_rank].T, learned.U[:, :n].T)
    right = subspace_similarity(planted.Vh[:planted_rank], learned.Vh[:n])
    return PlantedComparison(
        sigma_learned=learned.S.tolist(),
        sigma_planted=planted.S.tolist(),
        planted_rank=planted_rank,
        similarity_left=left.tolist(),
        similarity_right=right.tolist(),
        overlap_left=coverage(planted.U.T, learned.U.T, planted_rank),
        overlap_right=coverage(planted.Vh, learned.Vh, planted_rank),
        baseline_left=planted_rank / d,
        baseline_right=planted_rank / k,
    )


def coverage(target: Tensor, found: Tensor, n: int) -> float:
    """‖target[:n] found[:n]ᵀ‖_F² / n for orthonormal directions as rows, strongest first:
    the share of the top-n subspace of `target` that the top n (or fewer) of `found` span."""
    cosines = target[:n].to(torch.float64) @ found[:n].to(torch.float64).T
    return (cosines**2).sum().item() / n
