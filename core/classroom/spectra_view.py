"""The Spectra page's rules, without streamlit: which runs it can show and which one it opens,
and what its readings say.

A reading is a Sentence: a key of the language catalogs (core.classroom.i18n) and the values of
its placeholders, numbers already written as the page shows them. The page says it in the
student's language (`sentence.said(tr)`); a test reads it with `catalog("en").t`. So which
sentence a result gets, and with which numbers, is decided (and tested) here, and the page only
draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.analyses import layer_reports, whatif
from core.analyses.reports import Moment
from core.lowrank import against_w0, similarity
from core.store.records import RunRecord
from core.training.kinds import Metric

MISSING = "—"  # a number the run did not log (no loss at step 0, no evaluation yet)
Choice = TypeVar("Choice")


# -- sentences ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sentence:
    """A catalog key with the values of its placeholders; a value may itself be a Sentence,
    said in the same language first (a clause of a longer reading)."""

    key: str
    values: dict[str, object] = field(default_factory=dict)

    def said(self, translate: Callable[..., str]) -> str:
        """The sentence through `translate(key, **values)` (the page's tr, a Catalog's t)."""
        values = {
            name: value.said(translate) if isinstance(value, Sentence) else value
            for name, value in self.values.items()
        }
        return translate(self.key, **values)


def said(text: Sentence | str | None, translate: Callable[..., str]) -> str | None:
    """A Sentence said, a plain text as it is, None as None (a metric without help)."""
    return text.said(translate) if isinstance(text, Sentence) else text


def number(value: float | None, spec: str) -> str:
    """A metric as the page writes it: `spec` applied, or MISSING for a number not logged."""
    return MISSING if value is None else format(value, spec)


def margin(metric: Metric) -> Sentence:
    """The metric's tolerance as the readings say it: "1 point", "0.01 bits"."""
    return Sentence(metric.margin, {"value": metric.difference(metric.tolerance)})


# -- which runs, which choice ---------------------------------------------------------------------
@dataclass(frozen=True)
class SpectraRuns:
    """The runs the Spectra page can open and what it opens.

    records    the listed runs that kept their weights (a failed run has none to analyse)
    missing    run ids a link named that are not there (deleted, or never were): each is
               said once
    run        the run to open: the linked or chosen one if it can be opened, else the first
               of `records`; 0 when there is none
    other      the run to compare with (0: none); a missing one is dropped
    training   with nothing to open: the first listed run still training (its spectra come
               once it ends), else None
    """

    records: list[RunRecord]
    missing: list[int]
    run: int
    other: int
    training: int | None

    @property
    def by_id(self) -> dict[int, RunRecord]:
        return {record.id: record for record in self.records}


def spectra_runs(
    listed: Sequence[RunRecord], unreadable: Collection[int], run: int, other: int
) -> SpectraRuns:
    """SpectraRuns of the runs a student may see (`listed`, with the ids of those that cannot
    be read), given the run and the other run the page's settings or a link name (0: none)."""
    records = [record for record in listed if record.has_weights]
    there = {record.id for record in listed} | set(unreadable)
    missing = [run_id for run_id in (run, other) if run_id and run_id not in there]
    other = 0 if other in missing else other
    if not records:
        training = next((record.id for record in listed if record.status == "running"), None)
        return SpectraRuns(records, missing, 0, other, training)
    run = run if run in {record.id for record in records} else records[0].id
    return SpectraRuns(records, missing, run, other, None)


def still_offered(choice: Choice, options: Sequence[Choice]) -> Choice:
    """A choice kept while it is offered, else the first option (a layer the new run did not
    change, a run to compare with that is no longer comparable)."""
    return choice if choice in options else options[0]


# -- a layer's spectrum ---------------------------------------------------------------------------
def update_size(report: layer_reports.LayerReport) -> list[Sentence]:
    """How big ΔW is next to W0 (the spectrum's caption), and, when its strongest direction
    is at least W0's, that the update is not small."""
    size = Sentence(
        "spectra.spectrum_caption",
        {"fro": f"{report.relative_norm_fro:.2f}", "spec": f"{report.relative_norm_spectral:.2f}"},
    )
    return [size, Sentence("spectra.not_small")] if report.relative_norm_spectral >= 1 else [size]


