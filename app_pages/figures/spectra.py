"""The Spectra page's figures and tables: a layer's three spectra, its update through
training, the heatmaps, and the what-if curves, drawn from core's typed results
(core.analyses.layer_reports, core.analyses.whatif) in the session's language."""

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app_pages.common import log_ticks, style, tr
from core.analyses import layer_reports, whatif
from core.classroom import spectra_view
from core.lowrank import spectrum
from core.training.kinds import Metric

HEATMAP_MAX = 256  # larger ΔW are shown with every n-th row/column, or a browser would choke
MARK = "#555555"  # the dashed line that marks the chosen step or λ on a curve
RUN_COLOR, BASE_COLOR, SOURCE_COLOR = "#e4572e", "#9e9e9e", "#2e86ab"


def spectrum_figure(report: layer_reports.LayerReport, normalised: bool) -> go.Figure:
    """σ of W0, ΔW and W0+ΔW on one log axis: how big the update is next to the weight. σ at
    rounding level (layer_reports.spectrum_plot) do not set the axis: they sit on its floor."""
    plot = layer_reports.spectrum_plot(report, normalised)
    fig = go.Figure()
    lines = (  # W0 wide and grey underneath, so that W0 + ΔW shows where it leaves it
        ("sigma_W0", "W₀", {"color": "#9e9e9e", "width": 7}),
        ("sigma_W", "W₀ + ΔW", {"color": "#e4572e", "width": 2}),
        ("sigma_delta_W", "ΔW", {"color": "#7c4dff", "width": 3}),
    )
    for name, label, line in lines:
        sigma = plot.resolved[name]
        mode = "lines+markers" if name == "sigma_delta_W" else "lines"
        fig.add_scatter(x=list(range(1, len(sigma) + 1)), y=sigma, name=label, mode=mode, line=line)
        if plot.rounding[name]:
            fig.add_scatter(
                x=list(range(len(sigma) + 1, len(sigma) + plot.rounding[name] + 1)),
                y=[plot.axis.floor] * plot.rounding[name],
                name=tr("spectra.rounding", name=label, count=plot.rounding[name]),
                mode="markers",
                marker={"color": line["color"], "symbol": "line-ns-open", "size": 7},
            )
    longest = max(len(getattr(report, name)) for name, _, _ in lines)
    fig.update_xaxes(title_text=tr("spectra.index"), type="log", tickvals=log_ticks([1, longest]))
    fig.update_yaxes(
        title_text=tr("spectra.sigma_norm" if normalised else "spectra.sigma"),
        type="log",
        tickvals=log_ticks([plot.axis.low, plot.axis.high]),
        range=plot.axis.log_range(0.2),
    )
    return style(fig, height=380)


def metrics_table(report: dict[str, layer_reports.LayerReport]) -> pd.DataFrame:
    """One row per layer, one column per number of its LayerReport (column title → field)."""
    rows = {
        tr("spectra.effective_rank"): "effective_rank",
        tr("spectra.stable_rank"): "stable_rank",
        tr("spectra.energy"): "energy_top_k",
        tr("spectra.numerical_rank"): "numerical_rank",
        tr("spectra.amplification"): "amplification",
        tr("spectra.amplification_random"): "amplification_random",
        tr("spectra.intruders"): "intruders",
        tr("spectra.relative_norm_fro"): "relative_norm_fro",
        tr("spectra.relative_norm_spectral"): "relative_norm_spectral",
    }
    table = {tr("spectra.layer"): list(report)}
    for label, name in rows.items():
        table[label] = [getattr(layer, name) for layer in report.values()]
    return pd.DataFrame(table)


def metric_formats() -> dict[str, str]:
    """metrics_table's column title → how its numbers are written."""
    ratios = (
        "effective_rank",
        "stable_rank",
        "amplification",
        "amplification_random",
        "relative_norm_fro",
        "relative_norm_spectral",
    )
    return {
        tr("spectra.energy"): "{:.1%}",
        **{tr(f"spectra.{name}"): "{:.2f}" for name in ratios},
    }


def evolution_figure(evolution: layer_reports.SpectrumEvolution, index: int) -> go.Figure:
    """σ of ΔW at the chosen snapshot (the page's step slider picks `index`), on an axis that
    holds every snapshot's σ above rounding level (spectrum.SigmaAxis), so that playing the steps
    (play_step) shows them grow; a bar at rounding level does not reach the axis."""
    steps, sigmas = evolution.steps, evolution.sigma
    axis = spectrum.SigmaAxis.of(spectrum.resolved(s, evolution.shape) for s in sigmas)
    sigma = sigmas[index]
    fig = go.Figure(go.Bar(x=list(range(1, len(sigma) + 1)), y=sigma, marker_color="#7c4dff"))
    fig.update_layout(
        title={"text": tr("spectra.sigma_at", step=steps[index]), "font": {"size": 15}}
    )
    fig.update_xaxes(title_text=tr("spectra.index"), dtick=1)
    fig.update_yaxes(
        type="log",
        tickvals=log_ticks([axis.low, axis.high]),
        range=axis.log_range(0.3),
        title_text="σᵢ(ΔW)",
    )
    return style(fig, height=360, margin={"l": 10, "r": 10, "t": 50, "b": 40})


