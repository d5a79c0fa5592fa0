"""Spectra: look inside a finished run, one layer at a time, through singular values."""

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages.common import (
    load_settings,
    log_ticks,
    run_label,
    save_settings,
    store,
    style,
    tr,
    visible_runs,
)
from core import data, links, reports, runs, spectra
from core.runs import StoreError

PAGE = "spectra"
DEFAULTS = links.SPECTRA_DEFAULTS
HEATMAP_MAX = 256  # larger ΔW are shown with every n-th row/column, or a browser would choke


def key(name: str) -> str:
    return f"{PAGE}.{name}"


@st.cache_resource(show_spinner=False, max_entries=8)
def run_models(run_id: int, store_path: str):
    """(base, trained model) of a run, loaded once; nothing here modifies them."""
    return store().load_run_model(run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def run_report(run_id: int, store_path: str) -> dict[str, dict]:
    return spectra.model_report(*run_models(run_id, store_path))


@st.cache_data(show_spinner=False, max_entries=256)
def changed_layers(run_id: int, store_path: str) -> list[str]:
    """The layers a run changed (cheap to keep: names only; the models are not cached here,
    so listing many runs does not push the open run's models out of run_models' cache)."""
    return list(spectra.layer_updates(*store().load_run_model(run_id)))


def layer_update(run_id: int, layer: str) -> spectra.LayerUpdate | None:
    return spectra.layer_updates(*run_models(run_id, str(store().path))).get(layer)


def spectrum_figure(report: dict, normalised: bool) -> go.Figure:
    """σ of W0, ΔW and W0+ΔW on one log axis: how big the update is next to the weight."""
    fig = go.Figure()
    shown = []
    lines = (  # W0 wide and grey underneath, so that W0 + ΔW shows where it leaves it
        ("sigma_W0", "W₀", {"color": "#9e9e9e", "width": 7}),
        ("sigma_W", "W₀ + ΔW", {"color": "#e4572e", "width": 2}),
        ("sigma_delta_W", "ΔW", {"color": "#7c4dff", "width": 3}),
    )
    for name, label, line in lines:
        sigma = [value for value in report[name] if value > 0]  # a log axis has no 0
        if normalised and sigma:
            sigma = [value / sigma[0] for value in sigma]
        shown += sigma
        mode = "lines+markers" if name == "sigma_delta_W" else "lines"
        x = list(range(1, len(sigma) + 1))
        fig.add_scatter(x=x, y=sigma, name=label, mode=mode, line=line)
    longest = max(len(report[name]) for name, _, _ in lines)
    fig.update_xaxes(title_text=tr("spectra.index"), type="log", tickvals=log_ticks([1, longest]))
    fig.update_yaxes(
        title_text=tr("spectra.sigma_norm" if normalised else "spectra.sigma"),
        type="log",
        tickvals=log_ticks(shown),
    )
    return style(fig, height=380)


def metrics_table(report: dict[str, dict]) -> pd.DataFrame:
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
        table[label] = [layer[name] for layer in report.values()]
    return pd.DataFrame(table)


def evolution_figure(evolution: dict) -> go.Figure:
    """σ of ΔW at every snapshot, as an animation with a play button and a slider."""
    steps, sigmas = evolution["steps"], evolution["sigma"]
    top = max((max(s) for s in sigmas if s), default=1.0)
    low = min((min(v for v in s if v > 0) for s in sigmas if any(v > 0 for v in s)), default=1e-6)

    def bars(sigma: list[float]) -> go.Bar:
        return go.Bar(x=list(range(1, len(sigma) + 1)), y=sigma, marker_color="#7c4dff")

    frames = [
        go.Frame(data=[bars(s)], name=str(step)) for step, s in zip(steps, sigmas, strict=True)
    ]
    fig = go.Figure(data=[bars(sigmas[-1])], frames=frames)
    slider_steps = [
        {
            "label": str(step),
            "method": "animate",
            "args": [[str(step)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
        }
        for step in steps
    ]
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "x": 0,
                "y": -0.2,
                "xanchor": "left",
                "yanchor": "top",
                "showactive": False,
                "buttons": [
                    {
                        "label": "▶ " + tr("spectra.play"),
                        "method": "animate",
                        "args": [
                            None,
                            {"frame": {"duration": 300, "redraw": True}, "fromcurrent": False},
                        ],
                    }
                ],
            }
        ],
        sliders=[
            {
                "active": len(steps) - 1,
                "steps": slider_steps,
                "x": 0.22,
                "len": 0.78,
                "y": -0.12,
                "currentvalue": {"prefix": tr("spectra.step") + " ", "xanchor": "right"},
            }
        ],
    )
    fig.update_xaxes(title_text=tr("spectra.index"), dtick=1)
    fig.update_yaxes(
        type="log",
        tickvals=log_ticks([low, top]),
        range=[math.log10(low) - 0.3, math.log10(top) + 0.3],
        title_text="σᵢ(ΔW)",
    )
    return style(fig, height=420, margin={"l": 10, "r": 10, "t": 40, "b": 110})


