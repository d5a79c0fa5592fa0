"""The job pool: bounded, fair across owners, stoppable, and jobs that never disturb each other.

The real pool with real worker processes and tiny runs; the scheduling itself (fair order,
positions, wait estimate) is tested without processes in test_fair.py."""

import contextlib
import dataclasses
import os
import signal
import sqlite3
import time

import pytest
import torch

from core.classroom.live import LiveRun
from core.common.config import RunConfig, for_model
from core.common.limits import SERVER
from core.jobs import executors
from core.jobs.local import LocalProcesses
from core.jobs.scheduler import Job, Pool
from core.store.runs import RunStore
from core.training.train import train
from tests.support.pool_checks import curve, finish, numbers, samples, wait_for_steps

WORKERS = 2
QUICK = {"steps": 12, "eval_interval": 4, "snapshot_interval": 4}
ENDLESS = {"steps": SERVER.max_steps, "eval_interval": 50}  # stopped long before its end


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """One pool for the module (worker processes take seconds to start), in a scratch home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_LAB_HOME", str(tmp_path_factory.mktemp("home")))
        pool = Pool(workers=WORKERS, limits=SERVER, executor=LocalProcesses)
        yield pool
        pool.shutdown()


def read(pool: Pool, query: str, *args: object) -> list[tuple]:
    """Read the store's file directly: opening a RunStore would repair it (RunStore.recover)
    and so hide whether the pool did."""
    with contextlib.closing(sqlite3.connect(pool.store_path)) as db:
        return db.execute(query, args).fetchall()


def test_concurrent_jobs_compute_exactly_what_each_computes_alone(pool):
    a = RunConfig(shift="rotate", seed=1, **QUICK)
    b = RunConfig(shift="permute", method="full", seed=2, **QUICK)
    alone = []
    for config in (a, b):
        job = pool.submit(config)
        finish(job)
        alone.append(numbers(pool, job))
    together = [pool.submit(a), pool.submit(b)]
    finish(*together)
    assert all(job.status == "finished" for job in together)
    assert [numbers(pool, job) for job in together] == alone
    assert alone[0] != alone[1]
    # The same thread count in this process gives the same numbers too (the CLI relies on it).
    threads = torch.get_num_threads()
    torch.set_num_threads(pool.threads)
    try:
        here = train(a)
    finally:
        torch.set_num_threads(threads)
    assert curve(here.history) == alone[0][0]


def test_a_gpt_job_brings_its_samples_to_a_watching_page_as_it_stores_them(pool):
    config = dataclasses.replace(for_model("gpt"), steps=4, eval_interval=2, snapshot_interval=2)
    job = pool.submit(config)
    finish(job)
    assert job.status == "finished"
    with RunStore(pool.store_path) as store:
        record = store.get(job.run_id)
    stored = [(h["step"], h["sample"]) for h in record.history if h["sample"] is not None]
    assert samples(job) == stored and [step for step, _ in stored] == [0, 2, 4]
    frame = LiveRun().add(job.events_since(0))  # what the Train page draws from the events
    assert (frame.sample_step, frame.sample) == stored[-1]
    assert frame.curve("val_bpc")[1] == tuple(h["val_bpc"] for h in record.history if h["val_bpc"])
    assert record.test_bpc_after is not None and record.source_bpc_after is not None


def test_the_pool_runs_at_most_its_workers_and_one_owner_first_in_first_out(pool):
    submitted = [pool.submit(RunConfig(seed=i, **QUICK)) for i in range(5)]
    assert [job.queue_position for job in submitted] == [None, None, 1, 2, 3]
    most = 0
    while not all(job.done for job in submitted):
        running = pool.running()
        most = max(most, len(running))
        assert len(running) <= WORKERS
        time.sleep(0.005)
    assert most == WORKERS
    assert all(job.status == "finished" for job in submitted)
    starts = [job.started for job in submitted]
    assert starts[2:] == sorted(starts[2:]) and max(starts[:2]) <= starts[2]


def test_stop_a_running_job_and_a_queued_one(pool):
    first, second = pool.submit(RunConfig(**ENDLESS)), pool.submit(RunConfig(**ENDLESS))
    waiting = pool.submit(RunConfig(**QUICK))
    assert waiting.queue_position == 1
    waiting.stop()
    assert waiting.status == "stopped" and waiting.done and waiting.run_id is None
    wait_for_steps(first, 5)
    first.stop()
    second.stop()
    finish(first, second)
    assert first.status == "stopped" and "stopped at step" in first.reason
    with RunStore(pool.store_path) as store:
        record = store.get(first.run_id)
    assert record.status == "stopped" and record.has_weights
    assert [e.kind for e in first.events_since(0)][-1] == "done"


def test_bad_settings_fail_at_submit_and_model_errors_fail_the_job(pool):
    with pytest.raises(ValueError, match="lr"):
        pool.submit(RunConfig(lr=0))
    job = pool.submit(RunConfig(rank=300, **QUICK))
    finish(job)
    assert job.status == "failed" and "min(d, k)" in job.reason
    after = pool.submit(RunConfig(**QUICK))
    finish(after)
    assert after.status == "finished"


def test_each_owner_sees_their_own_jobs_and_runs(pool):
    mine, theirs = pool.submit(RunConfig(**QUICK), "alice"), pool.submit(RunConfig(**QUICK), "bob")
    finish(mine, theirs)
    assert mine in pool.jobs("alice") and theirs not in pool.jobs("alice")
    with RunStore(pool.store_path) as store:
        assert {r.id for r in store.list("alice")} >= {mine.run_id}
        assert theirs.run_id not in {r.id for r in store.list("alice")}


def test_a_killed_worker_fails_its_job_and_is_replaced(pool):
    victim = pool.submit(RunConfig(**ENDLESS))
    wait_for_steps(victim, 60)  # its first progress is saved
    pid = next(w.process.pid for w in pool.executor._slots if w.job == victim.id)
    [(run_id,)] = read(pool, "SELECT id FROM runs WHERE pid=?", pid)
    os.kill(pid, signal.SIGKILL)
    finish(victim)
    assert victim.status == "failed" and "died" in victim.reason
    # Marked at once, not left "running" until some process happens to open the store.
    assert read(pool, "SELECT status FROM runs WHERE id=?", run_id) == [("unfinished",)]
    survivor = pool.submit(RunConfig(**QUICK))
    finish(survivor)
    assert survivor.status == "finished"


def test_the_number_of_workers_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LORA_LAB_WORKERS", "3")
    assert executors.default_workers() == 3
    monkeypatch.setenv("LORA_LAB_WORKERS", "many")
    with pytest.raises(ValueError, match="LORA_LAB_WORKERS"):
        executors.default_workers()
    monkeypatch.delenv("LORA_LAB_WORKERS")
    assert executors.default_workers() == executors.cores()
    assert executors.threads_per_job(executors.cores()) == 1


# -- fair across owners, capped, bounded ----------------------------------------------------------
TINY = {"steps": 3, "eval_interval": 3, "snapshot_interval": 3}
CAP = 8


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """A pool with one worker, so the order jobs start in is the order they run in."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_LAB_HOME", str(tmp_path_factory.mktemp("solo")))
        pool = Pool(
            workers=1,
            limits=dataclasses.replace(SERVER, max_jobs_per_student=CAP),
            executor=LocalProcesses,
        )
        yield pool
        pool.shutdown()


