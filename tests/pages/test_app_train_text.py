"""The Train page with the language model, in AppTest (issue 20): picking gpt moves the form to
its own settings, its task preview shows passages of text, a short run shows what the model
writes and its bits per character, and a student's own prompt is continued, an unknown
character named plainly. One short run (4 steps) is shared by the module."""

from __future__ import annotations

import pytest
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest

from core.classroom import links
from core.classroom.i18n import catalog
from core.common.config import for_model, shifts_for
from core.training import text
from tests.support.app_session import open_page, shown

EN = catalog("en")


def codes(at: AppTest) -> list[str]:
    """What the page shows as plain text blocks (st.code): passages and samples."""
    return [block.value for block in at.code]


def captions(at: AppTest) -> list[str]:
    return [shown(caption.value) for caption in at.main.caption]


def test_picking_gpt_moves_the_form_to_its_settings_and_back(lab_home):
    at = open_page("train")
    at.selectbox(key="train.model").set_value("gpt").run()
    assert not at.exception
    gpt = for_model("gpt")
    assert at.selectbox(key="train.dataset").value == "prose"
    assert at.selectbox(key="train.dataset").options == [EN.t("datasets.prose.title")]
    shift = at.selectbox(key="train.shift")
    assert shift.value == gpt.shift
    assert shift.options == [EN.t(f"shifts.{name}.title") for name in shifts_for("text")]
    assert at.number_input(key="train.steps").value == gpt.steps
    assert at.number_input(key="train.batch_size").value == gpt.batch_size
    picked = at.multiselect(key="train.pick.gpt").value
    assert sorted(picked) == sorted(f"blocks.{i}.attn.{w}" for i in range(4) for w in "qv")
    assert at.query_params["model"] == "gpt" and "dataset" not in at.query_params  # short link
    # the task preview: the same held-out passage before and after, as text
    assert EN.t("examples.prose_passage") in captions(at)
    assert EN.t("examples.code_passage") in captions(at)
    assert len(codes(at)) == 2 and codes(at)[0] != codes(at)[1]
    # a preset picks the paper's choice of layers
    at.button(key="train.preset.attention").click().run()
    picked = at.multiselect(key="train.pick.gpt").value
    assert sorted(picked) == sorted(f"blocks.{i}.attn.{w}" for i in range(4) for w in "qkvo")
    assert at.query_params["targets"] == "blocks.*.attn.*"
    # back to an image model: the image defaults return
    at.selectbox(key="train.model").set_value("mlp").run()
    defaults = links.train_defaults()
    assert at.selectbox(key="train.dataset").value == defaults["dataset"]
    assert at.selectbox(key="train.shift").value == defaults["shift"]
    assert at.number_input(key="train.steps").value == defaults["steps"]
    assert "prose" not in at.selectbox(key="train.dataset").options


def test_a_gpt_link_opens_the_form_on_gpts_settings(lab_home):
    at = open_page("train", {"model": "gpt", "rank": "8"})
    assert at.selectbox(key="train.dataset").value == "prose"
    assert at.number_input(key="train.rank").value == 8
    assert at.number_input(key="train.steps").value == for_model("gpt").steps
    assert not at.warning  # nothing refused


@pytest.fixture(scope="module")
def trained(lab_home) -> AppTest:
    """The Train page after a 4-step gpt run: sampled by the base model (step 0) and at its end."""
    at = open_page("train", {"model": "gpt", "steps": "4"})
    at.button(key="train.start").click().run()
    job = at.session_state["train.job"]
    assert job.config.eval_interval == for_model("gpt").eval_interval  # gpt's own, not 10
    assert job.wait(120), "the training job did not finish in time"
    at.run()
    assert job.status == "finished", job.reason
    return at


def test_a_gpt_run_shows_what_it_writes_and_its_bits_per_character(trained):
    at, job = trained, trained.session_state["train.job"]
    records = job.result
    # the curves: loss, bits per character, next-character accuracy
    assert len(at.get("plotly_chart")) == 4  # and σ(ΔW)
    # what the model writes: the base model's sample, then the newest, as text
    history = [event.data for event in job.events if event.kind == "step"]
    base, last = history[0]["sample"], history[-1]["sample"]
    prompt = text.prompt_for("code", {})
    assert codes(at)[:2] == [prompt + base, prompt + last]  # above the form, as the curves
    assert EN.t("train.sample_now", step=4) in captions(at)
    # the outcome: bits per character on the target and the prose, lower is better
    metrics = {metric.label: metric for metric in at.metric}
    target = metrics[EN.t("train.bpc")]
    assert target.value == f"{records['test_bpc_before']:.2f} → {records['test_bpc_after']:.2f}"
    fell = records["test_bpc_after"] < records["test_bpc_before"]
    assert (target.proto.color == MetricProto.GREEN) == fell  # lower is better: a fall is green
    assert EN.t("train.source_bpc") in metrics and EN.t("train.next_acc") in metrics
    assert f"{records['test_acc_after']:.1%}" in metrics[EN.t("train.next_acc")].value


def test_a_students_prompt_is_continued_and_an_unknown_character_named(trained):
    at = trained
    box = at.text_area(key="train.prompt")
    assert box.max_chars == text.PROMPT_LIMIT
    box.set_value("Café “tab”\there").run()
    assert not at.exception
    said = " ".join(shown(w.value) for w in at.warning)
    assert EN.t("writing.unknown", count=4) in said
    assert any(block.value == "é “ ” \\t" for block in at.text)  # listed as text
    first = codes(at)[2:4]  # under the samples, above the form
    assert all(block.startswith("Café “tab”\there") for block in first)
    at.button(key="train.write").click().run()  # the same prompt, the same text
    assert codes(at)[2:4] == first