def dora_figure(evolution: dict) -> go.Figure:
    """ΔM and ΔD of one layer at every snapshot (DoRA paper's view), each on its own axis:
    ΔM is in the weight's units, ΔD a 1 − cos in [0, 2]."""
    fig = go.Figure()
    fig.add_scatter(
        x=evolution["steps"],
        y=evolution["delta_M"],
        name=tr("spectra.delta_M"),
        mode="lines+markers",
        line_color="#e4572e",
    )
    fig.add_scatter(
        x=evolution["steps"],
        y=evolution["delta_D"],
        name=tr("spectra.delta_D"),
        mode="lines+markers",
        line_color="#2e86ab",
        yaxis="y2",
    )
    fig.update_xaxes(title_text=tr("spectra.step"))
    fig.update_layout(
        yaxis={
            "title": {"text": "ΔM", "font": {"color": "#e4572e"}},
            "rangemode": "tozero",
            "tickformat": ".2~g",
        },
        yaxis2={
            "title": {"text": "ΔD", "font": {"color": "#2e86ab"}},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "tickmode": "auto",
            "tickformat": ".2~g",
            "showgrid": False,
        },
    )
    return style(fig, height=320)


def heatmap(matrix: Any, title: str) -> go.Figure:
    """A matrix (a 2-D numpy array, from a tensor's .numpy()), red above 0 and blue below."""
    row_step = max(1, matrix.shape[0] // HEATMAP_MAX)
    col_step = max(1, matrix.shape[1] // HEATMAP_MAX)
    shown = matrix[::row_step, ::col_step]
    limit = float(abs(shown).max()) or 1.0
    rows = list(range(0, matrix.shape[0], row_step))
    cols = list(range(0, matrix.shape[1], col_step))
    fig = go.Figure(
        go.Heatmap(z=shown, x=cols, y=rows, colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit)
    )
    fig.update_yaxes(autorange="reversed", title_text=tr("spectra.outputs"))
    fig.update_xaxes(title_text=tr("spectra.inputs"))
    return style(fig, height=380, title=title)


def similarity_figure(grid: list[list[float]], other_name: str) -> go.Figure:
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


def compare_runs(run_id: int, other_id: int, layer: str, other_name: str) -> None:
    """φ(i, j) between the top directions of two runs' ΔW of the same layer (LoRA paper eq. 4)."""
    mine, theirs = layer_update(run_id, layer), layer_update(other_id, layer)
    if theirs is None:
        st.info(tr("spectra.other_no_layer", layer=layer))
        return
    try:
        similarity = spectra.update_similarity(mine, theirs)
    except ValueError as error:  # another model's layer of the same name: not comparable
        st.info(str(error))
        return
    grid, chance = similarity["phi"], similarity["random_expected"]
    st.plotly_chart(similarity_figure(grid, other_name), width="stretch")
    st.caption(tr("spectra.phi_caption", phi=f"{grid[0][0]:.2f}", chance=f"{chance[0][0]:.3f}"))


@st.cache_resource(show_spinner=False, max_entries=4)
def planted_update(run_id: int, store_path: str) -> data.Planted | None:
    """The secret ΔW* of a planted-rank run (the task rebuilt from the run's config and seed)."""
    return reports.planted_of(store().get_summary(run_id).config)


def planted(record, layer: str, update: spectra.LayerUpdate) -> None:
    """A planted-rank task: the learned ΔW next to the secret ΔW* that made the labels."""
    secret = planted_update(record.id, str(store().path))
    if secret is None or secret.layer != layer:
        st.info(tr("spectra.planted_elsewhere", layer=secret.layer if secret else "?"))
        return
    result = spectra.planted_comparison(update.delta_W, secret.delta_W, secret.rank)
    left, right = st.columns(2)
    left.plotly_chart(
        heatmap(spectra.dense_delta(update.delta_W).numpy(), tr("spectra.learned")), width="stretch"
    )
    right.plotly_chart(
        heatmap(secret.delta_W.numpy(), tr("spectra.planted_title", rank=secret.rank)),
        width="stretch",
    )
    st.markdown(
        tr(
            "spectra.planted_overlap",
            left=f"{result['overlap_left']:.2f}",
            right=f"{result['overlap_right']:.2f}",
            chance_left=f"{result['baseline_left']:.3f}",
            chance_right=f"{result['baseline_right']:.3f}",
        )
    )


# ----------------------------------------------------------------------------- the page

st.title(tr("spectra.title"))
st.markdown(tr("spectra.intro"))
load_settings(PAGE, DEFAULTS)
everyone = st.toggle(tr("common.everyone"), key=key("everyone"), persist_state="session")
linked = (st.session_state[key("run")], st.session_state[key("other")])  # runs a link names
listed = visible_runs(everyone, linked)
records = [r for r in listed if r.has_weights]
missing = [i for i in linked if i and i not in {record.id for record in listed}]
for run in missing:  # a link (or a deleted run) names a run that is not there: say so, once
    st.warning(tr("spectra.no_such_run", run=run), icon=":material/link_off:")
if st.session_state[key("other")] in missing:
    st.session_state[key("other")] = 0
if not records:
    st.session_state[key("run")] = 0
    save_settings(PAGE, DEFAULTS)
    st.info(tr("spectra.no_runs"))
    st.page_link(
        "app_pages/train.py", label=tr("spectra.go_train"), icon=":material/model_training:"
    )
    st.stop()

by_id = {record.id: record for record in records}
if st.session_state[key("run")] not in by_id:
    st.session_state[key("run")] = records[0].id
col_run, col_layer, col_norm = st.columns([3, 2, 2], vertical_alignment="bottom")
run_id = col_run.selectbox(
    tr("spectra.run"),
    list(by_id),
    key=key("run"),
    format_func=lambda i: run_label(by_id[i]),
    persist_state="session",
)
record = by_id[run_id]
try:
    report = run_report(run_id, str(store().path))
except StoreError as error:
    st.error(str(error))
    st.stop()
if not report:
    save_settings(PAGE, DEFAULTS)
    st.info(tr("spectra.nothing_changed"))
    st.stop()
if st.session_state[key("layer")] not in report:
    st.session_state[key("layer")] = next(iter(report))
layer = col_layer.selectbox(
    tr("spectra.layer"), list(report), key=key("layer"), persist_state="session"
)
normalised = col_norm.toggle(
    tr("spectra.normalised"), key=key("normalised"), persist_state="session"
)

st.subheader(tr("spectra.spectrum_title", layer=layer))
st.plotly_chart(spectrum_figure(report[layer], normalised), width="stretch")
numbers = report[layer]
size = {
    "fro": f"{numbers['relative_norm_fro']:.2f}",
    "spec": f"{numbers['relative_norm_spectral']:.2f}",
}
not_small = f" {tr('spectra.not_small')}" if numbers["relative_norm_spectral"] >= 1 else ""
st.caption(tr("spectra.spectrum_caption", **size) + not_small)
st.dataframe(
    metrics_table(report),
    hide_index=True,
    width="stretch",
    column_config={
        tr("spectra.energy"): st.column_config.NumberColumn(format="percent"),
        **{
            tr(f"spectra.{name}"): st.column_config.NumberColumn(format="%.2f")
            for name in (
                "effective_rank",
                "stable_rank",
                "amplification",
                "amplification_random",
                "relative_norm_fro",
                "relative_norm_spectral",
            )
        },
    },
)
st.caption(tr("spectra.metrics_caption"))

full = store().get(run_id)
evolution = spectra.spectrum_evolution(full.snapshots).get(layer)
update = layer_update(run_id, layer)
col_play, col_heat = st.columns(2)
with col_play:
    st.subheader(tr("spectra.evolution_title"))
    if evolution and len(evolution["steps"]) > 1:
        st.plotly_chart(evolution_figure(evolution), width="stretch")
    else:
        st.info(tr("spectra.no_snapshots"))
with col_heat:
    st.subheader(tr("spectra.heatmap_title"))
    delta = spectra.dense_delta(update.delta_W).numpy()
    st.plotly_chart(heatmap(delta, f"ΔW · {delta.shape[0]} × {delta.shape[1]}"), width="stretch")
if evolution and len(evolution["steps"]) > 1:
    st.subheader(tr("spectra.dora_title"))
    st.plotly_chart(dora_figure(evolution), width="stretch")
    st.caption(tr("spectra.dora_caption"))

st.subheader(tr("spectra.similarity_title"))
st.markdown(tr("spectra.similarity_intro"))
others = runs.comparable_runs(
    record, layer, records, lambda run_id: changed_layers(run_id, str(store().path))
)
if st.session_state[key("other")] not in [0, *others]:
    st.session_state[key("other")] = 0
other = st.selectbox(
    tr("spectra.other"),
    [0, *others],
    key=key("other"),
    persist_state="session",
    format_func=lambda i: tr("spectra.none") if i == 0 else run_label(by_id[i]),
)
if other:
    compare_runs(run_id, other, layer, f"#{other}")

if record.config.shift == "planted-rank":
    st.subheader(tr("spectra.planted_section"))
    planted(record, layer, update)
save_settings(PAGE, DEFAULTS)
