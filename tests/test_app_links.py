"""Settings ↔ URL: a copied link must reopen exactly the same configuration."""

from urllib.parse import parse_qsl, urlsplit

import pytest

from core import lessons, links
from core.config import RunConfig, config_choices

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
    assert links.to_query(changed, DEFAULTS) == {"rank": "16", "dora": "true"}


def test_booleans_read_as_the_command_line_reads_them_and_old_links_still_open():
    for text, value in (("true", True), ("false", False), ("1", True), ("0", False)):
        assert links.from_query({"dora": text}, DEFAULTS) == (DEFAULTS | {"dora": value}, [])
        assert RunConfig.from_dict({"dora": text}).dora is value


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


def test_page_choices_are_those_of_run_config():
    choices = config_choices()
    assert {key: choices[key] for key in links.TRAIN_CHOICES} == links.TRAIN_CHOICES
    assert set(links.TRAIN_CHOICES) == set(choices) & set(links.TRAIN_KEYS)
    assert "optimizer" not in links.TRAIN_CHOICES  # the Train page does not offer it
    for key in ("model", "dataset", "shift"):
        assert links.COMPARE_CHOICES[key] == choices[key]
    assert set(links.COMPARE_DEFAULTS["ranks"]) <= set(links.COMPARE_CHOICES["ranks"])
    for page, choices_of_page in (
        ("train", links.TRAIN_CHOICES),
        ("compare", links.COMPARE_CHOICES),
    ):
        defaults = PAGE_DEFAULTS[page]
        for key, allowed in choices_of_page.items():
            values = defaults[key] if isinstance(defaults[key], list) else [defaults[key]]
            assert set(values) <= set(allowed), (page, key)


def test_the_compare_sweep_is_lora_at_each_rank_on_the_given_targets_then_the_baselines():
    settings = links.COMPARE_DEFAULTS | {"model": "cnn", "shift": "permute", "ranks": [8, 2]}
    settings |= {"steps": 7, "seed": 5}
    configs = links.compare_configs(settings, ["conv1", "fc1"])
    assert [(c.method, c.rank) for c in configs[:2]] == [("lora", 2), ("lora", 8)]
    assert [c.method for c in configs[2:]] == ["head", "full"]
    for c in configs:
        assert (c.model, c.dataset, c.shift, c.steps, c.seed) == (
            "cnn",
            "mnist-5k",
            "permute",
            7,
            5,
        )
        assert c.targets == ["conv1", "fc1"]
        c.validate()
    without = links.compare_configs(settings | {"baselines": False}, "all-linear")
    assert [c.method for c in without] == ["lora", "lora"]


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


# ----------------------------------------------------------------------------- exercise links

TRAIN = links.train_defaults()


def test_hide_names_the_pages_settings_in_page_order_and_reports_the_rest():
    hidden, unknown = links.hidden_from_query({"hide": "steps, lr,nosuch,,seed"}, TRAIN)
    assert hidden == ["lr", "steps", "seed"]  # as the page lists them, not as the link did
    assert unknown == ["nosuch"]
    assert links.hidden_from_query({}, TRAIN) == ([], [])
    assert links.hidden_from_query({"hide": ""}, TRAIN) == ([], [])
    assert links.hidden_from_query({"hide": "lang,presenter"}, TRAIN) == (
        [],
        ["lang", "presenter"],
    )  # the app's parameters are not a page's controls


def test_an_exercise_query_fixes_every_hidden_value_even_a_default():
    values = TRAIN | {"lr": 0.003, "rank": 8}
    query = links.exercise_query(values, TRAIN, ["steps", "lr", "seed"])
    assert query == {
        "rank": "8",
        "lr": "0.003",
        "steps": str(links.TRAIN_STEPS),  # the default, written out all the same
        "seed": "0",
        "hide": "lr,steps,seed",
    }
    assert links.exercise_query(values, TRAIN) == links.to_query(values, TRAIN)
    with pytest.raises(ValueError, match="not a setting of this page: nosuch"):
        links.exercise_query(values, TRAIN, ["lr", "nosuch"])


def test_an_exercise_link_reads_back_as_the_same_settings_and_hidden_controls():
    """The full URL, taken apart by urllib (not by links), gives the page what the teacher
    chose: every value, and the controls to hide."""
    values = TRAIN | {"shift": "rotate", "shift_params": {"angle": 90.0}, "lr": 0.003}
    values |= {"targets": "fc1,fc2"}
    url = links.page_url(
        "http://127.0.0.1:8501/", "train", links.exercise_query(values, TRAIN, ["lr", "seed"])
    )
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("127.0.0.1:8501", "/train")
    assert "hide=lr,seed" in parts.query  # commas stay readable
    params = dict(parse_qsl(parts.query))
    read, unreadable = links.from_query(params, TRAIN, links.TRAIN_CHOICES)
    assert not unreadable
    assert RunConfig.from_dict(read) == RunConfig.from_dict(values)
    assert links.hidden_from_query(params, TRAIN) == (["lr", "seed"], [])


def test_a_page_url_without_a_query_is_the_page():
    assert links.page_url("http://host:8501", "compare", {}) == "http://host:8501/compare"


@pytest.mark.parametrize("lesson", lessons.LESSONS, ids=lambda lesson: lesson.id)
def test_every_lesson_makes_an_exercise_link_to_its_page(lesson):
    defaults = links.page_defaults(lesson.page)
    assert defaults == PAGE_DEFAULTS[lesson.page]
    hidden = list(defaults)[-2:]
    query = links.exercise_query(defaults | lesson.settings, defaults, hidden)
    values, unreadable = links.from_query(query, defaults)
    assert not unreadable and values == defaults | lesson.settings
    assert links.hidden_from_query(query, defaults) == (hidden, [])


def test_presenter_mode_reads_as_a_flag():
    flag = {links.PRESENTER: False}
    assert links.from_query({"presenter": "1"}, flag) == ({"presenter": True}, [])
    assert links.from_query({"presenter": "true"}, flag) == ({"presenter": True}, [])
    assert links.from_query({"presenter": "big"}, flag) == ({"presenter": False}, ["presenter"])


def test_a_link_without_a_learning_rate_leaves_it_to_the_method():
    defaults = links.train_defaults()
    assert defaults["lr"] is None  # the Train page: each method at its own rate
    assert links.from_query({"lr": "0.05"}, defaults) == (defaults | {"lr": 0.05}, [])
    assert links.from_query({"lr": ""}, defaults) == (defaults, [])
    assert links.from_query({"lr": "fast"}, defaults) == (defaults, ["lr"])
    assert "lr" not in links.to_query(defaults | {"method": "full"}, defaults)
    sweep = links.compare_configs(links.COMPARE_DEFAULTS, "all-linear")
    assert {c.method: c.learning_rate for c in sweep} == {"lora": 1e-2, "head": 1e-2, "full": 1e-3}
