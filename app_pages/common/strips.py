"""A task's examples before and after its shift (images drawn pixel for pixel, or passages of
text) and a trained run's predictions."""

from __future__ import annotations

import contextlib
import re

import streamlit as st

from app_pages.common.plot_style import PRESENTER_SCALE
from app_pages.common.session import presenter, store, tr
from core.common.config import RunConfig
from core.common.paths import OfflineError
from core.common.text import for_markdown
from core.store.runs import StoreError
from core.training import data, examples, measure

IMAGE_WIDTH = 56  # px: a 28×28 image at twice its size (presenter mode: larger still)
STRIP_CSS = "<style>.{css_class} img {{ image-rendering: pixelated; }}</style>"  # crisp pixels


def css_class(key: str) -> str:
    """The CSS class Streamlit gives an element with this key (other characters become -)."""
    return "st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", key)


@st.cache_data(show_spinner=False, max_entries=64)
def _task_examples(model: str, dataset: str, shift: str, shift_params: dict, seed: int) -> dict:
    """core.training.examples.task_examples, once per task for the whole server; or {"problem": …}
    (never downloads: a dataset not on this computer yet shows no images)."""
    config = RunConfig(
        model=model, dataset=dataset, shift=shift, shift_params=shift_params, seed=seed
    )
    if not data.on_this_computer(config.dataset, config.shift, config.shift_params):
        return {"problem": "examples.not_here"}
    try:
        return examples.task_examples(config)
    except (OfflineError, ValueError) as error:
        return {"problem": "examples.failed", "reason": str(error)}


@st.cache_data(show_spinner=False, max_entries=64)
def _text_examples(
    model: str, dataset: str, shift: str, shift_params: dict, seed: int
) -> examples.TextExamples | dict:
    """core.training.examples.text_examples, once per task for the whole server; or
    {"problem": …} (a planted update that cannot be made, a Python without the text)."""
    config = RunConfig(
        model=model, dataset=dataset, shift=shift, shift_params=shift_params, seed=seed
    )
    try:
        return examples.text_examples(config)
    except (OfflineError, ValueError) as error:
        return {"problem": "examples.text_failed", "reason": str(error)}


def text_strip(model: str, dataset: str, shift: str, shift_params: dict, seed: int) -> None:
    """The same held-out passage before and after the task's shift (for a new text, a passage
    of each; for a planted update, what the base model and the teacher write), as plain text."""
    shown = _text_examples(
        model if shift == "planted-rank" else "",  # only a planted update needs the model
        dataset,
        shift,
        shift_params,
        seed,
    )
    with st.expander(tr("examples.title"), expanded=True):
        if isinstance(shown, dict):
            st.caption(tr(shown["problem"], reason=for_markdown(shown.get("reason", ""))))
            return
        st.caption(tr(shown.before_caption))
        st.code(shown.before, language=None, wrap_lines=True)
        if shift == "none":
            st.caption(tr("examples.none"))
            return
        st.caption(tr(shown.after_caption))
        st.code(shown.after, language=None, wrap_lines=True)


def image_width() -> int:
    """How wide a 28×28 example image is drawn, in pixels."""
    return round(IMAGE_WIDTH * (PRESENTER_SCALE if presenter() else 1.0))


@contextlib.contextmanager
def crisp_images(key: str):
    """A container whose images are drawn pixel for pixel, not blurred as they are enlarged."""
    with st.container(key=key):
        st.html(STRIP_CSS.format(css_class=css_class(key)))
        yield


def task_strip(model: str, dataset: str, shift: str, shift_params: dict, seed: int, key: str):
    """The same test images before and after the task's shift, each with its class (where the
    shift renames a class, as label-permute renames all ten, old → new), so that a student
    sees what the model must adapt to before training. Drawn for a dataset whose kind shows
    its examples as images (core.training.kinds), captioned with classes where it has them."""
    kind = data.kind_of(dataset)
    if kind.examples == "text":
        text_strip(model, dataset, shift, shift_params, seed)
    if kind.examples != "images":
        return
    strip = _task_examples(
        model if shift == "planted-rank" else "",  # only a planted update depends on the model
        dataset,
        shift,
        shift_params,
        seed,
    )
    with st.expander(tr("examples.title"), expanded=True):
        if "problem" in strip:
            st.caption(tr(strip["problem"], reason=for_markdown(strip.get("reason", ""))))
            return
        before, after = strip["labels_before"], strip["labels_after"]
        # one st.image per row: ten images each in a column of their own took the browser
        # a third of a second longer to draw (bench/page_load.py)
        with crisp_images(key):
            st.caption(tr("examples.before"))
            st.image(
                list(strip["before"]),
                caption=[str(c) for c in before] if kind.has_classes else None,
                width=image_width(),
                output_format="PNG",  # not JPEG's blur around thin strokes
            )
            if shift == "none":
                st.caption(tr("examples.none"))
                return
            st.caption(tr("examples.after"))
            renamed = [
                str(new) if new == old else f"{old} → {new}"
                for old, new in zip(before, after, strict=True)
            ]
            st.image(
                list(strip["after"]),
                caption=renamed if kind.has_classes else None,
                width=image_width(),
                output_format="PNG",
            )


@st.cache_data(show_spinner=False, max_entries=32)
def _predictions(store_path: str, run_id: int) -> dict | None:
    """core.training.examples.prediction_examples of a saved run, once per run (None: no
    weights)."""
    try:
        return examples.prediction_examples(measure.open_run(run_id, store()))
    except (StoreError, OfflineError, ValueError):
        return None


def prediction_strip(run_id: int, key: str) -> None:
    """A few test images of a run with the class the model gave them before and after
    training, some still wrong, and how many training fixed, broke and left wrong. One
    st.image of them all, as the task's strip: it wraps, so a phone shows several a row."""
    shown_examples = _predictions(store().where, run_id)
    if shown_examples is None:
        return
    counts = {name: f"{count:,}" for name, count in shown_examples["counts"].items()}
    st.markdown(f"**{tr('examples.predictions_title')}**")
    st.caption(tr("examples.predictions_counts", **counts))
    labels, before, after = (shown_examples[k] for k in ("labels", "before", "after"))
    captions = [
        tr("examples.prediction", label=y, before=b, after=a) + (" ✓" if a == y else " ✗")
        for y, b, a in zip(labels, before, after, strict=True)
    ]
    with crisp_images(key):
        st.image(
            list(shown_examples["images"]),
            caption=captions,
            width=image_width(),
            output_format="PNG",
        )
