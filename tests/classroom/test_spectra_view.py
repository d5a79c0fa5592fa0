"""core.classroom.spectra_view, the Spectra page's rules, without a page: which runs it shows and
opens, and what its readings say (read in both languages through the catalogs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.analyses import layer_reports, whatif
from core.analyses.reports import Moment
from core.classroom import spectra_view
from core.classroom.i18n import LANGUAGES, catalog
from core.classroom.spectra_view import Sentence
from core.training import kinds

ENGLISH = catalog("en").t


@dataclasses.dataclass(frozen=True)
class Listed:
    """What spectra_runs reads of a listed run (a RunRecord has these and more)."""

    id: int
    has_weights: bool = True
    status: str = "finished"


# -- which runs ---------------------------------------------------------------------------------
def test_the_page_opens_the_chosen_run_when_it_has_weights_else_the_first():
    listed = [Listed(5), Listed(4, has_weights=False, status="failed"), Listed(3)]
    shown = spectra_view.spectra_runs(listed, {}, 3, 0)
    assert [record.id for record in shown.records] == [5, 3]  # a failed run has no weights
    assert (shown.run, shown.other, shown.missing, shown.training) == (3, 0, [], None)
    assert spectra_view.spectra_runs(listed, {}, 4, 0).run == 5  # failed: the newest instead
    assert spectra_view.spectra_runs(listed, {}, 0, 0).run == 5  # nothing chosen yet
    assert list(shown.by_id) == [5, 3]


def test_a_link_to_runs_that_are_not_there_names_them_and_drops_the_other():
    listed = [Listed(2)]
    shown = spectra_view.spectra_runs(listed, {7: "a row edited by hand"}, 9, 8)
    assert shown.missing == [9, 8]  # each said once on the page
    assert (shown.run, shown.other) == (2, 0)
    unreadable = spectra_view.spectra_runs(listed, {7: "a row edited by hand"}, 7, 2)
    assert unreadable.missing == [] and unreadable.other == 2  # there, said as unreadable


def test_with_nothing_to_open_the_page_waits_for_a_run_still_training():
    running = [Listed(3, has_weights=False, status="running"), Listed(2, False, "failed")]
    waiting = spectra_view.spectra_runs(running, {}, 3, 0)
    assert (waiting.records, waiting.run, waiting.training) == ([], 0, 3)
    nothing = spectra_view.spectra_runs([Listed(2, False, "failed")], {}, 2, 0)
    assert (nothing.run, nothing.training) == (0, None)


def test_a_choice_stays_while_it_is_offered():
    assert spectra_view.still_offered("fc2", ["fc1", "fc2"]) == "fc2"
    assert spectra_view.still_offered("conv1", ["fc1", "fc2"]) == "fc1"
    assert spectra_view.still_offered(4, [0, 1, 2]) == 0


# -- sentences ----------------------------------------------------------------------------------
def test_a_sentence_says_its_clauses_in_the_same_language():
    clause = Sentence("spectra.cut_zero_is_kept", {"layers": "head"})
    values = {
        "zero_is": clause,
        "metric": Sentence("spectra.measure_acc"),
        "within": spectra_view.margin(kinds.ACCURACY),
        "run": "9%",
    }
    sentence = Sentence("spectra.cut_reading_none", values)
    assert sentence.said(ENGLISH) == (
        "Even at k = 0 (the updates removed; left as trained: head) the test accuracy stays within "
        "1 point of the run's 9%: on this task, the updates the cut removes barely mattered."
    )
    assert spectra_view.said(None, ENGLISH) is None and spectra_view.said("σ", ENGLISH) == "σ"


def layer(W0: torch.Tensor, delta_W: torch.Tensor, **numbers) -> layer_reports.LayerReport:
    return dataclasses.replace(layer_reports.layer_report(W0, delta_W), **numbers)


def test_an_update_as_strong_as_w0_is_said_to_be_not_small():
    small = layer(torch.eye(4), 0.1 * torch.eye(4))
    assert [s.key for s in spectra_view.update_size(small)] == ["spectra.spectrum_caption"]
    assert small.relative_norm_fro == pytest.approx(0.1)
    assert spectra_view.update_size(small)[0].values == {"fro": "0.10", "spec": "0.10"}
    strong = layer(torch.eye(4), 1.0 * torch.eye(4))
    assert [s.key for s in spectra_view.update_size(strong)][1] == "spectra.not_small"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_reading_of_an_amplification_is_said(language):
    report = layer(torch.eye(6), torch.zeros(6, 6))
    sentence = spectra_view.amplification_sentence("fc1", report)
    assert sentence.key == "spectra.amp_reading_none"
    for times, word in ((5.0, "familiar"), (1.0, "chance"), (0.1, "unfamiliar")):
        numbers = layer(torch.eye(6), torch.eye(6), projection_delta=times, projection_chance=1.0)
        sentence = spectra_view.amplification_sentence("fc1", numbers)
        assert sentence.key == f"spectra.amp_reading_{word}"
        assert "fc1" in sentence.said(catalog(language).t)


def curve(
    kept: list[str],
    scores: dict[int, float],
    run: float = 0.9,
    metric: kinds.Metric = kinds.ACCURACY,
    base: float = 0.12,
    chance: float = 0.1,
) -> whatif.TruncationCurve:
    points = [whatif.TruncationPoint(k, a) for k, a in scores.items()]
    numbers = whatif.TruncationCurve(metric, points, run, base, 4, {}, False, kept, chance)
    return dataclasses.replace(numbers, rank_used=whatif.rank_used(numbers))


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_cut_reading_says_what_k_0_is(language):
    with_head = curve(["head"], {0: 0.3, 1: 0.5, 2: 0.895, 4: 0.9})
    assert spectra_view.zero_cut(with_head).values == {
        "layers": "head",
        "zero": "30.0%",
        "base": "12.0%",
    }
    assert spectra_view.zero_cut(with_head).key == "spectra.cut_zero_kept"
    reading = spectra_view.truncation_sentence(with_head)
    assert reading.key == "spectra.cut_reading_some" and reading.values["k"] == 2
    base = spectra_view.truncation_sentence(curve([], {0: 0.9, 4: 0.9}))
    assert base.key == "spectra.cut_reading_none"
    assert base.values["zero_is"] == Sentence("spectra.cut_zero_is_base")
    assert spectra_view.zero_cut(curve([], {0: 0.9, 4: 0.9})).key == "spectra.cut_zero_base"
    for sentence in (reading, base, spectra_view.zero_cut(with_head)):
        assert sentence.said(catalog(language).t)  # every placeholder has its value


def intruder_curve(
    source: float | None, metric: kinds.Metric = kinds.ACCURACY
) -> whatif.IntruderCurve:
    def score(target: float) -> whatif.TaskScore:
        return whatif.TaskScore(target, None if source is None else source + target / 10)

    points = [whatif.IntruderPoint(lam, score(0.8 + lam / 10)) for lam in (0.0, 0.5, 1.0)]
    return whatif.IntruderCurve(metric, points, score(0.1), {"fc1": [0, 3], "fc2": []})


def test_the_metrics_at_a_lambda_say_the_change_from_the_run_as_trained():
    curve = intruder_curve(source=0.5)
    assert spectra_view.intruder_counts(curve) == "fc1: 2, fc2: 0" and curve.intruders == 2
    target, source = spectra_view.lambda_metrics(curve, 0.0)
    assert (target.value, source.value) == ("80.0%", "58.0%")
    assert target.change.said(ENGLISH) == "-10.0 points vs. λ = 1"
    assert source.change.said(ENGLISH) == "-1.0 points vs. λ = 1"
    assert target.label.said(ENGLISH) == "New task at λ = 0.0"
    assert not target.lower_is_better  # the page colours a rise green
    assert [metric.change for metric in spectra_view.lambda_metrics(curve, 1.0)] == [None, None]


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_text_runs_readings_are_in_bits_and_lower_is_better(language):
    """Fewer bits are better: a cut that keeps the run's 2.00 bits to 2.005 is "about the
    same", the commonest-class chance becomes a uniform guess, and λ's change is in bits, a
    fall coloured as the good direction."""
    said = catalog(language).t
    bits = curve([], {0: 2.50, 1: 2.20, 2: 2.005, 4: 2.00}, 2.00, kinds.BITS, 2.6, 6.6)
    reading = spectra_view.truncation_sentence(bits)
    assert reading.key == "spectra.cut_reading_some" and reading.values["k"] == 2
    assert (reading.values["run"], reading.values["zero"]) == ("2.00", "2.50")
    assert reading.values["within"] == Sentence("spectra.margin_bits", {"value": "0.01"})
    assert reading.values["metric"] == Sentence("spectra.measure_bpc")
    assert "%" not in reading.said(said) and "2.00" in reading.said(said)
    diverged = spectra_view.truncation_sentence(
        curve([], {0: 3.0, 4: 7.5}, 7.5, kinds.BITS, 2.6, 6.6)
    )
    assert diverged.key == "spectra.cut_reading_chance"
    assert diverged.values["chance_is"] == Sentence("spectra.chance_uniform")
    intruders = intruder_curve(source=3.0, metric=kinds.BITS)
    target, source = spectra_view.lambda_metrics(intruders, 0.0)
    assert (target.value, source.value) == ("0.80", "3.08")
    assert target.lower_is_better and source.lower_is_better
    if language == "en":
        assert target.change.said(said) == "-0.10 bits per character vs. λ = 1"
    assert target.change.said(said) and source.change.said(said)


def test_without_a_source_task_its_metric_has_no_value():
    target, source = spectra_view.lambda_metrics(intruder_curve(source=None), 0.5)
    assert target.value == "85.0%" and (source.value, source.change) == (None, None)


def test_a_moments_metrics_say_what_was_not_logged_yet():
    start = Moment(step=0, index=0, train_loss=None, eval_step=None, val_loss=None, validation={})
    loss, acc = spectra_view.moment_metrics(start, None, kinds.ACCURACY)  # no snapshots
    assert (loss.value, acc.value, acc.help) == ("—", "—", None)
    later = Moment(20, 1, 0.5, eval_step=10, val_loss=0.7, validation={"val_acc": 0.75})
    evolution = layer_reports.SpectrumEvolution(
        [0, 20], [[], [2.0, 1.0]], [0.0, 0.1], [0.0, 0.02], None
    )
    metrics = spectra_view.moment_metrics(later, evolution, kinds.ACCURACY)
    assert [metric.value for metric in metrics] == ["0.500", "75.0%", "2", "0.02"]
    assert metrics[1].help == Sentence("spectra.metric_eval_at", {"step": 10})
    at_start = dataclasses.replace(later, index=0)
    assert spectra_view.moment_metrics(at_start, evolution, kinds.ACCURACY)[2].value == "0"


def test_a_text_runs_moment_shows_its_validation_bits():
    text = Moment(20, 1, 1.6, 10, 1.7, validation={"val_bpc": 2.4526, "val_acc": 0.51})
    _, bits = spectra_view.moment_metrics(text, None, kinds.BITS)
    assert (bits.label, bits.value) == (Sentence("spectra.metric_val_bpc"), "2.45")


# -- ▶ Play ---------------------------------------------------------------------------------------
def playback(state: dict) -> spectra_view.Playback:
    return spectra_view.Playback(state, [0, 10, 20], lambda name: f"spectra.{name}")


def test_the_slider_keeps_a_step_of_this_run_else_the_last():
    state = {"spectra.step": 10}
    assert playback(state).step() == 10 and not playback(state).playing
    state = {"spectra.step": 15}  # another run's step
    assert playback(state).step() == 20 and state["spectra.step"] == 20
    assert playback({}).step() == 20  # nothing chosen yet


def test_play_shows_every_snapshot_from_the_first_and_stops_at_the_last():
    state = {"spectra.step": 10}
    player = playback(state)
    player.play()
    steps = []
    while True:
        steps.append(player.step())
        if player.next_frame():
            break
    assert steps == [0, 10, 20]
    assert state["spectra.playing"] is False and state["spectra.step"] == 20


def test_pause_stays_at_the_frame_shown_last():
    state = {"spectra.step": 20}
    player = playback(state)
    player.play()
    assert player.step() == 0 and not player.next_frame()
    assert player.step() == 10 and not player.next_frame()  # the counter now points at 20
    player.pause()
    assert (player.playing, state["spectra.step"], player.step()) == (False, 10, 10)
