"""Who is using the app and in which language: the session's language and presenter mode, the
texts (tr) and how a refusal or an error is said, the student's id and name, whether they are
the teacher, the run store and the runs a page may list."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence

import streamlit as st

from core.classroom import links
from core.classroom.i18n import DEFAULT_LANGUAGE, LANGUAGES, catalog
from core.classroom.links import PRESENTER
from core.common.config import SettingError
from core.common.teacher import KeyGate, session_backoff, teacher_key
from core.common.text import for_markdown
from core.store.names import STUDENT_NAME_CHARS
from core.store.records import RunRecord
from core.store.runs import NoSuchRun, RunStore, StoreError, store_location


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


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> RunStore:
    return RunStore(path)


def store() -> RunStore:
    """The run database, opened once per server (it is safe to share between threads)."""
    return _open_store(str(store_location()))


def visible_runs(
    everyone: bool, also: tuple[int, ...] = ()
) -> tuple[list[RunRecord], dict[int, str]]:
    """(this student's runs, or, for the teacher who asks, every run on the server, newest
    first, plus any in ``also`` that this session may open (`own_links`): runs a shared link
    points to; {id: why} of those that cannot be read, each named on the page in a warning). A
    link to a deleted run is skipped: the page falls back to the newest."""
    everyone = everyone and is_teacher()
    records, unreadable = store().listing(owner=None if everyone else student_id())
    listed = {record.id for record in records} | set(unreadable)
    for run_id in also:
        if run_id and run_id not in listed:
            try:
                record = store().get_summary(run_id)
            except NoSuchRun:
                continue
            except StoreError as error:  # there, but its row was edited by hand
                unreadable[run_id] = str(error)
                continue
            if record.owner == student_id() or is_teacher():
                records.append(record)
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


def own_links(run_ids: Sequence[int]) -> tuple[int, ...]:
    """The runs a link names (``run=N``), with each that is another student's replaced by 0
    (none), unless this session is the teacher's: ids are sequential, so a link to another's
    run opens its settings on the Train page (as a shared link does), never the run itself."""
    kept = []
    for run_id in run_ids:
        try:
            record = store().get_summary(run_id) if run_id else None
        except StoreError:  # deleted, or unreadable: the page says which
            record = None
        if record is None or record.owner == student_id() or is_teacher():
            kept.append(run_id)
            continue
        st.info(tr("common.not_yours", run=run_id), icon=":material/lock:")
        st.page_link(
            "app_pages/train.py",
            label=tr("common.open_settings"),
            icon=":material/tune:",
            query_params=links.settings_query(record.config),
        )
        kept.append(0)
    return tuple(kept)


# ----------------------------------------------------------------------------- the teacher

TEACHER = "teacher"  # session key: True once this session typed the server's teacher key
_TYPED = "teacher.typed"  # the sidebar's key box (emptied once read: the key is not kept)
_BACKOFF = "teacher.backoff"  # this session's wrong tries (core.common.teacher.Backoff)


@st.cache_resource(show_spinner=False)
def _gate(key: str | None) -> KeyGate:
    return KeyGate(key)


def key_gate() -> KeyGate:
    """The server's teacher key and its back-off of wrong tries, one for every session.
    ValueError (a server setting) for a key too short to keep a class's views closed."""
    return _gate(teacher_key())


def is_teacher() -> bool:
    """Whether this browser session typed the server's teacher key (never true without one)."""
    return key_gate().open and st.session_state.get(TEACHER) is True


def teacher_box() -> None:
    """The sidebar's teacher key box, where the server has a key: typed once, kept for the
    browser session as the fact that it was right (not the key), never put in a link."""
    if not key_gate().open:
        return
    if is_teacher():
        st.caption(tr("teacher.on"))
        if st.button(tr("teacher.leave"), key="teacher.leave", icon=":material/logout:"):
            st.session_state[TEACHER] = False
            st.rerun()
        return
    st.text_input(
        tr("teacher.key"),
        key=_TYPED,
        type="password",
        help=tr("teacher.key_help"),
        on_change=_try_key,
    )
    if (wait := st.session_state.get("teacher.refused")) is not None:
        st.error(tr("teacher.wrong_wait", seconds=f"{wait:.0f}") if wait else tr("teacher.wrong"))


def _try_key() -> None:
    typed = st.session_state[_TYPED]
    st.session_state[_TYPED] = ""
    backoff = st.session_state.setdefault(_BACKOFF, session_backoff())
    attempt = key_gate().attempt(typed, backoff)
    st.session_state[TEACHER] = attempt.accepted
    st.session_state["teacher.refused"] = None if attempt.accepted else attempt.wait
