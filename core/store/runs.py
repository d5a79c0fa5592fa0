"""The run history: every training run, its curves, spectra and weights, in one store.

By default the store is an SQLite file; with LORA_LAB_DB set, a PostgreSQL database that any
number of app servers and training workers share (core/store/rundb.py: one schema for both, and why
the weights live where they do):

    <home>/runs.db                             runs, per-step metrics, spectrum snapshots (WAL)
    <home>/runs/<folder>/weights.safetensors   what the run trained (adapters + head, or the
                                               changed weights of full fine-tuning)
    LORA_LAB_DB=postgresql://…                 the same tables, and the weights in a table

A run's folder is a random uuid (runs saved before schema 2: its id), so files are found by
something that cannot collide: a training process that outlives its store (the file was moved
or replaced) writes nothing into a new store, even one with a run of the same number; a write
checks that the row and its folder are the ones it created.

Nothing finished is ever lost: a run's final state is written in one transaction, after its
weights file is complete on disk (with PostgreSQL, in that same transaction). A run whose
process died (crash, kill, power cut) is found still marked "running" the next time the store
opens, and is marked "unfinished", keeping what it logged; a process id now used by another
process does not keep it "running" (the process's start time and machine are kept with its
id; a run trained on another machine is left to that machine's processes). A database that is
not LoRA Lab's is never written to: opening it raises a StoreError whose message says what to
do. Writes that fail (a full disk, a read-only file) raise a StoreError and change nothing.
Reading creates nothing: a store that does not exist yet reads as empty, and a read-only one
can be read.

A run's steps reach the store while it trains (core.training.record saves them at each
evaluation, and at least every FLUSH_S seconds), so a page on any app server shows a run's live
curves by reading them (steps_since), whichever server or command line started it.

The store keeps and returns a run's tensors (read_weights); it never builds a model from them:
core.training.rebuild does, and core.training.export writes a run's adapter. What it returns is
a RunRecord (core/store/records.py), whose outcome (core/store/outcome.py) is the training's;
the names it gives and checks are in core/store/names.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save, save_file

from core.common import paths
from core.common.config import RunConfig, SettingError, short_repr
from core.store import rundb
from core.store.names import (
    CLASS_NAME_CHARS,
    RUN_NAME_CHARS,
    STUDENT_NAME_CHARS,
    checked_name,
    default_name,
)
from core.store.outcome import FIELDS, RunOutcome
from core.store.records import RunProgress, RunRecord
from core.store.rundb import (
    METRIC_COLUMNS,
    StoreError,
    archived,
    metrics,
    runs,
    snapshots,
    students,
    weights,
)

__all__ = ["NoSuchRun", "RunStore", "SavedWeights", "StoreError"]

WEIGHTS_FILE = "weights.safetensors"
# A run's id is a signed 64-bit number that starts at 1 (SQLite's INTEGER PRIMARY KEY, and
# PostgreSQL's BIGINT): any other number (0, -5, a link's 99999999999999999999999) names no run,
# and is never asked for.
RUN_IDS = range(1, 2**63)
IDS_USED_UP = (
    f"cannot start a run: a run already has the last id a run can have ({RUN_IDS[-1]}), "
    "so no new run can be numbered: the store was edited by hand. Delete or renumber that run"
)
FOLDER = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: nothing else is ever a run's folder
# A run in one of these is being trained: it cannot be deleted. (A job waits in a pool's queue,
# not in the store: a row says "queued" only if a hand wrote it, and then no job runs it.)
ACTIVE_STATUSES = ("running",)
SAME_PROCESS_S = 1.0  # start times further apart than this are two processes with one pid
HOST = socket.gethostname()  # whose process ids a store may check (runs.host)


class NoSuchRun(StoreError):
    """The store has no run of that id (deleted, or never made): a page skips a link to it,
    where a run that is there but cannot be read (a row edited by hand) is named."""


@dataclass(frozen=True)
class SavedWeights:
    """What a run trained, as the store kept it (RunStore.read_weights)."""

    record: RunRecord  # the run, without its history
    tensors: dict[str, torch.Tensor]  # its trained tensors by name (core.training.record's)
    source: str  # where they were read: the file, or the run database


def default_path() -> Path:
    return paths.home() / "runs.db"


def store_location() -> str | Path:
    """Where the runs are kept: the PostgreSQL URL in LORA_LAB_DB if it is set (StoreError
    naming the setting if it is not one), or else the SQLite file in LORA_LAB_HOME."""
    configured = rundb.configured()
    if configured is None:
        return default_path()
    rundb.postgres_url(configured)
    return configured


def process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is none (or it
    is a zombie: it has ended, only its exit status is left)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # it exists, owned by someone else, start time hidden
        return float("nan")


def process_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process that was `pid`, started at `started`, still runs. A row of schema 1
    has no start time: then any process with that id counts."""
    if pid is None or pid < 1:  # (0 and below: no process, and psutil refuses them)
        return False
    now = process_start(pid)
    if now is None:
        return False
    return started is None or not abs(now - started) > SAME_PROCESS_S  # (nan: cannot tell)


