"""Does rank matter? Test accuracy against LoRA rank for every task shift, with head-only and
full fine-tuning beside it: the table in the README.

    .venv/bin/python bench/rank_table.py [--model mlp] [--seeds 0,1,2] [--epochs 3] [--lr 3e-3]

Each cell is the mean test accuracy (%) over the seeds; the seed also picks the shift's
permutation or planted update. The shifts should need different ranks: flat for
label-permute (only the head must change), rising with rank for permute and rotate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import data
from core.config import RunConfig
from core.train import train

RANKS = (1, 2, 4, 8, 32)


def columns() -> list[tuple[str, dict]]:
    """(column title, RunConfig fields) for each method compared."""
    lora = [(f"r={r}", {"method": "lora", "rank": r}) for r in RANKS]
    return [("head", {"method": "head"}), *lora, ("full", {"method": "full"})]


def accuracy(shift: str, fields: dict, args: argparse.Namespace) -> tuple[float, float]:
    """Mean test accuracy before and after, over the seeds."""
    before, after = [], []
    for seed in args.seeds:
        config = RunConfig(
            model=args.model, shift=shift, epochs=args.epochs, lr=args.lr, seed=seed, **fields
        )
        result = train(config)
        before.append(result.test_acc_before)
        after.append(result.test_acc_after)
    return statistics.mean(before), statistics.mean(after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the numbers a pool worker gets, on any machine

    started = time.perf_counter()
    titles = [title for title, _ in columns()]
    print(
        f"model {args.model}, {args.epochs} epochs, lr {args.lr}, seeds {args.seeds}: "
        "test accuracy (%), mean over seeds"
    )
    print("| shift | before | " + " | ".join(titles) + " |")
    print("|---" * (len(titles) + 2) + "|")
    for shift in data.SHIFTS:
        cells, before = [], 0.0
        for _, fields in columns():
            before, after = accuracy(shift, fields, args)
            cells.append(f"{100 * after:.1f}")
        print(f"| {shift} | {100 * before:.1f} | " + " | ".join(cells) + " |", flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
