"""core.analyses.whatif against independent computations: numpy's SVD, PEFT's intruder mitigation,
and models edited the plain way (adapters switched off, B zeroed, base weights loaded back)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.intruders import reduce_intruder_dimension

from core.analyses import whatif
from core.common import config
from core.common.config import RunConfig
from core.lowrank import lora, svd, updates
from core.training import data, kinds, measure, zoo
from core.training.train import evaluate, source_split, train
from tests.support.toy_models import ToyCNN, ToyMLP


# -- one layer ----------------------------------------------------------------------------------
def numpy_truncation(M: np.ndarray, k: int) -> np.ndarray:
    U, S, Vh = np.linalg.svd(M, full_matrices=False)
    return U[:, :k] @ np.diag(S[:k]) @ Vh[:k]


@pytest.mark.parametrize("shape", [(64, 8, 96), (12, 4, (3, 3, 3))], ids=["linear", "conv"])
def test_truncating_the_factors_matches_numpys_truncation_of_the_dense_update(shape):
    d, r, k_shape = shape
    generator = torch.Generator().manual_seed(0)
    B = torch.randn(d, r, generator=generator, dtype=torch.float64)
    A = torch.randn(r, *np.atleast_1d(k_shape), generator=generator, dtype=torch.float64)
    delta_W = 0.5 * B.numpy() @ A.reshape(r, -1).numpy()
    factored = svd.delta_svd(svd.LowRankDelta(B, svd.as_matrix(A), 0.5))
    for k in range(r + 2):
        np.testing.assert_allclose(
            whatif.truncate(factored, k).numpy(), numpy_truncation(delta_W, k), atol=1e-10
        )


def test_truncating_a_known_low_rank_dense_matrix():
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((30, 3)))[0]
    V = np.linalg.qr(rng.standard_normal((20, 3)))[0]
    M = U @ np.diag([5.0, 2.0, 0.5]) @ V.T
    dense = svd.dense_svd(torch.tensor(M))
    np.testing.assert_allclose(whatif.truncate(dense, 1).numpy(), 5.0 * np.outer(U[:, 0], V[:, 0]))
    np.testing.assert_allclose(whatif.truncate(dense, 3).numpy(), M, atol=1e-12)
    assert not whatif.truncate(dense, 0).any()
    with pytest.raises(ValueError, match="k must be"):
        whatif.truncate(dense, -1)


def test_rank_grid_doubles_up_to_the_rank():
    assert whatif.rank_grid(4) == [0, 1, 2, 4]
    assert whatif.rank_grid(10) == [0, 1, 2, 4, 8, 10]
    assert whatif.rank_grid(1) == [0, 1]


def curve_of(
    run_score: float,
    scores: dict[int, float],
    chance: float = 0.1,
    metric: kinds.Metric = kinds.ACCURACY,
) -> whatif.TruncationCurve:
    """A truncation curve with these numbers (rank 4) and rank_used found from them."""
    curve = whatif.TruncationCurve(
        metric=metric,
        truncation=[whatif.TruncationPoint(k, a) for k, a in scores.items()],
        run_score=run_score,
        base_score=0.1,
        max_rank=4,
        layers={},
        dora=False,
        kept=[],
        chance=chance,
    )
    return dataclasses.replace(curve, rank_used=whatif.rank_used(curve))


@pytest.mark.parametrize(
    "accuracies, used",
    [
        ({0: 0.40, 1: 0.60, 2: 0.875, 4: 0.88}, 2),  # 0.875 is within one point of 0.88
        ({0: 0.40, 1: 0.60, 2: 0.87, 4: 0.88}, 2),  # exactly one point below still counts
        ({0: 0.40, 1: 0.60, 2: 0.869, 4: 0.88}, 4),  # just over: the whole rank was needed
        ({0: 0.875, 1: 0.60, 2: 0.70, 4: 0.88}, 4),  # a lucky k = 0, then worse: not "0"
        ({0: 0.88, 1: 0.879, 2: 0.88, 4: 0.88}, 0),  # the update did nothing for accuracy
        ({0: 0.40, 1: 0.60}, None),  # the grid stops short of the run's accuracy
    ],
)
def test_rank_used_is_the_smallest_k_from_which_on_the_run_keeps_its_accuracy(accuracies, used):
    assert whatif.rank_used(curve_of(0.88, accuracies)) == used


@pytest.mark.parametrize(
    "accuracies, says",
    [
        ({0: 0.40, 1: 0.60, 2: 0.875, 4: 0.88}, "some"),  # two of four directions
        ({0: 0.40, 1: 0.60, 2: 0.869, 4: 0.88}, "all"),
        ({0: 0.88, 1: 0.879, 2: 0.88, 4: 0.88}, "none"),
        ({0: 0.40, 1: 0.60}, "short"),
    ],
)
def test_reading_says_what_rank_used_found(accuracies, says):
    assert whatif.reading(curve_of(0.88, accuracies)) == says


@pytest.mark.parametrize(
    "run_score, accuracies, chance, says",
    [
        # issue 18: lr 0.3 diverged to 10 % on ten classes; its k = 0 cut (head kept) scored 29 %
        (0.10, {0: 0.29, 1: 0.11, 2: 0.10, 4: 0.10}, 0.1135, "chance"),
        (0.1235, {0: 0.29, 1: 0.11, 4: 0.1235}, 0.1135, "chance"),  # one point above chance
        (0.60, {0: 0.29, 1: 0.40, 4: 0.60}, 0.60, "chance"),  # the commonest class of a skewed set
        (0.60, {0: 0.70, 1: 0.62, 4: 0.60}, 0.1, "worse"),  # without its update it scores higher
        (0.60, {0: 0.61, 1: 0.595, 4: 0.60}, 0.1, "none"),  # one point above is "about the same"
        (0.60, {0: 0.29, 1: 0.40, 4: 0.60}, 0.1, "all"),
    ],
)
def test_a_run_that_learned_nothing_or_was_hurt_by_its_update_gets_its_own_reading(
    run_score, accuracies, chance, says
):
    assert whatif.reading(curve_of(run_score, accuracies, chance)) == says


def test_chance_is_the_share_of_the_commonest_class():
    labels = torch.tensor([0, 1, 1, 2, 1, 0, 1, 3])
    split = data.Split(torch.zeros(8, 1), labels)
    expected = max(np.unique(labels, return_counts=True)[1]) / 8
    assert whatif.chance_score(split, kinds.ACCURACY, 4) == expected


def test_chance_in_bits_is_a_uniform_guess_over_the_characters():
    split = data.Split(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64))
    uniform = torch.full((97,), 1 / 97)  # every character equally likely: its cross-entropy
    bits = -(uniform * uniform.log2()).sum().item()
    assert whatif.chance_score(split, kinds.BITS, 97) == pytest.approx(bits)


@pytest.mark.parametrize(
    "run_bits, bits, chance, says",
    [
        # fewer bits are better: a cut that adds bits is worse, one that saves them is better
        (2.00, {0: 2.50, 1: 2.20, 2: 2.005, 4: 2.00}, 6.6, "some"),  # 2.005: within 0.01 bits
        (2.00, {0: 2.50, 1: 2.20, 2: 2.02, 4: 2.00}, 6.6, "all"),
        (2.00, {0: 2.005, 1: 1.999, 2: 2.0, 4: 2.00}, 6.6, "none"),
        (2.00, {0: 1.80, 1: 1.95, 4: 2.00}, 6.6, "worse"),  # without its update: fewer bits
        (6.595, {0: 6.0, 1: 6.3, 4: 6.595}, 6.6, "chance"),  # no better than a uniform guess
        (7.50, {0: 3.0, 4: 7.50}, 6.6, "chance"),  # worse than a uniform guess: diverged
    ],
)
def test_reading_in_bits_per_character_knows_that_lower_is_better(run_bits, bits, chance, says):
    assert whatif.reading(curve_of(run_bits, bits, chance, kinds.BITS)) == says


def test_rank_used_takes_a_tolerance():
    curve = curve_of(0.9, {0: 0.5, 1: 0.85, 2: 0.89, 8: 0.9})
    assert whatif.rank_used(curve, tolerance=0.05) == 1
    assert whatif.rank_used(curve, tolerance=0.0) == 8


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every adapter a nonzero B (and DoRA a moved magnitude), as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.adapted_layers(model).values():
            layer.B.add_(0.3 * torch.randn(layer.B.shape, generator=generator))
            if layer.dora:
                moved = torch.rand(layer.magnitude.shape, generator=generator)
                layer.magnitude.mul_(1 + 0.2 * moved)
    return model


KINDS = {
    "lora": {},
    "dora": {"dora": True},
    "pissa": {"init": "pissa"},
    "pissa+dora": {"init": "pissa", "dora": True},
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("toy", [ToyMLP, ToyCNN])
def test_a_cut_at_the_full_rank_is_the_layer_and_at_zero_the_update_gone(toy, kind):
    base = toy()
    targets = ["fc1", "fc2"] if toy is ToyMLP else ["conv1", "conv2"]
    model = trained_like(lora.inject(base, targets, 3, 6.0, seed=0, **KINDS[kind]))
    updates = whatif.ranked_updates(base, model)
    assert set(updates) == set(targets)
    for name, update in updates.items():
        layer = lora.adapted_layers(model)[name]
        W0 = svd.as_matrix(base.get_submodule(name).weight)
        assert update.rank == (6 if "pissa" in kind else 3)
        merged = svd.as_matrix(layer.merged_weight())
        np.testing.assert_allclose(update.truncated_weight(update.rank), merged, atol=1e-5)
        at_zero = update.truncated_weight(0)
        if not layer.dora:
            np.testing.assert_allclose(at_zero, W0, atol=1e-6)
        else:  # DoRA keeps its magnitudes: each row of W0 rescaled to m
            m = layer.magnitude.detach().double()
            np.testing.assert_allclose(at_zero, (m / W0.norm(dim=1))[:, None] * W0, atol=1e-6)


# -- intruders ------------------------------------------------------------------------------------
def numpy_scaled_intruders(W0, W, lam, top_k=10, eps=0.5):
    U0 = np.linalg.svd(W0, full_matrices=False)[0]
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    intruders = [i for i in range(top_k) if np.abs(U[:, i] @ U0).max() < eps]
    removed = sum(S[i] * np.outer(U[:, i], Vh[i]) for i in intruders)
    return W - (1 - lam) * removed, intruders


def test_scaling_intruders_matches_numpy():
    rng = np.random.default_rng(3)
    W0 = rng.standard_normal((40, 30))
    spike = 30 * np.linalg.qr(rng.standard_normal((40, 2)))[0] @ rng.standard_normal((2, 30))
    W = W0 + spike
    for lam in (0.0, 0.3, 1.0):
        expected, intruders = numpy_scaled_intruders(W0, W, lam)
        assert intruders  # the spike is new: the test has something to remove
        ours = whatif.scale_intruders(torch.tensor(W0), torch.tensor(W), lam)
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-9)
    with pytest.raises(ValueError, match="λ must be"):
        whatif.scale_intruders(torch.tensor(W0), torch.tensor(W), 1.5)


def test_scaling_intruders_matches_peft_reduce_intruder_dimension():
    """PEFT rewrites the adapter at rank r after scaling; at r = min(d, k) that loses nothing,
    so its merged weight must be ours."""
    torch.manual_seed(0)
    base = ToyMLP(k=12, hidden=16)
    config = LoraConfig(r=12, lora_alpha=12, target_modules=["fc1"], init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), config)
    layer = peft_model.base_model.model.fc1
    with torch.no_grad():
        layer.lora_B["default"].weight.mul_(20)
    W0 = layer.get_base_layer().weight.detach().clone()
    W = W0 + layer.get_delta_weight("default").detach()
    assert whatif.Intruders.find(W0, W).indices

    reduce_intruder_dimension(peft_model, mitigation_lambda=0.3, logging_sink=None)
    theirs = W0 + layer.get_delta_weight("intruder_reduced").detach()

    ours = whatif.scale_intruders(W0, W, 0.3)
    np.testing.assert_allclose(ours.numpy(), theirs.double().numpy(), atol=1e-4 * W.abs().max())


# -- whole runs -----------------------------------------------------------------------------------
RUNS = {
    "mlp-lora": RunConfig(steps=30),
    "mlp-full": RunConfig(steps=30, method="full"),
    "mlp-dora": RunConfig(steps=30, dora=True),
    "mlp-pissa": RunConfig(steps=30, init="pissa"),
    "cnn-conv": RunConfig(steps=30, model="cnn", targets=["conv1", "conv2", "fc1"]),
    "vit": RunConfig(steps=30, model="vit", targets="blocks.*.attn.*"),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, measure.TrainedRun]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: measure.TrainedRun.of_result(train(c)) for name, c in RUNS.items()}
    finally:
        torch.set_num_threads(threads)


def without_updates(run: measure.TrainedRun) -> torch.nn.Module:
    """The run's model with its analysed layers' weight updates taken away, built the plain
    way: LoRA adapters switched off, DoRA's B zeroed, other layers given the base weights."""
    model = copy.deepcopy(run.model)
    adapters = lora.adapted_layers(model)
    with torch.no_grad():
        for name, layer in adapters.items():
            if layer.init == "pissa":  # switched off, it would be the residual, not W0
                layer.base.weight.copy_(run.base.get_submodule(name).weight)
                layer.B.zero_()
                layer.A.zero_()
            elif layer.dora:
                layer.B.zero_()
            else:
                layer.enabled = False
        if not adapters:
            for name in updates.layer_updates(run.base, run.model):
                model.get_submodule(name).weight.copy_(run.base.get_submodule(name).weight)
    return model