def amplification_sentence(layer: str, report: layer_reports.LayerReport) -> Sentence:
    """What the layer's amplification says (against_w0.amplification_reading)."""
    reading = against_w0.amplification_reading(report)
    return Sentence(
        f"spectra.amp_reading_{reading.word}",
        {
            "layer": layer,
            "r": report.amplification_rank,
            "times": f"{reading.times:.2g}",
            "amp": f"{report.amplification:.2f}",
            "random": f"{report.amplification_random:.2f}",
        },
    )


# -- a moment of the run --------------------------------------------------------------------------
@dataclass(frozen=True)
class Readout:
    """A number as a metric shows it: its label (a Sentence, or a formula said alike in every
    language), its value as written, and what its help says (None: no help)."""

    label: Sentence | str
    value: str
    help: Sentence | None = None


def moment_metrics(
    moment: Moment, evolution: layer_reports.SpectrumEvolution | None, metric: Metric
) -> list[Readout]:
    """The numbers of a moment: the training loss and the last validation score by the run's
    metric (accuracy, or bits per character; its help says at which step it was measured),
    then, where the layer has snapshots, σ1 of ΔW and DoRA's ΔD at that moment."""
    evaluated = moment.eval_step
    value = moment.validation.get(metric.validation)
    metrics = [
        Readout(Sentence("spectra.metric_train_loss"), number(moment.train_loss, ".3f")),
        Readout(
            Sentence(f"spectra.metric_{metric.validation}"),
            MISSING if value is None else metric.written(value),
            None if evaluated is None else Sentence("spectra.metric_eval_at", {"step": evaluated}),
        ),
    ]
    if evolution:
        sigma = evolution.sigma[moment.index]  # none before the layer's first step: ΔW = 0
        metrics += [
            Readout("σ₁(ΔW)", number(sigma[0] if sigma else 0.0, ".3g")),
            Readout(Sentence("spectra.delta_D"), number(evolution.delta_D[moment.index], ".2g")),
        ]
    return metrics


# -- what if…? ------------------------------------------------------------------------------------
def zero_cut(curve: whatif.TruncationCurve) -> Sentence:
    """What k = 0 is: the base model, or the cut layers at W0 with some trained ones kept."""
    written = curve.metric.written
    values = {"zero": written(curve.score_at(0)), "base": written(curve.base_score)}
    if curve.kept:
        return Sentence("spectra.cut_zero_kept", {"layers": ", ".join(curve.kept), **values})
    return Sentence("spectra.cut_zero_base", values)


def truncation_sentence(curve: whatif.TruncationCurve) -> Sentence:
    """What the truncation curve says (whatif.reading): how many directions the update used,
    or that the run learned nothing, or that its update hurt; its numbers by the run's metric
    ({metric}: "the test accuracy", "the bits per character on the test text")."""
    if curve.kept:
        zero_is = Sentence("spectra.cut_zero_is_kept", {"layers": ", ".join(curve.kept)})
    else:
        zero_is = Sentence("spectra.cut_zero_is_base")
    metric = curve.metric
    values = {
        "k": curve.rank_used,
        "rank": curve.max_rank,
        "metric": Sentence(f"spectra.measure_{metric.field}"),
        "within": margin(metric),
        "run": metric.written(curve.run_score),
        "chance": metric.written(curve.chance),
        "chance_is": Sentence(metric.chance),
        "zero": metric.written(curve.score_at(0)),
        "zero_is": zero_is,
    }
    return Sentence(f"spectra.cut_reading_{whatif.reading(curve)}", values)


def intruder_counts(curve: whatif.IntruderCurve) -> str:
    """ "fc1: 3, fc2: 1": each analysed layer's intruder dimensions."""
    return ", ".join(f"{name}: {len(indices)}" for name, indices in curve.layers.items())


def lambda_change(metric: Metric, value: float, trained: float) -> Sentence | None:
    """The change from the run as trained (λ = 1), signed, in the metric's units (points,
    bits); None at λ = 1 itself (or wherever nothing changed), where there is none to show."""
    if value == trained:
        return None
    change = Sentence(metric.change, {"value": metric.changed(trained, value)})
    return Sentence("spectra.lambda_delta", {"change": change})


