"""Training jobs on a Ray cluster (core.jobs.ray_jobs): the same numbers as the local pool, live
events, Stop, a killed Ray worker, and a bad $LORA_LAB_RAY.

The cluster is a real one: `bash .ci/ray.sh start` starts two Ray nodes on this machine and
prints the head's address, which these tests read from $LORA_LAB_TEST_RAY (.ci/run does both).
Without it they are skipped on a developer's machine, and fail in CI ($CI=true), where a
missing cluster is a broken set-up, not a reason to test less.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from core.common.config import RunConfig, for_model
from core.common.limits import SERVER
from core.jobs import executors
from core.jobs.local import LocalProcesses
from core.jobs.ray_jobs import RayExecutor, ray_address
from core.jobs.scheduler import Job, Pool
from core.store.runs import RunStore
from tests.support.pool_checks import finish, numbers, samples, wait_for_steps

ROOT = Path(__file__).resolve().parents[2]
QUICK = {"steps": 12, "eval_interval": 4, "snapshot_interval": 4}
ENDLESS = {"steps": SERVER.max_steps, "eval_interval": 50}  # stopped or killed long before its end
RAY_WORKERS = 2  # the test cluster: two nodes of one CPU each, one job on each


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("home")
        patch.setenv("LORA_LAB_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def on_ray(ray_cluster, home) -> Pool:
    executor = functools.partial(RayExecutor, address=ray_cluster)
    pool = Pool(RAY_WORKERS, limits=SERVER, executor=executor)
    yield pool
    pool.shutdown()


def stream(job: Job) -> list[tuple]:
    """The job's events as the page sees them, less their timings."""
    return [(e.kind, e.step, e.data.get("train_loss")) for e in job.events_since(0)]


def read(pool: Pool, query: str, *args: object) -> list[tuple]:
    """The store's file as it is: opening a RunStore would repair it, and hide whether the
    executor did."""
    with contextlib.closing(sqlite3.connect(pool.store_path)) as db:
        return db.execute(query, args).fetchall()


# -- on the cluster ------------------------------------------------------------------------------
def test_ray_computes_the_numbers_the_local_pool_computes_and_streams_the_same_events(on_ray):
    configs = [
        RunConfig(shift="rotate", seed=1, **QUICK),
        RunConfig(shift="permute", method="full", seed=2, **QUICK),
    ]
    ray_jobs = on_ray.submit_all(configs)  # both at once, one on each node
    local = Pool(
        executors.cores(), store_path=on_ray.store_path, limits=SERVER, executor=LocalProcesses
    )
    try:
        assert local.threads == on_ray.threads == 1  # the same numbers need the same threads
        local_jobs = local.submit_all(configs)
        finish(*local_jobs, *ray_jobs)
    finally:
        local.shutdown()
    assert [job.status for job in ray_jobs + local_jobs] == ["finished"] * 4
    assert [numbers(on_ray, job) for job in ray_jobs] == [
        numbers(on_ray, job) for job in local_jobs
    ]
    assert numbers(on_ray, ray_jobs[0]) != numbers(on_ray, ray_jobs[1])
    # Every event reached the app, in order, and the end came after the last of them.
    assert [stream(job) for job in ray_jobs] == [stream(job) for job in local_jobs]
    assert stream(ray_jobs[0])[0][0] == "start" and stream(ray_jobs[0])[-1][0] == "done"


def test_a_gpt_job_on_ray_computes_what_it_computes_locally_and_streams_its_samples(on_ray):
    config = dataclasses.replace(for_model("gpt"), steps=4, eval_interval=2, snapshot_interval=2)
    ray_job = on_ray.submit(config)
    local = Pool(
        executors.cores(), store_path=on_ray.store_path, limits=SERVER, executor=LocalProcesses
    )
    try:
        local_job = local.submit(config)
        finish(local_job, ray_job)
    finally:
        local.shutdown()
    assert [job.status for job in (ray_job, local_job)] == ["finished"] * 2
    assert numbers(on_ray, ray_job) == numbers(on_ray, local_job)
    assert samples(ray_job) == samples(local_job) and len(samples(ray_job)) == 3  # steps 0, 2, 4
    assert stream(ray_job) == stream(local_job)


