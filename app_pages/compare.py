"""Compare: a rank sweep in one click, accuracy against cost, and the table of runs."""

import math
from dataclasses import asdict

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app_pages.common import (
    choice,
    drawn,
    exercise_link,
    failed,
    fixed_by_link,
    load_settings,
    log_ticks,
    refused,
    run_label,
    said,
    save_settings,
    status_label,
    store,
    student_id,
    student_names,
    style,
    task_strip,
    titled_select,
    tr,
    visible_runs,
)
from core.analyses.tensorboard_export import tensorboard_zip
from core.classroom import labels, links
from core.common.config import RunConfig
from core.common.paths import OfflineError
from core.common.text import for_figure, for_markdown
from core.jobs import pool as jobs
from core.jobs.scheduler import Job
from core.store.names import RUN_NAME_CHARS
from core.store.records import RunRecord, table_row
from core.store.runs import StoreError
from core.training import adapters, export
from core.training.train import head_trains
from core.training.zoo import default_targets

PAGE = "compare"
DEFAULTS = links.COMPARE_DEFAULTS
CHOICES = links.COMPARE_CHOICES  # the widgets offer what a link may name
NO_RANK = "—"  # the Rank column of runs that have none (head only, full, …)
POLL_SECONDS = 1.0
ACC_RANGE = (0.0, 1.08)  # accuracy's axis: room above 100% for the "r=…" labels
LOG_PAD = 0.15  # decades of room on each side of a log axis of parameters
MARKER_PX = 14
# What the labels' placement assumes (core.classroom.labels): the plot area of a laptop's column in
# pixels (a wider one only has more room), and a character's width in font sizes.
PLOT_PX = (640, 280)
CHAR_EM = 0.6
# The overlay curves' colours: ten that differ in hue (Tableau's), where Streamlit's own
# palette starts with two blues; past ten, the colours come again dashed.
CURVE_COLORS = px.colors.qualitative.T10
CURVE_DASHES = ("solid", "dash", "dot")


def key(name: str) -> str:
    return f"{PAGE}.{name}"


# ----------------------------------------------------------------------------- the sweep


def show(name: str) -> bool:
    """Whether the control of setting ``name`` is drawn (an exercise link may hide it)."""
    return drawn(PAGE, name)


def sweep_settings() -> None:
    col_model, col_data, col_shift = st.columns(3)
    for where, name, names in (
        (col_model, "model", "models"),
        (col_data, "dataset", "datasets"),
        (col_shift, "shift", "shifts"),
    ):
        if show(name):
            titled_select(where, f"train.{name}", CHOICES[name], key(name), names)
    st.caption(tr(f"shifts.{st.session_state[key('shift')]}.explanation"))
    col_ranks, col_base, col_steps, col_seed = st.columns([4, 3, 1, 1], vertical_alignment="bottom")
    if show("ranks"):
        col_ranks.multiselect(
            tr("compare.ranks"), CHOICES["ranks"], key=key("ranks"), persist_state="session"
        )
    if show("baselines"):
        col_base.toggle(tr("compare.baselines"), key=key("baselines"), persist_state="session")
    if show("steps"):
        col_steps.number_input(
            tr("train.steps"), step=50, key=key("steps"), persist_state="session"
        )
    if show("seed"):
        col_seed.number_input(tr("train.seed"), step=1, key=key("seed"), persist_state="session")
    task_strip(
        st.session_state[key("model")],
        st.session_state[key("dataset")],
        st.session_state[key("shift")],
        {},  # a sweep runs the shift with its default parameters
        st.session_state[key("seed")],
        key=key("strip"),
    )


def launch(configs: list[RunConfig]) -> None:
    try:  # all of the sweep, or none of it: a bad setting or a limit refuses it whole
        st.session_state[key("jobs")] = jobs.submit_all(configs, owner=student_id())
        st.session_state[key("polling")] = True
    except ValueError as error:
        st.error(refused(error))
        return
    st.rerun()  # the page again, its button disabled until the sweep ends


