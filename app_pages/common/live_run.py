"""The Train page's view of a run: its progress (or its place in the queue), how it ended, its
live curves (clickable once it ended, as Spectra's are) and what it achieved. The run is a job in
the pool of core.jobs.pool (another process), so switching pages does not stop it; live_view is
the page's polling fragment, and core.classroom.live keeps the curves up to date event by event
and shares them between every page that watches the run."""

import contextlib
from typing import Any

import streamlit as st

from app_pages.common.session import (
    failed,
    language,
    refused,
    said,
    status_label,
    store,
    student_id,
    tr,
)
from app_pages.common.strips import prediction_strip
from app_pages.figures.train import live_figures
from core.analyses import reports
from core.classroom import live, run_differences, train_form, writing
from core.common import paths
from core.common.config import RunConfig
from core.common.text import for_markdown
from core.jobs import pool as jobs
from core.jobs.scheduler import Job
from core.store.names import default_name
from core.store.runs import StoreError
from core.training import data, measure, text, train
from core.training.kinds import DataKind

PAGE = "train"  # the page whose session state holds the run: its job, or its stored run's id


def key(name: str) -> str:
    """The Train page's session key of ``name``."""
    return f"{PAGE}.{name}"


def progress(view: live.RunView) -> None:
    """Progress bar with steps/s and ETA, or where the run waits."""
    frame = view.frame
    if not frame.has_points:
        if view.done:  # it ended before its first step (data offline, …): outcome() says why
            return
        if view.status == "queued":
            wait = view.job.wait_estimate
            position = view.job.queue_position or 1
            if wait is None:
                st.info(tr("train.queued", position=position))
            else:
                st.info(tr("train.queued_wait", position=position, seconds=f"{wait:.0f}"))
        else:
            st.info(tr("train.preparing"))
        return
    planned = view.planned
    if view.done:  # no speed or time left once it ended
        text = tr(
            "train.progress_done",
            step=frame.step,
            steps=planned,
            status=status_label(view.status),
        )
    else:
        text = tr(
            "train.progress",
            step=frame.step,
            steps=planned,
            speed=f"{frame.steps_per_s:.1f}",
            eta=train_form.eta_text(planned, frame.step, frame.steps_per_s),
        )
    st.progress(min(frame.step / planned, 1.0), text=text)


def ending(view: live.RunView) -> None:
    """Why the run did not finish: its student stopped it, it failed, it was interrupted."""
    if view.status == "failed":
        st.error(tr("train.failed", reason=for_markdown(view.reason)))
    elif view.status == "stopped" and view.stopped_at is not None:
        step, steps = view.stopped_at
        st.warning(tr("train.stopped_at", step=step, steps=steps))
    elif view.status == "stopped":
        st.warning(tr("train.stopped", reason=for_markdown(view.reason)))
    elif view.status == "unfinished":
        st.warning(tr("train.unfinished", reason=for_markdown(view.reason)))


def outcome(view: live.RunView) -> None:
    """What the ended run achieved (below its curves: on a projector the curves come first)."""
    result, kind = view.result or {}, view.kind
    metric, others = kind.metric, kind.others
    test = train_form.headline(metric, result, "test")
    if test is not None:
        # the two metrics side by side, wide enough for "37.6% → 90.2%" on a projector
        c1, c_source = st.columns(2)
        c1.metric(tr(metric.label), **as_metric(test, metric.lower_is_better))
        source = train_form.headline(metric, result, "source")
        if source is not None:  # None: no source task (ImageNet)
            c_source.metric(
                tr(metric.source),
                **as_metric(source, metric.lower_is_better),
                help=tr(metric.source_help),
            )
            # where a classifier's forgetting comes from (its head, its body): a question of
            # classes, which text has not (so a text run is not rebuilt to ask it)
            asked = view.run_id and kind.has_classes
            forgot = _forgetting(store().where, view.run_id) if asked else None
            note = forgot.note() if forgot is not None else None
            if note is not None:
                sentence, values = note
                c_source.caption(tr(sentence, **values))
        c2, c3, *c_others = st.columns(3)
        c2.metric(
            tr("train.trainable"),
            f"{result['trainable_params']:,}",
            help=f"{result['trainable_params'] / result['total_params']:.2%}",
        )
        c3.metric(tr("train.time"), f"{result['seconds']:.1f} s")
        for where, other in zip(c_others, others, strict=False):  # next-character accuracy
            measured = train_form.headline(other, result, "test")
            if measured is not None:
                where.metric(tr(other.label), **as_metric(measured, other.lower_is_better))
    if view.inspectable and kind.examples == "images":
        prediction_strip(view.run_id, key("predictions"))
    if view.inspectable and kind.examples == "text":
        prompt_box(view.run_id)
    if view.inspectable and st.button(
        tr("train.open_spectra"), icon=":material/insights:", key=key("to_spectra")
    ):
        st.switch_page("app_pages/spectra.py", query_params={"run": str(view.run_id)})


