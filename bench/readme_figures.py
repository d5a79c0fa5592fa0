"""Every result figure in the README, from one script: the rank table and the re-measured findings.

    .venv/bin/python -m bench.readme_figures                   # print the Markdown
    .venv/bin/python -m bench.readme_figures --write README.md  # replace the README's block

The rank table: test accuracy against LoRA rank for every task shift, with head-only and full
fine-tuning beside it (the shipped `mlp`, the Train page's 200 steps, each method at its own
default learning rate), as the mean over seeds 0, 1, 2 with their range. Then each experiment of
core.analyses.experiments, with its outcome and verdict as computed there. The last line says on
what machine and torch build it was measured: on another CPU or torch build the last digit can
differ (sums run in another order); the outcomes, which use thresholds with a margin, do not.

--write replaces only what lies between the README's two marker lines (BEGIN, END below), and
only in the file named.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from core.analyses import experiments
from core.classroom.links import TRAIN_STEPS
from core.common.config import RunConfig
from core.training import data
from core.training.train import train

RANKS = (1, 2, 4, 8, 32)
SEEDS = (0, 1, 2)
BEGIN = "<!-- figures: written by bench/readme_figures.py, do not edit by hand -->"
END = "<!-- end of figures -->"


def columns() -> list[tuple[str, dict]]:
    """(column title, RunConfig fields) for each method compared."""
    lora = [(f"r={r}", {"method": "lora", "rank": r}) for r in RANKS]
    return [("head", {"method": "head"}), *lora, ("full", {"method": "full"})]


def percent(values: list[float]) -> str:
    """Mean and range in percent: '89.5 (88.7–90.6)'."""
    low, high = min(values), max(values)
    return f"{100 * statistics.mean(values):.1f} ({100 * low:.1f}–{100 * high:.1f})"


def rank_table(model: str) -> list[str]:
    titles = [title for title, _ in columns()]
    lines = [
        "| shift | before | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 2) + "|",
    ]
    for shift in data.SHIFTS:
        cells, before = [], []
        for _, fields in columns():
            after = []
            for seed in SEEDS:
                every = {"eval_interval": TRAIN_STEPS, "snapshot_interval": TRAIN_STEPS}
                config = RunConfig(
                    model=model, shift=shift, steps=TRAIN_STEPS, seed=seed, **fields, **every
                )
                result = train(config)
                before.append(result.test_acc_before)
                after.append(result.test_acc_after or 0.0)
            cells.append(percent(after))
        lines.append(f"| {shift} | {percent(before)} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def findings() -> list[str]:
    lines = []
    for number, (name, experiment) in enumerate(experiments.EXPERIMENTS.items(), start=1):
        finding = experiments.run(name)
        lines.append(
            f"{number}. **{name}** ({experiment.title}) — **{finding.outcome}**. "
            f"Claim: {finding.claim} Measured here: {finding.verdict}"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    day = datetime.date.today().isoformat()
    return f"{cpu}, torch {torch.__version__}, Python {platform.python_version()}, 1 thread, {day}"


def figures(model: str) -> str:
    started = time.process_time()
    table = rank_table(model)
    found = findings()
    cpu = time.process_time() - started
    return "\n".join(
        [
            BEGIN,
            f"Test accuracy (%) of the shipped `{model}` after {TRAIN_STEPS} steps (the Train "
            "page's run), LoRA on all its Linear layers (alpha 8, the head trained too), each "
            f"method at its own default learning rate; mean over seeds {SEEDS[0]}–{SEEDS[-1]} "
            'with the range in brackets ("before" is the base model on the shifted task).',
            "",
            *table,
            "",
            "The findings (`python -m core experiment NAME`; outcomes computed from the numbers "
            "against thresholds in `core/analyses/experiments.py`):",
            "",
            *found,
            "",
            f"Measured on {machine()}, in {cpu / 60:.0f} min of CPU. On another CPU or torch "
            "build the last digit can differ (sums run in another order); the outcomes, which "
            "come from thresholds with a margin, do not.",
            END,
        ]
    )


def write(path: Path, block: str) -> None:
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"{path} must hold the marker lines {BEGIN!r} and {END!r} once each")
    head, rest = text.split(BEGIN)
    path.write_text(head + block + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--write", type=Path, help="the README whose figures block to replace")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the numbers a pool worker gets
    block = figures(args.model)
    if args.write:
        write(args.write, block)
    else:
        print(block)


if __name__ == "__main__":
    main()
