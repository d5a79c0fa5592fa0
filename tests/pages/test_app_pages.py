"""Each page in Streamlit's AppTest: it loads, its widgets exist, and it does its job.

The Train test starts a real (short) run through the page's own code: the job pool, the
fragment that polls it, and the run store.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from core.analyses import whatif
from core.classroom import lessons, live
from core.classroom.i18n import catalog
from core.common import limits
from core.common.config import RunConfig
from core.jobs.scheduler import Job
from core.store import runs
from core.training import export, measure, train, zoo
from core.training.record import train_and_save
from tests.support.app_session import APP, TIMEOUT, open_page, shown

ROOT = Path(__file__).resolve().parents[2]
TRAIN_STEPS = 20  # two snapshots (every 10 steps): the evolution plot needs them
TRAINER = "3" * 32  # the student whose run `trained` is: a new session of theirs opens it


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def spec_of(chart) -> dict:
    return json.loads(chart.proto.spec)


def count_line(at: AppTest) -> str:
    """The Train page's line that counts the trainable parameters."""
    return next(m.value for m in at.markdown if "trainable parameters of" in m.value)


def points(at: AppTest) -> int:
    """How many points the page's charts plot, all traces together."""
    specs = [json.loads(chart.proto.spec) for chart in charts(at)]
    return sum(len(trace.get("x", [])) for spec in specs for trace in spec["data"])


@pytest.fixture(scope="module")
def trained(lab_home) -> tuple[AppTest, int]:
    """The Train page after a short run of TRAINER's: (the page, the saved run's id)."""
    at = open_page("train", student=TRAINER)
    at.number_input(key="train.steps").set_value(TRAIN_STEPS)
    at.number_input(key="train.rank").set_value(2)
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    assert job.wait(120), "the training job did not finish in time"
    at.run()  # the poll after the end: final figures and the Spectra button
    assert job.status == "finished", job.reason
    return at, job.run_id


def test_learn_page_math_toy_calculator_and_lessons(lab_home):
    at = open_page("learn")
    assert len(at.latex) >= 5
    assert at.metric[0].label == "Rank of ΔW" and at.metric[0].value == "2"
    at.slider(key="learn.r").set_value(6).run()
    assert at.metric[0].value == "6"
    at.toggle(key="learn.trained").set_value(False).run()
    assert at.metric[0].value == "0"  # B = 0 at initialisation: no update yet
    at.selectbox(key="calc.m").set_value("GPT-3 175B").run()
    values = [metric.value for metric in at.metric]
    assert "18.9M" in values and "37.7 MB" in values  # r = 4 on W_q, W_v (LoRA paper)
    # training memory: frozen weights, full fine-tuning at 16 bytes a parameter, and LoRA
    assert {"350.0 GB", "2.8 TB", "350.3 GB"} <= set(values)
    assert any("1.2 TB" in caption.value for caption in at.caption)  # the paper's, beside ours
    assert len(at.get("page_link")) == len(lessons.LESSONS)


def test_language_switch_translates_the_page(lab_home):
    at = open_page("learn")
    at.selectbox(key="lang").set_value("zh").run()
    assert at.title[0].value == "LoRA：给大模型学一个低秩的改动"
    assert at.query_params["lang"] == "zh"


def test_train_page_widgets_and_parameter_count(lab_home):
    at = open_page("train")
    for name in ("model", "dataset", "shift", "method", "init", "scaling"):
        assert at.selectbox(key=f"train.{name}").value is not None
    for name in ("rank", "alpha", "steps", "batch_size", "seed"):
        assert at.number_input(key=f"train.{name}").value is not None
    learning_rate = at.number_input(key="train.lr")
    assert learning_rate.value is None  # empty: the method's own rate, shown as a placeholder
    assert learning_rate.proto.placeholder == "default 0.01"
    at.selectbox(key="train.method").set_value("full").run()
    assert at.number_input(key="train.lr").proto.placeholder == "default 0.001"
    at.selectbox(key="train.method").set_value("lora").run()
    assert at.checkbox(key="train.dora").value is False
    assert len(at.dataframe) == 1  # the target-layer table
    assert len(charts(at)) == 2 and points(at) == 0  # the axes the first run will fill
    count = count_line(at)
    at.number_input(key="train.rank").set_value(8).run()
    assert count_line(at) != count  # the count follows the rank


def test_train_run_produces_curves_and_a_saved_run(trained, lab_home):
    at, run_id = trained
    assert not at.exception and not at.error
    assert len(charts(at)) == 3  # loss, accuracy, and the σ(ΔW) mini-plot
    assert "→" in at.metric[0].value  # accuracy before → after
    source = at.metric[1]  # beside it: what the run kept of the upright digits
    assert source.label.startswith("Source task") and source.value.startswith("93.0% →")
    with runs.RunStore() as store:
        record = store.get(run_id)
    assert record.status == "finished" and record.has_weights
    assert [row["step"] for row in record.history] == list(range(TRAIN_STEPS + 1))
    assert record.config.rank == 2 and record.config.steps == TRAIN_STEPS
    assert at.button(key="train.to_spectra")
    assert at.get("progress")[0].proto.text == f"Step {TRAIN_STEPS} of {TRAIN_STEPS} · finished"


