"""What following the class's queue costs an app server: its CPU while nothing happens, and
while the queue holds `--queued` (200) jobs, with and without a page of its own watching.

    PGDIR=$(mktemp -d); export LORA_LAB_TEST_POSTGRES=$(.ci/postgres.sh start $PGDIR)
    eval "$(bash .ci/ray.sh start)"
    .venv/bin/python -m bench.idle [--idle-s 600] [--busy-s 60] [--queued 200]

Two app servers (tests/support/class_server.py: a LoRA Lab server's pool, its view of the class's
queue on Ray, over a PostgreSQL database of the bench's own): A submits, B only watches.

1. Idle: no job anywhere and no page open, both servers' CPU over `--idle-s` (the README's
   figure: 600). Then B with one student's page reading it every second (a page that watches).
2. Queued: A submits two endless runs of the teacher's, which take both workers of the cluster,
   then `--queued` runs of 20 students that wait behind them. B's CPU over `--busy-s` with no
   page, then with one student's page reading it every second; A's over the same time (it
   follows the jobs it submitted until they end).

CPU is the server process's own (user + system seconds over wall seconds, in % of one core);
Ray's processes are not the server's. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import psutil
import ray

from bench.faults import database
from core.jobs.ray_jobs import NAMESPACE, connect, queue_name
from tests.support.faults import Server

STUDENTS = 20
ENDLESS_STEPS = 1_000_000  # the teacher's runs: longer than the bench
PAGE_EVERY_S = 1.0  # a watching page reads the pool this often


def show(text: str) -> None:
    print(text, flush=True)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def cpu(servers: list[Server], seconds: float, watching: Server | None = None) -> list[float]:
    """Each server's CPU over `seconds`, in % of one core; `watching`'s page reads it
    meanwhile, every PAGE_EVERY_S."""
    processes = [psutil.Process(server.process.pid) for server in servers]
    before, began = [cpu_seconds(p) for p in processes], time.monotonic()
    while (left := began + seconds - time.monotonic()) > 0:
        if watching is not None:
            watching.ask("show", "student-00")
        time.sleep(min(PAGE_EVERY_S, left))
    wall = time.monotonic() - began
    return [100 * (cpu_seconds(p) - b) / wall for p, b in zip(processes, before, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=600)
    parser.add_argument("--busy-s", type=float, default=60)
    parser.add_argument("--queued", type=int, default=200)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="lora-idle-"))
    address = os.environ["LORA_LAB_TEST_RAY"]
    per_student = -(-args.queued // STUDENTS)
    with database(os.environ["LORA_LAB_TEST_POSTGRES"]) as url:
        env = os.environ | {
            "LORA_LAB_RAY": address,
            "LORA_LAB_DB": url,
            "LORA_LAB_HOME": str(logs),
            "LORA_LAB_MAX_JOBS_PER_STUDENT": str(per_student),
            "LORA_LAB_MAX_STEPS": str(ENDLESS_STEPS),
        }
        a, b = Server(env, logs / "a.log"), Server(env, logs / "b.log")
        a.ready(), b.ready()
        try:
            time.sleep(3)  # the pages that opened them have gone (class_queue.WATCH_S)
            idle = cpu([a, b], args.idle_s)
            show(f"idle, no page, {args.idle_s:g} s: A {idle[0]:.3f} %, B {idle[1]:.3f} %")
            [watched] = cpu([b], args.busy_s, watching=b)
            show(f"idle, one page watching B, {args.busy_s:g} s: B {watched:.3f} %")
            for seed in (1, 2):
                a.ask("submit", "teacher", seed, ENDLESS_STEPS)
            submitted = 0
            for n in range(args.queued):
                reply = a.ask("submit", f"student-{n % STUDENTS:02d}", 100 + n, 3)
                submitted += "id" in reply
            show(f"{submitted} runs queued behind the teacher's two")
            time.sleep(3)
            quiet = cpu([a, b], args.busy_s)
            show(
                f"{submitted} queued, no page on B, {args.busy_s:g} s: "
                f"A {quiet[0]:.3f} %, B {quiet[1]:.3f} %"
            )
            busy = cpu([a, b], args.busy_s, watching=b)
            show(
                f"{submitted} queued, one page watching B, {args.busy_s:g} s: "
                f"A {busy[0]:.3f} %, B {busy[1]:.3f} %"
            )
        finally:
            a.close()
            b.close()
            connect(address)
            with contextlib.suppress(ValueError):  # the queue, and with it its jobs
                ray.kill(ray.get_actor(queue_name(url), namespace=NAMESPACE))
    show(f"server logs: {logs}")


if __name__ == "__main__":
    main()
