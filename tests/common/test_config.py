"""A run's settings: one reader for every source (flags, links, the store), checked choices,
and names that agree with the modules that implement them."""

import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from core import __main__ as cli
from core.classroom import links
from core.common import config as settings
from core.common.config import RunConfig, config_choices, parse, sweep_configs, to_text
from core.lowrank import lora, methods
from core.training import data, zoo

ROOT = Path(__file__).resolve().parents[2]


def test_config_round_trips_through_a_dict_and_through_strings():
    config = RunConfig(
        rank=8, targets=["fc1", "fc2"], dora=True, shift="rotate", shift_params={"angle": 30.0}
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    as_strings = {k: v if isinstance(v, str) else str(v) for k, v in config.to_dict().items()}
    as_strings.update(targets="fc1,fc2", shift_params='{"angle": 30.0}', steps="")
    assert RunConfig.from_dict(as_strings) == config
    assert RunConfig.from_dict({}) == RunConfig()
    assert RunConfig(targets="fc1, fc2") == RunConfig(targets=["fc1", "fc2"])


def test_every_setting_round_trips_through_its_text():
    """What a link writes (to_text) is what the reader of every setting reads back."""
    config = RunConfig(
        model="vit",
        shift="planted-rank",
        shift_params={"rank": 2, "layer": "blocks.0.attn.q"},
        targets=["blocks.*.attn.q", "blocks.*.attn.v"],
        dora=True,
        alpha=0.001,
        steps=None,
        seed=3,
    )
    as_text = {name: to_text(value) for name, value in config.to_dict().items()}
    assert all(isinstance(text, str) for text in as_text.values())
    assert as_text["dora"] == "true" and as_text["steps"] == ""
    assert RunConfig.from_dict(as_text) == config


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("false", False), ("True", True), ("1", True), ("0", False)],
)
def test_one_boolean_spelling_and_the_old_links_one(text, value):
    """true/false everywhere; 1/0 (links from before) still read."""
    assert parse(text, bool) is value
    assert RunConfig.from_dict({"dora": text}).dora is value


@pytest.mark.parametrize("text", ["yes", "on", "2", "", "maybe"])
def test_other_boolean_words_are_refused(text):
    with pytest.raises(ValueError):
        parse(text, bool)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("4", int, 4),
        ("", int | None, None),
        ("none", int | None, None),
        ("0.001", float, 0.001),
        ("1,2,16", list[int], [1, 2, 16]),
        ("3,7", list[str], ["3", "7"]),
        ("", list[str], []),
        ('{"angle":30}', dict, {"angle": 30}),
        ("all-linear", list[str] | str, "all-linear"),
        ("fc1, fc2", list[str] | str, ["fc1", "fc2"]),
        ("vit", str, "vit"),
    ],
)
def test_parse_reads_each_kind(text, kind, value):
    assert parse(text, kind) == value


@pytest.mark.parametrize(
    ("text", "kind"),
    [("nan", float), ("inf", float), ("2.5", int), ("1,x", list[int]), ("[1]", dict)],
)
def test_parse_refuses_what_is_not_of_the_kind(text, kind):
    with pytest.raises(ValueError):
        parse(text, kind)


@pytest.mark.parametrize(
    "values", [{"colour": "red"}, {"rank": "four"}, {"dora": "maybe"}, {"rank": 2.5}]
)
def test_from_dict_rejects_unknown_or_malformed_settings(values):
    with pytest.raises(ValueError):
        RunConfig.from_dict(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rank": "four"}, "rank must be a whole number (got 'four')"),
        ({"rank": 2.5}, "rank must be a whole number (got 2.5)"),
        ({"steps": "x"}, "steps must be a whole number, or empty for none (got 'x')"),
        ({"lr": "fast"}, "lr must be a number, or empty for the default (got 'fast')"),
        ({"lr": "nan"}, "lr must be a number, or empty for the default (got 'nan')"),
        ({"alpha": True}, "alpha must be a number (got True)"),
        ({"dora": "maybe"}, "dora must be true or false (got 'maybe')"),
        ({"shift_params": "{bad"}, "shift_params must be a JSON object"),
        ({"shift_params": "[[1, 2]]"}, "shift_params must be a JSON object"),
        ({"targets": 5}, "targets must be"),
    ],
)
def test_a_malformed_setting_is_named_with_what_it_expects(values, message):
    with pytest.raises(ValueError) as error:
        RunConfig.from_dict(values)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "nope"}, "unknown model 'nope'; choose one of mlp, cnn"),
        ({"optimizer": "lion"}, "unknown optimizer"),
        ({"targets": []}, "no target layer"),
        ({"lr": float("nan")}, "lr must be a number > 0"),
        ({"weight_decay": -1.0}, "weight_decay must be a number ≥ 0 and ≤ 100 (got -1.0)"),
        ({"dropout": 1.0}, "dropout must be a number ≥ 0 and < 1 (got 1.0)"),
        ({"steps": 0}, "steps must be a whole number ≥ 1 and ≤ 1000000000 (got 0)"),
    ],
)
def test_validate_names_the_first_bad_setting_without_a_model(settings, message):
    with pytest.raises(ValueError) as error:
        RunConfig(**settings).validate()
    assert str(error.value).startswith(message)


