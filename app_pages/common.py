"""Streamlit glue shared by the pages: language, student id, settings in the URL (and a
teacher's exercise links), plot style and presenter mode, the task's example images.

Not a page itself (app.py lists the pages); everything worth testing that does
not need Streamlit lives in `core`.
"""

from __future__ import annotations

import contextlib
import math
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.classroom import links
from core.classroom.i18n import DEFAULT_LANGUAGE, LANGUAGES, catalog
from core.classroom.links import HIDE, PRESENTER
from core.common.config import RunConfig, SettingError
from core.common.paths import OfflineError
from core.common.text import for_markdown
from core.store.names import STUDENT_NAME_CHARS
from core.store.records import RunRecord
from core.store.runs import NoSuchRun, RunStore, StoreError, store_location
from core.training import data, examples, measure


def language() -> str:
    """The session's language: chosen in the sidebar, or given by a link's ``?lang=``."""
    if "lang" not in st.session_state:
        from_link = st.query_params.get("lang")
        st.session_state["lang"] = from_link if from_link in LANGUAGES else DEFAULT_LANGUAGE
    return st.session_state["lang"]


def presenter() -> bool:
    """Presenter mode (large text and figures, for a projector): the sidebar's switch, first
    set by a link's ``?presenter=true``. Kept in session state, so it survives page switches."""
    if PRESENTER not in st.session_state:
        params = links.query_values({PRESENTER: st.query_params.get_all(PRESENTER)})
        values, unreadable = links.from_query(params, {PRESENTER: False})
        st.session_state[PRESENTER] = values[PRESENTER]
        if unreadable:
            bad_link(unreadable, links.as_written(params, unreadable))
    return st.session_state[PRESENTER]


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


def tr(key: str, **values: object) -> str:
    """The text for ``key`` in the session's language."""
    return catalog(language()).t(key, **values)


def refused(error: ValueError) -> str:
    """What a page says when a setting or a run is refused: in the student's own language where
    core gives the parts (a SettingError, a shared server's LimitError: the variable that changes
    a limit is the teacher's business, the README lists them), else the error's one line. As
    Markdown: what a link or a student typed inside it (a pattern, a name) is escaped."""
    if isinstance(error, SettingError):
        values = {k: for_markdown(v) if isinstance(v, str) else v for k, v in error.values.items()}
        return tr(error.key, **values)
    return for_markdown(str(error))


def failed(error: Exception) -> None:
    """A store's or a computation's error (it may quote a run's or a file's name), as text."""
    st.error(for_markdown(str(error)), icon=":material/error:")


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


def titled_select(where: Any, label: str, options: list[str], widget: str, names: str) -> str:
    """A selectbox over catalog entries (models, datasets, shifts), each shown by its title."""
    return choice(
        where.selectbox, tr(label), options, widget, lambda name: tr(f"{names}.{name}.title")
    )


STUDENT_KEY = "lora-lab-student"  # the browser's localStorage entry and cookie
# A student id is 32 hex digits (a uuid4): unguessable, so owning runs by it keeps them private.
_STUDENT_ID = re.compile(r"[0-9a-f]{32}")
# Keeps the server's proposed id in the browser (localStorage, and a cookie the server reads on
# every later page load), or hands back the one the browser already keeps. The id never goes
# into a URL: a shared link carries settings, never its sender.
_IDENTITY_JS = """
export default function(component) {
  const { data, setStateValue } = component;
  const KEY = "STUDENT_KEY";
  const valid = (id) => typeof id === "string" && new RegExp(data.pattern).test(id);
  let id = null;
  try { id = window.localStorage.getItem(KEY); } catch (error) {}
  if (!valid(id)) {
    id = data.proposed;
    try { window.localStorage.setItem(KEY, id); } catch (error) {}
  }
  document.cookie = KEY + "=" + id + "; max-age=31536000; path=/; SameSite=Strict";
  // Only another id than proposed needs the server to hear of it (a rerun): the usual first
  // visit costs no rerun, which under load could cut the page's first run short.
  if (id !== data.proposed) setStateValue("student", id);
}
""".replace("STUDENT_KEY", STUDENT_KEY)
_identity = st.components.v2.component("lora_lab_identity", js=_IDENTITY_JS)


