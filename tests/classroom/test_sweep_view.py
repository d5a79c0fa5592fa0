"""The Compare page's sweep without the page (core.classroom.sweep_view): plain pytest."""

from types import SimpleNamespace

from core.classroom import links, sweep_view
from core.common import config
from core.common.config import RunConfig
from core.jobs.scheduler import Job
from core.training import data, kinds
from core.training.train import Event


def job(status: str, reason: str = "", steps: list[int] = (), **settings) -> Job:
    events = [Event("start", 0, {})] + [Event("step", s, {}) for s in steps]
    config = RunConfig(steps=200, **settings)
    unwatched = SimpleNamespace(watch=lambda: None)  # a pool that is told a page reads a job
    return Job(id="j", owner="o", config=config, pool=unwatched, status=status, reason=reason,
               events=events)  # fmt: skip


def test_a_jobs_progress_is_its_last_step_of_its_planned_steps():
    assert sweep_view.progress(job("queued")) == 0
    assert sweep_view.progress(job("running", steps=[1, 2, 50])) == 50 / 200
    assert sweep_view.progress(job("finished", steps=[200])) == 1


def test_a_sweeps_rows_name_each_jobs_rank_and_rate():
    rows = sweep_view.rows([job("running", steps=[20], rank=8), job("queued", method="full")])
    assert rows == [
        sweep_view.SweepRow("lora", "8", "0.01", "running", 0.1),
        sweep_view.SweepRow("full", "—", "0.001", "queued", 0.0),
    ]


def test_failures_are_grouped_by_reason_in_the_sweeps_order():
    sweep = [
        job("failed", "offline", rank=1),
        job("finished", rank=2),
        job("failed", "", rank=4),
        job("failed", "offline", method="full"),
    ]
    failed = sweep_view.failures(sweep)
    assert list(failed) == ["offline", "?"]
    assert [(c.method, c.rank) for c in failed["offline"]] == [("lora", 1), ("full", 4)]
    assert [c.rank for c in failed["?"]] == [4]


def test_a_setting_a_method_has_not_reads_as_a_dash():
    assert sweep_view.setting_text(None) == "—"
    assert sweep_view.setting_text(16.0) == "16" and sweep_view.setting_text(0.5) == "0.5"
    assert sweep_view.setting_text("fc1,fc2") == "fc1,fc2" and sweep_view.setting_text(4) == "4"
    assert sweep_view.rank_text(RunConfig(method="head", rank=8)) == "—"


def test_a_sweep_is_busy_until_every_job_is_done():
    done, waiting = job("finished"), job("queued")
    done._done.set()
    assert sweep_view.busy([done, waiting]) and not sweep_view.busy([done])


def test_the_sweep_form_makes_the_sweeps_runs_and_the_imports_task():
    form = sweep_view.SweepForm.of(links.COMPARE_DEFAULTS | {"model": "cnn", "shift": "rotate"})
    configs = form.configs()
    assert [(c.method, c.rank) for c in configs[:-2]] == [("lora", r) for r in form.ranks]
    assert [c.method for c in configs[-2:]] == ["head", "full"]
    assert {(c.model, c.shift, c.steps, c.seed) for c in configs} == {("cnn", "rotate", 200, 0)}
    assert {str(c.targets) for c in configs if c.method == "lora"} == {"all-linear"}
    task = form.task("vit")
    assert (task.model, task.dataset, task.shift, task.seed) == ("vit", form.dataset, "rotate", 0)
    assert form.metric == kinds.ACCURACY


def test_each_kinds_metric_is_written_as_a_student_reads_it():
    """Image datasets are judged by accuracy (a percentage, changed in points); the text
    dataset by bits per character (a plain number, lower is better, changed in bits)."""
    kinds_of = {name: data.kind_of(name) for name in data.DATASETS}
    assert {name for name, kind in kinds_of.items() if kind is kinds.TEXT} == {"prose"}
    assert set(kinds_of.values()) == {kinds.IMAGES, kinds.TEXT}
    assert kinds.BITS.written(2.3114) == "2.31" and kinds.BITS.changed(3.1, 2.31) == "-0.79"
    assert kinds.BITS.lower_is_better and not kinds.ACCURACY.lower_is_better
    assert kinds.TEXT.metrics == (kinds.BITS, kinds.NEXT_CHARACTER)
    assert kinds.ACCURACY.written(0.902) == "90.2%"
    assert kinds.ACCURACY.changed(0.376, 0.902) == "+52.6"
    assert kinds.ACCURACY.changed(0.9, 0.85) == "-5.0"


def test_a_sweep_on_the_language_model_starts_from_its_own_settings():
    settings = {"model": "gpt", "dataset": "prose", "shift": "code", "ranks": [1, 4]}
    form = sweep_view.SweepForm.of(links.COMPARE_DEFAULTS | settings)
    configs = form.configs()
    gpt = config.for_model("gpt")
    for run in configs:
        run.validate()  # a model and a task of one kind: the sweep is not refused
        assert (run.batch_size, run.eval_interval) == (gpt.batch_size, gpt.eval_interval)
    assert [(c.method, c.rank) for c in configs[:2]] == [("lora", 1), ("lora", 4)]
    assert {str(c.targets) for c in configs[:2]} == {str(gpt.targets)}  # W_q and W_v
    assert form.kind == "text" and form.metric == kinds.BITS  # judged in bits per character