@pytest.mark.parametrize("name", RUNS)
def test_truncation_gives_back_the_run_at_full_rank_and_no_update_at_zero(runs, name, one_thread):
    run = runs[name]
    full = whatif.truncation_curve(run, ks=[0, 10**6])
    accuracy = {point.k: point.score for point in full.truncation}
    assert full.run_score == evaluate(run.model, run.test).acc
    assert accuracy[10**6] == full.run_score
    assert accuracy[0] == evaluate(without_updates(run), run.test).acc
    assert accuracy[0] != accuracy[10**6]  # the update matters: the check can tell them apart
    assert full.dora == ("dora" in name)


def test_the_default_grid_runs_to_the_full_rank(runs, one_thread):
    lora_curve = whatif.truncation_curve(runs["mlp-lora"])
    assert [p.k for p in lora_curve.truncation] == [0, 1, 2, 4]
    assert lora_curve.rank_used == whatif.rank_used(lora_curve) is not None  # ends at rank
    assert lora_curve.layers["fc1"] == whatif.CutLayer(rank=4, numerical_rank=4, dora=False)
    assert whatif.truncation_curve(runs["mlp-pissa"], ks=[1]).max_rank == 8  # s(BA − B0A0)
    full = whatif.truncation_curve(runs["mlp-full"], ks=[3])
    assert full.max_rank == 256 and set(full.layers) == {"fc1", "fc2", "head"}


