"""Examples a page can show: the task before and after its shift, and what a run predicts.

Before a student presses Train, a strip of test images shows what the model must adapt to: the
same digits upright and rotated, inverted, shuffled, drawn by other writers (domain), or with
their classes renamed. After a run, a few test images with the class the model gave them
before and after training, including some it still gets wrong.

Images come out as uint8 arrays (n, 28, 28), 0 = black and 255 = white, which st.image and
plotly show as they are; labels as plain ints. Everything is computed from the task exactly as
training builds it (core.training.train.load_task), so the strip shows the run's own shift and seed.

A text task shows passages instead (text_examples): the same held-out passage before and after
its shift, or what the base model and the task's teacher write.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.common.config import RunConfig
from core.training import data, text, zoo
from core.training.measure import TrainedRun
from core.training.train import load_task, write


def to_uint8(x: Tensor) -> np.ndarray:
    """Images (n, 1, 28, 28) in [0, 1] as uint8 (n, 28, 28), rounded to the nearest level."""
    return (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def one_per_class(labels: Tensor, n: int) -> list[int]:
    """Indices of n examples: the first of each class in turn (0, 1, 2, …, then again), so a
    short strip shows every class once before any repeats."""
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    picked = []
    for rank in range(max(len(members) for members in by_class)):
        for members in by_class:
            if rank < len(members) and len(picked) < n:
                picked.append(members[rank])
    return picked


def task_examples(config: RunConfig, n: int = 10) -> dict:
    """n test images of the config's dataset before and after its shift.

    Keys: before, after        uint8 (n, 28, 28): the same test images without and with the
                               shift (for "domain", after is an image of the other dataset
                               with the same label: its own images, not a changed one)
          labels_before, labels_after   their classes (they differ for label-permute and
                               planted-rank: the new task's labels)
          renaming             label-permute only: renaming[c] is the new name of class c
                               (None otherwise)
          indices              positions in the test split
    ValueError for a config that names no known dataset or shift; OfflineError for a
    dataset that needs a download.
    """
    task = load_task(config)
    plain = data.load_task(config.dataset, "none")
    indices = one_per_class(plain.y_test, n)
    labels_before = plain.y_test[indices]
    if config.shift == "domain":
        after_indices = _same_labels(task.y_test, labels_before)
    else:
        after_indices = indices
    renaming = None
    if config.shift == "label-permute":
        renaming = data.class_permutation(task.num_classes, int(task.shift_params["seed"]))
    return {
        "before": to_uint8(plain.x_test[indices]),
        "after": to_uint8(task.x_test[after_indices]),
        "labels_before": labels_before.tolist(),
        "labels_after": task.y_test[after_indices].tolist(),
        "renaming": None if renaming is None else renaming.tolist(),
        "indices": indices,
    }


def _same_labels(labels: Tensor, wanted: Tensor) -> list[int]:
    """For each wanted label, the next unused index in `labels` with that label."""
    used: set[int] = set()
    picked = []
    for label in wanted.tolist():
        candidates = torch.nonzero(labels == label).flatten().tolist()
        index = next(i for i in candidates if i not in used)
        used.add(index)
        picked.append(index)
    return picked


def prediction_examples(run: TrainedRun, n: int = 8, wrong: int = 3) -> dict:
    """n test images of a run with the class the model gave them before training (the base
    model, which is what the run computed at step 0) and after.

    Up to `wrong` of them are images the run still gets wrong; then images training fixed
    (wrong before, right after), then images right both times. Keys:
      images                  uint8 (n, 28, 28), the task's test images (shift applied)
      labels, before, after   true class, prediction before and after, per image
      indices                 positions in the test split
      counts                  over the whole test split: {"fixed", "broken", "still_wrong",
                              "right", "total", "wrong_after"}: wrong → right, right → wrong,
                              wrong both times, right both times; all images, and those wrong
                              after training (still wrong + broken: said together, "75 still
                              wrong" beside 97 wrong after training reads as a contradiction)
    """
    x, y = run.test.x, run.test.y
    before, after = data.predict(run.base, x), data.predict(run.model, x)
    groups = {
        "still_wrong": (before != y) & (after != y),
        "broken": (before == y) & (after != y),
        "fixed": (before != y) & (after == y),
        "right": (before == y) & (after == y),
    }
    wrong_now = torch.nonzero(after != y).flatten().tolist()[:wrong]
    picked = wrong_now + _first(groups["fixed"], n - len(wrong_now))
    picked += _first(groups["right"], n - len(picked))
    return {
        "images": to_uint8(x[picked]),
        "labels": y[picked].tolist(),
        "before": before[picked].tolist(),
        "after": after[picked].tolist(),
        "indices": picked,
        "counts": {name: int(mask.sum()) for name, mask in groups.items()}
        | {"total": len(y), "wrong_after": int((after != y).sum())},
    }


def _first(mask: Tensor, n: int) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()[: max(n, 0)]


@dataclass(frozen=True)
class TextExamples:
    """A text task as a preview shows it: two texts, each under a caption (catalog keys)."""

    before: str
    after: str
    before_caption: str
    after_caption: str


def text_examples(config: RunConfig) -> TextExamples:
    """The same held-out passage of the prose before and after the config's shift
    (text.shifted: substituted letters, reversed words; "none" leaves it as it is); for
    "code", a passage of the prose and one of the code (another text, not a changed one); for
    "planted-rank", what the base model and the teacher (the base model plus ΔW*, whose
    logits the task trains on) write from the task's prompt. ValueError for a task that
    cannot be built (a planted update no rank can make)."""
    if config.shift == "planted-rank":
        task = load_task(config)
        base = zoo.load(config.model, num_classes=task.num_classes)
        teacher = data.with_update(base, task.planted.layer, task.planted.delta_W)
        prompt = text.prompt_for(config.shift, task.shift_params)
        return TextExamples(
            prompt + write(base, prompt),
            prompt + write(teacher, prompt),
            "examples.base_writes",
            "examples.teacher_writes",
        )
    params = data.task_params(config.dataset, config.shift, config.shift_params, config.seed)
    prose = _held_out(text.source_text())
    start, end = text.passage(prose)
    if config.shift == "code":
        code = _held_out(text.target_text("code", params))
        return TextExamples(
            prose[start:end],
            code[slice(*text.passage(code))],
            "examples.prose_passage",
            "examples.code_passage",
        )
    after = text.shifted(prose, config.shift, params)[start:end]
    return TextExamples(prose[start:end], after, "examples.text_before", "examples.text_after")


def _held_out(dataset: text.TextDataset) -> str:
    """The first test chunk of a text, decoded: a passage no run trains on."""
    return text.decode(dataset.split("test")[0])
