"""A student's own prompt, continued by a finished text run and by the model it started from.

The Train page only draws what `continued` returns: the computation lives here, so a test can
ask it without a page. Both models write with the fixed sampling seed (core.training.train.write):
the same prompt gives the same text, for every student and on every click. A prompt is bounded
(text.PROMPT_LIMIT characters) and may hold characters the model never saw (curly quotes,
accented letters): they are named plainly (`shown_characters`), and the models read each as the
one unknown character, as they read such characters in their training text.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from core.common.config import RunConfig, SettingError
from core.store.runs import RunStore
from core.training import data, text
from core.training.rebuild import rebuild
from core.training.train import write


@dataclass(frozen=True)
class Writing:
    """What two models write after one prompt."""

    prompt: str
    unknown: list[str]  # the prompt's characters outside the alphabet, in order of appearance
    base: str  # what the model the run started from writes after the prompt
    trained: str  # what the run's model writes after it


def run_prompt(config: RunConfig) -> str:
    """The prompt a text run's samples continue (core.training.train.sampler's): its task's,
    written as its target text is, with its shift's parameters as the run drew them."""
    params = data.task_params(config.dataset, config.shift, config.shift_params, config.seed)
    return text.prompt_for(config.shift, params)


def checked_prompt(prompt: str) -> str:
    """The prompt if a model can continue it: not empty, at most text.PROMPT_LIMIT characters
    (a SettingError, said in the student's language, otherwise)."""
    if not prompt:
        raise SettingError("the prompt is empty: type a few characters", "writing.empty")
    if len(prompt) > text.PROMPT_LIMIT:
        raise SettingError(
            f"the prompt has {len(prompt)} characters; at most {text.PROMPT_LIMIT}",
            "writing.too_long",
            {"length": len(prompt), "limit": text.PROMPT_LIMIT},
        )
    return prompt


def continued(base: nn.Module, model: nn.Module, prompt: str) -> Writing:
    """`prompt` continued by `base` and by `model` (checked_prompt's SettingError first)."""
    checked_prompt(prompt)
    return Writing(
        prompt, text.unknown_characters(prompt), write(base, prompt), write(model, prompt)
    )


def continued_by_run(store: RunStore, run_id: int, prompt: str) -> Writing:
    """`prompt` continued by a saved run's model and its base model (its weights from the
    store: StoreError where it has none)."""
    checked_prompt(prompt)
    base, model = rebuild(store.read_weights(run_id))
    return continued(base.eval(), model.eval(), prompt)


def shown_characters(characters: list[str]) -> str:
    """Characters as a page lists them: separated by spaces, each one that would not show (a
    tab, a zero-width space) written as its escape ("\\t", "\\u200b")."""
    return " ".join(c if c.isprintable() and not c.isspace() else repr(c)[1:-1] for c in characters)
