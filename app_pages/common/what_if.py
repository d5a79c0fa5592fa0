"""The Spectra page's "What if…?": a saved run changed after training (its rank cut, its intruder
dimensions scaled, one layer's update switched off), each computed once its expander opens, once
per run (core.analyses.whatif), and read aloud by core.classroom.spectra_view."""

from typing import Any

import streamlit as st

from app_pages.common.session import failed, store, tr
from app_pages.figures import spectra as figures
from core.analyses import whatif
from core.classroom import spectra_view
from core.common.paths import OfflineError
from core.store.records import RunRecord
from core.store.runs import StoreError
from core.training import data, measure
from core.training.kinds import Metric

PAGE = "spectra"  # the page whose session state holds the expanders and the λ slider


def key(name: str) -> str:
    return f"{PAGE}.{name}"


@st.cache_data(show_spinner=False, max_entries=32)
def truncation(run_id: int, store_path: str) -> whatif.TruncationCurve:
    """whatif.truncation_curve of a saved run, once per run (a few seconds on a CPU)."""
    return whatif.truncation_curve(measure.open_run(run_id, store()))


@st.cache_data(show_spinner=False, max_entries=32)
def intruders(run_id: int, store_path: str) -> whatif.IntruderCurve:
    """whatif.intruder_curve on the slider's λ grid, once per run: the slider only picks."""
    return whatif.intruder_curve(measure.open_run(run_id, store()), whatif.SLIDER_LAMBDAS)


@st.cache_data(show_spinner=False, max_entries=32)
def importance(run_id: int, store_path: str) -> whatif.LayerImportance:
    """whatif.layer_importance of a saved run, once per run."""
    return whatif.layer_importance(measure.open_run(run_id, store()))


def measured(compute, run_id: int) -> Any:
    """One of the cached what-if computations, with a spinner; its error as one message."""
    try:
        with st.spinner(tr("spectra.computing")):
            return compute(run_id, str(store().path))
    except (ValueError, StoreError, OfflineError) as error:
        failed(error)
        return None


def cut_section(record: RunRecord, curve: whatif.TruncationCurve) -> None:
    st.plotly_chart(figures.truncation_figure(curve), width="stretch")
    st.caption(spectra_view.zero_cut(curve).said(tr))
    st.markdown(spectra_view.truncation_sentence(curve).said(tr))
    if record.config.method != "lora":
        st.caption(tr("spectra.cut_full"))
    if curve.dora:
        st.caption(tr("spectra.cut_dora"))


def intruders_section(record: RunRecord, curve: whatif.IntruderCurve) -> None:
    if curve.intruders == 0:
        st.info(tr("spectra.intruders_none"))
        return
    st.caption(tr("spectra.intruders_count", layers=spectra_view.intruder_counts(curve)))
    lam = st.select_slider(
        tr("spectra.lambda"),
        list(whatif.SLIDER_LAMBDAS),
        value=1.0,
        key=key("lambda"),
        format_func=lambda value: f"{value:.1f}",
    )
    for column, metric in zip(st.columns(2), spectra_view.lambda_metrics(curve, lam), strict=True):
        if metric.value is None:  # the zoo model was pretrained on no task of ours
            column.info(tr("spectra.no_source"))
        else:  # st.metric colours the change from λ = 1 (None: none to show)
            change = spectra_view.said(metric.change, tr)
            colour = "inverse" if metric.lower_is_better else "normal"  # fewer bits: green
            column.metric(metric.label.said(tr), metric.value, delta=change, delta_color=colour)
    st.plotly_chart(figures.intruder_figure(curve, lam), width="stretch")
    st.caption(tr("spectra.intruders_caption", metric=measure_name(curve.metric)))


def layers_section(record: RunRecord, report: whatif.LayerImportance) -> None:
    st.plotly_chart(figures.importance_figure(report), width="stretch")
    ratio = st.column_config.NumberColumn(format="%.3f")
    lost = st.column_config.NumberColumn(format="%.1f" if report.metric.percent else "%.3f")
    st.dataframe(
        figures.importance_table(report),
        hide_index=True,
        width="stretch",
        column_config={
            tr("spectra.col_fro"): ratio,
            tr("spectra.col_spectral"): ratio,
            tr(f"spectra.col_lost_{report.metric.field}"): lost,
        },
    )
    st.caption(spectra_view.importance_caption(report).said(tr))


# expander key → (its title, what it says first, what it computes, what it draws of that):
# each computes only once opened
WHAT_IF = {
    "open_cut": ("spectra.cut_title", "spectra.cut_intro", truncation, cut_section),
    "open_intruders": (
        "spectra.intruders_title",
        "spectra.intruders_intro",
        intruders,
        intruders_section,
    ),
    "open_layers": ("spectra.layers_title", "spectra.layers_intro", importance, layers_section),
}


def measure_name(metric: Metric) -> str:
    """What the what-ifs measure, as their sentences name it: "the test accuracy"."""
    return tr(f"spectra.measure_{metric.field}")


def what_if_section(record: RunRecord) -> None:
    metric = measure_name(data.kind_of(record.config.dataset).metric)
    st.subheader(tr("spectra.whatif_title"))
    st.markdown(tr("spectra.whatif_intro", metric=metric))
    for name, (title, intro, compute, draw) in WHAT_IF.items():
        section = st.expander(tr(title), key=key(name), on_change="rerun")
        if section.open:
            with section:
                st.markdown(tr(intro, metric=metric))
                result = measured(compute, record.id)
                if result is not None:
                    draw(record, result)
