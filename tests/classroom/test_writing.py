"""A student's own prompt continued by a text run and its base model (core.classroom.writing),
without a page."""

from __future__ import annotations

import copy

import pytest
import torch

from core.classroom import writing
from core.common.config import RunConfig, SettingError, for_model
from core.training import text, zoo
from core.training.train import write


@pytest.fixture(scope="module")
def models():
    """The base gpt and a changed copy (its q weights nudged): two models that write
    differently, as a run's model and its base do."""
    base = zoo.load("gpt", num_classes=text.VOCAB_SIZE).eval()
    changed = copy.deepcopy(base)
    with torch.no_grad():
        changed.get_submodule("blocks.0.attn.q").weight.mul_(3.0)
    return base, changed


@pytest.fixture(scope="module")
def written(models) -> writing.Writing:
    """A prompt with characters the model never learned, continued by both models (each
    write is 80 steps of the model: the module writes as little as it can)."""
    return writing.continued(*models, "Café “x”\tdéjà")


def test_a_prompt_is_continued_by_both_models_the_same_each_time(models, written):
    base, _ = models
    assert len(written.base) == len(written.trained) == text.SAMPLE_LENGTH
    assert written.base != written.trained  # each model's own text
    assert write(base, written.prompt) == written.base  # a fixed seed: the same text again
    assert set(written.base + written.trained) <= set(text.ALPHABET + text.UNKNOWN_SYMBOL)


def test_unknown_characters_are_named_and_read_as_the_unknown_one(models, written):
    assert written.unknown == ["é", "“", "”", "\t", "à"]  # each once, in order
    assert writing.shown_characters(written.unknown) == "é “ ” \\t à"
    # the models read each as text.UNKNOWN: the same as the unknown symbol itself
    assert write(models[0], "Caf\ufffd \ufffdx\ufffd\ufffdd\ufffdj\ufffd") == written.base


@pytest.mark.parametrize(
    ("prompt", "key"), [("", "writing.empty"), ("x" * (text.PROMPT_LIMIT + 1), "writing.too_long")]
)
def test_an_empty_or_too_long_prompt_is_refused_in_a_sentence(models, prompt, key):
    with pytest.raises(SettingError) as refused:
        writing.continued(*models, prompt)
    assert refused.value.key == key
    writing.checked_prompt("x" * text.PROMPT_LIMIT)  # the limit itself is fine


def test_a_runs_samples_continue_its_tasks_prompt_as_its_target_text_writes_it():
    config = for_model("gpt")
    assert writing.run_prompt(config) == text.prompt_for("code", {}) == "def "
    substituted = RunConfig.from_dict(config.to_dict() | {"shift": "substitute", "seed": 3})
    assert writing.run_prompt(substituted) == text.substitute(text.DEFAULT_PROMPT, 3)
    reversed_words = RunConfig.from_dict(config.to_dict() | {"shift": "reverse-words"})
    assert writing.run_prompt(reversed_words) == "ehT "
