"""Train: choose a model, a task and a method, then watch the run live.

The run is a job in core.jobs' pool (another process), so switching pages does
not stop it; a fragment polls the job and redraws the curves.
"""

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages.common import (
    bad_link,
    current_settings,
    language,
    load_settings,
    log_ticks,
    save_settings,
    session_id,
    style,
    titled_select,
    tr,
)
from core import data, jobs, links, methods, paths, train, zoo
from core.config import DEFAULT_LR, RunConfig
from core.i18n import catalog
from core.targets import default_targets, eligible_layers, resolve_targets

PAGE = "train"
DEFAULTS = links.train_defaults()
CHOICES = links.TRAIN_CHOICES  # the widgets offer what a link may name
POLL_SECONDS = 0.3


def key(name: str) -> str:
    return f"{PAGE}.{name}"


def has_text(name: str) -> bool:
    return catalog(language()).has(name)


# ----------------------------------------------------------------------------- the settings


def task_settings() -> None:
    """Model (with its card), dataset and task shift (with its explanation)."""
    col_model, col_data, col_shift = st.columns(3)
    with col_model:
        model = titled_select(st, "train.model", CHOICES["model"], key("model"), "models")
        st.caption(tr(f"models.{model}.summary"))
        card = zoo.card(model)
        if card["test_acc"] is None:  # torchvision's ImageNet models: no accuracy on digits
            st.caption(tr("train.card_imagenet", params=f"{card['params']:,}"))
        else:
            source = f"models.{model}.source"  # the card's words for it are English
            st.caption(
                tr(
                    "train.card",
                    params=f"{card['params']:,}",
                    acc=card["test_acc"],
                    source=tr(source) if has_text(source) else card["source_task"],
                )
            )
    with col_data:
        dataset = titled_select(st, "train.dataset", CHOICES["dataset"], key("dataset"), "datasets")
        st.caption(tr(f"datasets.{dataset}.description"))
    with col_shift:
        shift = titled_select(st, "train.shift", CHOICES["shift"], key("shift"), "shifts")
        st.caption(tr(f"shifts.{shift}.explanation"))
        shift_parameters(shift)


def shift_parameters(shift: str) -> None:
    """One number/text box per parameter of the shift; stored together as ``shift_params``.

    No box for a shift's "seed": a run draws the permutation (or ΔW*) with its own seed (see
    core.data.load_task), so a caption says that instead of offering a box that would not be
    the seed used.
    """
    chosen = st.session_state[key("shift_params")]
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
    defaults = data.SHIFTS[shift].params
    # what differs from the defaults (links stay short); never a "seed": the run's seed rules
    st.session_state[key("shift_params")] = {
        name: value for name, value in params.items() if value != defaults[name]
    }


def method_settings() -> str:
    """Method, and for LoRA its rank, alpha, init, scaling and DoRA; returns the method."""
    cols = st.columns(3)
    method = cols[0].selectbox(
        tr("train.method"),
        CHOICES["method"],
        key=key("method"),
        persist_state="session",
        format_func=lambda name: tr(f"methods.{name}"),
    )
    st.caption(tr(f"methods.{method}_help"))
    if method == "top-k":
        cols[1].number_input(tr("train.top_k"), step=1, key=key("top_k"), persist_state="session")
    if method != "lora":
        return method
    cols[1].number_input(
        tr("train.rank"),
        step=1,
        key=key("rank"),
        persist_state="session",
        help=tr("train.rank_help"),
    )
    cols[2].number_input(
        "α",
        step=1.0,
        key=key("alpha"),
        persist_state="session",
        help=tr("train.alpha_help"),
    )
    cols = st.columns(3, vertical_alignment="bottom")
    cols[0].selectbox(
        tr("train.init"),
        CHOICES["init"],
        key=key("init"),
        persist_state="session",
        format_func=lambda name: tr(f"inits.{name}"),
    )
    cols[1].selectbox(
        tr("train.scaling"),
        CHOICES["scaling"],
        key=key("scaling"),
        persist_state="session",
        format_func=lambda name: tr(f"scalings.{name}"),
    )
    cols[2].checkbox("DoRA", key=key("dora"), persist_state="session", help=tr("train.dora_help"))
    cols = st.columns(3)
    cols[0].number_input(
        tr("train.lora_plus"),
        min_value=0.01,
        step=1.0,
        key=key("lora_plus_ratio"),
        persist_state="session",
        help=tr("train.lora_plus_help"),
    )
    cols[1].number_input(
        tr("train.dropout"),
        min_value=0.0,
        max_value=0.9,
        step=0.05,
        key=key("dropout"),
        persist_state="session",
        help=tr("train.dropout_help"),
    )
    return method