def _past(end: float, whole: bool, direction: float) -> float:
    """The next number past `end` (towards `direction`) that a setting of this kind can hold."""
    return end + (1 if direction > 0 else -1) if whole else math.nextafter(end, direction)


@pytest.mark.parametrize("name", settings.BOUNDS)
def test_each_number_takes_its_bounds_and_nothing_past_them(name):
    """Every number setting has a bound: its ends are taken (an open end's nearest number), the
    numbers just past them are refused with one line naming the setting and its bound."""
    bound = settings.BOUNDS[name]
    low_in = _past(bound.low, bound.whole, math.inf) if bound.low_open else bound.low
    high_in = _past(bound.high, bound.whole, -math.inf) if bound.high_open else bound.high
    low_out = bound.low if bound.low_open else _past(bound.low, bound.whole, -math.inf)
    high_out = bound.high if bound.high_open else _past(bound.high, bound.whole, math.inf)
    for value in (low_in, high_in):
        RunConfig(**{name: value}).validate()
    for value in (low_out, high_out, math.nan, math.inf):
        with pytest.raises(ValueError) as error:
            RunConfig(**{name: value}).validate()
        message = str(error.value)
        assert message.startswith(f"{name} must be a ") and message.endswith(f"(got {value})")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"seed": 2**64},
            "seed must be a whole number ≥ 0 and ≤ 4294967295 (got 18446744073709551616)",
        ),
        ({"lr": 1e39}, "lr must be a number > 0 and ≤ 1e+06 (got 1e+39)"),
        ({"alpha": 0.0}, "alpha must be a number > 0 and ≤ 10000 (got 0.0)"),
        ({"rank": 2.0}, "rank must be a whole number ≥ 1 and ≤ 4096 (got 2.0)"),
        ({"batch_size": True}, "batch_size must be a whole number ≥ 1 and ≤ 65536 (got True)"),
    ],
)
def test_a_number_out_of_bounds_is_named_with_its_bound(settings, message):
    with pytest.raises(ValueError) as error:
        RunConfig(**settings).validate()
    assert str(error.value) == message


def test_every_number_a_shift_takes_has_a_bound():
    numbers = {
        name
        for shift in data.SHIFTS.values()
        for name, default in shift.params.items()
        if isinstance(default, int | float) and not isinstance(default, bool)
    }
    assert numbers == set(settings.SHIFT_PARAM_BOUNDS)
    for name, bound in settings.SHIFT_PARAM_BOUNDS.items():
        for shift in data.SHIFTS.values():
            if name in shift.params:
                assert shift.params[name] in bound


def test_the_lora_settings_are_not_checked_for_other_methods():
    RunConfig(method="head", targets=[]).validate()


def test_a_sweep_is_lora_at_each_rank_then_head_and_full_on_one_task():
    base = RunConfig(shift="permute", dora=True, seed=3)
    configs = sweep_configs(base, [8, 1, 4])
    assert [(c.method, c.rank) for c in configs[:3]] == [("lora", 1), ("lora", 4), ("lora", 8)]
    assert [c.method for c in configs[3:]] == ["head", "full"]
    assert all(c.shift == "permute" and c.seed == 3 for c in configs)
    assert not any(c.dora for c in configs[3:])  # DoRA is a LoRA option only
    assert len(sweep_configs(base, [2], baselines=False)) == 1


