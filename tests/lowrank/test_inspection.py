"""The adapter inspector (issue 23) on real adapter files: PEFT LoRAs of a tiny Llama-style model
trained and saved by PEFT (per-layer ranks and alphas, rsLoRA, DoRA, a saved lm_head, bfloat16)
and kohya files. Each layer's σ is the dense SVD (numpy) of the ΔW PEFT computes; each resize
criterion keeps what numpy counts; a resized adapter loads in PEFT with ΔW the truncated SVD."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.lowrank.adapter_files import KOHYA, PEFT, open_adapter
from core.lowrank.inspection import (
    Criterion,
    criterion_points,
    inspect_adapter,
    resize_adapter,
    resize_preview,
)
from tests.support.adapter_files import (
    LLAMA_LAYERS,
    cast_weights,
    load_peft,
    peft_deltas,
    train_peft,
    write_kohya,
)

PATTERNED = {
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj", "down_proj"],
    "rank_pattern": {"v_proj": 2, "model.layers.1.self_attn.q_proj": 3},
    "alpha_pattern": {"down_proj": 3.0},
    "use_rslora": True,
    "use_dora": True,
    "modules_to_save": ["lm_head"],
}
KOHYA_LAYERS = {  # (lora_up, lora_down, alpha): a conv, a layer without alpha
    "lora_unet_down_blocks_0_attentions_0_proj_in": ((8, 3, 1, 1), (3, 4, 3, 3), 1.5),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": ((6, 2), (2, 5), None),
    "lora_te_text_model_encoder_layers_1_self_attn_q_proj": ((7, 4), (4, 9), 8),
}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict:
    """{name: folder}: a plain LoRA on all seven Llama layers, the patterned one, and the plain
    one stored in bfloat16."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("adapters")
    plain = train_peft(root / "plain", r=4, lora_alpha=8, target_modules=LLAMA_LAYERS)
    patterned = train_peft(root / "patterned", **PATTERNED)
    bf16 = root / "bf16"
    bf16.mkdir()
    for file in plain.iterdir():
        (bf16 / file.name).write_bytes(file.read_bytes())
    return {"plain": plain, "patterned": patterned, "bf16": cast_weights(bf16, torch.bfloat16)}


def dense_sigma(delta_W: np.ndarray, rank: int) -> np.ndarray:
    return np.linalg.svd(delta_W, compute_uv=False)[:rank]


@pytest.mark.parametrize("name", ["plain", "patterned", "bf16"])
def test_each_layer_s_sigma_is_the_dense_svd_of_the_delta_w_peft_computes(adapters, name):
    folder = adapters[name]
    peft = load_peft(folder)
    deltas = peft_deltas(peft)
    report = inspect_adapter(open_adapter(folder), str(folder), top_k=2)
    assert report.format == PEFT
    assert {layer.name for layer in report.layers} == set(deltas)
    for layer in report.layers:
        delta_W = deltas[layer.name]
        module = peft.get_submodule(f"base_model.model.{layer.name}")
        assert layer.shape == delta_W.shape
        assert layer.rank == module.r["default"]
        assert layer.scaling == pytest.approx(module.scaling["default"], rel=1e-12)
        expected = dense_sigma(delta_W, layer.rank)
        # PEFT's ΔW is float32 (bf16 factors are exact in it): σ to float32's precision
        np.testing.assert_allclose(layer.sigma, expected, rtol=1e-5, atol=1e-6 * expected[0])
        assert layer.frobenius == pytest.approx(np.linalg.norm(delta_W), rel=1e-5)
        p = expected / expected.sum()
        assert layer.effective_rank == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-4)
        assert layer.stable_rank == pytest.approx((expected**2).sum() / expected[0] ** 2, rel=1e-4)
        assert layer.energy_top_k == pytest.approx((expected[:2] ** 2).sum() / (expected**2).sum())
        assert layer.spike == pytest.approx(expected[0] / expected[1], rel=1e-4)
        assert layer.dtype == ("bfloat16" if name == "bf16" else "float32")
    if name == "patterned":
        ranks = {layer.name: layer.rank for layer in report.layers}
        assert ranks["model.layers.0.self_attn.v_proj"] == 2
        assert ranks["model.layers.1.self_attn.q_proj"] == 3
        assert ranks["model.layers.0.self_attn.q_proj"] == 4
        assert report.rslora and report.dora and report.saved == ("lm_head.weight",)


def test_a_kohya_file_s_layers_conv_included(tmp_path):
    path = tmp_path / "style.safetensors"
    deltas = write_kohya(path, KOHYA_LAYERS, torch.float16)
    report = inspect_adapter(open_adapter(path), str(path))
    assert report.format == KOHYA
    for layer in report.layers:
        expected = dense_sigma(deltas[layer.name], layer.rank)
        np.testing.assert_allclose(layer.sigma, expected, rtol=1e-9, atol=1e-12 * expected[0])
        assert layer.shape == deltas[layer.name].shape
        assert layer.dtype == "float16"
    by_name = {layer.name: layer for layer in report.layers}
    conv = by_name["lora_unet_down_blocks_0_attentions_0_proj_in"]
    assert conv.shape == (8, 36) and conv.scaling == 0.5
    attention = by_name["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"]
    assert attention.scaling == 1.0  # no alpha: alpha = rank
    assert (attention.position, attention.kind) == (
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0",
        "attn1_to_q",
    )


