"""Settings ↔ URL: a copied link must reopen exactly the same configuration."""

import pytest

from core import lessons, links
from core.train import RunConfig

DEFAULTS = {
    "model": "mlp",
    "rank": 4,
    "alpha": 8.0,
    "dora": False,
    "targets": ["all-linear"],
    "shift_params": {},
}


def test_only_changed_settings_go_into_the_link():
    assert links.to_query(DEFAULTS, DEFAULTS) == {}
    changed = DEFAULTS | {"rank": 16, "dora": True}
    assert links.to_query(changed, DEFAULTS) == {"rank": "16", "dora": "1"}


def test_round_trip_of_every_kind_of_value():
    values = {
        "model": "vit",
        "rank": 2,
        "alpha": 0.001,
        "dora": True,
        "targets": ["blocks.0.attn.q", "blocks.*.attn.v"],
        "shift_params": {"angle": 30.5},
    }
    query = links.to_query(values, DEFAULTS)
    assert all(isinstance(text, str) for text in query.values())
    assert links.from_query(query, DEFAULTS) == (values, [])


def test_unreadable_values_fall_back_to_defaults_and_are_reported():
    values, unreadable = links.from_query(
        {"rank": "four", "alpha": "nan", "dora": "maybe", "shift_params": "[1]", "lang": "zh"},
        DEFAULTS,
    )
    assert values == DEFAULTS
    assert sorted(unreadable) == ["alpha", "dora", "rank", "shift_params"]


def test_a_link_rebuilds_the_same_run_config():
    config = RunConfig(
        model="cnn",
        shift="rotate",
        shift_params={"angle": 30.0},
        rank=8,
        alpha=16.0,
        scaling="rslora",
        lr=0.01,
        steps=50,
        seed=3,
    )
    defaults = RunConfig().to_dict()
    query = links.to_query(config.to_dict(), defaults)
    values, unreadable = links.from_query(query, defaults)
    assert not unreadable
    assert RunConfig.from_dict(values) == config


PAGE_DEFAULTS = {"train": links.train_defaults(), "compare": links.COMPARE_DEFAULTS}


@pytest.mark.parametrize("lesson", lessons.LESSONS, ids=lambda lesson: lesson.id)
def test_every_lesson_is_a_valid_link_to_its_page(lesson):
    defaults = PAGE_DEFAULTS[lesson.page]
    values, unreadable = links.from_query(links.encode(lesson.settings), defaults)
    assert not unreadable
    assert values == defaults | lesson.settings
    if lesson.page == "train":
        RunConfig.from_dict(values).validate()


CHOICES = {"model": ["mlp", "cnn"], "targets": ["fc1", "fc2"]}


def test_values_outside_the_choices_are_unreadable_not_replaced():
    defaults = DEFAULTS | {"targets": ["fc1"]}
    values, unreadable = links.from_query(
        {"model": "nope", "targets": "fc2,nosuch", "rank": "8"}, defaults, CHOICES
    )
    assert values == defaults | {"rank": 8}  # the page's defaults, never another choice
    assert sorted(unreadable) == ["model", "targets"]


def test_values_inside_the_choices_are_read():
    defaults = DEFAULTS | {"targets": ["fc1"]}
    values, unreadable = links.from_query({"model": "cnn", "targets": "fc2,fc1"}, defaults, CHOICES)
    assert not unreadable
    assert values["model"] == "cnn" and values["targets"] == ["fc2", "fc1"]
