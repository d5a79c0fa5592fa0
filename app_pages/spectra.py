"""Spectra: look inside a finished run, one layer at a time, through singular values."""

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app_pages.common import (
    choice,
    failed,
    load_settings,
    log_ticks,
    run_label,
    save_settings,
    store,
    style,
    tr,
    visible_runs,
)
from core.analyses import reports, whatif
from core.classroom import links
from core.common.paths import OfflineError
from core.lowrank import spectra
from core.store.records import RunRecord, comparable_runs
from core.store.runs import StoreError
from core.training import data, measure
from core.training.rebuild import rebuild

PAGE = "spectra"
DEFAULTS = links.SPECTRA_DEFAULTS
HEATMAP_MAX = 256  # larger ΔW are shown with every n-th row/column, or a browser would choke
MARK = "#555555"  # the dashed line that marks the chosen step or λ on a curve
RUN_COLOR, BASE_COLOR, SOURCE_COLOR = "#e4572e", "#9e9e9e", "#2e86ab"


def key(name: str) -> str:
    return f"{PAGE}.{name}"


@st.cache_resource(show_spinner=False, max_entries=8)
def run_models(run_id: int, store_path: str):
    """(base, trained model) of a run, loaded once; nothing here modifies them."""
    return rebuild(store(), run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def run_report(run_id: int, store_path: str) -> dict[str, dict]:
    return spectra.model_report(*run_models(run_id, store_path))


@st.cache_data(show_spinner=False, max_entries=256)
def changed_layers(run_id: int, store_path: str) -> list[str]:
    """The layers a run changed (cheap to keep: names only; the models are not cached here,
    so listing many runs does not push the open run's models out of run_models' cache)."""
    return list(spectra.layer_updates(*rebuild(store(), run_id)))


def layer_update(run_id: int, layer: str) -> spectra.LayerUpdate | None:
    return spectra.layer_updates(*run_models(run_id, store().where)).get(layer)


def spectrum_figure(report: dict, normalised: bool) -> go.Figure:
    """σ of W0, ΔW and W0+ΔW on one log axis: how big the update is next to the weight. σ at
    rounding level (spectra.spectrum_plot) do not set the axis: they sit on its floor."""
    plot = spectra.spectrum_plot(report, normalised)
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
    longest = max(len(report[name]) for name, _, _ in lines)
    fig.update_xaxes(title_text=tr("spectra.index"), type="log", tickvals=log_ticks([1, longest]))
    fig.update_yaxes(
        title_text=tr("spectra.sigma_norm" if normalised else "spectra.sigma"),
        type="log",
        tickvals=log_ticks([plot.axis.low, plot.axis.high]),
        range=plot.axis.log_range(0.2),
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


def amplification_reading(layer: str, numbers: dict) -> str:
    """The sentence that reads the chosen layer's amplification (spectra.amplification_reading)."""
    reading = spectra.amplification_reading(numbers)
    return tr(
        f"spectra.amp_reading_{reading.word}",
        layer=layer,
        r=numbers["amplification_rank"],
        times=f"{reading.times:.2g}",
        amp=f"{numbers['amplification']:.2f}",
        random=f"{numbers['amplification_random']:.2f}",
    )


def evolution_figure(evolution: dict, index: int) -> go.Figure:
    """σ of ΔW at the chosen snapshot (the page's step slider picks `index`), on an axis that
    holds every snapshot's σ above rounding level (spectra.SigmaAxis), so that playing the steps
    (play_step) shows them grow; a bar at rounding level does not reach the axis."""
    steps, sigmas = evolution["steps"], evolution["sigma"]
    axis = spectra.SigmaAxis.of(spectra.resolved(s, evolution["shape"]) for s in sigmas)
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


def curves_figure(history: list[dict], step: int) -> go.Figure:
    """The run's loss (top) and validation accuracy (bottom) against the step, with the chosen
    snapshot's step marked: clicking a point picks a moment (see pick_moment)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    trained = [row for row in history if row["train_loss"] is not None]
    evaluated = [row for row in history if row["val_acc"] is not None]
    lines = (  # the rows, the column, how drawn, in which plot, its colour (None: the theme's)
        (trained, "train_loss", "lines", 1, None),
        (evaluated, "val_loss", "lines+markers", 1, None),
        (evaluated, "val_acc", "lines+markers", 2, "#2ca02c"),
    )
    for rows, column, mode, plot, color in lines:
        fig.add_scatter(
            x=[row["step"] for row in rows],
            y=[row[column] for row in rows],
            name=tr(f"train.{column}"),
            mode=mode,
            line_color=color,
            row=plot,
            col=1,
        )
    fig.add_vline(x=step, line_dash="dash", line_color=MARK, row="all", col=1)
    fig.update_yaxes(title_text=tr("train.loss"), row=1, col=1)
    fig.update_yaxes(title_text=tr("spectra.acc_short"), tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text=tr("spectra.step"), row=2, col=1)
    return style(fig, height=440)


def pick_moment(history: list[dict], snapshots: list[dict]) -> None:
    """The curves' on_select: a clicked point moves the step slider to the nearest snapshot
    (reports.moment). A callback runs before the page, so the slider is drawn there."""
    points = st.session_state[key("curves")]["selection"]["points"]
    if points:
        st.session_state[key("step")] = reports.moment(history, snapshots, points[0]["x"])["step"]


def dora_figure(evolution: dict, step: int) -> go.Figure:
    """ΔM and ΔD of one layer at every snapshot (DoRA paper's view), each on its own axis:
    ΔM is in the weight's units, ΔD a 1 − cos in [0, 2]. The chosen step is marked."""
    fig = go.Figure()
    fig.add_vline(x=step, line_dash="dash", line_color=MARK)
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


# ----------------------------------------------------------------------------- pick a moment


PLAY_SECONDS = 1.0  # ▶ Play: how long each snapshot stays on screen


def moment_section(full: RunRecord, layer: str) -> None:
    """The run's curves and the snapshot slider, in step: a click on a curve or the slider
    picks a snapshot; the curves mark it, and σ(ΔW) and the metrics of that step show.
    ▶ Play moves the slider itself through every snapshot (the page runs this as a fragment
    that reruns every PLAY_SECONDS while playing), so the mark, σ and the numbers all follow."""
    st.subheader(tr("spectra.moment_title"))
    if not full.history or not full.snapshots:
        st.info(tr("spectra.no_history"))
        return
    st.markdown(tr("spectra.moment_intro"))
    steps = [snapshot["step"] for snapshot in full.snapshots]
    playing = st.session_state.get(key("playing"), False)
    if playing and st.session_state.get(key("play")):  # Pause: stay at the frame shown last
        stop_playing(steps[st.session_state[key("frame")] - 1])
    if st.session_state.get(key("step")) not in steps:
        st.session_state[key("step")] = steps[-1]
    if playing:
        step = steps[min(st.session_state[key("frame")], len(steps) - 1)]
    else:
        step = st.session_state[key("step")]
    st.plotly_chart(
        curves_figure(full.history, step),
        width="stretch",
        key=key("curves"),
        on_select=lambda: pick_moment(full.history, full.snapshots),
        selection_mode="points",
    )
    col_slider, col_play = st.columns([5, 1], vertical_alignment="bottom")
    if playing:  # a new slider each frame: the student's own one would send back stale steps
        col_slider.select_slider(
            tr("spectra.moment_step"), steps, step, key=key(f"frame.{step}"), disabled=True
        )
    else:
        step = col_slider.select_slider(tr("spectra.moment_step"), steps, key=key("step"))
    moment = reports.moment(full.history, full.snapshots, step)
    evolution = spectra.spectrum_evolution(full.snapshots).get(layer)
    col_sigma, col_numbers = st.columns([3, 2])
    with col_sigma:
        if evolution and any(evolution["sigma"]):
            st.plotly_chart(evolution_figure(evolution, moment["index"]), width="stretch")
        else:
            st.info(tr("spectra.no_snapshots"))
    with col_numbers:
        moment_metrics(moment, evolution)
    if evolution and len(evolution["steps"]) > 1:
        st.subheader(tr("spectra.dora_title"))
        st.plotly_chart(dora_figure(evolution, step), width="stretch")
        st.caption(tr("spectra.dora_caption"))
    play_button(col_play, playing, step, len(steps))


def play_button(column: Any, playing: bool, step: int, frames: int) -> None:
    """Play from the first snapshot, or Pause (read in moment_section, before anything is
    drawn); while playing, the next frame is chosen for the fragment's next run."""
    label, icon = (
        (tr("spectra.pause"), ":material/pause:")
        if playing
        else (tr("spectra.play"), ":material/play_arrow:")
    )
    if column.button(label, icon=icon, key=key("play"), width="stretch"):
        st.session_state[key("playing")], st.session_state[key("frame")] = True, 0
        st.rerun(scope="app")  # a fragment's timer is set or cleared only by a whole run
    if playing:
        st.session_state[key("frame")] += 1
        if st.session_state[key("frame")] >= frames:
            stop_playing(step)


def stop_playing(step: int) -> None:
    """Leave the slider at `step` (the student's slider is not drawn while playing, so it
    can be set) and stop the fragment's timer."""
    st.session_state[key("playing")], st.session_state[key("step")] = False, step
    st.rerun(scope="app")


def moment_metrics(moment: dict, evolution: dict | None) -> None:
    """The numbers of the chosen moment: the losses, the accuracy and the layer's ΔW."""
    st.markdown(tr("spectra.moment_numbers", step=moment["step"]))
    top, bottom = st.columns(2), st.columns(2)
    top[0].metric(tr("spectra.metric_train_loss"), number(moment["train_loss"], ".3f"))
    evaluated = moment["eval_step"]
    top[1].metric(
        tr("spectra.metric_val_acc"),
        number(moment["val_acc"], ".1%"),
        help=None if evaluated is None else tr("spectra.metric_eval_at", step=evaluated),
    )
    if evolution:
        sigma = evolution["sigma"][moment["index"]]
        bottom[0].metric("σ₁(ΔW)", number(sigma[0] if sigma else 0.0, ".3g"))
        bottom[1].metric(
            tr("spectra.delta_D"), number(evolution["delta_D"][moment["index"]], ".2g")
        )
    st.caption(tr("spectra.moment_caption"))


def number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


# ----------------------------------------------------------------------------- what if…?


@st.cache_data(show_spinner=False, max_entries=32)
def truncation(run_id: int, store_path: str) -> dict:
    """whatif.truncation_curve of a saved run, once per run (a few seconds on a CPU)."""
    return whatif.truncation_curve(measure.open_run(run_id, store()))


@st.cache_data(show_spinner=False, max_entries=32)
def intruders(run_id: int, store_path: str) -> dict:
    """whatif.intruder_curve on the slider's λ grid, once per run: the slider only picks."""
    return whatif.intruder_curve(measure.open_run(run_id, store()), whatif.SLIDER_LAMBDAS)


@st.cache_data(show_spinner=False, max_entries=32)
def importance(run_id: int, store_path: str) -> dict:
    """whatif.layer_importance of a saved run, once per run."""
    return whatif.layer_importance(measure.open_run(run_id, store()))


def measured(compute, run_id: int) -> dict | None:
    """One of the cached what-if computations, with a spinner; its error as one message."""
    try:
        with st.spinner(tr("spectra.computing")):
            return compute(run_id, str(store().path))
    except (ValueError, StoreError, OfflineError) as error:
        failed(error)
        return None


def accuracy_lines(fig: go.Figure, run_accuracy: float, base_accuracy: float) -> None:
    """The untouched run and the base model as horizontal lines, named at the right end."""
    for value, name, color, dash in (
        (run_accuracy, tr("spectra.run_line"), RUN_COLOR, "dash"),
        (base_accuracy, tr("spectra.base_line"), BASE_COLOR, "dot"),
    ):
        fig.add_hline(
            y=value,
            line_dash=dash,
            line_color=color,
            annotation_text=f"{name} {value:.1%}",
            annotation_position="top left",  # the curve reaches the run's line at the right
            annotation_font_color=color,
        )


def truncation_figure(curve: dict) -> go.Figure:
    """Test accuracy against k (each layer's ΔW cut to its top k directions), on a doubling
    axis, with the run and the base model as lines and the reading's k marked."""
    ks = [point["k"] for point in curve["truncation"]]
    fig = go.Figure()
    fig.add_scatter(
        x=[str(k) for k in ks],
        y=[point["accuracy"] for point in curve["truncation"]],
        name=tr("spectra.cut_curve"),
        mode="lines+markers",
        line_color="#7c4dff",
        marker_size=9,
    )
    if curve["rank_used"] is not None:
        used = ks.index(curve["rank_used"])
        fig.add_scatter(
            x=[str(ks[used])],
            y=[curve["truncation"][used]["accuracy"]],
            name=tr("spectra.cut_used", k=ks[used], points=f"{whatif.RANK_TOLERANCE * 100:g}"),
            mode="markers",
            marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": RUN_COLOR, "width": 3}},
        )
    accuracy_lines(fig, curve["run_accuracy"], curve["base_accuracy"])
    fig.update_xaxes(title_text=tr("spectra.cut_axis"), type="category")
    fig.update_yaxes(title_text=tr("spectra.acc_axis"), tickformat=".0%", range=[0, 1.02])
    return style(fig, height=380)


def zero_accuracy(curve: dict) -> str:
    return f"{next(p['accuracy'] for p in curve['truncation'] if p['k'] == 0):.1%}"


def truncation_reading(curve: dict) -> str:
    """The sentence that reads the curve (whatif.reading): how many directions the update
    used, or that the run learned nothing, or that its update hurt."""
    kept = ", ".join(curve["kept"])
    values = {
        "k": curve["rank_used"],
        "rank": curve["max_rank"],
        "points": f"{whatif.RANK_TOLERANCE * 100:g}",
        "run": f"{curve['run_accuracy']:.1%}",
        "chance": f"{curve['chance']:.1%}",
        "zero": zero_accuracy(curve),
        "zero_is": tr("spectra.cut_zero_is_kept", layers=kept)
        if kept
        else tr("spectra.cut_zero_is_base"),
    }
    return tr(f"spectra.cut_reading_{whatif.reading(curve)}", **values)


def cut_section(record: RunRecord) -> None:
    st.markdown(tr("spectra.cut_intro"))
    curve = measured(truncation, record.id)
    if curve is None:
        return
    st.plotly_chart(truncation_figure(curve), width="stretch")
    zero = {"zero": zero_accuracy(curve), "base": f"{curve['base_accuracy']:.1%}"}
    if curve["kept"]:
        st.caption(tr("spectra.cut_zero_kept", layers=", ".join(curve["kept"]), **zero))
    else:
        st.caption(tr("spectra.cut_zero_base", **zero))
    st.markdown(truncation_reading(curve))
    if record.config.method != "lora":
        st.caption(tr("spectra.cut_full"))
    if curve["dora"]:
        st.caption(tr("spectra.cut_dora"))


def intruder_figure(curve: dict, lam: float) -> go.Figure:
    """Target and source-task accuracy against λ, the chosen λ marked; the base model's
    accuracy on each task as a dotted line of its colour."""
    lambdas = [point["lambda"] for point in curve["points"]]
    fig = go.Figure()
    tasks = [("target_accuracy", tr("spectra.target_task"), RUN_COLOR)]
    if curve["base"]["source_accuracy"] is not None:
        tasks.append(("source_accuracy", tr("spectra.source_task"), SOURCE_COLOR))
    for name, label, color in tasks:
        fig.add_scatter(
            x=lambdas,
            y=[point[name] for point in curve["points"]],
            name=label,
            mode="lines+markers",
            line_color=color,
        )
        fig.add_hline(
            y=curve["base"][name],
            line_dash="dot",
            line_color=color,
            annotation_text=tr("spectra.base_line") + f" {curve['base'][name]:.1%}",
            annotation_position="top left",  # the chosen λ's line is often at the right
            annotation_font_color=color,
        )
    fig.add_vline(x=lam, line_dash="dash", line_color=MARK)
    fig.update_xaxes(title_text=tr("spectra.lambda_axis"), dtick=0.1, range=[-0.03, 1.03])
    fig.update_yaxes(title_text=tr("spectra.acc_axis"), tickformat=".0%", range=[0, 1.02])
    return style(fig, height=360)


def intruders_section(record: RunRecord) -> None:
    st.markdown(tr("spectra.intruders_intro"))
    curve = measured(intruders, record.id)
    if curve is None:
        return
    if curve["intruders"] == 0:
        st.info(tr("spectra.intruders_none"))
        return
    counts = ", ".join(f"{name}: {layer['intruders']}" for name, layer in curve["layers"].items())
    st.caption(tr("spectra.intruders_count", layers=counts))
    lam = st.select_slider(
        tr("spectra.lambda"),
        list(whatif.SLIDER_LAMBDAS),
        value=1.0,
        key=key("lambda"),
        format_func=lambda value: f"{value:.1f}",
    )
    by_lambda = {point["lambda"]: point for point in curve["points"]}
    at, trained = by_lambda[lam], by_lambda[1.0]
    col_target, col_source = st.columns(2)
    col_target.metric(
        tr("spectra.target_metric", lam=f"{lam:.1f}"),
        f"{at['target_accuracy']:.1%}",
        delta=points_delta(at["target_accuracy"], trained["target_accuracy"]),
    )
    if at["source_accuracy"] is None:
        col_source.info(tr("spectra.no_source"))
    else:
        col_source.metric(
            tr("spectra.source_metric", lam=f"{lam:.1f}"),
            f"{at['source_accuracy']:.1%}",
            delta=points_delta(at["source_accuracy"], trained["source_accuracy"]),
        )
    st.plotly_chart(intruder_figure(curve, lam), width="stretch")
    st.caption(tr("spectra.intruders_caption"))


def points_delta(accuracy: float, trained: float) -> str | None:
    """The change from the run as trained (λ = 1) in percentage points, signed, for st.metric
    to colour; None at λ = 1 itself, where there is no change to show."""
    if accuracy == trained:
        return None
    return tr("spectra.points_delta", change=f"{(accuracy - trained) * 100:+.1f}")


def importance_figure(rows: list[dict]) -> go.Figure:
    """The accuracy lost without each layer's update, one bar per layer in the model's order."""
    fig = go.Figure(
        go.Bar(
            x=[row["layer"] for row in rows],
            y=[row["accuracy_lost"] * 100 for row in rows],
            marker_color=[RUN_COLOR if row["kind"] == "adapter" else BASE_COLOR for row in rows],
            text=[f"{row['accuracy_lost'] * 100:+.1f}" for row in rows],
            textposition="outside",
        )
    )
    fig.update_xaxes(title_text=tr("spectra.layer"), type="category")
    fig.update_yaxes(title_text=tr("spectra.lost_axis"), zeroline=True)
    return style(fig, height=360, showlegend=False)


def importance_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            tr("spectra.layer"): [row["layer"] for row in rows],
            tr("spectra.col_kind"): [tr(f"spectra.kind_{row['kind']}") for row in rows],
            "d × k": [" × ".join(map(str, row["shape"])) for row in rows],
            tr("spectra.col_fro"): [row["relative_frobenius"] for row in rows],
            tr("spectra.col_spectral"): [row["relative_spectral"] for row in rows],
            tr("spectra.col_lost"): [row["accuracy_lost"] * 100 for row in rows],
        }
    )


def layers_section(record: RunRecord) -> None:
    st.markdown(tr("spectra.layers_intro"))
    report = measured(importance, record.id)
    if report is None:
        return
    st.plotly_chart(importance_figure(report["layers"]), width="stretch")
    ratio = st.column_config.NumberColumn(format="%.3f")
    percent = st.column_config.NumberColumn(format="%.1f")
    st.dataframe(
        importance_table(report["layers"]),
        hide_index=True,
        width="stretch",
        column_config={
            tr("spectra.col_fro"): ratio,
            tr("spectra.col_spectral"): ratio,
            tr("spectra.col_lost"): percent,
        },
    )
    st.caption(
        tr(
            "spectra.layers_caption",
            run=f"{report['run_accuracy']:.1%}",
            base=f"{report['base_accuracy']:.1%}",
        )
    )


WHAT_IF = {  # expander key → (title, what it draws): each computes only once opened
    "open_cut": ("spectra.cut_title", cut_section),
    "open_intruders": ("spectra.intruders_title", intruders_section),
    "open_layers": ("spectra.layers_title", layers_section),
}


def what_if_section(record: RunRecord) -> None:
    st.subheader(tr("spectra.whatif_title"))
    st.markdown(tr("spectra.whatif_intro"))
    for name, (title, draw) in WHAT_IF.items():
        section = st.expander(tr(title), key=key(name), on_change="rerun")
        if section.open:
            with section:
                draw(record)


# ----------------------------------------------------------------------------- planted rank


@st.cache_resource(show_spinner=False, max_entries=4)
def planted_update(run_id: int, store_path: str) -> data.Planted | None:
    """The secret ΔW* of a planted-rank run (the task rebuilt from the run's config and seed)."""
    return reports.planted_of(store().get_summary(run_id).config)


def planted(record, layer: str, update: spectra.LayerUpdate) -> None:
    """A planted-rank task: the learned ΔW next to the secret ΔW* that made the labels."""
    secret = planted_update(record.id, store().where)
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


WAIT_SECONDS = 3.0  # while one's only run trains: how often the page looks whether it ended


def wait_for_a_finished_run(run_id: int) -> None:
    """Draws nothing; once the run has ended, the page is drawn again (with its spectra)."""
    if store().get_summary(run_id).status != "running":
        st.rerun(scope="app")


# ----------------------------------------------------------------------------- the page

st.title(tr("spectra.title"))
st.markdown(tr("spectra.intro"))
load_settings(PAGE, DEFAULTS)
everyone = st.toggle(tr("common.everyone"), key=key("everyone"), persist_state="session")
linked = (st.session_state[key("run")], st.session_state[key("other")])  # runs a link names
listed, unreadable = visible_runs(everyone, linked)
records = [r for r in listed if r.has_weights]
missing = [i for i in linked if i and i not in {record.id for record in listed} | set(unreadable)]
for run in missing:  # a link (or a deleted run) names a run that is not there: say so, once
    st.warning(tr("spectra.no_such_run", run=run), icon=":material/link_off:")
if st.session_state[key("other")] in missing:
    st.session_state[key("other")] = 0
if not records:
    st.session_state[key("run")] = 0
    save_settings(PAGE, DEFAULTS)
    training = [record.id for record in listed if record.status == "running"]
    if training:  # its spectra come once it finishes: the page looks again every few seconds
        st.info(tr("spectra.still_training", run=training[0]), icon=":material/hourglass_top:")
        st.fragment(wait_for_a_finished_run, run_every=WAIT_SECONDS)(training[0])
        st.stop()
    st.info(tr("spectra.no_runs"))
    st.page_link(
        "app_pages/train.py", label=tr("spectra.go_train"), icon=":material/model_training:"
    )
    st.stop()

by_id = {record.id: record for record in records}
if st.session_state[key("run")] not in by_id:
    st.session_state[key("run")] = records[0].id
col_run, col_layer, col_norm = st.columns([3, 2, 2], vertical_alignment="bottom")
run_id = choice(
    col_run.selectbox, tr("spectra.run"), list(by_id), key("run"), lambda i: run_label(by_id[i])
)
record = by_id[run_id]
try:
    report = run_report(run_id, store().where)
except StoreError as error:
    failed(error)
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
# A static table: its headers wrap, so that every column fits a 1280 px projector (a
# dataframe's fixed-width columns scrolled the last ones out of sight).
st.table(metrics_table(report).style.format(metric_formats()), hide_index=True)
st.caption(tr("spectra.metrics_caption"))
st.markdown(amplification_reading(layer, numbers))

st.fragment(
    moment_section, run_every=PLAY_SECONDS if st.session_state.get(key("playing")) else None
)(store().get(run_id), layer)

update = layer_update(run_id, layer)
st.subheader(tr("spectra.heatmap_title"))
delta = spectra.dense_delta(update.delta_W).numpy()
st.plotly_chart(heatmap(delta, f"ΔW · {delta.shape[0]} × {delta.shape[1]}"), width="stretch")

what_if_section(record)

st.subheader(tr("spectra.similarity_title"))
st.markdown(tr("spectra.similarity_intro"))
others = comparable_runs(
    record, layer, records, lambda run_id: changed_layers(run_id, store().where)
)
if st.session_state[key("other")] not in [0, *others]:
    st.session_state[key("other")] = 0
other = choice(
    st.selectbox,
    tr("spectra.other"),
    [0, *others],
    key("other"),
    lambda i: tr("spectra.none") if i == 0 else run_label(by_id[i]),
)
if other:
    compare_runs(run_id, other, layer, f"#{other}")

if record.config.shift == "planted-rank":
    st.subheader(tr("spectra.planted_section"))
    planted(record, layer, update)
save_settings(PAGE, DEFAULTS)
