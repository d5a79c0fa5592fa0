"""core.classroom.live: a run's curves kept up event by event equal the curves computed from
scratch; thinning keeps the ends and every evaluation; a poll with nothing new costs nothing."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.classroom import live
from core.classroom.i18n import catalog
from core.training import kinds
from core.training.record import train_and_save
from core.training.train import Event, RunConfig, train

ROOT = Path(__file__).resolve().parents[2]


def step_event(step: int, loss: float, evaluated: bool) -> Event:
    record = {
        "step": step,
        "train_loss": None if step == 0 else loss,
        "val_loss": loss + 0.1 if evaluated else None,
        "val_acc": 1 / (1 + loss) if evaluated else None,
        "elapsed": step * 0.01,
        "steps_per_s": 100.0 if step else 0.0,
    }
    return Event("step", step, record)


def fake_run(steps: int, eval_interval: int = 10, seed: int = 0) -> list[Event]:
    """The events of a run as core.training.train emits them: start, steps (evals every interval
    and at the end), snapshots at the evaluations, done."""
    rng = random.Random(seed)
    events = [Event("start", 0, {"steps": steps})]
    for step in range(steps + 1):
        evaluated = step % eval_interval == 0 or step == steps
        events.append(step_event(step, math.exp(-step / 50) + rng.random() * 0.1, evaluated))
        if evaluated and step:
            layers = {"fc1": {"sigma": [1.0 / (i + step) for i in range(4)]}}
            events.append(Event("snapshot", step, {"step": step, "layers": layers}))
    events.append(Event("done", steps, {}))
    return events


def from_scratch(events: list[Event], limit: int) -> dict:
    """The curves computed the plain way: every step record, then numpy-free thinning."""
    records = [e.data for e in events if e.kind == "step"]
    curves = {}
    for name in ("train_loss", "val_loss", "val_acc"):
        xs = [r["step"] for r in records if r[name] is not None]
        ys = [r[name] for r in records if r[name] is not None]
        curves[name] = live.thin(xs, ys, limit)
    return curves


@pytest.mark.parametrize("steps", [5, 200, 299, 300, 301, 1000, 5000])
@pytest.mark.parametrize("limit", [7, 300])
def test_incremental_equals_full_recompute_at_every_poll(steps, limit):
    events = fake_run(steps)
    run = live.LiveRun(limit=limit)
    rng = random.Random(steps)
    seen = 0
    while seen < len(events):  # polls that each find a few new events
        seen = min(len(events), seen + rng.randint(0, 40))
        frame = run.add(events[:seen])
        expected = from_scratch(events[:seen], limit)
        for name in ("train_loss", "val_loss", "val_acc"):
            xs, ys = frame.curve(name)
            assert (list(xs), list(ys)) == (list(expected[name][0]), list(expected[name][1]))
        assert frame.version == seen


def test_thinning_keeps_both_ends_exact_values_and_at_most_the_limit():
    xs = list(range(1001))
    ys = [x * x for x in xs]
    shown_x, shown_y = live.thin(xs, ys, limit=300)
    assert shown_x[0] == 0 and shown_x[-1] == 1000
    assert len(shown_x) <= 301  # the limit, and the last point
    assert all(y == x * x for x, y in zip(shown_x, shown_y, strict=True))  # none averaged
    assert live.thin(xs[:300], ys[:300], limit=300) == (xs[:300], ys[:300])  # short: untouched


def test_a_long_run_keeps_every_evaluation_while_its_loss_curve_is_thinned():
    events = fake_run(2000, eval_interval=10)  # 2001 loss points, 201 evaluations
    frame = live.LiveRun().add(events)
    evals = [e.step for e in events if e.kind == "step" and e.data["val_loss"] is not None]
    assert list(frame.curve("val_loss")[0]) == evals and list(frame.curve("val_acc")[0]) == evals
    loss_steps = frame.curve("train_loss")[0]
    assert len(loss_steps) <= live.MAX_POINTS + 1
    assert loss_steps[0] == 1 and loss_steps[-1] == 2000  # step 0 has no training loss


def test_frame_holds_the_planned_steps_speed_and_newest_spectrum():
    events = fake_run(30)
    frame = live.LiveRun().add(events)
    assert frame.planned == 30 and frame.step == 30 and frame.steps_per_s == 100.0
    assert frame.sigma_step == 30 and frame.sigma["fc1"] == [1.0 / (i + 30) for i in range(4)]
    empty = live.LiveRun().add([])
    assert not empty.has_points and empty.planned is None and empty.sigma == {}


def test_a_poll_with_nothing_new_returns_the_same_frame():
    events = fake_run(50)
    run = live.LiveRun()
    first = run.add(events[:20])
    assert run.add(events[:20]) is first  # nothing new: not even a new picture
    assert run.frame is first
    assert run.add(events[:21]) is not first


def test_pages_watching_one_run_share_it_and_two_runs_never_mix():
    events = fake_run(40)
    job, other = object(), object()  # two jobs (two pools may both have a "job-1")
    a = live.watch(job, events[:10])
    assert live.watch(job, events[:10]) is a  # a second viewer gets this picture, not a copy
    c = live.watch(job, events)
    assert c.version == len(events) and c.run == a.run
    d = live.watch(other, events)
    assert d.run != c.run and d.version == c.version  # what is drawn is keyed by (run, version)


def test_a_stored_run_draws_like_the_live_one(one_thread, store):
    """The page after a reload or a restart (the run from the store) shows what it showed live."""
    events = []
    config = RunConfig(steps=12, rank=2, eval_interval=5, snapshot_interval=5)
    run_id, result = train_and_save(config, store, owner="ann", on_event=events.append)
    watched = live.LiveRun().add(events)
    stored = live.RunView.of_record(store.get(run_id))
    for name in ("curves", "sigma", "sigma_step", "step", "planned"):
        assert getattr(stored.frame, name) == getattr(watched, name), name
    assert stored.done and stored.status == "finished" and stored.run_id == run_id
    assert stored.result["test_acc_after"] == result.test_acc_after
    assert stored.poll_seconds() is None


def test_a_run_whose_process_died_shows_as_interrupted_not_running(store):
    """A run row left "running" by a process that is gone (a killed worker, a restarted
    server): once the store is checked, the page shows it ended, with the reason."""
    script = (
        "import sys; from core.store.runs import RunStore;"
        " from core.common.config import RunConfig;"
        "RunStore(*sys.argv[1:]).create(RunConfig(steps=50), owner='ann')"
    )
    where = [str(store.path)] if store.path else []  # PostgreSQL: LORA_LAB_DB, inherited
    subprocess.run([sys.executable, "-c", script, *where], check=True, cwd=ROOT)
    store.recover()  # what opening or listing the store does too
    record = store.list(owner="ann")[0]
    shown = live.RunView.of_record(store.get(record.id))
    assert shown.status == "unfinished" and shown.done and shown.poll_seconds() is None
    assert "ended without finishing" in shown.reason and shown.result is None


def test_the_latest_run_is_the_newest_job_else_the_newest_trained_stored_run():
    job_a, job_b = SimpleNamespace(id="job-1"), SimpleNamespace(id="job-2")
    imported = SimpleNamespace(id=9, status="imported")
    trained = SimpleNamespace(id=8, status="unfinished")
    assert live.latest([job_a, job_b], [imported, trained]) is job_b  # submission order
    assert live.latest([], [imported, trained]) is trained  # newest first, adapters skipped
    assert live.latest([], [imported]) is None and live.latest([], []) is None


def view(
    status: str, events: list[Event], done: bool, job: object | None = "a job"
) -> live.RunView:
    frame = live.LiveRun().add(events)
    return live.RunView(status, "", done, frame, None, None, 10, RunConfig(), job=job)


def test_polling_stops_when_done_is_quick_while_running_and_slow_while_queued():
    start, with_point = fake_run(10)[:1], fake_run(10)[:3]
    assert view("finished", with_point, done=True).poll_seconds() is None
    assert view("queued", [], done=False).poll_seconds() == live.POLL_QUEUED
    # one pace from the worker's start on: a new pace costs the page a full rerun
    assert view("running", start, done=False).poll_seconds() == live.POLL_RUNNING
    assert view("running", with_point, done=False).poll_seconds() == live.POLL_RUNNING
    stored_elsewhere = view("running", with_point, done=False, job=None)
    assert stored_elsewhere.poll_seconds() == live.POLL_QUEUED  # read from the store: slowly
    assert live.POLL_RUNNING < live.POLL_QUEUED


def test_a_stopped_run_gives_the_step_it_stopped_at_so_a_page_can_say_it_in_any_language():
    stop = threading.Event()
    stop.set()  # stopped before its first step
    result = train(RunConfig(steps=50), stop=stop)
    assert result.status == "stopped"
    stopped = live.RunView("stopped", result.reason, True, live.NO_RUN, 1, None, 50, RunConfig())
    assert stopped.stopped_at == (0, 50)  # core.training.train's English reason, read back
    failed = replace(stopped, status="failed", reason="the training loss became nan at step 3")
    assert failed.stopped_at is None  # any other reason is said as it is
    assert stopped.inspectable and not replace(stopped, run_id=None).inspectable  # not stored
    assert not failed.inspectable  # no trained model to look into


def test_figure_specs_draw_the_frames_points_on_the_planned_steps_and_sigma_once_there():
    words = catalog("zh")
    layout = lambda height, **more: {"height": height, **more}  # noqa: E731
    ticks = lambda values: [min(values), max(values)]  # noqa: E731
    events = fake_run(40)
    frame = live.LiveRun().add(events)
    specs = live.figure_specs(frame, 40, kinds.IMAGES.metrics, words, layout, ticks)
    assert set(specs) == {"loss", "metric", "sigma"}
    train_loss, val_loss = specs["loss"]["data"]
    records = [e.data for e in events if e.kind == "step"]
    assert train_loss["x"] == [r["step"] for r in records if r["train_loss"] is not None]
    assert train_loss["y"] == [r["train_loss"] for r in records if r["train_loss"] is not None]
    assert val_loss["x"] == [0, 10, 20, 30, 40] and val_loss["name"] == words.t("train.val_loss")
    assert specs["metric"]["data"][0]["y"] == [r["val_acc"] for r in records if r["val_acc"]]
    assert specs["metric"]["data"][0]["name"] == "验证准确率"  # the catalog's words for val_acc
    assert specs["metric"]["layout"]["yaxis"] == {"range": [0, 1.02], "tickformat": ".1~%"}
    for name in ("loss", "metric"):  # both axes span the planned steps, a little either side
        assert specs[name]["layout"]["xaxis"]["range"] == [-0.8, 40.8]
        assert specs[name]["layout"]["xaxis"]["title"]["text"] == words.t("train.step")
    sigma = [1.0 / (i + 40) for i in range(4)]  # the last snapshot's, as fake_run plants it
    assert specs["sigma"]["data"][0]["y"] == sigma and specs["sigma"]["data"][0]["name"] == "fc1"
    assert specs["sigma"]["layout"]["yaxis"]["tickvals"] == [sigma[-1], sigma[0]]
    empty = live.figure_specs(live.NO_RUN, 200, kinds.IMAGES.metrics, words, layout, ticks)
    assert set(empty) == {"loss", "metric"} and empty["loss"]["data"][0]["x"] == []


def test_figure_specs_draw_the_curve_of_the_tasks_metric_as_its_kind_says():
    """A made-up kind whose metric is a loss per character: its run's history has val_bpc, and
    the live view draws that curve with the kind's words, axis and format, not an accuracy."""
    bpc = replace(
        kinds.ACCURACY,
        field="bpc",
        curve="train.val_loss",  # a catalog key that exists: its words name the curve
        curve_tickformat=".2f",
        axis_range=(0.0, 8.0),
    )
    events = [Event("start", 0, {"steps": 20})] + [
        Event("step", s, {"step": s, "train_loss": 3.0, "val_loss": 2.5, "val_bpc": 4.0 - s / 10})
        for s in (0, 10, 20)
    ]
    frame = live.LiveRun().add(events)
    words = catalog("en")
    layout = lambda height, **more: {"height": height, **more}  # noqa: E731
    ticks = lambda values: values  # noqa: E731
    text = live.figure_specs(frame, 20, (bpc,), words, layout, ticks)["metric"]
    assert text["data"][0]["x"] == [0, 10, 20] and text["data"][0]["y"] == [4.0, 3.0, 2.0]
    assert text["data"][0]["name"] == words.t("train.val_loss")
    assert text["layout"]["yaxis"] == {"range": [0.0, 8.0], "tickformat": ".2f"}
    images = live.figure_specs(frame, 20, kinds.IMAGES.metrics, words, layout, ticks)["metric"]
    assert images["data"][0]["y"] == [] and images["layout"]["yaxis"]["tickformat"] == ".1~%"


