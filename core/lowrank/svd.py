"""The singular value decompositions behind every spectrum: of a weight, of an update kept as
LoRA's factors, and of a frozen W0 (computed once per set of weights).

A weight W (d × k, out × in; a Conv2d kernel is flattened to out × in·kh·kw) has a singular
value decomposition W = U diag(σ) Vᵀ with σ1 ≥ σ2 ≥ … ≥ 0. The columns of U are the output
directions the layer writes to, the rows of Vᵀ (= Vh) the input directions it reads, and σ
says how strongly.

LoRA's update delta_W = scaling · B A has rank ≤ r, so its exact SVD comes from the factors:
a QR of B and of Aᵀ and an r × r SVD (`lowrank_svd`), never a d × k SVD. All arithmetic runs
in float64 on the CPU: the matrices are small and the extra digits make the tiny singular
values trustworthy. The other core.lowrank modules (spectrum, similarity, against_w0) read
these decompositions; none of them knows of runs, configs, datasets or the store.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from core.lowrank.lora import LoRALayer


# -- singular value decompositions ----------------------------------------------------------------
class SVD(NamedTuple):
    """W = U diag(S) Vh, thin: U (d, m) has the left singular vectors as columns, S (m,) is
    descending, Vh (m, k) has the right singular vectors as rows."""

    U: Tensor
    S: Tensor
    Vh: Tensor


@dataclass(frozen=True)
class LowRankDelta:
    """delta_W = scaling · B A kept as its factors: B (d, r), A (r, k); conv factors are
    flattened (B (out, r, 1, 1) → (out, r), A (r, in, kh, kw) → (r, in·kh·kw))."""

    B: Tensor
    A: Tensor
    scaling: float

    @classmethod
    def of_layer(cls, layer: LoRALayer) -> LowRankDelta:
        """The update of a core.lowrank.lora.LoRALayer: its factors() and scaling."""
        B, A = layer.factors()
        return cls(as_matrix(B), as_matrix(A), float(layer.scaling))

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def dense(self) -> Tensor:
        """The d × k matrix itself, for what cannot be done on the factors (W0 + delta_W)."""
        return self.scaling * as_matrix(self.B) @ as_matrix(self.A)


Delta = Tensor | LowRankDelta  # a dense delta_W (full fine-tuning) or LoRA's factors


def as_matrix(W: Tensor) -> Tensor:
    """A weight as a float64 CPU matrix: out × in, a Conv2d kernel as out × in·kh·kw."""
    return W.detach().to("cpu", torch.float64).reshape(W.shape[0], -1)


def dense_svd(W: Tensor) -> SVD:
    """The thin SVD of a full matrix: O(d·k·min(d, k)) work."""
    return SVD(*torch.linalg.svd(as_matrix(W), full_matrices=False))


def lowrank_svd(B: Tensor, A: Tensor, scaling: float = 1.0) -> SVD:
    """The exact thin SVD of delta_W = scaling · B A from its factors, in O((d + k)·r²) work.

    With B = Q_B R_B and Aᵀ = Q_A R_A (QR: Q has orthonormal columns, R is small, ≤ r × r),
        delta_W = Q_B (scaling · R_B R_Aᵀ) Q_Aᵀ,
    so the SVD of the small core, scaling · R_B R_Aᵀ = U_c diag(S) V_cᵀ, gives
        delta_W = (Q_B U_c) diag(S) (Q_A V_c)ᵀ:  same singular values, rotated vectors.
    Returns min(d, k, r) singular values; beyond rank(B A) they are zero.
    """
    Q_B, R_B = torch.linalg.qr(as_matrix(B))
    Q_A, R_A = torch.linalg.qr(as_matrix(A).T)
    U_core, S, Vh_core = torch.linalg.svd(scaling * R_B @ R_A.T, full_matrices=False)
    return SVD(Q_B @ U_core, S, Vh_core @ Q_A.T)


def delta_svd(delta_W: Delta) -> SVD:
    """The SVD of an update: through the factors for LoRA, dense for a full update."""
    if isinstance(delta_W, LowRankDelta):
        return lowrank_svd(delta_W.B, delta_W.A, delta_W.scaling)
    return dense_svd(delta_W)


def dense_delta(delta_W: Delta) -> Tensor:
    return delta_W.dense() if isinstance(delta_W, LowRankDelta) else as_matrix(delta_W)


# -- the SVD of W0, computed once per set of weights ----------------------------------------------
W0_CACHE_SIZE = 128
_w0_cache: OrderedDict[tuple, SVD] = OrderedDict()
_w0_cache_lock = threading.Lock()


def weights_key(W: Tensor) -> tuple:
    """Shape, dtype and a hash of the bytes: a fresh copy of the same weights gets the same
    key (zoo.load hands out copies), different weights never do."""
    data = W.detach().cpu().contiguous()
    digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=20)
    return tuple(data.shape), str(data.dtype), digest.hexdigest()


def w0_svd(W0: Tensor) -> SVD:
    """SVD of a frozen base weight, cached by content (least recently used entries leave
    first). The tensors are shared between callers: read them, do not modify them."""
    key = weights_key(W0)
    with _w0_cache_lock:
        if key in _w0_cache:
            _w0_cache.move_to_end(key)
            return _w0_cache[key]
    svd = dense_svd(W0)
    with _w0_cache_lock:
        _w0_cache[key] = svd
        while len(_w0_cache) > W0_CACHE_SIZE:
            _w0_cache.popitem(last=False)
    return svd


def clear_w0_cache() -> None:
    with _w0_cache_lock:
        _w0_cache.clear()