def training_settings(method: str) -> None:
    """Learning rate (empty: `method`'s own, config.DEFAULT_LR), steps, batch size, seed."""
    col_lr, col_steps, col_batch, col_seed = st.columns(4)
    col_lr.number_input(
        tr("train.lr"),
        step=1e-3,
        format="%g",
        key=key("lr"),
        persist_state="session",
        placeholder=tr("train.lr_placeholder", lr=f"{DEFAULT_LR[method]:g}"),
        help=tr("train.lr_help", defaults=lr_defaults()),
    )
    col_steps.number_input(
        tr("train.steps"),
        step=50,
        key=key("steps"),
        persist_state="session",
    )
    col_batch.number_input(
        tr("train.batch_size"),
        step=16,
        key=key("batch_size"),
        persist_state="session",
    )
    col_seed.number_input(tr("train.seed"), step=1, key=key("seed"), persist_state="session")


def lr_defaults() -> str:
    """Each method's default learning rate, in words: "LoRA 0.01, full fine-tuning 0.001, …"."""
    return ", ".join(f"{tr(f'methods.{m}')} {DEFAULT_LR[m]:g}" for m in CHOICES["method"])


def target_layers(base) -> None:
    """The table of layers LoRA can adapt, with their cost at the chosen rank; pick targets.

    A model shown for the first time (the student switched to it, or a link named it) starts
    from the chosen targets if they pick a layer of it, else from the model's default targets
    (core.targets.default_targets: "all-linear", or the card's recommendation where "all-linear"
    picks nothing, as for resnet18 whose only Linear is the head).
    """
    rank = st.session_state[key("rank")]
    model = st.session_state[key("model")]
    layers = eligible_layers(base, rank)
    picker = key(f"pick.{model}")
    if picker not in st.session_state:
        targets = st.session_state[key("targets")]
        try:  # "all-linear", or comma-separated names/globs as in a link
            chosen = resolve_targets(
                base, targets if targets == "all-linear" else targets.split(",")
            )
        except ValueError:
            chosen = []
        if not chosen:
            if "targets" in st.session_state.get(key("_fresh"), []):
                bad_link(["targets"])  # a link's targets that pick no layer of this model
            chosen = resolve_targets(base, default_targets(model))
        st.session_state[picker] = chosen
    picked = st.multiselect(
        tr("train.targets"),
        [layer.name for layer in layers],
        key=picker,
        help=tr("train.targets_help"),
    )
    all_linear = resolve_targets(base, "all-linear")
    st.session_state[key("targets")] = "all-linear" if picked == all_linear else ",".join(picked)
    table = pd.DataFrame(
        {
            tr("train.col_adapt"): [layer.name in picked for layer in layers],
            tr("train.col_layer"): [
                layer.name + (f" ({tr('train.head')})" if layer.is_head else "") for layer in layers
            ],
            tr("train.col_kind"): [layer.kind for layer in layers],
            "d × k": [f"{layer.d} × {layer.k}" for layer in layers],
            tr("train.col_max_rank"): [layer.max_rank for layer in layers],
            tr("train.col_lora", rank=rank): [layer.lora_params for layer in layers],
            tr("train.col_full"): [layer.full_params for layer in layers],
        }
    )
    counts = st.column_config.NumberColumn(format="localized")  # 200,704 rather than 200704
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=min(400, 38 + 35 * len(layers)),
        column_config={tr("train.col_lora", rank=rank): counts, tr("train.col_full"): counts},
    )


# ----------------------------------------------------------------------------- the live run


def history(job: jobs.Job) -> pd.DataFrame:
    """One row per recorded step (step 0 = the model before training)."""
    rows = [event.data for event in job.events if event.kind == "step"]
    return pd.DataFrame(
        rows, columns=["step", "train_loss", "val_loss", "val_acc", "elapsed", "steps_per_s"]
    )


def loss_figure(steps: pd.DataFrame, planned: int) -> go.Figure:
    fig = go.Figure()
    trained = steps.dropna(subset=["train_loss"])
    evaluated = steps.dropna(subset=["val_loss"])
    fig.add_scatter(
        x=trained["step"], y=trained["train_loss"], name=tr("train.train_loss"), mode="lines"
    )
    fig.add_scatter(
        x=evaluated["step"],
        y=evaluated["val_loss"],
        name=tr("train.val_loss"),
        mode="lines+markers",
    )
    fig.update_xaxes(title_text=tr("train.step"), range=[-0.02 * planned, 1.02 * max(planned, 1)])
    return style(fig, height=300)


