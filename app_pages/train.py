"""Train: choose a model, a task and a method, then watch the run live.

The run is a job in the pool of core.jobs.pool (another process), so switching pages does
not stop it; a fragment polls the job and redraws the curves, which core.classroom.live keeps up to
date event by event and shares between every page that watches the run.
"""

import contextlib
from typing import Any

import streamlit as st

from app_pages.common import (
    bad_link,
    choice,
    current_settings,
    drawn,
    exercise_link,
    fixed_by_link,
    language,
    load_settings,
    prediction_strip,
    refused,
    save_settings,
    status_label,
    store,
    student_id,
    task_strip,
    titled_select,
    tr,
)
from app_pages.figures.train import layers_table, live_figures
from core.analyses import reports
from core.classroom import links, live, run_differences, train_form
from core.classroom.i18n import catalog
from core.common import paths
from core.common.config import BOUNDS, DEFAULT_LR, RunConfig
from core.common.text import for_markdown
from core.jobs import pool as jobs
from core.jobs.scheduler import Job
from core.lowrank import methods
from core.lowrank.targets import eligible_layers
from core.store.names import default_name
from core.store.runs import StoreError
from core.training import data, measure, train
from core.training.kinds import Metric

PAGE = "train"
DEFAULTS = links.train_defaults()
CHOICES = links.TRAIN_CHOICES  # the widgets offer what a link may name
STRIP_KEYS = ("model", "dataset", "shift", "shift_params", "seed")  # what the task's images show


def key(name: str) -> str:
    return f"{PAGE}.{name}"


def has_text(name: str) -> bool:
    return catalog(language()).has(name)


def show(name: str) -> bool:
    """Whether the control of setting ``name`` is drawn (an exercise link may hide it)."""
    return drawn(PAGE, name)


def slots(names: list[str], **columns: Any) -> dict[str, Any]:
    """A column for each shown control of ``names``, left to right in a row of len(names)
    columns: controls an exercise link hides leave no gaps."""
    row = st.columns(len(names), **columns)
    return dict(zip([name for name in names if show(name)], row, strict=False))


# ----------------------------------------------------------------------------- the settings


def task_settings() -> None:
    """Model (with its card), dataset and task shift (with its explanation)."""
    col_model, col_data, col_shift = st.columns(3)
    with col_model:
        if show("model"):
            titled_select(st, "train.model", CHOICES["model"], key("model"), "models")
        model = st.session_state[key("model")]  # the box's value, or the one a link fixed
        st.caption(tr(f"models.{model}.summary"))
        sentence, values = train_form.card_line(model)
        source = f"models.{model}.source"  # the card's words for it are English
        if "source" in values and has_text(source):
            values["source"] = tr(source)
        st.caption(tr(sentence, **values))
    with col_data:
        if show("dataset"):
            titled_select(st, "train.dataset", CHOICES["dataset"], key("dataset"), "datasets")
        dataset = st.session_state[key("dataset")]
        st.caption(tr(f"datasets.{dataset}.description"))
    with col_shift:
        if show("shift"):
            titled_select(st, "train.shift", CHOICES["shift"], key("shift"), "shifts")
        shift = st.session_state[key("shift")]
        st.caption(tr(f"shifts.{shift}.explanation"))
        if show("shift_params"):
            shift_parameters(shift)


def shift_parameters(shift: str) -> None:
    """One number/text box per parameter of the shift; stored together as ``shift_params``.

    No box for a shift's "seed": a run draws the permutation (or ΔW*) with its own seed (see
    core.training.data.load_task), so a caption says that instead of offering a box that would not
    be the seed used.
    """
    chosen = st.session_state[key("shift_params")]
    if "shift_params" in st.session_state[key("_fresh")]:
        chosen, readable = train_form.link_shift_params(shift, chosen)
        if not readable:  # a link's parameters that no box can hold: the defaults instead
            with link_problems:
                bad_link(["shift_params"])
    params = {}
    for name, default in data.SHIFTS[shift].params.items():
        if name == "seed":
            st.caption(tr("train.shift_seed"))
            continue
        value = chosen.get(name, default)
        widget_key = key(f"shift.{shift}.{name}")
        label = tr(f"shift_params.{name}")
        if isinstance(default, float):
            params[name] = st.number_input(label, value=float(value), key=widget_key)
        elif isinstance(default, int):
            params[name] = st.number_input(label, value=int(value), step=1, key=widget_key)
        else:
            params[name] = st.text_input(label, value=str(value), key=widget_key)
    st.session_state[key("shift_params")] = train_form.changed_shift_params(shift, params)


