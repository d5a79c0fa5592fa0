"""A queue written down (core.store.job_record, and a Pool's `record_as`): every job and each
change of its state in the run database, on SQLite and PostgreSQL; the fair order rebuilt from
it; a server's pool killed mid-lesson and started again, losing no queued job and running none
twice; and the class's one name, however its database's URL is spelt.

The class's queue on Ray, killed and restarted by Ray, is tested with the other faults in
test_faults.py."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.common.limits import SERVER
from core.jobs.local import LocalProcesses
from core.jobs.ray_jobs import queue_name
from core.jobs.scheduler import RESTARTED, FairQueue, Job, Pool
from core.store.job_record import JobRecord, JobRow, class_id
from core.store.runs import RunStore
from tests.support.pool_checks import finish

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new run database on each back end."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return request.getfixturevalue("postgres_db")


def row(job_id: str, seq: int, owner: str) -> JobRow:
    return JobRow(job_id, seq, owner, {"steps": 3}, dataclasses.asdict(SERVER), float(seq))


def test_the_record_lets_a_job_start_once_and_end_once(location):
    record = JobRecord(location, "class", exclusive=True)
    other = JobRecord(location, "server@elsewhere")
    try:
        record.add([row("a", 1, "ann"), row("b", 2, "bob"), row("c", 3, "ann")])
        other.add([row("d", 1, "ann")])
        assert [job.id for job in record.take_open()] == ["a", "b", "c"]
        assert record.started("a", 4)
        assert not record.started("a", 4)  # a second taker is refused: it must not run it
        assert record.ended("a", "finished", "", 7)
        assert not record.ended("a", "failed", "ended again")  # the first end stands
        assert not record.started("a", 5)
        assert record.started("b", 5)
        record.requeued("b")  # its worker could not take it
        assert record.started("b", 6) and record.ended("b", "stopped", "stopped at step 2")
        [a, b] = record.get(["a", "b"])
        assert (a.status, a.reason, a.run_id, a.tag) == ("finished", "", 7, 4)
        assert (b.status, b.reason, b.tag) == ("stopped", "stopped at step 2", 6)
        assert a.ended >= a.started >= a.submitted
        assert [(job.id, job.status) for job in record.take_open()] == [("c", "queued")]
        fair = record.fair_state()  # the tag of the last started job; each owner's next tag
        assert (fair.virtual, fair.next_tags, fair.last_seq) == (6, {"ann": 5, "bob": 7}, 3)
        # A server's own queue takes up only the jobs of a process that has died: this one
        # lives (two servers over one store never take each other's jobs).
        assert other.take_open() == []
        assert other.fair_state().last_seq == 1
    finally:
        record.close()
        other.close()


def test_a_fair_queue_restored_from_the_started_tags_gives_every_queued_job_its_place():
    """What JobRecord.fair_state keeps (the last started tag, each owner's greatest) is all a
    FairQueue needs to put its queued jobs back where they were, whatever happened before."""
    rng = random.Random(22)
    for _ in range(200):
        queue, started, seq = FairQueue(), [], 0
        for _ in range(rng.randrange(5, 60)):
            action = rng.random()
            if action < 0.55:
                seq += 1
                queue.push(Job(f"job-{seq}", rng.choice("abcde"), None, None, seq))
            elif action < 0.85 and (job := queue.pop()) is not None:
                started.append(job)
            elif queued := queue.order():
                queue.remove(rng.choice(queued))
        tags: dict[str, int] = {}
        for job in started:
            tags[job.owner] = max(tags.get(job.owner, job.tag), job.tag)
        rebuilt = FairQueue()
        rebuilt.restore(max(tags.values(), default=0), {o: t + 1 for o, t in tags.items()})
        for job in sorted(queue.order(), key=lambda job: job.seq):
            rebuilt.push(job)
        assert rebuilt.order() == queue.order()


def test_one_class_one_name_however_its_database_is_spelt(tmp_path, postgres_db):
    (tmp_path / "elsewhere").mkdir()
    spellings = [str(tmp_path / "runs.db"), str(tmp_path / "elsewhere" / ".." / "runs.db")]
    url = sa.make_url(postgres_db)
    other_host = "localhost" if url.host != "localhost" else "127.0.0.1"
    urls = [postgres_db, url.set(host=other_host).render_as_string(hide_password=False)]
    for one, two in (spellings, urls):
        assert class_id(one) == class_id(two)
        assert queue_name(one) == queue_name(two)  # the class's one queue on a Ray cluster
    assert class_id(spellings[0]) != class_id(postgres_db)  # two databases: two classes
    with RunStore(spellings[0]) as store:  # the id is the database's, not a file beside it
        assert store.list() == []


# -- a server's pool killed mid-lesson, and started again ----------------------------------------
QUEUE = "server@test"
TINY = {"steps": 3, "eval_interval": 3, "snapshot_interval": 3}
LIMITS = dataclasses.replace(SERVER, max_steps=100_000)
CRASHING_SERVER = f"""
import dataclasses, json, time
from core.common.config import RunConfig
from core.common.limits import SERVER
from core.jobs.local import LocalProcesses
from core.jobs.scheduler import Pool

limits = dataclasses.replace(SERVER, max_steps=100_000)
pool = Pool(1, limits=limits, executor=LocalProcesses, record_as={QUEUE!r})
blocker = pool.submit(RunConfig(steps=100_000, eval_interval=50), "teacher")
for seed, owner in enumerate(["ann", "ann", "bob", "teacher"]):
    pool.submit(RunConfig(seed=seed, **{TINY!r}), owner)
while not blocker.events:  # it trains
    time.sleep(0.05)
print(json.dumps([blocker.id, [job.id for job, _ in pool.queue()]]), flush=True)
time.sleep(600)  # killed before
"""


def test_a_pool_killed_mid_lesson_takes_up_its_queue_again_and_runs_nothing_twice(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LORA_LAB_HOME", str(tmp_path))
    env = os.environ | {"LORA_LAB_HOME": str(tmp_path)}
    crashing = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CRASHING_SERVER)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        blocker_id, order = json.loads(crashing.stdout.readline())
    finally:
        crashing.send_signal(signal.SIGKILL)  # no shutdown, no atexit: a crash
        crashing.wait()
    pool = Pool(1, limits=LIMITS, executor=LocalProcesses, record_as=QUEUE)
    try:
        jobs = {job.id: job for job in pool.jobs()}
        blocker = jobs.pop(blocker_id)
        assert (blocker.status, blocker.reason) == ("failed", RESTARTED)  # not run again
        assert [job.id for job in pool.running() + [job for job, _ in pool.queue()]] == order
        finish(*jobs.values())
        assert [job.status for job in jobs.values()] == ["finished"] * len(order)
    finally:
        pool.shutdown()
    record = JobRecord(tmp_path / "runs.db", QUEUE)
    rows = {job.id: job for job in record.get([blocker_id, *order])}
    record.close()
    assert (rows[blocker_id].status, rows[blocker_id].reason) == ("failed", RESTARTED)
    assert [(rows[i].status, rows[i].run_id) for i in order] == [
        ("finished", jobs[i].run_id) for i in order
    ]
    with RunStore(tmp_path / "runs.db") as store:  # one run each, all finished
        runs = store.list()
        assert sorted(run.id for run in runs if run.status == "finished") == sorted(
            jobs[i].run_id for i in order
        )
        assert len(runs) == len(order) + 1  # and the teacher's endless one, not finished