class RunStore:
    """The run database. Safe to share between threads; several processes (and with
    PostgreSQL, several machines) may open it too.

    `location` is an SQLite file's path or a postgresql:// URL; by default store_location().
    An SQLite file is opened on first use and created on the first write, so a command that
    is refused, or only reads, leaves no empty database behind; if the file is moved or
    replaced while the store is open, the store follows the path (a server keeps working),
    and what this store had started in the old file is not written into the new one.
    """

    def __init__(self, location: str | Path | None = None) -> None:
        self._db = rundb.open_database(
            store_location() if location is None else location, on_open=_recover
        )
        self.path: Path | None = self._db.path  # the SQLite file (None: PostgreSQL)
        self.weights_dir: Path | None = self._db.weights_dir  # (None: in the database)
        self.where = self._db.where  # the file, or the URL without its password
        self._lock = threading.Lock()
        self._mine: dict[int, tuple[Any, str]] = {}  # run → (the database it is in, folder)

    @property
    def read_only(self) -> str | None:
        """Why the store cannot be written, if it is known that it cannot."""
        return self._db.read_only

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- writing a run as it trains ---------------------------------------------------------
    def create(self, config: RunConfig, owner: str = "local", name: str | None = None) -> int:
        """A new run in status "running", owned by this process; returns its id."""
        folder = uuid.uuid4().hex
        pid = os.getpid()
        row = {
            "name": checked_name(name, RUN_NAME_CHARS) if name else default_name(config),
            "owner": owner,
            "config": json.dumps(config.to_dict()),
            "status": "running",
            "pid": pid,
            "pid_started": process_start(pid),
            "host": HOST,
            "created": time.time(),
            "torch_threads": torch.get_num_threads(),
            "folder": folder,
        }

        def insert(conn: sa.Connection) -> tuple[int, Any]:
            if conn.execute(sa.select(sa.func.max(runs.c.id))).scalar() == RUN_IDS[-1]:
                # SQLite would number the next run past 64 bits and say "disk full": say why
                raise StoreError(IDS_USED_UP)
            run_id = conn.execute(sa.insert(runs).values(row)).inserted_primary_key[0]
            return int(run_id), self._db.opened()

        run_id, database = self._db.run(insert, "start a run")
        with self._lock:
            self._mine[run_id] = (database, folder)
        return run_id

    def append(self, run_id: int, history: list[dict], snapshots: list[dict]) -> None:
        """Save progress (metrics and snapshots so far) in one transaction. StoreError if the
        run's row is gone (deleted while it trained), or the store cannot be written."""
        folder = self._own(run_id)

        def save_progress(conn: sa.Connection) -> None:
            _check_row(conn, run_id, folder)
            _insert_progress(conn, run_id, history, snapshots)

        self._db.run(save_progress, f"save the progress of run {run_id}")

    def finish(
        self,
        run_id: int,
        outcome: RunOutcome,
        history: list[dict],
        snaps: list[dict],
        tensors: dict[str, torch.Tensor] | None,
    ) -> None:
        """Save a run's outcome, its history and snapshots, and what it trained (`tensors`;
        None: nothing usable, as of a failed run): the weights first, then every row in one
        transaction. (With PostgreSQL the weights are a row too, in the same transaction.)

        StoreError if the run's row is gone (deleted while it trained) or the store cannot be
        written (disk full): then nothing is written, and a weights file already written is
        removed again."""
        folder = self._own(run_id)
        in_table = None
        if tensors is not None and self.weights_dir is None:
            in_table = save(tensors)
        elif tensors is not None:
            self._db.run(lambda conn: _check_row(conn, run_id, folder))  # gone? write nothing
            self._write_weights(run_id, folder, tensors)
        row = {**outcome.as_json(), "pid": None, "has_weights": int(tensors is not None)}

        def save_outcome(conn: sa.Connection) -> None:
            _check_row(conn, run_id, folder)
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(row))
            conn.execute(sa.delete(metrics).where(metrics.c.run_id == run_id))
            conn.execute(sa.delete(snapshots).where(snapshots.c.run_id == run_id))
            _insert_progress(conn, run_id, history, snaps)
            if in_table is not None:
                rundb.upsert(conn, weights, [{"run_id": run_id, "data": in_table}], ["run_id"])

        try:
            self._db.run(save_outcome, f"save run {run_id}")
        except StoreError:
            if self.weights_dir is not None:
                shutil.rmtree(self.weights_dir / folder, ignore_errors=True)  # no orphan folder
            raise
        with self._lock:
            del self._mine[run_id]

    def fail(self, run_id: int, reason: str) -> None:
        """Mark a run failed, keeping its progress. Called while another error is handled, it
        never raises: if the store cannot be written (disk full), the run stays "running"
        until its process ends, and is then found "unfinished"."""
        with contextlib.suppress(StoreError):
            folder = self._own(run_id)
            failed = (
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.folder == folder)
                .values(status="failed", reason=reason, pid=None)
            )
            self._db.run(lambda conn: conn.execute(failed), f"mark run {run_id} failed")
            with self._lock:
                del self._mine[run_id]

    def recover(self) -> list[int]:
        """Mark runs whose process is gone "unfinished"; returns their ids. A store that does
        not exist or cannot be written has none to mark."""
        if not self._db.writable():
            return []
        return self._db.run(_recover, "mark interrupted runs")

    def _own(self, run_id: int) -> str:
        """The folder of a run this store created; StoreError if the database it was created
        in is no longer the one at this store's path (moved, deleted or replaced: its results
        have nowhere to go)."""
        database, folder = self._mine.get(run_id, (None, ""))
        if not folder:
            raise StoreError(f"run {run_id} was not started by this process: it cannot save it")
        if database != self._db.identity():
            raise StoreError(
                f"the run store {self.where} was moved or replaced while run {run_id} trained: "
                "its results were not saved"
            )
        return folder

    def _write_weights(self, run_id: int, folder: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write to a temporary file and rename it: a reader never sees half a file. If that
        fails (disk full), the partial file goes and StoreError says nothing was saved."""
        directory = self.weights_dir / folder
        partial = directory / (WEIGHTS_FILE + ".partial")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            save_file(tensors, partial)
            with open(partial, "rb") as file:
                os.fsync(file.fileno())  # on disk before the database says it is there
            os.replace(partial, directory / WEIGHTS_FILE)
        except (OSError, SafetensorError) as error:
            shutil.rmtree(directory, ignore_errors=True)
            why = getattr(error, "strerror", None) or str(error)
            raise StoreError(
                f"cannot save the weights of run {run_id} in {self.weights_dir}: {why}. "
                "Nothing was saved of it, and every other run is as it was"
            ) from None

    # -- reading ------------------------------------------------------------------------------
    def list(self, owner: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first (only `owner`'s if given; the latest `limit` if given), without
        their history. A row that cannot be read is left out: listing() names it."""
        return self.listing(owner, limit)[0]

    def listing(
        self, owner: str | None = None, limit: int | None = None
    ) -> tuple[list[RunRecord], dict[int, str]]:
        """(the runs, newest first, as list() gives them; {id: why} of rows that cannot be
        read, such as a config written by hand). One bad row never hides the others. An
        owner's latest runs are one index range (runs_by_owner): cheap to poll."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(runs.c.owner == owner)
        rows = self._db.run(lambda conn: conn.execute(query).mappings().all())
        records, unreadable = [], {}
        for row in rows:
            try:
                records.append(_record(row))
            except StoreError as error:
                unreadable[row["id"]] = str(error)
        return records, unreadable

    def get(self, run_id: int) -> RunRecord:
        """One run with its per-step history and spectrum snapshots."""
        row, history, snaps = self._db.run(lambda conn: _run_and_steps(conn, run_id, None))
        record = _record(row)
        record.history, record.snapshots = history, _parsed(run_id, snaps)
        return record

    def steps_since(self, run_id: int, step: int) -> RunProgress:
        """What run `run_id` logged after step `step` (-1: everything), and its status now: a
        live view polls this with the last step it has, and reads only what is new (two
        index ranges, metrics and snapshots by (run_id, step)). StoreError if there is no
        such run."""
        row, history, snaps = self._db.run(lambda conn: _run_and_steps(conn, run_id, step))
        _check_kinds(row)
        return RunProgress(row["status"], row["reason"], history, _parsed(run_id, snaps))

    def rename(self, run_id: int, name: str) -> None:
        """Give a run a new name (checked_name: SettingError for one that cannot be kept)."""
        name = checked_name(name, RUN_NAME_CHARS)
        if not name:
            raise SettingError("a run's name cannot be empty", "errors.name_empty")
        self._check_exists(run_id)  # (and a store not made yet is not made for this)
        renamed = sa.update(runs).where(runs.c.id == run_id).values(name=name)
        if self._db.run(lambda conn: conn.execute(renamed).rowcount, f"rename run {run_id}") == 0:
            raise NoSuchRun(f"there is no run {run_id}")

    # -- students' names ------------------------------------------------------------------------
    def name_student(self, owner: str, name: str) -> str:
        """Keep the name a student typed (checked_name, at most STUDENT_NAME_CHARS; empty:
        forget it) and give it back as kept. Runs stay owned by the id the student's browser
        keeps: a name only tells the teacher whose runs they are."""
        kept = checked_name(name, STUDENT_NAME_CHARS)

        def write(conn: sa.Connection) -> None:
            conn.execute(sa.delete(students).where(students.c.owner == owner))
            if kept:
                conn.execute(sa.insert(students).values(owner=owner, name=kept))

        self._db.run(write, "keep a student's name")
        return kept

    def student_names(self) -> dict[str, str]:
        """{owner: name} of the students who gave one."""
        query = sa.select(students.c.owner, students.c.name)
        return dict(self._db.run(lambda conn: conn.execute(query).all()))

    # -- archived classes ------------------------------------------------------------------------
    def archive(self, run_ids: Iterable[int], class_name: str) -> str:
        """Put runs away under a class's name (checked_name, 1 to CLASS_NAME_CHARS characters):
        the Class page's next class starts without them, and the teacher can still open them
        by that name. A run archived before moves to the new name. Gives the name as kept."""
        kept = checked_name(class_name, CLASS_NAME_CHARS)
        if not kept:
            raise SettingError("a class's name cannot be empty", "errors.name_empty")
        ids = sorted(set(run_ids))

        def write(conn: sa.Connection) -> None:
            conn.execute(sa.delete(archived).where(archived.c.run_id.in_(ids)))
            there = conn.execute(sa.select(runs.c.id).where(runs.c.id.in_(ids))).scalars()
            rows = [{"run_id": run_id, "class_name": kept} for run_id in there]
            if rows:
                conn.execute(sa.insert(archived), rows)

        self._db.run(write, f"archive runs as the class {kept!r}")
        return kept

    def archived(self) -> dict[int, str]:
        """{run id: the name of the class it was archived under}."""
        query = sa.select(archived.c.run_id, archived.c.class_name)
        return dict(self._db.run(lambda conn: conn.execute(query).all()))

    def delete(self, run_id: int) -> None:
        """Remove the run's rows (metrics, snapshots and stored weights cascade) and then its
        weights folder.

        A run still training cannot be deleted (StoreError): it would have nowhere to save.
        One marked "running" whose process is gone is marked "unfinished" first, and goes.
        """
        self._check_exists(run_id)
        self.recover()

        def remove(conn: sa.Connection) -> str | None:
            row = _row(conn, run_id, lock=True)
            if row["status"] in ACTIVE_STATUSES:
                raise StoreError(
                    f"run {run_id} is still {row['status']}: stop it first, then delete it"
                )
            conn.execute(sa.delete(runs).where(runs.c.id == run_id))
            folder = _folder_or_none(row)
            if conn.execute(sa.select(runs.c.id).where(runs.c.folder == folder)).first():
                return None  # another row names it too (a copy made by hand): it stays
            return folder

        folder = self._db.run(remove, f"delete run {run_id}")
        if folder is not None and self.weights_dir is not None:
            shutil.rmtree(self.weights_dir / folder, ignore_errors=True)

    def _check_exists(self, run_id: int) -> None:
        """StoreError unless the store has a row `run_id`, readable or not."""
        self._db.run(lambda conn: _row(conn, run_id))

    def weights_path(self, run_id: int) -> Path:
        """The file of a run's weights (an SQLite store; StoreError with PostgreSQL, which
        keeps them in the database)."""
        record = self._with_weights(run_id)
        if self.weights_dir is None:
            raise StoreError(
                f"run {run_id}'s weights are kept in the run database at {self.where}, not in "
                "a file: export them (runs export)"
            )
        return self.weights_dir / record.folder / WEIGHTS_FILE

    def get_summary(self, run_id: int) -> RunRecord:
        """One run without its history: cheaper than get()."""
        return _record(self._db.run(lambda conn: _row(conn, run_id)))

    def read_weights(self, run_id: int) -> SavedWeights:
        """What run `run_id` trained, as saved. StoreError if it has none (it failed) or they
        cannot be read (a damaged file, a missing row)."""
        record = self._with_weights(run_id)
        return SavedWeights(record, *self._read_weights(record))

    def _with_weights(self, run_id: int) -> RunRecord:
        record = self.get_summary(run_id)
        if not record.has_weights:
            raise StoreError(f"run {run_id} has no saved weights (status: {record.status})")
        return record

    def _read_weights(self, record: RunRecord) -> tuple[dict[str, torch.Tensor], str]:
        """(the run's tensors, where they were read): its file, or its row in `weights`."""
        try:
            if self.weights_dir is not None:
                path = self.weights_dir / record.folder / WEIGHTS_FILE
                return load(paths.read_regular(path)), str(path)
            query = sa.select(weights.c.data).where(weights.c.run_id == record.id)
            data = self._db.run(lambda conn: conn.execute(query).scalar())
            if data is None:
                raise OSError(f"run {record.id} has no row in the weights table")
            return load(bytes(data)), f"the run database at {self.where}"
        except (SafetensorError, OSError) as error:
            raise StoreError(f"the weights of run {record.id} cannot be read ({error})") from None

    def check_export_target(self, target: Path) -> None:
        """StoreError if writing `target` would write over the store or its weights."""
        resolved = target.resolve()
        for file in self._db.files():
            same = target.exists() and file.exists() and os.path.samefile(target, file)
            if same or resolved == file.resolve():
                raise StoreError(
                    f"{target} is the run database: export to another file (nothing was written)"
                )
        if self.weights_dir is not None and resolved.is_relative_to(self.weights_dir.resolve()):
            raise StoreError(
                f"{target} is inside the run store's weights folder {self.weights_dir}: export "
                "elsewhere (nothing was written)"
            )


# -- the database, row by row ---------------------------------------------------------------------
def _recover(conn: sa.Connection) -> list[int]:
    """Mark "running" runs whose process is gone "unfinished" (inside a transaction). Only
    this machine's processes can be checked: a run trained on another is left to it."""
    query = sa.select(runs.c.id, runs.c.pid, runs.c.pid_started).where(
        runs.c.status == "running", sa.or_(runs.c.host.is_(None), runs.c.host == HOST)
    )
    rows = conn.execute(query).mappings().all()
    dead = [
        row["id"]
        for row in rows  # (a pid edited by hand, not a number: no process of it runs)
        if rundb.misfits(runs, row) or not process_alive(row["pid"], row["pid_started"])
    ]
    for run_id in dead:
        last_step = sa.select(sa.func.max(metrics.c.step)).where(metrics.c.run_id == run_id)
        last = conn.execute(last_step).scalar()
        conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.status == "running")
            .values(
                status="unfinished",
                reason=f"its process ended without finishing (last saved step: {last})",
                pid=None,
                pid_started=None,
            )
        )
    return dead


