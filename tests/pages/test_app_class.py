"""The teacher and the class in AppTest: who is the teacher (the key typed in the sidebar), what
a student can never open (another's run, every run, the Class page: by link, id or switch), and
the Class page itself."""

from __future__ import annotations

import json

import pytest
import torch

from core.classroom import class_view, links
from core.classroom.i18n import catalog
from core.common.config import RunConfig
from core.store import runs
from core.training.record import train_and_save
from tests.support.app_session import open_page, trace_values

ANN, BEN, CLEO = "a1" * 16, "b2" * 16, "c3" * 16  # this module's students
TEXT = catalog("en")


@pytest.fixture(scope="module")
def class_runs(lab_home) -> dict[str, int]:
    """One tiny finished run of each student."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with runs.RunStore() as store:
            return {
                owner: train_and_save(RunConfig(steps=2, rank=rank), store, owner)[0]
                for owner, rank in ((ANN, 2), (BEN, 4))
            }
    finally:
        torch.set_num_threads(threads)


def key_box(at):
    return [box for box in at.sidebar.text_input if box.key == "teacher.typed"]


CLASS_PAGE = "app_pages/class_page.py"


def offers_class_page(at) -> bool:
    """Whether the session's navigation has the Class page (AppTest refuses to switch to a
    page the app did not register for the session, as a browser's /class opens the default)."""
    try:
        at.switch_page(CLASS_PAGE)
    except ValueError:
        return False
    return True


def test_without_a_key_set_there_is_no_teacher(lab_home, monkeypatch):
    monkeypatch.delenv("LORA_LAB_TEACHER_KEY", raising=False)
    at = open_page("learn")
    assert not key_box(at)
    at.session_state["teacher"] = True  # even a session that says so is not the teacher
    at.run()
    assert not offers_class_page(at)


def test_a_wrong_key_is_refused_and_the_right_one_opens_the_class_page(lab_home, teacher_key):
    at = open_page("learn")
    [box] = key_box(at)
    assert box.proto.type == box.proto.PASSWORD
    box.input(teacher_key[:-1] + "?").run()
    assert at.session_state["teacher"] is False
    assert TEXT.t("teacher.wrong") in [error.value for error in at.sidebar.error]
    assert not offers_class_page(at)
    key_box(at)[0].input(teacher_key).run()
    assert at.session_state["teacher"] is True
    assert offers_class_page(at)
    assert key_box(at) == [] and TEXT.t("teacher.on") in [c.value for c in at.sidebar.caption]
    assert teacher_key not in str(dict(at.query_params))  # never in a link
    assert at.session_state["teacher.typed"] == ""  # nor kept in the session
    at.run()
    assert [title.value for title in at.title] == [TEXT.t("class.title")]


def test_repeated_wrong_tries_are_slowed(lab_home, teacher_key):
    at = open_page("learn")
    for _ in range(4):
        key_box(at)[0].input("not the key").run()
    said = [error.value for error in at.sidebar.error]
    assert said == [TEXT.t("teacher.wrong_wait", seconds="1")]
    key_box(at)[0].input(teacher_key).run()  # within the second: refused unheard
    assert at.session_state["teacher"] is False


def test_a_student_cannot_open_anothers_run_by_link_or_id(class_runs, teacher_key):
    bens = class_runs[BEN]
    at = open_page("spectra", {"run": str(bens), "everyone": "true"}, student=ANN)
    offered = at.selectbox(key="spectra.run").options
    assert offered and all(not option.startswith(f"#{bens} ") for option in offered)
    assert at.selectbox(key="spectra.run").value == class_runs[ANN]  # their own, not Ben's
    assert TEXT.t("common.not_yours", run=bens) in [info.value for info in at.info]
    [settings] = [link for link in at.get("page_link") if link.proto.page == "train"]
    with runs.RunStore() as store:
        expected = links.settings_query(store.get_summary(bens).config)
    assert settings.proto.query_string == "&".join(f"{k}={v}" for k, v in expected.items())
    other = open_page("spectra", {"other": str(bens)}, student=ANN)  # the run to compare with
    assert other.session_state["spectra.other"] == 0
    assert TEXT.t("common.not_yours", run=bens) in [info.value for info in other.info]


def test_a_student_sees_only_their_own_runs_whatever_the_link_says(class_runs, teacher_key):
    at = open_page("compare", {"everyone": "true", "runs": str(class_runs[BEN])}, student=ANN)
    assert set(at.dataframe[-1].value["id"]) == {class_runs[ANN]}
    assert "compare.everyone" not in [toggle.key for toggle in at.toggle]
    teacher = open_page("compare", {"everyone": "true"}, teacher=True)
    assert set(class_runs.values()) <= set(teacher.dataframe[-1].value["id"])


# ----------------------------------------------------------------------------- the Class page


