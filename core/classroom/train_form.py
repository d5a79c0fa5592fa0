"""The Train page's rules without the page: its settings as a run's config or a reason to refuse
them, the layers a link's targets pick, the shift parameters a link keeps, the count of what
trains and how the page words it, a run's time left, the stored run it shows and the headlines
of its outcome (by its task's kind's metric).

The page draws widgets into st.session_state and hands their values here as one mapping (the
settings, links.TRAIN_KEYS); what comes back is typed (Form), so a page never indexes a result
by a string it could misspell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from core.classroom import links
from core.classroom.i18n import Catalog
from core.common.config import (
    DEFAULT_MODEL,
    MODELS,
    RunConfig,
    config_choices,
    for_model,
    kind_of_dataset,
    kind_of_model,
    shifts_for,
)
from core.lowrank.methods import ParamCount
from core.lowrank.targets import resolve_targets
from core.store.records import RunRecord
from core.store.runs import RunStore
from core.training import data, train, zoo
from core.training.kinds import IMAGES, DataKind, Metric


@dataclass(frozen=True)
class Form:
    """What the Train page's settings make: a run's config and its count, or why not."""

    config: RunConfig | None  # None: the settings make no config (a bad value)
    count: ParamCount | None  # None: refused (or the model could not load)
    refusal: ValueError | None  # why the settings are refused (the page words it)


def base_model(settings: Mapping[str, Any]) -> nn.Module:
    """The model the settings adapt, with a head for their dataset's classes (ValueError for an
    unknown model or dataset, OfflineError for weights that need a download)."""
    return zoo.load(settings["model"], num_classes=data.DATASETS[settings["dataset"]].num_classes)


def check(settings: Mapping[str, Any], base: nn.Module | None) -> Form:
    """The settings as a config, checked against the base model and counted; without a base
    model (it could not load) only read, not checked: the page says why it cannot load. What
    the page does not set (how often a run is measured and sampled) is its model's own
    (core.common.config.for_model: a language model every 20 steps)."""
    try:
        config = RunConfig.from_dict(unset_settings(settings) | dict(settings))
    except ValueError as error:
        return Form(None, None, error)
    if base is None:
        return Form(config, None, None)
    try:
        train.check_config(config, base)
        return Form(config, train.parameter_count(config), None)
    except ValueError as error:
        return Form(config, None, error)


def unset_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run that the page has no control for, as its model starts them."""
    model = settings.get("model")
    own = for_model(model if model in MODELS else DEFAULT_MODEL)
    return {name: value for name, value in own.to_dict().items() if name not in settings}


def moved_settings(old: str, new: str) -> dict[str, Any]:
    """The settings the form takes when the student picks model ``new`` instead of ``old``:
    each one in which the two models start differently (links.train_defaults), as ``new``
    starts it. A language model brings its text, its task, its targets, batch and steps;
    going back to an image model brings the image defaults back; between two image models
    nothing moves, so a student's choices stay."""
    before, after = links.train_defaults(old), links.train_defaults(new)
    return {
        name: value for name, value in after.items() if name != "model" and value != before[name]
    }


def choices_for(model: str, setting: str, current: str) -> list[str]:
    """What the ``setting`` box ("dataset" or "shift") offers with ``model``: the datasets of
    the kind of data it reads, or the shifts made for that kind
    (core.common.config.shifts_for), and ``current`` as well where it is none of them (a
    link's): the box keeps the link's value, and the form refuses it in one line."""
    kind = kind_of_model(model)
    if setting == "dataset":
        offered = [name for name in config_choices()["dataset"] if kind_of_dataset(name) == kind]
    else:
        offered = shifts_for(kind)
    return offered if current in offered else [*offered, current]


def target_presets(base: nn.Module, model: str) -> dict[str, list[str]]:
    """The model's named choices of targets (zoo.ZooEntry.target_presets: for gpt the LoRA
    paper's q and v, all of attention, all linear layers, the MLP only), each as the layers it
    picks in ``base``."""
    return {name: _picked(base, targets) for name, targets in zoo.ZOO[model].target_presets}


def _picked(base: nn.Module, targets: str) -> list[str]:
    """The layers a targets setting ("all-linear", or names/globs joined by commas) picks."""
    return resolve_targets(base, targets if targets == "all-linear" else targets.split(","))


def starting_targets(base: nn.Module, model: str, targets: str) -> tuple[list[str], bool]:
    """The layers picked when the page first shows ``model``: those ``targets`` ("all-linear",
    or comma-separated names/globs as in a link) picks, else the model's default targets
    (zoo.default_targets: "all-linear", or the card's recommendation where "all-linear" picks
    nothing, as for resnet18 whose only Linear is the head). The flag: whether ``targets``
    picked a layer (a link's that did not is reported)."""
    try:
        chosen = _picked(base, targets)
    except ValueError:
        chosen = []
    if chosen:
        return chosen, True
    return resolve_targets(base, zoo.default_targets(model)), False


