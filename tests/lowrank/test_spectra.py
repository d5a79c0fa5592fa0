"""The spectrum analyses (core.lowrank: svd, spectrum, similarity, against_w0, snapshot; and
core.analyses.layer_reports) against independent dense computations (numpy SVD, hand-worked
examples)."""

import copy
import math

import numpy as np
import pytest
import torch

from core.analyses import layer_reports
from core.lowrank import against_w0, similarity, snapshot, spectrum, svd, updates
from core.lowrank.lora import adapted_layers, inject
from tests.support.toy_models import ToyCNN, ToyMLP


def orthonormal(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((n, n)))[0]


def with_spectrum(sigma: list[float], d: int, k: int, seed: int = 0) -> np.ndarray:
    """U diag(σ) Vᵀ with random orthogonal U (d×d) and V (k×k): a matrix whose spectrum we know."""
    rng = np.random.default_rng(seed)
    U, V = orthonormal(d, rng), orthonormal(k, rng)
    return U[:, : len(sigma)] @ np.diag(sigma) @ V[:, : len(sigma)].T


def factors(case: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(B, A, scaling) for the QR-path tests; B and A in their layer shapes for conv."""
    rng = np.random.default_rng(1)
    if case == "random":
        return rng.standard_normal((64, 8)), rng.standard_normal((8, 96)), 0.5
    if case == "ill-conditioned":  # σ of B and A each spread over 3 decades, like trained factors
        B = with_spectrum(list(np.logspace(0, -3, 8)), 64, 8, seed=2)
        A = with_spectrum(list(np.logspace(0, -3, 8)), 8, 96, seed=3)
        return B, A, 2.0
    if case == "rank-deficient":  # r = 6 but B A has rank 2
        B = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 6))
        return B, rng.standard_normal((6, 30)), 1.0
    if case == "rank-above-d":  # r = 8 > d = 5
        return rng.standard_normal((5, 8)), rng.standard_normal((8, 30)), 1.0
    # conv: B (out, r, 1, 1), A (r, in, kh, kw)
    return rng.standard_normal((12, 4, 1, 1)), rng.standard_normal((4, 3, 3, 3)), 0.25


def assert_same_vectors(ours: np.ndarray, dense: np.ndarray, n: int) -> None:
    """The first n columns agree up to each one's sign."""
    for i in range(n):
        sign = np.sign(ours[:, i] @ dense[:, i])
        np.testing.assert_allclose(sign * ours[:, i], dense[:, i], atol=1e-6)


CASES = ["random", "ill-conditioned", "rank-deficient", "rank-above-d", "conv"]


@pytest.mark.parametrize("case", CASES)
def test_lowrank_svd_matches_dense_svd(case):
    B, A, scaling = factors(case)
    delta_W = scaling * B.reshape(B.shape[0], -1) @ A.reshape(A.shape[0], -1)
    U_dense, S_dense, Vh_dense = np.linalg.svd(delta_W, full_matrices=False)

    U, S, Vh = (t.numpy() for t in svd.lowrank_svd(torch.tensor(B), torch.tensor(A), scaling))

    n = len(S)
    assert n == min(*delta_W.shape, A.shape[0])
    np.testing.assert_allclose(S, S_dense[:n], rtol=1e-5, atol=1e-12 * S_dense[0])
    nonzero = int((S_dense[:n] > 1e-9 * S_dense[0]).sum())
    assert_same_vectors(U, U_dense, nonzero)
    assert_same_vectors(Vh.T, Vh_dense.T, nonzero)
    np.testing.assert_allclose(U @ np.diag(S) @ Vh, delta_W, atol=1e-10 * S_dense[0])


def test_lowrank_svd_reads_float32_factors_in_float64():
    generator = torch.Generator().manual_seed(0)
    B, A = torch.randn(50, 4, generator=generator), torch.randn(4, 70, generator=generator)
    S = svd.lowrank_svd(B, A, 3.0).S
    dense = np.linalg.svd(3.0 * B.double().numpy() @ A.double().numpy(), compute_uv=False)
    assert S.dtype == torch.float64
    np.testing.assert_allclose(S.numpy(), dense[:4], rtol=1e-10)


def trained_lora(model: torch.nn.Module, x: torch.Tensor, dora: bool = False) -> torch.nn.Module:
    """A rank-3 LoRA model after a few steps of plain SGD towards random targets: factors
    that training produced, not ones we drew."""
    targets = list(model.block_names)  # ToyMLP: fc1, fc2; ToyCNN: conv1, conv2
    adapted = inject(model, targets, rank=3, alpha=6.0, dora=dora, seed=0)
    params = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05)
    target = torch.randn(adapted(x).shape, generator=torch.Generator().manual_seed(1))
    for _ in range(20):
        optimizer.zero_grad()
        ((adapted(x) - target) ** 2).mean().backward()
        optimizer.step()
    return adapted


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_trained_layer_spectrum_matches_dense_delta_W(kind):
    torch.manual_seed(0)
    model, x = (
        (ToyMLP(), torch.randn(16, 12)) if kind == "mlp" else (ToyCNN(), torch.randn(4, 1, 8, 8))
    )
    for layer in adapted_layers(trained_lora(model, x)).values():
        with torch.no_grad():
            dense = layer.delta_W().double().flatten(1).numpy()
        S_dense = np.linalg.svd(dense, compute_uv=False)
        S = svd.delta_svd(svd.LowRankDelta.of_layer(layer)).S.numpy()
        assert S_dense[0] > 1e-4  # training did move B away from 0
        np.testing.assert_allclose(S, S_dense[: len(S)], rtol=1e-5, atol=1e-9 * S_dense[0])


