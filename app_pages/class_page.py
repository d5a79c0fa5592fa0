"""Class: the teacher's live picture of the class (only a session that typed the teacher key).

Every student with their runs, one figure of the class's finished runs for the projector, the
queue, and an exercise's goal with the runs that meet it; at the end of the lesson the class's
runs are exported, archived under a name, or cleared. What it shows is core.classroom.class_view's,
computed once per poll for every teacher watching.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.common import choice, failed, is_teacher, refused, status_label, store, tr
from app_pages.figures.class_page import class_figure
from core.classroom import class_view as classes
from core.classroom import goals
from core.classroom.class_view import ClassRun, ClassView
from core.common.text import for_markdown
from core.jobs import pool as jobs
from core.store.runs import StoreError
from core.training import export
from core.training.kinds import KINDS

POLL_SECONDS = 3.0  # as the Train page's live view polls a running job
CURRENT = ""  # the class selectbox's value for this week's class (the runs not archived)


def key(name: str) -> str:
    return f"class.{name}"


def the_class(class_name: str, goal: goals.Goal | None = None) -> ClassView:
    """The class as it stands now (`class_name`: an archived class, or CURRENT: the runs not
    archived and the queue's jobs)."""
    records = store().list()
    archived = store().archived()
    records = [record for record in records if archived.get(record.id, CURRENT) == class_name]
    queued = jobs.pool().jobs() if class_name == CURRENT else []
    return classes.class_view(records, queued, store().student_names(), goal)


@st.cache_data(ttl=POLL_SECONDS, show_spinner=False)
def shared_view(where: str, class_name: str, goal_text: str) -> ClassView:
    """the_class, computed at most once per poll for every session watching it (`where`: the
    store)."""
    return the_class(class_name, goals.parse_goal(goal_text) if goal_text else None)


def goal_box() -> goals.Goal | None:
    """The exercise's goal, as a link writes it; a goal that cannot be read is said, and none
    is used."""
    text = st.text_input(
        tr("class.goal"),
        key=key("goal"),
        placeholder="acc>=0.9,params<=5000",
        help=tr("class.goal_help"),
    )
    if not text.strip():
        return None
    try:
        return goals.parse_goal(text)
    except ValueError as error:
        st.warning(tr("class.bad_goal"), icon=":material/flag:")
        st.text(str(error))
        return None


def score_text(run: ClassRun) -> str:
    return "" if run.score is None else KINDS[run.kind].metric.written(run.score)


def runs_table(view: ClassView) -> pd.DataFrame:
    """One row per run of each student: text cells (names are never Markdown)."""
    rows = [
        {
            tr("class.col_student"): student.label,
            tr("class.col_run"): "" if run.run_id is None else f"#{run.run_id}",
            tr("class.col_name"): run.name,
            tr("class.col_status"): status_label(run.status),
            tr("class.col_score"): score_text(run),
            tr("class.col_params"): run.trainable_params,
            tr("class.col_goal"): {True: "✓", False: "✗", None: ""}[run.meets_goal],
            tr("class.col_why"): run.reason,
        }
        for student in view.students
        for run in student.runs
    ]
    return pd.DataFrame(rows)


def students_table(view: ClassView) -> pd.DataFrame:
    """One row per student: where their runs stand, their best score, why they are stuck."""
    rows = []
    for student in view.students:
        best = student.best
        rows.append(
            {
                tr("class.col_student"): student.label,
                tr("class.col_queued"): student.count("queued", "running"),
                tr("class.col_finished"): student.count("finished", "imported"),
                tr("class.col_failed"): student.count("failed", "stopped", "unfinished"),
                tr("class.col_best"): "" if best is None else score_text(best),
                tr("class.col_why"): student.last_failure,
            }
        )
    return pd.DataFrame(rows)


def best_table(view: ClassView, revealed: bool) -> pd.DataFrame:
    """The high-score table: who met the goal and how well; their settings once revealed."""
    by_run = {run.run_id: student for student in view.students for run in student.runs}
    rows = []
    for place, run in enumerate(view.best, start=1):
        row = {
            tr("class.col_place"): place,
            tr("class.col_student"): by_run[run.run_id].label,
            tr("class.col_score"): score_text(run),
            tr("class.col_params"): run.trainable_params,
        }
        if revealed:
            row[tr("class.col_setting")] = run.setting
            row[tr("class.col_name")] = run.name
        rows.append(row)
    return pd.DataFrame(rows)


def live(class_name: str, goal: goals.Goal | None) -> None:
    """The class as it stands, redrawn every POLL_SECONDS without a reload."""
    try:
        view = shared_view(store().where, class_name, goal.text if goal else "")
    except StoreError as error:
        failed(error)
        return
    queue = view.queue
    columns = st.columns(4)
    columns[0].metric(tr("class.students"), len(view.students))
    columns[1].metric(tr("class.training"), queue.running)
    columns[2].metric(tr("class.waiting"), queue.waiting)
    wait = "—" if queue.longest_wait is None else f"{queue.longest_wait:.0f} s"
    columns[3].metric(tr("class.longest_wait"), wait)
    points = view.points
    for kind in sorted({run.kind for _, run in points}):
        st.plotly_chart(class_figure(points, kind), width="stretch", key=key(f"figure.{kind}"))
    if not points:
        st.info(tr("class.no_points"), icon=":material/scatter_plot:")
    if goal is not None:
        st.subheader(tr("class.best_title", goal=goal.text))
        if view.best:
            revealed = st.session_state.get(key("reveal"), False)
            st.table(best_table(view, revealed), hide_index=True)  # static: a projector's
        else:
            st.info(tr("class.none_met"), icon=":material/flag:")
    if not view.students:
        st.info(tr("class.no_runs"))
        return
    st.subheader(tr("class.students_title"))
    st.table(students_table(view), hide_index=True)
    st.subheader(tr("class.runs_title"))
    st.dataframe(runs_table(view), hide_index=True, width="stretch")


def done(said: str) -> None:
    """After an archive or a clear: the whole page again (the class's list of archives, its
    runs), with what was done said at the top of this section."""
    shared_view.clear()
    st.session_state[key("done")] = said
    st.session_state.pop(key("clear_sure"), None)
    st.rerun()


def end_of_class(class_name: str) -> None:
    """Export the class's runs (CSV), archive them under a name, or clear them."""
    if said := st.session_state.pop(key("done"), None):
        st.success(said)
    view = the_class(class_name)  # as it is now: what is exported, archived or deleted
    ids = [run.run_id for student in view.students for run in student.runs if run.run_id]
    st.download_button(
        tr("class.csv"),
        runs_table(view).to_csv(index=False),
        file_name="lora-lab-class.csv",
        mime="text/csv",
        icon=":material/download:",
        key=key("csv"),
        disabled=not ids,
    )
    st.download_button(
        tr("class.adapters"),
        data=lambda: export.adapters_zip(store(), ids),  # built when clicked: it rebuilds each run
        file_name="lora-lab-class-adapters.zip",
        mime="application/zip",
        icon=":material/folder_zip:",
        key=key("adapters"),
        disabled=not ids,
        help=tr("class.adapters_help"),
    )
    if class_name != CURRENT:
        return
    name = st.text_input(tr("class.archive_name"), key=key("archive_name"), max_chars=60)
    if st.button(
        tr("class.archive"), key=key("archive"), disabled=not ids, icon=":material/inventory_2:"
    ):
        try:
            kept = store().archive(ids, name)
        except ValueError as error:
            st.error(refused(error))
        else:
            said = tr("class.archived", runs=len(ids), name=for_markdown(kept))
            done(said)
    sure = st.checkbox(tr("class.clear_sure", runs=len(ids)), key=key("clear_sure"))
    if st.button(
        tr("class.clear"), key=key("clear"), disabled=not (ids and sure), icon=":material/delete:"
    ):
        left = []
        for run_id in ids:
            try:
                store().delete(run_id)
            except StoreError:  # still training: it stays, and is said
                left.append(run_id)
        said = tr("class.cleared", runs=len(ids) - len(left))
        if left:
            said += " " + tr("class.clear_left", runs=", ".join(f"#{i}" for i in left))
        done(said)


# ----------------------------------------------------------------------------- the page

if not is_teacher():  # app.py lists this page only for the teacher; a stale tab stops here
    st.stop()
st.title(tr("class.title"))
st.caption(tr("class.intro"))
try:
    past = sorted(set(store().archived().values()))
except StoreError as error:
    failed(error)
    st.stop()
col_class, col_goal = st.columns([1, 2])
class_name = choice(  # its labels change with the language: see choice
    col_class.selectbox,
    tr("class.which"),
    [CURRENT, *past],
    key("which"),
    lambda name: tr("class.this_week") if name == CURRENT else name,
)
with col_goal:
    goal = goal_box()
if goal is not None:
    st.toggle(tr("class.reveal"), key=key("reveal"), help=tr("class.reveal_help"))
st.fragment(live, run_every=POLL_SECONDS)(class_name, goal)
with st.expander(tr("class.end_title")):
    end_of_class(class_name)
