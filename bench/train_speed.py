"""How fast the classroom run is, and how well the job pool uses the CPU.

    .venv/bin/python -m bench.train_speed [--jobs N]

1. The default classroom run (default model and dataset, LoRA r=4, one epoch), headless, with
   a pool worker's thread count: wall time (first run of the process, which loads the data and
   the model, and a second one) and training steps per second. Target: under 5 s.
2. N concurrent jobs through the pool (default: 2 per worker, 3 epochs each): CPU efficiency
   = sum of the jobs' solo times / (cores × wall time of all N together). Target: ≥ 85 %.

Prints figures; asserts nothing (the machine may be busy with other work).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from core.common.config import RunConfig
from core.jobs.executors import cores, default_workers, threads_per_job
from core.jobs.pool import default_executor
from core.jobs.scheduler import Pool
from core.training.train import train


def classroom_run() -> None:
    torch.set_num_threads(threads_per_job(default_workers()))
    for label in ("first run (loads data + model)", "second run"):
        started = time.perf_counter()
        result = train(RunConfig())
        wall = time.perf_counter() - started
        steps_per_s = result.history[-1]["steps_per_s"]
        print(
            f"classroom run, {label}: {wall:.2f} s wall, {result.steps_done} steps, "
            f"{steps_per_s:.0f} steps/s, test acc {result.test_acc_before:.3f} → "
            f"{result.test_acc_after:.3f}  (target < 5 s, {torch.get_num_threads()} thread(s))"
        )


def pool_efficiency(n_jobs: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        pool = Pool(store_path=Path(home) / "runs.db", executor=default_executor())
        try:
            configs = [RunConfig(seed=seed, epochs=epochs) for seed in range(n_jobs)]
            warm = [pool.submit(RunConfig(steps=2)) for _ in range(pool.workers)]
            for job in warm:
                job.wait()
            solo = []
            for config in configs:
                job = pool.submit(config)
                job.wait()
                solo.append(job.result["seconds"])
            started = time.perf_counter()
            together = [pool.submit(config) for config in configs]
            for job in together:
                job.wait()
            wall = time.perf_counter() - started
        finally:
            pool.shutdown()
    efficiency = sum(solo) / (cores() * wall)
    print(
        f"pool: {n_jobs} jobs on {pool.workers} workers × {pool.threads} thread(s), "
        f"{cores()} cores: solo times sum {sum(solo):.2f} s, all together {wall:.2f} s wall "
        f"→ CPU efficiency {efficiency:.0%}  (target ≥ 85 %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2 * default_workers(), help="concurrent jobs")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each pool job")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average before: {load:.1f} on {cores()} cores (other work skews the figures)")
    classroom_run()
    pool_efficiency(args.jobs, args.epochs)


if __name__ == "__main__":
    main()