# -- rank-type numbers ----------------------------------------------------------------------------
def spectrum_of(matrix: np.ndarray) -> torch.Tensor:
    return svd.dense_svd(torch.tensor(matrix)).S


def test_rank_numbers_on_a_known_spectrum():
    S = spectrum_of(with_spectrum([4.0, 2.0, 1.0, 1.0], 20, 30))
    # p = (1/2, 1/4, 1/8, 1/8): entropy = 1.75 ln 2
    assert spectrum.effective_rank(S) == pytest.approx(2**1.75, rel=1e-9)
    assert spectrum.stable_rank(S) == pytest.approx(22 / 16, rel=1e-9)
    assert spectrum.energy_top_k(S, 2) == pytest.approx(20 / 22, rel=1e-9)
    assert spectrum.energy_top_k(S, 10) == pytest.approx(1.0)
    assert spectrum.numerical_rank(S, (20, 30)) == 4


@pytest.mark.parametrize("n", [1, 3, 7])
def test_flat_spectrum_has_effective_and_stable_rank_n(n):
    S = spectrum_of(with_spectrum([2.5] * n, 12, 9, seed=n))
    assert spectrum.effective_rank(S) == pytest.approx(n, rel=1e-9)
    assert spectrum.stable_rank(S) == pytest.approx(n, rel=1e-9)


@pytest.mark.parametrize(
    ("sigma", "rank"), [([3.0], 1), (list(np.linspace(3, 1, 5)), 5), ([3.0, 2.0, 3e-6], 2)]
)
def test_numerical_rank_agrees_with_numpy_matrix_rank(sigma, rank):
    """3e-6 lies below numpy's tolerance σ1 · max(d, k) · eps(float32) = 1.4e-5 but above
    σ1 · eps: the max(d, k) factor matters."""
    matrix = with_spectrum(sigma, 12, 40, seed=rank).astype(np.float32)
    S = spectrum_of(matrix.astype(np.float64))
    assert spectrum.numerical_rank(S, matrix.shape) == np.linalg.matrix_rank(matrix) == rank