def test_train_settings_round_trip_through_the_url(lab_home):
    link = {
        "shift": "invert",
        "rank": "8",
        "alpha": "16.0",
        "scaling": "rslora",
        "lora_plus_ratio": "16.0",
        "dropout": "0.1",
        "seed": "3",
    }
    at = open_page("train", link)
    assert at.selectbox(key="train.shift").value == "invert"
    assert at.number_input(key="train.rank").value == 8
    assert at.selectbox(key="train.scaling").value == "rslora"
    assert at.number_input(key="train.lora_plus_ratio").value == 16.0
    assert at.number_input(key="train.dropout").value == 0.1
    assert {name: at.query_params[name] for name in link} == link
    at.number_input(key="train.lr").set_value(0.05).run()
    assert at.query_params["lr"] == "0.05"


def test_spectra_page_opens_a_shared_run(trained, lab_home):
    _, run_id = trained
    at = open_page("spectra", {"run": str(run_id)}, student=TRAINER)  # a new session: the link
    assert at.selectbox(key="spectra.run").value == run_id
    assert at.selectbox(key="spectra.layer").value == "fc1"
    assert len(charts(at)) == 5  # spectrum, the curves, σ at the step, ΔM and ΔD, ΔW
    assert any("DoRA" in header.value for header in at.subheader)
    [dora] = [spec for spec in map(spec_of, charts(at)) if "ΔM" in str(spec["layout"])]
    names = [(t["name"].split(":")[0], t.get("yaxis", "y")) for t in dora["data"]]
    assert names == [("ΔM", "y"), ("ΔD", "y2")]
    assert dora["layout"]["yaxis"]["title"]["text"] == "ΔM"
    assert dora["layout"]["yaxis2"]["side"] == "right"
    assert len(at.table) == 1  # the metrics table
    at.toggle(key="spectra.normalised").set_value(True).run()
    assert not at.exception
    assert at.query_params["normalised"] == "true"  # core.common.config's spelling, as the CLI's


def click_point(at: AppTest, chart_key: str, x: float) -> AppTest:
    """Click a point of a plotly chart drawn with on_select, as the browser reports it.

    AppTest has no click for charts, so this sends the selection the frontend would send (the
    chart's widget state: a JSON string) with the other widgets' states, and reruns."""
    chart = next(chart for chart in charts(at) if chart.key == chart_key)
    selection = {"points": [{"x": x, "y": 0.5}], "point_indices": [0], "box": [], "lasso": []}
    states = at._tree.get_widget_states()
    states.widgets.append(
        WidgetState(id=chart.proto.id, string_value=json.dumps({"selection": selection}))
    )
    return at._run(states)


def marked_step(at: AppTest) -> float:
    """The step the curves' dashed line marks."""
    chart = next(chart for chart in charts(at) if chart.key == "spectra.curves")
    shapes = json.loads(chart.proto.spec)["layout"]["shapes"]
    assert {shape["x0"] for shape in shapes} == {shape["x1"] for shape in shapes}
    return shapes[0]["x0"]


def test_spectra_pick_a_moment_a_click_moves_the_slider_and_the_slider_the_mark(trained, lab_home):
    _, run_id = trained
    with runs.RunStore() as store:
        record = store.get(run_id)
    assert [snapshot["step"] for snapshot in record.snapshots] == [10, 20]
    at = open_page("spectra", {"run": str(run_id)}, student=TRAINER)
    slider = at.select_slider(key="spectra.step")
    assert slider.value == 20 and marked_step(at) == 20  # the last moment to begin with
    click_point(at, "spectra.curves", 8)  # between steps 0 and 10: the snapshot at 10
    assert not at.exception
    assert at.select_slider(key="spectra.step").value == 10 and marked_step(at) == 10
    assert any("**At step 10**" in text.value for text in at.markdown)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Training loss"] == f"{record.history[10]['train_loss']:.3f}"
    assert metrics["Validation accuracy"] == f"{record.history[10]['val_acc']:.1%}"
    sigma_fc1 = record.snapshots[0]["layers"]["fc1"]["sigma"]
    assert metrics["σ₁(ΔW)"] == f"{sigma_fc1[0]:.3g}"
    at.select_slider(key="spectra.step").set_value(20).run()
    assert marked_step(at) == 20  # the slider moves the mark on the curves
    assert {metric.label: metric.value for metric in at.metric}["Training loss"] == (
        f"{record.history[20]['train_loss']:.3f}"
    )