def _check_id(run_id: int) -> None:
    if run_id not in RUN_IDS:
        raise NoSuchRun(f"there is no run {run_id}")


def _row(conn: sa.Connection, run_id: int, lock: bool = False) -> sa.RowMapping:
    """Run `run_id`'s row (`lock`: held until the transaction ends); StoreError if none."""
    _check_id(run_id)
    query = sa.select(runs).where(runs.c.id == run_id)
    row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise NoSuchRun(f"there is no run {run_id}")
    return row


def _run_and_steps(
    conn: sa.Connection, run_id: int, after: int | None
) -> tuple[sa.RowMapping, list[dict], list[sa.RowMapping]]:
    """A run's row, and its metrics and snapshots after step `after` (None: all), in order:
    read in one transaction, so they agree with each other."""
    row = _row(conn, run_id)
    steps = [metrics.c[name] for name in METRIC_COLUMNS]
    history = sa.select(*steps).where(metrics.c.run_id == run_id).order_by(metrics.c.step)
    snaps = (
        sa.select(snapshots.c.step, snapshots.c.layers)
        .where(snapshots.c.run_id == run_id)
        .order_by(snapshots.c.step)
    )
    if after is not None:
        history = history.where(metrics.c.step > after)
        snaps = snaps.where(snapshots.c.step > after)
    records = [dict(r) for r in conn.execute(history).mappings()]
    for record in records:
        if wrong := rundb.misfits(metrics, record):
            raise StoreError(
                f"run {run_id} cannot be read: step {short_repr(record['step'])}'s {wrong[0]} is "
                f"{short_repr(record[wrong[0]])}"
            )
    return row, records, conn.execute(snaps).mappings().all()