def hold(pool: Pool) -> Job:
    """Occupy the only worker (owner "teacher") until the caller stops it."""
    blocker = pool.submit(RunConfig(**ENDLESS), "teacher")
    wait_for_steps(blocker, 1)
    return blocker


def test_a_sweep_of_seven_does_not_hold_five_classmates_behind_it(solo):
    blocker = hold(solo)
    sweep = [solo.submit(RunConfig(seed=i, **TINY), "A") for i in range(7)]
    singles = [solo.submit(RunConfig(**TINY), owner) for owner in "BCDEF"]
    positions = {job.id: job.queue_position for job in sweep + singles}
    estimates = {job.id: job.wait_estimate for job in sweep + singles}
    blocker.stop()
    finish(blocker, *sweep, *singles)
    started = sorted(sweep + singles, key=lambda job: job.started)
    assert [job.owner for job in started] == ["A", *"BCDEF", *"AAAAAA"]
    # Each position was the truth: the order the jobs then started in.
    assert [positions[job.id] for job in started] == list(range(1, 13))
    assert all(job.status == "finished" for job in started)
    # The wait estimate (from the blocker's pace) grows with the position.
    by_position = [estimates[job.id] for job in started]
    assert all(seconds is not None and seconds >= 0 for seconds in by_position)
    assert by_position == sorted(by_position) and by_position[-1] > by_position[0]


