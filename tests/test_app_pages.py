"""Each page in Streamlit's AppTest: it loads, its widgets exist, and it does its job.

The Train test starts a real (short) run through the page's own code: the job pool, the
fragment that polls it, and the run store.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core import jobs, live, runs, zoo
from core.train import RunConfig

APP = "../app.py"
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # the first run of a page imports torch and loads a model
TRAIN_STEPS = 20  # two snapshots (every 10 steps): the evolution plot needs them


def open_page(page: str, query: dict | None = None, student: str | None = None) -> AppTest:
    """A new browser session on `page` (with a link's `query`); `student`: the id its browser
    keeps (AppTest has no browser: each session is a new student otherwise)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if student is not None:
        at.session_state["student"], at.session_state["student.kept"] = student, True
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def count_line(at: AppTest) -> str:
    """The Train page's line that counts the trainable parameters."""
    return next(m.value for m in at.markdown if "trainable parameters of" in m.value)


def points(at: AppTest) -> int:
    """How many points the page's charts plot, all traces together."""
    specs = [json.loads(chart.proto.spec) for chart in charts(at)]
    return sum(len(trace.get("x", [])) for spec in specs for trace in spec["data"])


@pytest.fixture(scope="module")
def trained(lab_home) -> tuple[AppTest, int]:
    """The Train page after a short run: (the page, the saved run's id)."""
    at = open_page("train")
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
    assert len(at.get("page_link")) == 3  # the lessons


def test_language_switch_translates_the_page(lab_home):
    at = open_page("learn")
    at.selectbox(key="lang").set_value("zh").run()
    assert at.title[0].value == "LoRA：给大模型学一个小改动"
    assert at.query_params["lang"] == "zh"


def test_train_page_widgets_and_parameter_count(lab_home):
    at = open_page("train")
    for name in ("model", "dataset", "shift", "method", "init", "scaling"):
        assert at.selectbox(key=f"train.{name}").value is not None
    for name in ("rank", "alpha", "lr", "steps", "batch_size", "seed"):
        assert at.number_input(key=f"train.{name}").value is not None
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
    with runs.RunStore() as store:
        record = store.get(run_id)
    assert record.status == "finished" and record.has_weights
    assert [row["step"] for row in record.history] == list(range(TRAIN_STEPS + 1))
    assert record.config.rank == 2 and record.config.steps == TRAIN_STEPS
    assert at.button(key="train.to_spectra")
    assert at.get("progress")[0].proto.text == f"Step {TRAIN_STEPS} of {TRAIN_STEPS} · finished"


def test_train_bad_rank_is_a_clear_message_and_no_button(lab_home):
    at = open_page("train", {"rank": "300"})  # above min(d, k) = 256 of the MLP's layers
    assert "rank 300 is above" in at.error[0].value
    assert at.button(key="train.start").disabled


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
    at = open_page("spectra", {"run": str(run_id)})  # another session: the link is the way in
    assert at.selectbox(key="spectra.run").value == run_id
    assert at.selectbox(key="spectra.layer").value == "fc1"
    assert len(charts(at)) == 4  # spectrum, its evolution, the ΔW heatmap, ΔM and ΔD
    assert any("DoRA" in header.value for header in at.subheader)
    assert len(at.dataframe) == 1  # the metrics table
    at.toggle(key="spectra.normalised").set_value(True).run()
    assert not at.exception
    assert at.query_params["normalised"] == "1"


def test_spectra_page_without_runs_points_to_train(lab_home):
    at = open_page("spectra")
    assert at.get("page_link")


def test_compare_page_sweep_table_and_rename(trained, lab_home):
    _, run_id = trained
    at = open_page("compare", {"ranks": "1", "baselines": "0", "steps": "5", "everyone": "1"})
    assert at.multiselect(key="compare.ranks").value == [1]
    at.button(key="compare.launch").click().run()
    sweep = at.session_state["compare.jobs"]
    assert len(sweep) == 1 and sweep[0].wait(120) and sweep[0].status == "finished"
    at.run()
    assert not at.exception
    assert len(charts(at)) == 1  # accuracy against trainable parameters
    assert {run_id, sweep[0].run_id} <= set(at.dataframe[-1].value["id"])
    assert at.get("download_button")
    # Only this session's runs can be renamed or deleted, also when everyone's are shown.
    mine = sweep[0].run_id
    assert [o.split(" ")[0] for o in at.selectbox(key="compare.manage").options] == [f"#{mine}"]
    at.selectbox(key="compare.manage").set_value(mine).run()
    at.text_input(key=f"compare.name.{mine}").input("my first run")
    at.button(key="compare.rename").click().run()
    with runs.RunStore() as store:
        assert store.get_summary(mine).name == "my first run"
    # Two runs of the same layers: the Spectra page compares their directions (φ heatmap).
    spectra = open_page("spectra", {"run": str(run_id), "other": str(sweep[0].run_id)})
    assert len(charts(spectra)) == 5
    assert any("φ(1, 1)" in caption.value for caption in spectra.main.caption)


def run_from_link(query: dict) -> tuple[AppTest, jobs.Job]:
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
    at = open_page("train", {"steps": "5000"})
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    assert at.button(key="train.start").disabled  # one run at a time, from the click on
    at.button(key="train.stop").click().run()
    assert job.wait(60) and job.status == "stopped"
    at.run()
    assert at.warning


def test_planted_rank_run_shows_the_planted_update(lab_home):
    _, job = run_from_link({"shift": "planted-rank", "steps": "20"})
    assert job.status == "finished", job.reason
    at = open_page("spectra", {"run": str(job.run_id), "layer": "fc1"})  # where ΔW* is
    assert any("ΔW*" in header.value for header in at.subheader)
    assert len(charts(at)) == 6  # spectrum, evolution, ΔW, ΔM/ΔD, learned ΔW beside ΔW*


def test_readme_page_shows_the_readme(lab_home):
    at = open_page("readme")
    assert at.markdown and "LoRA" in at.markdown[0].value


def test_compare_page_imports_an_uploaded_adapter(trained, lab_home):
    """Upload the trained run's PEFT zip: it becomes a run of this session, with a link to
    Spectra; a file that is not a zip gets one clear line and no run."""
    _, run_id = trained
    with runs.RunStore() as store:
        adapter = store.export_peft(run_id).read_bytes()
        count = len(store.list())
    at = open_page("compare")
    at.file_uploader(key="compare.upload").set_value(("my-adapter.zip", b"no zip", "text/plain"))
    at.run()
    at.button(key="compare.import").click().run()
    assert "is not a zip" in at.error[0].value and not at.success
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
    spectra = open_page("spectra", {"run": str(imported.id)})
    assert spectra.selectbox(key="spectra.run").value == imported.id
    assert len(charts(spectra)) == 2  # its spectrum and its ΔW (it recorded no training)


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
def test_empty_pages_point_to_the_everyone_toggle(lab_home, page):
    """A student without runs of their own: the page says where the class's runs are."""
    at = open_page(page)
    assert at.toggle(key=f"{page}.everyone")
    assert any("shows every run on this server" in info.value for info in at.info)


def fake_job(method: str = "lora", status: str = "failed", reason: str = "", **config) -> jobs.Job:
    job = jobs.Job(
        id="fake",
        owner="nobody",
        config=RunConfig(method=method, **config),
        pool=None,
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
    assert reason in at.error[0].value and "r=1" in at.error[0].value
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
        run_id, result = runs.train_and_save(config, store, owner="f" * 32)
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
        "import sys; from core.runs import RunStore; from core.train import RunConfig;"
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
    first = open_page("train", {"steps": "5000"})  # the one worker of the tests: busy
    first.button(key="train.start").click().run()
    second = open_page("train", {"steps": "5000"})
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
