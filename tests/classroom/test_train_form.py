"""The Train page's rules without the page (core.classroom.train_form): plain pytest, no AppTest."""

import dataclasses

import pytest

from core.classroom import train_form
from core.classroom.links import train_defaults
from core.common.config import RunConfig
from core.lowrank.methods import ParamCount
from core.store.runs import StoreError
from core.training import data, kinds, zoo
from core.training.train import parameter_count


@pytest.fixture(scope="module")
def mlp():
    return zoo.load("mlp")


def test_the_forms_defaults_make_a_run_and_its_count(mlp):
    form = train_form.check(train_defaults(), mlp)
    assert form.refusal is None
    assert form.config == RunConfig.from_dict(train_defaults())
    assert form.count == parameter_count(form.config) and form.count.trainable > 0


def test_a_rank_above_a_layer_is_refused_with_the_config_kept(mlp):
    """The config stays: the page compares it with the run it shows."""
    form = train_form.check(train_defaults() | {"rank": 300}, mlp)
    assert form.count is None and "min(d, k)" in str(form.refusal)
    assert form.config is not None and form.config.rank == 300


def test_an_unreadable_setting_makes_no_config_and_a_bad_one_a_refusal(mlp):
    form = train_form.check(train_defaults() | {"rank": "four"}, mlp)
    assert form.config is None and form.count is None and "rank" in str(form.refusal)
    form = train_form.check(train_defaults() | {"alpha": -1.0}, mlp)
    assert form.count is None and "alpha must be" in str(form.refusal)


def test_without_a_model_the_settings_are_only_read():
    form = train_form.check(train_defaults() | {"rank": 300}, None)
    assert form == train_form.Form(
        RunConfig.from_dict(train_defaults() | {"rank": 300}), None, None
    )


def test_a_links_targets_start_the_picker_else_the_models_defaults(mlp):
    names = [name for name, _ in mlp.named_children()]
    assert train_form.starting_targets(mlp, "mlp", "fc2") == (["fc2"], True)
    assert train_form.starting_targets(mlp, "mlp", "fc1,fc*") == (["fc1", "fc2"], True)
    all_linear = [n for n in names if n.startswith("fc")]  # every Linear but the head
    assert train_form.starting_targets(mlp, "mlp", "all-linear") == (all_linear, True)
    for nothing in ("conv9", ""):
        assert train_form.starting_targets(mlp, "mlp", nothing) == (all_linear, False)


def test_the_picked_layers_are_said_shortly(mlp):
    assert train_form.targets_setting(mlp, ["fc1", "fc2"]) == "all-linear"
    assert train_form.targets_setting(mlp, ["fc2", "fc1"]) == "fc2,fc1"
    assert train_form.targets_setting(mlp, ["fc1", "head"]) == "fc1,head"


def test_a_links_shift_parameters_are_kept_only_if_the_boxes_hold_them():
    assert train_form.link_shift_params("rotate", {"angle": 30.0}) == ({"angle": 30.0}, True)
    assert train_form.link_shift_params("rotate", {"angle": "x"}) == ({}, False)
    assert train_form.link_shift_params("rotate", {"angle": 1e9}) == ({}, False)


def test_only_shift_parameters_off_their_defaults_are_kept():
    default = data.SHIFTS["rotate"].params["angle"]
    assert train_form.changed_shift_params("rotate", {"angle": default}) == {}
    assert train_form.changed_shift_params("rotate", {"angle": default + 1}) == {
        "angle": default + 1
    }


@pytest.mark.parametrize(
    ("planned", "step", "speed", "left", "text"),
    [(200, 50, 10.0, 15.0, "15"), (200, 199, 4.0, 0.25, "0"), (200, 0, 0.0, None, "–")],
)
def test_the_time_left_is_the_steps_left_at_the_runs_speed(planned, step, speed, left, text):
    assert train_form.seconds_left(planned, step, speed) == left
    assert train_form.eta_text(planned, step, speed) == text