def bars_title(at: AppTest) -> str:
    """The title of the σ(ΔW) bars of the chosen moment ("σ of ΔW at step …")."""
    for chart in charts(at):
        spec = json.loads(chart.proto.spec)
        if spec["data"][0]["type"] == "bar" and "step" in spec["layout"]["title"]["text"]:
            return spec["layout"]["title"]["text"]
    raise AssertionError("no σ bars")


def test_spectra_play_moves_the_slider_the_mark_and_the_numbers_with_the_bars(trained, lab_home):
    """Issue 18: ▶ Play animated the bars alone, the slider, the dashed line and the numbers
    stayed put. Now each frame is a moment of the page (each AppTest run is one tick)."""
    _, run_id = trained
    with runs.RunStore() as store:
        record = store.get(run_id)
    at = open_page("spectra", {"run": str(run_id)}, student=TRAINER)
    at.button(key="spectra.play").click().run()
    assert not at.exception and at.select_slider[0].disabled  # the student's slider is shown
    for step in (10, 20):  # the frames, from the first snapshot on (the last one: stopped)
        slider = next(s for s in at.select_slider if s.label.startswith("Moment shown"))
        assert slider.value == step and marked_step(at) == step
        assert bars_title(at) == bars_title(at).split("step")[0] + f"step {step}"
        assert any(f"**At step {step}**" in text.value for text in at.markdown)
        loss = {metric.label: metric.value for metric in at.metric}["Training loss"]
        assert loss == f"{record.history[step]['train_loss']:.3f}"
        at.run()  # the fragment's timer ticks
    assert not at.session_state["spectra.playing"]  # after the last frame it stops, there
    assert at.select_slider(key="spectra.step").value == 20 and marked_step(at) == 20
    assert at.button(key="spectra.play").label == "Play"
    at.button(key="spectra.play").click().run()  # play again, and pause at its first frame
    at.button(key="spectra.play").click().run()
    assert not at.session_state["spectra.playing"]
    assert at.select_slider(key="spectra.step").value == 10 and marked_step(at) == 10
    assert any("**At step 10**" in text.value for text in at.markdown)


def open_what_ifs(at: AppTest) -> AppTest:
    """Open the three what-if expanders (each computes only when open) and redraw."""
    for name in ("open_cut", "open_intruders", "open_layers"):
        at.session_state[f"spectra.{name}"] = True
    return at.run()


def chart_spec(at: AppTest, title_part: str) -> dict:
    """The plotly spec of the chart whose x axis title contains `title_part`."""
    for chart in charts(at):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"].get("xaxis", {}).get("title", {}).get("text", "")
        if title_part in title:
            return spec
    raise AssertionError(f"no chart with an x axis titled {title_part!r}")


def test_spectra_what_ifs_are_computed_only_when_opened_and_show_cores_numbers(trained, lab_home):
    _, run_id = trained
    at = open_page("spectra", {"run": str(run_id)}, student=TRAINER)
    assert len(at.expander) == 3 and len(charts(at)) == 5  # closed: nothing computed
    open_what_ifs(at)
    assert not at.exception and not at.error
    with runs.RunStore() as store:
        run = measure.open_run(run_id, store)
    curve = whatif.truncation_curve(run)
    cut = chart_spec(at, "directions kept")["data"][0]
    assert cut["x"] == [str(point.k) for point in curve.truncation]
    assert cut["y"] == [point.score for point in curve.truncation]
    reading = f"{curve.rank_used}** of its {curve.max_rank} directions"
    if curve.rank_used == curve.max_rank:
        reading = f"all **{curve.max_rank}** of its directions"
    assert any(reading in text.value for text in at.markdown)
    zero = f"{curve.truncation[0].score:.1%}"  # k = 0 keeps the trained head: say so
    assert curve.kept == ["head"] and not any("updates are gone" in t.value for t in at.markdown)
    assert any("touch (head) stay as trained" in c.value and zero in c.value for c in at.caption)

    intruders = whatif.intruder_curve(run, whatif.SLIDER_LAMBDAS)
    assert intruders.intruders > 0  # this run has some: the slider is there to move
    at.select_slider(key="spectra.lambda").set_value(0.0).run()
    removed = intruders.at(0.0)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["New task at λ = 0.0"] == f"{removed.target:.1%}"
    assert metrics["Pretraining task at λ = 0.0"] == f"{removed.source:.1%}"

    table = at.dataframe[-1].value
    layers = whatif.layer_importance(run).layers
    assert list(table["Layer"]) == [row.layer for row in layers] == ["fc1", "fc2", "head"]
    assert list(table["Lost (points)"]) == pytest.approx([row.lost * 100 for row in layers])


WHAT_IF_RUNS = {  # other models and a method without adapters, each in one language
    "mlp-full": ({"method": "full"}, "en"),
    "cnn": ({"model": "cnn"}, "zh"),
    "vit": ({"model": "vit"}, "en"),
}


@pytest.fixture(scope="module")
def what_if_runs(lab_home) -> dict[str, int]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with runs.RunStore() as store:
            return {
                name: train_and_save(RunConfig(steps=TRAIN_STEPS, **config), store)[0]
                for name, (config, _) in WHAT_IF_RUNS.items()
            }
    finally:
        torch.set_num_threads(threads)


