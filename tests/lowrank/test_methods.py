"""Each method trains exactly the parameters it says, checked through real gradients."""

import dataclasses
import json

import pytest
import torch

from core.common.config import RunConfig, SettingError
from core.lowrank import lora, methods
from core.lowrank.peft_io import export_peft, import_peft
from core.store import runs
from core.training import data, train, zoo
from core.training.rebuild import rebuild
from core.training.record import train_and_save
from tests.support.toy_models import ToyCNN, ToyMLP


def grads_after_backward(model: torch.nn.Module, method: str, **kwargs) -> set[str]:
    methods.trainable_parameters(model, method, **kwargs)
    x = torch.randn(4, 1, 8, 8) if isinstance(model, ToyCNN) else torch.randn(4, 12)
    model(x).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None}


def test_full_trains_everything():
    model = ToyMLP()
    assert grads_after_backward(model, "full") == {n for n, _ in model.named_parameters()}


def test_head_trains_the_output_layer_only():
    assert grads_after_backward(ToyMLP(), "head") == {"head.weight", "head.bias"}


def test_bitfit_trains_biases_and_head():
    expected = {"fc1.bias", "fc2.bias", "head.weight", "head.bias"}
    assert grads_after_backward(ToyMLP(), "bitfit") == expected


def test_top_k_trains_the_last_blocks_and_head():
    expected = {"fc2.weight", "fc2.bias", "head.weight", "head.bias"}
    assert grads_after_backward(ToyMLP(), "top-k", top_k=1) == expected
    both = grads_after_backward(ToyMLP(), "top-k", top_k=2)
    assert both == expected | {"fc1.weight", "fc1.bias"}


def test_lora_trains_adapters_and_head_never_W0():
    model = lora.inject(ToyCNN(), ["conv1", "conv2"], rank=2, alpha=2.0, dora=True)
    adapters = {f"{t}.{p}" for t in ("conv1", "conv2") for p in ("A", "B", "magnitude")}
    assert grads_after_backward(model, "lora") == adapters | {"head.weight", "head.bias"}


def test_lora_on_an_adapted_head_keeps_its_W0_frozen():
    model = lora.inject(ToyMLP(), ["head"], rank=2, alpha=2.0)
    trained = grads_after_backward(model, "lora")
    assert trained == {"head.A", "head.B"}


def test_lora_without_adapters_is_refused():
    with pytest.raises(ValueError, match="inject"):
        methods.trainable_parameters(ToyMLP(), "lora")


def test_bad_method_and_bad_k_are_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        methods.trainable_parameters(ToyMLP(), "prefix")
    with pytest.raises(ValueError, match="1 ≤ k ≤ 2"):
        methods.trainable_parameters(ToyMLP(), "top-k", top_k=3)


def test_count_parameters_matches_a_hand_count():
    model = lora.inject(ToyMLP(), ["fc1", "fc2"], rank=2, alpha=2.0)
    methods.trainable_parameters(model, "lora")
    count = methods.count_parameters(model)
    base = (12 * 16 + 16) + (16 * 16 + 16) + (16 * 5 + 5)
    adapters = 2 * (16 + 12) + 2 * (16 + 16)
    head = 16 * 5 + 5
    assert count.total == base + adapters
    assert count.trainable == adapters + head
    assert count.head == head
    assert count.fraction == pytest.approx((adapters + head) / (base + adapters))


def test_the_head_count_leaves_out_an_adapter_on_the_head():
    model = lora.inject(ToyMLP(), ["head"], rank=2, alpha=2.0)
    methods.trainable_parameters(model, "lora")
    count = methods.count_parameters(model)
    assert count.head == 0 and count.trainable == 2 * (5 + 16)
    methods.trainable_parameters(model, "full")
    assert methods.count_parameters(model).head == 16 * 5 + 5  # the head's W0 and bias


