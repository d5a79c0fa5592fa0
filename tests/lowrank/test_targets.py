"""Choosing the layers to adapt: names, globs, "all-linear", the head, and what each costs."""

import pytest
import torch

from core.lowrank import lora
from core.lowrank.targets import (
    block_names,
    check_targets,
    eligible_layers,
    head_name,
    resolve_targets,
    why_not_adaptable,
)
from core.training import zoo
from core.training.zoo import default_targets
from tests.support.toy_models import ToyCNN, ToyMLP


def test_targets_all_linear_globs_and_names():
    base = ToyMLP()
    assert resolve_targets(base, "all-linear") == ["fc1", "fc2"]
    assert resolve_targets(base, ["fc*"]) == ["fc1", "fc2"]
    assert resolve_targets(base, ["fc2", "head"]) == ["fc2", "head"]
    assert resolve_targets(base, "fc2") == ["fc2"]
    assert resolve_targets(ToyCNN(), "all-linear") == []  # the head is its only Linear


@pytest.mark.parametrize(
    "targets, message",
    [
        (["attn.q"], "matches no layer.*fc1"),
        ([], "at least one target"),
        (["norm"], "LayerNorm cannot take an adapter"),
    ],
)
def test_a_choice_that_picks_nothing_says_why(targets, message):
    model = ToyMLP()
    model.norm = torch.nn.LayerNorm(4)
    with pytest.raises(ValueError, match=message):
        resolve_targets(model, targets)


def test_eligible_layers_list_shape_and_cost():
    layers = {layer.name: layer for layer in eligible_layers(ToyCNN(), rank=3)}
    assert set(layers) == {"conv1", "conv2", "head"}
    conv2 = layers["conv2"]
    assert (conv2.kind, conv2.d, conv2.k) == ("Conv2d", 8, 6 * 3 * 3)
    assert conv2.lora_params == 3 * (8 + 54)
    assert conv2.full_params == 8 * 54
    assert conv2.max_rank == 8
    assert layers["head"].is_head and not conv2.is_head
    model = lora.inject(ToyCNN(), ["conv2"], rank=3, alpha=3.0)
    adapter = lora.adapted_layers(model)["conv2"]
    assert sum(p.numel() for p in (adapter.A, adapter.B)) == conv2.lora_params


def test_the_base_inside_an_adapter_is_not_offered_again():
    model = lora.inject(ToyMLP(), ["fc1"], rank=2, alpha=2.0)
    assert [layer.name for layer in eligible_layers(model)] == ["fc2", "head"]


def test_why_not_adaptable_names_the_reason():
    assert why_not_adaptable(torch.nn.Linear(3, 2)) is None
    assert why_not_adaptable(torch.nn.Conv2d(2, 2, 3)) is None
    assert "Embedding cannot take an adapter" in why_not_adaptable(torch.nn.Embedding(5, 3))
    assert "groups=1" in why_not_adaptable(torch.nn.Conv2d(4, 4, 3, groups=4))
    # A subclass of Linear may skip its own forward (MultiheadAttention's out_proj does).
    attention = torch.nn.MultiheadAttention(4, 2)
    assert "cannot take an adapter" in why_not_adaptable(attention.out_proj)


def test_check_targets_names_the_layer_whose_rank_is_too_high():
    assert check_targets(ToyMLP(), "all-linear", rank=12) == ["fc1", "fc2"]
    with pytest.raises(ValueError, match=r"rank 13 is above min.*for fc1"):
        check_targets(ToyMLP(), "all-linear", rank=13)  # fc1 is 16×12
    with pytest.raises(ValueError, match="no target layer"):
        check_targets(ToyCNN(), "all-linear", rank=1)


def test_head_name_falls_back_to_the_last_linear():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert head_name(model) == "2"
    assert block_names(model) == ["0", "1", "2"]
    assert head_name(ToyMLP()) == "head" and block_names(ToyMLP()) == ["fc1", "fc2"]
    with pytest.raises(ValueError, match="no Linear layer"):
        head_name(torch.nn.Sequential(torch.nn.ReLU()))


def test_default_targets_pick_a_layer_of_every_model():
    """resnet18's only Linear is its head, which "all-linear" leaves out: its card's
    recommended targets (layer4's convs) stand in."""
    assert default_targets("mlp") == "all-linear"
    assert default_targets("resnet18") == zoo.card("resnet18")["recommended_targets"]
    for name in zoo.names():
        with torch.random.fork_rng(devices=[]):
            architecture = zoo.ZOO[name].build()  # no weights needed (resnet18's are a download)
        architecture.head_name = zoo.ZOO[name].head_name
        assert resolve_targets(architecture, default_targets(name)), name
    with pytest.raises(ValueError, match="unknown model"):
        default_targets("gpt-5")