# Each number box of a setting: its label (a catalog key, or "α" as is), step, help (a catalog
# key) and bounds beyond the config's own.
BOXES: dict[str, tuple[str, float, str | None, dict[str, float]]] = {
    "top_k": ("train.top_k", 1, None, {}),
    "rank": ("train.rank", 1, "train.rank_help", {}),
    "alpha": ("α", 1.0, "train.alpha_help", {}),
    "lora_plus_ratio": (
        "train.lora_plus", 1.0, "train.lora_plus_help", {"min_value": BOUNDS["lora_plus_ratio"].low}
    ),
    "dropout": ("train.dropout", 0.05, "train.dropout_help", {"min_value": 0.0, "max_value": 0.9}),
    "steps": ("train.steps", 50, None, {}),
    "batch_size": ("train.batch_size", 16, None, {}),
    "seed": ("train.seed", 1, None, {}),
}  # fmt: skip
SELECTS = {"method": "methods", "init": "inits", "scaling": "scalings"}  # setting → its names


def boxes(cols: dict[str, Any]) -> None:
    """The number boxes (BOXES) and select boxes (SELECTS) of the shown settings in ``cols``."""
    for name, where in cols.items():
        if name in SELECTS:
            names = SELECTS[name]
            choice(where.selectbox, tr(f"train.{name}"), CHOICES[name], key(name),
                   lambda value, names=names: tr(f"{names}.{value}"))  # fmt: skip
        elif name in BOXES:
            label, step, help_key, bounds = BOXES[name]
            where.number_input(
                tr(label) if label.startswith("train.") else label,
                step=step,
                key=key(name),
                persist_state="session",
                help=tr(help_key) if help_key else None,
                **bounds,
            )


def method_settings() -> None:
    """Method, and for LoRA its rank, alpha, init, scaling and DoRA."""
    method = st.session_state[key("method")]  # the box's value (drawn below), or a link's
    cols = slots(["method", "top_k" if method == "top-k" else "rank", "alpha"])
    boxes({"method": cols["method"]} if "method" in cols else {})
    st.caption(tr(f"methods.{method}_help"))
    if show("train_head"):  # also for head-only training, which refuses it off: it is seen
        st.toggle(
            tr("train.train_head"),
            key=key("train_head"),
            persist_state="session",
            help=tr("train.train_head_help"),
        )
    if method == "top-k":
        boxes({name: where for name, where in cols.items() if name == "top_k"})
    if method != "lora":
        return
    boxes({name: where for name, where in cols.items() if name in ("rank", "alpha")})
    cols = slots(["init", "scaling", "dora"], vertical_alignment="bottom")
    boxes({name: where for name, where in cols.items() if name != "dora"})
    if "dora" in cols:
        cols["dora"].checkbox(
            "DoRA", key=key("dora"), persist_state="session", help=tr("train.dora_help")
        )
    boxes(slots(["lora_plus_ratio", "dropout", ""]))  # "": an empty third column, as above


def training_settings() -> None:
    """Learning rate (empty: the method's own, config.DEFAULT_LR), steps, batch size, seed."""
    method = st.session_state[key("method")]
    cols = slots(["lr", "steps", "batch_size", "seed"])
    if "lr" in cols:
        cols["lr"].number_input(
            tr("train.lr"),
            step=1e-3,
            format="%g",
            key=key("lr"),
            persist_state="session",
            placeholder=tr("train.lr_placeholder", lr=f"{DEFAULT_LR[method]:g}"),
            help=tr("train.lr_help", defaults=lr_defaults()),
        )
    boxes({name: where for name, where in cols.items() if name != "lr"})


def lr_defaults() -> str:
    """Each method's default learning rate, in words: "LoRA 0.01, full fine-tuning 0.001, …"."""
    return ", ".join(f"{tr(f'methods.{m}')} {DEFAULT_LR[m]:g}" for m in CHOICES["method"])


