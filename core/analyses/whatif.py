"""What-if views of a trained run: change part of its update, measure the run again.

The Spectra page shows what an update looks like (its singular values against W0's). These
ask what its parts are worth, each by editing a copy of the trained model and testing it by
its task's headline metric (core.training.kinds: accuracy on images, higher is better; bits per
character on text, lower is better), so "worse" always means worse on that metric:

    cut the rank       W_k = W0 + [delta_W]_k, the top k singular directions of each layer's
                       update (kohya_ss's "resize LoRA", measured). How much rank did the
                       update really use? For full fine-tuning: how low-rank was it?
    shrink intruders   W_λ = W − (1 − λ) Σ_{i ∈ intruders} σ_i u_i v_iᵀ, the intruder
                       dimensions of W = W0 + delta_W scaled by λ (Shuttleworth et al.,
                       arXiv 2410.21228; HF PEFT's reduce_intruder_dimension). Does the
                       forgetting of the source task shrink, and what does the target lose?
    drop one layer     W0 in place of W0 + delta_W in one layer alone: which layers mattered?

[delta_W]_k = U[:, :k] diag(σ[:k]) Vh[:k] is the best rank-k approximation of delta_W
(Eckart-Young). For LoRA it comes exactly from the factors (svd.lowrank_svd: a QR of B and
of Aᵀ and an r × r SVD), for a dense update from its SVD. The rank applies to the low-rank
part of each method, so the cut is

    LoRA     W0 + [s·B A]_k
    PiSSA    W0 + [s·(B A − B0 A0)]_k     its update from the original W0, rank ≤ 2r (the
                                          factors peft_io.shareable_factors shares)
    DoRA     m · V_k / ‖V_k‖,  V_k = W0 + [s·B A]_k: the direction update is cut, the learned
             magnitudes m stay (k = 0 is "magnitudes only", not the base layer)
    full fine-tuning (and head, top-k)    W0 + [W_ft − W0]_k, every changed weight matrix

Biases (BitFit, full fine-tuning) and a LoRA run's trained head stay as trained: only the
weight matrices that the Spectra page analyses are cut. Every edit goes to a merged copy of
the model; the run's own models are never touched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import cached_property

import torch
from torch import Tensor, nn

from core.lowrank import against_w0, lora, peft_io, spectrum
from core.lowrank.svd import SVD, Delta, LowRankDelta, as_matrix, delta_svd, dense_svd, w0_svd
from core.lowrank.updates import layer_updates
from core.training.data import Split
from core.training.kinds import Metric
from core.training.measure import TrainedRun, score, score_with, swapped_weights
from core.training.train import source_split

DEFAULT_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SLIDER_LAMBDAS = tuple(i / 10 for i in range(11))  # the Spectra page's λ slider: 0, 0.1, …, 1


# -- one layer --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankedUpdate:
    """One layer's update, split into the part a rank applies to and what stays.

    weight(delta) = W0 + delta, and for DoRA each output unit's row rescaled to the learned
    magnitude m. W0 is the original pretrained weight (for PiSSA too) as a float64 matrix.
    """

    W0: Tensor  # (d, k) float64
    delta_W: Delta  # the low-rank part: LoRA's factors, or a dense W_ft − W0
    magnitude: Tensor | None  # DoRA's m, one per output unit; None otherwise

    @cached_property
    def svd(self) -> SVD:
        """The SVD of delta_W: from the factors for LoRA, dense otherwise."""
        return delta_svd(self.delta_W)

    @property
    def rank(self) -> int:
        """How many singular directions there are to keep: r for LoRA (2r for PiSSA), min(d, k)
        for a dense update."""
        return self.svd.S.numel()

    def weight(self, delta: Tensor) -> Tensor:
        """The layer's weight matrix (float64) with `delta` in place of delta_W."""
        V = self.W0 + delta
        if self.magnitude is None:
            return V
        return (self.magnitude.to(V) / lora.row_norms(V))[:, None] * V

    def truncated_weight(self, k: int) -> Tensor:
        return self.weight(truncate(self.svd, k))