def accuracy_figure(steps: pd.DataFrame, planned: int) -> go.Figure:
    evaluated = steps.dropna(subset=["val_acc"])
    fig = go.Figure()
    fig.add_scatter(
        x=evaluated["step"],
        y=evaluated["val_acc"],
        name=tr("train.val_acc"),
        mode="lines+markers",
        line_color="#2ca02c",
    )
    fig.update_xaxes(title_text=tr("train.step"), range=[-0.02 * planned, 1.02 * max(planned, 1)])
    fig.update_yaxes(range=[0, 1.02], tickformat=".1~%")
    return style(fig, height=300, showlegend=False)


def sigma_figure(job: jobs.Job) -> tuple[int, go.Figure] | None:
    """σ of ΔW per layer at the latest snapshot (its step, the figure): does it stay low-rank?"""
    snapshots = [event for event in job.events if event.kind == "snapshot"]
    if not snapshots:
        return None
    fig = go.Figure()
    layers = snapshots[-1].data["layers"]
    for layer, values in layers.items():
        sigma = values["sigma"]
        fig.add_scatter(x=list(range(1, len(sigma) + 1)), y=sigma, name=layer, mode="lines+markers")
    fig.update_xaxes(title_text="i", dtick=1)
    fig.update_yaxes(
        title_text="σᵢ(ΔW)",
        type="log",
        tickvals=log_ticks([v for values in layers.values() for v in values["sigma"]]),
    )
    return snapshots[-1].step, style(fig, height=280)


def progress(job: jobs.Job, steps: pd.DataFrame) -> int:
    """Progress bar with steps/s and ETA; returns the planned number of steps."""
    start = next((event for event in job.events if event.kind == "start"), None)
    if start is None:
        if job.done:  # it ended before its first step (data offline, …): outcome() says why
            return job.config.steps or 1
        if job.status == "queued":
            wait = job.wait_estimate
            position = job.queue_position or 1
            if wait is None:
                st.info(tr("train.queued", position=position))
            else:
                st.info(tr("train.queued_wait", position=position, seconds=f"{wait:.0f}"))
        else:
            st.info(tr("train.preparing"))
        return job.config.steps or 1
    planned = start.data["steps"]
    step = int(steps["step"].iloc[-1]) if len(steps) else 0
    speed = float(steps["steps_per_s"].iloc[-1]) if len(steps) else 0.0
    if job.done:  # no speed or time left once it ended
        text = tr(
            "train.progress_done", step=step, steps=planned, status=tr(f"status.{job.status}")
        )
    else:
        eta = (planned - step) / speed if speed > 0 else float("nan")
        text = tr(
            "train.progress",
            step=step,
            steps=planned,
            speed=f"{speed:.1f}",
            eta="–" if eta != eta else f"{eta:.0f}",
        )
    st.progress(min(step / planned, 1.0), text=text)
    return planned


def outcome(job: jobs.Job) -> None:
    """What the finished run achieved, or why it did not finish."""
    result = job.result or {}
    if job.status == "failed":
        st.error(tr("train.failed", reason=job.reason))
    elif job.status == "stopped":
        st.warning(tr("train.stopped", reason=job.reason))
    if result.get("test_acc_after") is not None:
        before, after = result["test_acc_before"], result["test_acc_after"]
        # the two accuracies side by side, wide enough for "37.6% → 90.2%" on a projector
        c1, c_source = st.columns(2)
        c1.metric(
            tr("train.acc"),
            f"{before:.1%} → {after:.1%}",
            delta=tr("train.points", value=f"{(after - before) * 100:+.1f}"),
        )
        if result.get("source_acc_after") is not None:  # None: no source task (ImageNet)
            kept, lost = result["source_acc_before"], result["source_acc_after"]
            c_source.metric(
                tr("train.source_acc"),
                f"{kept:.1%} → {lost:.1%}",
                delta=tr("train.points", value=f"{(lost - kept) * 100:+.1f}"),
                help=tr("train.source_help"),
            )
        c2, c3, _ = st.columns(3)
        c2.metric(
            tr("train.trainable"),
            f"{result['trainable_params']:,}",
            help=f"{result['trainable_params'] / result['total_params']:.2%}",
        )
        c3.metric(tr("train.time"), f"{result['seconds']:.1f} s")
    finished = job.run_id is not None and job.status != "failed"
    if finished and st.button(
        tr("train.open_spectra"), icon=":material/insights:", key=key("to_spectra")
    ):
        st.switch_page("app_pages/spectra.py", query_params={"run": str(job.run_id)})


