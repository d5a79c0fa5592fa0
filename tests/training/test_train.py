"""The training loop: repeatable, stoppable, safe with a diverging loss, clear about bad input."""

import collections
import copy
import dataclasses
import re
import threading

import pytest
import torch

from core.common.config import RunConfig, for_model
from core.common.paths import OfflineError
from core.lowrank import lora, methods
from core.lowrank.methods import trainable_parameters
from core.lowrank.targets import resolve_targets
from core.training import data, zoo
from core.training import train as train_module
from core.training.train import (
    Event,
    build_models,
    check_config,
    check_head,
    evaluate,
    head_trains,
    make_optimizer,
    parameter_count,
    source_split,
    train,
)
from tests.support.store import SMALL

pytestmark = pytest.mark.usefixtures("one_thread")


def run(**settings):
    return train(RunConfig(**{**SMALL, **settings}))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def losses(result) -> list:
    return [(h["train_loss"], h["val_loss"], h["val_acc"]) for h in result.history]


def test_same_config_and_seed_give_identical_numbers():
    first, second = run(), run()
    assert losses(first) == losses(second)
    assert first.snapshots == second.snapshots
    assert first.test_acc_after == second.test_acc_after
    assert same_weights(first.model, second.model)


def test_randomness_drawn_elsewhere_does_not_reach_the_run():
    """Dropout draws from torch's global generator; other code may have drawn from it too."""
    first = run(dropout=0.3)
    torch.rand(7)
    assert losses(first) == losses(run(dropout=0.3))


def deterministic_setting() -> tuple[bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )


@pytest.mark.parametrize("setting", [(False, False), (True, False)])
def test_a_run_leaves_the_callers_random_state_and_settings_as_it_found_them(setting):
    """train() seeds and draws (dropout) from torch's global generator and asks for
    deterministic algorithms: inside the run only. Two runs still agree bit for bit."""
    original = deterministic_setting()
    torch.use_deterministic_algorithms(setting[0], warn_only=setting[1])
    try:
        torch.manual_seed(123)
        before = torch.get_rng_state()
        first = run(dropout=0.3)
        assert torch.equal(torch.get_rng_state(), before)
        assert deterministic_setting() == setting
        second = run(dropout=0.3)
        assert torch.equal(torch.get_rng_state(), before)
    finally:
        torch.use_deterministic_algorithms(original[0], warn_only=original[1])
    assert losses(first) == losses(second) and same_weights(first.model, second.model)


def test_another_seed_gives_other_numbers():
    """The determinism test above could fail: the seed really reaches the numbers."""
    assert losses(run(seed=0)) != losses(run(seed=1))