def truncate(svd: SVD, k: int) -> Tensor:
    """[W]_k = U[:, :k] diag(S[:k]) Vh[:k]: the best rank-k approximation (all of W once k
    reaches the rank; the zero matrix at k = 0)."""
    if k < 0:
        raise ValueError(f"k must be ≥ 0 (got {k})")
    return (svd.U[:, :k] * svd.S[:k]) @ svd.Vh[:k]


@torch.no_grad()
def ranked_updates(base: nn.Module, model: nn.Module) -> dict[str, RankedUpdate]:
    """Layer path → RankedUpdate for each layer the Spectra page analyses: every adapted
    layer of a LoRA model, else every Linear/Conv2d weight training changed."""
    adapters = lora.adapted_layers(model)
    if adapters:
        return {
            name: _adapter_update(base.get_submodule(name).weight, layer)
            for name, layer in adapters.items()
        }
    return {
        name: RankedUpdate(as_matrix(update.W0), update.delta_W, None)
        for name, update in layer_updates(base, model).items()
    }


def _adapter_update(W0: Tensor, layer: lora.LoRALayer) -> RankedUpdate:
    A, B = peft_io.shareable_factors(layer)  # on the original W0, PiSSA included
    delta_W = LowRankDelta(as_matrix(B), as_matrix(A), float(layer.scaling))
    magnitude = layer.magnitude.detach().double().cpu() if layer.dora else None
    return RankedUpdate(as_matrix(W0), delta_W, magnitude)


def rank_grid(rank: int) -> list[int]:
    """0, 1, 2, 4, … (the powers of two below `rank`), then `rank` itself."""
    grid = [0]
    k = 1
    while k < rank:
        grid.append(k)
        k *= 2
    return [*grid, rank] if rank > 0 else grid


# -- cut the rank -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TruncationPoint:
    """The target test score with every analysed layer's update cut to its top k directions."""

    k: int
    score: float


@dataclass(frozen=True)
class CutLayer:
    """One analysed layer of a truncation curve: how many directions its update has (r for
    LoRA, 2r for PiSSA, min(d, k) dense), how many of them are above rounding level, and
    whether the cut keeps its DoRA magnitudes."""

    rank: int
    numerical_rank: int
    dora: bool


@dataclass(frozen=True)
class TruncationCurve:
    """What cutting the rank does to a run's score (truncation_curve).

    metric         how the run is scored (its task's headline: accuracy, or bits per character)
    truncation     one point per k measured (default rank_grid of the largest layer rank: 0,
                   1, 2, 4, …, the full rank; a layer of lower rank is whole from its rank on)
    run_score, base_score    the untouched run and the base model
    max_rank       the largest layer rank
    layers         {layer: CutLayer}
    dora           True when the cut keeps DoRA's magnitudes (see the module docstring)
    kept           the changed weight matrices the cut leaves as trained (a LoRA run's output
                   head): k = 0 is the base model only where this is empty
    chance         what a model that learned nothing scores (chance_score)
    rank_used      how many directions the update used (rank_used of these numbers)
    """

    metric: Metric
    truncation: list[TruncationPoint]
    run_score: float
    base_score: float
    max_rank: int
    layers: dict[str, CutLayer]
    dora: bool
    kept: list[str]
    chance: float
    rank_used: int | None = None

    def score_at(self, k: int) -> float | None:
        """The score measured with every update cut to k directions (None if k was not)."""
        return next((point.score for point in self.truncation if point.k == k), None)

    def to_dict(self) -> dict:
        """The curve as JSON-ready data (the command line's --json), one key per field; the
        metric by its field name ("acc", "bpc")."""
        return asdict(self) | {"metric": self.metric.field}