def open_spectra_what_ifs(run_id: int, lang: str) -> AppTest:
    """The Spectra page of a run in a language, with the what-ifs open from its first draw.

    Set before the page's first run, not by a link (a link resets the page's state) and not
    by changing the language later: AppTest formats a selectbox's value outside the page's
    run, where the session's language cannot be read, so a page it reruns must be English."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["lang"] = lang
    at.run()
    at.switch_page("app_pages/spectra.py")
    at.session_state["teacher"] = True  # the runs are not this session's
    at.session_state["spectra.run"] = run_id
    return open_what_ifs(at)


@pytest.mark.parametrize("name", WHAT_IF_RUNS)
def test_spectra_what_ifs_work_for_every_model_and_full_fine_tuning(
    what_if_runs, lab_home, teacher_key, name
):
    config, lang = WHAT_IF_RUNS[name]
    run_id = what_if_runs[name]
    at = open_spectra_what_ifs(run_id, lang)
    assert not at.exception and not at.error
    assert at.selectbox(key="spectra.run").value == run_id
    with runs.RunStore() as store:
        run = measure.open_run(run_id, store)
    changed = [row.layer for row in whatif.layer_importance(run).layers]
    assert list(at.dataframe[-1].value.iloc[:, 0]) == changed
    says = " ".join(text.value for text in [*at.markdown, *at.caption, *at.info])
    no_intruders = "没有入侵维度" if lang == "zh" else "no intruder dimensions"
    has_slider = any(slider.key == "spectra.lambda" for slider in at.select_slider)
    assert has_slider != (no_intruders in says)  # a slider, or a clear line why there is none
    if config.get("method") == "full":
        assert "Without adapters" in says
    if lang == "zh":
        assert "训练后截断秩" in [expander.label for expander in at.expander]
        assert not re.search(r"[A-Za-z]{4,} [a-z]{4,} [a-z]{4,}", says.replace("`", ""))
    else:  # a click on the curves picks the moment for every model
        click_point(at, "spectra.curves", 12)
        assert not at.exception and at.select_slider(key="spectra.step").value == 10


def test_spectra_page_without_runs_points_to_train(lab_home):
    at = open_page("spectra")
    assert at.get("page_link")


def test_spectra_page_while_ones_only_run_trains_says_so(lab_home):
    """Not "no finished run yet" while the student's run trains: which run, and that it comes."""
    student = uuid.uuid4().hex
    with runs.RunStore() as store:
        run_id = store.create(RunConfig(steps=5), owner=student)
        at = open_page("spectra", student=student)
        assert [info.value for info in at.info] == [
            catalog("en").t("spectra.still_training", run=run_id)
        ]
        store.fail(run_id, "stopped by the test")
    at.run()
    assert [info.value for info in at.info] == [catalog("en").t("spectra.no_runs")]


def test_a_students_name_is_shown_to_the_teacher_beside_their_runs(lab_home, teacher_key):
    """Typed once in the sidebar, kept under the student's id (back after a reload, never in a
    link), shown in the table of every run and in the run pickers, not in one's own table."""
    ann = uuid.uuid4().hex
    at = open_page("train", student=ann)
    at.text_input(key="student.name").input("  Ann L. ").run()
    assert at.text_input(key="student.name").value == "Ann L."
    assert "Ann" not in str(dict(at.query_params))
    with runs.RunStore() as store:
        run_id, _ = train_and_save(RunConfig(steps=2), store, owner=ann)
    assert open_page("learn", student=ann).text_input(key="student.name").value == "Ann L."
    teacher = open_page("compare", {"everyone": "1"}, teacher=True)
    table = teacher.dataframe[-1].value
    assert list(table.loc[table["id"] == run_id, "Student"]) == ["Ann L."]
    pick = teacher.multiselect(key="compare.runs")
    assert any(o.startswith(f"#{run_id} ") and o.endswith(" · Ann L.") for o in pick.options)
    own = open_page("compare", student=ann)
    assert "Student" not in own.dataframe[-1].value.columns


