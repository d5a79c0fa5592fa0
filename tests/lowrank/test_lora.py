"""The adapter engine against independent computations: dense ΔW, the base model, numpy SVD."""

import copy
import math

import numpy as np
import pytest
import torch

from core.lowrank import lora
from core.lowrank.peft_io import adapter_settings
from core.lowrank.targets import check_targets
from tests.support.toy_models import TARGETS, ToyMLP, adapted, toy_models, train_a_little

INITS = ["default", "gaussian", "pissa"]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("dora", [False, True])
def test_adapter_at_init_changes_nothing(name, init, dora):
    base, model, x = adapted(name, init=init, dora=dora)
    torch.testing.assert_close(model(x), base(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("scaling", ["standard", "rslora"])
def test_delta_weights_equal_dense_scaling_B_A(name, scaling):
    _, model, x = adapted(name, rank=3, alpha=6.0, scaling=scaling)
    train_a_little(model, x)
    s = 6.0 / (math.sqrt(3) if scaling == "rslora" else 3)
    for path, delta_W in lora.delta_weights(model).items():
        layer = lora.adapted_layers(model)[path]
        B = layer.B.detach().numpy().reshape(layer.B.shape[0], -1)  # d × r
        A = layer.A.detach().numpy().reshape(layer.rank, -1)  # r × k
        dense = s * B @ A
        assert np.abs(dense).max() > 1e-4, "training should have moved B away from zero"
        np.testing.assert_allclose(delta_W.reshape(dense.shape).numpy(), dense, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("dora", [False, True])
def test_merged_model_computes_what_the_adapted_one_does(name, dora):
    base, model, x = adapted(name, dora=dora)
    train_a_little(model, x)
    merged = lora.merge(model)
    assert not lora.adapted_layers(merged)
    assert type(merged.get_submodule(TARGETS[name][0])) is type(
        base.get_submodule(TARGETS[name][0])
    )
    torch.testing.assert_close(merged(x), model(x), atol=1e-5, rtol=0)
    assert not torch.allclose(merged(x), base(x), atol=1e-4)


def test_dora_merged_weight_is_magnitude_times_unit_direction():
    _, model, x = adapted("mlp", dora=True)
    train_a_little(model, x)
    layer = lora.adapted_layers(model)["fc1"]
    W = (layer.W0 + layer.scaling * layer.B @ layer.A).detach().numpy()
    m = layer.magnitude.detach().numpy()
    expected = m[:, None] * W / np.linalg.norm(W, axis=1, keepdims=True)
    np.testing.assert_allclose(layer.merged_weight().detach().numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_disabling_adapters_gives_the_base_output(name):
    base, model, x = adapted(name)
    train_a_little(model, x)
    assert not torch.allclose(model(x), base(x), atol=1e-4)
    lora.set_enabled(model, False)
    torch.testing.assert_close(model(x), base(x))
    lora.set_enabled(model, True)
    assert not torch.allclose(model(x), base(x), atol=1e-4)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_inject_leaves_the_model_passed_in_byte_for_byte_unchanged(name):
    base, x = toy_models()[name]
    before = copy.deepcopy(base.state_dict())
    grads_before = [p.requires_grad for p in base.parameters()]
    model = lora.inject(base, TARGETS[name], rank=2, alpha=4.0, init="pissa", dora=True)
    train_a_little(model, x)
    after = base.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert [p.requires_grad for p in base.parameters()] == grads_before


def test_only_adapter_parameters_require_grad_after_inject():
    _, model, x = adapted("cnn", dora=True)
    model(x).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {f"{t}.{p}" for t in TARGETS["cnn"] for p in ("A", "B", "magnitude")}


def test_pissa_residual_plus_update_is_W0():
    base, model, _ = adapted("mlp", rank=4, init="pissa")
    for path, layer in lora.adapted_layers(model).items():
        W0 = base.get_submodule(path).weight.detach().numpy()
        total = (layer.W0 + layer.delta_W()).detach().numpy()
        np.testing.assert_allclose(total, W0, atol=1e-6)
        # B A holds W0's principal part: its singular values are W0's top 4.
        expected = np.linalg.svd(W0, compute_uv=False)[:4]
        got = np.linalg.svd(layer.delta_W().detach().numpy(), compute_uv=False)[:4]
        np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("scaling, expected", [("standard", 16 / 4), ("rslora", 16 / 2)])
def test_scaling_is_alpha_over_r_or_over_sqrt_r(scaling, expected):
    _, model, _ = adapted("mlp", rank=4, alpha=16.0, scaling=scaling)
    assert {layer.scaling for layer in lora.adapted_layers(model).values()} == {expected}


def test_default_init_is_kaiming_uniform_A_and_zero_B():
    _, model, _ = adapted("mlp", rank=4)
    layer = lora.adapted_layers(model)["fc2"]
    bound = 1 / math.sqrt(layer.A.shape[1])  # kaiming-uniform with a=√5 on fan-in k
    assert torch.all(layer.B == 0)
    assert layer.A.abs().max() <= bound and layer.A.abs().max() > bound / 2


def test_at_init_B_gets_a_gradient_and_A_does_not():
    """learn.idea.zero: the update starts at zero, yet learning gets going because A is not
    zero, so B's gradient (∂L/∂B = s·g·(A x)ᵀ) is not zero; A's (s·Bᵀ g xᵀ) is, while B = 0."""
    _, model, x = adapted("mlp", rank=4)
    model(x).pow(2).mean().backward()
    for layer in lora.adapted_layers(model).values():
        assert layer.B.grad.abs().max() > 0 and not layer.A.grad.any()


def test_same_seed_gives_same_adapters():
    base, _ = toy_models()["mlp"]
    one = lora.inject(base, ["fc1", "fc2"], rank=2, alpha=2.0, seed=7)
    two = lora.inject(base, ["fc1", "fc2"], rank=2, alpha=2.0, seed=7)
    three = lora.inject(base, ["fc1", "fc2"], rank=2, alpha=2.0, seed=8)
    assert torch.equal(one.fc1.A, two.fc1.A)
    assert not torch.equal(one.fc1.A, three.fc1.A)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank must be"),
        ({"rank": 13}, "above min"),  # fc1 is 16×12
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"alpha": -1.0}, "alpha must be > 0"),
        ({"names": "all-linear"}, "list of layer names.*resolve_targets"),
        ({"names": []}, "list of layer names"),
        ({"init": "zeros"}, "init must be"),
        ({"scaling": "sqrt"}, "scaling must be"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, message):
    options = {"names": ["fc1", "fc2"], "rank": 2, "alpha": 4.0} | kwargs
    with pytest.raises(ValueError, match=message):
        lora.inject(ToyMLP(), **options)


def test_a_layer_type_that_cannot_take_an_adapter_is_named():
    model = ToyMLP()
    model.norm = torch.nn.LayerNorm(4)
    with pytest.raises(ValueError, match="LayerNorm cannot take an adapter"):
        lora.inject(model, ["norm"], rank=1, alpha=1.0)
    grouped = torch.nn.Conv2d(4, 4, kernel_size=3, groups=2)
    with pytest.raises(ValueError, match="groups=1"):
        lora.LoRAConv2d(grouped, rank=1, alpha=1.0)


def test_injecting_twice_is_refused():
    model = lora.inject(ToyMLP(), ["fc1"], rank=1, alpha=1.0)
    with pytest.raises(ValueError, match="already has adapters"):
        lora.inject(model, ["fc2"], rank=1, alpha=1.0)


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("init", INITS)
def test_an_adapter_layer_is_ready_the_moment_it_is_built(init, dora):
    """No inject needed: the constructor initialises A and B, so the layer computes W0 x."""
    torch.manual_seed(0)
    base, x = torch.nn.Linear(8, 6), torch.randn(5, 8)
    kind = lora.adapter_type(base, dora)
    layer = kind(copy.deepcopy(base), rank=2, alpha=4.0, init=init)
    assert type(layer) is (lora.DoRALinear if dora else lora.LoRALinear)
    torch.testing.assert_close(layer(x), base(x), atol=1e-5, rtol=0)
    bound = 1 / math.sqrt(8)  # kaiming-uniform with a=√5 on fan-in k = 8
    if init == "default":
        assert torch.all(layer.B == 0)
        assert 0 < layer.A.abs().max() <= bound and layer.A.std() > bound / 4


def test_the_constructor_takes_a_generator_for_repeatable_adapters():
    base = torch.nn.Conv2d(3, 4, kernel_size=3)
    layer = lora.LoRAConv2d(base, rank=2, alpha=2.0, generator=torch.Generator().manual_seed(5))
    expected = torch.nn.init.kaiming_uniform_(
        torch.empty(2, 3, 3, 3), a=math.sqrt(5), generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(layer.A, expected)
    with pytest.raises(ValueError, match="init must be"):
        lora.LoRALinear(torch.nn.Linear(8, 6), rank=2, alpha=1.0, init="zeros")


@pytest.mark.parametrize("bad", [0, -4, 4.7, float("inf")])
def test_a_rank_is_checked_by_one_function_wherever_it_comes_from(bad):
    """A layer's rank, a target's and a PEFT file's r all go through lora.check_rank: the same
    refusal, named after where the rank came from."""
    said = f"must be a whole number ≥ 1 (got {bad!r})."
    with pytest.raises(ValueError) as layer:
        lora.inject(ToyMLP(), ["fc1"], rank=bad, alpha=1.0)
    with pytest.raises(ValueError) as targets:
        check_targets(ToyMLP(), ["fc1"], bad)
    with pytest.raises(ValueError) as peft:
        adapter_settings({"r": bad, "lora_alpha": 8})
    assert str(layer.value) == str(targets.value) == f"rank {said}"
    assert str(peft.value) == f"adapter_config.json: r {said}"