def as_metric(headline: train_form.Headline, lower_is_better: bool) -> dict[str, str]:
    """A headline's value and change, as st.metric takes them: a fall in green where lower is
    better (bits per character)."""
    return {
        "value": headline.value,
        "delta": tr(headline.change, value=headline.amount),
        "delta_color": "inverse" if lower_is_better else "normal",
    }


@st.cache_data(show_spinner=False, max_entries=256)
def _continued(store_path: str, run_id: int, prompt: str) -> writing.Writing:
    """core.classroom.writing.continued_by_run, once per run and prompt: the same prompt writes
    the same text, so a class typing the same words costs one computation."""
    return writing.continued_by_run(store(), run_id, prompt)


def prompt_box(run_id: int) -> None:
    """A student's own prompt, continued by the finished run and by the model it started from
    (core.classroom.writing), each as text; characters the model does not know, named."""
    st.markdown(f"**{tr('writing.title')}**")
    prompt = st.text_area(
        tr("writing.prompt"),
        max_chars=text.PROMPT_LIMIT,
        key=key("prompt"),
        height=68,
        placeholder=tr("writing.placeholder"),
        help=tr("writing.help", limit=text.PROMPT_LIMIT),
    )
    st.button(tr("writing.write"), icon=":material/edit_note:", key=key("write"))
    if not prompt:
        return
    try:
        written = _continued(store().where, run_id, prompt)
    except ValueError as error:  # a SettingError: said in the student's language
        st.error(refused(error))
        return
    except (StoreError, paths.OfflineError) as error:
        failed(error)
        return
    if written.unknown:
        unknown = writing.shown_characters(written.unknown)
        said(st.warning, tr("writing.unknown", count=len(written.unknown)), unknown, "help")
    st.caption(tr("writing.base"))
    st.code(written.prompt + written.base, language=None, wrap_lines=True)
    st.caption(tr("writing.trained"))
    st.code(written.prompt + written.trained, language=None, wrap_lines=True)


def open_moment(run_id: int, step: float) -> None:
    """The Spectra page at the moment a student clicked on a curve: the run's snapshot nearest
    to that step (core.analyses.reports.moment, as a click on Spectra's own curves picks it)."""
    query = {"run": str(run_id)}
    with contextlib.suppress(StoreError):  # deleted meanwhile: Spectra says so
        record = store().get(run_id)
        if record.snapshots:
            query["step"] = str(reports.moment(record.history, record.snapshots, step).step)
    st.switch_page("app_pages/spectra.py", query_params=query)


def which_run(view: live.RunView, form: RunConfig | None) -> None:
    """Which run the result below is (#id and name), and each setting in which it differs from
    the form above: a lesson link or a new tab sets the form, while the run shown may be the
    student's latest, trained under other settings (core.classroom.run_differences)."""
    name = default_name(view.config)
    with contextlib.suppress(StoreError):  # deleted meanwhile: its settings still tell
        name = name if view.run_id is None else store().get_summary(view.run_id).name
    which = train_form.run_title(view.run_id, live=view.job is not None)
    st.caption(tr(which, id=view.run_id, name=for_markdown(name)))
    differences = [] if form is None else run_differences.differing_settings(form, view.config)
    if differences:
        said = (
            tr("train.difference", name=d.name, run=for_markdown(d.run), form=for_markdown(d.form))
            for d in differences
        )
        st.warning(tr("train.differs", settings="; ".join(said)), icon=":material/difference:")


def current_view() -> live.RunView | None:
    """The run this page shows: the job started here, else the student's latest stored run."""
    job = st.session_state.get(key("job"))
    if job is not None:
        return live.RunView.of_job(job)
    run_id = st.session_state.get(key("run"))
    if run_id is None:
        return None
    try:
        record = train_form.stored_run(store(), run_id)
    except StoreError:  # deleted meanwhile (on the Compare page)
        del st.session_state[key("run")]
        return None
    return live.RunView.of_record(record)


def resume() -> None:
    """A session that has not started a run yet (a reload, a new tab, a server restart) shows
    the student's latest run: live if this server's pool still has it, else from the store."""
    if key("job") in st.session_state or key("run") in st.session_state:
        return
    student = student_id()
    found = live.latest(jobs.pool().jobs(owner=student), store().list(owner=student))
    if isinstance(found, Job):
        st.session_state[key("job")] = found
    elif found is not None:
        st.session_state[key("run")] = found.id