def test_events_tell_the_whole_run():
    events: list[Event] = []
    result = train(RunConfig(**SMALL), on_event=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert events[0].data["steps"] == 6
    assert events[0].data["num_classes"] == 10
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == list(range(7))  # step 0 is the base model
    assert [e.data for e in steps] == result.history
    assert [e.step for e in events if e.kind == "eval"] == [0, 3, 6]
    snapshots = [e for e in events if e.kind == "snapshot"]
    assert [e.step for e in snapshots] == [3, 6]
    layers = snapshots[-1].data["layers"]
    assert set(layers) == set(lora.adapted_layers(result.model))
    assert all(len(layer["sigma"]) == 4 for layer in layers.values())  # rank 4: 4 values
    assert events[-1].data == result.summary()


def test_snapshot_sigmas_are_those_of_delta_W():
    result = run()
    layer = lora.adapted_layers(result.model)["fc1"]
    expected = torch.linalg.svdvals(layer.delta_W().detach().double())[:4]
    recorded = torch.tensor(result.snapshots[-1]["layers"]["fc1"]["sigma"], dtype=torch.float64)
    torch.testing.assert_close(recorded, expected, rtol=1e-5, atol=1e-7)


def test_result_reports_accuracy_parameters_and_time():
    result = run()
    assert result.status == "finished" and result.reason == ""
    assert 0 <= result.test_acc_before <= 1 and 0 <= result.test_acc_after <= 1
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert result.trainable_params == trainable < result.total_params
    assert result.seconds > 0


def test_training_improves_the_task_and_leaves_the_base_untouched():
    fresh = zoo.load("mlp")
    result = run(shift="label-permute", steps=40)
    assert result.test_acc_after > result.test_acc_before + 0.2
    assert same_weights(result.base, fresh)


def test_stop_ends_the_run_at_the_next_step():
    stop = threading.Event()

    def stop_at_step_2(event: Event) -> None:
        if event.kind == "step" and event.step == 2:
            stop.set()

    result = train(RunConfig(steps=50), on_event=stop_at_step_2, stop=stop)
    assert result.status == "stopped"
    assert result.history[-1]["step"] == 2
    assert "step 2" in result.reason
    assert result.test_acc_after is not None  # a stopped model is still a model


def test_a_diverging_loss_stops_with_a_reason_and_keeps_the_history():
    result = run(lr=100.0, optimizer="sgd", steps=30)
    assert result.status == "failed"
    assert "learning rate" in result.reason
    assert len(result.history) >= 2  # the base model and at least one step before it blew up
    logged = [h["train_loss"] for h in result.history[1:]]
    assert all(torch.isfinite(torch.tensor(logged)))  # what was kept is the finite part
    assert result.test_acc_after is None


def test_each_method_trains_at_its_own_rate_and_the_summary_says_which():
    for method, rate in (("lora", 1e-2), ("full", 1e-3)):
        config = RunConfig(method=method, steps=1)
        _, model = build_models(config, 10)
        assert {g["lr"] for g in make_optimizer(model, config).param_groups} == {rate}
    assert run(steps=1).summary()["lr"] == 1e-2
    assert run(steps=1, method="full", lr=0.05).summary()["lr"] == 0.05


def test_a_run_reports_its_accuracy_on_the_source_task_before_and_after():
    """The upright MNIST-5k test split the zoo models were pretrained on (the mlp: 93 %)."""
    result = run(steps=30, method="full", lr=0.05)
    source = source_split("mlp", 10)
    assert result.source_acc_before == evaluate(result.base, source).acc == pytest.approx(0.93)
    assert result.source_acc_after == evaluate(result.model, source).acc
    assert result.source_acc_after < result.source_acc_before  # this run did forget
    summary = result.summary()
    assert summary["source_acc_before"] == result.source_acc_before
    assert summary["source_acc_after"] == result.source_acc_after
    assert source_split("resnet18", 10) is None  # pretrained on ImageNet: no source task here
    assert source_split("mlp", 5) is None  # another head answers another question


def test_the_base_is_measured_once_per_task_and_every_run_starts_from_its_numbers(monkeypatch):
    """Runs on one task share the base model's measures (step 0 and "before"); a cached
    measure is the number a fresh one is, whichever method asks; another task or other base
    weights are measured anew."""
    measured = []
    real = train_module._measure_base
    monkeypatch.setattr(train_module, "_base_measures", collections.OrderedDict())
    monkeypatch.setattr(train_module, "_measure_base", lambda *a: measured.append(a) or real(*a))
    runs = [run(steps=1, rank=2), run(steps=1, init="pissa"), run(steps=1, method="full")]
    assert len(measured) == 1
    test, val = runs[0].task.split("test"), runs[0].task.split("val")
    for result in runs:
        assert result.test_acc_before == evaluate(result.base, test).acc
        assert result.history[0]["val_loss"] == evaluate(result.base, val).loss
    run(steps=1, shift="none")
    assert len(measured) == 2
    changed = zoo.load("mlp")
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    monkeypatch.setattr(zoo, "load", lambda *a, **k: copy.deepcopy(changed))
    assert run(steps=1).test_acc_before == evaluate(changed, test).acc
    assert len(measured) == 3


def test_the_planted_task_fits_the_teachers_logits_through_the_frozen_head():
    result = run(shift="planted-rank", targets=["fc1"], rank=4, steps=20)
    head = zoo.load("mlp").head
    assert torch.equal(result.model.head.weight, head.weight)  # the base model's read-out
    task = result.task
    mse = torch.nn.functional.mse_loss(result.model(task.x_val), task.z_val).item()
    assert result.history[-1]["val_loss"] == pytest.approx(mse, rel=1e-5)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    head_only = run(shift="planted-rank", method="head", steps=2)  # the floor still trains
    assert not torch.equal(head_only.model.head.weight, head.weight)


def test_lora_plus_gives_B_its_own_learning_rate():
    config = RunConfig(lr=0.01, lora_plus_ratio=16.0)
    base = zoo.load("mlp")
    model = lora.inject(base, resolve_targets(base, "all-linear"), rank=4, alpha=8)
    trainable_parameters(model, "lora")
    groups = make_optimizer(model, config).param_groups
    B_ids = {id(layer.B) for layer in lora.adapted_layers(model).values()}
    for group in groups:
        is_B = {id(p) in B_ids for p in group["params"]}
        assert len(is_B) == 1
        assert group["lr"] == (0.16 if is_B.pop() else 0.01)


def test_full_fine_tuning_trains_every_parameter():
    result = run(method="full", steps=2)
    assert result.trainable_params == result.total_params
    assert not lora.adapted_layers(result.model)
    assert result.snapshots[-1]["layers"]  # the changed layers' delta_W spectra


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rank": 300}, r"above min\(d, k\)"),
        ({"targets": ["no_such_layer"]}, "matches no layer"),
        ({"targets": []}, "no target layer"),
        ({"lr": 0.0}, "lr must be"),
        ({"lr": -1.0}, "lr must be"),
        ({"model": "nope"}, "unknown model"),
        ({"dataset": "nope"}, "unknown dataset"),
        ({"shift": "nope"}, "unknown shift"),
        ({"method": "nope"}, "unknown method"),
        ({"rank": 0}, "rank must be a whole number ≥ 1"),
        ({"dropout": 1.0}, "dropout"),
        ({"steps": 0}, "steps must be"),
    ],
)
def test_bad_settings_get_a_clear_one_line_message(settings, message):
    config = RunConfig(**settings)
    with pytest.raises(ValueError, match=message) as error:
        if config.model in zoo.names():
            check_config(config, zoo.load(config.model))
        else:
            config.validate()
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=message):
        train(config)


