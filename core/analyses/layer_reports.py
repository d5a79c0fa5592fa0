"""A trained model's layers through the low-rank math, as reports a page, the command line
and the experiments read: every number of one layer (LayerReport), its three spectra as a log
plot shows them, a whole model, a layer through training (from the snapshots training
recorded), and a planted-rank run's learned update against its secret one.

core.lowrank computes each number from tensors; this module decides which of them make a
layer's report. core.analyses.reports puts a saved run (rebuilt from the store) through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from core.lowrank.against_w0 import (
    DEFAULT_EPSILON,
    Amplification,
    IntruderDimensions,
    MagnitudeDirection,
    RelativeNorms,
    amplification,
    intruder_dimensions,
    magnitude_direction_change,
    relative_norms,
)
from core.lowrank.similarity import coverage, subspace_similarity
from core.lowrank.spectrum import (
    DEFAULT_TOP_K,
    SigmaAxis,
    SpectrumSummary,
    resolved,
    spectrum_summary,
)
from core.lowrank.svd import (
    Delta,
    LowRankDelta,
    as_matrix,
    delta_svd,
    dense_delta,
    dense_svd,
    w0_svd,
)
from core.lowrank.updates import layer_updates


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


# -- a layer's spectra on a log axis --------------------------------------------------------------
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


# -- a layer through training ---------------------------------------------------------------------
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