def truncation_curve(run: TrainedRun, ks: list[int] | None = None) -> TruncationCurve:
    """Target test score with every analysed layer's update cut to its top k directions.
    ValueError if the run changed no weight matrix (only biases, or nothing at all).
    """
    updates = _require_updates(run)
    max_rank = max(update.rank for update in updates.values())
    ks = rank_grid(max_rank) if ks is None else sorted(set(ks))
    if any(k < 0 for k in ks):
        raise ValueError(f"the ranks to keep must be ≥ 0 (got {ks})")
    merged, metric = lora.merge(run.model), run.metric
    points = [
        TruncationPoint(
            k,
            score_with(
                merged, {n: u.truncated_weight(k) for n, u in updates.items()}, run.test, metric
            ),
        )
        for k in ks
    ]
    curve = TruncationCurve(
        metric=metric,
        truncation=points,
        run_score=score(run.model, run.test, metric),
        base_score=score(run.base, run.test, metric),
        max_rank=max_rank,
        layers={
            name: CutLayer(
                update.rank,
                spectrum.numerical_rank(update.svd.S, tuple(update.W0.shape)),
                update.magnitude is not None,
            )
            for name, update in updates.items()
        },
        dora=any(update.magnitude is not None for update in updates.values()),
        kept=[name for name in _changed_weights(run.base, merged) if name not in updates],
        chance=chance_score(run.test, metric, run.num_classes),
    )
    return replace(curve, rank_used=rank_used(curve))


def chance_score(split: Split, metric: Metric, num_classes: int) -> float:
    """What a model that learned nothing (a diverged run) scores at best, by the metric's field:
    the accuracy of always answering the commonest class of the split ("acc"), or the bits of
    a uniform guess over the num_classes characters, log2(num_classes) ("bpc")."""
    if metric.field == "bpc":
        return math.log2(num_classes)
    return torch.bincount(split.y.flatten()).max().item() / split.y.numel()


def rank_used(curve: TruncationCurve, tolerance: float | None = None) -> int | None:
    """How many directions the update really used: the smallest k of a truncation_curve from
    which on every cut keeps the run's score to within `tolerance` (by default the metric's:
    one point of accuracy, 0.01 bits per character).

    "From which on", not "the first k that does": the score against k is not monotone (a cut
    to one direction can score worse than no update at all), and a lucky small k followed by
    worse ones is no rank the update can do with. None if even the largest k measured falls
    short (a grid that stops below the full rank)."""
    used = None
    for point in reversed(curve.truncation):
        if _better(curve.metric, curve.run_score, point.score, tolerance):
            break
        used = point.k
    return used


def _better(metric: Metric, value: float, other: float, tolerance: float | None) -> bool:
    """`value` beats `other` by more than `tolerance` (by default the metric's) on the metric,
    with room for rounding (0.88 against 0.87 is one point, not more)."""
    margin = metric.tolerance if tolerance is None else tolerance
    return metric.better_by(value, other) > margin + 1e-12


def reading(curve: TruncationCurve, tolerance: float | None = None) -> str:
    """What a truncation curve says, in one word; the page and the command line each say it in
    their own words. `tolerance` is the metric's by default (one point, 0.01 bits). First
    whether there is anything to read:
      "chance"  the run itself scores no more than `tolerance` better than chance: it learned
                nothing (a diverged run), so no cut can say how many directions it used
      "worse"   the cut to k = 0 scores more than `tolerance` better than the run: the update
                hurt
    then how many directions the update used (rank_used):
      "some"    `rank_used` of them;  "all"  every one;  "short"  no cut measured kept the
                run's score;  "none"  k = 0 keeps it: the update did not matter for the score
    """
    metric = curve.metric
    if not _better(metric, curve.run_score, curve.chance, tolerance):
        return "chance"
    zero = curve.score_at(0)
    if zero is not None and _better(metric, zero, curve.run_score, tolerance):
        return "worse"
    used = curve.rank_used if tolerance is None else rank_used(curve, tolerance)
    if used is None:
        return "short"
    if used == 0:
        return "none"
    return "all" if used == curve.max_rank else "some"


def _require_updates(run: TrainedRun) -> dict[str, RankedUpdate]:
    updates = ranked_updates(run.base, run.model)
    if not updates:
        raise ValueError(
            "this run changed no weight matrix (only biases, or nothing): there is no ΔW to "
            "measure; try a LoRA or full fine-tuning run."
        )
    return updates


