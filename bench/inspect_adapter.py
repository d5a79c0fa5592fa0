"""The adapter inspector on a LLaMA-2-7B-sized adapter: `.venv/bin/python -m bench.inspect_adapter`.

1. A PEFT adapter shaped like LLaMA-2-7B's (32 blocks × q, k, v, o 4096 × 4096, gate and up
   11008 × 4096, down 4096 × 11008; r = 16, lora_alpha = 32; bfloat16: 224 layers, 76 MiB) is
   written to a temporary folder (deleted at the end) with a known spectrum per layer, and
   inspected in a fresh process (`python -m core inspect`'s work, without the printing).
   Targets: ≤ 30 s; peak memory ≤ 1 GiB above the interpreter's (its RSS once torch and core
   are imported; sampled every 5 ms, since tracemalloc does not see torch's allocations); the
   reported σ within 1e-3 relative of the known ones.
2. On a sample of its 4096 × 4096 layers, side by side: the spectrum from the factors against
   the dense SVD of ΔW that resize_lora.py-style tools run (ΔW = B A multiplied out in float32,
   then its singular values alone, torch.linalg.svdvals: a lower bound on their cost, since a
   resize needs U and V too). Target: ≥ 100× faster. The
   whole file is extrapolated from it: a dense SVD of an m × n matrix (m ≥ n) costs ∝ m·n², so
   an 11008 × 4096 layer is counted as 11008 / 4096 times a 4096 × 4096 one.

Everything runs on one torch thread (`-m bench.inspect_adapter 2` for two): on a machine shared
with other work, two threads waiting for each other make a dense SVD several times slower.

Known spectra that survive bfloat16: each factor's columns (B) and rows (A) are ±1 on disjoint
random sets of entries, so they are orthogonal, and A's rows are scaled by numbers that bfloat16
holds exactly. Then σ_j = scaling · ‖b_j‖ · ‖a_j‖, exactly, whatever the rounding.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import save_file

from core.lowrank.inspection import inspect_adapter
from core.lowrank.svd import as_matrix, lowrank_svd
from core.training.adapters import opened_adapter

BLOCKS, RANK, ALPHA = 32, 16, 32.0
HIDDEN, MLP = 4096, 11008
SHAPES = {  # (d, k) = (out, in) of each adapted layer of a block
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (MLP, HIDDEN),
    "mlp.up_proj": (MLP, HIDDEN),
    "mlp.down_proj": (HIDDEN, MLP),
}
DENSE_SAMPLE = 2  # 4096 × 4096 layers given a dense SVD (a minute or more each on 1 core)
SAMPLE_SECONDS = 0.005
print = functools.partial(print, flush=True)  # each figure as soon as it is measured


def orthogonal_signs(n: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """An n × rank matrix of ±1 and 0: column j is ±1 on its own n / rank random rows."""
    rows = torch.randperm(n, generator=generator).reshape(rank, -1)  # (n divisible by rank)
    signs = torch.randint(0, 2, rows.shape, generator=generator) * 2.0 - 1.0
    M = torch.zeros(n, rank)
    M[rows.T, torch.arange(rank)] = signs.T
    return M


def known_layer(d: int, k: int, layer: int, generator: torch.Generator) -> tuple:
    """(A, B, σ) of a layer with a known spectrum: σ_j falls from σ_1 at a rate of its own."""
    decay = 0.6 + 0.35 * (layer % 7) / 6
    scales = torch.tensor([0.01 * (1 + layer % 5) * decay**j for j in range(RANK)])
    scales = scales.to(torch.bfloat16)  # what the file will hold, exactly
    B = orthogonal_signs(d, RANK, generator)
    A = (orthogonal_signs(k, RANK, generator) * scales.float()).T
    scaling = ALPHA / RANK
    sigma = [scaling * math.sqrt(d / RANK) * math.sqrt(k / RANK) * s for s in scales.tolist()]
    return A.to(torch.bfloat16).contiguous(), B.to(torch.bfloat16), sorted(sigma, reverse=True)


def write_adapter(folder: Path) -> dict[str, list[float]]:
    """The LLaMA-2-7B-shaped adapter in `folder`; returns each layer's known σ."""
    generator = torch.Generator().manual_seed(0)
    tensors, known = {}, {}
    for block in range(BLOCKS):
        for index, (kind, (d, k)) in enumerate(SHAPES.items()):
            name = f"model.layers.{block}.{kind}"
            A, B, sigma = known_layer(d, k, block * len(SHAPES) + index, generator)
            tensors[f"base_model.model.{name}.lora_A.weight"] = A
            tensors[f"base_model.model.{name}.lora_B.weight"] = B
            known[name] = sigma
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "target_modules": list(SHAPES)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return known


