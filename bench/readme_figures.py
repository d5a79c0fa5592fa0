"""Every result figure in the README, from one script: the rank table and the re-measured findings.

    .venv/bin/python -m bench.readme_figures                   # print the Markdown (mlp)
    .venv/bin/python -m bench.readme_figures --write README.md  # replace the README's mlp block
    .venv/bin/python -m bench.readme_figures --model gpt --write README.md   # the gpt block

The rank table: the model's headline score (test accuracy for `mlp`, held-out bits per character
for `gpt`: core.training.kinds) against LoRA rank for every task shift of its kind, with
head-only and full fine-tuning beside it (the model's Train page run: `mlp` 200 steps, `gpt`
its own first run, core.common.config.for_model; each method at its own default learning
rate), as the mean over seeds 0, 1, 2 with their range. Then each experiment of
core.analyses.experiments made on that model, with its outcome and verdict as computed there.
Equal runs train once (the table's and the experiments' alike). The last line says on what
machine and torch build it was measured: on another CPU or torch build the last digit can
differ (sums run in another order); the outcomes, which use thresholds with a margin, do not.

--write replaces only what lies between the model's two marker lines in the README (markers()),
and only in the file named.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from core.analyses import experiments
from core.classroom.links import TRAIN_STEPS
from core.common.config import RunConfig, for_model, kind_of_model, shifts_for
from core.training import data
from core.training.kinds import Metric
from core.training.train import RunResult, train

RANKS = {"mlp": (1, 2, 4, 8, 32), "gpt": (1, 4, 16)}  # gpt: fewer, a run costs 20× the mlp's
SEEDS = (0, 1, 2)


def markers(model: str) -> tuple[str, str]:
    """The README's lines around a model's block (mlp's predate the others)."""
    if model == "mlp":
        return "<!-- figures: written by bench/readme_figures.py, do not edit by hand -->", (
            "<!-- end of figures -->"
        )
    return (
        f"<!-- {model} figures: written by bench/readme_figures.py --model {model}, do not "
        "edit by hand -->",
        f"<!-- end of {model} figures -->",
    )


class Runs:
    """train(config), remembered: a config the table and an experiment share trains once."""

    def __init__(self) -> None:
        self._done: dict[str, RunResult] = {}

    def __call__(self, config: RunConfig) -> RunResult:
        key = str(sorted(config.to_dict().items()))
        if key not in self._done:
            self._done[key] = train(config)
        return self._done[key]


def columns(model: str) -> list[tuple[str, dict]]:
    """(column title, RunConfig fields) for each method compared."""
    lora = [(f"r={r}", {"method": "lora", "rank": r}) for r in RANKS[model]]
    return [("head", {"method": "head"}), *lora, ("full", {"method": "full"})]


def written(metric: Metric, values: list[float]) -> str:
    """Mean and range: in percent for a share, '89.5 (88.7–90.6)'; else '2.31 (2.29–2.35)'."""
    scale, spec = (100, ".1f") if metric.percent else (1, ".2f")
    low, high, middle = (scale * v for v in (min(values), max(values), statistics.mean(values)))
    return f"{middle:{spec}} ({low:{spec}}–{high:{spec}})"


def run_config(model: str, shift: str, seed: int, fields: dict) -> RunConfig:
    """The model's Train page run (its own first run where it has one) on one shift."""
    start = for_model(model)
    steps = start.steps or TRAIN_STEPS
    every = {"eval_interval": steps, "snapshot_interval": steps}
    return dataclasses.replace(start, shift=shift, steps=steps, seed=seed, **fields, **every)


def rank_table(model: str, runs: Runs) -> list[str]:
    metric = data.kind_of(for_model(model).dataset).metric
    titles = [title for title, _ in columns(model)]
    lines = [
        "| shift | before | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 2) + "|",
    ]
    for shift in shifts_for(kind_of_model(model)):
        cells, before = [], []
        for _, fields in columns(model):
            after = []
            for seed in SEEDS:
                result = runs(run_config(model, shift, seed, fields))
                before.append(getattr(result, f"test_{metric.field}_before"))
                after.append(getattr(result, f"test_{metric.field}_after") or 0.0)
            cells.append(written(metric, after))
        lines.append(f"| {shift} | {written(metric, before)} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def findings(model: str, runs: Runs) -> list[str]:
    lines = []
    chosen = {n: e for n, e in experiments.EXPERIMENTS.items() if e.setting.model == model}
    for number, (name, experiment) in enumerate(chosen.items(), start=1):
        finding = experiments.run(name, trainer=runs)
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


INTRO = {  # what the table shows, per model
    "mlp": "Test accuracy (%) of the shipped `mlp` after {steps} steps (the Train page's run), "
    "LoRA on all its Linear layers (alpha 8, the head trained too)",
    "gpt": "Held-out bits per character (lower is better) of the shipped `gpt` after {steps} "
    "steps of {batch_size} windows (its Train page run), LoRA on every block's W_q and W_v "
    "(alpha 8, the lm_head trained too)",
}


def figures(model: str) -> str:
    started = time.process_time()
    runs = Runs()
    found = findings(model, runs)  # first: their verdicts are what one waits for
    table = rank_table(model, runs)
    cpu = time.process_time() - started
    begin, end = markers(model)
    start = run_config(model, "none", 0, {})
    return "\n".join(
        [
            begin,
            INTRO[model].format(steps=start.steps, batch_size=start.batch_size)
            + ", each method at its own default learning "
            f"rate; mean over seeds {SEEDS[0]}–{SEEDS[-1]} with the range in brackets "
            '("before" is the base model on the shifted task).',
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
            end,
        ]
    )


def write(path: Path, model: str, block: str) -> None:
    text = path.read_text()
    begin, end = markers(model)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"{path} must hold the marker lines {begin!r} and {end!r} once each")
    head, rest = text.split(begin)
    path.write_text(head + block + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--write", type=Path, help="the README whose figures block to replace")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the numbers a pool worker gets
    block = figures(args.model)
    if args.write:
        write(args.write, args.model, block)
    else:
        print(block)


if __name__ == "__main__":
    main()