def target_layers(base) -> None:
    """The table of layers LoRA can adapt, with their cost at the chosen rank; pick targets.
    A model shown for the first time (the student switched to it, or a link named it) starts
    from the chosen targets if they pick a layer of it (train_form.starting_targets)."""
    rank = st.session_state[key("rank")]
    model = st.session_state[key("model")]
    layers = eligible_layers(base, rank)
    picker = key(f"pick.{model}")
    if picker not in st.session_state:
        chosen, picks = train_form.starting_targets(base, model, st.session_state[key("targets")])
        if not picks and "targets" in st.session_state.get(key("_fresh"), []):
            with link_problems:  # a link's targets that pick no layer of this model
                bad_link(["targets"])
        st.session_state[picker] = chosen
    if show("targets"):
        picked = st.multiselect(
            tr("train.targets"),
            [layer.name for layer in layers],
            key=picker,
            help=tr("train.targets_help"),
        )
        st.session_state[key("targets")] = train_form.targets_setting(base, picked)
    else:  # an exercise fixed them: the table shows which, nothing changes them
        picked = st.session_state[picker]
    counts = st.column_config.NumberColumn(format="localized")  # 200,704 rather than 200704
    st.dataframe(
        layers_table(layers, picked, rank),
        hide_index=True,
        width="stretch",
        height=min(400, 38 + 35 * len(layers)),
        column_config={tr("train.col_lora", rank=rank): counts, tr("train.col_full"): counts},
    )
    st.page_link(
        "app_pages/spectra.py",
        label=tr("evidence.layers"),
        icon=":material/insights:",
        help=tr("evidence.layers_help"),
    )


# ----------------------------------------------------------------------------- the live run


def progress(view: live.RunView) -> None:
    """Progress bar with steps/s and ETA, or where the run waits."""
    frame = view.frame
    if not frame.has_points:
        if view.done:  # it ended before its first step (data offline, …): outcome() says why
            return
        if view.status == "queued":
            wait = view.job.wait_estimate
            position = view.job.queue_position or 1
            if wait is None:
                st.info(tr("train.queued", position=position))
            else:
                st.info(tr("train.queued_wait", position=position, seconds=f"{wait:.0f}"))
        else:
            st.info(tr("train.preparing"))
        return
    planned = view.planned
    if view.done:  # no speed or time left once it ended
        text = tr(
            "train.progress_done",
            step=frame.step,
            steps=planned,
            status=status_label(view.status),
        )
    else:
        text = tr(
            "train.progress",
            step=frame.step,
            steps=planned,
            speed=f"{frame.steps_per_s:.1f}",
            eta=train_form.eta_text(planned, frame.step, frame.steps_per_s),
        )
    st.progress(min(frame.step / planned, 1.0), text=text)


def ending(view: live.RunView) -> None:
    """Why the run did not finish: its student stopped it, it failed, it was interrupted."""
    if view.status == "failed":
        st.error(tr("train.failed", reason=for_markdown(view.reason)))
    elif view.status == "stopped" and view.stopped_at is not None:
        step, steps = view.stopped_at
        st.warning(tr("train.stopped_at", step=step, steps=steps))
    elif view.status == "stopped":
        st.warning(tr("train.stopped", reason=for_markdown(view.reason)))
    elif view.status == "unfinished":
        st.warning(tr("train.unfinished", reason=for_markdown(view.reason)))


def outcome(view: live.RunView) -> None:
    """What the ended run achieved (below its curves: on a projector the curves come first)."""
    result = view.result or {}
    metric = train_form.metric_of(view.config)
    if result.get(f"test_{metric.field}_after") is not None:
        # the two metrics side by side, wide enough for "37.6% → 90.2%" on a projector
        c1, c_source = st.columns(2)
        c1.metric(tr(metric.label), **change(metric, result, "test"))
        if result.get(f"source_{metric.field}_after") is not None:  # None: no source (ImageNet)
            c_source.metric(
                tr("train.source_acc"),
                **change(metric, result, "source"),
                help=tr("train.source_help"),
            )
            forgot = _forgetting(store().where, view.run_id) if view.run_id else None
            note = forgot.note() if forgot is not None else None
            if note is not None:
                sentence, values = note
                c_source.caption(tr(sentence, **values))
        c2, c3, _ = st.columns(3)
        c2.metric(
            tr("train.trainable"),
            f"{result['trainable_params']:,}",
            help=f"{result['trainable_params'] / result['total_params']:.2%}",
        )
        c3.metric(tr("train.time"), f"{result['seconds']:.1f} s")
    if inspectable(view):
        prediction_strip(view.run_id, key("predictions"))
    if inspectable(view) and st.button(
        tr("train.open_spectra"), icon=":material/insights:", key=key("to_spectra")
    ):
        st.switch_page("app_pages/spectra.py", query_params={"run": str(view.run_id)})


def change(metric: Metric, result: dict, split: str) -> dict[str, str]:
    """A metric's value before → after on a split ("test", "source") and its change, as
    st.metric takes them."""
    before, after = (result[f"{split}_{metric.field}_{when}"] for when in ("before", "after"))
    return {
        "value": f"{metric.written(before)} → {metric.written(after)}",
        "delta": tr(metric.change, value=metric.changed(before, after)),
    }


