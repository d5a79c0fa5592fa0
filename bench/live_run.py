"""A model's default run as the app runs it: submitted to the server's pool (worker processes,
one torch thread each on this 2-core machine), watched event by event as the Train page is.

    python -m bench.live_run [--model gpt] [--runs 2] [--steps N]

The pool's workers are started and warmed first (a one-step run of the app's default model on
each, as a server's are by the time a student clicks). For each click (the first one loads the
model and its text into a worker, later ones find them there) it prints, from the submit: when
the first point of the curve (step 0, the base model measured) reached the page; the longest
wait for a fresh sample while it trains (between two samples, from the first to the last); when
the finished result came. Targets (issue 20, the default gpt run): first point ≤ 1.5 s, a fresh
sample at least every 2 s, finished ≤ 15 s. Prints figures and each verdict computed from them;
asserts nothing (the machine may be busy with other work: `--steps` shortens the run to check
the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from core.common.config import RunConfig, for_model
from core.jobs.executors import cores
from core.jobs.local import LocalProcesses
from core.jobs.scheduler import Job, Pool

FIRST_POINT_S = 1.5
SAMPLE_EVERY_S = 2.0
FINISHED_S = 15.0
POLL_S = 0.01  # how often the watcher looks for new events (a page looks less often)


@dataclasses.dataclass(frozen=True)
class Watched:
    """When each thing reached the watcher, in seconds after the submit."""

    first_point: float
    samples: list[float]  # each step event that carried a sample
    finished: float
    status: str
    steps: int

    @property
    def longest_sample_wait(self) -> float | None:
        gaps = [b - a for a, b in zip(self.samples, self.samples[1:], strict=False)]
        return max(gaps) if gaps else None


def watch(job: Job, submitted: float) -> Watched:
    """Poll the job's events as a page does, noting when each arrives."""
    seen, first_point, samples = 0, None, []
    while True:
        done = job.done  # read before the events: every event of a done job is already there
        events = job.events_since(seen)
        now = time.perf_counter() - submitted
        for event in events:
            if event.kind == "step" and first_point is None:
                first_point = now
            if event.kind == "step" and event.data.get("sample") is not None:
                samples.append(now)
        seen += len(events)
        if done:
            return Watched(first_point, samples, now, job.status, job.steps_done)
        time.sleep(POLL_S)


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"{'meets' if value <= target else 'MISSES'} ≤ {target:g} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gpt", help="a zoo model; its own default run")
    parser.add_argument("--runs", type=int, default=2, help="clicks, one after another")
    parser.add_argument("--steps", type=int, help="shorter runs, to check the script")
    args = parser.parse_args()
    config = for_model(args.model)
    if args.steps:
        config = dataclasses.replace(config, steps=args.steps)
    load = os.getloadavg()[0]
    print(f"load average before: {load:.1f} on {cores()} cores (other work skews the figures)")
    with tempfile.TemporaryDirectory() as home:
        pool = Pool(store_path=Path(home) / "runs.db", executor=LocalProcesses)
        try:
            print(
                f"{config.model} on {config.dataset}/{config.shift}, {config.steps} steps at "
                f"batch {config.batch_size}, eval every {config.eval_interval}: "
                f"{pool.workers} workers × {pool.threads} thread(s)"
            )
            warm = [pool.submit(RunConfig(steps=1)) for _ in range(pool.workers)]
            for job in warm:
                job.wait()
            for click in range(args.runs):
                submitted = time.perf_counter()
                seen = watch(pool.submit(config), submitted)
                wait = seen.longest_sample_wait
                label = f"click {click + 1}" + (f" (loads {config.model})" if click == 0 else "")
                print(
                    f"  {label}: {seen.status} after {seen.steps} steps, "
                    f"{len(seen.samples)} samples\n"
                    f"    first point {seen.first_point:.2f} s "
                    f"({verdict(seen.first_point, FIRST_POINT_S)}); "
                    f"longest wait for a sample {_seconds(wait)} "
                    f"({verdict(wait, SAMPLE_EVERY_S)}); "
                    f"finished {seen.finished:.2f} s ({verdict(seen.finished, FINISHED_S)})"
                )
        finally:
            pool.shutdown()


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    main()
