"""The Spectra and Compare pages on runs of the language model (issue 20): every adapted W_q
and W_v of a gpt run has its spectrum, the what-ifs say bits per character (lower is better)
with core's numbers, the planted update is compared in blocks.0.attn.q, and Compare puts text
runs on a bits-per-character axis of their own, never on one axis with an image run's accuracy.
A few tiny runs (six steps) shared by the module."""

from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.analyses import whatif
from core.classroom.i18n import catalog
from core.common import config
from core.common.config import RunConfig
from core.store.runs import RunStore
from core.training import measure
from core.training.record import train_and_save
from tests.support.app_session import APP, TIMEOUT, open_page, trace_values

OWNER = "6a" * 16  # this module's own student: the home is shared by the session
TINY = {"steps": 6, "eval_interval": 3, "snapshot_interval": 3}
GPT_RUNS = {  # name → settings over gpt's own (config.for_model): q and v, shift code
    "code": {},
    "rank-2": {"rank": 2},
    "planted": {"shift": "planted-rank"},
}
EN, ZH = catalog("en").t, catalog("zh").t


def gpt_config(**settings) -> RunConfig:
    return RunConfig.from_dict(config.for_model("gpt").to_dict() | TINY | settings)


@pytest.fixture(scope="module")
def gpt_runs(lab_home) -> dict[str, int]:
    """The gpt runs above, and one quick image run beside them (for Compare), all OWNER's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with RunStore() as store:
            ids = {
                name: train_and_save(gpt_config(**settings), store, OWNER)[0]
                for name, settings in GPT_RUNS.items()
            }
            ids["mlp"] = train_and_save(RunConfig(steps=2), store, OWNER)[0]
            return ids
    finally:
        torch.set_num_threads(threads)


def spectra_page(run_id: int, lang: str, what_ifs: bool) -> AppTest:
    """The Spectra page of a run in a language, the what-ifs open from its first draw or not."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["student"], at.session_state["student.kept"] = OWNER, True
    at.session_state["lang"] = lang
    at.run()
    at.switch_page("app_pages/spectra.py")
    at.session_state["spectra.run"] = run_id
    for name in ("open_cut", "open_intruders", "open_layers"):
        at.session_state[f"spectra.{name}"] = what_ifs
    return at.run()


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def y_titles(spec: dict) -> list[str]:
    layout = spec["layout"]
    return [axis["title"]["text"] for name, axis in layout.items() if name.startswith("yaxis")
            and "title" in axis]  # fmt: skip


def test_spectra_of_a_gpt_run_shows_every_adapted_layer_and_its_bits(gpt_runs, one_thread):
    at = spectra_page(gpt_runs["code"], "en", what_ifs=True)
    assert not at.exception and not at.error
    layers = at.selectbox(key="spectra.layer").options
    assert layers == [f"blocks.{i}.attn.{w}" for i in range(4) for w in ("q", "v")]
    metrics = {metric.label: metric.value for metric in at.metric}
    with RunStore() as store:
        record = store.get(gpt_runs["code"])
        run = measure.open_run(gpt_runs["code"], store)
    assert metrics[EN("spectra.metric_val_bpc")] == f"{record.history[6]['val_bpc']:.2f}"
    specs = chart_specs(at)
    curves = next(s for s in specs if EN("spectra.bpc_short") in y_titles(s))
    assert [trace["name"] for trace in curves["data"]][-1] == EN("train.val_bpc")

    curve = whatif.truncation_curve(run)
    cut = next(
        s for s in specs if EN("spectra.cut_axis") in json.dumps(s["layout"], ensure_ascii=False)
    )
    assert cut["data"][0]["y"] == pytest.approx([point.score for point in curve.truncation])
    assert y_titles(cut) == [EN("spectra.axis_bpc")]  # "… (lower is better)"
    says = " ".join(text.value for text in [*at.markdown, *at.caption])
    assert "bits per character on the test text" in says and "%" not in says.split("What if")[-1]
    assert f"the untouched run scores {curve.run_score:.2f}" in says.lower()
    table = at.dataframe[-1].value
    report = whatif.layer_importance(run)
    assert list(table[EN("spectra.col_lost_bpc")]) == pytest.approx(
        [row.lost for row in report.layers]
    )


def test_spectra_of_a_planted_gpt_run_in_chinese_compares_the_secret_update(gpt_runs):
    at = spectra_page(gpt_runs["planted"], "zh", what_ifs=False)
    assert not at.exception and not at.error
    assert at.selectbox(key="spectra.layer").value == "blocks.0.attn.q"  # where ΔW* is planted
    assert any(header.value == ZH("spectra.planted_section") for header in at.subheader)
    overlap = ZH("spectra.planted_overlap").split("{")[0]
    assert any(text.value.startswith(overlap) for text in at.markdown)
    assert ZH("spectra.metric_val_bpc") in [metric.label for metric in at.metric]


def test_two_gpt_runs_compare_their_subspaces(gpt_runs):
    at = spectra_page(gpt_runs["code"], "en", what_ifs=False)
    others = at.selectbox(key="spectra.other").options
    assert f"#{gpt_runs['rank-2']}" in " ".join(others)
    assert not any(f"#{gpt_runs['mlp']} " in option for option in others)  # another model
    at.session_state["spectra.other"] = gpt_runs["rank-2"]
    at.run()
    assert not at.exception
    phi = EN("spectra.phi_caption").split("{")[0]
    assert any(caption.value.startswith(phi) for caption in at.caption)


def test_compare_shows_gpt_runs_in_bits_and_keeps_image_runs_apart(gpt_runs):
    text_task = {"model": "gpt", "dataset": "prose", "shift": "code"}
    at = open_page("compare", text_task, student=OWNER)
    assert not at.exception and not at.error
    cost = chart_specs(at)[0]
    assert y_titles(cost) == [EN("compare.bpc_axis")]
    with RunStore() as store:
        bits = {store.get_summary(i).test_bpc_after for i in gpt_runs.values()} - {None}
    plotted = sorted(y for trace in cost["data"] for y in trace_values(trace["y"]))
    assert plotted == pytest.approx(sorted(bits)) and len(bits) == 3  # the gpt runs alone
    hidden = EN("compare.other_kind_images", runs=1)
    assert hidden in [info.value for info in at.info]
    table = at.dataframe[-1].value
    assert set(table["id"]) == {gpt_runs[name] for name in GPT_RUNS}
    assert EN("compare.col_after_bpc") in table.columns

    images = open_page("compare", {}, student=OWNER)  # the default sweep: digits
    assert set(images.dataframe[-1].value["id"]) == {gpt_runs["mlp"]}
    assert y_titles(chart_specs(images)[0]) == [EN("compare.acc_axis")]
    assert EN("compare.other_kind_text", runs=3) in [info.value for info in images.info]
