"""The tiny GPT: shapes, causality, its size, deterministic samples, and LoRA on its attention
(ours, merged, and HF PEFT's on the same module, logits equal both ways)."""

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from core.lowrank import lora, targets
from core.lowrank.peft_io import export_peft, import_peft
from core.training.gpt import (
    GPT,
    AttentionCache,
    GPTConfig,
    generate,
    next_char_loss,
    parameter_count,
)

SMALL = GPTConfig(vocab_size=13, context=16, n_layer=2, n_head=2, n_embd=16)
Q_AND_V = ["blocks.*.attn.q", "blocks.*.attn.v"]


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(SMALL).eval()


def ids(n: int = 3, t: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (n, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def move_B(model: nn.Module, seed: int = 2) -> None:
    """Give every LoRA B (ours or PEFT's) random values, so B A ≠ 0 and the adapter matters."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith(".B") or ".lora_B." in name:
            param.copy_(torch.randn(param.shape, generator=generator))


def test_logits_have_one_row_per_position_and_character():
    x = ids(3, 10)
    assert small_gpt()(x).shape == (3, 10, SMALL.vocab_size)


def test_a_text_longer_than_the_context_is_refused():
    with pytest.raises(ValueError, match="at most 16 characters"):
        small_gpt()(torch.zeros(1, 17, dtype=torch.long))


def test_a_width_that_does_not_split_into_heads_is_refused():
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPT(GPTConfig(n_embd=30, n_head=4))


def test_a_later_character_never_changes_an_earlier_prediction():
    model, x = small_gpt(), ids(2, 16)
    j = 9
    changed = x.clone()
    changed[:, j] = (x[:, j] + 1) % SMALL.vocab_size
    before, after = model(x), model(changed)
    torch.testing.assert_close(after[:, :j], before[:, :j], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, j:], before[:, j:], atol=1e-4)  # later ones do change


@pytest.mark.parametrize(
    "config", [SMALL, GPTConfig(), GPTConfig(vocab_size=5, context=3, n_layer=1, n_head=1)]
)
def test_parameter_count_matches_the_built_model(config):
    assert parameter_count(config) == sum(p.numel() for p in GPT(config).parameters())


def test_the_default_is_the_classroom_size_of_issue_20():
    assert 0.7e6 < parameter_count(GPTConfig()) < 0.9e6  # "a 4-layer, 128-wide model, 0.8 M"


def test_the_first_loss_is_near_chance():
    """GPT-2's small init: every character starts about equally likely, loss ≈ ln V."""
    x = ids(4, 16)
    loss = next_char_loss(small_gpt()(x), ids(4, 16, seed=3))
    assert abs(loss.item() - torch.log(torch.tensor(SMALL.vocab_size)).item()) < 0.1


def test_a_sample_is_the_same_for_the_same_seed():
    model, prompt = small_gpt(), torch.tensor([1, 2, 3])
    first = generate(model, prompt, 30, torch.Generator().manual_seed(7), temperature=1.0)
    again = generate(model, prompt, 30, torch.Generator().manual_seed(7), temperature=1.0)
    other = generate(model, prompt, 30, torch.Generator().manual_seed(8), temperature=1.0)
    assert first.shape == (33,) and torch.equal(first[:3], prompt)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_temperature_zero_takes_the_likeliest_character_and_reads_only_the_context():
    model, prompt = small_gpt(), ids(1, 16)[0]
    sample = generate(model, prompt, 5, torch.Generator(), temperature=0)
    for i in range(16, 21):  # each new id is the argmax given the last 16 characters
        assert sample[i] == model(sample[None, i - 16 : i])[0, -1].argmax()


@torch.no_grad()
def generate_uncached(model, prompt, n, generator, temperature):
    """generate as it reads without a cache: the whole window again for every character."""
    sample = prompt.reshape(1, -1)
    for _ in range(n):
        logits = model(sample[:, -SMALL.context :])[0, -1]
        probs = torch.softmax(logits / temperature, dim=-1)
        sample = torch.cat([sample, torch.multinomial(probs, 1, generator=generator)[None]], 1)
    return sample[0]


@pytest.mark.parametrize("length", [3, 10], ids=["within-context", "past-context"])
def test_the_cache_writes_what_reading_the_whole_window_writes(length):
    model, prompt = small_gpt(), ids(1, length)[0]
    cached = generate(model, prompt, 12, torch.Generator().manual_seed(5), temperature=1.0)
    plain = generate_uncached(model, prompt, 12, torch.Generator().manual_seed(5), 1.0)
    assert torch.equal(cached, plain)


def test_a_cached_forward_gives_the_logits_of_the_whole_text():
    model, text = small_gpt(), ids(1, 12)
    caches = [AttentionCache() for _ in range(SMALL.n_layer)]
    with torch.no_grad():
        parts = [
            model(text[:, :5], caches),
            model(text[:, 5:9], caches),
            model(text[:, 9:], caches),
        ]
        torch.testing.assert_close(torch.cat(parts, 1), model(text))
    assert caches[0].length == 12


def test_generate_leaves_the_model_in_its_mode():
    model = small_gpt().train()
    generate(model, torch.tensor([0]), 2, torch.Generator())
    assert model.training


def test_all_linear_is_every_blocks_attention_and_mlp_but_not_the_head():
    model = small_gpt()
    expected = [
        f"blocks.{i}.{layer}"
        for i in range(SMALL.n_layer)
        for layer in ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj"]
    ]
    assert targets.resolve_targets(model, "all-linear") == expected
    assert targets.head_name(model) == "lm_head"
    assert targets.block_names(model) == ["blocks.0", "blocks.1"]


def test_lora_on_q_and_v_starts_as_the_base_and_merges_to_the_same_logits():
    base, x = small_gpt(), ids()
    names = targets.resolve_targets(base, Q_AND_V)
    assert names == ["blocks.0.attn.q", "blocks.1.attn.q", "blocks.0.attn.v", "blocks.1.attn.v"]
    adapted = lora.inject(base, names, rank=2, alpha=4.0, seed=0).eval()
    torch.testing.assert_close(adapted(x), base(x), rtol=0, atol=0)  # B = 0: nothing changed
    move_B(adapted)
    assert not torch.allclose(adapted(x), base(x), atol=1e-3)
    merged = lora.merge(adapted)
    assert not lora.adapted_layers(merged)
    torch.testing.assert_close(merged(x), adapted(x), rtol=1e-5, atol=1e-5)


def test_our_adapter_exported_loads_in_peft_with_the_same_logits(tmp_path):
    base, x = small_gpt(), ids()
    adapted = lora.inject(base, targets.resolve_targets(base, Q_AND_V), rank=2, alpha=4.0, seed=0)
    move_B(adapted)
    export_peft(adapted.eval(), tmp_path)
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    torch.testing.assert_close(theirs(x), adapted(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(theirs(x), base(x), atol=1e-3)


def test_peft_target_modules_q_v_import_with_the_same_logits(tmp_path):
    base, x = small_gpt(), ids()
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q", "v"])
    theirs = get_peft_model(copy.deepcopy(base), config).eval()
    move_B(theirs)
    theirs.save_pretrained(tmp_path)
    ours = import_peft(base, tmp_path).eval()
    assert sorted(lora.adapted_layers(ours)) == sorted(targets.resolve_targets(base, Q_AND_V))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours(x), base(x), atol=1e-3)