def targets_setting(base: nn.Module, model: str, picked: list[str]) -> str:
    """The targets setting of the picked layers, as short as a link can say it: "all-linear",
    or the model's preset (target_presets) that picks exactly those, else their names joined
    by commas."""
    for targets in ["all-linear", *(targets for _, targets in zoo.ZOO[model].target_presets)]:
        if picked == _picked(base, targets):
            return targets
    return ",".join(picked)


def link_shift_params(shift: str, given: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A link's shift parameters if the shift's boxes can hold them, else none (the defaults);
    the flag says whether they could."""
    try:
        data.check_shift_params(shift, given)
    except ValueError:
        return {}, False
    return given, True


def changed_shift_params(shift: str, params: dict[str, Any]) -> dict[str, Any]:
    """What differs from the shift's defaults (links stay short). Never a "seed": the page offers
    no box for it, as a run draws its permutation (or ΔW*) with its own seed."""
    defaults = data.SHIFTS[shift].params
    return {name: value for name, value in params.items() if value != defaults[name]}


def seconds_left(planned: int, step: int, steps_per_s: float) -> float | None:
    """The ETA of a running run: its steps left at its speed (None before it has a speed)."""
    if not steps_per_s > 0:
        return None
    return (planned - step) / steps_per_s


def eta_text(planned: int, step: int, steps_per_s: float) -> str:
    """The ETA as the progress line writes it: whole seconds, "–" while unknown."""
    left = seconds_left(planned, step, steps_per_s)
    return "–" if left is None or math.isnan(left) else f"{left:.0f}"


HEAD_SPLIT = {  # ParamCount.head_training → the catalog's sentence for a LoRA run's count
    "full": "train.count_lora",
    "adapter": "train.count_head_adapter",
    "frozen": "train.count_frozen_head",  # a task that keeps the base model's head (planted-rank)
}


def count_split(method: str, count: ParamCount, train_head: bool) -> tuple[str, dict] | None:
    """The second line under the Train button: which catalog sentence says where the trainable
    parameters are (adapters or biases, blocks, and the head) and its values; None where the
    first line says all (full fine-tuning, head only)."""
    if method == "lora":
        which = HEAD_SPLIT[count.head_training]
        if count.head_training == "frozen" and not train_head:  # the student turned it off
            which = "train.count_kept_frozen"
        return which, {"adapters": f"{count.trainable - count.head:,}", "head": f"{count.head:,}"}
    if method in ("top-k", "bitfit") and count.head:
        return "train.count_head", {"head": f"{count.head:,}"}
    return None


def card_line(model: str, words: Catalog) -> str:
    """The sentence under the model box in ``words``' language: the model's size, and how well
    it does on the task it was pretrained on, by that task's kind's metric (named by the
    catalog's models.<name>.source where it has one; else by the card's own English words);
    torchvision's ImageNet models have no such score."""
    card = zoo.card(model)
    params = f"{card['params']:,}"
    if card["split"] is None:
        return words.t("train.card_imagenet", params=params)
    metric = data.kind_of(card["split"]["dataset"]).metric
    source = f"models.{model}.source"
    named = words.t(source) if words.has(source) else card["source_task"]
    score = metric.written(card[f"test_{metric.field}"])
    return words.t(metric.card, params=params, score=score, source=named)


def run_title(run_id: int | None, live: bool) -> str:
    """Which catalog sentence names the run shown: one not stored (yet), the student's latest
    from the store (``live``: False), or the one this page started."""
    if run_id is None:
        return "train.this_run_unsaved"
    return "train.this_run" if live else "train.latest"


def kind_of(config: RunConfig) -> DataKind:
    """What a run's data is (core.training.kinds): its dataset's kind. A stored run whose
    dataset this app does not know (its row edited by hand) recorded its numbers as every run
    so far did, as accuracies on images: its outcome is still shown."""
    info = data.DATASETS.get(config.dataset)
    return info.kind if info is not None else IMAGES


def metric_of(config: RunConfig) -> Metric:
    """How a run is judged: its data's kind's headline metric."""
    return kind_of(config).metric


@dataclass(frozen=True)
class Headline:
    """A metric of an ended run on one split, as its headline says it."""

    value: str  # before → after: "37.6% → 90.2%"
    change: str  # catalog key of the change's sentence (Metric.change: "{value} points")
    amount: str  # the change, as that sentence takes it: "+52.6"


def headline(metric: Metric, result: Mapping[str, Any], split: str) -> Headline | None:
    """The run's ``metric`` before → after on ``split`` ("test", "source") from its result
    (RunOutcome's fields: test_acc_before, …); None where it has none (a failed run; no source
    task, as for torchvision's ImageNet models)."""
    after = result.get(f"{split}_{metric.field}_after")
    if after is None:
        return None
    before = result[f"{split}_{metric.field}_before"]
    return Headline(
        f"{metric.written(before)} → {metric.written(after)}",
        metric.change,
        metric.changed(before, after),
    )


def stored_run(store: RunStore, run_id: int) -> RunRecord:
    """A stored run as it is now: one still "running" is trained by another process, so the
    store first marks it "unfinished" if that process is gone (RunStore.recover). StoreError
    for a run deleted meanwhile."""
    record = store.get(run_id)
    if record.status == "running":
        store.recover()
        record = store.get(run_id)
    return record
