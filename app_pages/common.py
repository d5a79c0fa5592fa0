"""Streamlit glue shared by the pages: language, session id, settings in the URL, plot style.

Not a page itself (app.py lists the pages); everything worth testing that does
not need Streamlit lives in `core`.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core import links, runs
from core.i18n import DEFAULT_LANGUAGE, LANGUAGES, catalog
from core.runs import RunRecord, RunStore, StoreError


def language() -> str:
    """The session's language: chosen in the sidebar, or given by a link's ``?lang=``."""
    if "lang" not in st.session_state:
        from_link = st.query_params.get("lang")
        st.session_state["lang"] = from_link if from_link in LANGUAGES else DEFAULT_LANGUAGE
    return st.session_state["lang"]


def tr(key: str, **values: object) -> str:
    """The text for ``key`` in the session's language."""
    return catalog(language()).t(key, **values)


def titled_select(where: Any, label: str, options: list[str], widget: str, names: str) -> str:
    """A selectbox over catalog entries (models, datasets, shifts), each shown by its title."""
    return where.selectbox(
        tr(label),
        options,
        key=widget,
        persist_state="session",
        format_func=lambda name: tr(f"{names}.{name}.title"),
    )


def session_id() -> str:
    """This browser session's id: the owner of the runs it starts."""
    if "session_id" not in st.session_state:
        st.session_state["session_id"] = uuid.uuid4().hex[:12]
    return st.session_state["session_id"]


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
    """
    from_link = {key: value for key, value in st.query_params.to_dict().items() if key in defaults}
    fresh: list[str] = []
    if from_link and from_link != st.session_state.get(f"{page}._link"):
        values, unreadable = links.from_query(from_link, defaults, choices)
        for derived in [k for k in st.session_state if k.startswith(f"{page}.")]:
            del st.session_state[derived]
        for key, value in values.items():
            st.session_state[f"{page}.{key}"] = value
        st.session_state[f"{page}._link"] = from_link
        fresh = [key for key in from_link if key not in unreadable]
        if unreadable:
            bad_link(unreadable)
    st.session_state[f"{page}._fresh"] = fresh
    for key, value in defaults.items():
        st.session_state.setdefault(f"{page}.{key}", value)


def bad_link(keys: list[str]) -> None:
    """The yellow line that names the link's values that could not be read."""
    st.warning(tr("common.bad_link", keys=", ".join(keys)), icon=":material/link_off:")


def current_settings(page: str, defaults: dict[str, Any]) -> dict[str, Any]:
    return {key: st.session_state[f"{page}.{key}"] for key in defaults}


def save_settings(page: str, defaults: dict[str, Any]) -> None:
    """Write the page's current settings into the URL, so copying it shares them.

    Parameters of other pages go; the language (``lang``) stays.
    """
    query = links.to_query(current_settings(page, defaults), defaults)
    for name in [name for name in st.query_params if name not in query and name != "lang"]:
        del st.query_params[name]
    for name, value in query.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    st.session_state[f"{page}._link"] = query


def style(fig: go.Figure, height: int = 360, **layout: Any) -> go.Figure:
    """Large readable text and tight margins: these figures are shown on projectors."""
    defaults = {
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "font": {"size": 15},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    }
    fig.update_layout(height=height, **(defaults | layout))
    return fig


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> RunStore:
    return RunStore(path)


def store() -> RunStore:
    """The run database, opened once per server (it is safe to share between threads)."""
    return _open_store(str(runs.store_location()))


def visible_runs(everyone: bool, also: tuple[int, ...] = ()) -> list[RunRecord]:
    """This session's runs (or every run on the server), newest first, plus any in ``also``
    (runs a shared link points to)."""
    records = store().list(owner=None if everyone else session_id())
    shown = {record.id for record in records}
    for run_id in also:
        if run_id and run_id not in shown:
            # a link to a deleted run is skipped: the page falls back to the newest run
            with contextlib.suppress(StoreError):
                records.append(store().get_summary(run_id))
    return records


def run_label(record: RunRecord) -> str:
    return f"#{record.id} · {record.name} · {tr(f'status.{record.status}')}"


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