def student_id() -> str:
    """The student using this browser: the owner of the runs they start.

    The same after a reload, in a new tab and after a server restart: the browser keeps the id
    (localStorage and a cookie, see `remember_student`) and sends the cookie with every page
    load. On a first visit (no cookie yet) it is a new random id, which the browser then keeps;
    where there is no browser (AppTest), a new one for each session.
    """
    state = st.session_state
    if "student" not in state:
        cookie = st.context.cookies.get(STUDENT_KEY)
        known = isinstance(cookie, str) and _STUDENT_ID.fullmatch(cookie) is not None
        state["student"] = cookie if known else uuid.uuid4().hex
        state["student.kept"] = bool(known)  # whether the browser already keeps it
    return state["student"]


def remember_student() -> None:
    """Have the browser keep this session's student id, or learn the one it keeps already.

    Drawn (invisibly) on every page while the browser has not sent the id back in a cookie,
    i.e. during a student's first visit. A browser that keeps another id than proposed (its
    cookie was cleared, its localStorage was not) says so, and wins: its runs are the
    student's.
    """
    proposed = student_id()
    if st.session_state["student.kept"]:
        return
    answer = _identity(
        key="student.identity",
        data={"proposed": proposed, "pattern": f"^{_STUDENT_ID.pattern}$"},
        height=0,
        on_student_change=lambda: None,  # declares the state "student"; read just below
    ).get("student")
    if isinstance(answer, str) and _STUDENT_ID.fullmatch(answer):
        st.session_state["student"], st.session_state["student.kept"] = answer, True


NAME = "student.name"  # the sidebar's name box


def name_box() -> None:
    """The sidebar's optional name: the teacher sees it beside the student's runs when every run
    is shown. Kept on the server under the student's id (never in a link); shown again after a
    reload, and once the browser has told which id it keeps."""
    owner = student_id()
    if st.session_state.get("student.named") != owner:
        st.session_state[NAME] = student_names().get(owner, "")
        st.session_state["student.named"] = owner
    st.text_input(
        tr("sidebar.name"),
        key=NAME,
        max_chars=STUDENT_NAME_CHARS,
        placeholder=tr("sidebar.name_placeholder"),
        help=tr("sidebar.name_help"),
        on_change=_keep_name,
    )


def _keep_name() -> None:
    try:
        st.session_state[NAME] = store().name_student(student_id(), st.session_state[NAME])
        _names.clear()
    except ValueError as error:  # control characters (core.store.names.checked_name): nothing kept
        st.error(refused(error))
    except StoreError as error:
        failed(error)


@st.cache_data(ttl=10, show_spinner=False)
def _names(where: str) -> dict[str, str]:
    return store().student_names()