def test_head_training_says_how_the_head_trains():
    """The sentence under the Train button follows it: a head picked as a LoRA target trains
    through its adapter only, not "in full" and not "frozen on this task"."""
    default = lora.inject(ToyMLP(), ["fc1"], rank=2, alpha=2.0)
    methods.trainable_parameters(default, "lora")
    assert methods.count_parameters(default).head_training == "full"
    on_head = lora.inject(ToyMLP(), ["fc1", "head"], rank=2, alpha=2.0)
    trained = grads_after_backward(on_head, "lora")
    assert {n for n in trained if n.startswith("head")} == {"head.A", "head.B"}
    assert methods.count_parameters(on_head).head_training == "adapter"
    methods.trainable_parameters(on_head, "lora", train_head=False)  # planted-rank
    assert methods.count_parameters(on_head).head_training == "adapter"
    methods.trainable_parameters(default, "lora", train_head=False)
    assert methods.count_parameters(default).head_training == "frozen"


def test_a_task_that_keeps_the_head_freezes_it_but_not_the_adapters():
    model = lora.inject(ToyMLP(), ["fc1"], rank=2, alpha=2)
    trained = grads_after_backward(model, "lora", train_head=False)
    assert trained and not any(n.startswith("head") for n in trained)
    assert {n.rsplit(".", 1)[-1] for n in trained} == {"A", "B"}
    full = ToyMLP()
    assert grads_after_backward(full, "full", train_head=False) == {
        n for n, _ in full.named_parameters() if not n.startswith("head")
    }


# -- keeping the pretrained head frozen (RunConfig.train_head) ------------------------------------
def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "full", "top-k", "bitfit"])
def test_train_head_false_freezes_the_head_and_nothing_else(method):
    config = RunConfig(method=method)
    _, trained = train.build_models(config, 10)
    _, frozen = train.build_models(dataclasses.replace(config, train_head=False), 10)
    head = {"head.weight", "head.bias"}
    assert head <= trainable_names(trained)
    assert trainable_names(frozen) == trainable_names(trained) - head


def test_a_new_head_cannot_stay_frozen():
    """An ImageNet model's head is new (random) for these ten classes: refused, by its key,
    before any weights load (the check needs only the zoo's entry)."""
    train.check_head(RunConfig(model="mlp", train_head=False))
    train.check_head(RunConfig(model="resnet18"))
    for model in ("resnet18", "mobilenet_v3_small"):
        with pytest.raises(SettingError) as caught:
            train.check_head(RunConfig(model=model, train_head=False))
        assert caught.value.key == "errors.frozen_head_new" and model in str(caught.value)


def source_accuracy_by_hand(model: torch.nn.Module, head_from: torch.nn.Module) -> float:
    """The model's accuracy on the upright digits with `head_from`'s head weights in its head."""
    source = data.source_task()
    with torch.no_grad():
        features = _below_head(model.eval(), source.x_test)
        logits = torch.nn.functional.linear(features, head_from.head.weight, head_from.head.bias)
    return (logits.argmax(1) == source.y_test).float().mean().item()