def test_the_choices_are_the_names_the_modules_implement():
    """core/common/config.py declares each list of names once; the zoo and the datasets hold an
    entry for each, in the same order, and methods and lora use config's tuples themselves."""
    assert tuple(zoo.ZOO) == settings.MODELS
    assert tuple(data.DATASETS) == settings.DATASETS
    assert tuple(data.SHIFTS) == settings.SHIFTS
    assert methods.METHODS is settings.METHODS
    assert (lora.INITS, lora.SCALINGS) == (settings.INITS, settings.SCALINGS)
    assert settings.DEFAULT_MODEL in settings.MODELS
    assert settings.DEFAULT_DATASET in settings.DATASETS
    for name, allowed in config_choices().items():
        assert getattr(RunConfig(), name) in allowed, name


def test_reading_settings_loads_no_torch():
    """The command line's --help and the Learn page read settings; torch takes a second."""
    code = "import sys, core.common.config, core.classroom.links; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_each_method_has_its_own_learning_rate_unless_one_is_set():
    assert RunConfig().lr is None and RunConfig().learning_rate == 1e-2
    assert RunConfig(method="full").learning_rate == 1e-3
    assert RunConfig(method="top-k").learning_rate == 1e-3
    assert {RunConfig(method=m).learning_rate for m in ("head", "bitfit")} == {1e-2}
    assert RunConfig(method="full", lr=0.05).learning_rate == 0.05  # an explicit rate wins
    # a sweep's baselines are replace(base, method=...): they take their own method's rate
    assert [c.learning_rate for c in sweep_configs(RunConfig(), [4])] == [1e-2, 1e-2, 1e-3]
    pinned = sweep_configs(RunConfig(lr=0.003), [4])
    assert {c.learning_rate for c in pinned} == {0.003}
    assert set(settings.DEFAULT_LR) == set(settings.METHODS)
    # empty (a link, a flag) is "the method's", and it survives the store's JSON
    assert RunConfig.from_dict({"lr": ""}).lr is None
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()
    assert parse(to_text(None), float | None) is None and parse("0.5", float | None) == 0.5


def test_a_lora_run_without_a_target_is_refused_with_its_catalog_key_also_through_pickle():
    """The command line reads its line; a page says it from the key (in the student's language);
    a class's queue (a Ray actor) raises it to the server through pickle."""
    with pytest.raises(settings.SettingError) as caught:
        RunConfig(targets="").validate()
    error = caught.value
    copy = pickle.loads(pickle.dumps(error))
    assert str(error) == "no target layer: choose at least one layer to adapt"
    assert (str(copy), copy.key, copy.values) == (str(error), "errors.no_targets", {})


def test_the_head_trains_unless_kept_frozen_and_a_stored_config_without_it_trains_it():
    """train_head: true by default; a run stored before the setting existed (its JSON has no
    such key) reads as the head trained, as it was; a link, a flag and the store carry false."""
    assert RunConfig().train_head is True
    stored = RunConfig(method="full").to_dict()
    del stored["train_head"]
    assert RunConfig.from_dict(stored) == RunConfig(method="full")
    frozen = RunConfig(train_head=False)
    assert RunConfig.from_dict(frozen.to_dict()) == frozen
    assert RunConfig.from_dict({"train_head": "false"}) == frozen
    defaults = links.train_defaults()
    query = links.to_query(defaults | {"train_head": False}, defaults)
    assert query == {"train_head": "false"}
    assert links.from_query(query, defaults) == (defaults | {"train_head": False}, [])
    assert links.from_query({"train_head": "maybe"}, defaults) == (defaults, ["train_head"])
    flags = cli.parser().parse_args(["train", "--no-train-head"])
    assert flags.train_head is False


@pytest.mark.parametrize(
    ("changes", "key", "line"),
    [
        ({"method": "head"}, "errors.frozen_head_only", "method head with the head frozen"),
        ({"shift": "label-permute"}, "errors.frozen_head_renamed", "renames the classes"),
    ],
)
def test_a_frozen_head_that_cannot_work_is_refused_with_its_catalog_key(changes, key, line):
    """Head-only training with the head frozen would train nothing; on renamed classes the
    pretrained head answers with the old names. Both are fine with the head trained."""
    RunConfig(**changes).validate()
    with pytest.raises(settings.SettingError) as caught:
        RunConfig(train_head=False, **changes).validate()
    assert caught.value.key == key and line in str(caught.value)
