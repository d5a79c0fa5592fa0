"""The Class page without the page: every student of the class with their runs (queued, running,
ended, and why a run failed), the class's finished runs as points of one figure, the queue as it
stands, and the runs that meet an exercise's goal, best first.

    view = class_view(store.list(), pool().jobs(), store.student_names(), goal)

The page computes it once per poll for every teacher watching (one shared copy: the page's
cache), so a Class page costs the server one listing of the store and of the queue per poll,
as one Train page's live view does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.classroom.goals import Goal, ranked
from core.common.config import kind_of_model
from core.jobs.scheduler import Job
from core.store.names import default_name
from core.store.records import RunRecord
from core.training.kinds import KINDS


@dataclass(frozen=True)
class ClassRun:
    """One of a student's runs as the Class page lists it: a stored run, or a job the store has
    not got yet (queued, or failed before it started: run_id None)."""

    run_id: int | None
    owner: str
    name: str
    status: str  # queued | running | finished | failed | stopped | unfinished | imported
    reason: str  # why it failed or stopped; "" otherwise
    method: str
    rank: int | None  # a LoRA run's
    kind: str  # "images" or "text": which metric `score` is
    score: float | None  # the kind's headline metric on the target task after training
    trainable_params: int | None
    position: int | None  # in the queue (1: next), a queued job's
    wait: float | None  # seconds until it starts, estimated; a queued job's
    meets_goal: bool | None  # None: no goal, or nothing measured to judge it by

    @property
    def setting(self) -> str:
        """Its method as a figure's legend groups it: "lora r=4", "full", "head"."""
        return f"{self.method} r={self.rank}" if self.rank is not None else self.method


@dataclass(frozen=True)
class Student:
    owner: str
    label: str  # the name they gave, or an anonymous short label (`anonymous`)
    runs: tuple[ClassRun, ...]  # newest first

    def count(self, *statuses: str) -> int:
        """How many of their runs have one of `statuses`."""
        return sum(run.status in statuses for run in self.runs)

    @property
    def last_failure(self) -> str:
        """Why their latest failed run failed ("" if none failed): who is stuck, and on what."""
        return next((run.reason for run in self.runs if run.status == "failed"), "")

    @property
    def best(self) -> ClassRun | None:
        """Their finished run with the best score on its task's metric (None before one)."""
        scored = [run for run in self.runs if run.status == "finished" and run.score is not None]
        metric = {run.kind: KINDS[run.kind].metric for run in scored}
        return max(scored, key=lambda run: metric[run.kind].better_by(run.score, 0.0), default=None)


@dataclass(frozen=True)
class ClassQueue:
    """The queue as it stands: how many wait and train, and the longest estimated wait."""

    waiting: int
    running: int
    longest_wait: float | None


@dataclass(frozen=True)
class ClassView:
    students: tuple[Student, ...]  # the most recently active first
    queue: ClassQueue
    best: tuple[ClassRun, ...]  # the runs that meet the goal, best first (none without one)

    @property
    def points(self) -> list[tuple[Student, ClassRun]]:
        """The class's finished runs with a score and a count of parameters: the figure's."""
        return [
            (student, run)
            for student in self.students
            for run in student.runs
            if run.status == "finished" and run.score is not None and run.trainable_params
        ]


def anonymous(owner: str) -> str:
    """A short label for a student who gave no name: four hex digits of a hash of their id (the
    id itself stays secret: it is what keeps their runs theirs)."""
    return "#" + hashlib.sha256(owner.encode()).hexdigest()[:4]


def _stored(record: RunRecord, goal: Goal | None) -> ClassRun:
    metric = KINDS[record.kind].metric
    lora = record.config.method == "lora"
    return ClassRun(
        run_id=record.id,
        owner=record.owner,
        name=record.name,
        status=record.status,
        reason=record.reason,
        method=record.config.method,
        rank=record.config.rank if lora else None,
        kind=record.kind,
        score=getattr(record, f"test_{metric.field}_after"),
        trainable_params=record.trainable_params,
        position=None,
        wait=None,
        meets_goal=None if goal is None else goal.check(record).met,
    )


def _waiting(job: Job) -> ClassRun:
    config = job.config
    lora = config.method == "lora"
    queued = job.status == "queued"
    return ClassRun(
        run_id=None,
        owner=job.owner,
        name=default_name(config),
        status=job.status,
        reason=job.reason,
        method=config.method,
        rank=config.rank if lora else None,
        kind=kind_of_model(config.model),
        score=None,
        trainable_params=None,
        position=job.queue_position if queued else None,
        wait=job.wait_estimate if queued else None,
        meets_goal=None,
    )


def class_view(
    records: Iterable[RunRecord],
    jobs: Iterable[Job],
    names: Mapping[str, str],
    goal: Goal | None = None,
) -> ClassView:
    """The class from the store's runs (`records`, newest first), the queue's jobs (those not
    stored yet: queued, or failed before a run was stored) and the names students gave."""
    records = list(records)
    jobs = list(jobs)
    unstored = [job for job in jobs if job.run_id is None and job.status in ("queued", "failed")]
    by_owner: dict[str, list[ClassRun]] = {}
    waiting = sorted(
        map(_waiting, unstored), key=lambda run: (run.position is None, run.position or 0)
    )
    for run in waiting:
        by_owner.setdefault(run.owner, []).append(run)  # queued first, in the queue's order
    for record in records:
        by_owner.setdefault(record.owner, []).append(_stored(record, goal))
    students = tuple(
        Student(owner, names.get(owner) or anonymous(owner), tuple(runs))
        for owner, runs in by_owner.items()
    )
    queued = [job for job in jobs if job.status == "queued"]
    waits = [wait for job in queued if (wait := job.wait_estimate) is not None]
    queue = ClassQueue(
        waiting=len(queued),
        running=sum(job.status == "running" for job in jobs),
        longest_wait=max(waits, default=None),
    )
    best = ()
    if goal is not None:
        by_id = {run.run_id: run for student in students for run in student.runs}
        best = tuple(by_id[record.id] for record in ranked(goal, records))
    return ClassView(students, queue, best)
