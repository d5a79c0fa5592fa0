"""The run history: every training run, its curves and spectra, in one SQLite file.

    <home>/runs.db                          runs, per-step metrics, spectrum snapshots (WAL)
    <home>/runs/<folder>/weights.safetensors   what the run trained (adapters + head, or the
                                               changed weights of full fine-tuning)

A run's folder is a random uuid (runs saved before schema 2: its id), so files are found by
something that cannot collide: a training process that outlives its store (the file was moved
or replaced) writes nothing into a new store, even one with a run of the same number; a write
checks that the row and its folder are the ones it created.

Nothing finished is ever lost: a run's final state is written in one transaction, after its
weights file is complete on disk. A run whose process died (crash, kill, power cut) is found
still marked "running" the next time the store opens, and is marked "unfinished", keeping
what it logged; a process id now used by another process does not keep it "running" (the
process's start time is kept with its id). A file that is not a LoRA Lab database is never
written to: opening it raises a StoreError whose message says what to do. Writes that fail
(a full disk, a read-only file) raise a StoreError and change nothing. Reading creates
nothing: a store that does not exist yet reads as empty, and a read-only one can be read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core import paths, peft_io
from core.config import RunConfig
from core.train import Event, RunResult, StopFlag, build_models, train

APP_ID = "lora-lab"
SCHEMA_VERSION = 3  # 2: each run's own folder (uuid) and its process's start time
# 3: the accuracy on the source task before and after (what a run forgot)
SQLITE_HEADER = b"SQLite format 3\x00"
WEIGHTS_FILE = "weights.safetensors"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    config TEXT NOT NULL,            -- RunConfig.to_dict() as JSON
    status TEXT NOT NULL,            -- running | finished | stopped | failed | unfinished
                                     -- | imported (an uploaded adapter: core.adapters)
    reason TEXT NOT NULL DEFAULT '',
    pid INTEGER,                     -- the process training it, while it runs
    created REAL NOT NULL,           -- seconds since the epoch
    seconds REAL,
    test_acc_before REAL,
    test_acc_after REAL,
    trainable_params INTEGER,
    total_params INTEGER,
    num_classes INTEGER,
    torch_threads INTEGER,           -- results are bit-identical only for equal thread counts
    has_weights INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    train_loss REAL, val_loss REAL, val_acc REAL, elapsed REAL, steps_per_s REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    layers TEXT NOT NULL,            -- {layer: {"sigma": [...], "delta_M": .., "delta_D": ..}}
    PRIMARY KEY (run_id, step)
);
"""
ADDED_COLUMNS = {  # columns of runs added since schema 1, added to an older store on opening
    "folder": "TEXT",  # its folder under runs/: a uuid; NULL (schema 1): the run's id
    "pid_started": "REAL",  # when the process `pid` started: a reused pid has another
    "source_acc_before": "REAL",  # RunResult.source_acc_*: NULL where there is no source task
    "source_acc_after": "REAL",
}
FOLDER = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: nothing else is ever a run's folder
METRIC_COLUMNS = ("step", "train_loss", "val_loss", "val_acc", "elapsed", "steps_per_s")
# A run in one of these is being trained (or about to be): it cannot be deleted.
ACTIVE_STATUSES = ("running", "queued")
# SQLite's answers when a store can be read but not written: open it read-only instead.
READ_ONLY_ERRORS = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_IOERR")
SAME_PROCESS_S = 1.0  # start times further apart than this are two processes with one pid


class StoreError(RuntimeError):
    """The run database cannot be used (or a run is missing); str() is the one-line message."""


