"""A page's settings: select boxes whose labels change, the settings in the URL (a shared link,
a teacher's exercise link that hides some controls) and the app's own address."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from app_pages.common.session import bad_link, language, store, student_id, tr
from core.classroom import goals, links
from core.classroom.goals import GOAL
from core.classroom.i18n import DEFAULT_LANGUAGE
from core.classroom.links import HIDE

_RELABELLED = "relabelled-widgets"  # session key: the widgets that choice() drew


def choice(
    draw: Callable, label: str, options: list, widget: str, label_of: Callable[[Any], str], **kwargs
) -> Any:
    """A select box (``draw``: a selectbox or multiselect) whose options' labels can change.

    The browser keeps the *label* of a box's choice, not the value: once the labels change (the
    language is switched, a run's status moves from running to finished), the kept label matches
    no option, and Streamlit quietly falls back to the first option while the box still shows the
    old label. So every such box is noted here, and relabel() gives each its value again before
    a page is drawn, which makes Streamlit send the label that is current.
    """
    st.session_state.setdefault(_RELABELLED, set()).add(widget)
    labels = {option: label_of(option) for option in options}  # now, in this session's language
    return draw(
        label,
        options,
        key=widget,
        persist_state="session",
        format_func=lambda option: labels.get(option, str(option)),
        **kwargs,
    )


def relabel() -> None:
    """Give every box choice() drew its value again (see there); app.py calls it on every run.

    Read before the box is drawn again, a value is still read with the labels the browser has."""
    for widget in st.session_state.get(_RELABELLED, ()):
        if widget in st.session_state:
            st.session_state[widget] = st.session_state[widget]


def titled_select(
    where: Any, label: str, options: list[str], widget: str, names: str, **kwargs: Any
) -> str:
    """A selectbox over catalog entries (models, datasets, shifts), each shown by its title;
    ``kwargs`` go to the selectbox (an on_change)."""
    return choice(
        where.selectbox,
        tr(label),
        options,
        widget,
        lambda name: tr(f"{names}.{name}.title"),
        **kwargs,
    )


def load_settings(
    page: str, defaults: dict[str, Any], choices: dict[str, Any] | None = None
) -> None:
    """Put the page's settings into session state before its widgets are drawn.

    A link that carries settings this page did not write itself (a shared URL,
    a lesson) resets the page to the defaults plus the link's values; otherwise
    the session keeps what the student last chose, also across page switches.
    Widget keys are ``"<page>.<setting>"``; other ``"<page>."`` keys hold widgets
    derived from the settings, and a link resets them too. ``choices`` lists the allowed
    values of some settings: a link's value outside them is reported, not replaced by
    another choice. ``"<page>._fresh"`` holds the keys a link set in this very rerun (empty
    otherwise), for checks only the page can make (targets that pick no layer of the model).
    An exercise link's ``hide`` goes to ``"<page>._hidden"`` (see `drawn`) and its ``goal`` to
    ``"<page>._goal"`` (see `goal_section`); they stay until another link resets the page.
    """
    params = links.query_values({key: st.query_params.get_all(key) for key in st.query_params})
    from_link = {
        key: value for key, value in params.items() if key in defaults or key in (HIDE, GOAL)
    }
    fresh: list[str] = []
    if from_link and from_link != st.session_state.get(f"{page}._link"):
        values, unreadable = links.from_query(from_link, defaults, choices)
        hidden, unknown = links.hidden_from_query(from_link, defaults)
        goal, bad_goal = goals.from_link(from_link)
        for derived in [k for k in st.session_state if k.startswith(f"{page}.")]:
            del st.session_state[derived]
        for key, value in values.items():
            st.session_state[f"{page}.{key}"] = value
        st.session_state[f"{page}._hidden"] = hidden
        st.session_state[f"{page}._goal"] = goal.text if goal else ""
        st.session_state[f"{page}._link"] = from_link
        fresh = [key for key in from_link if key in defaults and key not in unreadable]
        if unreadable or unknown or bad_goal:
            written = links.as_written(from_link, unreadable) + links.as_written(
                {HIDE: unknown}, [HIDE] if unknown else []
            )
            bad = unreadable + ([HIDE] if unknown else []) + ([GOAL] if bad_goal else [])
            bad_link(bad, written + bad_goal)
    st.session_state[f"{page}._fresh"] = fresh
    for key, value in defaults.items():
        st.session_state.setdefault(f"{page}.{key}", value)


def drawn(page: str, setting: str) -> bool:
    """Whether the page draws the control of ``setting``: not when an exercise link hides it
    (its value is then the link's, or the default, and the student cannot change it)."""
    return setting not in st.session_state.get(f"{page}._hidden", [])


def fixed_by_link(page: str) -> None:
    """One line naming the settings an exercise link fixed, so a student knows why they are
    not there (their values stay unsaid: an exercise may be about guessing one)."""
    hidden = st.session_state.get(f"{page}._hidden", [])
    if hidden:
        st.caption(tr("exercise.fixed", names=", ".join(hidden)), help=tr("exercise.fixed_help"))


def current_settings(page: str, defaults: dict[str, Any]) -> dict[str, Any]:
    return {key: st.session_state[f"{page}.{key}"] for key in defaults}


def save_settings(page: str, defaults: dict[str, Any]) -> None:
    """Write the page's current settings into the URL, so copying it shares them.

    Parameters of other pages go; the app's (language, presenter mode) stay, and so do an
    exercise link's ``hide`` with the values it fixed and its ``goal``.
    """
    hidden = st.session_state.get(f"{page}._hidden", [])
    query = links.exercise_query(current_settings(page, defaults), defaults, hidden)
    if goal := st.session_state.get(f"{page}._goal"):
        query[GOAL] = goal
    for name in [n for n in st.query_params if n not in query and n not in links.APP_PARAMS]:
        del st.query_params[name]
    for name, value in query.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    st.session_state[f"{page}._link"] = query


def exercise_link(
    page: str, values: dict[str, Any], widget: str, intro: str, goal: str = ""
) -> None:
    """A teacher's link to ``page`` ("train" or "compare", its url path) with ``values``: pick
    the controls to hide and, on the Train page, a goal (``goal``: the one it starts with),
    copy the link (st.code has a copy button). The link keeps the language; presenter mode is
    the teacher's, not the students'. Drawn only once a teacher turns it on: the code box alone
    adds about a second to a page's load in the browser."""
    if not st.toggle(tr("exercise.title"), key=f"{widget}.open"):
        return
    st.caption(tr(intro))
    defaults = links.page_defaults(page, values["model"])
    hidden = st.multiselect(
        tr("exercise.hide"),
        list(defaults),
        key=widget,
        help=tr("exercise.hide_help"),
        placeholder=tr("exercise.hide_placeholder"),
    )
    query = links.exercise_query(values, defaults, hidden)
    if page == "train":  # the page that says the goal and judges a student's runs by it
        goal_text = st.text_input(
            tr("exercise.goal"),
            value=goal,
            key=f"{widget}.goal",
            placeholder="acc>=0.9,params<=5000",
            help=tr("class.goal_help"),
        )
        if goal_text.strip():
            try:
                query[GOAL] = goals.parse_goal(goal_text).text
            except ValueError as error:
                st.warning(tr("class.bad_goal"), icon=":material/flag:")
                st.text(str(error))
    if language() != DEFAULT_LANGUAGE:
        query["lang"] = language()
    st.code(links.page_url(app_address(), page, query), language=None)
    st.caption(tr("exercise.copy"))


_PAGE_PATH = "app.page_path"  # session key: the url path of the page being drawn


def showing(page_path: str) -> None:
    """Note the url path of the page this run draws (app.py, once st.navigation chose it)."""
    st.session_state[_PAGE_PATH] = page_path


def app_address() -> str:
    """The app's address as the browser reaches it (a reverse proxy's prefix included), without
    the page's path: what a link to any page starts with (core.classroom.links.app_address).
    Without a browser (AppTest), the local server's."""
    here = st.context.url or "http://localhost:8501"
    return links.app_address(here, st.session_state.get(_PAGE_PATH, ""))


GOAL_RUNS = 5  # of a student's latest runs, judged against the goal on the Train page


def goal_section(page: str, kind: str) -> None:
    """An exercise link's goal in words, and whether each of this student's finished runs
    of the task's `kind` meets it (newest first)."""
    text = st.session_state.get(f"{page}._goal")
    if not text:
        return
    goal = goals.parse_goal(text)
    parts = [tr(key, **values) for key, values in (c.said(kind) for c in goal.conditions)]
    st.info(tr("goals.title", goal=tr("goals.and").join(parts)), icon=":material/flag:")
    records, _ = store().listing(owner=student_id())
    ended = [r for r in records if r.status != "running" and r.kind == kind][:GOAL_RUNS]
    if ended:
        lines = [
            tr("goals.met" if goal.check(record).met else "goals.missed", run=record.id)
            + f" · {record.name}"
            for record in ended
        ]
        st.text("\n".join(lines))