def test_compare_page_sweep_table_and_rename(trained, lab_home, teacher_key):
    _, run_id = trained
    query = {"ranks": "1", "baselines": "0", "steps": "5", "everyone": "1"}
    at = open_page("compare", query, teacher=True)
    assert at.multiselect(key="compare.ranks").value == [1]
    at.button(key="compare.launch").click().run()
    sweep = at.session_state["compare.jobs"]
    assert len(sweep) == 1 and sweep[0].wait(120) and sweep[0].status == "finished"
    at.run()
    assert not at.exception
    assert len(charts(at)) == 2  # accuracy against trainable parameters, and against the source
    table = at.dataframe[-1].value
    assert {run_id, sweep[0].run_id} <= set(table["id"])
    own_rows = table[table["id"].isin([run_id, sweep[0].run_id])]  # the home is shared by tests
    assert set(own_rows["Learning rate"]) == {0.01}  # each run's rate: here LoRA's own
    assert own_rows["Source task after"].notna().all()
    with runs.RunStore() as store:  # how many runs of the table trained their head: said
        shown = [store.get_summary(int(i)) for i in table["id"]]
    heads = [train.head_trains(r.config) for r in shown if r.source_acc_after is not None]
    said = catalog("en").t(
        "compare.forgetting_heads", trained=sum(heads), frozen=0, total=len(heads)
    )  # no run of these tests keeps its head frozen
    assert all(heads) and said in [caption.value for caption in at.caption]
    assert at.get("download_button")
    downloads = {button.proto.id.rsplit("-", 1)[-1] for button in at.get("download_button")}
    assert {"compare.peft", "compare.tensorboard"} <= downloads  # the managed run, two ways
    # Only this session's runs can be renamed or deleted, also when everyone's are shown.
    mine = sweep[0].run_id
    assert [o.split(" ")[0] for o in at.selectbox(key="compare.manage").options] == [f"#{mine}"]
    at.selectbox(key="compare.manage").set_value(mine).run()
    at.text_input(key=f"compare.name.{mine}").input("my first run")
    at.button(key="compare.rename").click().run()
    with runs.RunStore() as store:
        assert store.get_summary(mine).name == "my first run"
    # Two runs of the same layers: the Spectra page compares their directions (φ heatmap).
    spectra = open_page(
        "spectra", {"run": str(run_id), "other": str(sweep[0].run_id)}, teacher=True
    )
    assert len(charts(spectra)) == 6
    assert any("φ(1, 1)" in caption.value for caption in spectra.main.caption)


def run_from_link(query: dict) -> tuple[AppTest, Job]:
    """Open the Train page from a link, press Train, wait for the end, redraw."""
    at = open_page("train", query)
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    assert job.wait(120), "the training job did not finish in time"
    at.run()
    return at, job


def test_a_diverging_run_fails_with_a_clear_message(lab_home):
    at, job = run_from_link({"lr": "1000000.0", "steps": "30"})
    assert job.status == "failed"
    assert "learning rate" in at.error[0].value  # NaN loss: stop, explain, keep the curve
    assert charts(at)
    progress = at.get("progress")[0].proto.text
    assert progress.startswith("Step ") and "left" not in progress  # no ETA once it ended


def test_stop_ends_a_run_early(lab_home):
    at = open_page("train", {"steps": "2000"})
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    assert at.button(key="train.start").disabled  # one run at a time, from the click on
    at.button(key="train.stop").click().run()
    assert job.wait(60) and job.status == "stopped"
    at.run()
    assert at.warning


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_link_above_the_servers_limits_is_refused_in_one_line(lab_home, lang):
    """In the student's language, with the number asked for and the server's limit."""
    at = open_page("train", {"steps": "1000000000"}, first={"lang": lang})
    at.button(key="train.start").click().run()
    assert "train.job" not in at.session_state
    limit = limits.Limits.from_env(limits.SERVER).max_steps
    said = catalog(lang).t("limits.max_steps", asked=1_000_000_000, allowed=limit)
    assert [error.value for error in at.error] == [said]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_no_layer_picked_is_said_in_the_students_language(lab_home, lang):
    at = open_page("train", first={"lang": lang})
    picker = at.multiselect(key="train.pick.mlp")
    for layer in list(picker.value):
        picker.unselect(layer)
    at.run()
    assert [error.value for error in at.error] == [catalog(lang).t("errors.no_targets")]
    assert at.button(key="train.start").disabled


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_rank_above_a_layers_is_said_in_the_students_language_and_no_button(lab_home, lang):
    at = open_page("train", {"rank": "300"}, first={"lang": lang})
    values = {"rank": 300, "most": 256, "layer": "fc1", "shape": "256×784"}  # mlp's fc1
    assert [error.value for error in at.error] == [
        catalog(lang).t("errors.rank_above_layer", **values)
    ]
    assert at.button(key="train.start").disabled


def test_a_queued_run_shows_its_position_and_then_its_wait(lab_home):
    """One worker: a classmate's run holds it, so this run waits, first in the queue."""
    ahead = open_page("train", {"steps": "2000"})
    ahead.button(key="train.start").click().run()
    running = ahead.session_state["train.job"]
    at = open_page("train", {"steps": "20"})
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    try:
        assert job.queue_position == 1
        deadline = time.time() + 60
        while job.wait_estimate is None:  # known once the running job has made a step
            assert time.time() < deadline and not running.done
            time.sleep(0.05)
        at.run()
        assert any("position 1 in the queue, starting in about" in i.value for i in at.info)
    finally:
        running.stop()
        job.stop()
    assert running.wait(60) and job.wait(60)