def test_the_live_sigma_axis_is_not_set_by_sigma_at_rounding_level():
    """Full fine-tuning's head (rank 5 at most in a 5 × 16 weight) records 16 σ, the last at
    about 1e-16: the axis must show the five real ones, not 17 decades of rounding noise."""
    real = [0.9, 0.4, 0.2, 0.05, 0.02]
    noise = [3e-8, 1e-12, 4e-16]
    layers = {
        "head": {"sigma": real + noise, "shape": [5, 16]},
        "fc1": {"sigma": [1.5, 0.3], "shape": [16, 12]},
    }
    events = [
        Event("start", 0, {"steps": 10}),
        Event("snapshot", 10, {"step": 10, "layers": layers}),
    ]
    frame = live.LiveRun().add(events)
    layout = lambda height, **more: {"height": height, **more}  # noqa: E731
    ticks = lambda values: [min(values), max(values)]  # noqa: E731
    sigma = live.figure_specs(frame, 10, kinds.IMAGES.metrics, catalog("en"), layout, ticks)[
        "sigma"
    ]
    low, high = sigma["layout"]["yaxis"]["range"]
    assert math.log10(max(noise)) < low < math.log10(min(real)) < math.log10(1.5) < high
    assert sigma["layout"]["yaxis"]["tickvals"] == [min(real), 1.5]
    assert [trace["y"] for trace in sigma["data"]] == [real, [1.5, 0.3]]


