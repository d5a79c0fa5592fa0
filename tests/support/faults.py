"""A class played over two app servers, PostgreSQL and a Ray cluster while, in turn, a piece of
it is killed, and what became of every job counted: bench/faults.py prints it for a class of 20,
tests/jobs/test_faults.py holds a few students to it.

Each app server is a process of its own (tests/support/class_server.py: a LoRA Lab server's
pool, its view of the class's queue); each student sits at one of them, submits tiny runs and
watches them as their page would. What happened is read from the database itself, not from
any server: the job record (every job's end and its reason) and the runs table (how many runs
of each job finished: each job's seed is the class's own, so two finished runs with one seed
and owner are one job run twice).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import ray
import sqlalchemy as sa

from core.jobs.ray_jobs import NAMESPACE, connect, queue_name
from core.store import rundb

ROOT = Path(__file__).resolve().parents[2]
ACTOR = "the queue's actor killed"
SERVER = "an app server killed"
POSTGRES = "PostgreSQL restarted"
NODE = "a Ray worker node killed"
CAP = "the queue filled past every cap"
FAULTS = (ACTOR, SERVER, POSTGRES, NODE, CAP)
POLL_S = 0.5  # how often a student's page looks at their jobs, and the database is read
ENDED = ("finished", "failed", "stopped")


@dataclass(frozen=True)
class Tally:
    """What became of one fault's jobs."""

    fault: str
    submitted: int  # jobs the queue accepted
    refused: int  # submissions refused with a reason (a student's cap)
    finished: int
    failed: int  # failed or stopped, each with its reason
    lost: int  # accepted and never ended with a reason: must be 0
    run_twice: int  # jobs with more than one finished run: must be 0
    pages_showed: bool  # every student's page showed each of their jobs' ends
    seconds: float
    reasons: dict[str, int]  # why jobs failed or stopped, and how many each


