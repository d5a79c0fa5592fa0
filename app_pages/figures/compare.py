"""The Compare page's figures: each run's metric against its cost and against what it kept of its
source task, with labels placed where they can be read, the runs' learning curves, and the
table of runs."""

import math
from dataclasses import asdict

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from app_pages.common import log_ticks, run_label, status_label, style, tr
from core.classroom import labels, sweep_view
from core.common.text import for_figure
from core.store.records import RunRecord, table_row
from core.training.kinds import Metric

LABEL_ROOM = 0.06  # above the metric's axis, for the "r=…" labels
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


def metric_range(metric: Metric) -> tuple[float, float]:
    """The metric's axis with room above it for the points' labels."""
    low, high = metric.axis_range
    return low, round(high + LABEL_ROOM, 6)


def result(record: RunRecord, metric: Metric, split: str = "test", when: str = "after"):
    """A run's `metric` on a split ("test", "source") before or after training; None if not
    measured (a failed run, a model without a source task)."""
    return getattr(record, f"{split}_{metric.field}_{when}")


def metric_scatter(
    records: list[RunRecord],
    metric: Metric,
    x: str,
    x_values: list,
    x_range: tuple[float, float],
    log_x=False,
) -> go.Figure:
    """Each run's test metric against ``x`` (its axis spans ``x_range``, in decades on a log
    axis): coloured by method, marked by task (two sweeps on two tasks, as in a lesson, stay
    apart), its rank written beside a LoRA run where it covers no other label
    (core.classroom.labels). The runs are all of the metric's kind (records.of_kind)."""
    frame = pd.DataFrame(
        {
            x: x_values,
            "acc": [result(r, metric) for r in records],
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
    # a fixed axis, not one stretched around a single point to 150%
    fig.update_xaxes(range=list(x_range))
    fig.update_yaxes(
        title_text=tr(metric.axis), tickformat=metric.tickformat, range=list(metric_range(metric))
    )
    return fig


def place_labels(
    fig: go.Figure, x_range: tuple[float, float], y_range: tuple[float, float], log_x: bool
) -> None:
    """Write the points' labels where they can be read (core.classroom.labels: one label for points
    on one another, and each label on its own side), from where the points fall in a plot area of
    PLOT_PX pixels, in the figure's font (style's, presenter's too)."""
    (x0, x1), (y0, y1), (width, height) = x_range, y_range, PLOT_PX
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


def cost_figure(records: list[RunRecord], metric: Metric) -> go.Figure:
    """Test metric against trainable parameters (log axis): what each method buys."""
    finished = [r for r in records if result(r, metric) is not None and r.trainable_params]
    params = [r.trainable_params for r in finished]
    decades = [math.log10(count) for count in params]
    x_range = (min(decades, default=0) - LOG_PAD, max(decades, default=1) + LOG_PAD)
    fig = metric_scatter(finished, metric, "params", params, x_range, log_x=True)
    fig.update_xaxes(title_text=tr("compare.trainable_axis"), tickvals=log_ticks(params))
    style(fig, height=400, legend_title_text="")
    place_labels(fig, x_range, metric_range(metric), log_x=True)
    return fig


def forgetting_figure(records: list[RunRecord], metric: Metric) -> go.Figure | None:
    """Target metric against source metric (what a run kept of the task its model was
    pretrained on), every method: learning the new task vs forgetting the old one. None when
    no run has a source task."""
    scored = [
        r
        for r in records
        if result(r, metric) is not None and result(r, metric, "source") is not None
    ]
    if not scored:
        return None
    low, high = metric.axis_range
    x_range = (low - 0.04, high)
    kept = [result(r, metric, "source") for r in scored]
    fig = metric_scatter(scored, metric, "source", kept, x_range)
    for before in sorted({result(r, metric, "source", "before") for r in scored} - {None}):
        fig.add_vline(x=before, line_dash="dot", line_color="#9e9e9e")
    axis = tr(f"compare.source_axis_{metric.field}")
    fig.update_xaxes(title_text=axis, tickformat=metric.tickformat)
    style(fig, height=400, legend_title_text="")
    place_labels(fig, x_range, metric_range(metric), log_x=False)
    return fig


def curves_figure(curves: list[tuple[RunRecord, list[dict]]], metric: Metric) -> go.Figure:
    """The validation metric of each (run, history) against its steps."""
    fig = go.Figure()
    column = f"val_{metric.field}"
    for drawn, (record, history) in enumerate(curves):  # the colours in turn, then dashed
        steps = pd.DataFrame(history).dropna(subset=[column])
        fig.add_scatter(
            x=steps["step"],
            y=steps[column],
            name=for_figure(run_label(record)),  # a name is text, not HTML
            mode="lines+markers",
            line_color=CURVE_COLORS[drawn % len(CURVE_COLORS)],
            line_dash=CURVE_DASHES[drawn // len(CURVE_COLORS) % len(CURVE_DASHES)],
        )
    fig.update_xaxes(title_text=tr("train.step"))
    fig.update_yaxes(
        title_text=tr(metric.curve), tickformat=metric.tickformat, range=list(metric.axis_range)
    )
    return style(fig, height=380)


TABLE_COLUMNS = {  # core.store.records.TableRow's fields, and their titles in the catalogs
    "name": "col_name",
    "student": "col_student",
    # the results first: on a laptop's screen they are seen without scrolling
    "before": "col_before",  # of the table's metric: col_before_acc, col_before_bpc
    "after": "col_after",
    "source_after": "col_source_after",
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


def column_titles(metric: Metric) -> dict[str, str]:
    """TableRow's field → its column's title, the results' titles those of `metric`."""
    results = {"col_before", "col_after", "col_source_after"}
    return {
        field: tr(f"compare.{name}_{metric.field}" if name in results else f"compare.{name}")
        for field, name in TABLE_COLUMNS.items()
    }


def runs_table(
    records: list[RunRecord], names: dict[str, str], student: str, metric: Metric
) -> pd.DataFrame:
    """One row per run (core.store.records.table_row), its results by `metric`; with
    classmates' runs shown, whose each is (the ``names`` they gave; ``student``: this
    session's). A setting a method does not have reads "—", not "None"."""
    rows = [table_row(r, names.get(r.owner, ""), metric.field) for r in records]
    table = pd.DataFrame([asdict(row) for row in rows])
    table["method"] = [tr(f"methods.{row.method}") for row in rows]
    table["status"] = [status_label(row.status) for row in rows]
    for setting in ("rank", "alpha", "targets"):  # text: pandas would make None a NaN
        table[setting] = [sweep_view.setting_text(getattr(row, setting)) for row in rows]
    table = table.rename(columns=column_titles(metric))
    if all(r.owner == student for r in records):
        table = table.drop(columns=tr("compare.col_student"))
    return table


RESULT_FIELDS = ("before", "after", "source_after")  # TableRow's results, in the metric's units


def percent_table(table: pd.DataFrame, metric: Metric) -> tuple[pd.DataFrame, dict[str, str]]:
    """The table as drawn, results as percentages all with one decimal (68.0%, 37.6%), or bits
    per character with two (2.31), and each number column's format
    (st.column_config.NumberColumn's)."""
    percent = table.copy()
    formats = {"id": "plain"}
    titles = column_titles(metric)
    for column in (titles[field] for field in RESULT_FIELDS):
        if metric.percent:
            percent[column] = percent[column] * 100
        formats[column] = "%.1f%%" if metric.percent else "%.2f"
    formats |= {
        tr("compare.col_lr"): "%g",
        tr("compare.col_trainable"): "localized",
        tr("compare.col_seconds"): "%.1f",
    }
    return percent, formats
