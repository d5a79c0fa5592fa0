"""A queue written down: every job a queue was given and each change of where it stands, in the
run database (the `jobs` table of core/store/rundb.py, on SQLite and PostgreSQL alike), so that
a queue whose process dies can be rebuilt from it, and so that the database names its class.

    record = JobRecord(location, queue="class", exclusive=True)
    record.add([JobRow(...)])             # submitted: written before the student hears "queued"
    record.started(job_id, tag)           # True: this queue may run it (it was still queued)
    record.ended(job_id, status, reason)  # True: this end counts (the job was still open)
    record.take_open(); record.fair_state()   # what a restarted queue rebuilds itself from
    class_id(location)                    # the class's one name, whatever the URL's spelling

Why each change is a conditional UPDATE: the record, not a process's memory, decides who may
run a job and who may end it. A job leaves "queued" once (`started`) and ends once (`ended`):
should two queues of one name ever hold it (a queue rebuilt while its old process still ran),
one of them starts it, and no job is ever run to completion twice.

Only plain values here: the scheduler (core.jobs.scheduler) turns rows into its jobs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.store import rundb
from core.store.rundb import Unreachable, jobs, meta
from core.store.runs import HOST, process_alive, process_start

QUEUED, STARTED = "queued", "started"
OPEN = (QUEUED, STARTED)  # a job in one of these may still run; the others are its end
CLASS_KEY = "class_id"  # the meta row that names the class whose runs this database keeps
RETRY_S = 60.0  # how long a change waits for an unreachable PostgreSQL before it is given up
RETRY_PAUSE_S = 0.5
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRow:
    """One job as the record keeps it."""

    id: str
    seq: int
    owner: str
    config: dict[str, Any]  # RunConfig.to_dict()
    limits: dict[str, Any]  # dataclasses.asdict(Limits) of the server that submitted it
    submitted: float
    status: str = QUEUED
    reason: str = ""
    tag: int | None = None
    run_id: int | None = None
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True)
class FairState:
    """What a queue's fair order remembers of the jobs that have started (FairQueue): the tag of
    the one that started last, each owner's next tag, and the last submission number."""

    virtual: int
    next_tags: dict[str, int]
    last_seq: int