SPECTRA = [
    np.array([5.0, 1.0, 0.5, 0.1]),
    np.array([3.0, 3.0, 3.0, 3.0]),
    np.array([9.0, 0.01, 0.0, 0.0]),
    np.sort(np.random.default_rng(0).exponential(size=16))[::-1].copy(),
]


@pytest.mark.parametrize("S", SPECTRA, ids=range(len(SPECTRA)))
def test_each_criterion_keeps_what_numpy_counts(S):
    energy = np.cumsum(S**2) / (S**2).sum()
    fro = np.sqrt(energy)
    for value in (0.5, 0.9, 0.99, 1.0):
        energy_rank = int(np.argmax(energy >= value - 1e-12)) + 1
        assert Criterion.parse(f"energy={value}").keep(torch.tensor(S)) == energy_rank
        # kohya's sv_fro: searchsorted of the cumulative squared share at F², plus one
        fro_rank = min(int(np.searchsorted(fro**2, value**2 - 1e-12)) + 1, len(S))
        assert Criterion.parse(f"fro={value}").keep(torch.tensor(S)) == fro_rank
        assert np.sqrt(energy[fro_rank - 1]) >= value - 1e-12
    for ratio in (1.0, 2.0, 10.0, 1000.0):
        assert Criterion.parse(f"ratio={ratio}").keep(torch.tensor(S)) == (S[0] / ratio <= S).sum()
    for rank in (1, 3, 100):
        assert Criterion.parse(f"rank={rank}").keep(torch.tensor(S)) == min(rank, len(S))


@pytest.mark.parametrize(
    "text",
    [
        "rank=0",
        "rank=2.5",
        "energy=0",
        "energy=1.5",
        "fro=nan",
        "ratio=0.5",
        "ratio=inf",
        "size=3",
        "energy",
        "rank=x",
    ],
)
def test_a_criterion_that_is_not_one_is_refused_in_one_line(text):
    with pytest.raises(ValueError, match=r"^--resize .* is not a criterion: use rank=K") as error:
        Criterion.parse(text)
    assert "\n" not in str(error.value)


def test_the_resized_adapter_loads_in_peft_with_delta_w_the_truncated_svd(adapters, tmp_path):
    folder = adapters["patterned"]
    original = peft_deltas(load_peft(folder))
    adapter = open_adapter(folder)
    result = resize_adapter(adapter, Criterion.parse("energy=0.9"), tmp_path / "small")
    config = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    kept = {layer.name: layer.rank_after for layer in result.layers}
    assert len(set(kept.values())) > 1, kept  # ranks differ: a rank_pattern says which
    assert config["rank_pattern"] and config["use_dora"]
    resized = load_peft(tmp_path / "small")
    deltas = peft_deltas(resized)
    for name, delta_W in original.items():
        U, S, Vh = np.linalg.svd(delta_W, full_matrices=False)
        k = kept[name]
        share = (S[:k] ** 2).sum() / (S**2).sum()
        assert share >= 0.9 > (S[: k - 1] ** 2).sum() / (S**2).sum()
        truncated = (U[:, :k] * S[:k]) @ Vh[:k]
        np.testing.assert_allclose(deltas[name], truncated, atol=1e-6 * S[0])
        assert resized.get_submodule(f"base_model.model.{name}").r["default"] == k
    before, after = (
        load_file(folder / "adapter_model.safetensors"),
        load_file(tmp_path / "small" / "adapter_model.safetensors"),
    )
    magnitudes = [key for key in before if key.endswith("lora_magnitude_vector")]
    for key in [*magnitudes, "base_model.model.lm_head.weight"]:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert result.bytes_after < result.bytes_before


def test_the_resize_preview_is_the_kept_energy_at_each_rank(adapters):
    report = inspect_adapter(open_adapter(adapters["plain"]), "plain")
    points = resize_preview(report)
    sigma = [np.array(layer.sigma) for layer in report.layers]
    total = sum((s**2).sum() for s in sigma)
    for K, point in enumerate(points, start=1):
        assert point.total_rank == sum(min(K, len(s)) for s in sigma)
        assert point.energy == pytest.approx(sum((s[:K] ** 2).sum() for s in sigma) / total)
    assert points[-1].total_rank == report.total_rank and points[-1].energy == pytest.approx(1)
    for point in criterion_points(report):
        ranks = [layer.kept[point.criterion] for layer in report.layers]
        assert point.total_rank == sum(ranks)
        kept = sum((s[:k] ** 2).sum() for s, k in zip(sigma, ranks, strict=True))
        assert point.energy == pytest.approx(kept / total)
        if point.criterion.startswith("energy="):
            assert point.energy >= float(point.criterion.split("=")[1])