def test_lora_settings_do_not_matter_to_other_methods():
    odd = RunConfig(method="full", dora=True, targets=[], rank=300)
    check_config(odd, zoo.load("mlp"))  # a rank above min(d, k), no targets: fine for full
    plain = RunConfig(method="full")
    assert parameter_count(odd) == parameter_count(plain)
    count = parameter_count(odd)
    assert count.trainable == count.total  # full fine-tuning, and no adapter was added


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"angle": "x"}, "shift parameter 'angle' must be a number (got 'x')"),
        ({"angle": None}, "shift parameter 'angle' must be a number (got None)"),
    ],
)
def test_a_malformed_shift_parameter_is_named(params, message):
    with pytest.raises(ValueError) as error:
        train(RunConfig(shift="rotate", shift_params=params, steps=1))
    assert str(error.value) == message


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"rank": 16, "targets": "fc2", "dora": True},
        {"method": "bitfit"},
        {"method": "top-k", "top_k": 2},
        {"model": "cnn", "targets": "conv1,fc1", "rank": 2},
        {"dataset": "digits", "method": "head"},  # a dataset of another size
    ],
)
def test_parameter_count_is_what_the_built_model_trains(settings):
    """Trainable, total and head parameters, counted here by hand on the built model."""
    config = RunConfig(**settings)
    _, model = build_models(config, 10)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    head = model.head_name  # every zoo model names its head
    adapter_parts = (".A", ".B", ".magnitude")
    in_head = sum(
        size
        for name, size in trainable.items()
        if name.startswith(head + ".") and not name.endswith(adapter_parts)
    )
    count = parameter_count(config)
    assert count.trainable == sum(trainable.values()) > 0
    assert count.total == sum(p.numel() for p in model.parameters())
    assert count.head == in_head > 0  # the head trains in every method


def test_parameter_count_rejects_what_the_model_rejects():
    with pytest.raises(ValueError, match="min"):
        parameter_count(RunConfig(rank=300))


COUNTED = [
    {"method": "lora"},
    {"method": "lora", "rank": 2, "dora": True, "train_head": False},
    {"method": "lora", "rank": 3, "scaling": "rslora", "targets": "head"},
    {"method": "full"},
    {"method": "head"},
    {"method": "bitfit"},
    {"method": "top-k", "top_k": 2},
]


def built_count(config: RunConfig) -> methods.ParamCount:
    """count_parameters of the model as training builds it (build_models: weights loaded,
    adapters injected, parameters marked); for an ImageNet model whose weights are not on this
    computer, the same steps on its architecture (the weights change no count)."""
    try:
        classes = data.DATASETS[config.dataset].num_classes
        return methods.count_parameters(build_models(config, classes)[1])
    except OfflineError:
        check_head(config)
        model = copy.deepcopy(zoo.architecture(config.model))
    if config.method == "lora":
        names = resolve_targets(model, config.targets)
        model = lora.inject(model, names, config.rank, config.alpha, dora=config.dora)
    trainable_parameters(model, config.method, config.top_k, head_trains(config))
    return methods.count_parameters(model)


@pytest.mark.parametrize("model", zoo.names())
@pytest.mark.parametrize("settings", COUNTED)
def test_the_count_from_shapes_is_the_built_models_count(model, settings):
    """parameter_count reads shapes only (zoo.architecture, methods.planned_count); the model
    training builds must count the same, for every zoo model and method."""
    head = zoo.architecture(model).head_name
    targets = {"targets": zoo.default_targets(model)} | settings
    targets["targets"] = head if targets["targets"] == "head" else targets["targets"]
    config = dataclasses.replace(for_model(model), **targets)
    try:
        built = built_count(config)
    except ValueError as refusal:  # a new (ImageNet) head kept frozen: refused by both
        with pytest.raises(ValueError, match=re.escape(str(refusal))):
            parameter_count(config)
        return
    assert parameter_count(config) == built


def test_the_count_from_shapes_follows_the_tasks_classes():
    """A dataset of another class count gets a head of its own size."""
    config = RunConfig(dataset="digits", method="head")
    assert parameter_count(config) == built_count(config)