def live_view() -> None:
    """Redrawn every POLL_SECONDS while a job runs; once it ends, one full rerun."""
    job: jobs.Job | None = st.session_state.get(key("job"))
    if job is None:
        st.info(tr("train.nothing_yet"))
        return
    steps = history(job)
    if not job.done and st.button(tr("train.stop"), icon=":material/stop_circle:", key=key("stop")):
        job.stop()
    planned = progress(job, steps)
    if job.done:
        outcome(job)
    if len(steps):
        col_loss, col_acc = st.columns(2)
        col_loss.markdown(f"**{tr('train.loss')}**")
        col_loss.plotly_chart(loss_figure(steps, planned), width="stretch", key=key("loss"))
        col_acc.markdown(f"**{tr('train.accuracy')}**")
        col_acc.plotly_chart(accuracy_figure(steps, planned), width="stretch", key=key("acc"))
    sigma = sigma_figure(job)
    if sigma is not None:
        step, figure = sigma
        st.markdown(f"**{tr('train.sigma_title', step=step)}**")
        st.plotly_chart(figure, width="stretch", key=key("sigma"))
    if job.done and st.session_state.get(key("polling")):
        st.session_state[key("polling")] = False
        st.rerun()  # stop the timer: the page stops polling once nothing runs


def count_line(method: str, count: methods.ParamCount) -> str:
    """How many parameters train, and where: adapters (or biases, blocks) and the head."""
    line = tr(
        "train.count",
        trainable=f"{count.trainable:,}",
        total=f"{count.total:,}",
        fraction=f"{count.fraction:.2%}",
    )
    if method == "lora":
        adapters = count.trainable - count.head
        split = tr("train.count_lora", adapters=f"{adapters:,}", head=f"{count.head:,}")
        if not count.head:  # a task that keeps the base model's head (planted-rank)
            split = tr("train.count_frozen_head", adapters=f"{adapters:,}")
    elif method in ("top-k", "bitfit") and count.head:
        split = tr("train.count_head", head=f"{count.head:,}")
    else:
        return line
    return f"{line}  \n{split}"


def start(config: RunConfig) -> None:
    try:
        st.session_state[key("job")] = jobs.submit(config, owner=session_id())
        st.session_state[key("polling")] = True
    except ValueError as error:
        st.error(str(error))


# ----------------------------------------------------------------------------- the page

st.title(tr("train.title"))
st.markdown(tr("train.intro"))
# The Train button and the live run come first on screen (filled in below, once the settings
# are known): on a projector the curves must be visible without scrolling.
action = st.container()
load_settings(PAGE, DEFAULTS, CHOICES)

with st.container(border=True):
    st.subheader(tr("train.task_title"))
    task_settings()
with st.container(border=True):
    st.subheader(tr("train.method_title"))
    training_settings(method_settings())

settings = current_settings(PAGE, DEFAULTS)
problem = None
try:
    base = zoo.load(settings["model"], num_classes=data.DATASETS[settings["dataset"]].num_classes)
except (paths.OfflineError, ValueError) as error:
    base, problem = None, str(error)
if base is not None and settings["method"] == "lora":
    with st.expander(tr("train.layers_title"), expanded=True):
        target_layers(base)
    settings = current_settings(PAGE, DEFAULTS)

config: Any = None
if problem is None:
    try:
        config = RunConfig.from_dict(settings)
        train.check_config(config, base)
        count = train.parameter_count(config)
    except ValueError as error:
        problem = str(error)
save_settings(PAGE, DEFAULTS)

with action:
    col_button, col_count = st.columns([1, 3], vertical_alignment="center")
    if problem is not None:
        st.error(problem)
    else:
        col_count.markdown(count_line(settings["method"], count))
    job = st.session_state.get(key("job"))
    if col_button.button(
        tr("train.start"),
        type="primary",
        icon=":material/play_arrow:",
        disabled=problem is not None or (job is not None and not job.done),
        key=key("start"),
    ):
        start(config)
    polling = st.session_state.get(key("polling"))
    st.fragment(live_view, run_every=POLL_SECONDS if polling else None)()