def student_names() -> dict[str, str]:
    """{owner: name} of the students who gave a name (read at most every 10 s per server)."""
    return _names(store().where)


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
    An exercise link's ``hide`` goes to ``"<page>._hidden"`` (see `drawn`); it stays until
    another link resets the page.
    """
    params = links.query_values({key: st.query_params.get_all(key) for key in st.query_params})
    from_link = {key: value for key, value in params.items() if key in defaults or key == HIDE}
    fresh: list[str] = []
    if from_link and from_link != st.session_state.get(f"{page}._link"):
        values, unreadable = links.from_query(from_link, defaults, choices)
        hidden, unknown = links.hidden_from_query(from_link, defaults)
        for derived in [k for k in st.session_state if k.startswith(f"{page}.")]:
            del st.session_state[derived]
        for key, value in values.items():
            st.session_state[f"{page}.{key}"] = value
        st.session_state[f"{page}._hidden"] = hidden
        st.session_state[f"{page}._link"] = from_link
        fresh = [key for key in from_link if key in defaults and key not in unreadable]
        if unreadable or unknown:
            written = links.as_written(from_link, unreadable) + links.as_written(
                {HIDE: unknown}, [HIDE] if unknown else []
            )
            bad_link(unreadable + ([HIDE] if unknown else []), written)
    st.session_state[f"{page}._fresh"] = fresh
    for key, value in defaults.items():
        st.session_state.setdefault(f"{page}.{key}", value)


def drawn(page: str, setting: str) -> bool:
    """Whether the page draws the control of ``setting``: not when an exercise link hides it
    (its value is then the link's, or the default, and the student cannot change it)."""
    return setting not in st.session_state.get(f"{page}._hidden", [])


def bad_link(keys: list[str], written: Sequence[str] = ()) -> None:
    """The yellow line that names the page's settings (``keys``, the app's own names) whose
    value in the link could not be read, and under it what the link wrote for them
    (core.classroom.links.as_written), as plain text."""
    said(st.warning, tr("common.bad_link", keys=", ".join(keys)), "\n".join(written), "link_off")


def said(alert: Callable, message: str, given: str, icon: str) -> None:
    """An alert (``alert``: st.warning, st.error) with the app's ``message``, then ``given``:
    what a link, a file or the store gave (a link's value, a zip's entry names, a run's row), as
    plain text. Alerts read Markdown, st.text does not: a value written as a link or an image
    stays those characters, and the app's own warning never links or loads where a link asks
    (no escaping to get wrong). ``icon``: a Material icon's name."""
    alert(message, icon=f":material/{icon}:")
    if given:
        st.text(given)


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

    Parameters of other pages go; the app's (language, presenter mode) stay, and so does an
    exercise link's ``hide`` with the values it fixed.
    """
    hidden = st.session_state.get(f"{page}._hidden", [])
    query = links.exercise_query(current_settings(page, defaults), defaults, hidden)
    for name in [n for n in st.query_params if n not in query and n not in links.APP_PARAMS]:
        del st.query_params[name]
    for name, value in query.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    st.session_state[f"{page}._link"] = query


def exercise_link(page: str, values: dict[str, Any], widget: str, intro: str) -> None:
    """A teacher's link to ``page`` ("train" or "compare", its url path) with ``values``: pick
    the controls to hide, copy the link (st.code has a copy button). The link keeps the
    language; presenter mode is the teacher's, not the students'. Drawn only once a teacher
    turns it on: the code box alone adds about a second to a page's load in the browser."""
    if not st.toggle(tr("exercise.title"), key=f"{widget}.open"):
        return
    st.caption(tr(intro))
    defaults = links.page_defaults(page)
    hidden = st.multiselect(
        tr("exercise.hide"),
        list(defaults),
        key=widget,
        help=tr("exercise.hide_help"),
        placeholder=tr("exercise.hide_placeholder"),
    )
    query = links.exercise_query(values, defaults, hidden)
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


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> RunStore:
    return RunStore(path)


def store() -> RunStore:
    """The run database, opened once per server (it is safe to share between threads)."""
    return _open_store(str(store_location()))


def visible_runs(
    everyone: bool, also: tuple[int, ...] = ()
) -> tuple[list[RunRecord], dict[int, str]]:
    """(this student's runs, or every run on the server, newest first, plus any in ``also``:
    runs a shared link points to; {id: why} of those that cannot be read, each named on the
    page in a warning). A link to a deleted run is skipped: the page falls back to the newest."""
    records, unreadable = store().listing(owner=None if everyone else student_id())
    listed = {record.id for record in records} | set(unreadable)
    for run_id in also:
        if run_id and run_id not in listed:
            try:
                records.append(store().get_summary(run_id))
            except NoSuchRun:
                pass
            except StoreError as error:  # there, but its row was edited by hand
                unreadable[run_id] = str(error)
    for why in unreadable.values():  # a row edited by hand: its values said as text
        said(st.warning, tr("common.unreadable_run"), why, "error")
    return records, unreadable


def run_label(record: RunRecord) -> str:
    """ "#3 · lora r=4 · … · finished", and whose run it is if not this student's and named."""
    label = f"#{record.id} · {record.name} · {status_label(record.status)}"
    owner = student_names().get(record.owner) if record.owner != student_id() else None
    return f"{label} · {owner}" if owner else label


def status_label(status: str) -> str:
    """A run's status in the session's language; one the app has no word for, as stored."""
    return catalog(language()).status(status)


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

IMAGE_WIDTH = 56  # px: a 28×28 image at twice its size (presenter mode: larger still)
STRIP_CSS = "<style>.{css_class} img {{ image-rendering: pixelated; }}</style>"  # crisp pixels


def css_class(key: str) -> str:
    """The CSS class Streamlit gives an element with this key (other characters become -)."""
    return "st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", key)


