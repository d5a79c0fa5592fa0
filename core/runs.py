"""The run history: every training run, its curves and spectra, in one SQLite file.

    <home>/runs.db                    runs, per-step metrics, spectrum snapshots (WAL mode)
    <home>/runs/<id>/weights.safetensors   what the run trained (adapters + head, or the
                                           changed weights of full fine-tuning)

Nothing finished is ever lost: a run's final state is written in one transaction, after its
weights file is complete on disk. A run whose process died (crash, kill, power cut) is found
still marked "running" with a dead process id the next time the store opens, and is marked
"unfinished", keeping what it logged. A file that is not a LoRA Lab database is never written
to: opening it raises a StoreError whose message says what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core import paths, peft_io
from core.config import RunConfig
from core.train import Event, RunResult, StopFlag, build_models, train

APP_ID = "lora-lab"
SCHEMA_VERSION = 1
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
METRIC_COLUMNS = ("step", "train_loss", "val_loss", "val_acc", "elapsed", "steps_per_s")
# A run in one of these is being trained (or about to be): it cannot be deleted.
ACTIVE_STATUSES = ("running", "queued")


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunStore:
    """The run database. Safe to share between threads; several processes may open it too."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.weights_dir = self.path.parent / "runs"
        _check_is_ours(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut too
            self._db.execute("PRAGMA foreign_keys=ON")
            # Idempotent, in one transaction: processes opening a new store at once agree.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta VALUES"
                f" ('app', '{APP_ID}'), ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
            self.recover()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreError(_unusable(self.path, str(error))) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- writing a run as it trains ---------------------------------------------------------
    def create(self, config: RunConfig, owner: str = "local", name: str | None = None) -> int:
        """A new run in status "running", owned by this process; returns its id."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO runs (name, owner, config, status, pid, created, torch_threads)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (
                    name or default_name(config),
                    owner,
                    json.dumps(config.to_dict()),
                    os.getpid(),
                    time.time(),
                    torch.get_num_threads(),
                ),
            )
        return int(cursor.lastrowid)

    def append(self, run_id: int, history: list[dict], snapshots: list[dict]) -> None:
        """Save progress (metrics and snapshots so far) in one transaction. StoreError if the
        run's row is gone (deleted while it trained)."""
        try:
            with self._lock, self._db:
                self._insert_progress(run_id, history, snapshots)
        except sqlite3.IntegrityError:  # the metrics' foreign key: no such run
            raise StoreError(_deleted_while_training(run_id)) from None

    def finish(self, run_id: int, result: RunResult) -> None:
        """Save a run's outcome: weights file first, then every row in one transaction.

        StoreError if the run's row is gone (deleted while it trained): then nothing is
        written, and a weights file already written is removed again."""
        has_weights = result.status != "failed"
        try:
            if has_weights:
                self.get_summary(run_id)  # gone already? then write no weights at all
                self._write_weights(run_id, result.model)
            with self._lock, self._db:
                # The run's row first: this takes the write lock, so nobody deletes it between
                # this check and the inserts below.
                updated = self._db.execute(
                    "UPDATE runs SET status=?, reason=?, pid=NULL, seconds=?, test_acc_before=?,"
                    " test_acc_after=?, trainable_params=?, total_params=?, num_classes=?,"
                    " has_weights=? WHERE id=?",
                    (
                        result.status,
                        result.reason,
                        result.seconds,
                        result.test_acc_before,
                        result.test_acc_after,
                        result.trainable_params,
                        result.total_params,
                        result.task.num_classes,
                        int(has_weights),
                        run_id,
                    ),
                )
                if updated.rowcount == 0:
                    raise StoreError(_deleted_while_training(run_id))
                self._db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                self._db.execute("DELETE FROM snapshots WHERE run_id = ?", (run_id,))
                self._insert_progress(run_id, result.history, result.snapshots)
        except (StoreError, sqlite3.IntegrityError):
            shutil.rmtree(self.weights_dir / str(run_id), ignore_errors=True)  # no orphan folder
            raise StoreError(_deleted_while_training(run_id)) from None

    def fail(self, run_id: int, reason: str) -> None:
        """Mark a run failed (an error other than a diverging loss), keeping its progress."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE runs SET status='failed', reason=?, pid=NULL WHERE id=?", (reason, run_id)
            )

    def recover(self) -> list[int]:
        """Mark runs whose process is gone "unfinished"; returns their ids."""
        with self._lock, self._db:
            rows = self._db.execute("SELECT id, pid FROM runs WHERE status='running'").fetchall()
            dead = [row["id"] for row in rows if row["pid"] is None or not _pid_alive(row["pid"])]
            for run_id in dead:
                last = self._db.execute(
                    "SELECT MAX(step) FROM metrics WHERE run_id=?", (run_id,)
                ).fetchone()[0]
                self._db.execute(
                    "UPDATE runs SET status='unfinished', reason=?, pid=NULL WHERE id=?",
                    (f"its process ended without finishing (last saved step: {last})", run_id),
                )
        return dead

    def _insert_progress(self, run_id: int, history: list[dict], snapshots: list[dict]) -> None:
        self._db.executemany(
            f"INSERT OR REPLACE INTO metrics (run_id, {', '.join(METRIC_COLUMNS)})"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *(record.get(c) for c in METRIC_COLUMNS)) for record in history],
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO snapshots (run_id, step, layers) VALUES (?, ?, ?)",
            [(run_id, snap["step"], json.dumps(snap["layers"])) for snap in snapshots],
        )

    def _write_weights(self, run_id: int, model: nn.Module) -> None:
        """Write to a temporary file and rename it: a reader never sees half a file."""
        folder = self.weights_dir / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / (WEIGHTS_FILE + ".partial")
        save_file(trained_tensors(model), partial)
        with open(partial, "rb") as file:
            os.fsync(file.fileno())  # on disk before the database says it is there
        os.replace(partial, folder / WEIGHTS_FILE)

    # -- reading ------------------------------------------------------------------------------
    def list(self, owner: str | None = None) -> list[RunRecord]:
        """Runs, newest first (only `owner`'s if given), without their history."""
        query = "SELECT * FROM runs" + (" WHERE owner = ?" if owner is not None else "")
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC", () if owner is None else (owner,))
            return [_record(row) for row in rows.fetchall()]

    def get(self, run_id: int) -> RunRecord:
        """One run with its per-step history and spectrum snapshots."""
        record = self.get_summary(run_id)
        with self._lock:
            metrics = self._db.execute(
                f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE run_id=? ORDER BY step",
                (run_id,),
            )
            record.history = [dict(r) for r in metrics.fetchall()]
            snaps = self._db.execute(
                "SELECT step, layers FROM snapshots WHERE run_id=? ORDER BY step", (run_id,)
            )
            record.snapshots = [
                {"step": r["step"], "layers": json.loads(r["layers"])} for r in snaps.fetchall()
            ]
        return record

    def rename(self, run_id: int, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("a run's name cannot be empty")
        with self._lock, self._db:
            if self._db.execute("UPDATE runs SET name=? WHERE id=?", (name, run_id)).rowcount == 0:
                raise StoreError(f"there is no run {run_id}")

    def delete(self, run_id: int) -> None:
        """Remove the run's rows (metrics and snapshots cascade) and then its weights.

        A run still training cannot be deleted (StoreError): it would have nowhere to save.
        One marked "running" whose process is gone is marked "unfinished" first, and goes.
        """
        self.recover()
        with self._lock, self._db:
            deleted = self._db.execute(
                f"DELETE FROM runs WHERE id=? AND status NOT IN {ACTIVE_STATUSES}", (run_id,)
            )
            if deleted.rowcount == 0:
                row = self._db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
                if row is None:
                    raise StoreError(f"there is no run {run_id}")
                raise StoreError(
                    f"run {run_id} is still {row['status']}: stop it first, then delete it"
                )
        shutil.rmtree(self.weights_dir / str(run_id), ignore_errors=True)

    def weights_path(self, run_id: int) -> Path:
        record = self.get_summary(run_id)
        if not record.has_weights:
            raise StoreError(f"run {run_id} has no saved weights (status: {record.status})")
        return self.weights_dir / str(run_id) / WEIGHTS_FILE

    def get_summary(self, run_id: int) -> RunRecord:
        """One run without its history: cheaper than get()."""
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"there is no run {run_id}")
        return _record(row)

    def load_run_model(self, run_id: int) -> tuple[nn.Module, nn.Module]:
        """(base model, trained model) of a saved run, rebuilt from its config and weights."""
        record = self.get_summary(run_id)
        path = self.weights_path(run_id)
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as error:
            raise StoreError(f"the weights of run {run_id} cannot be read ({error})") from None
        base, model = build_models(record.config, record.num_classes)
        missing = set(tensors) - set(model.state_dict())
        if missing:
            raise StoreError(f"the weights of run {run_id} do not fit its model: {sorted(missing)}")
        model.load_state_dict(tensors, strict=False)
        return base.eval(), model.eval()

    def export_peft(self, run_id: int, zip_path: str | Path | None = None) -> Path:
        """Write a LoRA run's adapter as a PEFT-format zip (adapter_config.json + weights)."""
        record = self.get_summary(run_id)
        if record.config.method != "lora":
            raise StoreError(
                f"run {run_id} used method {record.config.method!r}: only LoRA runs have an "
                "adapter to export"
            )
        _, model = self.load_run_model(run_id)
        zip_path = Path(zip_path or paths.home() / "exports" / f"run-{run_id}-peft.zip")
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            peft_io.export_peft(model, folder)
            with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(Path(folder).iterdir()):
                    archive.write(file, file.name)
        return zip_path


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run changed: its trainable parameters, plus for PiSSA the base weights of the
    adapted layers (PiSSA moves W0's top singular part into B A and keeps only the residual)."""
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if getattr(module, "init", None) == "pissa":
            tensors[f"{name}.base.weight"] = module.base.weight
    return {n: t.detach().cpu().contiguous().clone() for n, t in tensors.items()}


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        config=RunConfig.from_dict(json.loads(row["config"])),
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
    )


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
    if not path.exists() or path.stat().st_size == 0:
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
    if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
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
            store.fail(recorder.run_id, str(error))
        raise
    return recorder.run_id, result