@dataclass(frozen=True)
class LambdaReadout:
    """One task's score at the chosen λ, as a metric: its label, its value (None: the zoo
    model has no source task to measure), the change from λ = 1 (None: no change), and
    whether a fall is the good direction (bits per character: the page colours it so)."""

    label: Sentence
    value: str | None
    change: Sentence | None
    lower_is_better: bool


def lambda_metrics(curve: whatif.IntruderCurve, lam: float) -> list[LambdaReadout]:
    """The target and the source task's score at λ, each against the run as trained."""
    at, trained, metric = curve.at(lam), curve.at(1.0), curve.metric
    values = {"lam": f"{lam:.1f}", "metric": Sentence(metric.axis)}
    source = None if at.source is None else metric.written(at.source)
    return [
        LambdaReadout(
            Sentence("spectra.target_metric", values),
            metric.written(at.target),
            lambda_change(metric, at.target, trained.target),
            metric.lower_is_better,
        ),
        LambdaReadout(
            Sentence("spectra.source_metric", values),
            source,
            None if at.source is None else lambda_change(metric, at.source, trained.source),
            metric.lower_is_better,
        ),
    ]


def importance_caption(report: whatif.LayerImportance) -> Sentence:
    written = report.metric.written
    return Sentence(
        "spectra.layers_caption",
        {"run": written(report.run_score), "base": written(report.base_score)},
    )


# -- two runs, a planted update -------------------------------------------------------------------
def similarity_caption(result: similarity.Similarity) -> Sentence:
    """φ(1, 1), the strongest directions of both runs, against what random ones would give."""
    return Sentence(
        "spectra.phi_caption",
        {
            "phi": f"{result.phi[0][0]:.2f}",
            "chance": f"{result.random_expected[0][0]:.3f}",
        },
    )


def planted_overlap(result: layer_reports.PlantedComparison) -> Sentence:
    """How much of the planted update's directions the learned one found, on each side."""
    return Sentence(
        "spectra.planted_overlap",
        {
            "left": f"{result.overlap_left:.2f}",
            "right": f"{result.overlap_right:.2f}",
            "chance_left": f"{result.baseline_left:.3f}",
            "chance_right": f"{result.baseline_right:.3f}",
        },
    )


# -- ▶ Play through the snapshots -----------------------------------------------------------------
@dataclass(frozen=True)
class Playback:
    """▶ Play through a run's snapshots: which step the page shows, and what Play, Pause and
    each frame do to what the page keeps between its runs (its session state, any mapping):

      key("playing")  whether it plays
      key("frame")    while playing, the frame shown (counted from 0; one per snapshot)
      key("step")     the student's slider, where Pause and the last frame leave it
    """

    state: MutableMapping[str, Any]
    steps: list[int]  # the run's snapshot steps, in order
    key: Callable[[str], str]  # a name → the page's key for it

    @property
    def playing(self) -> bool:
        return self.state.get(self.key("playing"), False)

    def step(self) -> int:
        """The step shown: the frame's while playing, else the slider's, which is kept to one
        of the run's steps (the last, when it holds another run's or none yet)."""
        if self.state.get(self.key("step")) not in self.steps:
            self.state[self.key("step")] = self.steps[-1]
        if self.playing:
            return self.steps[min(self.state[self.key("frame")], len(self.steps) - 1)]
        return self.state[self.key("step")]

    def play(self) -> None:
        """From the first snapshot."""
        self.state[self.key("playing")], self.state[self.key("frame")] = True, 0

    def pause(self) -> None:
        """Stop at the frame shown last (the frame counter already points at the next)."""
        self._stop(self.steps[self.state[self.key("frame")] - 1])

    def next_frame(self) -> bool:
        """After a frame was shown: on to the next, or stop at the last (True: stopped)."""
        step = self.step()
        self.state[self.key("frame")] += 1
        if self.state[self.key("frame")] < len(self.steps):
            return False
        self._stop(step)
        return True

    def _stop(self, step: int) -> None:
        self.state[self.key("playing")], self.state[self.key("step")] = False, step
