"""The adapter inspector's figures (the Compare page's "Inspect an adapter"): the σ of one
block's layers, effective rank and σ1/σ2 across the model's depth, and the resize preview.
Layer names come from an uploaded file: every one is shown as text (for_figure)."""

from __future__ import annotations

import math
import re

import plotly.graph_objects as go

from app_pages.common import log_ticks, style, tr
from core.common.text import for_figure
from core.lowrank import spectrum
from core.lowrank.inspection import AdapterInspection, ResizePoint

HEATMAPS = ("effective_rank", "spike")  # LayerInspection fields drawn across depth
SYMBOLS = ("diamond", "square", "triangle-up", "cross", "star")  # the criteria's markers


def spectra_figure(report: AdapterInspection, position: str) -> go.Figure:
    """σ1 … σ_r of each layer at `position` (one block), on the app's σ log axis: only σ above
    rounding level (spectrum.resolved) are drawn."""
    layers = [layer for layer in report.layers if layer.position == position]
    resolved = [spectrum.resolved(layer.sigma, layer.shape) for layer in layers]
    axis = spectrum.SigmaAxis.of(resolved)
    fig = go.Figure()
    for layer, sigma in zip(layers, resolved, strict=True):
        fig.add_scatter(
            x=list(range(1, len(sigma) + 1)),
            y=sigma,
            mode="lines+markers",
            name=for_figure(layer.kind),
            hovertext=for_figure(layer.name),
        )
    longest = max((len(sigma) for sigma in resolved), default=1)
    fig.update_xaxes(title_text=tr("inspect.index"), type="log", tickvals=log_ticks([1, longest]))
    fig.update_yaxes(title_text=tr("inspect.sigma"), type="log", range=axis.log_range(0.2))
    return style(fig, height=340)


def depth_heatmap(report: AdapterInspection, field: str) -> go.Figure:
    """One number per layer (`field`: effective rank, or σ1/σ2 on a log scale) as a grid:
    the kind of layer (q_proj, …) down, its block in file order across."""
    positions, kinds = report.positions(), report.kinds()
    grid: list[list[float | None]] = [[None] * len(positions) for _ in kinds]
    names: list[list[str]] = [[""] * len(positions) for _ in kinds]
    for layer in report.layers:
        row, column = kinds.index(layer.kind), positions.index(layer.position)
        grid[row][column] = _colour(field, getattr(layer, field))
        names[row][column] = for_figure(layer.name)
    title = tr(f"inspect.{field}")
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(len(positions))),
            y=[for_figure(kind) for kind in kinds],
            text=names,
            hovertemplate="%{text}<br>" + title + " %{customdata}<extra></extra>",
            customdata=[
                [None if v is None else f"{10**v if field == 'spike' else v:.3g}" for v in row]
                for row in grid
            ],
            colorscale="Viridis",
            colorbar={"title": {"text": tr(f"inspect.{field}_bar")}},
        )
    )
    numbers = [re.findall(r"\d+", position)[-1:] or [""] for position in positions]
    fig.update_xaxes(
        title_text=tr("inspect.depth"),
        tickvals=list(range(len(positions))),
        ticktext=[for_figure(number[0]) for number in numbers],
    )
    return style(fig, height=120 + 28 * len(kinds), title_text=title)


def _colour(field: str, value: float) -> float | None:
    """A heatmap cell: σ1/σ2 in decades (a spike of 100 stands out from 1.5 and 3 alike),
    none where it is infinite (σ2 = 0)."""
    if not math.isfinite(value):
        return None
    return math.log10(value) if field == "spike" else value


def resize_figure(curve: list[ResizePoint], criteria: list[ResizePoint]) -> go.Figure:
    """The share of ΔW's energy a resize keeps against the ranks it keeps in all: the curve of
    one rank K for every layer, and where each per-layer criterion lands."""
    fig = go.Figure()
    fig.add_scatter(
        x=[p.total_rank for p in curve],
        y=[p.energy for p in curve],
        mode="lines+markers",
        name=tr("inspect.same_rank"),
        hovertext=[p.criterion for p in curve],
    )
    for point, symbol in zip(criteria, SYMBOLS, strict=False):
        fig.add_scatter(  # one trace each: the legend names them, no label covers another
            x=[point.total_rank],
            y=[point.energy],
            mode="markers",
            marker={"size": 13, "symbol": symbol},
            name=point.criterion,
        )
    fig.update_xaxes(title_text=tr("inspect.total_rank_axis"), rangemode="tozero")
    fig.update_yaxes(title_text=tr("inspect.energy"), tickformat=".1%")
    return style(fig, height=340)