def inspect_in_child(folder: str, threads: int, results: multiprocessing.Queue) -> None:
    """In a fresh process: the interpreter's RSS once everything is imported, then the
    inspection, its seconds and the peak RSS sampled meanwhile."""
    torch.set_num_threads(threads)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    with opened_adapter(folder, 2**40) as adapter:
        report = inspect_adapter(adapter, folder)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    sigma = {layer.name: list(layer.sigma) for layer in report.layers}
    results.put((seconds, baseline, peak[0], sigma))


def inspect(folder: Path, known: dict[str, list[float]]) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(
        target=inspect_in_child, args=(str(folder), torch.get_num_threads(), results)
    )
    child.start()
    seconds, baseline, peak, sigma = results.get()
    child.join()
    error = max(
        abs(got - want) / want
        for name, want_sigma in known.items()
        for got, want in zip(sigma[name], want_sigma, strict=True)
    )
    size = (folder / "adapter_model.safetensors").stat().st_size
    print(
        f"inspected {len(sigma)} layers ({size / 2**20:.0f} MiB, bf16) in {seconds:.2f} s (≤ 30 s)"
    )
    print(
        f"  peak memory {(peak - baseline) / 2**20:.0f} MiB above the interpreter's "
        f"{baseline / 2**20:.0f} MiB (≤ 1024 MiB)"
    )
    print(f"  σ against the known ones: max relative error {error:.1e} (≤ 1e-3)")


def seconds_of(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def dense_against_factors() -> None:
    """One 4096 × 4096 layer's spectrum both ways, on DENSE_SAMPLE layers, and the whole file
    extrapolated."""
    generator = torch.Generator().manual_seed(1)
    factors, dense = [], []
    scaling = ALPHA / RANK
    for _ in range(DENSE_SAMPLE):
        # Trained-like factors (Gaussian, in bfloat16): the known layers' exact zeros would
        # send a dense SVD through denormal numbers, many times slower than a real layer's.
        A = (0.01 * torch.randn(RANK, HIDDEN, generator=generator)).to(torch.bfloat16)
        B = (0.01 * torch.randn(HIDDEN, RANK, generator=generator)).to(torch.bfloat16)
        factors.append(seconds_of(lambda: lowrank_svd(as_matrix(B), as_matrix(A), scaling), 20))  # noqa: B023
        delta_W = scaling * (B.float() @ A.float())  # resize_lora.py's float32 product
        dense.append(seconds_of(lambda: torch.linalg.svdvals(delta_W), 1))  # noqa: B023
    ours, theirs = statistics.median(factors), statistics.median(dense)
    print(
        f"one 4096×4096 layer (median of {DENSE_SAMPLE}): from the factors {ours * 1e3:.1f} ms, "
        f"dense σ of ΔW {theirs:.1f} s: {theirs / ours:.0f}× faster (≥ 100×); "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    units = sum((d / k if d >= k else k / d) for d, k in SHAPES.values()) * BLOCKS
    print(
        f"  the whole file by dense SVDs, extrapolated: {units * theirs / 60:.0f} minutes "
        f"({units:.0f} × a 4096×4096 layer's SVD)"
    )


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {psutil.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    folder = Path(tempfile.mkdtemp(prefix="lora-lab-bench-inspect-"))
    try:
        started = time.perf_counter()
        known = write_adapter(folder)
        print(f"wrote the LLaMA-2-7B-shaped adapter in {time.perf_counter() - started:.1f} s")
        inspect(folder, known)
        dense_against_factors()
    finally:
        shutil.rmtree(folder)