def sweep_progress() -> None:
    """The sweep's jobs and how far each got; one full rerun when the last one ends."""
    sweep: list[Job] = st.session_state.get(key("jobs"), [])
    if not sweep:
        return
    rows = []
    for job in sweep:
        steps = [event.step for event in job.events if event.kind == "step"]
        planned = job.config.steps or 0
        row = {
            tr("compare.col_method"): tr(f"methods.{job.config.method}"),
            tr("compare.col_rank"): rank_text(job.config),
            tr("compare.col_lr"): f"{job.config.learning_rate:g}",
            tr("compare.col_status"): status_label(job.status),
            tr("compare.col_progress"): (steps[-1] if steps else 0) / max(planned, 1),
        }
        rows.append(row)
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            tr("compare.col_progress"): st.column_config.ProgressColumn(min_value=0, max_value=1)
        },
    )
    # Why runs failed (offline weights, a diverging loss), once per reason: a sweep of a model
    # that cannot load fails every run for the same reason.
    failed: dict[str, list[str]] = {}
    for job in sweep:
        if job.status == "failed":
            name = tr(f"methods.{job.config.method}")
            if job.config.method == "lora":
                name += f" r={job.config.rank}"
            failed.setdefault(job.reason or "?", []).append(name)
    for reason, names in failed.items():
        st.error(tr("compare.sweep_failed", runs=", ".join(names), reason=for_markdown(reason)))
    if all(job.done for job in sweep) and st.session_state.get(key("polling")):
        st.session_state[key("polling")] = False
        st.rerun()


def rank_text(config: RunConfig) -> str:
    """The rank of a LoRA run, "—" for methods without one (text: no "None" in a table)."""
    return str(config.rank) if config.method == "lora" else NO_RANK


# ----------------------------------------------------------------------------- the runs


TABLE_COLUMNS = {  # core.store.records.TableRow's fields, and their titles in the catalogs
    "name": "col_name",
    "student": "col_student",
    # the results first: on a laptop's screen they are seen without scrolling
    "test_acc_before": "col_before",
    "test_acc_after": "col_after",
    "source_acc_after": "col_source_after",
    "method": "col_method",
    "rank": "col_rank",
    "alpha": "col_alpha",
    "dora": "col_dora",
    "targets": "col_targets",
    "lr": "col_lr",
    "status": "col_status",
    "trainable_params": "col_trainable",
    "seconds": "col_seconds",
}


def runs_table(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run (records.table_row); with classmates' runs shown, whose each is (the
    names they gave). A setting a method does not have reads "—", not "None"."""
    names = student_names()
    rows = [table_row(r, names.get(r.owner, "")) for r in records]
    table = pd.DataFrame([asdict(row) for row in rows])
    table["method"] = [tr(f"methods.{row.method}") for row in rows]
    table["status"] = [status_label(row.status) for row in rows]
    for setting in ("rank", "alpha", "targets"):  # text: pandas would make None a NaN
        table[setting] = [setting_text(getattr(row, setting)) for row in rows]
    table = table.rename(columns={f: tr(f"compare.{c}") for f, c in TABLE_COLUMNS.items()})
    if all(r.owner == student_id() for r in records):
        table = table.drop(columns=tr("compare.col_student"))
    return table


def setting_text(value: int | float | str | None) -> str:
    """A setting in the table: "—" for one a method does not have, 16 for an alpha of 16.0."""
    if value is None:
        return NO_RANK
    return f"{value:g}" if isinstance(value, float) else str(value)


def accuracy_scatter(
    records: list[RunRecord], x: str, x_values: list, x_range: tuple[float, float], log_x=False
) -> go.Figure:
    """Each run's test accuracy against ``x`` (its axis spans ``x_range``, in decades on a log
    axis): coloured by method, marked by task (two sweeps on two tasks, as in a lesson, stay
    apart), its rank written beside a LoRA run where it covers no other label
    (core.classroom.labels)."""
    frame = pd.DataFrame(
        {
            x: x_values,
            "acc": [r.test_acc_after for r in records],
            "method": [tr(f"methods.{r.config.method}") for r in records],
            "task": [tr(f"shifts.{r.config.shift}.title") for r in records],
            "label": [f"r={r.config.rank}" if r.config.method == "lora" else "" for r in records],
            "name": [for_figure(run_label(r)) for r in records],  # text, not HTML
        }
    )
    fig = px.scatter(
        frame, x=x, y="acc", color="method", symbol="task", text="label", hover_name="name",
        hover_data={"label": False},  # (a label may be merged: place_labels; the name says r)
        log_x=log_x,
    )  # fmt: skip
    fig.update_traces(marker_size=MARKER_PX)
    # accuracy lies in [0, 1]: a fixed axis, not one stretched around a single point to 150%
    fig.update_xaxes(range=list(x_range))
    fig.update_yaxes(title_text=tr("compare.acc_axis"), tickformat=".0%", range=list(ACC_RANGE))
    return fig


def place_labels(fig: go.Figure, x_range: tuple[float, float], log_x: bool) -> None:
    """Write the points' labels where they can be read (core.classroom.labels: one label for points
    on one another, and each label on its own side), from where the points fall in a plot area of
    PLOT_PX pixels, in the figure's font (style's, presenter's too)."""
    (x0, x1), (y0, y1), (width, height) = x_range, ACC_RANGE, PLOT_PX
    size = fig.layout.font.size
    where, points, texts = [], [], []
    for trace in fig.data:
        for index, (x, y, label) in enumerate(zip(trace.x, trace.y, trace.text, strict=True)):
            along = math.log10(x) if log_x else x
            where.append((trace, index))
            points.append(((along - x0) / (x1 - x0) * width, (y - y0) / (y1 - y0) * height))
            texts.append(label)
    texts = labels.merged(points, texts, MARKER_PX)
    widths = [len(text) * CHAR_EM * size for text in texts]
    sides = labels.label_sides(points, widths, 1.2 * size, MARKER_PX, PLOT_PX)
    for trace in fig.data:
        mine = [i for i, (t, _) in enumerate(where) if t is trace]
        trace.text = [texts[i] for i in mine]
        trace.textposition = [sides[i] for i in mine]


