"""What a kind of data looks like to a student, said once so that a page need not assume images.

Today every task is an image task: a page shows a strip of example images, a run is judged by its
accuracy (written 90.2%, a change in points), and every example has a class (ten digits). A text
task would say its own (samples of text, a loss per character, no classes): a page asks the
task's kind (core.training.data.kind_of) instead of assuming any of these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """The number that says how well a run does on a task, and how the pages write it."""

    field: str  # its stem in a run's results: "acc" → test_acc_before/after, val_acc, source_acc_*
    label: str  # catalog key of its headline on the Train page ("train.acc")
    axis: str  # catalog key of a figure's axis ("compare.acc_axis")
    curve: str  # catalog key of its learning curve's name, or an axis of it ("train.val_acc")
    tickformat: str  # plotly's format of an axis of it (".0%")
    axis_range: tuple[float, float]  # a fixed axis: a single point is not stretched around
    change: str  # catalog key of a change between two values ("train.points": "+52.6 points")
    heading: str  # catalog key of the title over its live curve on the Train page
    curve_tickformat: str  # plotly's format of the live curve's axis (".1~%")
    source: str  # catalog key of its headline on the source task ("train.source_acc")
    source_help: str  # catalog key of what that headline measures
    card: str  # catalog key of a model card's line with the model's score ("train.card")

    @property
    def validation(self) -> str:
        """Its key in a run's history, measured on the validation split: "val_acc"."""
        return f"val_{self.field}"

    def written(self, value: float) -> str:
        """A value as a student reads it: 0.902 → "90.2%"."""
        return f"{value:.1%}"

    def changed(self, before: float, after: float) -> str:
        """A change as the catalog's `change` sentence takes it: 0.376 → 0.902 is "+52.6"."""
        return f"{(after - before) * 100:+.1f}"


@dataclass(frozen=True)
class DataKind:
    """How a kind of data is shown and judged."""

    name: str
    examples: str  # how a page shows a few examples: "images" (a strip of pictures)
    metric: Metric
    has_classes: bool  # each example has a class: a class count, a head per class, renamings


ACCURACY = Metric(
    field="acc",
    label="train.acc",
    axis="compare.acc_axis",
    curve="train.val_acc",
    tickformat=".0%",
    axis_range=(0.0, 1.02),  # accuracy lies in [0, 1]
    change="train.points",
    heading="train.accuracy",
    curve_tickformat=".1~%",
    source="train.source_acc",
    source_help="train.source_help",
    card="train.card",
)
IMAGES = DataKind("images", examples="images", metric=ACCURACY, has_classes=True)