@pytest.mark.parametrize("shape", [(12, 40), (40, 12)])
def test_rounding_level_is_numpys_matrix_rank_tolerance(shape):
    """A float32 matrix of rank 3 has min(d, k) − 3 σ at rounding level: exactly the σ at or
    below the tolerance numpy.linalg.matrix_rank uses (its documented S.max() · max(M, N) ·
    eps), and as many as matrix_rank leaves out."""
    matrix = with_spectrum([5.0, 1.0, 1e-3], *shape, seed=3).astype(np.float32)
    S = spectrum_of(matrix.astype(np.float64))
    numpy_S = np.linalg.svd(matrix, compute_uv=False)
    numpy_tolerance = numpy_S.max() * max(matrix.shape) * np.finfo(np.float32).eps
    rounding = spectrum.at_rounding_level(S, matrix.shape)
    assert spectrum.rounding_tolerance(S, matrix.shape) == pytest.approx(numpy_tolerance, rel=1e-6)
    assert rounding.tolist() == [bool(value <= numpy_tolerance) for value in S.tolist()]
    assert int((~rounding).sum()) == np.linalg.matrix_rank(matrix) == 3


def test_the_sigma_plot_axis_comes_from_the_values_above_rounding_level():
    """A full fine-tuning ΔW of rank 2 in a 30 × 20 weight: its 18 σ of about 1e-16 are at
    rounding level and set no axis; W0 and W keep their whole spectra."""
    W0 = with_spectrum([4.0, 3.0, 2.0, 1.0, 0.5] + [0.1] * 15, 30, 20, seed=1)
    delta_W = with_spectrum([0.8, 0.05], 30, 20, seed=2)
    report = layer_reports.layer_report(torch.tensor(W0), torch.tensor(delta_W))
    assert min(report.sigma_delta_W) < 1e-12  # what used to stretch the axis
    plot = layer_reports.spectrum_plot(report)
    assert plot.resolved["sigma_delta_W"] == pytest.approx([0.8, 0.05])
    assert plot.rounding == {"sigma_W0": 0, "sigma_W": 0, "sigma_delta_W": 18}
    assert plot.resolved["sigma_W0"] == pytest.approx(report.sigma_W0)
    assert plot.axis.low == pytest.approx(0.05)
    assert plot.axis.high == pytest.approx(report.sigma_W[0])
    normalised = layer_reports.spectrum_plot(report, normalised=True)
    assert normalised.resolved["sigma_delta_W"] == pytest.approx([1.0, 0.05 / 0.8])
    assert normalised.axis.high == pytest.approx(1.0)


def test_a_zero_update_leaves_nothing_above_rounding_level():
    report = layer_reports.layer_report(torch.eye(4), torch.zeros(4, 4))
    plot = layer_reports.spectrum_plot(report)
    assert plot.resolved["sigma_delta_W"] == [] and plot.rounding["sigma_delta_W"] == 4
    assert plot.axis.low == plot.axis.high == 1.0  # W0 = W = I


def test_a_snapshots_top_sigma_above_rounding_level_are_those_numpy_counts():
    """A full fine-tuning-like update of rank 3 in the 5 × 16 head: the snapshot's top σ hold
    two more at rounding level, and its recorded shape tells them, as numpy's matrix_rank."""
    torch.manual_seed(0)
    model = ToyMLP()
    tuned = copy.deepcopy(model)
    update = with_spectrum([2.0, 0.5, 0.1], 5, 16, seed=3)
    with torch.no_grad():
        tuned.head.weight += torch.tensor(update, dtype=torch.float32)
    layer = snapshot.model_snapshot(model, tuned)["head"]
    assert layer["shape"] == [5, 16] and len(layer["sigma"]) == 5
    assert max(layer["sigma"][3:]) < 1e-5 * layer["sigma"][0]  # rounding noise of float32
    delta_W = (tuned.head.weight - model.head.weight).detach().numpy()  # float32: its eps
    kept = spectrum.resolved(layer["sigma"], layer["shape"])
    assert len(kept) == np.linalg.matrix_rank(delta_W) == 3
    assert kept == layer["sigma"][:3]
    assert spectrum.resolved([1.0, 1e-16, 0.0], None) == [1.0, 1e-16]  # shape not recorded