def cost_figure(records: list[RunRecord]) -> go.Figure:
    """Test accuracy against trainable parameters (log axis): what each method buys."""
    finished = [r for r in records if r.test_acc_after is not None and r.trainable_params]
    params = [r.trainable_params for r in finished]
    decades = [math.log10(count) for count in params]
    x_range = (min(decades, default=0) - LOG_PAD, max(decades, default=1) + LOG_PAD)
    fig = accuracy_scatter(finished, "params", params, x_range, log_x=True)
    fig.update_xaxes(title_text=tr("compare.trainable_axis"), tickvals=log_ticks(params))
    style(fig, height=400, legend_title_text="")
    place_labels(fig, x_range, log_x=True)
    return fig


def forgetting_figure(records: list[RunRecord]) -> go.Figure | None:
    """Target accuracy against source accuracy (what a run kept of the task its model was
    pretrained on), every method: learning the new task vs forgetting the old one. None when
    no run has a source task."""
    scored = [r for r in records if r.test_acc_after is not None and r.source_acc_after is not None]
    if not scored:
        return None
    x_range = (-0.04, 1.02)
    fig = accuracy_scatter(scored, "source", [r.source_acc_after for r in scored], x_range)
    for before in sorted({r.source_acc_before for r in scored if r.source_acc_before}):
        fig.add_vline(x=before, line_dash="dot", line_color="#9e9e9e")
    fig.update_xaxes(title_text=tr("compare.source_axis"), tickformat=".0%")
    style(fig, height=400, legend_title_text="")
    place_labels(fig, x_range, log_x=False)
    return fig