@pytest.mark.parametrize(
    ("method", "count", "train_head", "said"),
    [
        ("lora", ParamCount(1000, 9000, head=100), True, ("train.count_lora", "900", "100")),
        ("lora", ParamCount(300, 9000, head_adapted=True), True, ("train.count_head_adapter",)),
        ("lora", ParamCount(300, 9000), True, ("train.count_frozen_head",)),
        ("lora", ParamCount(300, 9000), False, ("train.count_kept_frozen",)),
        ("bitfit", ParamCount(300, 9000, head=50), True, ("train.count_head", None, "50")),
        ("full", ParamCount(9000, 9000, head=50), True, None),
        ("head", ParamCount(50, 9000, head=50), True, None),
    ],
)
def test_where_the_trainable_parameters_are_is_said_by_method(method, count, train_head, said):
    split = train_form.count_split(method, count, train_head)
    if said is None:
        assert split is None
        return
    sentence, values = split
    assert sentence == said[0]
    if len(said) > 1:
        assert values.get("adapters") == said[1] and values["head"] == said[2]


class Store:
    """What stored_run asks of a store: a run that a recover() marks unfinished."""

    def __init__(self, status: str) -> None:
        self.record = dataclasses.make_dataclass("Record", ["status"])(status)
        self.recovered = 0

    def get(self, run_id: int):
        if run_id != 1:
            raise StoreError(f"there is no run {run_id}")
        return self.record

    def recover(self) -> list[int]:
        self.recovered += 1
        self.record = dataclasses.replace(self.record, status="unfinished")
        return [1]


@pytest.mark.parametrize(("status", "shown", "recovered"), [
    ("running", "unfinished", 1), ("finished", "finished", 0),
])  # fmt: skip
def test_a_running_stored_run_is_recovered_before_it_is_shown(status, shown, recovered):
    store = Store(status)
    assert train_form.stored_run(store, 1).status == shown
    assert store.recovered == recovered
    with pytest.raises(StoreError):
        train_form.stored_run(store, 2)


def test_the_model_cards_line_says_its_size_and_its_source_score():
    sentence, values = train_form.card_line("mlp")
    card = zoo.card("mlp")
    assert sentence == "train.card" and card["test_acc"] > 0.5
    assert values["score"] == f"{card['test_acc']:.1%}"
    assert values["params"] == f"{card['params']:,}" and values["source"] == card["source_task"]
    assert train_form.card_line("resnet18") == (
        "train.card_imagenet",
        {"params": f"{zoo.card('resnet18')['params']:,}"},
    )


def test_the_run_shown_is_named_by_where_it_comes_from():
    assert train_form.run_title(None, live=True) == "train.this_run_unsaved"
    assert train_form.run_title(7, live=True) == "train.this_run"
    assert train_form.run_title(7, live=False) == "train.latest"


def test_a_run_is_judged_by_its_datasets_metric_also_one_stored_on_an_unknown_dataset():
    assert train_form.metric_of(RunConfig(dataset="digits")) == data.kind_of("digits").metric
    edited = dataclasses.replace(RunConfig(), dataset="no-such-dataset")
    assert train_form.metric_of(edited) == kinds.ACCURACY


def test_an_ended_runs_headline_says_its_metric_before_and_after_and_the_change():
    result = {"test_acc_before": 0.376, "test_acc_after": 0.902, "source_acc_after": None}
    test = train_form.headline(kinds.ACCURACY, result, "test")
    assert test == train_form.Headline("37.6% → 90.2%", "train.points", "+52.6")
    assert train_form.headline(kinds.ACCURACY, result, "source") is None  # no source task
    assert train_form.headline(kinds.ACCURACY, {"test_acc_after": None}, "test") is None  # failed
    loss = dataclasses.replace(kinds.ACCURACY, field="bpc")  # another metric reads its own fields
    assert train_form.headline(loss, result, "test") is None
    assert train_form.headline(loss, {"test_bpc_before": 0.5, "test_bpc_after": 0.25}, "test")
