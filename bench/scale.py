"""What running jobs on Ray costs next to the local pool, measured in one run on this machine.

    .venv/bin/python -m bench.scale [--ray auto|HOST:PORT] [--device cpu|cuda|auto]
                                    [--tiny 20] [--runs 20]

1. Start-up: the local pool, from nothing to a finished job on each worker; Ray, importing it,
   joining (or starting) the instance, then the same for its executor; the memory of the Ray
   processes on this machine, idle and at the end, against the local pool's worker processes.
2. Per-job overhead: `--tiny` one-step runs, one at a time, the back ends taking turns, against
   the same run trained in this process. Target: Ray's extra time per job under 0.3 s.
3. Throughput: `--runs` default runs submitted at once to each back end, one per student (a
   class clicking Train together), one job per CPU with one thread each (so both back ends
   compute the same numbers): runs per minute, measured local, Ray, Ray, local so that a drift
   in the machine's load falls on both.

`--ray` defaults to $LORA_LAB_RAY, else "auto" (join the local instance `ray start` began, or
start one in this process). `--device cuda` measures the same on a machine with a GPU: Ray gives
each run one GPU, the local workers share the GPU. Prints figures; asserts nothing (the machine
may be busy with other work). Needs requirements-distributed.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from core.common.config import DEVICES, RunConfig
from core.common.limits import SERVER
from core.jobs.executors import ExecutorFactory
from core.jobs.local import LocalProcesses
from core.jobs.scheduler import Job, Pool
from core.training.train import train


def show(text: str) -> None:
    print(text, flush=True)


def mib(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # it ended meanwhile
            total += process.memory_info().rss
    return total / 2**20


def ray_processes(ray_dir: str) -> list[psutil.Process]:
    """Every Ray process on this machine: its servers (run from Ray's package) and its workers
    (titled ray::…)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if line.startswith("ray::") or ray_dir in line:
            found.append(process)
    return found


def pool_workers() -> list[psutil.Process]:
    """The local pool's worker processes (multiprocessing's spawn children of this process)."""
    children = psutil.Process().children(recursive=True)
    return [p for p in children if "spawn_main" in " ".join(p.cmdline())]


def timed(jobs_of: Callable[[], list[Job]]) -> float:
    """Seconds until the jobs `jobs_of` submits have all finished."""
    started = time.perf_counter()
    for job in jobs_of():
        assert job.wait(3600) and job.status == "finished", (job.status, job.reason)
    return time.perf_counter() - started


def warmed(pool: Pool, tiny: RunConfig) -> float:
    """Seconds until every worker of `pool` has run a job (started, imported torch, loaded the
    data and the model): one tiny job per worker, all at once."""
    return timed(lambda: [pool.submit(tiny, owner=f"warm-{n}") for n in range(pool.workers)])


def tiny_in_process(tiny: RunConfig, count: int) -> float:
    """Seconds the tiny run takes in this process, with one thread (mean, after a warm run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            train(tiny)
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return statistics.fmean(times)


def tiny_jobs(pools: dict[str, Pool], tiny: RunConfig, count: int) -> dict[str, float]:
    """Median seconds per one-step job on each pool, one job at a time, the pools taking turns
    (so that a change in the machine's load falls on both)."""
    times: dict[str, list[float]] = {label: [] for label in pools}
    for _ in range(count):
        for label, pool in pools.items():
            times[label].append(timed(lambda pool=pool: [pool.submit(tiny)]))
    return {label: statistics.median(seconds) for label, seconds in times.items()}


def class_of(pool: Pool, runs: int, device: str) -> float:
    """Seconds for `runs` default runs submitted at once, one per student."""
    configs = [RunConfig(seed=seed, device=device) for seed in range(runs)]
    return timed(lambda: [pool.submit(c, owner=f"student-{n}") for n, c in enumerate(configs)])


def start_local(store: Path, tiny: RunConfig) -> Pool:
    started = time.perf_counter()
    pool = Pool(store_path=store, limits=SERVER, executor=LocalProcesses)
    warmed(pool, tiny)
    show(
        f"local pool: {time.perf_counter() - started:.1f} s from nothing to a finished job on "
        f"each of its {pool.workers} workers (they start, import torch, load data and model)"
    )
    return pool


def start_ray(address: str, store: Path, tiny: RunConfig) -> tuple[Pool, str]:
    """The pool on Ray, and the folder of Ray's package (its processes run from there)."""
    started = time.perf_counter()
    ray_jobs = importlib.import_module("core.jobs.ray_jobs")  # Ray is imported only here
    imported = time.perf_counter()
    ray_jobs.connect(address)
    joined = time.perf_counter()
    ray_dir = str(Path(ray_jobs.ray.__file__).parent)
    show(
        f"Ray ({address}): import {imported - started:.1f} s, join or start "
        f"{joined - imported:.1f} s; its processes here, idle: {len(ray_processes(ray_dir))}, "
        f"{mib(ray_processes(ray_dir)):.0f} MiB"
    )
    executor: ExecutorFactory = functools.partial(ray_jobs.RayExecutor, address=address)
    pool = Pool(store_path=store, limits=SERVER, executor=executor)
    warmed(pool, tiny)
    show(
        f"Ray: {time.perf_counter() - joined:.1f} s from joining to a finished job on each of "
        f"its {pool.workers} workers (they start, import torch, load data and model)"
    )
    return pool, ray_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ray", default=os.environ.get("LORA_LAB_RAY") or "auto")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--tiny", type=int, default=20, help="one-step jobs per back end")
    parser.add_argument("--runs", type=int, default=20, help="default runs per back end")
    args = parser.parse_args()
    tiny = RunConfig(steps=1, device=args.device)
    load = os.getloadavg()[0]
    show(f"{psutil.cpu_count()} cores, load average {load:.1f} (other work skews the figures)")
    baseline = tiny_in_process(tiny, args.tiny)
    show(f"in this process: {baseline:.3f} s per one-step run (train and evaluate, no store)")
    with tempfile.TemporaryDirectory() as home:
        store = Path(home) / "runs.db"
        local = start_local(store, tiny)
        on_ray, ray_dir = start_ray(args.ray, store, tiny)
        pools = {"local pool": local, "Ray": on_ray}
        try:
            per_job = tiny_jobs(pools, tiny, args.tiny)
            for label, seconds in per_job.items():
                show(
                    f"{label}: {seconds:.3f} s per one-step job (median of {args.tiny}, one at "
                    f"a time), {seconds - baseline:+.3f} s on the run in this process"
                )
            walls: dict[str, list[float]] = {label: [] for label in pools}
            for label in ("local pool", "Ray", "Ray", "local pool"):  # ABBA: load drifts
                walls[label].append(class_of(pools[label], args.runs, args.device))
                show(f"{label}: {args.runs} default runs at once in {walls[label][-1]:.1f} s")
            rate = {label: 2 * args.runs / sum(wall) * 60 for label, wall in walls.items()}
            for label, pool in pools.items():
                show(
                    f"{label}: {rate[label]:.1f} runs/minute ({pool.workers} at a time, "
                    f"{pool.threads} thread(s) each)"
                )
            show(
                f"memory after: local workers {mib(pool_workers()):.0f} MiB "
                f"({len(pool_workers())} processes), Ray {mib(ray_processes(ray_dir)):.0f} MiB "
                f"({len(ray_processes(ray_dir))} processes: its own, the mailbox, the workers)"
            )
        finally:
            for pool in pools.values():
                pool.shutdown()
    show(
        f"per-job overhead of Ray against the local pool: "
        f"{per_job['Ray'] - per_job['local pool']:+.3f} s (target < 0.3 s); throughput "
        f"{rate['Ray']:.1f} against {rate['local pool']:.1f} runs/minute"
    )


if __name__ == "__main__":
    main()