def curves_figure(chosen: list[RunRecord]) -> go.Figure:
    fig = go.Figure()
    for record in chosen:
        try:
            history = store().get(record.id).history
        except StoreError as error:  # its steps were edited by hand: named, the others drawn
            said(st.warning, tr("common.unreadable_run"), str(error), "error")
            continue
        steps = pd.DataFrame(history).dropna(subset=["val_acc"])
        drawn = len(fig.data)  # the colours in turn, then again dashed
        fig.add_scatter(
            x=steps["step"],
            y=steps["val_acc"],
            name=for_figure(run_label(record)),  # a name is text, not HTML
            mode="lines+markers",
            line_color=CURVE_COLORS[drawn % len(CURVE_COLORS)],
            line_dash=CURVE_DASHES[drawn // len(CURVE_COLORS) % len(CURVE_DASHES)],
        )
    fig.update_xaxes(title_text=tr("train.step"))
    fig.update_yaxes(title_text=tr("train.val_acc"), tickformat=".0%", range=[0, 1.02])
    return style(fig, height=380)


def manage(records: list[RunRecord]) -> None:
    """Rename, delete, or download a run (its adapter in the PEFT format, its curves and σ as
    TensorBoard files): this session's runs only, also when the page shows everyone's."""
    by_id = {record.id: record for record in records if record.owner == student_id()}
    if not by_id:
        st.info(tr("compare.no_own_runs"))
        return
    col_pick, col_name, col_rename = st.columns([3, 3, 1], vertical_alignment="bottom")
    run_id = choice(
        col_pick.selectbox,
        tr("compare.manage_run"),
        list(by_id),
        key("manage"),
        lambda i: run_label(by_id[i]),
    )
    new_name = col_name.text_input(
        tr("compare.new_name"),
        value=by_id[run_id].name,
        max_chars=RUN_NAME_CHARS,
        key=key(f"name.{run_id}"),
    )
    if col_rename.button(tr("compare.rename"), key=key("rename")):
        try:
            store().rename(run_id, new_name)
            st.rerun()
        except ValueError as error:  # empty, too long, control characters
            st.error(refused(error))
        except StoreError as error:
            failed(error)
    col_delete, col_confirm = st.columns([1, 5], vertical_alignment="center")
    # One confirmation per run, gone with its run: a tick never arms Delete for another.
    confirmed = key(f"sure.{run_id}")
    sure = col_confirm.checkbox(tr("compare.confirm_delete"), key=confirmed)
    if col_delete.button(
        tr("compare.delete"), icon=":material/delete:", disabled=not sure, key=key("delete")
    ):
        try:
            store().delete(run_id)  # StoreError for a run still training: stop it first
            del st.session_state[confirmed]  # (a new run may be given this id again)
            st.rerun()
        except StoreError as error:
            failed(error)
    record = by_id[run_id]
    col_peft, col_tensorboard = st.columns(2)
    if record.config.method == "lora" and record.has_weights:
        col_peft.download_button(
            tr("compare.peft"),
            data=lambda: export.adapter_zip(store(), run_id),
            file_name=f"lora-lab-run-{run_id}-peft.zip",
            mime="application/zip",
            icon=":material/archive:",
            key=key("peft"),
        )
    else:
        col_peft.caption(tr("compare.no_peft"))
    col_tensorboard.download_button(
        tr("compare.tensorboard"),
        data=lambda: tensorboard_zip(store().get(run_id)),  # built in a temporary folder
        file_name=f"lora-lab-run-{run_id}-tensorboard.zip",
        mime="application/zip",
        icon=":material/monitoring:",
        key=key("tensorboard"),
    )
    col_tensorboard.caption(tr("compare.tensorboard_caption", run=run_id))


def import_section(settings: dict) -> None:
    """Upload a PEFT adapter (LoRA Lab's export, or PEFT's save_pretrained zipped) as a run of
    this session, measured on the sweep's task; then open it on the Spectra page."""
    with st.expander(tr("compare.import_title")):
        st.caption(tr("compare.import_intro"))
        col_file, col_model = st.columns([3, 2])
        upload = col_file.file_uploader(
            tr("compare.import_file"),
            type="zip",
            key=key("upload"),
            max_upload_size=adapters.MAX_ZIP_BYTES // 2**20,
        )
        model = titled_select(
            col_model, "compare.import_model", CHOICES["model"], key("import_model"), "models"
        )
        task = RunConfig(
            model=model, dataset=settings["dataset"], shift=settings["shift"], seed=settings["seed"]
        )
        title = f"{tr(f'datasets.{task.dataset}.title')} · {tr(f'shifts.{task.shift}.title')}"
        st.caption(tr("compare.import_task", task=title))
        if st.button(tr("compare.import"), disabled=upload is None, key=key("import")):
            try:
                with st.spinner(tr("compare.importing")):
                    run_id = adapters.import_adapter(
                        upload.getvalue(), task, store(), student_id(), upload.name
                    )
                st.session_state[key("imported")] = run_id
                st.rerun()  # the new run joins the charts and the table above
            except (ValueError, StoreError, OfflineError) as error:  # names the zip's entries
                said(st.error, tr("compare.import_failed"), str(error), "error")
    # Outside the expander: it may be drawn closed after the rerun.
    if imported := st.session_state.get(key("imported")):
        st.success(tr("compare.imported", run=imported))
        st.page_link(
            "app_pages/spectra.py",
            label=tr("compare.open_spectra"),
            icon=":material/insights:",
            query_params={"run": str(imported)},
        )


def runs_section(records: list[RunRecord]) -> None:
    """The runs: accuracy against cost, learning curves, the table, and managing one run."""
    st.subheader(tr("compare.cost_title"))
    st.plotly_chart(cost_figure(records), width="stretch")
    st.caption(tr("compare.cost_caption"))

    st.subheader(tr("compare.forgetting_title"))
    forgetting = forgetting_figure(records)
    if forgetting is None:
        st.info(tr("compare.no_source"))
    else:
        st.plotly_chart(forgetting, width="stretch")
        st.caption(tr("compare.forgetting_caption"))
        if any(r.config.shift == "label-permute" for r in records):
            st.caption(tr("compare.forgetting_renamed"))
        heads = [head_trains(r.config) for r in records if r.source_acc_after is not None]
        trained = sum(heads)
        st.caption(
            tr(
                "compare.forgetting_heads",
                trained=trained,
                frozen=len(heads) - trained,
                total=len(heads),
            )
        )

    st.subheader(tr("compare.curves_title"))
    by_id = {str(record.id): record for record in records}
    st.session_state[key("runs")] = [i for i in st.session_state[key("runs")] if i in by_id]
    chosen = st.session_state[key("runs")]
    if show("runs"):
        chosen = choice(
            st.multiselect,
            tr("compare.curves_runs"),
            list(by_id),
            key("runs"),
            lambda i: run_label(by_id[i]),
            placeholder=tr("compare.curves_placeholder"),
        )
    if chosen:
        st.plotly_chart(curves_figure([by_id[i] for i in chosen]), width="stretch")

    st.subheader(tr("compare.table_title"))
    table = runs_table(records)
    in_percent = table.copy()  # accuracies as percentages, all with one decimal: 68.0%, 37.6%
    accuracy_columns = ("col_before", "col_after", "col_source_after")
    for column in (tr(f"compare.{name}") for name in accuracy_columns):
        in_percent[column] = in_percent[column] * 100
    percent = st.column_config.NumberColumn(format="%.1f%%")
    st.dataframe(
        in_percent,
        hide_index=True,
        width="stretch",
        column_config={
            "id": st.column_config.NumberColumn(format="plain"),
            tr("compare.col_before"): percent,
            tr("compare.col_after"): percent,
            tr("compare.col_source_after"): percent,
            tr("compare.col_lr"): st.column_config.NumberColumn(format="%g"),
            tr("compare.col_trainable"): st.column_config.NumberColumn(format="localized"),
            tr("compare.col_seconds"): st.column_config.NumberColumn(format="%.1f"),
        },
    )
    st.download_button(
        tr("compare.csv"),
        table.to_csv(index=False),
        file_name="lora-lab-runs.csv",
        mime="text/csv",
        icon=":material/download:",
        key=key("csv"),
    )
    with st.expander(tr("compare.manage_title")):
        try:
            manage(records)
        except StoreError as error:
            failed(error)


# ----------------------------------------------------------------------------- the page

st.title(tr("compare.title"))
st.markdown(tr("compare.intro"))
load_settings(PAGE, DEFAULTS, CHOICES)
fixed_by_link(PAGE)

with st.container(border=True):
    st.subheader(tr("compare.sweep_title"))
    sweep_settings()
    settings = {name: st.session_state[key(name)] for name in DEFAULTS}
    configs = links.compare_configs(settings, default_targets(settings["model"]))
    count = "compare.sweep_count_one" if len(configs) == 1 else "compare.sweep_count"
    st.caption(tr(count, runs=len(configs)))
    busy = any(not job.done for job in st.session_state.get(key("jobs"), []))
    if st.button(
        tr("compare.launch"),
        type="primary",
        icon=":material/play_arrow:",
        key=key("launch"),
        disabled=busy or not configs,
    ):
        launch(configs)
    st.fragment(
        sweep_progress, run_every=POLL_SECONDS if st.session_state.get(key("polling")) else None
    )()

exercise_link(PAGE, settings, key("exercise"), "exercise.intro")

everyone = st.session_state[key("everyone")]
if show("everyone"):
    everyone = st.toggle(tr("common.everyone"), key=key("everyone"), persist_state="session")
records, _ = visible_runs(everyone)  # (it names the runs it cannot read)
if records:
    runs_section(records)
else:
    st.info(tr("compare.no_runs"))
import_section(settings)
save_settings(PAGE, DEFAULTS)
