"""How fast is our LoRA? Training step time against full fine-tuning and HF PEFT, and the cost
of inference after merging, all measured in one run on one model and one batch.

    python -m bench.lora_step [--model vit] [--rank 8] [--batch 256] [--rounds 9] [--threads 1]
    python -m bench.lora_step --model gpt       the language model's run: q and v, batch 8

The batch is the model's own task (config.for_model: digits for the image models, windows of
64 characters of Python code for gpt), its targets and batch size the model's defaults unless
given. Targets: our LoRA step ≤ 1.00× PEFT's step; merged forward ≤ 1.02× the base model's
forward. Each figure is the median over rounds that interleave the contenders (in rotating
order), so a busy machine slows them all alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from core.common.config import MODEL_DEFAULTS, for_model
from core.lowrank import lora, methods
from core.lowrank.targets import head_name, resolve_targets
from core.training import zoo
from core.training.train import load_task, task_loss

IMAGE_BATCH = 256  # an image model's batch: the size the figures in the README were measured at


def step_function(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One AdamW training step over the parameters that require grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        task_loss(model(x), y, None).backward()
        optimizer.step()

    return step


def forward_function(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return forward


def median_times(contenders: dict[str, Callable[[], None]], rounds: int, reps: int) -> dict:
    """Median seconds per call of each contender, interleaved round by round."""
    for fn in contenders.values():  # warm up: allocator, optimizer state, kernels
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders.items())
    for round_ in range(rounds):
        # Rotate who goes first: the first call of a round runs on a colder cache.
        shift = round_ % len(order)
        for name, fn in order[shift:] + order[:shift]:
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            samples[name].append((time.perf_counter() - start) / reps)
    return {name: statistics.median(times) for name, times in samples.items()}


def peft_model(base: nn.Module, targets: list[str], rank: int, alpha: float) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    head = head_name(base)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, modules_to_save=[head])
    return get_peft_model(copy.deepcopy(base), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit", choices=zoo.names())
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, help="default: 256 images, or the model's own")
    parser.add_argument("--targets", help="default: the model's own (vit: all-linear)")
    parser.add_argument("--forward-batch", type=int, help="examples per forward (4 batches)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a pool worker's share)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = for_model(args.model)
    batch = args.batch or (config.batch_size if args.model in MODEL_DEFAULTS else IMAGE_BATCH)
    torch.manual_seed(0)
    base = zoo.load(args.model)
    task = load_task(config)
    x, y = task.x_train[:batch], task.y_train[:batch]
    targets = resolve_targets(base, args.targets or config.targets)
    alpha = 2.0 * args.rank

    full = copy.deepcopy(base)
    methods.trainable_parameters(full, "full")
    ours = lora.inject(base, targets, rank=args.rank, alpha=alpha, seed=0)
    methods.trainable_parameters(ours, "lora")
    theirs = peft_model(base, targets, args.rank, alpha)

    print(
        f"model {args.model} on {config.dataset}/{config.shift}, batch {batch} × "
        f"{tuple(x.shape[1:])}, LoRA r={args.rank} on {len(targets)} layers, "
        f"{args.threads} thread(s)"
    )
    steps = median_times(
        {
            "full fine-tuning": step_function(full, x, y),
            "LoRA (ours)": step_function(ours, x, y),
            "LoRA (HF PEFT)": step_function(theirs, x, y),
        },
        args.rounds,
        reps=5,
    )
    for name, seconds in steps.items():
        print(f"  train step  {name:18s} {seconds * 1e3:8.2f} ms")
    ratio = steps["LoRA (ours)"] / steps["LoRA (HF PEFT)"]
    print(f"  ours / PEFT step time           {ratio:8.3f}×   (target ≤ 1.00)")
    versus_full = steps["LoRA (ours)"] / steps["full fine-tuning"]
    print(f"  ours / full fine-tuning         {versus_full:8.3f}×")

    big = task.x_train[: args.forward_batch or 4 * batch]
    forwards = median_times(
        {
            "base": forward_function(base, big),
            "merged": forward_function(lora.merge(ours), big),
            "unmerged LoRA": forward_function(ours, big),
        },
        args.rounds,
        reps=5,
    )
    for name, seconds in forwards.items():
        print(f"  forward     {name:18s} {seconds * 1e3:8.2f} ms")
    print(
        f"  merged / base forward time      {forwards['merged'] / forwards['base']:8.3f}×   "
        f"(target ≤ 1.02; {len(big)} examples)"
    )


if __name__ == "__main__":
    main()
