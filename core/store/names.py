"""Names of runs and students: the name a run gets by default, and the one check every name a
person typed passes (from a page, the command line or a store's caller) before it is kept."""

from __future__ import annotations

from core.common import text
from core.common.config import RunConfig, SettingError

STUDENT_NAME_CHARS = 40  # a name as a teacher reads it in a list of runs
CLASS_NAME_CHARS = 60  # a class archived under a name ("Monday 8 Dec, group B")
# A run's name: room for the longest name default_name gives, so that any run can be renamed to
# the name it has (a page's name box holds at most this many characters).
RUN_NAME_CHARS = 100
TARGETS_CHARS = 20  # the target layers in a default name: a run of many layers still fits
STANDARD = RunConfig()  # a default name says where a LoRA run's init and scaling differ from it


def default_name(config: RunConfig) -> str:
    """A readable name that tells apart the runs a class compares, such as
    "lora r=4 α=8 · mlp · mnist-5k/rotate" or "dora r=4 α=16 · vit[*.attn.q,*.attn.v] · …":
    a LoRA run says its rank and alpha, DoRA, an init or scaling other than the standard one,
    and its target layers unless they are all the linear ones; any method says "head-frozen" where
    the head kept its pretrained weights. At most RUN_NAME_CHARS."""
    model, method = config.model, config.method
    if config.method == "lora":
        method = f"{'dora' if config.dora else 'lora'} r={config.rank} α={config.alpha:g}"
        method += "".join(
            f" {getattr(config, setting)}"
            for setting in ("init", "scaling")
            if getattr(config, setting) != getattr(STANDARD, setting)
        )
        if config.targets != "all-linear":
            model += f"[{text.one_line(targets_text(config.targets), TARGETS_CHARS)}]"
    if not config.train_head:
        method += " head-frozen"
    task = config.dataset if config.shift == "none" else f"{config.dataset}/{config.shift}"
    return text.one_line(f"{method} · {model} · {task}", RUN_NAME_CHARS)


def targets_text(targets: list[str] | str) -> str:
    """A run's target layers as one text: "fc1,fc2" (a string of them is already one)."""
    return targets if isinstance(targets, str) else ",".join(targets)


def checked_name(name: str, most: int) -> str:
    """A name someone typed (a student's, a run's), as it is kept: its whitespace (tabs, line
    breaks, wide spaces) made single spaces, none at its ends. SettingError if it then holds a
    character that is not printable (a terminal's control codes, a bidirectional override: a
    name is shown on a teacher's screen and terminal) or more than `most` characters: nothing
    is kept of a refused name. One check for every name, from a page, the command line or a
    store's caller."""
    kept = " ".join(name.split())
    if hidden := next((c for c in kept if not c.isprintable()), None):
        code = f"U+{ord(hidden):04X}"
        raise SettingError(
            f"a name cannot hold control characters ({code}): type it again as plain text",
            "errors.name_control",
            {"code": code},
        )
    if len(kept) > most:
        raise SettingError(
            f"a name has at most {most} characters, this one has {len(kept)}: shorten it",
            "errors.name_too_long",
            {"most": most, "length": len(kept)},
        )
    return kept
