"""Each method trains exactly the parameters it says, checked through real gradients."""

import pytest
import torch
from toy_models import ToyCNN, ToyMLP

from core import lora, methods


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
