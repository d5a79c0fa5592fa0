"""Spectra: look inside a finished run, one layer at a time, through singular values."""

from typing import Any

import streamlit as st

from app_pages.common import (
    choice,
    failed,
    is_teacher,
    load_settings,
    own_links,
    run_label,
    save_settings,
    store,
    tr,
    visible_runs,
)
from app_pages.common.what_if import PAGE, key, what_if_section
from app_pages.figures import spectra as figures
from core.analyses import layer_reports, reports
from core.classroom import links, spectra_view
from core.lowrank import similarity, svd, updates
from core.store.records import RunRecord, comparable_runs
from core.store.runs import StoreError
from core.training import data
from core.training.kinds import Metric
from core.training.rebuild import rebuild

DEFAULTS = links.SPECTRA_DEFAULTS


@st.cache_resource(show_spinner=False, max_entries=8)
def run_models(run_id: int, store_path: str):
    """(base, trained model) of a run, loaded once; nothing here modifies them."""
    return rebuild(store().read_weights(run_id))


@st.cache_data(show_spinner=False, max_entries=16)
def run_report(run_id: int, store_path: str) -> dict[str, layer_reports.LayerReport]:
    """The run's layer reports; a planted-rank run's planted layer holds its comparison."""
    models = run_models(run_id, store_path)
    return reports.analyse_models(*models, planted_update(run_id, store_path))


@st.cache_data(show_spinner=False, max_entries=256)
def changed_layers(run_id: int, store_path: str) -> list[str]:
    """The layers a run changed (cheap to keep: names only; the models are not cached here,
    so listing many runs does not push the open run's models out of run_models' cache)."""
    return list(updates.layer_updates(*rebuild(store().read_weights(run_id))))


def layer_update(run_id: int, layer: str) -> updates.LayerUpdate | None:
    return updates.layer_updates(*run_models(run_id, store().where)).get(layer)


def pick_moment(history: list[dict], snapshots: list[dict]) -> None:
    """The curves' on_select: a clicked point moves the step slider to the nearest snapshot
    (reports.moment). A callback runs before the page, so the slider is drawn there."""
    points = st.session_state[key("curves")]["selection"]["points"]
    if points:
        st.session_state[key("step")] = reports.moment(history, snapshots, points[0]["x"]).step


def compare_runs(run_id: int, other_id: int, layer: str, other_name: str) -> None:
    """φ(i, j) between the top directions of two runs' ΔW of the same layer (LoRA paper eq. 4)."""
    mine, theirs = layer_update(run_id, layer), layer_update(other_id, layer)
    if theirs is None:
        st.info(tr("spectra.other_no_layer", layer=layer))
        return
    try:
        result = similarity.update_similarity(mine, theirs)
    except ValueError as error:  # another model's layer of the same name: not comparable
        st.info(str(error))
        return
    st.plotly_chart(figures.similarity_figure(result.phi, other_name), width="stretch")
    st.caption(spectra_view.similarity_caption(result).said(tr))


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
    playback = spectra_view.Playback(st.session_state, steps, key)
    if playback.playing and st.session_state.get(key("play")):  # Pause, read before drawing
        playback.pause()
        st.rerun(scope="app")  # a fragment's timer is set or cleared only by a whole run
    step = playback.step()
    metric = data.kind_of(full.config.dataset).metric
    st.plotly_chart(
        figures.curves_figure(full.history, step, metric),
        width="stretch",
        key=key("curves"),
        on_select=lambda: pick_moment(full.history, full.snapshots),
        selection_mode="points",
    )
    col_slider, col_play = st.columns([5, 1], vertical_alignment="bottom")
    if playback.playing:  # a new slider each frame: the student's own would send stale steps
        col_slider.select_slider(
            tr("spectra.moment_step"), steps, step, key=key(f"frame.{step}"), disabled=True
        )
    else:
        step = col_slider.select_slider(tr("spectra.moment_step"), steps, key=key("step"))
    moment = reports.moment(full.history, full.snapshots, step)
    evolution = layer_reports.spectrum_evolution(full.snapshots).get(layer)
    col_sigma, col_numbers = st.columns([3, 2])
    with col_sigma:
        if evolution and any(evolution.sigma):
            st.plotly_chart(figures.evolution_figure(evolution, moment.index), width="stretch")
        else:
            st.info(tr("spectra.no_snapshots"))
    with col_numbers:
        moment_metrics(moment, evolution, metric)
    if evolution and len(evolution.steps) > 1:
        st.subheader(tr("spectra.dora_title"))
        st.plotly_chart(figures.dora_figure(evolution, step), width="stretch")
        st.caption(tr("spectra.dora_caption"))
    play_button(col_play, playback)


def play_button(column: Any, playback: spectra_view.Playback) -> None:
    """Play from the first snapshot, or Pause (read in moment_section, before anything is
    drawn); while playing, the next frame is chosen for the fragment's next run. The
    student's slider is not drawn while playing, so where playing stops can set it."""
    label, icon = (
        (tr("spectra.pause"), ":material/pause:")
        if playback.playing
        else (tr("spectra.play"), ":material/play_arrow:")
    )
    if column.button(label, icon=icon, key=key("play"), width="stretch"):
        playback.play()
        st.rerun(scope="app")  # a fragment's timer is set or cleared only by a whole run
    if playback.playing and playback.next_frame():
        st.rerun(scope="app")