# -- shrink the intruder dimensions ---------------------------------------------------------------
@dataclass(frozen=True)
class Intruders:
    """The intruder dimensions of one layer's adapted weight W = W0 + delta_W: W's SVD and
    which of its top singular directions are intruders (against_w0.intruder_dimensions)."""

    W: Tensor  # (d, k) float64
    svd: SVD
    indices: list[int]

    @classmethod
    def find(
        cls,
        W0: Tensor,
        W: Tensor,
        top_k: int = spectrum.DEFAULT_TOP_K,
        eps: float = against_w0.DEFAULT_EPSILON,
    ) -> Intruders:
        W = as_matrix(W)
        svd = dense_svd(W)
        found = against_w0.intruder_dimensions(w0_svd(W0).U, svd.U, top_k, eps)
        return cls(W, svd, found.intruder_indices)

    def scaled(self, lam: float) -> Tensor:
        """W with its intruder dimensions scaled by λ: W − (1 − λ) Σ_i σ_i u_i v_iᵀ.
        λ = 1 is W itself, λ = 0 removes them (Shuttleworth et al.; PEFT's mitigation_lambda)."""
        if not 0 <= lam <= 1:
            raise ValueError(f"λ must be between 0 and 1 (got {lam})")
        i = self.indices
        intruding = (self.svd.U[:, i] * self.svd.S[i]) @ self.svd.Vh[i]
        return self.W - (1 - lam) * intruding


def scale_intruders(
    W0: Tensor,
    W: Tensor,
    lam: float,
    top_k: int = spectrum.DEFAULT_TOP_K,
    eps: float = against_w0.DEFAULT_EPSILON,
) -> Tensor:
    """W (a layer's adapted weight, e.g. W0 + delta_W) with its intruder dimensions with
    respect to W0 scaled by λ, as a float64 matrix."""
    return Intruders.find(W0, W, top_k, eps).scaled(lam)


@dataclass(frozen=True)
class TaskScore:
    """A model's test score on the target task and on its source (pretraining) task, by the
    target task's metric; None where the zoo model has no source test split."""

    target: float
    source: float | None


@dataclass(frozen=True)
class IntruderPoint:
    """The scores with every analysed layer's intruder dimensions scaled by λ."""

    lam: float
    score: TaskScore


@dataclass(frozen=True)
class IntruderCurve:
    """What shrinking the intruder dimensions does (intruder_curve).

    metric     how both tasks are scored (the target task's headline metric)
    points     one per λ, in the order asked for
    base       the base model's scores
    layers     {layer: the indices of its intruder dimensions among the top singular
               directions of W0 + delta_W}
    """

    metric: Metric
    points: list[IntruderPoint]
    base: TaskScore
    layers: dict[str, list[int]]

    @property
    def intruders(self) -> int:
        """The total count (0: λ changes nothing, and the model was measured once)."""
        return sum(len(indices) for indices in self.layers.values())

    def at(self, lam: float) -> TaskScore:
        """The scores measured at λ (KeyError if it was not)."""
        return {point.lam: point.score for point in self.points}[lam]


@torch.no_grad()
def intruder_curve(
    run: TrainedRun,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    top_k: int = spectrum.DEFAULT_TOP_K,
    eps: float = against_w0.DEFAULT_EPSILON,
    source: Split | None = None,
) -> IntruderCurve:
    """Target and source-task test score (the run's metric) as the intruder dimensions of
    every analysed layer are scaled by λ (all layers at once).

    `source` defaults to the zoo model's pretraining test split (core.training.train.source_split);
    its scores are None where there is none.
    """
    if not all(0 <= lam <= 1 for lam in lambdas):
        raise ValueError(f"λ must be between 0 and 1 (got {list(lambdas)})")
    updates = _require_updates(run)
    if source is None:
        source = source_split(run.config.model, run.num_classes)
    merged = lora.merge(run.model)
    found = {  # W0 as the base holds it: its SVD is cached for the Spectra page too
        name: Intruders.find(
            run.base.get_submodule(name).weight, merged.get_submodule(name).weight, top_k, eps
        )
        for name in updates
    }
    metric = run.metric
    if not any(f.indices for f in found.values()):  # every λ leaves the weights as they are
        unchanged = _target_and_source(merged, run.test, source, metric)  # so measured once
        points = [IntruderPoint(lam, unchanged) for lam in lambdas]
    else:
        points = []
        for lam in lambdas:
            with swapped_weights(merged, {n: f.scaled(lam) for n, f in found.items()}):
                measured = _target_and_source(merged, run.test, source, metric)
                points.append(IntruderPoint(lam, measured))
    return IntruderCurve(
        metric=metric,
        points=points,
        base=_target_and_source(run.base, run.test, source, metric),
        layers={name: f.indices for name, f in found.items()},
    )