def _parsed(run_id: int, snaps: list[sa.RowMapping]) -> list[dict]:
    try:
        return [{"step": r["step"], "layers": _layers(r["layers"])} for r in snaps]
    except (TypeError, ValueError, RecursionError):
        raise StoreError(
            f"run {run_id} cannot be read: a spectrum snapshot is not JSON of its layers' "
            "singular values"
        ) from None


def _layers(text: str) -> dict[str, dict]:
    """A snapshot's layers, {layer: {"sigma": [σ…], "delta_M": x, "delta_D": y, "shape": [d, k]}}
    (no shape in runs saved before snapshots recorded it), as core.lowrank.snapshot.model_snapshot
    wrote them; ValueError if the text holds anything else."""
    layers = json.loads(text)
    numbers = (int, float)
    fits = isinstance(layers, dict) and all(
        isinstance(layer, dict)
        and isinstance(layer.get("sigma"), list)
        and all(isinstance(sigma, numbers) for sigma in layer["sigma"])
        and isinstance(layer.get("delta_M"), numbers)
        and isinstance(layer.get("delta_D"), numbers)
        and ("shape" not in layer or _is_shape(layer["shape"]))
        for layer in layers.values()
    )
    if not fits:
        raise ValueError(text)
    return layers


def _is_shape(value: object) -> bool:
    """A matrix' shape as JSON: two positive whole numbers (true is no size, though an int)."""
    sizes = value if isinstance(value, list) else []
    return len(sizes) == 2 and all(type(n) is int and n > 0 for n in sizes)