class Server:
    """One app server process (tests/support/class_server.py)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.class_server"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True,
        )  # fmt: skip

    def ready(self) -> Server:
        """Once it has joined the class's queue (servers start side by side)."""
        self._read()
        return self

    def ask(self, *command: object) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def kill(self) -> None:
        """Killed as a machine is lost: no shutdown, no goodbye."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def close(self) -> None:
        if self.process.poll() is None:  # (not killed)
            self.process.stdin.close()
            self.process.wait(30)
        self._log.close()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"an app server ended: see {self._log.name}")
        return json.loads(line)


class Class:
    """`students` students over two app servers of one class (its database `database`, its Ray
    cluster at `address`), each student at most `cap` jobs at once, each job `steps` steps.
    `postgres_dir`: the test server's folder (.ci/postgres.sh restarts it)."""

    def __init__(
        self,
        students: int,
        database: str,
        address: str,
        postgres_dir: str,
        logs: Path,
        cap: int = 2,
        steps: int = 3,
        timeout_s: float = 180.0,
    ) -> None:
        self.database, self.address, self.postgres_dir = database, address, postgres_dir
        self.cap, self.steps, self.timeout_s, self.logs = cap, steps, timeout_s, logs
        self.env = os.environ | {
            "LORA_LAB_RAY": address,
            "LORA_LAB_DB": database,
            "LORA_LAB_HOME": str(logs),
            "LORA_LAB_MAX_JOBS_PER_STUDENT": str(cap),
        }
        self.students = [f"student-{n:02d}" for n in range(students)]
        self.seat = {student: n % 2 for n, student in enumerate(self.students)}
        starting = [Server(self.env, logs / f"server-{n}.log") for n in range(2)]
        self.servers = [server.ready() for server in starting]
        self._seeds = itertools.count(1)
        self._seed_of: dict[str, tuple[str, int]] = {}  # job id → (owner, seed)
        self._engine = sa.create_engine(rundb.postgres_url(database), pool_pre_ping=True)
        connect(address)  # this process kills the queue's actor through Ray

    def close(self) -> None:
        """Stop the servers, and end the class's queue (its jobs have ended)."""
        for server in self.servers:
            server.close()
        with contextlib.suppress(ValueError):  # (never started)
            ray.kill(ray.get_actor(queue_name(self.database), namespace=NAMESPACE))
        self._engine.dispose()

    # -- a fault ------------------------------------------------------------------------------
    def play(self, fault: str) -> Tally:
        """Every student submits (one job; with CAP, one more than their cap), the fault comes
        once a job trains, and the class waits until every job has ended."""
        began = time.monotonic()
        accepted, refused = self._submit(self.cap + 1 if fault == CAP else 1)
        self._wait(lambda: any(s == "started" for s in self._statuses(accepted).values()))
        self._inject(fault)
        deadline = time.monotonic() + self.timeout_s
        shown = False
        while time.monotonic() < deadline:
            statuses = self._statuses(accepted)
            shown = self._pages_show(accepted, statuses)
            if shown and all(statuses.get(job_id) in ENDED for job_id in accepted):
                break
            time.sleep(POLL_S)
        return self._tally(fault, accepted, refused, shown, time.monotonic() - began)

    def _submit(self, per_student: int) -> tuple[dict[str, str], int]:
        accepted, refused = {}, 0
        for _, student in itertools.product(range(per_student), self.students):
            seed = next(self._seeds)
            reply = self.servers[self.seat[student]].ask("submit", student, seed, self.steps)
            if "id" in reply:
                accepted[reply["id"]] = student
                self._seed_of[reply["id"]] = (student, seed)
            else:
                refused += 1
        return accepted, refused

    def _inject(self, fault: str) -> None:
        if fault == ACTOR:  # Ray restarts it (max_restarts=-1), as when its process dies
            actor = ray.get_actor(queue_name(self.database), namespace=NAMESPACE)
            ray.kill(actor, no_restart=False)
        elif fault == SERVER:  # its students open the page on the other server, from now on
            self.servers[1].kill()
            self.seat = dict.fromkeys(self.students, 0)
        elif fault == POSTGRES:
            script = ROOT / ".ci" / "postgres.sh"
            subprocess.run([str(script), "restart", self.postgres_dir], check=True)
        elif fault == NODE:
            subprocess.run(["bash", ".ci/ray.sh", "restart-worker"], cwd=ROOT, check=True)

    # -- what became of the jobs -----------------------------------------------------------------
    def _statuses(self, accepted: dict[str, str]) -> dict[str, str]:
        """Each job's status in the record (none while the database restarts)."""
        query = sa.select(rundb.jobs.c.id, rundb.jobs.c.status)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query.where(rundb.jobs.c.id.in_(list(accepted)))).all()
        except sa.exc.OperationalError:
            return {}
        return dict(rows)

    def _pages_show(self, accepted: dict[str, str], statuses: dict[str, str]) -> bool:
        """Whether each student's page, on the server they sit at now, shows each of their
        jobs as the record has it (and so, once all ended, each one's end)."""
        shows = True
        for student in self.students:
            page = self.servers[self.seat[student]].ask("show", student)["jobs"]
            seen = {job_id: status for job_id, status, *_ in page}
            mine = [job_id for job_id, owner in accepted.items() if owner == student]
            shows &= all(
                job_id in seen
                and (statuses.get(job_id) not in ENDED or seen[job_id] == statuses[job_id])
                for job_id in mine
            )
        return shows

    def _tally(
        self, fault: str, accepted: dict[str, str], refused: int, shown: bool, seconds: float
    ) -> Tally:
        jobs, runs = rundb.jobs, rundb.runs
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.status, jobs.c.reason).where(
                    jobs.c.id.in_(list(accepted))
                )
            ).all()
            done = conn.execute(
                sa.select(runs.c.owner, runs.c.config).where(runs.c.status == "finished")
            ).all()
        ended = {job_id: (status, reason) for job_id, status, reason in rows}
        finished = sum(1 for status, _ in ended.values() if status == "finished")
        failed = sum(1 for status, why in ended.values() if status in ENDED[1:] and why)
        runs_of = Counter((owner, json.loads(config)["seed"]) for owner, config in done)
        twice = sum(1 for job_id in accepted if runs_of[self._seed_of[job_id]] > 1)
        return Tally(
            fault=fault,
            submitted=len(accepted),
            refused=refused,
            finished=finished,
            failed=failed,
            lost=len(accepted) - finished - failed,
            run_twice=twice,
            pages_showed=shown,
            seconds=round(seconds, 1),
            reasons=dict(Counter(why for status, why in ended.values() if status != "finished")),
        )

    def _wait(self, ready: object, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def playing(**settings: object):
    """A Class, closed afterwards (its servers stopped)."""
    room = Class(**settings)
    try:
        yield room
    finally:
        room.close()