def test_planted_rank_run_shows_the_planted_update(lab_home):
    trainer, job = run_from_link({"shift": "planted-rank", "steps": "20"})
    assert job.status == "finished", job.reason
    query = {"run": str(job.run_id), "layer": "fc1"}  # where ΔW* is
    at = open_page("spectra", query, student=trainer.session_state["student"])
    assert any("ΔW*" in header.value for header in at.subheader)
    assert len(charts(at)) == 7  # spectrum, curves, σ, ΔM/ΔD, ΔW, learned ΔW beside ΔW*


def test_readme_page_shows_the_readme(lab_home):
    at = open_page("readme")
    assert at.markdown and "LoRA" in at.markdown[0].value


def test_compare_page_imports_an_uploaded_adapter(trained, lab_home):
    """Upload the trained run's PEFT zip: it becomes a run of this session, with a link to
    Spectra; a file that is not a zip gets one clear line and no run."""
    _, run_id = trained
    with runs.RunStore() as store:
        adapter = export.export_peft(store, run_id).read_bytes()
        count = len(store.list())
    at = open_page("compare")
    at.file_uploader(key="compare.upload").set_value(("my-adapter.zip", b"no zip", "text/plain"))
    at.run()
    at.button(key="compare.import").click().run()
    assert "is not a zip" in at.text[0].value and not at.success  # the reason, under the error
    assert at.error[0].value == catalog().t("compare.import_failed")
    at.file_uploader(key="compare.upload").set_value(("my-adapter.zip", adapter, "application/zip"))
    at.run()
    at.button(key="compare.import").click().run()
    assert not at.exception and not at.error
    with runs.RunStore() as store:
        records = store.list()
    assert len(records) == count + 1  # the failed upload saved nothing
    imported = records[0]
    assert imported.status == "imported" and imported.owner == at.session_state["student"]
    assert f"#{imported.id}" in at.success[0].value
    links = [(link.proto.page, link.proto.query_string) for link in at.get("page_link")]
    assert ("spectra", f"run={imported.id}") in links
    assert str(imported.id) in at.dataframe[-1].value["id"].astype(str).tolist()
    spectra = open_page("spectra", {"run": str(imported.id)}, student=imported.owner)
    assert spectra.selectbox(key="spectra.run").value == imported.id
    assert len(charts(spectra)) == 2  # its spectrum and its ΔW (it recorded no training)
    assert any("no training curves" in info.value for info in spectra.info)


def test_a_shifts_seed_is_the_runs_seed_not_a_box(lab_home):
    at = open_page("train", {"shift": "permute"})
    assert not [box for box in at.number_input if box.key.startswith("train.shift.")]
    assert any("follows the run's **Seed**" in caption.value for caption in at.caption)
    assert at.number_input(key="train.seed")  # the one seed there is


@pytest.fixture
def imagenet_home(tmp_path, monkeypatch):
    """Empty ImageNet weight caches, no network, no master model left from another test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LORA_LAB_OFFLINE", "1")
    zoo._master.cache_clear()
    yield tmp_path
    zoo._master.cache_clear()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_an_imagenet_model_offline_is_a_clear_message(lab_home, imagenet_home, name):
    at = open_page("train")
    at.selectbox(key="train.model").set_value(name).run()
    assert not at.exception
    assert f"The ImageNet weights of '{name}'" in at.error[0].value
    assert at.button(key="train.start").disabled


@pytest.mark.parametrize(
    "name, targets",
    [
        # its only Linear is the head: "all-linear" would pick nothing, the card's choice does
        ("resnet18", "layer4.0.conv1,layer4.0.conv2,layer4.1.conv1,layer4.1.conv2"),
        ("mobilenet_v3_small", "all-linear"),
    ],
)
def test_an_imagenet_model_starts_with_targets_that_pick_layers(
    lab_home, imagenet_home, name, targets
):
    torch.manual_seed(1)  # random weights stand in for ImageNet's, already "downloaded"
    filename = zoo._imagenet_weights(name).url.rsplit("/", 1)[-1]
    checkpoints = imagenet_home / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(zoo.ZOO[name].build().state_dict(), checkpoints / filename)
    at = open_page("train")
    at.selectbox(key="train.model").set_value(name).run()
    assert not at.exception and not at.error
    assert set(at.session_state["train.targets"].split(",")) == set(targets.split(","))
    assert "trainable parameters" in count_line(at)
    assert not at.button(key="train.start").disabled


# ----------------------------------------------------------------------------- QA fixes


@pytest.mark.parametrize(
    "name, value, default",
    [
        ("model", "nope", "mlp"),
        ("shift", "nope", "rotate"),  # not "No shift", the first option
        ("dataset", "nope", "mnist-5k"),
        ("method", "nope", "lora"),
        ("init", "nope", "default"),
        ("scaling", "nope", "standard"),
    ],
)
def test_train_link_with_an_unknown_choice_warns_and_keeps_the_default(
    lab_home, name, value, default
):
    at = open_page("train", {name: value})
    assert at.selectbox(key=f"train.{name}").value == default
    assert any(
        name in warning.value and "could not be read" in warning.value for warning in at.warning
    )
    assert name not in at.query_params  # the default again: nothing to write


def test_train_link_with_targets_that_pick_no_layer_warns(lab_home):
    at = open_page("train", {"targets": "nosuch"})
    assert any("targets" in warning.value for warning in at.warning)
    assert at.session_state["train.targets"] == "all-linear"


def test_train_link_with_several_targets_picks_them(lab_home):
    at = open_page("train", {"model": "vit", "targets": "*.attn.q,*.attn.v"})  # a lesson's link
    assert not at.warning
    assert at.session_state["train.pick.vit"] == [
        name for name in at.session_state["train.pick.vit"] if name.endswith((".q", ".v"))
    ]
    assert len(at.session_state["train.pick.vit"]) >= 2


def test_compare_link_with_an_unknown_choice_warns(lab_home):
    at = open_page("compare", {"model": "nope", "ranks": "1,3"})
    assert at.selectbox(key="compare.model").value == "mlp"
    assert at.multiselect(key="compare.ranks").value == [1, 2, 4, 8, 16]
    assert "model, ranks" in at.warning[0].value


def test_spectra_link_to_a_missing_run_says_so(lab_home):
    at = open_page("spectra", {"run": "99999"})
    assert any("no run #99999" in warning.value for warning in at.warning)
    assert not at.exception


@pytest.mark.parametrize("page", ["spectra", "compare"])
def test_empty_pages_say_whose_runs_a_student_sees(lab_home, teacher_key, page):
    """A student without runs of their own: the page says that classmates' runs are theirs,
    and offers no switch to see them; the teacher's page has it."""
    at = open_page(page)
    assert f"{page}.everyone" not in [toggle.key for toggle in at.toggle]
    assert any("only the teacher sees the whole class" in info.value for info in at.info)
    teacher = open_page(page, teacher=True)
    assert teacher.toggle(key=f"{page}.everyone")