def test_a_sigma_axis_starts_its_floor_below_the_smallest_resolved_sigma():
    axis = spectrum.SigmaAxis.of([[4.0, 0.5], [], [1.0, 0.01]])
    assert (axis.low, axis.high) == (0.01, 4.0)
    low, high = axis.log_range(0.2)
    assert low == pytest.approx(-2 - spectrum.ROUNDING_FLOOR - 0.2)
    assert high == pytest.approx(math.log10(4.0) + 0.2)
    assert spectrum.SigmaAxis.of([[]]) == spectrum.SigmaAxis(1.0, 1.0)  # nothing resolved yet


def test_zero_matrix_has_zero_ranks():
    S = torch.zeros(5, dtype=torch.float64)
    assert spectrum.effective_rank(S) == spectrum.stable_rank(S) == spectrum.energy_top_k(S) == 0
    assert spectrum.numerical_rank(S, (5, 5)) == 0


# -- subspace similarity --------------------------------------------------------------------------
def test_similarity_is_one_for_identical_and_zero_for_orthogonal_subspaces():
    rows = similarity.random_orthonormal_rows(6, 20, torch.Generator().manual_seed(0))
    assert torch.allclose(
        similarity.subspace_similarity(rows, rows), torch.ones(6, 6, dtype=torch.float64)
    )
    assert torch.allclose(
        similarity.subspace_similarity(rows[:3], rows[3:]), torch.zeros(3, 3, dtype=torch.float64)
    )


def test_similarity_grid_matches_the_formula_entry_by_entry():
    rng = np.random.default_rng(4)
    U1, U2 = orthonormal(15, rng)[:4], orthonormal(15, rng)[:7]
    grid = similarity.subspace_similarity(torch.tensor(U1), torch.tensor(U2)).numpy()
    for i in range(1, 5):
        for j in range(1, 8):
            phi = np.linalg.norm(U1[:i] @ U2[:j].T) ** 2 / min(i, j)
            assert grid[i - 1, j - 1] == pytest.approx(phi, rel=1e-12)


def test_top_right_directions_are_the_rows_of_numpy_vh():
    A = np.random.default_rng(5).standard_normal((4, 25))
    rows = similarity.top_right_directions(torch.tensor(A), 3).numpy()
    Vh = np.linalg.svd(A, full_matrices=False)[2][:3]
    assert_same_vectors(rows.T, Vh.T, 3)


def test_random_baseline_matches_its_closed_form():
    expected = similarity.random_similarity_expected(4, 8, 30)
    assert expected[0, 7].item() == pytest.approx(8 / 30) and expected[3, 2] == pytest.approx(
        4 / 30
    )
    sampled = similarity.random_similarity_sampled(4, 8, 30, samples=400, seed=0)
    assert torch.allclose(sampled, expected, atol=0.02)


# -- amplification --------------------------------------------------------------------------------
def test_amplification_by_hand():
    W0 = torch.zeros(6, 5, dtype=torch.float64)
    W0[0, 0], W0[1, 1], W0[2, 2], W0[3, 3] = 10, 5, 1, 0.1
    e3 = torch.zeros(6, 1, dtype=torch.float64)
    e3[3] = 1
    delta_W = svd.LowRankDelta(B=e3, A=2 * e3[:5].T, scaling=1.0)  # 2·e3 e3ᵀ: where W0 is 0.1
    report = layer_reports.layer_report(W0, delta_W)
    assert report.amplification_rank == 1
    assert report.projection_delta == pytest.approx(0.1)
    assert report.amplification == pytest.approx(2 / 0.1)  # ‖ΔW‖ / ‖uᵀ W0 v‖
    assert report.amplification_w0 == pytest.approx(2 / 10)  # W0's top direction: σ1 = 10