@dataclass
class RunRecord:
    """A stored run. `history` and `snapshots` are filled by RunStore.get, empty in list()."""

    id: int
    name: str
    owner: str
    config: RunConfig
    status: str
    reason: str
    created: float
    seconds: float | None
    test_acc_before: float | None
    test_acc_after: float | None
    trainable_params: int | None
    total_params: int | None
    num_classes: int | None
    torch_threads: int | None
    has_weights: bool
    folder: str = field(default="", repr=False)  # its folder under runs/ (see _folder)
    source_acc_before: float | None = None  # accuracy on the source task (RunResult's)
    source_acc_after: float | None = None
    history: list[dict] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly fields for tables and the command line (no history)."""
        return {
            "run_id": self.id,
            "name": self.name,
            "owner": self.owner,
            "status": self.status,
            "reason": self.reason,
            "created": self.created,
            "seconds": self.seconds,
            "test_acc_before": self.test_acc_before,
            "test_acc_after": self.test_acc_after,
            "source_acc_before": self.source_acc_before,
            "source_acc_after": self.source_acc_after,
            "lr": self.config.learning_rate,  # the rate it trained at (the method's, if unset)
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "config": self.config.to_dict(),
        }


def comparable_runs(
    record: RunRecord,
    layer: str,
    candidates: Iterable[RunRecord],
    changed_layers: Callable[[int], Collection[str]],
) -> list[int]:
    """The ids of the candidates whose update of `layer` can be compared with `record`'s (the
    subspace similarity φ of two runs): the same model, so the same W0 and the same shape, and
    a change in that layer. `changed_layers(run_id)` names the layers a run changed (the caller
    decides how to find and keep them); a run it cannot read (StoreError) is left out."""
    ids = []
    for other in candidates:
        if other.id == record.id or other.config.model != record.config.model:
            continue
        with contextlib.suppress(StoreError):
            if layer in changed_layers(other.id):
                ids.append(other.id)
    return ids


def default_path() -> Path:
    return paths.home() / "runs.db"


def default_name(config: RunConfig) -> str:
    """A readable name such as "lora r=4 · mlp · mnist-5k/rotate"."""
    method = f"lora r={config.rank}" if config.method == "lora" else config.method
    task = config.dataset if config.shift == "none" else f"{config.dataset}/{config.shift}"
    return f"{method} · {config.model} · {task}"


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


def _process_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process that was `pid`, started at `started`, still runs. A row of schema 1
    has no start time: then any process with that id counts."""
    if pid is None:
        return False
    now = process_start(pid)
    if now is None:
        return False
    return started is None or not abs(now - started) > SAME_PROCESS_S  # (nan: cannot tell)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (device, inode), or None if there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class RunStore:
    """The run database. Safe to share between threads; several processes may open it too.

    The file is opened on first use and created on the first write, so a command that is
    refused, or only reads, leaves no empty database behind. If the file at `path` is moved
    or replaced while the store is open, the store follows the path (a server keeps working),
    and what this store had started in the old file is not written into the new one.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.weights_dir = self.path.parent / "runs"
        self.read_only: str | None = None  # why the open file cannot be written, if so
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._opened: tuple[int, int] | None = None  # the file _db has open
        self._empty: sqlite3.Connection | None = None  # what reading a missing store reads
        self._mine: dict[int, tuple[tuple[int, int] | None, str]] = {}  # run → (file, folder)
        self._connection(write=False)  # a foreign or damaged file is refused at once

    def close(self) -> None:
        with self._lock:
            for db in (self._db, self._empty):
                if db is not None:
                    db.close()
            self._db = self._empty = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the connection -------------------------------------------------------------------------
    def _connection(self, write: bool) -> sqlite3.Connection:
        """The open database: the file at `path` now (opened, or for writing created, here);
        to read a store that does not exist yet, an empty one in memory."""
        identity = _identity(self.path)
        if self._db is not None and (identity != self._opened or (write and self.read_only)):
            self._db.close()  # moved or replaced; or read-only before, perhaps not now
            self._db = None
        if self._db is None:
            if identity is None and not write:
                return self._empty_store()
            self._db = self._open()
            self._opened = _identity(self.path)
        return self._db

    def _open(self) -> sqlite3.Connection:
        """Connect to the file (creating it): set up or upgrade its tables, repair interrupted
        runs. A file that can be read but not written is opened read-only (`read_only` says
        why): reading works, each write is a StoreError."""
        _check_is_ours(self.path)
        self.read_only = None
        try:
            db = _connect(self.path)
        except sqlite3.DatabaseError as error:
            raise StoreError(_unusable(self.path, str(error))) from None
        try:
            _set_up(db)
        except sqlite3.OperationalError as error:
            db.close()
            if not self.path.is_file() or not str(error.sqlite_errorname).startswith(
                READ_ONLY_ERRORS
            ):
                raise StoreError(_unusable(self.path, str(error))) from None
            self.read_only = str(error)
            return _connect_read_only(self.path)
        except sqlite3.DatabaseError as error:
            db.close()
            raise StoreError(_unusable(self.path, str(error))) from None
        with contextlib.suppress(sqlite3.OperationalError), _transaction(db):
            _recover(db)  # (if this fails, the store can still be read)
        return db

    def _empty_store(self) -> sqlite3.Connection:
        if self._empty is None:
            self._empty = sqlite3.connect(":memory:", check_same_thread=False)
            self._empty.row_factory = sqlite3.Row
            _set_up(self._empty)
        return self._empty

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection(write=False)
            try:
                yield db
            except sqlite3.DatabaseError as error:
                raise StoreError(_unusable(self.path, str(error))) from None

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction that takes the write lock first, so what it reads stays true until
        it commits. Nothing is written if it fails; a full disk or a read-only store is a
        StoreError that says so ("cannot <what>: …")."""
        with self._lock:
            db = self._connection(write=True)
            if self.read_only:
                raise StoreError(_not_written(what, self.path, self.read_only))
            try:
                with _transaction(db):
                    yield db
            except sqlite3.OperationalError as error:
                with contextlib.suppress(sqlite3.Error):
                    db.rollback()
                raise StoreError(_not_written(what, self.path, str(error))) from None

    # -- writing a run as it trains ---------------------------------------------------------
    def create(self, config: RunConfig, owner: str = "local", name: str | None = None) -> int:
        """A new run in status "running", owned by this process; returns its id."""
        folder = uuid.uuid4().hex
        pid = os.getpid()
        with self._writing("start a run") as db:
            cursor = db.execute(
                "INSERT INTO runs (name, owner, config, status, pid, pid_started, created,"
                " torch_threads, folder) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    name or default_name(config),
                    owner,
                    json.dumps(config.to_dict()),
                    pid,
                    process_start(pid),
                    time.time(),
                    torch.get_num_threads(),
                    folder,
                ),
            )
            run_id = int(cursor.lastrowid)
            self._mine[run_id] = (self._opened, folder)
        return run_id

    def append(self, run_id: int, history: list[dict], snapshots: list[dict]) -> None:
        """Save progress (metrics and snapshots so far) in one transaction. StoreError if the
        run's row is gone (deleted while it trained), or the store cannot be written."""
        folder = self._own(run_id)
        with self._writing(f"save the progress of run {run_id}") as db:
            _check_row(db, run_id, folder)
            _insert_progress(db, run_id, history, snapshots)

    def finish(self, run_id: int, result: RunResult) -> None:
        """Save a run's outcome: weights file first, then every row in one transaction.

        StoreError if the run's row is gone (deleted while it trained) or the store cannot be
        written (disk full): then nothing is written, and a weights file already written is
        removed again."""
        folder = self._own(run_id)
        has_weights = result.status != "failed"
        if has_weights:
            with self._reading() as db:  # gone already? then write no weights at all
                _check_row(db, run_id, folder)
            self._write_weights(run_id, folder, result.model)
        try:
            with self._writing(f"save run {run_id}") as db:
                _check_row(db, run_id, folder)
                db.execute(
                    "UPDATE runs SET status=?, reason=?, pid=NULL, seconds=?, test_acc_before=?,"
                    " test_acc_after=?, source_acc_before=?, source_acc_after=?,"
                    " trainable_params=?, total_params=?, num_classes=?, has_weights=?"
                    " WHERE id=?",
                    (
                        result.status,
                        result.reason,
                        result.seconds,
                        result.test_acc_before,
                        result.test_acc_after,
                        result.source_acc_before,
                        result.source_acc_after,
                        result.trainable_params,
                        result.total_params,
                        result.task.num_classes,
                        int(has_weights),
                        run_id,
                    ),
                )
                db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                db.execute("DELETE FROM snapshots WHERE run_id = ?", (run_id,))
                _insert_progress(db, run_id, result.history, result.snapshots)
        except StoreError:
            shutil.rmtree(self.weights_dir / folder, ignore_errors=True)  # no orphan folder
            raise
        del self._mine[run_id]

    def fail(self, run_id: int, reason: str) -> None:
        """Mark a run failed, keeping its progress. Called while another error is handled, it
        never raises: if the store cannot be written (disk full), the run stays "running"
        until its process ends, and is then found "unfinished"."""
        with contextlib.suppress(StoreError):
            folder = self._own(run_id)
            with self._writing(f"mark run {run_id} failed") as db:
                db.execute(
                    "UPDATE runs SET status='failed', reason=?, pid=NULL WHERE id=? AND folder=?",
                    (reason, run_id, folder),
                )
            del self._mine[run_id]

    def recover(self) -> list[int]:
        """Mark runs whose process is gone "unfinished"; returns their ids. A store that does
        not exist or cannot be written has none to mark."""
        with self._lock:
            if self._connection(write=False) is self._empty or self.read_only:
                return []
            with self._writing("mark interrupted runs") as db:
                return _recover(db)

    def _own(self, run_id: int) -> str:
        """The folder of a run this store created; StoreError if the file at `path` is no longer
        the one it was created in (moved, deleted or replaced: its results have nowhere to go)."""
        opened, folder = self._mine.get(run_id, (None, ""))
        if not folder:
            raise StoreError(f"run {run_id} was not started by this process: it cannot save it")
        if opened != _identity(self.path):
            raise StoreError(
                f"the run store {self.path} was moved or replaced while run {run_id} trained: "
                "its results were not saved"
            )
        return folder

    def _write_weights(self, run_id: int, folder: str, model: nn.Module) -> None:
        """Write to a temporary file and rename it: a reader never sees half a file. If that
        fails (disk full), the partial file goes and StoreError says nothing was saved."""
        directory = self.weights_dir / folder
        partial = directory / (WEIGHTS_FILE + ".partial")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            save_file(trained_tensors(model), partial)
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
    def list(self, owner: str | None = None) -> list[RunRecord]:
        """Runs, newest first (only `owner`'s if given), without their history. A row that
        cannot be read is left out: listing() names it."""
        return self.listing(owner)[0]

    def listing(self, owner: str | None = None) -> tuple[list[RunRecord], dict[int, str]]:
        """(the runs, newest first, as list() gives them; {id: why} of rows that cannot be
        read, such as a config written by hand). One bad row never hides the others."""
        query = "SELECT * FROM runs" + (" WHERE owner = ?" if owner is not None else "")
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY id DESC", () if owner is None else (owner,))
            rows = rows.fetchall()
        records, unreadable = [], {}
        for row in rows:
            try:
                records.append(_record(row))
            except StoreError as error:
                unreadable[row["id"]] = str(error)
        return records, unreadable

    def get(self, run_id: int) -> RunRecord:
        """One run with its per-step history and spectrum snapshots."""
        record = self.get_summary(run_id)
        with self._reading() as db:
            metrics = db.execute(
                f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE run_id=? ORDER BY step",
                (run_id,),
            )
            record.history = [dict(r) for r in metrics.fetchall()]
            snaps = db.execute(
                "SELECT step, layers FROM snapshots WHERE run_id=? ORDER BY step", (run_id,)
            ).fetchall()
        try:
            record.snapshots = [
                {"step": r["step"], "layers": json.loads(r["layers"])} for r in snaps
            ]
        except (ValueError, RecursionError):
            raise StoreError(
                f"run {run_id} cannot be read: a spectrum snapshot is not JSON"
            ) from None
        return record

    def rename(self, run_id: int, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("a run's name cannot be empty")
        self._check_exists(run_id)  # (and a store not made yet is not made for this)
        with self._writing(f"rename run {run_id}") as db:
            if db.execute("UPDATE runs SET name=? WHERE id=?", (name, run_id)).rowcount == 0:
                raise StoreError(f"there is no run {run_id}")

    def delete(self, run_id: int) -> None:
        """Remove the run's rows (metrics and snapshots cascade) and then its weights.

        A run still training cannot be deleted (StoreError): it would have nowhere to save.
        One marked "running" whose process is gone is marked "unfinished" first, and goes.
        """
        self._check_exists(run_id)
        self.recover()
        with self._writing(f"delete run {run_id}") as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"there is no run {run_id}")
            if row["status"] in ACTIVE_STATUSES:
                raise StoreError(
                    f"run {run_id} is still {row['status']}: stop it first, then delete it"
                )
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))
            folder = _folder_or_none(row)
            if db.execute("SELECT 1 FROM runs WHERE folder=?", (folder,)).fetchone():
                folder = None  # another row names it too (a copy made by hand): it stays
        if folder is not None:
            shutil.rmtree(self.weights_dir / folder, ignore_errors=True)

    def _check_exists(self, run_id: int) -> None:
        """StoreError unless the store has a row `run_id`, readable or not."""
        with self._reading() as db:
            if db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise StoreError(f"there is no run {run_id}")

    def weights_path(self, run_id: int) -> Path:
        record = self.get_summary(run_id)
        if not record.has_weights:
            raise StoreError(f"run {run_id} has no saved weights (status: {record.status})")
        return self.weights_dir / record.folder / WEIGHTS_FILE

    def get_summary(self, run_id: int) -> RunRecord:
        """One run without its history: cheaper than get()."""
        with self._reading() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"there is no run {run_id}")
        return _record(row)

    def load_run_model(self, run_id: int) -> tuple[nn.Module, nn.Module]:
        """(base model, trained model) of a saved run, rebuilt from its config and weights.

        StoreError if the weights file does not fit the model its config builds (other names,
        shapes or kinds of number): it was damaged or replaced."""
        record = self.get_summary(run_id)
        path = self.weights_path(run_id)
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as error:
            raise StoreError(f"the weights of run {run_id} cannot be read ({error})") from None
        base, model = build_models(record.config, record.num_classes)
        expected = model.state_dict()
        missing = set(tensors) - set(expected)
        if missing:
            raise StoreError(f"the weights of run {run_id} do not fit its model: {sorted(missing)}")
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
                raise StoreError(
                    f"the weights of run {run_id} do not fit its model: {name} is "
                    f"{_described(tensor)} in {path}, {_described(expected[name])} in the model"
                )
        model.load_state_dict(tensors, strict=False)
        return base.eval(), model.eval()

    # -- exporting ------------------------------------------------------------------------------
    def adapter_zip(self, run_id: int) -> bytes:
        """A LoRA run's adapter as the bytes of a PEFT-format zip (adapter_config.json +
        adapter_model.safetensors), for a download or export_peft."""
        record = self.get_summary(run_id)
        if record.config.method != "lora":
            raise StoreError(
                f"run {run_id} used method {record.config.method!r}: only LoRA runs have an "
                "adapter to export"
            )
        _, model = self.load_run_model(run_id)
        buffer = io.BytesIO()
        with tempfile.TemporaryDirectory() as folder:
            peft_io.export_peft(model, folder)
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(Path(folder).iterdir()):
                    archive.write(file, file.name)
        return buffer.getvalue()

    def export_peft(
        self, run_id: int, zip_path: str | Path | None = None, force: bool = False
    ) -> Path:
        """Write a LoRA run's adapter as a PEFT-format zip; returns where.

        Never over the store (its database or weights), and never over an existing file
        unless `force`: then the file is replaced whole, at once. Without `zip_path`, a new
        file in <home>/exports/ (run-<id>-peft.zip, or -2, -3, … if that exists)."""
        content = self.adapter_zip(run_id)
        if zip_path:
            target = Path(zip_path)
            self._check_export_target(target)
            try:
                _write_new(target, content, force)
            except FileExistsError:
                raise StoreError(
                    f"{target} already exists: choose another file, or replace it with --force "
                    "(nothing was written)"
                ) from None
            return target
        exports = paths.home() / "exports"
        for number in range(1, 10_000):
            target = exports / f"run-{run_id}-peft{'' if number == 1 else f'-{number}'}.zip"
            with contextlib.suppress(FileExistsError):
                _write_new(target, content, force=False)
                return target
        raise StoreError(f"{exports} holds too many exports of run {run_id}: clear it out")

    def _check_export_target(self, target: Path) -> None:
        """StoreError if writing `target` would write over the store or its weights."""
        resolved = target.resolve()
        store_files = [Path(f"{self.path}{end}") for end in ("", "-wal", "-shm", "-journal")]
        for file in store_files:
            same = target.exists() and file.exists() and os.path.samefile(target, file)
            if same or resolved == file.resolve():
                raise StoreError(
                    f"{target} is the run database: export to another file (nothing was written)"
                )
        if resolved.is_relative_to(self.weights_dir.resolve()):
            raise StoreError(
                f"{target} is inside the run store's weights folder {self.weights_dir}: export "
                "to another file (nothing was written)"
            )


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run changed: its trainable parameters, plus for PiSSA the base weights of the
    adapted layers (PiSSA moves W0's top singular part into B A and keeps only the residual)."""
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if getattr(module, "init", None) == "pissa":
            tensors[f"{name}.base.weight"] = module.base.weight
    return {n: t.detach().cpu().contiguous().clone() for n, t in tensors.items()}


# -- the database, row by row ---------------------------------------------------------------------
def _connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode: each write is one explicit transaction (_writing)."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Read a store that cannot be written. A WAL database in a read-only folder cannot even
    make its shared-memory file: then it is read as immutable, as it is on disk."""
    for mode in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?{mode}", uri=True, check_same_thread=False, timeout=30
        )
        db.row_factory = sqlite3.Row
        try:
            db.execute("SELECT COUNT(*) FROM runs").fetchone()
            return db
        except sqlite3.DatabaseError as error:
            db.close()
            problem = str(error)
    raise StoreError(_unusable(path, problem))


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """All of it or nothing. The write lock is taken first, so what the transaction reads stays
    true until it commits (and two processes setting up one new store agree)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


def _set_up(db: sqlite3.Connection) -> None:
    """Create the tables or bring an older store's up to date. Writes nothing to a store that
    is up to date."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut too
    db.execute("PRAGMA foreign_keys=ON")
    with _transaction(db):
        for statement in SCHEMA.split(";"):
            db.execute(statement)
        have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in have:
                db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('app', ?)", (APP_ID,))
        db.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value WHERE value != excluded.value",
            (str(SCHEMA_VERSION),),
        )


def _recover(db: sqlite3.Connection) -> list[int]:
    """Mark "running" runs whose process is gone "unfinished" (inside a transaction)."""
    rows = db.execute("SELECT id, pid, pid_started FROM runs WHERE status='running'").fetchall()
    dead = [row["id"] for row in rows if not _process_alive(row["pid"], row["pid_started"])]
    for run_id in dead:
        last = db.execute("SELECT MAX(step) FROM metrics WHERE run_id=?", (run_id,)).fetchone()[0]
        db.execute(
            "UPDATE runs SET status='unfinished', reason=?, pid=NULL WHERE id=?",
            (f"its process ended without finishing (last saved step: {last})", run_id),
        )
    return dead


def _check_row(db: sqlite3.Connection, run_id: int, folder: str) -> None:
    """StoreError unless the run's row is still there, and still the one that was created."""
    row = db.execute("SELECT 1 FROM runs WHERE id=? AND folder=?", (run_id, folder)).fetchone()
    if row is None:
        raise StoreError(_deleted_while_training(run_id))


def _insert_progress(
    db: sqlite3.Connection, run_id: int, history: list[dict], snapshots: list[dict]
) -> None:
    db.executemany(
        f"INSERT OR REPLACE INTO metrics (run_id, {', '.join(METRIC_COLUMNS)})"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(run_id, *(record.get(c) for c in METRIC_COLUMNS)) for record in history],
    )
    db.executemany(
        "INSERT OR REPLACE INTO snapshots (run_id, step, layers) VALUES (?, ?, ?)",
        [(run_id, snap["step"], json.dumps(snap["layers"])) for snap in snapshots],
    )


