"""How much two sets of directions overlap, against what random directions would give.

    subspace similarity (LoRA paper, arXiv 2106.09685, eq. 4), between two bases U1, U2:
                     φ(i, j) = ‖U1[:, :i]ᵀ U2[:, :j]‖_F² / min(i, j)            ∈ [0, 1]

The directions compared are the input directions two runs learned for one layer
(update_similarity), the rows of two LoRA runs' A (compare_adapters, as in the paper), or a
planted update's and a learned one's (coverage). The random baselines say what φ means: a
value near max(i, j) / dim is what any directions would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.lowrank.lora import adapted_layers
from core.lowrank.spectrum import numerical_rank
from core.lowrank.svd import as_matrix, delta_svd, dense_svd
from core.lowrank.updates import LayerUpdate


def top_right_directions(A: Tensor, n: int | None = None) -> Tensor:
    """The top-n right singular vectors of A as rows (n, k): the input directions A reads.
    This is the "U" of the LoRA paper's eq. 4 (it compares A matrices of two runs)."""
    return dense_svd(A).Vh[:n]


def subspace_similarity(U1: Tensor, U2: Tensor) -> Tensor:
    """The grid φ[i-1, j-1] = ‖U1[:i] U2[:j]ᵀ‖_F² / min(i, j) for every i ≤ n1, j ≤ n2.

    U1 (n1, k) and U2 (n2, k) hold orthonormal directions as rows, strongest first. φ is the
    mean squared cosine of the principal angles between the span of U1's top i and U2's top j
    directions: 1 when one span contains the other, 0 when they are orthogonal.
    """
    squared_cosines = (U1.to(torch.float64) @ U2.to(torch.float64).T) ** 2  # (n1, n2)
    overlap = squared_cosines.cumsum(0).cumsum(1)  # Σ over the top-left i × j block
    return overlap / torch.minimum(*_index_grids(U1.shape[0], U2.shape[0]))


def random_similarity_expected(n1: int, n2: int, dim: int) -> Tensor:
    """E φ(i, j) = max(i, j) / dim when either subspace is uniformly random in R^dim.

    A uniformly random unit vector v has E (uᵀv)² = 1/dim for any unit u, so the i × j
    squared cosines sum to i·j/dim on average; divided by min(i, j) that is max(i, j)/dim.
    """
    i, j = _index_grids(n1, n2)
    return torch.maximum(i, j) / dim


def random_similarity_sampled(
    n1: int, n2: int, dim: int, samples: int = 20, seed: int = 0
) -> Tensor:
    """The same baseline measured: mean φ grid of `samples` pairs of random subspaces."""
    generator = torch.Generator().manual_seed(seed)
    grids = [
        subspace_similarity(
            random_orthonormal_rows(n1, dim, generator),
            random_orthonormal_rows(n2, dim, generator),
        )
        for _ in range(samples)
    ]
    return torch.stack(grids).mean(0)


def random_orthonormal_rows(n: int, dim: int, generator: torch.Generator) -> Tensor:
    """n orthonormal directions in R^dim, uniformly random (QR of a Gaussian matrix)."""
    gaussian = torch.randn(dim, n, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian).Q.T


def _index_grids(n1: int, n2: int) -> tuple[Tensor, Tensor]:
    """i (n1, 1) and j (1, n2), counting from 1: they broadcast to the n1 × n2 grid."""
    i = torch.arange(1, n1 + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, n2 + 1, dtype=torch.float64)[None, :]
    return i, j


@dataclass(frozen=True)
class Similarity:
    """Everything a heatmap of φ needs: the grid φ[i-1][j-1] between two sets of directions in
    R^dim, and the random baseline both as its expectation and as sampled."""

    phi: list[list[float]]
    random_expected: list[list[float]]
    random_sampled: list[list[float]]
    dim: int


def similarity_report(U1: Tensor, U2: Tensor, samples: int = 20, seed: int = 0) -> Similarity:
    """Similarity between the directions U1 (n1, dim) and U2 (n2, dim)."""
    (n1, dim), n2 = U1.shape, U2.shape[0]
    return Similarity(
        phi=subspace_similarity(U1, U2).tolist(),
        random_expected=random_similarity_expected(n1, n2, dim).tolist(),
        random_sampled=random_similarity_sampled(n1, n2, dim, samples, seed).tolist(),
        dim=dim,
    )


def input_directions(update: LayerUpdate, n: int = 16) -> Tensor:
    """The top-n input directions of an update (right singular vectors of delta_W, as rows),
    stopping at its numerical rank: beyond it the directions are arbitrary. For LoRA they
    span the part of A's row space that B does not cancel."""
    delta = delta_svd(update.delta_W)
    rank = numerical_rank(delta.S, tuple(as_matrix(update.W0).shape))
    return delta.Vh[: max(1, min(n, rank))]


def update_similarity(update_1: LayerUpdate, update_2: LayerUpdate, n: int = 16) -> Similarity:
    """similarity_report of the input directions two runs learned for one layer: works for
    any pair of methods (LoRA at different ranks, LoRA against full fine-tuning).

    These are the right singular vectors of delta_W, not of A as in the LoRA paper's eq. 4
    (compare_adapters does that): the same span where B does not cancel part of A's rows.
    Both updates must belong to the same layer of the same model (equal shapes of W0), else
    a ValueError says so.
    """
    shape_1, shape_2 = (tuple(as_matrix(u.W0).shape) for u in (update_1, update_2))
    if shape_1 != shape_2:
        raise ValueError(
            f"cannot compare updates of different shapes ({shape_1[0]} × {shape_1[1]} and "
            f"{shape_2[0]} × {shape_2[1]}): compare the same layer of runs of the same model."
        )
    return similarity_report(input_directions(update_1, n), input_directions(update_2, n))


def compare_adapters(model_1: nn.Module, model_2: nn.Module, layer: str) -> Similarity:
    """similarity_report of the A matrices of one layer in two LoRA runs (LoRA paper, Fig. 3:
    e.g. an r = 8 run against an r = 64 run; rows = the top right singular vectors of A)."""
    A = []
    for model in (model_1, model_2):
        adapters = adapted_layers(model)
        if layer not in adapters:
            raise ValueError(
                f"layer {layer!r} has no adapter in both runs: compare an adapted layer."
            )
        A.append(adapters[layer].A.detach())
    return similarity_report(top_right_directions(A[0]), top_right_directions(A[1]))


def coverage(target: Tensor, found: Tensor, n: int) -> float:
    """‖target[:n] found[:n]ᵀ‖_F² / n for orthonormal directions as rows, strongest first:
    the share of the top-n subspace of `target` that the top n (or fewer) of `found` span."""
    cosines = target[:n].to(torch.float64) @ found[:n].to(torch.float64).T
    return (cosines**2).sum().item() / n