def open_moment(run_id: int, step: float) -> None:
    """The Spectra page at the moment a student clicked on a curve: the run's snapshot nearest
    to that step (core.analyses.reports.moment, as a click on Spectra's own curves picks it)."""
    query = {"run": str(run_id)}
    with contextlib.suppress(StoreError):  # deleted meanwhile: Spectra says so
        record = store().get(run_id)
        if record.snapshots:
            query["step"] = str(reports.moment(record.history, record.snapshots, step).step)
    st.switch_page("app_pages/spectra.py", query_params=query)


def inspectable(view: live.RunView) -> bool:
    """Whether the run has a trained model to look into (its examples, its Spectra page)."""
    return view.run_id is not None and view.status in ("finished", "stopped")


def which_run(view: live.RunView, form: RunConfig | None) -> None:
    """Which run the result below is (#id and name), and each setting in which it differs from
    the form above: a lesson link or a new tab sets the form, while the run shown may be the
    student's latest, trained under other settings (core.classroom.run_differences)."""
    name = default_name(view.config)
    with contextlib.suppress(StoreError):  # deleted meanwhile: its settings still tell
        name = name if view.run_id is None else store().get_summary(view.run_id).name
    which = train_form.run_title(view.run_id, live=view.job is not None)
    st.caption(tr(which, id=view.run_id, name=for_markdown(name)))
    differences = [] if form is None else run_differences.differing_settings(form, view.config)
    if differences:
        said = (
            tr("train.difference", name=d.name, run=for_markdown(d.run), form=for_markdown(d.form))
            for d in differences
        )
        st.warning(tr("train.differs", settings="; ".join(said)), icon=":material/difference:")


def current_view() -> live.RunView | None:
    """The run this page shows: the job started here, else the student's latest stored run."""
    job = st.session_state.get(key("job"))
    if job is not None:
        return live.RunView.of_job(job)
    run_id = st.session_state.get(key("run"))
    if run_id is None:
        return None
    try:
        record = train_form.stored_run(store(), run_id)
    except StoreError:  # deleted meanwhile (on the Compare page)
        del st.session_state[key("run")]
        return None
    return live.RunView.of_record(record)


def resume() -> None:
    """A session that has not started a run yet (a reload, a new tab, a server restart) shows
    the student's latest run: live if this server's pool still has it, else from the store."""
    if key("job") in st.session_state or key("run") in st.session_state:
        return
    student = student_id()
    found = live.latest(jobs.pool().jobs(owner=student), store().list(owner=student))
    if isinstance(found, Job):
        st.session_state[key("job")] = found
    elif found is not None:
        st.session_state[key("run")] = found.id


def charts(frame: live.Frame, planned: int, view: live.RunView | None = None) -> None:
    """Loss and accuracy, and σ(ΔW) once there is one. Empty axes too, before the first point
    and before the first run: the browser loads its plotting code (a 4.7 MB script, seconds of
    a busy laptop's CPU) while the student sets up or the run waits, not when the point comes.
    The curves of an ended run ``view`` are clickable, as Spectra's are: see open_moment."""
    figures = live_figures(frame.run, frame.version, language(), planned, frame)
    clickable = view is not None and inspectable(view)
    select: dict[str, Any] = {"on_select": "rerun", "selection_mode": "points"} if clickable else {}
    col_loss, col_acc = st.columns(2)
    col_loss.markdown(f"**{tr('train.loss')}**")
    loss = col_loss.plotly_chart(figures["loss"], width="stretch", key=key("loss"), **select)
    col_acc.markdown(f"**{tr('train.accuracy')}**")
    acc = col_acc.plotly_chart(figures["acc"], width="stretch", key=key("acc"), **select)
    if clickable:
        st.caption(tr("train.click_moment"))
        clicked = [point for chart in (loss, acc) for point in chart.selection.points]
        if clicked:
            open_moment(view.run_id, clicked[0]["x"])
    if "sigma" in figures:
        st.markdown(f"**{tr('train.sigma_title', step=frame.sigma_step)}**")
        st.plotly_chart(figures["sigma"], width="stretch", key=key("sigma"))


@st.cache_data(show_spinner=False, max_entries=32)
def _forgetting(store_path: str, run_id: int) -> train.Forgetting | None:
    """core.training.train.forgetting of a saved run, once per run (None: no weights, no source
    task)."""
    try:
        run = measure.open_run(run_id, store())
    except (StoreError, paths.OfflineError, ValueError):
        return None
    return train.forgetting(run.config, run.base, run.model, run.num_classes)


