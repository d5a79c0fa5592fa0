"""How long do the what-if views take? Seconds per point of each curve, per shipped model.

    python -m bench.whatif_speed [--models mlp cnn vit gpt] [--steps 30] [--threads 1]

Target: a rank-cut point (one evaluation of the test split with edited weights) well under a
second on the mlp, so the accuracy-against-k plot of a LoRA run appears at once. Each model
trains one short LoRA run on its default task first (config.for_model: gpt on prose → code,
judged in bits per character; not timed), then each view runs once.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from core.analyses import whatif
from core.common import config
from core.training.measure import TrainedRun
from core.training.train import train


def timed(function, *args, **kwargs) -> tuple[dict, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "vit", "gpt"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':<6} {'view':<16} {'points':>6} {'seconds':>8} {'s/point':>8}")
    for name in args.models:
        run = TrainedRun.of_result(train(replace(config.for_model(name), steps=args.steps)))
        curve, seconds = timed(whatif.truncation_curve, run)
        # the curve's points plus the untouched run and the base model
        rows = [("rank cut", len(curve.truncation) + 2, seconds)]
        intruders, seconds = timed(whatif.intruder_curve, run)
        rows.append(("intruders (λ)", len(intruders.points) + 1, seconds))
        layers, seconds = timed(whatif.layer_importance, run)
        rows.append(("drop one layer", len(layers.layers) + 2, seconds))
        for view, points, seconds in rows:
            print(f"{name:<6} {view:<16} {points:>6} {seconds:>8.2f} {seconds / points:>8.3f}")


if __name__ == "__main__":
    main()