def fake_job(method: str = "lora", status: str = "failed", reason: str = "", **config) -> Job:
    job = Job(
        id="fake",
        owner="nobody",
        config=RunConfig(method=method, **config),
        pool=SimpleNamespace(watch=lambda: None),  # told that a page reads the job
        status=status,
        reason=reason,
    )
    job._done.set()
    return job


def test_compare_sweep_shows_why_runs_failed(lab_home):
    at = open_page("compare", {"ranks": "1", "baselines": "0"})
    assert any(c.value.startswith("1 run,") for c in at.main.caption)  # not "1 runs"
    reason = "the ImageNet weights of 'resnet18' are not downloaded yet"
    at.session_state["compare.jobs"] = [
        fake_job("lora", reason=reason, rank=1),
        fake_job("head", reason=reason),
    ]
    at.run()
    assert not at.exception
    assert reason in shown(at.error[0].value) and "r=1" in at.error[0].value
    table = at.dataframe[0].value
    assert list(table["Rank"]) == ["1", "—"]  # no "None" for a method without a rank


def test_a_run_that_fails_before_its_first_step_shows_only_why(lab_home):
    at = open_page("train")
    at.session_state["train.job"] = fake_job(reason="MNIST is not downloaded")
    at.run()
    assert "MNIST is not downloaded" in at.error[0].value
    assert not any("Loading" in info.value for info in at.info)


def test_train_count_says_what_trains_besides_the_adapters(lab_home):
    at = open_page("train")
    line = count_line(at)
    trainable, adapters, head = (
        int(re.search(pattern, line).group(1).replace(",", ""))
        for pattern in (
            r"\*\*([\d,]+)\*\* trainable",
            r"([\d,]+) in the adapters",
            r"([\d,]+) in the output head",
        )
    )
    assert head == 256 * 10 + 10 and adapters + head == trainable  # the MLP's 256 → 10 head


def test_train_head_toggle_and_where_the_forgetting_comes_from(trained, lab_home):
    """The finished run says how many of the source task's points its trained head accounts
    for (core.training.train.Forgetting, the page's numbers); turning the head off is counted."""
    at, run_id = trained
    with runs.RunStore() as store:
        run = measure.open_run(run_id, store)
    forgot = train.forgetting(run.config, run.base, run.model, run.num_classes)
    key, values = forgot.note()
    assert key == "forgetting.head_trained"
    assert catalog("en").t(key, **values) in [caption.value for caption in at.caption]
    page = open_page("train")
    assert page.toggle(key="train.train_head").value is True
    page.toggle(key="train.train_head").set_value(False).run()
    assert "stays as pretrained" in count_line(page) and "in the output head" not in count_line(
        page
    )
    page.selectbox(key="train.method").set_value("head").run()  # nothing would train: said
    assert [error.value for error in page.error] == [catalog("en").t("errors.frozen_head_only")]
    assert page.button(key="train.start").disabled