def live_view(form: RunConfig | None) -> None:
    """Redrawn every view.poll_seconds() while the run goes on; a new pace (queued → running
    → done) takes one full rerun, as only a full run sets a fragment's timer. ``form``: the
    settings above (None if unreadable), which the run shown may not have been trained with."""
    view = current_view()
    if view is None:
        st.info(tr("train.nothing_yet"))
        charts(live.NO_RUN, st.session_state[key("steps")] or 1)
        return
    which_run(view, form)
    if (
        view.job is not None
        and not view.done
        and st.button(tr("train.stop"), icon=":material/stop_circle:", key=key("stop"))
    ):
        view.job.stop()
    progress(view)
    if view.done:
        ending(view)
    if not st.session_state[key("charts_outside")] and not (
        view.done and not view.frame.has_points
    ):
        charts(view.frame, view.planned, view)  # (not for a run that ended before its 1st step)
    if view.done:
        outcome(view)
    if view.poll_seconds() != st.session_state.get(key("poll")):
        st.rerun()


def count_line(method: str, count: methods.ParamCount, train_head: bool) -> str:
    """How many parameters train, and where: adapters (or biases, blocks) and the head."""
    line = tr(
        "train.count",
        trainable=f"{count.trainable:,}",
        total=f"{count.total:,}",
        fraction=f"{count.fraction:.2%}",
    )
    split = train_form.count_split(method, count, train_head)
    return line if split is None else f"{line}  \n{tr(split[0], **split[1])}"


def running() -> bool:
    job = st.session_state.get(key("job"))
    return job is not None and not job.done


def start(config: RunConfig) -> None:
    try:
        st.session_state[key("job")] = jobs.submit(config, owner=student_id())
        st.session_state.pop(key("run"), None)
    except ValueError as error:
        st.error(refused(error))


# ----------------------------------------------------------------------------- the page

st.title(tr("train.title"))
st.markdown(tr("train.intro"))
# What a link got wrong is said first, above everything a student could scroll past (also
# what only the settings below find out: shift parameters or targets no box can hold).
link_problems = st.container()
# The Train button and the live run come next (filled in below, once the settings are known):
# on a projector the curves must be visible without scrolling.
action = st.container()
with link_problems:
    load_settings(PAGE, DEFAULTS, CHOICES)

fixed_by_link(PAGE)
with st.container(border=True):
    st.subheader(tr("train.task_title"))
    task_settings()
    task_strip(*(st.session_state[key(name)] for name in STRIP_KEYS), key=key("strip"))
with st.container(border=True):
    st.subheader(tr("train.method_title"))
    method_settings()
    training_settings()

settings = current_settings(PAGE, DEFAULTS)
problem = None
try:
    base = train_form.base_model(settings)
except (paths.OfflineError, ValueError) as error:
    base, problem = None, str(error)
if base is not None and settings["method"] == "lora":
    with st.expander(tr("train.layers_title"), expanded=True):
        target_layers(base)
    settings = current_settings(PAGE, DEFAULTS)
exercise_link(PAGE, settings, key("exercise"), "exercise.intro")

# the form's run (also while the model cannot load: the shown run's check)
checked = train_form.check(settings, base)
config, count = checked.config, checked.count
if checked.refusal is not None:
    problem = problem or refused(checked.refusal)
save_settings(PAGE, DEFAULTS)

with action:
    col_button, col_count = st.columns([1, 3], vertical_alignment="center")
    if problem is not None:
        st.error(problem)
    else:
        col_count.markdown(count_line(settings["method"], count, settings["train_head"]))
    resume()
    # The click is read before the button is drawn, so that the button is drawn disabled at
    # once while the new run goes on (not a callback: it would get the settings as they were
    # before this rerun, without a value typed just before the click).
    if st.session_state.get(key("start")) and problem is None and not running():
        start(config)
    col_button.button(
        tr("train.start"),
        type="primary",
        icon=":material/play_arrow:",
        disabled=problem is not None or running(),
        key=key("start"),
    )
    view = current_view()
    st.session_state[key("poll")] = None if view is None else view.poll_seconds()
    # A queued run's (empty) charts go outside the polling fragment: its polls redraw its place
    # in the queue, not its charts (a browser redraws a chart at every poll, even unchanged).
    # Its start changes the pace: a full rerun, which moves them in.
    st.session_state[key("charts_outside")] = view is not None and view.status == "queued"
    st.fragment(live_view, run_every=st.session_state[key("poll")])(config)
    if st.session_state[key("charts_outside")]:
        charts(view.frame, view.planned)