def test_the_cut_says_which_trained_matrices_it_keeps(runs, one_thread):
    """A LoRA run's k = 0 keeps its trained head (so it is not the base model); full fine-
    tuning cuts every changed matrix, head included."""
    lora_curve = whatif.truncation_curve(runs["mlp-lora"], ks=[0])
    assert lora_curve.kept == ["head"]
    assert not torch.equal(
        runs["mlp-lora"].model.head.weight, runs["mlp-lora"].base.head.weight
    )  # it did train
    assert whatif.truncation_curve(runs["mlp-full"], ks=[0]).kept == []
    labels = runs["mlp-lora"].test.y.numpy()
    assert lora_curve.chance == np.bincount(labels).max() / len(labels)


def test_a_mid_rank_cut_is_numpys_truncation_of_the_dense_update(runs, one_thread):
    run = runs["mlp-lora"]
    curve = whatif.truncation_curve(run, ks=[2])
    model = copy.deepcopy(run.model)
    with torch.no_grad():
        for layer in lora.adapted_layers(model).values():
            delta_W = layer.scaling * layer.B.double().numpy() @ layer.A.double().numpy()
            W = layer.W0.double().numpy() + numpy_truncation(delta_W, 2)
            layer.base.weight.copy_(torch.tensor(W))
            layer.B.zero_()
    assert curve.truncation[0].score == evaluate(model, run.test).acc


