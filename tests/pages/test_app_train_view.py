"""The Train page's result and the settings above it, in AppTest: which run is shown, where it
differs from the form, what a stopped run says in the student's language, clicks on its curves.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from markdown_it import MarkdownIt
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from core.classroom import lessons, links
from core.classroom.i18n import catalog
from core.common.config import RunConfig
from core.store import runs
from core.training.record import train_and_save
from core.training.train import Event
from tests.support.app_session import open_page, shown

RUN = RunConfig(steps=20, rank=2)  # mlp, rotate, LoRA; snapshots at steps 10 and 20


def stored_run(config: RunConfig = RUN, stop_at: int | None = None) -> tuple[str, int]:
    """(a new student, their run of `config`), trained and saved as a worker would; stopped by
    its student after step `stop_at` if given."""
    student, stop = uuid.uuid4().hex, threading.Event()

    def press_stop(event: Event) -> None:
        if stop_at is not None and event.kind == "step" and event.step == stop_at:
            stop.set()

    with runs.RunStore() as store:
        run_id, _ = train_and_save(config, store, student, press_stop, stop)
    return student, run_id


def captions(at: AppTest) -> list[str]:
    return [shown(caption.value) for caption in at.main.caption]


def warnings(at: AppTest) -> str:
    return " ".join(shown(warning.value) for warning in at.main.warning)


def test_the_shown_run_says_which_it_is_and_each_setting_the_lesson_form_differs_in(lab_home):
    """Issue 18: a lesson link sets vit, and the page showed the student's mlp run as if it
    were the result of the settings above."""
    student, run_id = stored_run()
    layers = next(lesson for lesson in lessons.LESSONS if lesson.id == "layers")
    at = open_page("train", links.encode(layers.settings), student=student)
    assert not at.exception
    assert f"Your latest run: #{run_id} · lora r=2 α=8 · mlp · mnist-5k/rotate" in captions(at)
    said = warnings(at)
    assert "This run was trained with other settings than those above" in said
    for difference in (
        "model mlp (above: vit)",
        "rank 2 (above: 4)",
        "steps 20 (above: 200)",
    ):
        assert difference in said
    assert "method" not in said and "init" not in said  # the same in both: not named


def test_the_form_of_the_shown_run_names_no_difference_until_a_setting_changes(lab_home):
    student, _ = stored_run()
    at = open_page("train", links.to_query(RUN.to_dict(), links.train_defaults()), student=student)
    assert not at.exception and at.number_input(key="train.rank").value == 2
    assert "other settings" not in warnings(at)  # the run is the form's: nothing to say
    at.number_input(key="train.rank").set_value(8).run()
    assert "rank 2 (above: 8)" in warnings(at)
    assert len(at.get("plotly_chart")) == 3  # the result stays, marked as another's


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_stopped_run_says_where_it_stopped_in_the_students_language(lab_home, lang):
    student, _ = stored_run(RunConfig(steps=50, rank=2), stop_at=3)
    at = open_page("train", {"lang": lang}, first={"lang": lang}, student=student)
    assert not at.exception
    said = warnings(at)
    assert catalog(lang).t("train.stopped_at", step=3, steps=50) in said
    assert ("stopped at step" in said) == (lang == "en")  # 中文: no English left


def click(at: AppTest, chart_key: str, x: float) -> AppTest:
    """A click on a point of a chart drawn with on_select, as the browser reports it."""
    chart = next(chart for chart in at.get("plotly_chart") if chart.key == chart_key)
    selection = {"points": [{"x": x, "y": 0.5}], "point_indices": [0], "box": [], "lasso": []}
    states = at._tree.get_widget_states()
    states.widgets.append(
        WidgetState(id=chart.proto.id, string_value=json.dumps({"selection": selection}))
    )
    return at._run(states)


def test_a_click_on_a_finished_runs_curve_opens_that_moment_on_spectra(lab_home):
    student, run_id = stored_run()
    at = open_page("train", student=student)
    assert any("Click a point" in caption for caption in captions(at))
    click(at, "train.acc", 14)  # nearer to the snapshot at 10 than to the one at 20
    assert not at.exception
    assert at.select_slider(key="spectra.step").value == 10  # Spectra, at that moment
    assert at.selectbox(key="spectra.run").value == run_id


def test_a_run_name_written_as_a_link_is_shown_as_text_on_the_train_page(lab_home):
    """A run renamed to Markdown (a link, an image) is said as its characters in the caption
    that names the shown run: rendered as CommonMark, it has no link and no image."""
    student, run_id = stored_run()
    hostile = "[Session expired](https://evil.example) ![x](http://127.0.0.1:9/b.png)"
    with runs.RunStore() as store:
        store.rename(run_id, hostile)
    at = open_page("train", "", student=student)
    assert not at.exception
    caption = next(c.value for c in at.main.caption if str(run_id) in c.value)
    tokens = MarkdownIt("commonmark").parseInline(caption)[0].children
    assert {t.type for t in tokens} == {"text"}
    assert hostile in "".join(t.content for t in tokens)


def test_a_failed_runs_reason_is_shown_as_text(lab_home):
    """A run's reason may quote a file or a name (an import, a link's pattern): the page's error
    renders it as its characters, never as a link or an image."""
    student = uuid.uuid4().hex
    reason = "bad zip [sign in again](https://evil.example) ![b](http://127.0.0.1:9/b.png)"
    with runs.RunStore() as store:
        run_id = store.create(RUN, student)
        store.fail(run_id, reason)
    at = open_page("train", "", student=student)
    [error] = at.main.error
    tokens = MarkdownIt("commonmark").parseInline(error.value)[0].children
    assert {t.type for t in tokens} == {"text"}
    assert reason in "".join(t.content for t in tokens)
