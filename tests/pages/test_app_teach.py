"""The teaching views in Streamlit's AppTest: the task's example images before and after its
shift, the predictions after a run, a teacher's exercise links that hide controls, the pointer
to the layer evidence, and presenter mode."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from core.classroom import links
from core.common.config import RunConfig, shifts_for
from core.training import examples
from tests.support.app_session import open_page

TRAIN = links.train_defaults()


def images(at: AppTest) -> list:
    return at.get("image")


def strip_texts(at: AppTest) -> list[str]:
    return [caption.value for caption in at.main.caption]


# ----------------------------------------------------------------------------- see the task


@pytest.mark.parametrize("shift", shifts_for("images"))
def test_the_task_strip_shows_the_shift_for_every_shift(lab_home, shift):
    at = open_page("train", {"shift": shift})
    rows = images(at)  # one st.image per row of ten
    if shift == "none":
        assert [len(row.value) for row in rows] == [10]  # one row: nothing changes
        assert any("No shift" in text for text in strip_texts(at))
        return
    assert [len(row.value) for row in rows] == [10, 10]  # the same images, before and after
    expected = examples.task_examples(RunConfig(shift=shift))
    old, new = expected["labels_before"], expected["labels_after"]
    assert rows[0].captions == [str(label) for label in old]
    assert rows[1].captions == [
        str(b) if a == b else f"{a} → {b}" for a, b in zip(old, new, strict=True)
    ]
    if shift == "label-permute":  # every class has a new name
        assert all("→" in text for text in rows[1].captions)


def test_the_compare_page_shows_the_sweeps_task(lab_home):
    at = open_page("compare", {"shift": "invert"})
    assert [len(row.value) for row in images(at)] == [10, 10]
    assert any("After the shift" in text for text in strip_texts(at))


def test_a_dataset_not_on_this_computer_shows_no_images_and_downloads_nothing(
    lab_home, tmp_path, monkeypatch
):
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path))
    at = open_page("train", {"dataset": "fashion-mnist"})
    assert not images(at)
    assert any("once this dataset is on this computer" in t for t in strip_texts(at))
    assert not any(tmp_path.iterdir())  # no download started


# ----------------------------------------------------------------------------- exercise links


def number_inputs(at: AppTest) -> set[str]:
    return {box.key for box in at.number_input}


def test_an_exercise_link_hides_its_controls_and_the_run_uses_its_values(lab_home):
    at = open_page("train", {"hide": "lr,seed,steps", "lr": "0.003", "steps": "5"})
    assert not {"train.lr", "train.seed", "train.steps"} & number_inputs(at)
    assert {"train.rank", "train.batch_size"} <= number_inputs(at)  # the others are there
    assert any("This exercise fixes: lr, steps, seed" in t for t in strip_texts(at))
    assert not at.warning
    # The URL keeps the exercise: a reload or a copied link is the same exercise.
    assert at.query_params["hide"] == "lr,steps,seed"
    # A change elsewhere on the page does not bring the hidden controls back.
    at.number_input(key="train.rank").set_value(2).run()
    assert not {"train.lr", "train.seed", "train.steps"} & number_inputs(at)
    # Nor does a visit to another page.
    at.switch_page("app_pages/learn.py").run()
    at.switch_page("app_pages/train.py").run()
    assert not {"train.lr", "train.seed", "train.steps"} & number_inputs(at)
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    assert (job.config.lr, job.config.steps, job.config.seed, job.config.rank) == (0.003, 5, 0, 2)
    assert job.wait(120) and job.status == "finished", job.reason
    at.run()
    # After the run: test images with the prediction before and after, some still wrong.
    assert not at.exception
    counts = next(t for t in strip_texts(at) if t.startswith("Of the 1,000 test images"))
    assert "are wrong after training" in counts and "that training broke" in counts
    predictions, *task_rows = images(at)  # the result comes first, then the task strip's rows
    assert len(task_rows) == 2 and len(predictions.value) == 8
    assert all(re.fullmatch(r"\d: \d → \d [✓✗]", text) for text in predictions.captions)


def test_a_link_hiding_an_unknown_control_says_so_and_hides_nothing(lab_home):
    at = open_page("train", {"hide": "lr,nosuch"})
    assert any("could not be read" in warning.value for warning in at.warning)
    assert "hide=nosuch" in [text.value for text in at.text]  # what the link wrote, as text
    assert "train.lr" not in number_inputs(at) and "train.seed" in number_inputs(at)


def test_hidden_targets_keep_the_layer_table_without_the_picker(lab_home):
    at = open_page("train", {"hide": "targets", "targets": "fc2"})
    assert not [box for box in at.multiselect if box.key.startswith("train.pick.")]
    assert len(at.dataframe) == 1  # the table still shows which layers adapt
    assert list(at.dataframe[0].value.iloc[:, 0]) == [False, True, False]
    assert at.session_state["train.targets"] == "fc2"


def test_a_compare_exercise_hides_the_sweeps_controls(lab_home):
    at = open_page("compare", {"hide": "ranks,steps", "ranks": "1,64"})
    assert not [box for box in at.multiselect if box.key == "compare.ranks"]
    assert "compare.steps" not in number_inputs(at)
    assert at.session_state["compare.ranks"] == [1, 64]
    assert any(caption.value.startswith("4 runs") for caption in at.main.caption)


def read_link(code: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(code.strip())
    return parts.path, dict(parse_qsl(parts.query))


def test_the_train_page_builds_an_exercise_link_for_its_settings(lab_home):
    at = open_page("train", {"rank": "8"})
    assert not at.code  # drawn only for a teacher who asks: it slows the page's load
    at.toggle(key="train.exercise.open").set_value(True).run()
    at.multiselect(key="train.exercise").set_value(["seed", "lr", "steps"]).run()
    path, params = read_link(at.code[-1].value)
    assert path == "/train"
    assert params == {  # lr is empty, the method's own rate: a hidden lr stays the method's
        "rank": "8",
        "steps": "200",
        "seed": "0",
        "hide": "lr,steps,seed",
    }
    # Opened by a student: the controls are gone and the values are the teacher's.
    student = open_page("train", params)
    assert not {"train.lr", "train.steps", "train.seed"} & number_inputs(student)
    assert student.number_input(key="train.rank").value == 8


def test_a_lesson_builds_an_exercise_link_in_the_teachers_language(lab_home):
    at = open_page("learn", first={"lang": "zh"})
    at.toggle(key="learn.exercise.rank.open").set_value(True).run()
    at.multiselect(key="learn.exercise.rank").set_value(["ranks"]).run()
    path, params = read_link(at.code[0].value)
    assert path == "/compare"
    assert params["shift"] == "permute" and params["hide"] == "ranks"
    assert params["ranks"] == "1,2,4,8,16,64" and params["lang"] == "zh"


def test_the_layer_table_points_to_the_evidence_on_the_spectra_page(lab_home):
    at = open_page("train")
    link = next(
        link for link in at.get("page_link") if "Which of these layers mattered" in link.proto.label
    )
    assert link.proto.page == "spectra"


# ----------------------------------------------------------------------------- presenter mode


def figure_layout(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]


def test_presenter_mode_from_a_link_enlarges_text_and_figures_across_pages(lab_home):
    plain = open_page("learn")
    at = open_page("learn", first={"presenter": "1"})
    assert at.toggle(key="presenter").value is True
    large, small = figure_layout(at), figure_layout(plain)
    assert large["height"] > small["height"]  # the toy's matrices, 240 px → larger
    assert large["font"]["size"] > small["font"]["size"]
    assert large["xaxis"]["title"]["font"]["size"] == large["font"]["size"]  # not the theme's
    assert any("font-size" in html.proto.body for html in at.get("html"))
    assert not any("font-size" in html.proto.body for html in plain.get("html"))
    at.switch_page("app_pages/train.py").run()  # it survives a page switch
    assert at.toggle(key="presenter").value is True
    assert at.query_params["presenter"] == "true"
    at.toggle(key="presenter").set_value(False).run()
    assert "presenter" not in at.query_params
    assert not any("font-size" in html.proto.body for html in at.get("html"))