def test_nothing_to_truncate_is_a_clear_error(runs):
    run = runs["mlp-lora"]
    unchanged = measure.TrainedRun(
        run.config, run.base, copy.deepcopy(run.base), run.test, run.num_classes
    )
    with pytest.raises(ValueError, match="no weight matrix"):
        whatif.truncation_curve(unchanged)


def test_intruder_curve_at_one_is_the_run_and_at_zero_numpys_removal(runs, one_thread):
    run = runs["mlp-lora"]
    curve = whatif.intruder_curve(run, lambdas=(1.0, 0.0))
    assert curve.intruders > 0  # this run has intruders: λ has something to change
    at_one, at_zero = (point.score for point in curve.points)
    assert at_one.target == evaluate(run.model, run.test).acc

    merged = lora.merge(run.model)
    with torch.no_grad():
        for name in lora.adapted_layers(run.model):
            layer = merged.get_submodule(name)
            W0 = run.base.get_submodule(name).weight.double().numpy()
            removed, indices = numpy_scaled_intruders(W0, layer.weight.double().numpy(), 0.0)
            assert indices == curve.layers[name]
            layer.weight.copy_(torch.tensor(removed))
    assert at_zero.target == evaluate(merged, run.test).acc
    source = source_split("mlp", 10)
    assert at_zero.source == evaluate(merged, source).acc


