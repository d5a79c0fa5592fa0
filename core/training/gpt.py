"""A tiny GPT: a decoder-only transformer that reads characters and predicts the next one.

nanoGPT's design, small enough to train on one core in a classroom:

    ids (n, t) → tok_emb + pos_emb → blocks.0 … blocks.{L-1} → ln_f → lm_head → logits (n, t, V)

    each block:  x = x + attn(ln1(x))     causal self-attention, Linear layers q, k, v, o
                 x = x + mlp(ln2(x))      Linear fc (d → 4d), GELU, Linear proj (4d → d)

Every weight that LoRA adapts in a language model is a separate nn.Linear with a short name, so
LoRA Lab's targets ("blocks.*.attn.q", "all-linear") and HF PEFT's target_modules=["q", "v"] both
name them. The embeddings and the lm_head are not tied: the lm_head is the model's head (what
core.lowrank.targets.head_name finds), trained in full as the head of every other zoo model is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEAD_NAME = "lm_head"


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape. The default (4 layers, 128 wide, ~0.83 M parameters) is issue 20's
    classroom size: one AdamW step at batch 32 × 64 characters takes ~0.12 s on one core."""

    vocab_size: int = 97  # characters the model knows
    context: int = 128  # the most characters it reads at once
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # width d of every token's vector
    dropout: float = 0.0


@dataclass
class AttentionCache:
    """One block's keys and values of the characters it has read (generate's): with them, each
    further character costs one position's work instead of the whole text's again."""

    keys: Tensor | None = None  # (n, heads, positions, d / heads)
    values: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which position i only sees positions ≤ i."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(
                f"n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})."
            )
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.q = nn.Linear(config.n_embd, config.n_embd)
        self.k = nn.Linear(config.n_embd, config.n_embd)
        self.v = nn.Linear(config.n_embd, config.n_embd)
        self.o = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: AttentionCache | None = None) -> Tensor:
        """x (n, t, d) → (n, t, d). With a cache, x is the t characters after those it holds:
        they attend to those too, and join them."""
        n, t, d = x.shape

        def split_heads(h: Tensor) -> Tensor:  # (n, t, d) → (n, heads, t, d / heads)
            return h.view(n, t, self.n_head, d // self.n_head).transpose(1, 2)

        q, k, v = split_heads(self.q(x)), split_heads(self.k(x)), split_heads(self.v(x))
        past = 0 if cache is None else cache.length
        if cache is not None:
            if past:
                k, v = torch.cat([cache.keys, k], dim=2), torch.cat([cache.values, v], dim=2)
            cache.keys, cache.values = k, v
        # Position past + i sees the keys up to past + i: the plain causal mask without a past,
        # none for one new character, else the lower triangle shifted by the past.
        mask = None if past == 0 or t == 1 else torch.ones(t, past + t, dtype=torch.bool).tril(past)
        p = self.dropout if self.training else 0.0
        mixed = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else mask.to(x.device), dropout_p=p,
            is_causal=past == 0,
        )  # fmt: skip
        return self.resid_dropout(self.o(mixed.transpose(1, 2).reshape(n, t, d)))


class MLP(nn.Module):
    """Each position on its own: d → 4d → GELU → d."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block: tokens talk (attention), then each thinks alone (MLP)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: AttentionCache | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Character ids (n, t) → next-character logits (n, t, vocab_size), t ≤ config.context."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.context, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        # Where the fine-tuning methods look (core.lowrank.targets.head_name, block_names).
        self.head_name = HEAD_NAME
        self.block_names = [f"blocks.{i}" for i in range(config.n_layer)]
        self.apply(_init_weights)
        for block in self.blocks:  # GPT-2: each residual branch's last layer starts smaller,
            nn.init.normal_(block.attn.o.weight, std=0.02 / math.sqrt(2 * config.n_layer))
            nn.init.normal_(block.mlp.proj.weight, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, ids: Tensor, caches: list[AttentionCache] | None = None) -> Tensor:
        """The logits of every position. With `caches` (one per block, see generate), `ids` are
        the characters after those the caches hold, at the positions after theirs."""
        past = 0 if caches is None else caches[0].length
        t = past + ids.shape[1]
        if t > self.config.context:
            raise ValueError(f"the model reads at most {self.config.context} characters (got {t}).")
        positions = torch.arange(past, t, device=ids.device)
        x = self.dropout(self.tok_emb(ids) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.lm_head(self.ln_f(x))


def _init_weights(module: nn.Module) -> None:
    """GPT-2's init: small normal weights (std 0.02), zero biases, so every logit starts near 0
    and the first loss is near ln(vocab_size)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def parameter_count(config: GPTConfig) -> int:
    """The model's parameters from its shape, to check (and show) without building it.

    V·d + T·d embeddings; per block 4 (d² + d) attention, (4d² + 4d) + (4d² + d) MLP and
    2 · 2d LayerNorm = 12 d² + 13 d; 2d final LayerNorm; d·V + V lm_head.
    """
    d, V, T = config.n_embd, config.vocab_size, config.context
    return V * d + T * d + config.n_layer * (12 * d * d + 13 * d) + 2 * d + d * V + V


def next_char_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy (nats per character) of the logits (n, t, V) against the ids (n, t)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: Tensor,
    n: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> Tensor:
    """The prompt (1-D ids) followed by n sampled characters' ids.

    Sampling draws only from `generator`, so a fixed seed gives the same text for the same
    weights: a whole class sees the same sample. Temperature 0 takes the likeliest character.
    The model reads at most its context: older characters fall off the left. Until the text
    fills the context, each block keeps the keys and values it computed (AttentionCache), so a
    character costs one position's work, not the whole text's again: a run's sample at each
    evaluation is then a few times cheaper. Once the text is longer, every position moves and
    the window is read whole for each character.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be ≥ 0 (got {temperature}).")
    config = model.config  # a LoRA copy or a PEFT wrapper has it too
    was_training = model.training
    model.eval()
    ids = prompt_ids.reshape(1, -1)
    caches = None
    for _ in range(n):
        if ids.shape[1] > config.context:  # past the context: no cache
            logits = model(ids[:, -config.context :])[0, -1]
        elif caches is None:
            caches = [AttentionCache() for _ in range(config.n_layer)]
            logits = model(ids, caches)[0, -1]
        else:
            logits = model(ids[:, -1:], caches)[0, -1]
        if temperature == 0:
            next_id = logits.argmax().reshape(1)
        else:
            probs = F.softmax(logits / temperature, dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)
        ids = torch.cat([ids, next_id.reshape(1, 1)], dim=1)
    model.train(was_training)
    return ids[0]