@pytest.mark.parametrize(
    "u, v, word, times",
    [
        ([1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], "familiar", 6**0.5),  # uᵀ I v = 1
        ([1, 0, 0, 0, 0, 0], [0.5, 0.75**0.5, 0, 0, 0, 0], "chance", 0.5 * 6**0.5),  # cos = 0.5
        ([1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], "unfamiliar", 0.0),  # orthogonal: W0 has none
    ],
)
def test_amplification_reading_weighs_w0_in_the_updates_directions_against_chance(
    u, v, word, times
):
    """W0 = I (6 × 6), r = 1: random unit u, v give E (uᵀ I v)² = 1/6, so chance is 1/√6 and
    the update's direction u vᵀ holds |cos(u, v)| of W0: √6 · |cos| times chance."""
    u, v = torch.tensor([u], dtype=torch.float64).T, torch.tensor([v], dtype=torch.float64).T
    report = layer_reports.layer_report(torch.eye(6), svd.LowRankDelta(3 * u, v.T, 1.0))
    assert report.projection_chance == pytest.approx(6**-0.5)
    reading = against_w0.amplification_reading(report)
    assert reading.word == word and reading.times == pytest.approx(times, abs=1e-12)
    if word == "familiar":  # the case the issue met: the random baseline above the run's value
        assert report.amplification_random > report.amplification


def test_amplification_reading_of_no_update():
    report = layer_reports.layer_report(torch.eye(4), torch.zeros(4, 4))
    assert against_w0.amplification_reading(report).word == "none"


def test_random_projection_has_the_expected_size():
    """E ‖Uᵀ W0 V‖_F² = r² ‖W0‖_F² / (d k) for random orthonormal U (d×r), V (k×r)."""
    W0 = torch.tensor(with_spectrum([5.0, 3.0, 2.0, 1.0, 1.0], 12, 10, seed=6))
    base = svd.dense_svd(W0)
    delta = svd.lowrank_svd(torch.randn(12, 2), torch.randn(2, 10))
    squares = [
        against_w0.amplification(W0, base, delta, rank=2, seed=seed).projection_random ** 2
        for seed in range(400)
    ]
    expected = 4 * (W0**2).sum().item() / (12 * 10)
    assert np.mean(squares) == pytest.approx(expected, rel=0.1)
    chance = against_w0.amplification(W0, base, delta, rank=2).projection_chance
    assert chance**2 == pytest.approx(expected, rel=1e-12)


# -- intruder dimensions --------------------------------------------------------------------------
def test_no_intruders_without_an_update():
    W0 = torch.randn(30, 20)
    report = layer_reports.layer_report(W0, torch.zeros_like(W0))
    assert report.intruders == 0 and report.intruder_indices == []
    assert min(report.intruder_max_cos) > 0.999


def test_a_spike_orthogonal_to_W0_is_an_intruder():
    rng = np.random.default_rng(7)
    W0 = rng.standard_normal((30, 12))  # W0's left singular vectors span only 12 of 30 dimensions
    U0 = np.linalg.svd(W0, full_matrices=False)[0]
    x = rng.standard_normal(30)
    x -= U0 @ (U0.T @ x)  # orthogonal to every left singular vector of W0
    x /= np.linalg.norm(x)
    y = rng.standard_normal(12)
    sigma1 = np.linalg.norm(W0, 2)
    spike = 2 * sigma1 * np.outer(x, y / np.linalg.norm(y))
    report = layer_reports.layer_report(torch.tensor(W0), torch.tensor(spike))
    assert report.intruders >= 1 and report.intruder_indices[0] == 0


def test_a_spike_along_W0s_own_direction_is_not_an_intruder():
    W0 = np.random.default_rng(8).standard_normal((30, 12))
    U0, _, Vh0 = np.linalg.svd(W0, full_matrices=False)
    spike = 5 * np.linalg.norm(W0, 2) * np.outer(U0[:, 4], Vh0[4])
    report = layer_reports.layer_report(torch.tensor(W0), torch.tensor(spike))
    assert report.intruder_max_cos[0] > 0.999 and report.intruders == 0