def _folder(row: sqlite3.Row) -> str:
    """The run's folder under runs/. A value that is not a uuid (written by hand, or by an
    attacker: "../..") is refused, so nothing outside runs/ is ever read or removed."""
    folder = row["folder"] if "folder" in row.keys() else None  # noqa: SIM118 (in: values)
    if folder is None:
        return str(row["id"])  # schema 1
    if not isinstance(folder, str) or not FOLDER.fullmatch(folder):
        raise StoreError(f"run {row['id']} cannot be read: its folder {folder!r} is not valid")
    return folder


def _folder_or_none(row: sqlite3.Row) -> str | None:
    """_folder, or None for a folder that is not valid (and so must never be touched)."""
    try:
        return _folder(row)
    except StoreError:
        return None


def _record(row: sqlite3.Row) -> RunRecord:
    """The row as a RunRecord; StoreError naming the run if it cannot be read."""
    try:
        config = RunConfig.from_dict(json.loads(row["config"]))
    except (TypeError, ValueError, RecursionError) as error:
        raise StoreError(
            f"run {row['id']} cannot be read: its config is not valid ({error})"
        ) from None
    return RunRecord(
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        config=config,
        status=row["status"],
        reason=row["reason"],
        created=row["created"],
        seconds=row["seconds"],
        test_acc_before=row["test_acc_before"],
        test_acc_after=row["test_acc_after"],
        trainable_params=row["trainable_params"],
        total_params=row["total_params"],
        num_classes=row["num_classes"],
        torch_threads=row["torch_threads"],
        has_weights=bool(row["has_weights"]),
        folder=_folder(row),
        source_acc_before=row["source_acc_before"],
        source_acc_after=row["source_acc_after"],
    )


