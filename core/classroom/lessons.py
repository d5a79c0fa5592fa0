"""One-click lessons: a page, the settings it opens with, and what to look for.

A lesson is just a link: its settings go into the URL of its page (through
:mod:`core.classroom.links`), so a teacher can also copy it. The words (title, what to do,
what to look for) live in the string catalogs under ``lessons.<id>.*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.classroom import links
from core.classroom.goals import GOAL
from core.common.config import MODEL_DEFAULTS


@dataclass(frozen=True)
class Lesson:
    id: str
    page: str  # "train" or "compare"
    # the page's settings that differ from its defaults
    settings: dict[str, Any] = field(default_factory=dict)
    # an exercise's goal (core.classroom.goals: "acc>=0.9"), shown on the page it opens and
    # ranked on the teacher's Class page; reachable at the lesson's preset (tests/test_claims.py)
    exercise: str = ""

    def query(self) -> dict[str, str]:
        """The query of the lesson's link: its settings, and its exercise's goal."""
        return links.encode(self.settings) | ({GOAL: self.exercise} if self.exercise else {})

    def text_keys(self) -> dict[str, str]:
        """Catalog keys of the lesson's words."""
        return {part: f"lessons.{self.id}.{part}" for part in ("title", "goal", "look_for")}


def model_settings(model: str) -> dict[str, Any]:
    """The Train page's settings of a model's own first run (config.MODEL_DEFAULTS, as written
    there): what a link must carry to open that run (gpt: prose, code, W_q and W_v, …)."""
    own = MODEL_DEFAULTS.get(model, {})
    return {"model": model} | {key: own[key] for key in links.TRAIN_KEYS if key in own}


LESSONS: tuple[Lesson, ...] = (
    # Permuting the input pixels moves every input direction: the first layer needs a large
    # change, so accuracy rises with rank up to about r = 8, then levels off below full
    # fine-tuning. Permuting the labels only needs the head to change: rank 1 is as good as
    # rank 64, and as the head alone. (tests/test_claims.py checks every lesson's words.)
    Lesson("rank", page="compare", settings={"shift": "permute", "ranks": [1, 2, 4, 8, 16, 64]}),
    # In the ViT, adapting only the attention's W_q and W_v (as the LoRA paper did) against
    # every Linear layer at the same rank: a third of the parameters, the same accuracy.
    Lesson(
        "layers",
        page="train",
        settings={"model": "vit", "shift": "rotate", "targets": "*.attn.q,*.attn.v"},
    ),
    # Each method at its own learning rate (core.common.config.DEFAULT_LR), on the Train page's
    # default task: full fine-tuning keeps W0's directions, LoRA grows new top singular
    # directions unlike any of W0's (intruder dimensions, arXiv 2410.21228), at similar
    # accuracy. At one shared high rate full fine-tuning grows them too, so no lr is pinned.
    Lesson("intruders", page="train", settings={"method": "full"}),
    # A secret update of rank r* = 4 in fc1, and an adapter on fc1 only (on every layer, fc2's
    # adapter would absorb part of it): rank 2 cannot reproduce the planted model, rank 4 can,
    # and its update lines up with ΔW* (Spectra page).
    # Its exercise: a target accuracy of 90 %, which rank 2 misses (75-83 %) and rank r* = 4
    # reaches (97 %).
    Lesson(
        "planted",
        page="train",
        settings={"shift": "planted-rank", "targets": "fc1", "rank": 2, "steps": 600},
        exercise="acc>=0.9",
    ),
    # The language model's own first run: LoRA on W_q and W_v of the GPT pretrained on prose,
    # trained on Python code. The sample it writes turns from prose to code while the bits per
    # character on code fall, and the prose's rise (what it forgot); rank 1 does about as well
    # (the LoRA paper's Table 6).
    Lesson("language-model", page="train", settings=model_settings("gpt")),
)