def test_stop_on_ray_saves_the_run_stopped(on_ray):
    job = on_ray.submit(RunConfig(**ENDLESS))
    wait_for_steps(job, 5)
    job.stop()
    finish(job)
    assert job.status == "stopped" and "stopped at step" in job.reason
    with RunStore(on_ray.store_path) as store:
        record = store.get(job.run_id)
    assert record.status == "stopped" and record.has_weights


def test_a_killed_ray_worker_fails_its_job_marks_its_run_and_the_queue_goes_on(on_ray):
    victim = on_ray.submit(RunConfig(**ENDLESS))
    wait_for_steps(victim, 60)  # its first progress is saved (eval_interval 50)
    [(run_id, pid)] = read(on_ray, "SELECT id, pid FROM runs WHERE status='running'")
    assert psutil.Process(pid).name().startswith("ray::")  # the Ray worker running the task
    os.kill(pid, signal.SIGKILL)
    finish(victim)
    assert victim.status == "failed" and "Ray worker died" in victim.reason
    [(status, reason)] = read(on_ray, "SELECT status, reason FROM runs WHERE id=?", run_id)
    saved = re.fullmatch(r"its process ended without finishing \(last saved step: (\d+)\)", reason)
    assert status == "unfinished" and saved and int(saved[1]) >= 50
    survivor = on_ray.submit(RunConfig(**QUICK))
    finish(survivor)
    assert survivor.status == "finished"


# -- which executor -------------------------------------------------------------------------------
def test_without_lora_lab_ray_the_pool_is_local_and_ray_is_never_imported():
    """(With it set, the app's test below finds the Ray executor chosen.)"""
    env = {name: value for name, value in os.environ.items() if name != "LORA_LAB_RAY"}
    code = (
        "import sys, core.jobs.pool as j;"
        " print(j.default_executor().__name__, 'ray' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["LocalProcesses", "False"]


# -- a bad setting ---------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing answers there


@pytest.mark.parametrize(
    "setting", ["", "a cluster", "127.0.0.1", "127.0.0.1:0", "http://head:6379", "head:99999"]
)
def test_lora_lab_ray_is_auto_or_an_address(setting):
    with pytest.raises(ValueError, match=r"^LORA_LAB_RAY must be auto, host:port .*\(got '"):
        ray_address(setting)
    assert ray_address(" auto ") is None  # ray.init(address=None): join or start one here
    for address in ("127.0.0.1:6379", "head-1.example:6379", "ray://10.0.0.5:10001", "[::1]:6379"):
        assert ray_address(address) == address


def test_an_unreachable_cluster_is_one_line_on_the_command_line(tmp_path):
    """The real command line, end to end: `sweep` runs its jobs on the pool's executor."""
    env = os.environ | {
        "LORA_LAB_RAY": f"127.0.0.1:{closed_port()}",
        "LORA_LAB_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "core", "sweep", "--ranks", "1", "--no-baselines", "--steps", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: LORA_LAB_RAY")
    assert "no Ray cluster answers there" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_lora_lab_ray_is_one_line_in_the_app(tmp_path):
    """The app shows the line instead of its pages (in a process of its own: core.jobs.pool reads
    $LORA_LAB_RAY when it is imported, and then chooses the Ray executor)."""
    script = textwrap.dedent(
        """
        import json
        from streamlit.testing.v1 import AppTest
        from core.jobs import pool as jobs
        at = AppTest.from_file("app.py", default_timeout=60).run()
        shown = {"errors": [e.value for e in at.error], "tracebacks": len(at.exception)}
        print(json.dumps(shown | {"executor": jobs.default_executor().__name__}))
        """
    )
    env = os.environ | {"LORA_LAB_RAY": "a cluster", "LORA_LAB_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.splitlines()[-1])
    assert shown["executor"] == "RayExecutor"
    assert shown["tracebacks"] == 0 and len(shown["errors"]) == 1
    assert shown["errors"][0].startswith(
        "This server cannot run training jobs: LORA_LAB_RAY must be auto, host:port"
    )