def charts(
    frame: live.Frame, planned: int, kind: DataKind, view: live.RunView | None = None
) -> None:
    """Loss and each of the task's kind's metrics (accuracy for images; bits per character and
    next-character accuracy for text), what a text run writes (samples), and σ(ΔW) once there
    is one. Empty axes too, before the
    first point and before the first run: the browser loads its plotting code (a 4.7 MB
    script, seconds of a busy laptop's CPU) while the student sets up or the run waits, not
    when the point comes.
    The curves of an ended run ``view`` are clickable, as Spectra's are: see open_moment."""
    figures = live_figures(frame.run, frame.version, language(), planned, kind.metrics, frame)
    clickable = view is not None and view.inspectable
    select: dict[str, Any] = {"on_select": "rerun", "selection_mode": "points"} if clickable else {}
    col_loss, col_metric, *col_others = st.columns(1 + len(kind.metrics))
    col_loss.markdown(f"**{tr('train.loss')}**")
    loss = col_loss.plotly_chart(figures["loss"], width="stretch", key=key("loss"), **select)
    col_metric.markdown(f"**{tr(kind.metric.heading)}**")
    scored = [col_metric.plotly_chart(figures["metric"], width="stretch", key=key("acc"), **select)]
    for where, other in zip(col_others, kind.others, strict=True):
        where.markdown(f"**{tr(other.heading)}**")
        figure, name = figures[other.validation], key(f"curve.{other.validation}")
        scored.append(where.plotly_chart(figure, width="stretch", key=name, **select))
    if clickable:
        st.caption(tr("train.click_moment"))
        clicked = [point for chart in (loss, *scored) for point in chart.selection.points]
        if clicked:
            open_moment(view.run_id, clicked[0]["x"])
    if view is not None:  # what a text run writes, right under its curves
        samples(frame, view.config)
    if "sigma" in figures:
        st.markdown(f"**{tr('train.sigma_title', step=frame.sigma_step)}**")
        st.plotly_chart(figures["sigma"], width="stretch", key=key("sigma"))


def samples(frame: live.Frame, config: RunConfig) -> None:
    """What a text run writes from its task's prompt: the base model's sample (step 0) and,
    under it, the newest one, refreshed as the run learns. As text: what a model writes is
    never read as Markdown."""
    if frame.base_sample is None:
        return
    prompt = writing.run_prompt(config)
    st.markdown(
        f"**{tr('train.sample_title', prompt=for_markdown(prompt))}**", help=tr("train.sample_help")
    )
    st.caption(tr("train.sample_before"))
    st.code(prompt + frame.base_sample, language=None, wrap_lines=True)
    if frame.sample_step:  # a sample after the first evaluation
        st.caption(tr("train.sample_now", step=frame.sample_step))
        st.code(prompt + frame.sample, language=None, wrap_lines=True)


@st.cache_data(show_spinner=False, max_entries=32)
def _forgetting(store_path: str, run_id: int) -> train.Forgetting | None:
    """core.training.train.forgetting of a saved run, once per run (None: no weights, no source
    task)."""
    try:
        run = measure.open_run(run_id, store())
    except (StoreError, paths.OfflineError, ValueError):
        return None
    return train.forgetting(run.config, run.base, run.model, run.num_classes)


def live_view(form: RunConfig | None) -> None:
    """Redrawn every view.poll_seconds() while the run goes on; a new pace (queued → running
    → done) takes one full rerun, as only a full run sets a fragment's timer. ``form``: the
    settings above (None if unreadable), which the run shown may not have been trained with."""
    view = current_view()
    if view is None:
        st.info(tr("train.nothing_yet"))
        form_kind = data.kind_of(st.session_state[key("dataset")])
        charts(live.NO_RUN, st.session_state[key("steps")] or 1, form_kind)
        return
    which_run(view, form)
    if (
        view.job is not None
        and not view.done
        and st.button(tr("train.stop"), icon=":material/stop_circle:", key=key("stop"))
    ):
        view.job.stop()
    progress(view)
    if view.done:
        ending(view)
    # (no charts for a run that ended before its first step)
    if not st.session_state[key("charts_outside")] and not (
        view.done and not view.frame.has_points
    ):
        charts(view.frame, view.planned, view.kind, view)
    if view.done:
        outcome(view)
    if view.poll_seconds() != st.session_state.get(key("poll")):
        st.rerun()


def running() -> bool:
    job = st.session_state.get(key("job"))
    return job is not None and not job.done


def start(config: RunConfig) -> None:
    try:
        st.session_state[key("job")] = jobs.submit(config, owner=student_id())
        st.session_state.pop(key("run"), None)
    except ValueError as error:
        st.error(refused(error))
    except StoreError as error:  # the queue could not write the run down: it is not queued
        failed(error)