def _described(tensor: torch.Tensor) -> str:
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def _not_written(what: str, path: Path, why: str) -> str:
    return f"cannot {what}: {path} cannot be written ({why}). Nothing was changed in it"


def _write_new(target: Path, content: bytes, force: bool) -> None:
    """Write `content` as `target`: a new file (FileExistsError if there is one), or with
    `force` a replacement renamed into place whole. StoreError if it cannot be written."""
    if target.is_dir():
        raise StoreError(f"{target} is a folder: name the .zip file to write")
    if target.exists() and not target.is_file():  # /dev/null, a pipe: never replaced, forced or not
        raise StoreError(f"{target} is not a regular file: name a .zip file to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot write {target}: {error.strerror}") from None
    if force:
        _replace_whole(target, content)
        return
    try:
        file = open(target, "xb")  # noqa: SIM115 (closed below) — "x": never an existing file
    except FileExistsError:
        raise
    except OSError as error:
        raise StoreError(f"cannot write {target}: {error.strerror}") from None
    try:
        with file:
            file.write(content)
    except OSError as error:
        target.unlink(missing_ok=True)  # the half-written file is ours: it was new
        raise StoreError(f"cannot write {target}: {error.strerror}") from None


def _replace_whole(target: Path, content: bytes) -> None:
    """Write a temporary file next to `target` and rename it over `target`."""
    try:
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False
        ) as file:
            partial = Path(file.name)
            file.write(content)
    except OSError as error:
        raise StoreError(f"cannot write {target}: {error.strerror}") from None
    try:
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {target}: {error.strerror}") from None


