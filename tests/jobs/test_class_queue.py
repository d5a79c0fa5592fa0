"""One queue for a class (core.jobs.class_queue: ClassQueue, SharedPool): app servers that share
a Ray cluster share their queue, so a student's jobs, their places in the queue, the caps and Stop
are the same whichever server answers.

First the servers' side alone, in this process: two SharedPools over one ClassQueue whose
answers are copied, as if they had crossed to another process (no Ray needed). Then the real
thing: this process and a second one, each an app server's pool, over the test Ray cluster
(.ci/ray.sh, LORA_LAB_TEST_RAY) and a PostgreSQL database (LORA_LAB_TEST_POSTGRES), where the
queue is a detached Ray actor; and in tests/browser/test_browser.py, two Streamlit servers.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from core.common.config import RunConfig
from core.common.limits import SERVER
from core.jobs.class_queue import FOLLOW_S, QUEUE_LOST, WATCH_S, ClassQueue, SharedPool
from core.jobs.local import LocalProcesses
from core.jobs.ray_jobs import ClassQueueHandle
from core.jobs.scheduler import Job, Pool
from core.store.runs import RunStore
from tests.support.pool_checks import finish, wait_for_steps

ROOT = Path(__file__).resolve().parents[2]
TINY = {"steps": 3, "eval_interval": 3, "snapshot_interval": 3}
CAP = 3
LIMITS = dataclasses.replace(SERVER, max_jobs_per_student=CAP, max_steps=100_000)
ENDLESS = {"steps": LIMITS.max_steps, "eval_interval": 50}  # stopped long before its end


def view(pool: SharedPool | Pool) -> dict[str, tuple]:
    """Each job the pool knows: its owner, status and place in the queue."""
    return {job.id: (job.owner, job.status, job.queue_position) for job in pool.jobs()}


def twin(pool: SharedPool, job: Job) -> Job:
    """The pool's copy of a job another server's pool queued."""
    return next(other for other in pool.jobs() if other.id == job.id)


def caught_up(*pools: SharedPool) -> None:
    """Long enough for every server to have asked its queue again."""
    time.sleep(3 * FOLLOW_S)
    for pool in pools:
        pool._catch_up()


# -- the servers' side, in this process ------------------------------------------------------------
class InProcess:
    """The line to a class's queue in this process, as core.jobs.ray_jobs.ClassQueueHandle is the
    line to its actor: built with the same arguments, the first one starts the queue and later
    ones find it; what crosses is copied, so no server shares an object with the queue."""

    def __init__(self, queues: dict, body: type, workers: int | None, store: str, limits) -> None:
        if store not in queues:
            queues[store] = body(workers, store, limits, LocalProcesses)
        self.queues, self.store = queues, store

    def call(self, method: str, *args: Any) -> Any:
        queue = self.queues[self.store]
        return copy.deepcopy(getattr(queue, method)(*copy.deepcopy(args)))

    def end(self) -> None:
        del self.queues[self.store]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two app servers' pools over one class's queue (one worker process), and the queues."""
    queues: dict[str, ClassQueue] = {}
    home = tmp_path_factory.mktemp("class")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_LAB_HOME", str(home))
        line = functools.partial(InProcess, queues)
        first = SharedPool(1, limits=LIMITS, queue=line)
        second = SharedPool(1, limits=LIMITS, queue=line)
        yield first, second, queues
        second.shutdown()
        first.close_queue()