def test_a_spike_spread_over_many_W0_directions_is_an_intruder_in_a_square_layer():
    W0 = with_spectrum(list(np.linspace(3, 1, 20)), 20, 20, seed=9)
    U0, S0, Vh0 = np.linalg.svd(W0)
    x = U0[:, 4:20].sum(axis=1) / 4  # |cos| = 1/4 with each of 16 directions, 0 with the rest
    spike = 20 * S0[0] * np.outer(x, Vh0[0])
    report = layer_reports.layer_report(torch.tensor(W0), torch.tensor(spike), eps=0.5)
    assert report.intruder_indices[0] == 0
    assert report.intruder_max_cos[0] == pytest.approx(0.25, abs=0.05)


# -- DoRA view ------------------------------------------------------------------------------------
def test_magnitude_and_direction_change_by_hand():
    W0 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    W = torch.tensor([[6.0, 8.0], [0.0, 1.0]])  # row 0: twice as long, same way; row 1: turned 90°
    change = against_w0.magnitude_direction_change(W0, W)
    assert change.delta_M == pytest.approx((5 + 0) / 2)
    assert change.delta_D == pytest.approx((0 + 1) / 2)


# -- whole models ---------------------------------------------------------------------------------
KEYS = {
    "effective_rank", "stable_rank", "energy_top_k", "numerical_rank", "amplification",
    "amplification_w0", "amplification_random", "intruders", "intruder_indices",
    "sigma_W0", "sigma_delta_W", "sigma_W", "delta_M", "delta_D",
}  # fmt: skip


@pytest.mark.parametrize("dora", [False, True])
def test_model_report_of_a_lora_model_uses_each_adapted_layer(dora):
    torch.manual_seed(0)
    model = ToyMLP()
    adapted = trained_lora(model, torch.randn(16, 12), dora=dora)
    report = layer_reports.model_report(model, adapted)
    assert set(report) == {"fc1", "fc2"}
    for name, layer in adapted_layers(adapted).items():
        with torch.no_grad():
            W = layer.merged_weight().double().numpy()
        W0 = model.get_submodule(name).weight.detach().double().numpy()
        assert set(report[name].to_dict()) >= KEYS
        np.testing.assert_allclose(
            report[name].sigma_delta_W[:3],
            np.linalg.svd(W - W0, compute_uv=False)[:3],
            rtol=1e-5,
        )
        np.testing.assert_allclose(report[name].sigma_W, np.linalg.svd(W, compute_uv=False))
        np.testing.assert_allclose(report[name].sigma_W0, np.linalg.svd(W0, compute_uv=False))
        assert report[name].amplification_rank == 3


def test_model_report_of_a_fine_tuned_model_covers_the_changed_layers():
    model = ToyCNN()
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        tuned.conv2.weight.add_(0.1 * torch.randn_like(tuned.conv2.weight))
    report = layer_reports.model_report(model, tuned)
    assert list(report) == ["conv2"]
    delta_W = (tuned.conv2.weight - model.conv2.weight).detach().double().flatten(1).numpy()
    np.testing.assert_allclose(report["conv2"].sigma_delta_W, np.linalg.svd(delta_W)[1])
    assert report["conv2"].shape == [8, 54]


def test_w0_svd_is_cached_by_content():
    svd.clear_w0_cache()
    W0 = torch.randn(20, 15)
    first = svd.w0_svd(W0)
    assert svd.w0_svd(W0.clone()) is first  # a copy of the same weights: no new SVD
    changed = W0.clone()
    changed[3, 4] += 1.0
    S = svd.w0_svd(changed).S.numpy()
    np.testing.assert_allclose(S, np.linalg.svd(changed.double().numpy(), compute_uv=False))
    assert not np.allclose(S, first.S.numpy())


