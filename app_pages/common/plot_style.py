"""How figures look: the projector layout, presenter mode's larger text, a log axis' ticks."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app_pages.common.session import presenter

PRESENTER_SCALE = 1.4  # figures' heights and fonts in presenter mode
FIGURE_FONT = 15  # px, a figure's text outside presenter mode
PRESENTER_CSS = """<style>
html { font-size: 20px; }  /* Streamlit sizes text in rem: everything grows with it */
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.1rem; }
/* a metric's value is Markdown too: it keeps its own (larger) size, grown with the rem */
[data-testid="stMetricValue"] [data-testid="stMarkdownContainer"] p { font-size: inherit; }
</style>"""


def presenter_style() -> None:
    """In presenter mode, larger text everywhere (called by app.py on every page)."""
    if presenter():
        st.html(PRESENTER_CSS)


PROJECTOR_LAYOUT = {  # large readable text and tight margins: figures are shown on projectors
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "font": {"size": FIGURE_FONT},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
}


def style(fig: go.Figure, height: int = 360, **layout: Any) -> go.Figure:
    """The projector layout on a figure (``layout`` may use plotly's ``a_b`` shorthands). In
    presenter mode the figure is taller and every text in it larger, the axes' ticks and titles
    too (Streamlit's plotly theme sizes those itself otherwise)."""
    scale = PRESENTER_SCALE if presenter() else 1.0
    size = round(FIGURE_FONT * scale)
    fig.update_layout(
        height=round(height * scale), **(PROJECTOR_LAYOUT | {"font": {"size": size}} | layout)
    )
    if presenter():
        for update in (fig.update_xaxes, fig.update_yaxes):
            update(tickfont={"size": size}, title_font={"size": size})
        fig.update_layout(legend_font_size=size)
    return fig


def figure_layout(height: int, **layout: Any) -> dict[str, Any]:
    """The projector layout as a plain dict, for figures built as dicts (no plotly objects:
    the live view builds them at every new event, where plotly's validation would cost)."""
    return {"height": height, **PROJECTOR_LAYOUT, **layout}


def log_ticks(values) -> list[float]:
    """1, 2, 5, 10, 20, 50, … within the range of ``values``: readable labels on a log axis."""
    positive = [v for v in values if v > 0]
    if not positive:
        return []
    low, high = min(positive) / 2, max(positive) * 2  # some room: one value still gets ticks
    ticks, decade = [], 10.0 ** math.floor(math.log10(low))
    while decade <= high:
        ticks += [m * decade for m in (1, 2, 5) if low <= m * decade <= high]
        decade *= 10
    return ticks


# ----------------------------------------------------------------------------- example images
