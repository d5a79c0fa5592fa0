"""Where a scatter plot writes each point's label, so that the labels of nearby points do not
overlap one another or cover a point.

Plotly writes every label on the side it is told, the same for all points: two runs that end
at about the same accuracy (r = 16 and r = 64 on the forgetting plot, r = 1 and r = 2) print
"r=16" over "r=64", and neither can be read. label_sides picks a side per point instead; the
figure gives its points in pixels, the label sizes it expects, and plotly's names of the sides.
Points that lie on one another (their markers mostly overlap) have no room for a label each:
merged writes their labels once, together, beside the first of them ("r=1, r=2").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# plotly's textposition values, in the order they are preferred: above the point first
SIDES = (
    "top center",
    "bottom center",
    "middle right",
    "middle left",
    "top right",
    "top left",
    "bottom right",
    "bottom left",
)
GAP = 2.0  # pixels between a marker's edge and its label


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels, y upwards."""

    left: float
    bottom: float
    right: float
    top: float

    @property
    def area(self) -> float:
        return (self.right - self.left) * (self.top - self.bottom)

    def overlap(self, other: Box) -> float:
        """The area this box shares with `other` (0 when they only touch or are apart)."""
        width = min(self.right, other.right) - max(self.left, other.left)
        height = min(self.top, other.top) - max(self.bottom, other.bottom)
        return max(width, 0.0) * max(height, 0.0)


def label_box(x: float, y: float, width: float, height: float, marker: float, side: str) -> Box:
    """Where the label of the point (x, y) falls on `side`: `width` × `height` pixels, beside a
    marker `marker` pixels across."""
    if side not in SIDES:
        raise ValueError(f"{side!r} is not one of {SIDES}")
    vertical, horizontal = side.split()
    reach = marker / 2 + GAP  # from the point's centre to the label's nearest edge
    left = {"left": x - reach - width, "center": x - width / 2, "right": x + reach}[horizontal]
    bottom = {"bottom": y - reach - height, "middle": y - height / 2, "top": y + reach}[vertical]
    return Box(left, bottom, left + width, bottom + height)


def merged(points: list[tuple[float, float]], texts: list[str], marker: float) -> list[str]:
    """The labels to write: a point closer than `marker` pixels to an earlier labelled point
    gives its label to that one and shows none; the labels gathered at a point are each written
    once, shortest first ("r=2, r=16"), joined by commas."""
    gathered: dict[int, list[str]] = {}  # the first point of each group: the group's labels
    for index, ((x, y), text) in enumerate(zip(points, texts, strict=True)):
        if not text:
            continue
        near = (i for i in gathered if math.dist(points[i], (x, y)) < marker)
        gathered.setdefault(next(near, index), []).append(text)
    return [
        ", ".join(sorted(set(gathered[i]), key=lambda t: (len(t), t))) if i in gathered else ""
        for i in range(len(points))
    ]


def label_sides(
    points: list[tuple[float, float]],
    widths: list[float],
    height: float,
    marker: float,
    plot: tuple[float, float],
) -> list[str]:
    """For each point (x, y in pixels, in a plot area `plot` = (width, height) pixels, from its
    lower left corner) with a label `widths[i]` pixels wide (0: no label) and `height` high,
    the side of SIDES its label goes: the first side where the label covers no marker and no
    label placed before it, and stays inside the plot area (plotly cuts off what is outside),
    else the side where the area covered and cut off is least. Points are placed in the order
    given; a point without a label keeps the first side."""
    half = marker / 2
    markers = [Box(x - half, y - half, x + half, y + half) for x, y in points]
    area = Box(0, 0, *plot)
    placed: list[Box] = []
    sides = []
    for (x, y), width in zip(points, widths, strict=True):
        if width <= 0:
            sides.append(SIDES[0])
            continue
        boxes = {side: label_box(x, y, width, height, marker, side) for side in SIDES}
        lost = {
            side: sum(box.overlap(other) for other in [*markers, *placed])
            + (box.area - box.overlap(area))
            for side, box in boxes.items()
        }
        best = min(SIDES, key=lambda side: lost[side])  # (min keeps the first of equals)
        sides.append(best)
        placed.append(boxes[best])
    return sides