def test_a_text_runs_frame_keeps_the_base_models_sample_beside_the_newest():
    """The Train page shows what the model wrote before training (step 0) under what it
    writes now: the frame keeps both, stored or live, and a later sample moves only the newest."""
    samples = {0: "the base", 15: "a little better", 30: "better still"}
    records = [
        {"step": s, "train_loss": 1.0, "val_loss": None, "val_bpc": None, "sample": samples.get(s)}
        for s in range(31)
    ]
    events = [Event("start", 0, {"steps": 30})] + [Event("step", r["step"], r) for r in records]
    for frame in (
        live.LiveRun().add(events[:17]),  # live, at step 15
        live.LiveRun.from_record(records[:16], [], 30).frame,  # the same, from the store
    ):
        assert (frame.base_sample, frame.sample_step, frame.sample) == (
            "the base",
            15,
            "a little better",
        )
    ended = live.LiveRun().add(events)
    assert (ended.base_sample, ended.sample_step, ended.sample) == ("the base", 30, "better still")
    assert live.LiveRun().add(fake_run(10)).base_sample is None  # an image run writes nothing


def test_figure_specs_draw_each_metric_of_a_text_run():
    """A text run's curves: loss, bits per character (the headline) and next-character
    accuracy (kinds.TEXT.others), each from its own history key with its own axis."""
    events = [Event("start", 0, {"steps": 20})] + [
        Event("step", s, {"step": s, "train_loss": 3.0, "val_loss": 2.5, "val_bpc": 4.0 - s / 10,
                          "val_acc": s / 40})
        for s in (0, 10, 20)
    ]  # fmt: skip
    frame = live.LiveRun().add(events)
    words = catalog("en")
    layout = lambda height, **more: {"height": height, **more}  # noqa: E731
    specs = live.figure_specs(frame, 20, kinds.TEXT.metrics, words, layout, lambda v: v)
    assert set(specs) == {"loss", "metric", "val_acc"}
    assert specs["metric"]["data"][0]["y"] == [4.0, 3.0, 2.0]
    assert specs["metric"]["data"][0]["name"] == words.t("train.val_bpc")
    assert specs["val_acc"]["data"][0]["y"] == [0.0, 0.25, 0.5]
    assert specs["val_acc"]["data"][0]["name"] == words.t("train.val_next_acc")
    assert (
        specs["val_acc"]["layout"]["yaxis"]["tickformat"] == kinds.NEXT_CHARACTER.curve_tickformat
    )