@pytest.mark.parametrize("shift", ["none", "planted-rank"])
def test_a_head_picked_as_a_lora_target_is_said_to_train_through_its_adapter(lab_home, shift):
    at = open_page("train", {"targets": "fc1,head", "shift": shift})
    line = count_line(at)
    assert "one of them on the output head" in line and "only its adapter trains" in line
    assert "frozen on this task" not in line and "in full" not in line


def test_chinese_train_page_names_shift_parameters_and_the_source_task(lab_home):
    at = open_page("train")
    at.selectbox(key="lang").set_value("zh").run()
    assert any(box.label == "角度（度）" for box in at.number_input)
    assert any("MNIST-5k（全部 10 个数字" in caption.value for caption in at.caption)
    assert not any("upright" in caption.value for caption in at.caption)


def test_without_a_browser_each_session_is_its_own_student(lab_home):
    first, second = open_page("learn"), open_page("learn")
    ids = [at.session_state["student"] for at in (first, second)]
    assert ids[0] != ids[1] and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_reload_shows_the_students_latest_run(trained, lab_home):
    at, _ = trained
    again = open_page("train", student=at.session_state["student"])  # same browser, new session
    assert again.session_state["train.job"] is at.session_state["train.job"]  # the pool's job
    assert not again.exception and len(charts(again)) == 3
    assert again.get("progress")[0].proto.text == f"Step {TRAIN_STEPS} of {TRAIN_STEPS} · finished"
    assert "→" in again.metric[0].value and again.button(key="train.to_spectra")


def test_a_shared_link_carries_the_settings_not_the_senders_runs(trained, lab_home):
    at, _ = trained
    link = (
        at.query_params.to_dict() if hasattr(at.query_params, "to_dict") else dict(at.query_params)
    )
    student = at.session_state["student"]
    assert link["steps"] == str(TRAIN_STEPS)
    assert not any(student in f"{name}={value}" for name, value in link.items())
    classmate = open_page("train", link)  # another student opens the copied link
    assert classmate.number_input(key="train.steps").value == TRAIN_STEPS  # the settings
    assert "train.job" not in classmate.session_state and points(classmate) == 0  # not the runs
    assert any("Press **Train** to start" in info.value for info in classmate.info)


def test_after_a_server_restart_the_latest_run_comes_from_the_store(lab_home):
    """No job of the student in this server's pool (it was restarted): the store has the run."""
    config = RunConfig(steps=12, rank=2, eval_interval=5, snapshot_interval=5)
    with runs.RunStore() as store:
        run_id, result = train_and_save(config, store, owner="f" * 32)
    at = open_page("train", student="f" * 32)
    assert not at.exception and "train.job" not in at.session_state
    assert any(f"#{run_id}" in caption.value for caption in at.main.caption)  # which run
    assert len(charts(at)) == 3
    assert at.get("progress")[0].proto.text == "Step 12 of 12 · finished"
    assert f"{result.test_acc_after:.1%}" in at.metric[0].value
    assert at.button(key="train.to_spectra") and not at.button(key="train.start").disabled


def test_a_run_whose_process_died_shows_as_interrupted(lab_home):
    """A run left "running" by a process that is gone (a killed worker, a server that was
    stopped): the page says it was interrupted and why, keeps its curve, and does not poll."""
    script = (
        "import sys; from core.store.runs import RunStore;"
        " from core.training.train import RunConfig;"
        "store = RunStore(sys.argv[1]);"
        "run = store.create(RunConfig(steps=50), owner='e' * 32);"
        "rows = [{'step': s, 'train_loss': 2.0 / (s + 1), 'val_loss': None, 'val_acc': None}"
        " for s in range(1, 4)];"
        "store.append(run, rows, [])"
    )
    subprocess.run([sys.executable, "-c", script, str(runs.default_path())], check=True, cwd=ROOT)
    at = open_page("train", student="e" * 32)
    assert not at.exception
    assert any("interrupted" in w.value and "without finishing" in w.value for w in at.warning)
    assert at.get("progress")[0].proto.text == "Step 3 of 50 · unfinished"
    assert charts(at) and at.session_state["train.poll"] is None  # nothing more will come


def test_a_queued_run_shows_its_place_and_empty_axes_and_polls_slowly(lab_home):
    first = open_page("train", {"steps": "2000"})  # the one worker of the tests: busy
    first.button(key="train.start").click().run()
    second = open_page("train", {"steps": "2000"})
    second.button(key="train.start").click().run()
    started = [at.session_state["train.job"] for at in (first, second)]
    try:
        assert started[1].status == "queued"
        assert any("position 1 in the queue" in info.value for info in second.info)
        # the axes of the run to come, drawn while it waits: the browser loads plotly meanwhile
        assert len(charts(second)) == 2 and not second.session_state["train.job"].events
        assert second.session_state["train.poll"] == live.POLL_QUEUED
        assert first.session_state["train.poll"] == live.POLL_RUNNING
    finally:
        for job in reversed(started):
            job.stop()
        assert all(job.wait(60) for job in started)
