"""What a kind of data looks like to a student, said once so that a page need not assume images.

An image task shows a strip of example images, judges a run by its accuracy (written 90.2%, a
change in points), and every example has a class (ten digits). A text task shows passages of
text, judges a run by its bits per character on held-out text (written 2.31, lower is better,
a change in bits), and has no classes: its "classes" are the 97 characters the model can write.
A page asks the task's kind (core.training.data.kind_of) instead of assuming either.
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
    margin: str  # catalog key of a small difference, "within {value} point" of another score
    chance: str  # catalog key of what a model that learned nothing scores ("the commonest class")
    percent: bool = True  # a share, written 90.2% and changed in points; else a plain number
    lower_is_better: bool = False  # a loss (bits per character) rather than a score
    tolerance: float = 0.01  # a difference no bigger reads "about the same": one point, 0.01 bit

    @property
    def validation(self) -> str:
        """Its key in a run's history, measured on the validation split: "val_acc"."""
        return f"val_{self.field}"

    def written(self, value: float) -> str:
        """A value as a student reads it: 0.902 → "90.2%"; 2.3114 bits → "2.31"."""
        return f"{value:.1%}" if self.percent else f"{value:.2f}"

    def changed(self, before: float, after: float) -> str:
        """A change as the catalog's `change` sentence takes it: 0.376 → 0.902 is "+52.6"
        (points); 3.10 → 2.31 bits is "-0.79"."""
        return f"{self.units(after - before):+.{1 if self.percent else 2}f}"

    def units(self, difference: float) -> float:
        """A difference in the units a student reads it in: points (×100) for a share, bits as
        they are."""
        return difference * 100 if self.percent else difference

    def difference(self, value: float) -> str:
        """The size of a difference as the catalog's `margin` takes it: 0.01 → "1" (point);
        0.01 bits → "0.01"."""
        return f"{self.units(value):g}"

    def better_by(self, value: float, other: float) -> float:
        """How much better `value` is than `other`, in the metric's units: above zero when it
        is better (higher accuracy, fewer bits)."""
        return other - value if self.lower_is_better else value - other


@dataclass(frozen=True)
class DataKind:
    """How a kind of data is shown and judged."""

    name: str
    examples: str  # how a page shows a few examples: "images" (a strip of pictures)
    metric: Metric  # the headline: how a run on it is judged
    has_classes: bool  # each example has a class: a class count, a head per class, renamings
    others: tuple[Metric, ...] = ()  # measured and drawn too, after the headline

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Every metric a run on it records, the headline first."""
        return (self.metric, *self.others)


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
    margin="spectra.margin_points",
    chance="spectra.chance_commonest",
)
IMAGES = DataKind("images", examples="images", metric=ACCURACY, has_classes=True)

BITS = Metric(
    field="bpc",
    label="train.bpc",
    axis="compare.bpc_axis",
    curve="train.val_bpc",
    tickformat=".2f",
    axis_range=(0.0, 7.0),  # 0 bits (certain) to past log2(97) ≈ 6.6 (a uniform guess)
    change="train.bits",
    heading="train.bits_heading",
    curve_tickformat=".2f",
    source="train.source_bpc",
    source_help="train.source_bpc_help",
    card="train.card_text",
    margin="spectra.margin_bits",
    chance="spectra.chance_uniform",
    percent=False,
    lower_is_better=True,
)
NEXT_CHARACTER = Metric(
    field="acc",
    label="train.next_acc",
    axis="compare.next_acc_axis",
    curve="train.val_next_acc",
    tickformat=".0%",
    axis_range=(0.0, 1.02),
    change="train.points",
    heading="train.next_acc_heading",
    curve_tickformat=".1~%",
    source="train.source_next_acc",
    source_help="train.source_bpc_help",
    card="train.card_text",
    margin="spectra.margin_points",
    chance="spectra.chance_commonest",
)
TEXT = DataKind("text", examples="text", metric=BITS, has_classes=False, others=(NEXT_CHARACTER,))
KINDS = {kind.name: kind for kind in (IMAGES, TEXT)}
