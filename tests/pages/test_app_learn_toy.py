"""The Learn page's toy in AppTest: its counts are whole numbers with their formulas beside
them, and a rank that makes LoRA pointless is said, in both languages."""

from __future__ import annotations

import pytest

from core.classroom import budget
from core.classroom.i18n import catalog
from tests.support.app_session import open_page


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_rank_above_min_d_k_or_past_the_break_even_is_said(lab_home, lang):
    words = catalog(lang)
    at = open_page("learn", {"lang": lang}, first={"lang": lang})
    at.slider(key="learn.d").set_value(3).run()
    at.slider(key="learn.k").set_value(2).run()
    at.slider(key="learn.r").set_value(7).run()
    assert not at.exception
    values = [metric.value for metric in at.metric[:4]]
    assert values == ["2", "35", "6", "583%"]  # rank of ΔW ≤ min(d, k); numbers, no formula
    assert words.t("learn.toy.counts", d=3, k=2, r=7, lora=35, full=6) in [
        caption.value for caption in at.caption
    ]
    assert [warning.value for warning in at.warning] == [words.t("learn.toy.over_cap", r=7, cap=2)]
    at.slider(key="learn.r").set_value(2).run()  # 2 ≤ min(d, k), and 10 numbers against 6
    assert [warning.value for warning in at.warning] == [
        words.t("learn.toy.no_saving", r=2, even="1.2")
    ]
    at.slider(key="learn.d").set_value(16).run()
    at.slider(key="learn.k").set_value(16).run()  # 64 against 256: LoRA saves, nothing to say
    assert not at.warning and at.metric[3].value == "25%"


def test_the_real_model_the_toy_points_to_saves_what_it_says():
    toy = budget.toy(d=4096, k=4096, rank=8)  # "d = k = 4096, r = 8: 0.4 %"
    assert f"{toy.lora_params / toy.full_params:.1%}" == "0.4%"
    assert "d = k = 4096, r = 8: 0.4 %" in catalog("en").t("learn.toy.no_saving", r=1, even="1")