@st.cache_data(show_spinner=False, max_entries=64)
def _task_examples(model: str, dataset: str, shift: str, shift_params: dict, seed: int) -> dict:
    """core.training.examples.task_examples, once per task for the whole server; or {"problem": …}
    (never downloads: a dataset not on this computer yet shows no images)."""
    config = RunConfig(
        model=model, dataset=dataset, shift=shift, shift_params=shift_params, seed=seed
    )
    if not data.on_this_computer(config.dataset, config.shift, config.shift_params):
        return {"problem": "examples.not_here"}
    try:
        return examples.task_examples(config)
    except (OfflineError, ValueError) as error:
        return {"problem": "examples.failed", "reason": str(error)}


def image_width() -> int:
    """How wide a 28×28 example image is drawn, in pixels."""
    return round(IMAGE_WIDTH * (PRESENTER_SCALE if presenter() else 1.0))


@contextlib.contextmanager
def crisp_images(key: str):
    """A container whose images are drawn pixel for pixel, not blurred as they are enlarged."""
    with st.container(key=key):
        st.html(STRIP_CSS.format(css_class=css_class(key)))
        yield


def task_strip(model: str, dataset: str, shift: str, shift_params: dict, seed: int, key: str):
    """The same test images before and after the task's shift, each with its class (where the
    shift renames a class, as label-permute renames all ten, old → new), so that a student
    sees what the model must adapt to before training. Drawn for a dataset whose kind shows
    its examples as images (core.training.kinds), captioned with classes where it has them."""
    kind = data.kind_of(dataset)
    if kind.examples != "images":  # another kind draws its own examples
        return
    strip = _task_examples(
        model if shift == "planted-rank" else "",  # only a planted update depends on the model
        dataset,
        shift,
        shift_params,
        seed,
    )
    with st.expander(tr("examples.title"), expanded=True):
        if "problem" in strip:
            st.caption(tr(strip["problem"], reason=for_markdown(strip.get("reason", ""))))
            return
        before, after = strip["labels_before"], strip["labels_after"]
        # one st.image per row: ten images each in a column of their own took the browser
        # a third of a second longer to draw (bench/page_load.py)
        with crisp_images(key):
            st.caption(tr("examples.before"))
            st.image(
                list(strip["before"]),
                caption=[str(c) for c in before] if kind.has_classes else None,
                width=image_width(),
                output_format="PNG",  # not JPEG's blur around thin strokes
            )
            if shift == "none":
                st.caption(tr("examples.none"))
                return
            st.caption(tr("examples.after"))
            renamed = [
                str(new) if new == old else f"{old} → {new}"
                for old, new in zip(before, after, strict=True)
            ]
            st.image(
                list(strip["after"]),
                caption=renamed if kind.has_classes else None,
                width=image_width(),
                output_format="PNG",
            )


@st.cache_data(show_spinner=False, max_entries=32)
def _predictions(store_path: str, run_id: int) -> dict | None:
    """core.training.examples.prediction_examples of a saved run, once per run (None: no
    weights)."""
    try:
        return examples.prediction_examples(measure.open_run(run_id, store()))
    except (StoreError, OfflineError, ValueError):
        return None


def prediction_strip(run_id: int, key: str) -> None:
    """A few test images of a run with the class the model gave them before and after
    training, some still wrong, and how many training fixed, broke and left wrong. One
    st.image of them all, as the task's strip: it wraps, so a phone shows several a row."""
    shown_examples = _predictions(store().where, run_id)
    if shown_examples is None:
        return
    counts = {name: f"{count:,}" for name, count in shown_examples["counts"].items()}
    st.markdown(f"**{tr('examples.predictions_title')}**")
    st.caption(tr("examples.predictions_counts", **counts))
    labels, before, after = (shown_examples[k] for k in ("labels", "before", "after"))
    captions = [
        tr("examples.prediction", label=y, before=b, after=a) + (" ✓" if a == y else " ✗")
        for y, b, a in zip(labels, before, after, strict=True)
    ]
    with crisp_images(key):
        st.image(
            list(shown_examples["images"]),
            caption=captions,
            width=image_width(),
            output_format="PNG",
        )