def moment_metrics(
    moment: reports.Moment, evolution: layer_reports.SpectrumEvolution | None, metric: Metric
) -> None:
    """The numbers of the chosen moment (spectra_view.moment_metrics), two to a row."""
    st.markdown(tr("spectra.moment_numbers", step=moment.step))
    columns = [*st.columns(2), *st.columns(2)]  # the second row stays empty without snapshots
    metrics = spectra_view.moment_metrics(moment, evolution, metric)
    for column, metric in zip(columns, metrics, strict=False):
        label, hint = (spectra_view.said(text, tr) for text in (metric.label, metric.help))
        column.metric(label, metric.value, help=hint)
    st.caption(tr("spectra.moment_caption"))


# ----------------------------------------------------------------------------- planted rank


@st.cache_resource(show_spinner=False, max_entries=4)
def planted_update(run_id: int, store_path: str) -> data.Planted | None:
    """The secret ΔW* of a planted-rank run (the task rebuilt from the run's config and seed)."""
    return reports.planted_of(store().get_summary(run_id).config)


def planted(record, report: layer_reports.LayerReport, update: updates.LayerUpdate) -> None:
    """A planted-rank task: the learned ΔW next to the secret ΔW* that made the labels (the
    comparison is the report's: run_report adds it to the layer that holds ΔW*)."""
    secret = planted_update(record.id, store().where)
    result = report.planted
    if secret is None or result is None:
        st.info(tr("spectra.planted_elsewhere", layer=secret.layer if secret else "?"))
        return
    left, right = st.columns(2)
    learned = svd.dense_delta(update.delta_W).numpy()
    left.plotly_chart(figures.heatmap(learned, tr("spectra.learned")), width="stretch")
    right.plotly_chart(
        figures.heatmap(secret.delta_W.numpy(), tr("spectra.planted_title", rank=secret.rank)),
        width="stretch",
    )
    st.markdown(spectra_view.planted_overlap(result).said(tr))


WAIT_SECONDS = 3.0  # while one's only run trains: how often the page looks whether it ended


def wait_for_a_finished_run(run_id: int) -> None:
    """Draws nothing; once the run has ended, the page is drawn again (with its spectra)."""
    if store().get_summary(run_id).status != "running":
        st.rerun(scope="app")


# ----------------------------------------------------------------------------- the page

st.title(tr("spectra.title"))
st.markdown(tr("spectra.intro"))
load_settings(PAGE, DEFAULTS)
everyone = is_teacher() and st.toggle(
    tr("common.everyone"), key=key("everyone"), persist_state="session"
)
# The runs a link names: another student's is replaced by none (its settings are offered).
linked = own_links((st.session_state[key("run")], st.session_state[key("other")]))
offered = spectra_view.spectra_runs(*visible_runs(everyone, linked), *linked)
for run in offered.missing:  # a link (or a deleted run) names a run that is not there: say so, once
    st.warning(tr("spectra.no_such_run", run=run), icon=":material/link_off:")
st.session_state[key("run")], st.session_state[key("other")] = offered.run, offered.other
if not offered.records:
    save_settings(PAGE, DEFAULTS)
    if offered.training:  # its spectra come once it finishes: the page looks again every few s
        st.info(tr("spectra.still_training", run=offered.training), icon=":material/hourglass_top:")
        st.fragment(wait_for_a_finished_run, run_every=WAIT_SECONDS)(offered.training)
        st.stop()
    st.info(tr("spectra.no_runs"))
    st.page_link(
        "app_pages/train.py", label=tr("spectra.go_train"), icon=":material/model_training:"
    )
    st.stop()

by_id = offered.by_id
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
st.session_state[key("layer")] = spectra_view.still_offered(
    st.session_state[key("layer")], list(report)
)
layer = col_layer.selectbox(
    tr("spectra.layer"), list(report), key=key("layer"), persist_state="session"
)
normalised = col_norm.toggle(
    tr("spectra.normalised"), key=key("normalised"), persist_state="session"
)

st.subheader(tr("spectra.spectrum_title", layer=layer))
st.plotly_chart(figures.spectrum_figure(report[layer], normalised), width="stretch")
st.caption(" ".join(sentence.said(tr) for sentence in spectra_view.update_size(report[layer])))
# A static table: its headers wrap, so that every column fits a 1280 px projector (a
# dataframe's fixed-width columns scrolled the last ones out of sight).
st.table(figures.metrics_table(report).style.format(figures.metric_formats()), hide_index=True)
st.caption(tr("spectra.metrics_caption"))
st.markdown(spectra_view.amplification_sentence(layer, report[layer]).said(tr))

st.fragment(
    moment_section, run_every=PLAY_SECONDS if st.session_state.get(key("playing")) else None
)(store().get(run_id), layer)

update = layer_update(run_id, layer)
st.subheader(tr("spectra.heatmap_title"))
delta = svd.dense_delta(update.delta_W).numpy()
st.plotly_chart(
    figures.heatmap(delta, f"ΔW · {delta.shape[0]} × {delta.shape[1]}"), width="stretch"
)

what_if_section(record)

st.subheader(tr("spectra.similarity_title"))
st.markdown(tr("spectra.similarity_intro"))
others = comparable_runs(
    record, layer, offered.records, lambda run_id: changed_layers(run_id, store().where)
)
st.session_state[key("other")] = spectra_view.still_offered(
    st.session_state[key("other")], [0, *others]
)
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
    planted(record, report[layer], update)
save_settings(PAGE, DEFAULTS)
