"""Adapter files as practitioners have them, made offline for the inspector's tests: a PEFT
LoRA of a tiny Llama-style model from `transformers` (random weights, no download) trained a
few steps and saved by PEFT itself, and kohya-format files written here. The ΔW each layer
should have comes from PEFT (`get_delta_weight`) or from the factors written, never from the
code under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

TINY_LLAMA = LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # k and v project to 16: their ΔW are 16 × 32
    max_position_embeddings=64,
)
LLAMA_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(TINY_LLAMA)


def train_peft(folder: Path, steps: int = 3, **lora: object) -> Path:
    """A PEFT LoRA of tiny_llama() with the LoraConfig settings `lora`, trained `steps` steps
    of AdamW on random tokens (B starts at zero: training makes ΔW nonzero), saved in `folder`."""
    model = get_peft_model(tiny_llama(), LoraConfig(**lora))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    tokens = torch.randint(
        0, TINY_LLAMA.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1)
    )
    for _ in range(steps):
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


def cast_weights(folder: Path, dtype: torch.dtype) -> Path:
    """The adapter's weights file stored in `dtype` (bfloat16, float16), in place."""
    weights = folder / "adapter_model.safetensors"
    tensors = {key: value.to(dtype) for key, value in load_file(weights).items()}
    save_file(tensors, weights)
    return folder


def load_peft(folder: Path) -> PeftModel:
    """The adapter as PEFT itself loads it onto the tiny model."""
    return PeftModel.from_pretrained(tiny_llama(), folder)


def peft_deltas(model: PeftModel) -> dict[str, np.ndarray]:
    """{layer path: ΔW} of every LoRA layer, as PEFT computes it (scaling · B A, its scaling
    from r, lora_alpha, rank_pattern, alpha_pattern and use_rslora), in float64."""
    prefix = "base_model.model."
    return {
        name.removeprefix(prefix): module.get_delta_weight("default").double().numpy()
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and "default" in module.lora_A
    }


def write_kohya(path: Path, layers: dict[str, tuple], dtype: torch.dtype, seed: int = 0) -> dict:
    """A kohya LoRA file: for each name, (lora_up shape, lora_down shape, alpha or None)
    (conv layers have 4-d shapes). Returns {name: ΔW = alpha / r · up @ down, float64 numpy,
    from the stored (rounded) factors}."""
    generator = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for name, (up_shape, down_shape, alpha) in layers.items():
        up = torch.randn(up_shape, generator=generator).to(dtype)
        down = torch.randn(down_shape, generator=generator).to(dtype)
        tensors[f"{name}.lora_up.weight"], tensors[f"{name}.lora_down.weight"] = up, down
        rank = down_shape[0]
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        scale = (rank if alpha is None else alpha) / rank
        up64 = up.double().reshape(up_shape[0], -1).numpy()
        down64 = down.double().reshape(rank, -1).numpy()
        deltas[name] = scale * up64 @ down64
    save_file(tensors, path)
    return deltas
