"""Which settings of a shown run differ from the settings a page's form holds.

Why this exists: the Train page shows a result (a run's curves, accuracy and spectra) next to
a form of settings, and the two need not belong together: a lesson link or a new tab sets the
form, while the result shown is the student's latest run, trained under other settings. A
student who reads the form as the result's settings learns something false; so the page names
each setting in which the run differs from the form.

Only the settings that act in both runs count: a LoRA rank beside a full fine-tuning run, or a
label-permute parameter beside a rotation, differs in nothing the student could see (the method
or the shift already differs, and says so).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from core.common.config import RunConfig, to_text
from core.training.data import SHIFTS

# The settings only one method reads (core.common.config: "The LoRA settings (rank, targets, init,
# dora, …) are ignored by the other methods"; top_k is method top-k's block count).
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "lora": ("rank", "alpha", "targets", "init", "scaling", "dora", "lora_plus_ratio", "dropout"),
    "top-k": ("top_k",),
}
NOT_SETTINGS = ("device",)  # where a run computes, not what: the same numbers on any device


@dataclass(frozen=True)
class SettingDifference:
    """One setting in which the run differs from the form: its name as links and the command
    line spell it, and each value as text (core.common.config.to_text: what a link would carry)."""

    name: str
    run: str
    form: str


def _read_by(name: str) -> str | None:
    """The method that alone reads setting ``name``; None if every method does."""
    return next((m for m, names in METHOD_SETTINGS.items() if name in names), None)


def _value(config: RunConfig, name: str):
    """A setting as it acts: the learning rate the run trains at (an unset lr is the method's
    own), a shift's parameters with the shift's defaults filled in."""
    if name == "lr":
        return config.learning_rate
    if name == "shift_params":
        return SHIFTS[config.shift].params | config.shift_params
    return getattr(config, name)


def differing_settings(form: RunConfig, run: RunConfig) -> list[SettingDifference]:
    """The settings in which ``run`` differs from ``form``, in RunConfig's order; [] when the
    run is what the form would train."""
    differences = []
    for name in (f.name for f in fields(RunConfig)):
        method = _read_by(name)
        if name in NOT_SETTINGS or (method is not None and method != run.method):
            continue
        if method is not None and form.method != run.method:
            continue  # the method differs (and says so): its own settings do not compare
        if name == "shift_params" and form.shift != run.shift:
            continue
        ran, formed = _value(run, name), _value(form, name)
        if ran != formed:
            differences.append(SettingDifference(name, to_text(ran), to_text(formed)))
    return differences
