"""How fast the spectral analyses are: `.venv/bin/python -m bench.spectra_speed`.

1. The exact SVD of delta_W = s·B A from its factors (QR of B and Aᵀ, an r × r SVD) against a
   dense SVD of the d × k matrix, for d = k = 1024, r = 8. Target: ≥ 20× faster.
2. model_report over every adapted layer of each shipped model (LoRA, rank 8, random B so that
   delta_W ≠ 0), with W0's SVD not yet cached (first look) and cached (every later look), and
   over every layer of a fully fine-tuned copy. Target: < 200 ms.
   Models whose pretrained weights are not in assets/models yet are measured with random weights
   of the same architecture: the timing depends on the shapes, not the values.

An optional argument sets torch's thread count (`-m bench.spectra_speed 1`): on a machine
shared with other work, two threads waiting for each other can make these small SVDs many times
slower.
"""

import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from core.analyses import layer_reports
from core.lowrank import lora, svd
from core.lowrank.targets import eligible_layers
from core.training import zoo

SHIPPED = {"mlp": zoo.MLP, "cnn": zoo.CNN, "vit": zoo.ViT}


def seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls (the median shrugs off a busy neighbour)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def qr_path_against_dense(d: int = 1024, k: int = 1024, rank: int = 8) -> None:
    generator = torch.Generator().manual_seed(0)
    B = torch.randn(d, rank, generator=generator)
    A = torch.randn(rank, k, generator=generator)
    delta_W = (2.0 * B.double() @ A.double()).float()
    qr = seconds(lambda: svd.lowrank_svd(B, A, 2.0), repeats=20)
    dense = seconds(lambda: svd.dense_svd(delta_W), repeats=3)
    print(f"delta_W {d}×{k}, r={rank}: QR path {qr * 1e3:.2f} ms, dense SVD {dense * 1e3:.0f} ms")
    print(f"  QR path is {dense / qr:.0f}× faster (target ≥ 20×)")


def base_model(name: str) -> tuple[nn.Module, str]:
    """The shipped model, or a random one of its architecture if its weights are missing."""
    try:
        return zoo.load(name), "pretrained"
    except Exception as error:  # any failure: fall back to random weights, and say why
        print(f"  ({name}: {type(error).__name__}: {error}; using random weights)")
        torch.manual_seed(0)
        return SHIPPED[name]().eval(), "random weights"


def lora_model(base: nn.Module) -> nn.Module:
    """Rank-8 LoRA on every layer but the head, with B drawn at random (trained-like)."""
    names = [layer.name for layer in eligible_layers(base) if not layer.is_head]
    rank = min(8, *(min(layer.d, layer.k) for layer in eligible_layers(base)))
    adapted = lora.inject(base, names, rank=rank, alpha=2.0 * rank, seed=0)
    with torch.no_grad():
        for layer in lora.adapted_layers(adapted).values():
            layer.B.normal_(std=0.01)
    return adapted


def fully_fine_tuned(base: nn.Module) -> nn.Module:
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return tuned


def model_reports() -> None:
    print("\nmodel_report over every changed layer (target < 200 ms):")
    print(f"{'model':6} {'weights':15} {'update':8} {'layers':>6} {'first look':>11} {'cached':>9}")
    for name in SHIPPED:
        base, weights = base_model(name)
        for update, model in (("LoRA r≤8", lora_model(base)), ("full FT", fully_fine_tuned(base))):
            svd.clear_w0_cache()
            first = seconds(lambda: layer_reports.model_report(base, model), repeats=1)  # noqa: B023
            cached = seconds(lambda: layer_reports.model_report(base, model), repeats=3)  # noqa: B023
            layers = len(layer_reports.model_report(base, model))
            print(
                f"{name:6} {weights:15} {update:8} {layers:6d} "
                f"{first * 1e3:8.0f} ms {cached * 1e3:6.0f} ms"
            )


if __name__ == "__main__":
    if (
        len(sys.argv) > 1
    ):  # e.g. `-m bench.spectra_speed 1`: one thread gives steadier figures on a busy machine
        torch.set_num_threads(int(sys.argv[1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    qr_path_against_dense()
    model_reports()