# -- snapshots and planted updates ----------------------------------------------------------------
def test_snapshots_turn_into_series_per_layer():
    torch.manual_seed(0)
    model = ToyMLP()
    adapted = inject(model, ["fc1"], 2, 4.0, seed=0)
    first = snapshot.model_snapshot(model, adapted, n=5)
    assert first["fc1"]["sigma"] == [0.0, 0.0]  # B starts at 0
    layer = adapted_layers(adapted)["fc1"]
    with torch.no_grad():
        layer.B.copy_(torch.randn_like(layer.B))
    second = snapshot.model_snapshot(model, adapted, n=5)
    dense = np.linalg.svd(layer.delta_W().detach().double().numpy(), compute_uv=False)
    np.testing.assert_allclose(second["fc1"]["sigma"], dense[:2], rtol=1e-6)

    evolution = layer_reports.spectrum_evolution(
        [{"step": 0, "layers": first}, {"step": 10, "layers": second}]
    )
    fc1 = evolution["fc1"]
    assert fc1.steps == [0, 10] and fc1.sigma == [
        first["fc1"]["sigma"],
        second["fc1"]["sigma"],
    ]
    # no ranks of a spectrum cut at the top n σ: they would not be the ranks of ΔW
    assert not hasattr(fc1, "effective_rank") and not hasattr(fc1, "stable_rank")
    assert fc1.delta_M[0] == 0 and fc1.delta_M[1] > 0


def test_planted_update_found_exactly_overlaps_fully():
    rng = np.random.default_rng(10)
    B, A = rng.standard_normal((25, 2)), rng.standard_normal((2, 18))
    planted = torch.tensor(B @ A)
    as_factors = svd.LowRankDelta(torch.tensor(B), torch.tensor(A), scaling=1.0)
    found = layer_reports.planted_comparison(as_factors, planted, planted_rank=2)
    assert found.overlap_left == pytest.approx(1) and found.overlap_right == pytest.approx(1)
    noise = 0.01 * torch.randn(25, 18, generator=torch.Generator().manual_seed(0))
    full_update = layer_reports.planted_comparison(planted + noise, planted, planted_rank=2)
    assert full_update.overlap_left > 0.99 and full_update.overlap_right > 0.99
    unrelated = layer_reports.planted_comparison(
        torch.tensor(rng.standard_normal((25, 18))), planted, 2
    )
    assert unrelated.overlap_left < 0.6 and unrelated.baseline_left == 2 / 25
    assert math.isclose(found.sigma_learned[0], found.sigma_planted[0], rel_tol=1e-9)


def test_an_update_that_finds_part_of_the_planted_subspace_covers_only_that_part():
    """A rank-1 update along one of two planted directions covers half of them; φ(r, r) of
    the top directions would call it a full match."""
    rng = np.random.default_rng(4)
    U = np.linalg.qr(rng.standard_normal((25, 2)))[0]
    V = np.linalg.qr(rng.standard_normal((18, 2)))[0]
    planted = torch.tensor(U @ np.diag([3.0, 2.0]) @ V.T)
    one = svd.LowRankDelta(torch.tensor(U[:, :1]), torch.tensor(V[:, :1].T), scaling=1.0)
    found = layer_reports.planted_comparison(one, planted, planted_rank=2)
    assert found.overlap_left == pytest.approx(0.5) and found.overlap_right == pytest.approx(0.5)
    assert found.baseline_right == 2 / 18
    random_side = np.linalg.qr(rng.standard_normal((25, 2)))[0]
    expected = np.sum((U.T @ random_side) ** 2) / 2  # numpy, on the dense directions
    other = layer_reports.planted_comparison(
        torch.tensor(random_side @ V.T), planted, planted_rank=2
    )
    assert other.overlap_left == pytest.approx(expected)


