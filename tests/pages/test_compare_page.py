"""The Compare page in Streamlit's AppTest, as a class meets it (issue 18): names that hold HTML
stay text in its figures, the overlay curves have colours that tell them apart, the runs table
says the settings that tell runs apart, the sweep button cannot be pressed while a sweep runs,
a Delete is never armed for a run nobody confirmed, and a name that cannot be kept is refused
in the student's language."""

from __future__ import annotations

import colorsys
import itertools
import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.classroom.i18n import catalog
from core.common.config import RunConfig
from core.store.names import RUN_NAME_CHARS
from core.store.runs import RunStore
from core.training.record import train_and_save
from tests.support.app_session import open_page, shown

STUDENT, TEACHER = "5" * 32, "7" * 32
RUN_NAMES = ["<b>x</b><img src=x onerror=alert(1)>", "我的 <i>r4</i> & co", "plain"]
STUDENT_NAME = '<a href="https://evil.example">pwn</a>'  # fits the 40-character box
QUICK = {"steps": 2, "eval_interval": 1, "snapshot_interval": 1}
SETTINGS = [{}, {"dora": True, "alpha": 16.0}, {"rank": 2, "targets": ["fc1"]}]


@pytest.fixture(scope="module")
def named_runs(lab_home) -> list[int]:
    """Three quick runs of STUDENT, named RUN_NAMES, and STUDENT named STUDENT_NAME."""
    with RunStore() as store:
        ids = [train_and_save(RunConfig(**QUICK, **s), store, STUDENT)[0] for s in SETTINGS]
        for run_id, name in zip(ids, RUN_NAMES, strict=True):
            store.rename(run_id, name)
        store.name_student(STUDENT, STUDENT_NAME)
    st.cache_data.clear()  # the app reads names at most every 10 s: as it would 10 s later
    return ids


def specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def texts(spec: dict) -> list[str]:
    """Every text plotly shows of a figure's traces: names (the legend), hover and point texts."""
    shown = []
    for trace in spec["data"]:
        for field in ("name", "hovertext", "text"):
            value = trace.get(field)
            shown += value if isinstance(value, list) else [value] if value else []
    return [text for text in shown if isinstance(text, str)]


def test_names_that_hold_html_are_text_in_the_teachers_figures(named_runs, teacher_key):
    at = open_page("compare", {"everyone": "1"}, student=TEACHER, teacher=True)
    at.multiselect(key="compare.runs").set_value([str(i) for i in named_runs]).run()
    assert not at.exception
    cost, forgetting, curves = specs(at)
    shown = [text for spec in (cost, forgetting, curves) for text in texts(spec)]
    assert not [text for text in shown if "<" in text or ">" in text]  # no tag reaches plotly
    escaped = "&lt;b&gt;x&lt;/b&gt;&lt;img src=x onerror=alert(1)&gt;"
    owner = '&lt;a href="https://evil.example"&gt;pwn&lt;/a&gt;'
    for spec in (cost, forgetting):  # the hover text of each point
        assert any(escaped in text and text.endswith(owner) for text in texts(spec))
    legend = [trace["name"] for trace in curves["data"]]
    assert any("我的 &lt;i&gt;r4&lt;/i&gt; &amp; co" in name for name in legend)


def hue(color: str) -> float:
    red, green, blue = (int(color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return colorsys.rgb_to_hsv(red, green, blue)[0] * 360


def test_overlay_curves_have_colours_of_different_hues(named_runs, teacher_key):
    """Each curve its own colour, set on the curve (Streamlit's theme would start with two
    blues): the first six differ in hue by 15° or more, so that a projector tells them apart."""
    at = open_page("compare", {"everyone": "1"}, student=TEACHER, teacher=True)
    with RunStore() as store:  # six curves: the three runs and three more of the class
        extra = [train_and_save(RunConfig(**QUICK, seed=s), store, TEACHER)[0] for s in (1, 2, 3)]
    at.multiselect(key="compare.runs").set_value([str(i) for i in named_runs + extra]).run()
    curves = specs(at)[-1]["data"]
    colors = [trace["line"]["color"] for trace in curves]
    assert len(colors) == 6
    for one, other in itertools.combinations(colors, 2):
        apart = abs(hue(one) - hue(other))
        assert min(apart, 360 - apart) >= 15, (one, other)


def test_the_runs_table_says_alpha_dora_and_target_layers(named_runs):
    at = open_page("compare", student=STUDENT)
    table = at.dataframe[-1].value.set_index("id").loc[named_runs]
    assert list(table["Alpha"]) == ["8", "16", "8"]
    assert list(table["DoRA"]) == [False, True, False]
    assert list(table["Target layers"]) == ["all-linear", "all-linear", "fc1"]
    assert list(table["Name"]) == RUN_NAMES  # a table shows a name as text already


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_name_with_control_codes_is_refused_in_the_students_language(named_runs, lang):
    at = open_page("compare", student=STUDENT, first={"lang": lang})
    run_id = named_runs[2]
    at.selectbox(key="compare.manage").set_value(run_id).run()
    box = at.text_input(key=f"compare.name.{run_id}")
    assert box.max_chars == RUN_NAME_CHARS
    box.input("red\x1b[2J")
    at.button(key="compare.rename").click().run()
    said = catalog(lang).t("errors.name_control", code="U+001B")
    assert [shown(error.value) for error in at.error] == [said]
    with RunStore() as store:
        assert store.get_summary(run_id).name == "plain"


def test_a_students_name_with_control_codes_is_refused_and_the_kept_one_stays(named_runs):
    at = open_page("learn", student=STUDENT)
    at.text_input(key="student.name").input("\x1b]0;owned\x07").run()
    assert [shown(error.value) for error in at.error] == [
        catalog("en").t("errors.name_control", code="U+001B")
    ]
    with RunStore() as store:
        assert store.student_names()[STUDENT] == STUDENT_NAME


def test_the_sweep_button_is_disabled_from_the_click_until_the_sweep_ends(lab_home):
    at = open_page("compare", {"ranks": "1", "baselines": "0", "steps": "2000"})
    assert not at.button(key="compare.launch").disabled
    at.button(key="compare.launch").click().run()
    sweep = at.session_state["compare.jobs"]
    try:
        assert at.button(key="compare.launch").disabled  # drawn again after the click
    finally:
        for job in sweep:
            job.stop()
    assert all(job.wait(60) for job in sweep)
    at.run()  # the poll that sees the end redraws the page
    assert not at.button(key="compare.launch").disabled


def test_a_delete_leaves_delete_armed_for_no_other_run(lab_home):
    owner = "9" * 32
    with RunStore() as store:
        first, second = (train_and_save(RunConfig(**QUICK), store, owner)[0] for _ in range(2))
    at = open_page("compare", student=owner)
    at.selectbox(key="compare.manage").set_value(first).run()
    at.checkbox(key=f"compare.sure.{first}").check().run()
    assert not at.button(key="compare.delete").disabled
    at.selectbox(key="compare.manage").set_value(second).run()
    assert at.button(key="compare.delete").disabled  # confirmed for the first run only
    at.selectbox(key="compare.manage").set_value(first).run()
    assert at.button(key="compare.delete").disabled  # and forgotten once another was picked
    at.checkbox(key=f"compare.sure.{first}").check().run()
    at.button(key="compare.delete").click().run()
    assert not at.exception
    with RunStore() as store:
        assert [r.id for r in store.list(owner=owner)] == [second]
    assert at.selectbox(key="compare.manage").value == second
    assert at.button(key="compare.delete").disabled
    assert f"compare.sure.{first}" not in at.session_state
