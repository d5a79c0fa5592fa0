"""The Train page's rules without the page (core.classroom.train_form): plain pytest, no AppTest."""

import dataclasses

import pytest

from core.classroom import links, train_form
from core.classroom.i18n import catalog
from core.classroom.links import train_defaults
from core.common.config import RunConfig, for_model, shifts_for
from core.lowrank.methods import ParamCount
from core.lowrank.targets import eligible_layers
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
    assert train_form.targets_setting(mlp, "mlp", ["fc1", "fc2"]) == "all-linear"
    assert train_form.targets_setting(mlp, "mlp", ["fc2", "fc1"]) == "fc2,fc1"
    assert train_form.targets_setting(mlp, "mlp", ["fc1", "head"]) == "fc1,head"


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
    card, words = zoo.card("mlp"), catalog("en")
    assert card["test_acc"] > 0.5
    assert train_form.card_line("mlp", words) == words.t(
        "train.card",
        params=f"{card['params']:,}",
        score=f"{card['test_acc']:.1%}",
        source=words.t("models.mlp.source"),
    )
    assert train_form.card_line("resnet18", words) == words.t(
        "train.card_imagenet", params=f"{zoo.card('resnet18')['params']:,}"
    )


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_language_models_card_line_names_its_prose_in_the_students_words(lang):
    """Issue 20: the card's own source_task is a long English string; the line says the
    catalog's name for the prose, and the score is bits per character as the card has it."""
    card, words = zoo.card("gpt"), catalog(lang)
    line = train_form.card_line("gpt", words)
    assert words.t("models.gpt.source") in line and card["source_task"] not in line
    assert f"{card['test_bpc']:.2f}" in line and f"{card['params']:,}" in line
    assert line == words.t(
        "train.card_text",
        params=f"{card['params']:,}",
        score=f"{card['test_bpc']:.2f}",
        source=words.t("models.gpt.source"),
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


# ----------------------------------------------------------------------------- a language model


@pytest.fixture(scope="module")
def gpt():
    return train_form.base_model(train_defaults("gpt"))  # as the page loads it


def test_picking_gpt_moves_the_form_to_its_own_settings_and_back():
    """Issue 20: gpt starts from prose, code, q and v, batch 8, 100 steps
    (config.for_model); back on an image model the image defaults return; between two image
    models nothing moves."""
    moved = train_form.moved_settings("mlp", "gpt")
    own = RunConfig.from_dict(train_defaults() | moved | {"model": "gpt"})
    expected = for_model("gpt")
    for name in ("dataset", "shift", "targets", "batch_size", "steps"):
        assert getattr(own, name) == getattr(expected, name), name
    back = train_form.moved_settings("gpt", "mlp")
    assert train_defaults() == train_defaults("gpt") | back | {"model": "mlp"}
    assert train_form.moved_settings("mlp", "cnn") == {}


def test_a_gpt_form_runs_with_gpts_evaluation_interval(gpt):
    """The page has no box for eval_interval: a gpt run measures and samples every 25 steps,
    as its model starts it, not every 10 as the digit models'."""
    form = train_form.check(train_defaults("gpt"), gpt)
    assert form.refusal is None
    assert form.config.eval_interval == for_model("gpt").eval_interval != RunConfig.eval_interval
    assert form.config.snapshot_interval == for_model("gpt").snapshot_interval


def test_the_dataset_and_shift_boxes_offer_the_models_kind_only():
    assert train_form.choices_for("gpt", "dataset", "prose") == ["prose"]
    assert train_form.choices_for("gpt", "shift", "code") == shifts_for("text")
    assert "rotate" not in shifts_for("text") and "code" in shifts_for("text")
    images = train_form.choices_for("mlp", "dataset", "mnist-5k")
    assert "prose" not in images and "mnist-5k" in images
    assert train_form.choices_for("mlp", "shift", "rotate") == shifts_for("images")
    # a link's value of the other kind stays in the box: the form refuses it in one line
    assert train_form.choices_for("gpt", "dataset", "mnist-5k")[-1] == "mnist-5k"
    refusal = train_form.check(train_defaults("gpt") | {"dataset": "mnist-5k"}, None)
    assert refusal.config is not None  # read; refused by check_config once the model loads


def test_a_gpt_link_carries_its_settings_and_reads_back_the_same():
    """A gpt link names the model and what differs from gpt's own settings (not every setting
    in which gpt differs from the digit models); reading it gives those settings back."""
    values = train_defaults("gpt") | {"model": "gpt", "rank": 8}
    query = links.to_query(values, links.train_link_defaults(values["model"]))
    assert query == {"model": "gpt", "rank": "8"}
    read, unreadable = links.from_query(query, links.train_link_defaults(query["model"]))
    assert read == values and unreadable == []
    assert links.train_link_defaults("mlp") == train_defaults()  # image links are as before


def test_the_presets_are_the_lora_papers_choices(gpt):
    presets = train_form.target_presets(gpt, "gpt")
    assert list(presets) == ["q_v", "attention", "all_linear", "mlp"]
    blocks = range(4)
    assert set(presets["q_v"]) == {f"blocks.{i}.attn.{w}" for i in blocks for w in "qv"}
    assert set(presets["attention"]) == {f"blocks.{i}.attn.{w}" for i in blocks for w in "qkvo"}
    assert set(presets["mlp"]) == {f"blocks.{i}.mlp.{w}" for i in blocks for w in ("fc", "proj")}
    assert set(presets["all_linear"]) == set(presets["attention"]) | set(presets["mlp"])
    assert "lm_head" not in presets["all_linear"]
    spelled = dict(zoo.ZOO["gpt"].target_presets)
    for name, picked in presets.items():  # each said in a link as the preset, and read back
        setting = train_form.targets_setting(gpt, "gpt", picked)
        assert setting == spelled[name]
        assert train_form.starting_targets(gpt, "gpt", setting) == (picked, True)
    assert train_form.target_presets(zoo.load("mlp"), "mlp") == {}  # an image model has none


def test_the_target_table_lists_each_blocks_layers_with_their_cost(gpt):
    """q, k, v, o, fc and proj of every block, each costing r·(d + k) at rank r."""
    layers = {layer.name: layer for layer in eligible_layers(gpt, 4)}
    for i in range(4):
        for name in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj"):
            layer = layers[f"blocks.{i}.{name}"]
            weight = gpt.get_submodule(layer.name).weight
            assert layer.lora_params == 4 * (weight.shape[0] + weight.shape[1])


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("metric", [kinds.ACCURACY, kinds.BITS, kinds.NEXT_CHARACTER])
def test_a_change_is_said_with_its_sign_first(lang, metric):
    """st.metric reads a change's direction (its arrow, and with lower_is_better its colour)
    from the sign its text starts with: "每字符 -0.61 比特" showed a fall in bits as a red rise."""
    said = catalog(lang).t(metric.change, value=metric.changed(3.0, 2.0))
    assert said.startswith("-"), said
    assert catalog(lang).t(metric.change, value=metric.changed(2.0, 3.0)).startswith("+")
