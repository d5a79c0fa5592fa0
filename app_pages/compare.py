"""Compare: a rank sweep in one click, accuracy against cost, and the table of runs; an adapter
imported as a run, or any model's adapter file inspected (app_pages/common/inspector.py)."""

import pandas as pd
import streamlit as st

from app_pages.common import (
    choice,
    drawn,
    exercise_link,
    failed,
    fixed_by_link,
    is_teacher,
    load_settings,
    refused,
    run_label,
    said,
    save_settings,
    status_label,
    store,
    student_id,
    student_names,
    task_strip,
    titled_select,
    tr,
    visible_runs,
)
from app_pages.common.inspector import inspect_section
from app_pages.figures.compare import (
    cost_figure,
    curves_figure,
    forgetting_figure,
    percent_table,
    result,
    runs_table,
)
from core.analyses.tensorboard_export import tensorboard_zip
from core.classroom import links, sweep_view
from core.common.config import RunConfig
from core.common.paths import OfflineError
from core.common.text import for_markdown
from core.jobs import pool as jobs
from core.jobs.scheduler import Job
from core.store.names import RUN_NAME_CHARS
from core.store.records import RunRecord, of_kind
from core.store.runs import StoreError
from core.training import adapters, export
from core.training.kinds import Metric
from core.training.train import head_trains

PAGE = "compare"
DEFAULTS = links.COMPARE_DEFAULTS
CHOICES = links.COMPARE_CHOICES  # the widgets offer what a link may name
POLL_SECONDS = 1.0


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
    except StoreError as error:  # the queue could not write the sweep down: none of it queued
        failed(error)
        return
    st.rerun()  # the page again, its button disabled until the sweep ends


def sweep_progress() -> None:
    """The sweep's jobs and how far each got; one full rerun when the last one ends."""
    sweep: list[Job] = st.session_state.get(key("jobs"), [])
    if not sweep:
        return
    rows = [
        {
            tr("compare.col_method"): tr(f"methods.{row.method}"),
            tr("compare.col_rank"): row.rank,
            tr("compare.col_lr"): row.lr,
            tr("compare.col_status"): status_label(row.status),
            tr("compare.col_progress"): row.progress,
        }
        for row in sweep_view.rows(sweep)
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            tr("compare.col_progress"): st.column_config.ProgressColumn(min_value=0, max_value=1)
        },
    )
    # Why runs failed (offline weights, a diverging loss), once per reason.
    for reason, configs in sweep_view.failures(sweep).items():
        names = ", ".join(sweep_name(config) for config in configs)
        st.error(tr("compare.sweep_failed", runs=names, reason=for_markdown(reason)))
    if all(job.done for job in sweep) and st.session_state.get(key("polling")):
        st.session_state[key("polling")] = False
        st.rerun()


def sweep_name(config: RunConfig) -> str:
    """A run of the sweep in a sentence: its method, and a LoRA run's rank ("LoRA r=4")."""
    name = tr(f"methods.{config.method}")
    return f"{name} r={config.rank}" if config.method == "lora" else name


# ----------------------------------------------------------------------------- the runs


def curves(chosen: list[RunRecord]) -> list[tuple[RunRecord, list[dict]]]:
    """The chosen runs with their histories; one whose steps were edited by hand is named, the
    others drawn."""
    readable = []
    for record in chosen:
        try:
            readable.append((record, store().get(record.id).history))
        except StoreError as error:
            said(st.warning, tr("common.unreadable_run"), str(error), "error")
    return readable


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


def import_section(form: sweep_view.SweepForm) -> None:
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
        task = form.task(model)
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


def runs_section(records: list[RunRecord], metric: Metric) -> None:
    """The runs: the metric against cost, learning curves, the table, and managing one run."""
    st.subheader(tr(f"compare.cost_title_{metric.field}"))
    st.plotly_chart(cost_figure(records, metric), width="stretch")
    st.caption(tr(f"compare.cost_caption_{metric.field}"))

    st.subheader(tr("compare.forgetting_title"))
    forgetting = forgetting_figure(records, metric)
    if forgetting is None:
        st.info(tr("compare.no_source"))
    else:
        st.plotly_chart(forgetting, width="stretch")
        st.caption(tr(f"compare.forgetting_caption_{metric.field}"))
        if any(r.config.shift == "label-permute" for r in records):
            st.caption(tr("compare.forgetting_renamed"))
        scored = [r for r in records if result(r, metric, "source") is not None]
        heads = [head_trains(r.config) for r in scored]
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
            placeholder=tr(f"compare.curves_placeholder_{metric.field}"),
        )
    if chosen:
        figure = curves_figure(curves([by_id[i] for i in chosen]), metric)
        st.plotly_chart(figure, width="stretch")

    st.subheader(tr("compare.table_title"))
    table = runs_table(records, student_names(), student_id(), metric)
    in_percent, formats = percent_table(table, metric)
    column_config = {name: st.column_config.NumberColumn(format=f) for name, f in formats.items()}
    st.dataframe(in_percent, hide_index=True, width="stretch", column_config=column_config)
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
    form = sweep_view.SweepForm.of(settings)
    configs = form.configs()
    count = "compare.sweep_count_one" if len(configs) == 1 else "compare.sweep_count"
    st.caption(tr(count, runs=len(configs)))
    busy = sweep_view.busy(st.session_state.get(key("jobs"), []))
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
if show("everyone") and is_teacher():
    everyone = st.toggle(tr("common.everyone"), key=key("everyone"), persist_state="session")
records, _ = visible_runs(everyone)  # (it names the runs it cannot read)
# One metric axis holds runs of one kind: the sweep's model picks which (bits per character
# and an accuracy are not one number); the others are counted, and how to see them said.
kind = form.kind
shown = of_kind(records, kind)
for other in sorted({record.kind for record in records} - {kind}):
    hidden = len(of_kind(records, other))
    st.info(tr(f"compare.other_kind_{other}", runs=hidden), icon=":material/filter_alt:")
if shown:
    runs_section(shown, form.metric)
else:
    st.info(tr("compare.no_runs"))
import_section(form)
inspect_section()  # any model's adapter file, read without its model
save_settings(PAGE, DEFAULTS)