def _target_and_source(
    model: nn.Module, target: Split, source: Split | None, metric: Metric
) -> TaskScore:
    on_source = None if source is None else score(model, source, metric)
    return TaskScore(score(model, target, metric), on_source)


# -- drop one layer's update ----------------------------------------------------------------------
@dataclass(frozen=True)
class LayerDrop:
    """One changed weight matrix: how big its update is, and what removing it alone costs, by
    the run's metric."""

    layer: str
    kind: str  # "adapter" (a LoRA layer) or "trained" (a weight trained in full: a head)
    shape: list[int]  # [d, k] of ΔW as a matrix
    relative_frobenius: float  # ‖ΔW‖_F / ‖W0‖_F
    relative_spectral: float  # ‖ΔW‖_2 / ‖W0‖_2
    score_without: float  # the target score with this layer's weight back at W0
    lost: float  # how much worse score_without is than the run's (Metric.better_by): > 0 mattered


@dataclass(frozen=True)
class LayerImportance:
    """layer_importance: the run's and the base model's score (by `metric`), and one
    LayerDrop per changed weight matrix in the model's layer order."""

    metric: Metric
    run_score: float
    base_score: float
    layers: list[LayerDrop]


@torch.no_grad()
def layer_importance(run: TrainedRun) -> LayerImportance:
    """Per changed weight matrix: how big its update is next to W0, and how much worse the
    target score gets when that layer's update alone is removed (its weight set back to W0).

    Every Linear/Conv2d whose merged weight differs from the base counts, so a LoRA run's
    trained head is here too (kind "trained", beside the "adapter" layers).
    """
    merged, metric = lora.merge(run.model), run.metric
    adapters = lora.adapted_layers(run.model)
    run_score = score(merged, run.test, metric)
    layers = []
    for name, W0 in _changed_weights(run.base, merged).items():
        W = merged.get_submodule(name).weight
        delta_W = as_matrix(W) - as_matrix(W0)
        without = score_with(merged, {name: W0}, run.test, metric)
        layers.append(
            LayerDrop(
                layer=name,
                kind="adapter" if name in adapters else "trained",
                shape=list(delta_W.shape),
                relative_frobenius=_norm_ratio(delta_W, W0, "fro"),
                relative_spectral=_norm_ratio(delta_W, W0, 2),
                score_without=without,
                lost=metric.better_by(run_score, without),
            )
        )
    if not layers:
        _require_updates(run)  # says why there is nothing to show
    return LayerImportance(metric, run_score, score(run.base, run.test, metric), layers)


def _changed_weights(base: nn.Module, merged: nn.Module) -> dict[str, Tensor]:
    """Layer path → W0 for each Linear/Conv2d whose weight in `merged` differs from the base."""
    changed = {}
    for name, module in base.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            W = merged.get_submodule(name).weight
            if W.shape == module.weight.shape and not torch.equal(W, module.weight):
                changed[name] = module.weight.detach()
    return changed


def _norm_ratio(delta_W: Tensor, W0: Tensor, ord: str | int) -> float:
    W0 = as_matrix(W0)
    return (torch.linalg.matrix_norm(delta_W, ord) / torch.linalg.matrix_norm(W0, ord)).item()
