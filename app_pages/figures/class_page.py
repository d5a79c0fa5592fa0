"""The Class page's figure: the class's finished runs as points, for the projector."""

import math

import plotly.express as px
import plotly.graph_objects as go

from app_pages.common import log_ticks, style, tr
from app_pages.figures.compare import LOG_PAD, MARKER_PX, metric_range
from core.classroom.class_view import ClassRun, Student
from core.common.text import for_figure
from core.training.kinds import KINDS


def class_figure(points: list[tuple[Student, ClassRun]], kind: str) -> go.Figure:
    """Each finished run of `kind` (its task's headline metric: accuracy, or bits per
    character) against its trainable parameters (log axis), coloured by method and rank; the
    hover names the student and the run (as text, not HTML)."""
    metric = KINDS[kind].metric
    shown = [(student, run) for student, run in points if run.kind == kind]
    params = [run.trainable_params for _, run in shown]
    fig = px.scatter(
        x=params,
        y=[run.score for _, run in shown],
        color=[run.setting for _, run in shown],
        hover_name=[
            for_figure(f"{student.label} · #{run.run_id} {run.name}") for student, run in shown
        ],
        log_x=True,
    )
    decades = [math.log10(count) for count in params]
    x_range = (min(decades, default=0) - LOG_PAD, max(decades, default=1) + LOG_PAD)
    fig.update_traces(marker_size=MARKER_PX)
    fig.update_xaxes(
        title_text=tr("compare.trainable_axis"), tickvals=log_ticks(params), range=list(x_range)
    )
    fig.update_yaxes(
        title_text=tr(metric.axis), tickformat=metric.tickformat, range=list(metric_range(metric))
    )
    return style(fig, height=420, legend_title_text=tr("class.legend"))
