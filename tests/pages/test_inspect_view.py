"""The Compare page's adapter inspector in AppTest (issue 23): a kohya file's report drawn in
both languages, its four figures, its table; names from the file stay text in the figures; the
upload on the Compare page has the server's limit, which its variable raises. (AppTest cannot
upload a file: the view is drawn from a report as the upload would make it.)"""

from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.classroom.i18n import catalog
from core.common.limits import SERVER
from tests.support.adapter_files import write_kohya
from tests.support.app_session import open_page

NAMES = {  # two blocks × two kinds; one name holds HTML, as a file's key may
    "lora_unet_blocks_0_to_q": ((8, 4), (4, 6), 4.0),
    "lora_unet_blocks_0_<b>x</b>": ((8, 4), (4, 6), 4.0),
    "lora_unet_blocks_1_to_q": ((8, 4), (4, 6), 2.0),
    "lora_unet_blocks_1_<b>x</b>": ((8, 4), (4, 6), None),
}


def draw(path: str, language: str) -> None:
    """The script AppTest runs: the report of `path`, drawn by the inspector's view."""
    import streamlit as st

    from app_pages.common.inspector import inspect_view
    from core.lowrank.adapter_files import open_adapter
    from core.lowrank.inspection import inspect_adapter

    st.session_state["lang"] = language
    inspect_view(inspect_adapter(open_adapter(path), "<i>style</i>.safetensors"))


@pytest.fixture(scope="module")
def kohya_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("kohya") / "style.safetensors"
    write_kohya(path, NAMES, torch.float32)
    return str(path)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_view_draws_a_report_in_both_languages(kohya_file, language):
    at = AppTest.from_function(draw, kwargs={"path": kohya_file, "language": language})
    at.run(timeout=60)
    assert not at.exception, at.exception
    words = catalog(language)
    assert [s.value for s in at.subheader] == [
        words.t(f"inspect.{name}")
        for name in ("depth_title", "spectra_title", "resize_title", "table_title")
    ]
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert len(specs) == 4  # effective rank and σ1/σ2 across depth, one block's σ, the resize
    effective, spike = specs[0]["data"][0], specs[1]["data"][0]
    assert len(effective["z"]) == 2 and len(effective["z"][0]) == 2  # 2 kinds × 2 blocks
    flat = [name for row in effective["text"] for name in row]
    assert "lora_unet_blocks_0_&lt;b&gt;x&lt;/b&gt;" in flat and not any("<b>" in n for n in flat)
    assert spike["z"][0][0] is not None
    spectra = specs[2]["data"]
    assert sorted(trace["name"] for trace in spectra) == ["&lt;b&gt;x&lt;/b&gt;", "to_q"]
    assert all(len(trace["y"]) == 4 for trace in spectra)  # rank 4: four σ
    curve = specs[3]["data"][0]
    assert curve["x"] == [4, 8, 12, 16] and curve["y"][-1] == pytest.approx(1)
    table = at.dataframe[0].value
    assert len(table) == 4 and words.t("inspect.col_layer") in table.columns
    assert at.text[0].value == "<i>style</i>.safetensors"  # the file's name, as text


def test_the_compare_page_offers_the_upload_within_the_server_s_limit(lab_home, monkeypatch):
    at = open_page("compare")
    uploads = [w for w in at.get("file_uploader") if "inspect" in w.proto.id]
    assert len(uploads) == 1
    limit = catalog("en").t("inspect.limit", mb=SERVER.max_upload_mb)
    assert limit in [caption.value for caption in at.caption]
    monkeypatch.setenv("LORA_LAB_MAX_UPLOAD_MB", "900")
    at.run()
    assert catalog("en").t("inspect.limit", mb=900) in [caption.value for caption in at.caption]