class JobRecord:
    """The record of the queue named `queue` in the run database at `location` (an SQLite
    file or a postgresql:// URL), kept by this process.

    Each job is held by the process whose queue has it (its machine, id and start time, as a
    run is). `exclusive`: no other live process keeps a queue of this name (the class's, in its
    one Ray actor), so a queue starting under it takes up every open job; else (a server's own
    queue, named after its machine) only those whose process has died, so that two servers
    over one store on one machine never take each other's jobs.
    """

    def __init__(self, location: str | Path, queue: str, exclusive: bool = False) -> None:
        self.queue, self.exclusive = queue, exclusive
        pid = os.getpid()
        self.holder = {"host": HOST, "pid": pid, "pid_started": process_start(pid)}
        self._db = rundb.open_database(location, on_open=_nothing)

    def close(self) -> None:
        self._db.close()

    # -- changes --------------------------------------------------------------------------------
    def add(self, rows: Sequence[JobRow]) -> None:
        """Write down newly submitted jobs, all or none (a StoreError, one line, if the
        database cannot take them now: then none is queued)."""
        values = [{**_values(row), "queue": self.queue, **self.holder} for row in rows]
        self._db.run(lambda conn: conn.execute(sa.insert(jobs), values), "queue the runs")

    def started(self, job_id: str, tag: int) -> bool:
        """The job leaves the queue for a worker; False if the record says it is no longer
        queued (another queue of this name took it, or ended it): then it must not run."""
        change = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
            .values(status=STARTED, tag=tag, started=time.time())
        )
        return self._change(change, f"start job {job_id}")

    def requeued(self, job_id: str) -> None:
        """A job that had just started goes back to the queue (its worker could not take it)."""
        change = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == STARTED)
            .values(status=QUEUED, started=None)
        )
        self._change(change, f"queue job {job_id} again")

    def ended(self, job_id: str, status: str, reason: str, run_id: int | None = None) -> bool:
        """The job ended ("finished", "failed" or "stopped"); False if it had ended already in
        the record (whoever ended it first decided how it ended)."""
        change = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_(OPEN))
            .values(status=status, reason=reason, run_id=run_id, ended=time.time())
        )
        return self._change(change, f"end job {job_id}")

    # -- reading --------------------------------------------------------------------------------
    def take_open(self) -> list[JobRow]:
        """The queue's jobs that are queued or started and that this process may take up (all,
        if `exclusive`; else those whose process has died), in submission order, now held by
        this process. Each is taken with a conditional update: of two processes taking up one
        dead queue, each job goes to one."""
        query = (
            sa.select(jobs)
            .where(jobs.c.queue == self.queue, jobs.c.status.in_(OPEN))
            .order_by(jobs.c.seq)
        )

        def take(conn: sa.Connection) -> list[JobRow]:
            taken = []
            for row in conn.execute(query).mappings().all():
                if not self.exclusive and (
                    row["host"] != HOST or process_alive(row["pid"], row["pid_started"])
                ):
                    continue
                mine = sa.update(jobs).where(jobs.c.id == row["id"], jobs.c.pid == row["pid"])
                if conn.execute(mine.values(self.holder)).rowcount == 1:
                    taken.append(_row(row))
            return taken

        return self._db.run(take, "take up the queue's jobs")

    def get(self, job_ids: Sequence[str]) -> list[JobRow]:
        """The jobs of these ids that the record has (of any queue)."""
        if not job_ids:
            return []
        query = sa.select(jobs).where(jobs.c.id.in_(list(job_ids)))
        return [_row(row) for row in self._db.run(lambda c: c.execute(query).mappings().all())]

    def fair_state(self) -> FairState:
        """Where the queue's fair order stood: from the tags of the jobs that started."""
        mine = jobs.c.queue == self.queue
        tags = sa.select(jobs.c.owner, sa.func.max(jobs.c.tag)).where(mine, jobs.c.tag.is_not(None))
        last = sa.select(sa.func.max(jobs.c.seq)).where(mine)

        def read(conn: sa.Connection) -> FairState:
            by_owner = dict(conn.execute(tags.group_by(jobs.c.owner)).all())
            return FairState(
                virtual=max(by_owner.values(), default=0),
                next_tags={owner: tag + 1 for owner, tag in by_owner.items()},
                last_seq=conn.execute(last).scalar() or 0,
            )

        return self._db.run(read)

    def _change(self, change: sa.Update, what: str) -> bool:
        """Run one conditional change; whether it changed a row. While PostgreSQL cannot be
        reached (restarting), it is tried again for up to RETRY_S: the queue waits for its
        record rather than run ahead of it."""
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                return self._db.run(lambda conn: conn.execute(change).rowcount == 1, what)
            except Unreachable as error:
                if time.monotonic() > deadline:
                    log.warning("the job record gave up: %s", error)
                    raise
                time.sleep(RETRY_PAUSE_S)


def class_id(location: str | Path) -> str:
    """The class whose runs the database at `location` keeps: a random id written into it the
    first time it is asked for, so that every server over one database finds the same name
    however its URL or path is spelt (localhost or 127.0.0.1)."""
    database = rundb.open_database(location, on_open=_nothing)
    try:
        return database.run(_class_id, "name the class")
    finally:
        database.close()


def _class_id(conn: sa.Connection) -> str:
    """The class's id, written first if it is not there (by whichever server asks first: the
    other's insert does nothing, on both dialects)."""
    insert = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(meta)
    conn.execute(insert.values(key=CLASS_KEY, value=uuid.uuid4().hex).on_conflict_do_nothing())
    return conn.execute(sa.select(meta.c.value).where(meta.c.key == CLASS_KEY)).scalar_one()


def _nothing(conn: sa.Connection) -> None:
    """What opening the database does for the record: nothing (RunStore repairs runs)."""


def _values(row: JobRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in JobRow.__dataclass_fields__}
    return values | {"config": json.dumps(row.config), "limits": json.dumps(row.limits)}


def _row(row: Any) -> JobRow:
    values = {name: row[name] for name in JobRow.__dataclass_fields__}
    return JobRow(**values | {"config": json.loads(row.config), "limits": json.loads(row.limits)})