def test_relative_norms_compare_the_update_with_the_weight():
    rng = np.random.default_rng(5)
    W0, B, A = (
        rng.standard_normal((20, 12)),
        rng.standard_normal((20, 3)),
        rng.standard_normal((3, 12)),
    )
    delta = 0.5 * B @ A
    report = layer_reports.layer_report(
        torch.tensor(W0), svd.LowRankDelta(torch.tensor(B), torch.tensor(A), 0.5)
    )
    assert report.relative_norm_fro == pytest.approx(np.linalg.norm(delta) / np.linalg.norm(W0))
    spectral = np.linalg.norm(delta, 2) / np.linalg.norm(W0, 2)
    assert report.relative_norm_spectral == pytest.approx(spectral)


# -- the experiments ------------------------------------------------------------------------------
def test_an_experiment_runs_on_one_thread_and_judges_its_numbers():
    from core.analyses import experiments

    assert experiments.config(rank=2).device == "cpu"  # a GPU would change the numbers
    threads = torch.get_num_threads()
    finding = experiments.run("amplification", steps=3)
    assert torch.get_num_threads() == threads
    per_seed = len(experiments.MLP.layers) * len(experiments.AMPLIFICATION_RANKS)
    assert len(finding.rows) == per_seed * len(experiments.SEEDS)  # every claim on 3 seeds
    assert finding.outcome in ("reproduced", "partly reproduced", "not reproduced")
    assert finding.outcome.upper() in finding.report() and finding.cpu_seconds > 0
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.run("nonsense")


def test_compare_adapters_grids_the_two_runs_A_matrices():
    model = ToyMLP()
    small, large = inject(model, ["fc1"], 2, 4.0, seed=0), inject(model, ["fc1"], 5, 4.0, seed=1)
    same = similarity.compare_adapters(small, small, "fc1")
    np.testing.assert_allclose(same.phi, np.ones((2, 2)))
    report = similarity.compare_adapters(small, large, "fc1")
    A_small = adapted_layers(small)["fc1"].A.detach().double().numpy()
    A_large = adapted_layers(large)["fc1"].A.detach().double().numpy()
    V_small, V_large = np.linalg.svd(A_small)[2][:2], np.linalg.svd(A_large)[2][:5]
    assert report.phi[1][4] == pytest.approx(np.linalg.norm(V_small @ V_large.T) ** 2 / 2)
    assert report.dim == 12 and report.random_expected[1][4] == pytest.approx(5 / 12)
    with pytest.raises(ValueError, match="no adapter"):
        similarity.compare_adapters(small, large, "fc2")


def test_update_similarity_uses_the_input_directions_up_to_the_numerical_rank():
    rng = np.random.default_rng(11)
    W0 = torch.tensor(rng.standard_normal((20, 15)))
    B, A = torch.tensor(rng.standard_normal((20, 2))), torch.tensor(rng.standard_normal((2, 15)))
    lora = updates.LayerUpdate(W0, svd.LowRankDelta(B, A, scaling=0.5), rank=2)
    rows = similarity.input_directions(lora).numpy()
    assert rows.shape == (2, 15)  # not 16: ΔW has rank 2
    np.testing.assert_allclose(A.numpy() @ rows.T @ rows, A.numpy(), atol=1e-10)  # span of A's rows
    dense = updates.LayerUpdate(
        W0, 0.5 * B @ A + 1e-3 * torch.tensor(rng.standard_normal((20, 15))), None
    )
    report = similarity.update_similarity(lora, dense, n=4)
    assert np.array(report.phi).shape == (2, 4) and report.phi[1][1] > 0.99
    assert report.random_expected[1][3] == pytest.approx(4 / 15)


def test_update_similarity_of_different_shapes_is_a_clear_error():
    rng = np.random.default_rng(12)
    small = updates.LayerUpdate(
        torch.zeros(20, 15), torch.tensor(rng.standard_normal((20, 15))), None
    )
    other = updates.LayerUpdate(
        torch.zeros(20, 30), torch.tensor(rng.standard_normal((20, 30))), None
    )
    with pytest.raises(ValueError, match=r"different shapes \(20 × 15 and 20 × 30\)"):
        similarity.update_similarity(small, other)