def _check_row(conn: sa.Connection, run_id: int, folder: str) -> None:
    """StoreError unless the run's row is still there, and still the one that was created."""
    query = sa.select(runs.c.id).where(runs.c.id == run_id, runs.c.folder == folder)
    if conn.execute(query).first() is None:
        raise StoreError(_deleted_while_training(run_id))


def _insert_progress(
    conn: sa.Connection, run_id: int, history: list[dict], snaps: list[dict]
) -> None:
    """Metrics and snapshots, a step already saved replaced (the same step saved again)."""
    steps = [{"run_id": run_id, **{c: r.get(c) for c in METRIC_COLUMNS}} for r in history]
    rundb.upsert(conn, metrics, steps, ["run_id", "step"])
    layers = [
        {"run_id": run_id, "step": s["step"], "layers": json.dumps(s["layers"])} for s in snaps
    ]
    rundb.upsert(conn, snapshots, layers, ["run_id", "step"])


def _folder(row: sa.RowMapping) -> str:
    """The run's folder under runs/. A value that is not a uuid (written by hand, or by an
    attacker: "../..") is refused, so nothing outside runs/ is ever read or removed."""
    folder = row["folder"]
    if folder is None:
        return str(row["id"])  # schema 1
    if not isinstance(folder, str) or not FOLDER.fullmatch(folder):
        raise StoreError(f"run {row['id']} cannot be read: its folder {folder!r} is not valid")
    return folder