def curves_figure(history: list[dict], step: int, metric: Metric) -> go.Figure:
    """The run's loss (top) and its validation score by the task's metric (bottom: accuracy,
    or bits per character) against the step, with the chosen snapshot's step marked: clicking a
    point picks a moment (the page's pick_moment)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    trained = [row for row in history if row["train_loss"] is not None]
    evaluated = [row for row in history if row.get(metric.validation) is not None]
    lines = (  # the rows, the column, its name, how drawn, in which plot, its colour
        (trained, "train_loss", "train.train_loss", "lines", 1, None),
        (evaluated, "val_loss", "train.val_loss", "lines+markers", 1, None),
        (evaluated, metric.validation, metric.curve, "lines+markers", 2, "#2ca02c"),
    )
    for rows, column, name, mode, plot, color in lines:
        fig.add_scatter(
            x=[row["step"] for row in rows],
            y=[row[column] for row in rows],
            name=tr(name),
            mode=mode,
            line_color=color,
            row=plot,
            col=1,
        )
    fig.add_vline(x=step, line_dash="dash", line_color=MARK, row="all", col=1)
    fig.update_yaxes(title_text=tr("train.loss"), row=1, col=1)
    fig.update_yaxes(
        title_text=tr(f"spectra.{metric.field}_short"), tickformat=metric.tickformat, row=2, col=1
    )
    fig.update_xaxes(title_text=tr("spectra.step"), row=2, col=1)
    return style(fig, height=440)


# DoRA's two numbers, each with its colour and its own y axis: ΔM left, ΔD right.
DORA_CURVES = (("delta_M", "ΔM", "#e4572e", "y"), ("delta_D", "ΔD", "#2e86ab", "y2"))


def dora_figure(evolution: layer_reports.SpectrumEvolution, step: int) -> go.Figure:
    """ΔM and ΔD of one layer at every snapshot (DoRA paper's view), each on its own axis:
    ΔM is in the weight's units, ΔD a 1 − cos in [0, 2]. The chosen step is marked."""
    fig = go.Figure()
    fig.add_vline(x=step, line_dash="dash", line_color=MARK)
    axes = {}
    for field, symbol, color, axis in DORA_CURVES:
        fig.add_scatter(
            x=evolution.steps,
            y=getattr(evolution, field),
            name=tr(f"spectra.{field}"),
            mode="lines+markers",
            line_color=color,
            yaxis=axis,
        )
        axes[axis.replace("y", "yaxis")] = {
            "title": {"text": symbol, "font": {"color": color}},
            "rangemode": "tozero",
            "tickformat": ".2~g",
        }
    axes["yaxis2"] |= {"overlaying": "y", "side": "right", "tickmode": "auto", "showgrid": False}
    fig.update_xaxes(title_text=tr("spectra.step"))
    fig.update_layout(**axes)
    return style(fig, height=320)


def heatmap(matrix: Any, title: str) -> go.Figure:
    """A matrix (a 2-D numpy array, from a tensor's .numpy()), red above 0 and blue below."""
    row_step = max(1, matrix.shape[0] // HEATMAP_MAX)
    col_step = max(1, matrix.shape[1] // HEATMAP_MAX)
    sampled = matrix[::row_step, ::col_step]
    limit = float(abs(sampled).max()) or 1.0
    rows = list(range(0, matrix.shape[0], row_step))
    cols = list(range(0, matrix.shape[1], col_step))
    fig = go.Figure(
        go.Heatmap(z=sampled, x=cols, y=rows, colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit)
    )
    fig.update_yaxes(autorange="reversed", title_text=tr("spectra.outputs"))
    fig.update_xaxes(title_text=tr("spectra.inputs"))
    return style(fig, height=380, title=title)


def similarity_figure(grid: list[list[float]], other_name: str) -> go.Figure:
    """φ(i, j) between this run's top i and the other run's top j directions (0 to 1)."""
    n1, n2 = len(grid), len(grid[0])
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(1, n2 + 1)),
            y=list(range(1, n1 + 1)),
            colorscale="Viridis",
            zmin=0,
            zmax=1,
        )
    )
    fig.update_xaxes(title_text=tr("spectra.j_other", name=other_name), dtick=1)
    fig.update_yaxes(title_text=tr("spectra.i_this"), dtick=1, autorange="reversed")
    return style(fig, height=380)


def score_lines(fig: go.Figure, metric: Metric, run_score: float, base_score: float) -> None:
    """The untouched run and the base model as horizontal lines, named at the right end."""
    for value, name, color, dash in (
        (run_score, tr("spectra.run_line"), RUN_COLOR, "dash"),
        (base_score, tr("spectra.base_line"), BASE_COLOR, "dot"),
    ):
        fig.add_hline(
            y=value,
            line_dash=dash,
            line_color=color,
            annotation_text=f"{name} {metric.written(value)}",
            annotation_position="top left",  # the curve reaches the run's line at the right
            annotation_font_color=color,
        )