@pytest.fixture
def own_class(tmp_path, monkeypatch, teacher_key) -> dict[str, int]:
    """A class of its own (a new home: clearing it touches no other test's runs): Ann's run
    meets the goal, Ben's misses it, Cleo's failed."""
    monkeypatch.setenv("LORA_LAB_HOME", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with runs.RunStore() as store:
            ids = {
                "ann": train_and_save(RunConfig(steps=3, rank=1), store, ANN)[0],
                "ben": train_and_save(RunConfig(steps=3, rank=8), store, BEN)[0],
            }
            ids["cleo"] = store.create(RunConfig(lr=1e6), owner=CLEO)
            store.fail(ids["cleo"], "the loss diverged (nan) at step 2")
            store.name_student(ANN, "Ann <b>L.</b>")
            ids["params"] = store.get_summary(ids["ann"]).trainable_params
    finally:
        torch.set_num_threads(threads)
    return ids


def table(at, title: str):
    """The table (static or a dataframe) drawn under the subheader `title`."""
    heads = [e for e in at.main if e.type in ("subheader", "dataframe", "table")]
    place = [i for i, e in enumerate(heads) if e.type == "subheader" and e.value == title]
    return heads[place[0] + 1].value


def test_the_class_page_shows_every_student_ranks_the_goal_and_hides_the_settings(own_class):
    at = open_page("class_page", teacher=True)
    at.text_input(key="class.goal").input(f"params<={own_class['params']}").run()
    every = table(at, TEXT.t("class.runs_title"))
    run, student = TEXT.t("class.col_run"), TEXT.t("class.col_student")
    students = dict(zip(every[run], every[student], strict=True))
    assert students[f"#{own_class['ann']}"] == "Ann <b>L.</b>"  # a name, as its characters
    assert students[f"#{own_class['ben']}"] == class_view.anonymous(BEN)
    failed = every[every[run] == f"#{own_class['cleo']}"]
    assert list(failed[TEXT.t("class.col_why")]) == ["the loss diverged (nan) at step 2"]
    assert list(failed[TEXT.t("class.col_status")]) == ["failed"]
    each = table(at, TEXT.t("class.students_title")).set_index(student)
    assert each.loc[class_view.anonymous(CLEO), TEXT.t("class.col_why")] == failed.iloc[0, -1]
    goal = TEXT.t("class.best_title", goal=f"params<={own_class['params']}")
    best = table(at, goal)
    assert list(best[TEXT.t("class.col_student")]) == ["Ann <b>L.</b>"]  # Ben's rank 8 misses
    assert TEXT.t("class.col_setting") not in best.columns  # hidden until revealed
    at.toggle(key="class.reveal").set_value(True).run()
    assert list(table(at, goal)[TEXT.t("class.col_setting")]) == ["lora r=1"]
    [figure] = at.get("plotly_chart")
    points = json.loads(figure.proto.spec)["data"]
    assert sorted(x for trace in points for x in trace_values(trace["x"])) == sorted(
        [own_class["params"], runs.RunStore().get_summary(own_class["ben"]).trainable_params]
    )
    hover = [text for trace in points for text in trace["hovertext"]]
    assert any(text.startswith("Ann &lt;b&gt;L.&lt;/b&gt;") for text in hover)


def test_a_class_is_archived_then_cleared(own_class):
    at = open_page("class_page", teacher=True)
    downloads = {button.proto.id.rsplit("-", 1)[-1] for button in at.get("download_button")}
    assert downloads == {"class.csv", "class.adapters"}  # the class's runs, two ways
    at.text_input(key="class.archive_name").input("Monday, group B")
    at.button(key="class.archive").click().run()
    assert not at.exception
    assert at.selectbox(key="class.which").options[1] == "Monday, group B"
    assert TEXT.t("class.no_runs") in [info.value for info in at.info]  # next class: empty
    at.selectbox(key="class.which").set_value("Monday, group B").run()
    assert len(table(at, TEXT.t("class.runs_title"))) == 3  # last week's, opened again
    with runs.RunStore() as store:
        later = store.create(RunConfig(), owner=ANN)
        store.fail(later, "stopped")
    at.selectbox(key="class.which").set_value("").run()
    at.checkbox(key="class.clear_sure").check().run()
    at.button(key="class.clear").click().run()
    with runs.RunStore() as store:
        assert {record.id for record in store.list()} == {
            own_class[n] for n in ("ann", "ben", "cleo")
        }


# ----------------------------------------------------------------------------- exercise goals


def test_the_train_page_says_an_exercises_goal_and_judges_the_students_runs(own_class):
    goal = f"params<={own_class['params']}"
    at = open_page("train", {"goal": goal, "rank": "1"}, student=ANN)
    said = TEXT.t("goals.title", goal=TEXT.t("goals.params_le", bound=f"{own_class['params']:,}"))
    assert said in [info.value for info in at.info]
    lines = "\n".join(text.value for text in at.text)
    assert TEXT.t("goals.met", run=own_class["ann"]) in lines
    assert at.query_params["goal"] == goal  # kept in the page's link, to share it on
    ben = open_page("train", {"goal": goal}, student=BEN)
    assert TEXT.t("goals.missed", run=own_class["ben"]) in "\n".join(t.value for t in ben.text)


@pytest.mark.parametrize("goal", ["acc>=90", "acc>0.9", "sudo>=1"])
def test_a_goal_that_cannot_be_read_is_said_and_ignored(lab_home, goal):
    at = open_page("train", {"goal": goal})
    assert TEXT.t("common.bad_link", keys="goal") in [w.value for w in at.warning]
    assert f"goal={goal}" in [text.value for text in at.text]
    assert not [info for info in at.info if "Goal of this exercise" in info.value]


def test_a_lessons_link_carries_its_exercise(lab_home):
    at = open_page("learn")
    queries = [link.proto.query_string for link in at.get("page_link")]
    assert any("goal=acc%3E%3D0.9" in query for query in queries), queries