def _folder_or_none(row: sa.RowMapping) -> str | None:
    """_folder, or None for a folder that is not valid (and so must never be touched)."""
    try:
        return _folder(row)
    except StoreError:
        return None


def _record(row: sa.RowMapping) -> RunRecord:
    """The row as a RunRecord; StoreError naming the run if it cannot be read (_check_kinds,
    or a config that is not one)."""
    _check_kinds(row)
    try:
        config = RunConfig.from_dict(json.loads(row["config"]))
    except (TypeError, ValueError, RecursionError) as error:
        raise StoreError(
            f"run {row['id']} cannot be read: its config is not valid ({error})"
        ) from None
    return RunRecord(
        **{name: row[name] for name in FIELDS},
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        config=config,
        created=row["created"],
        torch_threads=row["torch_threads"],
        has_weights=bool(row["has_weights"]),
        folder=_folder(row),
    )


def _check_kinds(row: sa.RowMapping) -> None:
    """StoreError naming the run unless its row holds what LoRA Lab writes: an id it gives, and
    each column of its kind (a row edited by hand may hold 'yesterday' as its created)."""
    if row["id"] not in RUN_IDS:
        raise StoreError(f"run {row['id']} cannot be read: no run is given that id (1 to 2**63-1)")
    if wrong := rundb.misfits(runs, row):
        column = wrong[0]
        raise StoreError(
            f"run {row['id']} cannot be read: its {column} is {short_repr(row[column])}"
        )


def _deleted_while_training(run_id: int) -> str:
    return f"run {run_id} was deleted while it was training: its results were not saved"
