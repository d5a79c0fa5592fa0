"""Where a scatter plot writes each point's label, so that the labels of nearby points do not
overlap one another or cover a point.

Plotly writes every label on the side it is told, the same for all points: two runs that end
at about the same accuracy (r = 16 and r = 64 on the forgetting plot, r = 1 and r = 2) print
"r=16" over "r=64", and neither can be read. label_sides picks a side per point instead; the
figure gives its points in pixels, the label sizes it expects, and plotly's names of the sides.
"""

from __future__ import annotations

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


def label_sides(
    points: list[tuple[float, float]], widths: list[float], height: float, marker: float
) -> list[str]:
    """For each point (x, y in pixels) with a label `widths[i]` pixels wide (0: no label) and
    `height` high, the side of SIDES its label goes: the first side where the label covers no
    marker and no label placed before it, else the side where it covers the least area. Points
    are placed in the order given; a point without a label keeps the first side."""
    half = marker / 2
    markers = [Box(x - half, y - half, x + half, y + half) for x, y in points]
    placed: list[Box] = []
    sides = []
    for (x, y), width in zip(points, widths, strict=True):
        if width <= 0:
            sides.append(SIDES[0])
            continue
        boxes = {side: label_box(x, y, width, height, marker, side) for side in SIDES}
        covered = {
            side: sum(box.overlap(other) for other in [*markers, *placed])
            for side, box in boxes.items()
        }
        best = min(SIDES, key=lambda side: covered[side])  # (min keeps the first of equals)
        sides.append(best)
        placed.append(boxes[best])
    return sides