def test_one_owner_is_capped_and_a_sweep_is_queued_whole_or_not_at_all(solo):
    blocker = hold(solo)
    mine = solo.submit_all([RunConfig(seed=i, **TINY) for i in range(CAP)], "A")
    with pytest.raises(ValueError, match=f"limit of {CAP} .*LORA_LAB_MAX_JOBS_PER_STUDENT"):
        solo.submit(RunConfig(**TINY), "A")
    theirs = solo.submit_all([RunConfig(**TINY)] * (CAP - 2), "B")
    with pytest.raises(ValueError, match="LORA_LAB_MAX_JOBS_PER_STUDENT"):
        solo.submit_all([RunConfig(**TINY)] * 3, "B")  # 2 would fit: none is queued
    assert sum(not job.done for job in solo.jobs("B")) == CAP - 2
    mine[-1].stop()  # a place comes free
    mine.append(solo.submit(RunConfig(**TINY), "A"))
    for job in (blocker, *mine, *theirs):
        job.stop()
    finish(blocker, *mine, *theirs)


def test_limits_are_refused_at_submit_and_epochs_once_the_data_counts_them(solo):
    with pytest.raises(ValueError, match="steps 1000000000 is above this server's limit"):
        solo.submit(RunConfig(steps=1_000_000_000))
    with pytest.raises(ValueError, match="model 'resnet18' is not allowed on this server"):
        solo.submit(RunConfig(model="resnet18", steps=2))
    assert not solo.jobs("local")
    # 2000 epochs of 3500 images, one at a time: no more than 2000 steps by its settings, but
    # 7 million once the worker knows the data. The job fails, saying so; nothing is saved.
    job = solo.submit(RunConfig(epochs=2000, batch_size=1))
    finish(job)
    assert job.status == "failed" and job.run_id is None
    assert job.reason.startswith("epochs 2000 at batch_size 1 (7000000 steps) is above")


def test_shutting_down_leaves_no_job_running_or_queued(tmp_path, monkeypatch):
    """A job whose worker is still starting when the server stops, and one queued behind it:
    both end "stopped", and nothing stays "running" in memory."""
    monkeypatch.setenv("LORA_LAB_HOME", str(tmp_path))
    pool = Pool(workers=1, limits=SERVER, executor=LocalProcesses)
    running = pool.submit(RunConfig(**ENDLESS))
    queued = pool.submit(RunConfig(**TINY), "B")
    assert running.status == "running" and queued.queue_position == 1
    pool.shutdown(timeout=0.0)
    assert running.done and queued.done and not pool.running()
    assert (running.status, queued.status) == ("stopped", "stopped")
    assert queued.reason == "the server shut down before it started"
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(RunConfig(**TINY))


def test_shutting_down_stops_a_running_job_at_its_next_step(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_LAB_HOME", str(tmp_path))
    pool = Pool(workers=1, limits=SERVER, executor=LocalProcesses)
    job = pool.submit(RunConfig(**ENDLESS))
    wait_for_steps(job, 2)
    pool.shutdown()
    assert job.status == "stopped" and "stopped at step" in job.reason
    assert job.run_id is not None and not pool.running()