def test_two_servers_share_one_fair_queue_its_caps_and_stop(servers):
    one, two, _ = servers
    blocker = one.submit(RunConfig(**ENDLESS), "teacher")
    wait_for_steps(blocker, 1)
    ann = one.submit_all([RunConfig(seed=i, **TINY) for i in range(2)], "ann")
    [bob] = two.submit_all([RunConfig(**TINY)], "bob")
    ann.append(two.submit(RunConfig(**TINY), "ann"))  # her third, through the other server
    with pytest.raises(ValueError, match=f"{CAP + 1} runs .* limit of {CAP} .*JOBS_PER_STUDENT"):
        one.submit(RunConfig(**TINY), "ann")  # counted across both servers
    caught_up(one, two)
    # One queue, fair across owners (everyone's first run before anyone's second), and the
    # same job objects' places on either server, whichever server queued them.
    assert view(one) == view(two)
    assert [(job.owner, job.queue_position) for job in (ann[0], bob, ann[1], ann[2])] == [
        ("ann", 1), ("bob", 2), ("ann", 3), ("ann", 4)
    ]  # fmt: skip
    estimates = [job.wait_estimate for job in (ann[0], bob, ann[1], ann[2])]
    assert all(seconds is not None for seconds in estimates) and estimates == sorted(estimates)
    # Stop works from either server, on a job either one queued.
    two.stop(twin(two, ann[1]))  # queued through the first server
    one.stop(twin(one, bob))  # queued through the second
    caught_up(one, two)
    assert ann[1].status == bob.status == "stopped" and ann[1].reason == bob.reason
    assert [job.queue_position for job in (ann[0], ann[2])] == [1, 2]
    assert view(one) == view(two)
    two.stop(twin(two, blocker))  # running
    finish(blocker, ann[0], ann[2])
    assert blocker.status == "stopped" and "stopped at step" in blocker.reason
    assert (ann[0].status, ann[2].status) == ("finished", "finished")
    assert ann[0].started < ann[2].started
    caught_up(one, two)
    for job in (blocker, ann[0], ann[2]):  # the other server saw every event and the result
        copy_ = twin(two, job)
        assert (copy_.status, copy_.run_id, copy_.events) == (job.status, job.run_id, job.events)
    assert [twin(two, ann[0]).events[i].kind for i in (0, -1)] == ["start", "done"]


def test_a_server_that_leaves_takes_nothing_and_one_that_comes_sees_the_queue(servers):
    *_, queues = servers
    line = functools.partial(InProcess, queues)
    leaving = SharedPool(1, limits=LIMITS, queue=line)
    blocker = leaving.submit(RunConfig(**ENDLESS), "teacher")
    queued = leaving.submit(RunConfig(**TINY), "carl")
    leaving.shutdown()  # that server stops: the class's jobs go on
    late = SharedPool(1, limits=LIMITS, queue=line)  # a server that starts now
    [seen] = [job for job in late.jobs() if job.id == queued.id]
    assert (seen.owner, seen.status, seen.queue_position) == ("carl", "queued", 1)
    late.stop(twin(late, blocker))
    finish(seen)
    assert seen.status == "finished" and seen.run_id is not None
    assert queued.status == "queued"  # the server that left follows nothing any more
    late.shutdown()


def test_an_idle_server_asks_its_queue_nothing_until_a_page_watches(servers):
    *_, queues = servers
    asked: list[str] = []

    class Counting(InProcess):
        def call(self, method: str, *args: Any) -> Any:
            asked.append(method)
            return super().call(method, *args)

    server = SharedPool(1, limits=LIMITS, queue=functools.partial(Counting, queues))
    try:
        time.sleep(WATCH_S + 3 * FOLLOW_S)  # the page that opened it has gone
        asked.clear()
        time.sleep(10 * FOLLOW_S)
        assert asked == []  # no page watches, and nothing of its own is queued or runs
        server.jobs("ann")  # a page reads the pool: it keeps it up to date while it watches
        time.sleep(10 * FOLLOW_S)
        assert asked.count("changes") >= 5
    finally:
        server.shutdown()


def test_a_server_that_followed_a_job_through_a_restart_of_the_queue_learns_how_it_ended(servers):
    *_, queues = servers
    line = functools.partial(InProcess, queues)
    following = SharedPool(1, limits=LIMITS, queue=line)
    job = following.submit(RunConfig(**TINY), "dora")
    following.shutdown()  # it asks nothing more for now: the job's end passes it by
    store = str(following.store_path)
    [in_queue] = [other for other in queues[store].jobs() if other.id == job.id]
    finish(in_queue)
    lost = queues[store]
    # What Ray does when the queue's actor dies: it starts it again, and it rebuilds itself
    # from its record, where the job has ended (so it is not among the queue's jobs any more).
    queues[store] = ClassQueue(1, store, LIMITS, LocalProcesses)
    try:
        assert job.id not in {other.id for other in queues[store].jobs()}
        following._catch_up()
        assert job.done and (job.status, job.run_id) == ("finished", in_queue.run_id)
        assert job.reason != QUEUE_LOST
    finally:
        queues[store].shutdown()
        queues[store] = lost


# -- two app servers' pools in two processes, over Ray and PostgreSQL ----------------------------
# The second server: what its pool does and shows (JSON lines), told by the first one when to stop
# which job (on its stdin).
SECOND_SERVER = """
import json, sys
from core.jobs import pool as jobs
from core.common.config import RunConfig

def show(**more):
    seen = {j.id: [j.owner, j.status, j.queue_position, j.wait_estimate] for j in pool.jobs()}
    print(json.dumps({"seen": seen, **more}), flush=True)

pool = jobs.pool()  # $LORA_LAB_RAY: this server's view of the class's queue
tiny = RunConfig(steps=3, eval_interval=3, snapshot_interval=3)
pool.submit(tiny, "bob")
pool.submit(tiny, "ann")  # her third: the first server queued two
try:
    pool.submit(tiny, "ann")
    refused = ""
except ValueError as error:
    refused = str(error)
show(refused=refused, workers=pool.workers)
job_id = sys.stdin.readline().strip()
pool.stop(next(j for j in pool.jobs() if j.id == job_id))
show()
"""