def test_without_intruders_every_lambda_is_the_run(runs, one_thread):
    """ε = 0: no direction's |cos| is below it, so there are no intruders and λ changes
    nothing (the model is measured once for every λ)."""
    run = runs["mlp-lora"]
    curve = whatif.intruder_curve(run, lambdas=(0.0, 0.5, 1.0), eps=0.0)
    assert curve.intruders == 0
    assert [p.lam for p in curve.points] == [0.0, 0.5, 1.0]
    run_score = evaluate(run.model, run.test).acc
    assert {p.score.target for p in curve.points} == {run_score}
    assert curve.at(0.5) == curve.points[1].score
    with pytest.raises(ValueError, match="λ must be"):
        whatif.intruder_curve(run, lambdas=(0.0, 2.0), eps=0.0)


def test_the_source_task_is_the_one_the_zoo_model_was_pretrained_on(runs):
    base_source = whatif.intruder_curve(runs["mlp-lora"], lambdas=(1.0,)).base
    assert base_source.source == pytest.approx(zoo.card("mlp")["test_acc"], abs=5e-5)
    assert source_split("resnet18", 10) is None  # pretrained on ImageNet
    assert source_split("mlp", 5) is None  # another head, another question


def test_layer_importance_norms_and_one_layer_removed(runs, one_thread):
    run = runs["mlp-lora"]
    report = whatif.layer_importance(run)
    rows = {row.layer: row for row in report.layers}
    assert [(n, r.kind) for n, r in rows.items()] == [
        ("fc1", "adapter"), ("fc2", "adapter"), ("head", "trained")
    ]  # fmt: skip
    adapters = lora.adapted_layers(run.model)
    for name, row in rows.items():
        W0 = run.base.get_submodule(name).weight.double().numpy()
        if name in adapters:
            delta_W = adapters[name].delta_W().detach().double().numpy()
        else:
            delta_W = run.model.get_submodule(name).weight.detach().double().numpy() - W0
        fro = np.linalg.norm(delta_W) / np.linalg.norm(W0)
        spectral = np.linalg.norm(delta_W, 2) / np.linalg.norm(W0, 2)
        assert row.relative_frobenius == pytest.approx(fro, rel=1e-5)
        assert row.relative_spectral == pytest.approx(spectral, rel=1e-5)

        model = copy.deepcopy(run.model)
        with torch.no_grad():
            if name in adapters:
                lora.adapted_layers(model)[name].enabled = False
            else:
                model.get_submodule(name).weight.copy_(run.base.get_submodule(name).weight)
        without = evaluate(model, run.test).acc
        assert row.score_without == without
        assert row.lost == pytest.approx(report.run_score - without)
    assert max(row.lost for row in rows.values()) > 0


def test_layer_importance_of_full_fine_tuning_covers_every_changed_matrix(runs, one_thread):
    rows = whatif.layer_importance(runs["mlp-full"]).layers
    assert [(row.layer, row.kind) for row in rows] == [
        ("fc1", "trained"), ("fc2", "trained"), ("head", "trained")
    ]  # fmt: skip