# -- is this file ours? --------------------------------------------------------------------------
def _tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {row[0] for row in rows} - {"sqlite_sequence"}


def _deleted_while_training(run_id: int) -> str:
    return f"run {run_id} was deleted while it was training: its results were not saved"


def _unusable(path: Path, why: str) -> str:
    return (
        f"{path} cannot be used as the LoRA Lab run database ({why}). It was left untouched: "
        "move it away, or set LORA_LAB_HOME to another folder."
    )


def _check_is_ours(path: Path) -> None:
    """Raise StoreError unless `path` is missing, empty, or a LoRA Lab database in good order.

    The file is only ever read here. A first look opens it as immutable (no lock files, no
    side effects at all); as that look can catch a writer mid-checkpoint, a problem it finds
    is confirmed by a second, ordinary read-only look before it is reported.
    """
    if not path.exists():
        return
    if not path.is_file():  # a folder, or a pipe or device that a read could hang on
        raise StoreError(_unusable(path, "it is not a file"))
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StoreError(_unusable(path, "it is not an SQLite database"))
    if _problem(path, "mode=ro&immutable=1") and (problem := _problem(path, "mode=ro")):
        raise StoreError(_unusable(path, problem))


def _problem(path: Path, mode: str) -> str | None:
    """What is wrong with the database at `path`, or None if it is ours and sound."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
        try:
            tables = _tables(db)
            if not tables:
                return None
            if "meta" not in tables:
                return "it belongs to another program"
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            # Damage deeper in the file would otherwise surface later, in the middle of a query.
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        return str(error)
    if meta.get("app") != APP_ID:
        return "it belongs to another program"
    version = str(meta.get("schema_version", 0))
    if not version.isdigit():
        return f"it is damaged: its schema version is {version!r}"
    if int(version) > SCHEMA_VERSION:
        return "it was made by a newer LoRA Lab"
    return None if verdict == "ok" else f"it is damaged: {verdict}"


# -- training and saving in one call ---------------------------------------------------------------
class _Recorder:
    """Passes events on, and saves progress to the store at each evaluation, so a crash loses
    at most one eval interval. The run row is created at the "start" event: a config the
    model rejects (rank too large, unknown layer) fails before and leaves no row."""

    def __init__(self, store: RunStore, config: RunConfig, owner: str, forward: Callable) -> None:
        self.store, self.config, self.owner, self.forward = store, config, owner, forward
        self.run_id: int | None = None
        self.history: list[dict] = []
        self.snapshots: list[dict] = []

    def __call__(self, event: Event) -> None:
        if event.kind == "start":
            self.run_id = self.store.create(self.config, self.owner)
        elif event.kind == "step":
            self.history.append(event.data)
            if event.data["val_loss"] is not None:
                self.store.append(self.run_id, self.history, self.snapshots)
                self.history, self.snapshots = [], []
        elif event.kind == "snapshot":
            self.snapshots.append(event.data)
        self.forward(event)


def train_and_save(
    config: RunConfig,
    store: RunStore,
    owner: str = "local",
    on_event: Callable[[Event], None] | None = None,
    stop: StopFlag | None = None,
) -> tuple[int, RunResult]:
    """Train one run and keep it in the store; returns (run_id, result)."""
    recorder = _Recorder(store, config, owner, on_event or (lambda event: None))
    try:
        result = train(config, recorder, stop)
        store.finish(recorder.run_id, result)
    except Exception as error:
        if recorder.run_id is not None:
            store.fail(recorder.run_id, str(error))  # never raises: this error is the one
        raise
    return recorder.run_id, result