def score_axis(fig: go.Figure, metric: Metric) -> None:
    """The y axis of a what-if's score, on the new task and the pretraining one alike: the
    metric's name (bits say lower is better) and format; accuracy on its whole range [0, 1],
    bits around the values drawn (an edit changes them by hundredths of a bit, which 0 to 7
    bits would flatten)."""
    axis_range = list(metric.axis_range) if metric.percent else None
    title = tr(f"spectra.axis_{metric.field}")
    fig.update_yaxes(title_text=title, tickformat=metric.tickformat, range=axis_range)


def truncation_figure(curve: whatif.TruncationCurve) -> go.Figure:
    """The test score against k (each layer's ΔW cut to its top k directions), on a doubling
    axis, with the run and the base model as lines and the reading's k marked."""
    ks = [point.k for point in curve.truncation]
    fig = go.Figure()
    fig.add_scatter(
        x=[str(k) for k in ks],
        y=[point.score for point in curve.truncation],
        name=tr("spectra.cut_curve"),
        mode="lines+markers",
        line_color="#7c4dff",
        marker_size=9,
    )
    if curve.rank_used is not None:
        used = ks.index(curve.rank_used)
        within = spectra_view.margin(curve.metric).said(tr)
        fig.add_scatter(
            x=[str(ks[used])],
            y=[curve.truncation[used].score],
            name=tr("spectra.cut_used", k=ks[used], within=within),
            mode="markers",
            marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": RUN_COLOR, "width": 3}},
        )
    score_lines(fig, curve.metric, curve.run_score, curve.base_score)
    fig.update_xaxes(title_text=tr("spectra.cut_axis"), type="category")
    score_axis(fig, curve.metric)
    return style(fig, height=380)


def intruder_figure(curve: whatif.IntruderCurve, lam: float) -> go.Figure:
    """Target and source-task score against λ, the chosen λ marked; the base model's score on
    each task as a dotted line of its colour."""
    lambdas = [point.lam for point in curve.points]
    fig = go.Figure()
    tasks = [("target", tr("spectra.target_task"), RUN_COLOR)]
    if curve.base.source is not None:
        tasks.append(("source", tr("spectra.source_task"), SOURCE_COLOR))
    for task, label, color in tasks:  # a field of whatif.TaskScore
        base = getattr(curve.base, task)
        fig.add_scatter(
            x=lambdas,
            y=[getattr(point.score, task) for point in curve.points],
            name=label,
            mode="lines+markers",
            line_color=color,
        )
        fig.add_hline(
            y=base,
            line_dash="dot",
            line_color=color,
            annotation_text=tr("spectra.base_line") + f" {curve.metric.written(base)}",
            annotation_position="top left",  # the chosen λ's line is often at the right
            annotation_font_color=color,
        )
    fig.add_vline(x=lam, line_dash="dash", line_color=MARK)
    fig.update_xaxes(title_text=tr("spectra.lambda_axis"), dtick=0.1, range=[-0.03, 1.03])
    score_axis(fig, curve.metric)
    return style(fig, height=360)


def importance_figure(report: whatif.LayerImportance) -> go.Figure:
    """How much worse the run gets without each layer's update (points of accuracy, bits per
    character), one bar per layer in the model's order."""
    rows, metric = report.layers, report.metric
    fig = go.Figure(
        go.Bar(
            x=[row.layer for row in rows],
            y=[metric.units(row.lost) for row in rows],
            marker_color=[RUN_COLOR if row.kind == "adapter" else BASE_COLOR for row in rows],
            text=[f"{metric.units(row.lost):+.{1 if metric.percent else 3}f}" for row in rows],
            textposition="outside",
        )
    )
    fig.update_xaxes(title_text=tr("spectra.layer"), type="category")
    fig.update_yaxes(title_text=tr(f"spectra.lost_axis_{metric.field}"), zeroline=True)
    return style(fig, height=360, showlegend=False)


def importance_table(report: whatif.LayerImportance) -> pd.DataFrame:
    """One row per changed weight matrix: its kind, shape, relative size and what removing it
    costs (points of accuracy, bits per character)."""
    rows, metric = report.layers, report.metric
    return pd.DataFrame(
        {
            tr("spectra.layer"): [row.layer for row in rows],
            tr("spectra.col_kind"): [tr(f"spectra.kind_{row.kind}") for row in rows],
            "d × k": [" × ".join(map(str, row.shape)) for row in rows],
            tr("spectra.col_fro"): [row.relative_frobenius for row in rows],
            tr("spectra.col_spectral"): [row.relative_spectral for row in rows],
            tr(f"spectra.col_lost_{metric.field}"): [metric.units(row.lost) for row in rows],
        }
    )