def test_a_saved_run_opens_with_its_stored_score(store, one_thread):
    from core.training.record import train_and_save

    run_id, result = train_and_save(RunConfig(model="cnn", targets="conv2", steps=5), store)
    run = measure.open_run(run_id, store)
    curve = whatif.truncation_curve(run, ks=[4])
    assert curve.truncation[0].score == result.test_acc_after
    assert curve.base_score == result.test_acc_before


# -- the language model: judged in bits per character, lower is better ----------------------------
GPT_STEPS = {"steps": 5, "eval_interval": 5, "snapshot_interval": 5}


@pytest.fixture(scope="module")
def gpt_run() -> measure.TrainedRun:
    """One tiny run on gpt (its defaults: q and v adapted, the head trained), shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = config.for_model("gpt").to_dict() | GPT_STEPS
        return measure.TrainedRun.of_result(train(RunConfig.from_dict(settings)))
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def bits_per_character(model: torch.nn.Module, split: data.Split) -> float:
    """The mean cross-entropy of every next character, in bits: computed here, not by
    core.training.train.evaluate."""
    model.eval()
    logits = model(split.x)
    nats = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), split.y.ravel())
    return nats.item() / np.log(2)


def test_a_text_run_is_measured_in_bits_per_character(gpt_run, one_thread):
    assert gpt_run.metric == kinds.BITS
    curve = whatif.truncation_curve(gpt_run, ks=[2, 4])
    assert curve.metric == kinds.BITS and curve.to_dict()["metric"] == "bpc"
    assert curve.run_score == pytest.approx(bits_per_character(gpt_run.model, gpt_run.test))
    assert curve.base_score == pytest.approx(bits_per_character(gpt_run.base, gpt_run.test))
    assert curve.score_at(4) == pytest.approx(curve.run_score, abs=1e-6)  # full rank: the run
    assert curve.chance == pytest.approx(np.log2(97))  # a uniform guess over 97 characters


def test_cutting_a_text_runs_rank_is_the_bits_of_the_dense_truncated_update(gpt_run, one_thread):
    """k = 1: every adapted layer's weight W0 + [s·B A]_1 from numpy's SVD of the dense
    update, the adapter switched off, and the bits recomputed."""
    curve = whatif.truncation_curve(gpt_run, ks=[1])
    model = copy.deepcopy(gpt_run.model)
    with torch.no_grad():
        for layer in lora.adapted_layers(model).values():
            delta_W = layer.scaling * layer.B.double().numpy() @ layer.A.double().numpy()
            W = layer.W0.double().numpy() + numpy_truncation(delta_W, 1)
            layer.base.weight.copy_(torch.tensor(W))
            layer.enabled = False
    bits = bits_per_character(model, gpt_run.test)
    assert curve.score_at(1) == pytest.approx(bits, abs=1e-5)
    assert bits != pytest.approx(curve.run_score, abs=1e-5)  # the cut changed something


def test_a_text_runs_layer_importance_counts_the_bits_added_without_a_layer(gpt_run, one_thread):
    report = whatif.layer_importance(gpt_run)
    rows = {row.layer: row for row in report.layers}
    assert {"blocks.0.attn.q", "blocks.0.attn.v", "lm_head"} <= set(rows)
    model = copy.deepcopy(gpt_run.model)
    lora.adapted_layers(model)["blocks.0.attn.v"].enabled = False
    without = bits_per_character(model, gpt_run.test)
    row = rows["blocks.0.attn.v"]
    assert row.score_without == pytest.approx(without, abs=1e-5)
    assert row.lost == pytest.approx(without - report.run_score, abs=1e-5)  # more bits: worse


def test_a_text_runs_intruders_are_measured_on_its_pretraining_prose(gpt_run, one_thread):
    curve = whatif.intruder_curve(gpt_run, lambdas=(1.0,))
    source = source_split("gpt", gpt_run.num_classes)
    at_one = curve.at(1.0)
    assert at_one.target == pytest.approx(bits_per_character(gpt_run.model, gpt_run.test))
    assert at_one.source == pytest.approx(bits_per_character(gpt_run.model, source))
    assert curve.base.source == pytest.approx(bits_per_character(gpt_run.base, source))