def rows(url: str, query: str) -> list[tuple]:
    """The database as it is: opening a RunStore would repair it, and hide whether the queue
    did."""
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.exec_driver_sql(query)]
    finally:
        engine.dispose()


def places(seen: dict[str, list]) -> dict[str, list]:
    """A server's view (SECOND_SERVER's `show`) less the wait estimates, which move with time."""
    return {job_id: shown[:3] for job_id, shown in seen.items()}


def test_two_app_servers_in_two_processes_share_the_class_queue_on_ray(
    ray_cluster, postgres_db, tmp_path
):
    line = functools.partial(ClassQueueHandle, address=ray_cluster)
    one = SharedPool(1, store_path=postgres_db, limits=LIMITS, queue=line)
    env = os.environ | {
        "LORA_LAB_RAY": ray_cluster,
        "LORA_LAB_DB": postgres_db,
        "LORA_LAB_MAX_JOBS_PER_STUDENT": str(CAP),
        "LORA_LAB_WORKERS": "2",  # not the class's: the first server started its queue
    }
    log = tmp_path / "second-server.log"
    try:
        blocker = one.submit(RunConfig(**ENDLESS), "teacher")
        wait_for_steps(blocker, 20)  # its pace is known: the queued jobs' waits can be told
        ann = one.submit_all([RunConfig(seed=i, **TINY) for i in range(2)], "ann")
        with log.open("w") as errors, subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SECOND_SERVER)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            text=True,
        ) as two:  # fmt: skip
            first = json.loads(two.stdout.readline() or f"{{}} {log.read_text()}")
            caught_up(one)
            # One queue: the same jobs in the same places on both servers, in a fair order.
            assert places(first["seen"]) == {job_id: list(v) for job_id, v in view(one).items()}
            [bob] = one.jobs("bob")
            [ann_3] = [job for job in one.jobs("ann") if job not in ann]
            queued = (ann[0], bob, ann[1], ann_3)
            assert [job.queue_position for job in queued] == [1, 2, 3, 4]
            waits = [first["seen"][job.id][3] for job in queued]
            assert all(wait is not None for wait in waits) and waits == sorted(waits)
            mine = [job.wait_estimate for job in queued]
            assert mine == pytest.approx(waits, rel=0.2)  # a few seconds apart
            # The cap counts the student's jobs on both servers.
            assert first["workers"] == one.workers == 1
            assert f"{CAP + 1} runs queued or running for one student" in first["refused"]
            # Stop from the second server, of a job queued through the first one.
            two.stdin.write(f"{ann[1].id}\n")
            two.stdin.flush()
            second = json.loads(two.stdout.readline() or f"{{}} {log.read_text()}")
        assert two.returncode == 0, log.read_text()
        caught_up(one)
        assert (ann[1].status, ann[1].reason) == ("stopped", "stopped before it started")
        assert places(second["seen"]) == {job_id: list(v) for job_id, v in view(one).items()}
        assert [job.queue_position for job in (ann[0], bob, ann_3)] == [1, 2, 3]
        one.stop(bob)  # queued through the other server, which has gone since
        # The teacher's Ray worker dies: the job fails, its run says why, and the queue goes on.
        [(run_id, pid)] = rows(postgres_db, "SELECT id, pid FROM runs WHERE status = 'running'")
        assert psutil.Process(pid).name().startswith("ray::")
        os.kill(pid, signal.SIGKILL)
        finish(blocker, bob, ann[0], ann_3)
        assert blocker.status == "failed" and "Ray worker died" in blocker.reason
        [(status, reason)] = rows(postgres_db, f"SELECT status, reason FROM runs WHERE id={run_id}")
        assert status == "unfinished" and reason.startswith("its process ended without finishing")
        assert [job.status for job in (bob, ann[0], ann_3)] == ["stopped", "finished", "finished"]
        assert ann[0].started < ann_3.started
        with RunStore(postgres_db) as store:  # trained on Ray, kept in PostgreSQL
            assert store.get(ann_3.run_id).owner == "ann"
    finally:
        one.close_queue()