def _below_head(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the mlp's head reads: its input, caught by a hook."""
    caught = []
    handle = model.head.register_forward_hook(lambda _m, inputs, _o: caught.append(inputs[0]))
    model(x)
    handle.remove()
    return caught[0]


@pytest.fixture(scope="module")
def short_runs() -> dict[bool, train.RunResult]:
    """The Train page's default run, shortened, with the head trained and kept frozen."""
    config = RunConfig(steps=40, eval_interval=40, snapshot_interval=40)
    return {
        head: train.train(dataclasses.replace(config, train_head=head)) for head in (True, False)
    }


def test_forgetting_measures_the_pretrained_head_put_back(short_runs):
    run = short_runs[True]
    forgot = train.forgetting(run.config, run.base, run.model, 10)
    assert (forgot.before, forgot.after) == (run.source_acc_before, run.source_acc_after)
    assert forgot.head_trained and forgot.learning_rate == 0.01
    assert forgot.head_back == pytest.approx(source_accuracy_by_hand(run.model, run.base))
    assert forgot.after == pytest.approx(source_accuracy_by_hand(run.model, run.model))
    assert forgot.head_part > 0.05  # the trained head lost some of the source task itself


def test_a_frozen_head_run_keeps_the_pretrained_head_bit_for_bit(short_runs, tmp_path):
    """The head is the base model's; a PEFT export saves no module beside the adapters, and
    the adapter imported onto a fresh base model computes exactly what the run computes."""
    run = short_runs[False]
    assert torch.equal(run.model.head.weight, run.base.head.weight)
    forgot = train.forgetting(run.config, run.base, run.model, 10)
    assert not forgot.head_trained and forgot.head_back == forgot.after
    assert forgot.lost > 0.01  # the adapters alone changed what the head reads
    export_peft(run.model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] is None
    imported = import_peft(zoo.load("mlp"), tmp_path).eval()
    x = data.source_task().x_test
    assert torch.equal(imported(x), run.model.eval()(x))
    export_peft(short_runs[True].model, tmp_path / "trained")
    saved = json.loads((tmp_path / "trained" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["head"]


def forgot(
    method: str = "lora", head_trained: bool = True, renamed: bool = False, **accuracies
) -> train.Forgetting:
    values = {"before": 0.93, "after": 0.47, "head_back": 0.78} | accuracies
    return train.Forgetting(method, head_trained, renamed, 0.01, **values)


def test_the_forgetting_note_says_where_the_points_went():
    key, values = forgot().note()
    assert key == "forgetting.head_trained"
    assert values["lost"] == pytest.approx(46) and values["head"] == pytest.approx(31)
    assert values["back"] == 0.78 and values["lr"] == 0.01
    assert forgot(head_back=0.47).note()[0] == "forgetting.head_not_it"
    assert forgot(head_trained=False, head_back=0.47).note()[0] == "forgetting.head_frozen"
    assert forgot("head", head_back=0.93).note()[0] == "forgetting.head_only"
    assert forgot(after=0.925, head_back=0.93).note() is None  # half a point: not worth saying
    assert forgot(renamed=True, after=0.01).note()[0] == "forgetting.renamed"  # by design


def test_a_frozen_head_run_is_stored_and_rebuilt_with_its_head_frozen(home):
    """The store keeps train_head in the run's config: the rebuilt model trains no head, saves
    none, and computes what the run computed, bit for bit."""
    config = RunConfig(train_head=False, steps=5, eval_interval=5, snapshot_interval=5)
    with runs.RunStore() as store:
        run_id, result = train_and_save(config, store)
        assert store.get_summary(run_id).config == config
        base, model = rebuild(store.read_weights(run_id))
    assert not any(n.startswith("head.") for n in trainable_names(model))
    assert torch.equal(model.head.weight, base.head.weight)
    x = data.source_task().x_test
    assert torch.equal(model(x), result.model.eval()(x))


def test_the_planned_count_is_a_hand_count_of_the_shapes():
    """planned_count, from the layers' shapes only: r(d + k) per adapter (+ d for DoRA), the
    head's own weights unless an adapter on it trains instead."""
    head = 16 * 5 + 5
    base = (12 * 16 + 16) + (16 * 16 + 16) + head
    count = methods.planned_count(ToyMLP(), "lora", targets=["fc1", "fc2"], rank=2, dora=True)
    adapters = 2 * (16 + 12) + 16 + 2 * (16 + 16) + 16
    assert count == methods.ParamCount(adapters + head, base + adapters, head=head)
    on_head = methods.planned_count(ToyMLP(), "lora", targets=["head"], rank=3)
    assert on_head == methods.ParamCount(3 * (5 + 16), base + 3 * (5 + 16), 0, head_adapted=True)
    assert methods.planned_count(ToyMLP(), "bitfit", train_head=False).trainable == 16 + 16


@pytest.mark.parametrize(
    ("model", "method", "options"),
    [
        (ToyMLP, "lora", {"targets": ["fc2", "head"], "rank": 4}),
        (ToyCNN, "lora", {"targets": ["conv1", "head"], "rank": 2, "dora": True}),
        (ToyCNN, "top-k", {"top_k": 2, "train_head": False}),
        (ToyCNN, "bitfit", {}),
        (ToyMLP, "full", {}),
        (ToyMLP, "head", {}),
    ],
)
def test_the_planned_count_is_the_count_of_the_adapted_model(model, method, options):
    """What count_parameters says once the model is injected and its parameters marked."""
    base = model()
    planned = methods.planned_count(base, method, **options)
    built = base
    if method == "lora":
        dora = options.get("dora", False)
        built = lora.inject(base, options["targets"], options["rank"], 1.0, dora=dora)
    methods.trainable_parameters(
        built, method, options.get("top_k", 1), options.get("train_head", True)
    )
    assert planned == methods.count_parameters(built)
