"""One-click lessons: a page, the settings it opens with, and what to look for.

A lesson is just a link: its settings go into the URL of its page (through
:mod:`core.links`), so a teacher can also copy it. The words (title, what to do,
what to look for) live in the string catalogs under ``lessons.<id>.*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Lesson:
    id: str
    page: str  # "train" or "compare"
    # the page's settings that differ from its defaults
    settings: dict[str, Any] = field(default_factory=dict)

    def text_keys(self) -> dict[str, str]:
        """Catalog keys of the lesson's words."""
        return {part: f"lessons.{self.id}.{part}" for part in ("title", "goal", "look_for")}


LESSONS: tuple[Lesson, ...] = (
    # Permuting the input pixels moves every input direction: the first layer needs a
    # full-rank change, so accuracy keeps rising with rank. Permuting the labels only
    # needs the head to change: rank 1 is as good as rank 64.
    Lesson("rank", page="compare", settings={"shift": "permute", "ranks": [1, 2, 4, 8, 16, 64]}),
    # In the ViT, adapting only the attention's W_q and W_v (as the LoRA paper did)
    # against every Linear layer at the same rank.
    Lesson(
        "layers",
        page="train",
        settings={"model": "vit", "shift": "rotate", "targets": "*.attn.q,*.attn.v"},
    ),
    # Full fine-tuning and LoRA can reach similar accuracy, yet LoRA's W0+ΔW tends to grow
    # new top singular directions unlike any of W0's (intruder dimensions, arXiv 2410.21228).
    Lesson("intruders", page="train", settings={"method": "full", "shift": "label-permute"}),
)
