"""The Train page's figures: a run's live curves (loss, its kind's metrics, σ(ΔW)) and the table
of layers an adapter can take."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages.common import figure_layout, log_ticks, tr
from core.classroom import live
from core.classroom.i18n import catalog
from core.lowrank.targets import EligibleLayer
from core.training.kinds import Metric


@st.cache_resource(show_spinner=False, max_entries=512)
def live_figures(
    run: int, version: int, lang: str, planned: int, metrics: tuple[Metric, ...], _frame: live.Frame
) -> dict[str, go.Figure]:
    """The run's loss, `metrics` and σ(ΔW) figures at one version of its curves, built once and
    shared by every page (and every poll) that shows that version: a poll that finds nothing
    new rebuilds nothing."""
    specs = live.figure_specs(_frame, planned, metrics, catalog(lang), figure_layout, log_ticks)
    return {name: go.Figure(spec) for name, spec in specs.items()}


def layers_table(layers: list[EligibleLayer], picked: list[str], rank: int) -> pd.DataFrame:
    """The layers LoRA can adapt: which are picked, their shape, their largest rank, and what
    adapting each costs at ``rank`` against training it in full."""
    return pd.DataFrame(
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
