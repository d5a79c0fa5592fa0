"""The run store: what goes in comes out, crashes lose nothing finished, foreign files stay as
they are, and what a run logs while it trains can be read from elsewhere as it comes. The tests
that take `store` run on both back ends (an SQLite file and a PostgreSQL database)."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from core.common.config import RunConfig, SettingError
from core.lowrank import peft_io
from core.store import rundb
from core.store.names import RUN_NAME_CHARS, default_name
from core.store.outcome import FIELDS, STEP_FIELDS, Step
from core.store.records import RunRecord, comparable_runs
from core.store.runs import RunStore, StoreError
from core.training import export
from core.training.rebuild import rebuild
from core.training.record import train_and_save
from core.training.train import Event
from tests.support.store import SMALL, outputs, outside

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread", "home")  # each test has its own home


def stored_weights(store: RunStore) -> int:
    """How many runs' weights the store keeps: files under its weights folder, or rows."""
    if store.weights_dir is None:
        return outside(store, "SELECT COUNT(*) FROM weights")[0][0]
    return len(list(store.weights_dir.rglob("*.safetensors"))) if store.weights_dir.exists() else 0


def test_a_run_comes_back_as_it_was_saved(store, home):
    config = RunConfig(shift="rotate", **SMALL)
    run_id, result = train_and_save(config, store, owner="alice")
    record = store.get(run_id)
    if store.path is not None:
        assert store.path == home / "runs.db" and store.where == str(home / "runs.db")
    else:  # the URL, without its password
        url = rundb.postgres_url(os.environ["LORA_LAB_DB"])
        assert store.where == url.render_as_string(hide_password=True) and "***" in store.where
    assert record.config == config and record.owner == "alice"
    assert record.status == "finished"
    assert record.history == result.history
    assert record.snapshots == result.snapshots
    summary = result.summary()
    for key in ("test_acc_before", "test_acc_after", "trainable_params", "total_params"):
        assert getattr(record, key) == summary[key]
    for key in ("source_acc_before", "source_acc_after", "lr"):
        assert record.summary()[key] == summary[key] is not None
    base, model = rebuild(store.read_weights(run_id))
    assert torch.equal(outputs(model), outputs(result.model))
    assert torch.equal(outputs(base), outputs(result.base))
    assert not torch.equal(outputs(model), outputs(base))


def test_a_runs_outcome_is_kept_whole_and_printed_whole(store):
    """A run's outcome is one dataclass: each of its fields is a column of the runs table, comes
    back from the store as the training reported it, and is in both summaries (the JSON the
    command line prints). A metric added to RunOutcome needs nothing else of the store."""
    assert set(FIELDS) <= set(rundb.runs.columns.keys())
    run_id, result = train_and_save(RunConfig(**SMALL), store)
    record = store.get_summary(run_id)
    assert record.outcome() == result.outcome()
    assert result.num_classes == 10 and result.source_acc_after is not None  # (not None == None)
    assert set(FIELDS) <= record.summary().keys() and set(FIELDS) <= result.summary().keys()


def test_a_runs_steps_are_kept_whole_field_by_field(store):
    """A step of the history is one dataclass (Step): each field is a column of the metrics
    table, every step the training reported comes back from the store as it was, and step 0 is
    the base model (no training loss). A figure added to Step needs nothing else of the store."""
    assert ["run_id", *STEP_FIELDS] == list(rundb.metrics.columns.keys())
    run_id, result = train_and_save(RunConfig(**SMALL), store)
    kept = store.get(run_id).history
    assert [Step(**step) for step in kept] == [Step(**step) for step in result.history]
    assert kept[0]["step"] == 0 and kept[0]["train_loss"] is None and kept[0]["val_acc"] > 0
    assert all(step.keys() == set(STEP_FIELDS) for step in kept)


@pytest.mark.parametrize(
    "settings",
    [
        {"init": "pissa"},  # its base keeps only the residual of W0: saved with the adapters
        {"dora": True, "scaling": "rslora"},
        {"method": "full"},
        {"method": "bitfit"},
        {"model": "cnn", "targets": "conv1,fc1", "rank": 2},
    ],
)
def test_every_kind_of_run_reloads_exactly(store, settings):
    run_id, result = train_and_save(RunConfig(**{**SMALL, **settings}), store)
    _, model = rebuild(store.read_weights(run_id))
    assert torch.equal(outputs(model), outputs(result.model))


def test_list_rename_delete(store):
    first, _ = train_and_save(RunConfig(steps=2), store, owner="alice")
    second, _ = train_and_save(RunConfig(steps=2, method="head"), store, owner="bob")
    assert [r.id for r in store.list()] == [second, first]
    assert [r.id for r in store.list(owner="alice")] == [first]
    store.rename(first, "my first run")
    assert store.get(first).name == "my first run"
    assert stored_weights(store) == 2
    store.delete(second)
    assert stored_weights(store) == 1
    assert [r.id for r in store.list()] == [first]
    with pytest.raises(StoreError, match="no run"):
        store.get(second)
    for table in ("metrics", "snapshots"):
        count = f"SELECT COUNT(*) FROM {table} WHERE run_id = :run"
        assert outside(store, count, run=second) == [(0,)]
        assert outside(store, count, run=first) != [(0,)]


def test_a_students_name_is_kept_per_owner_as_one_short_line(store):
    """What a student types is kept as one line of at most STUDENT_NAME_CHARS printable
    characters (read back from the table itself); empty forgets it; a name that is not one
    (control characters, too long) is refused and the one kept stays; others' names stay."""
    assert store.student_names() == {}
    assert store.name_student("a" * 32, "  Ann\tLee\n") == "Ann Lee"
    assert store.name_student("b" * 32, "Bob " + "x" * 36) == "Bob " + "x" * 36
    assert store.name_student("a" * 32, "Ann") == "Ann"  # a new name replaces the old one
    for refused in ("Bo\x00b", "\x1b[2J", "x" * 41):
        with pytest.raises(SettingError):
            store.name_student("b" * 32, refused)
    stored = outside(store, "SELECT owner, name FROM students ORDER BY owner")
    assert stored == [("a" * 32, "Ann"), ("b" * 32, "Bob " + "x" * 36)]
    assert store.name_student("b" * 32, " \n ") == ""
    assert store.student_names() == {"a" * 32: "Ann"}


def test_a_run_name_is_checked_as_a_students_is_and_a_refused_one_changes_nothing(store):
    run_id = store.create(RunConfig(steps=2))
    named = default_name(RunConfig(steps=2))
    for refused in ("", " \t ", "red\x1b[31m", "a\u202eb", "x" * (RUN_NAME_CHARS + 1), "x" * 10**5):
        with pytest.raises(SettingError):
            store.rename(run_id, refused)
        assert outside(store, "SELECT name FROM runs") == [(named,)]
    store.rename(run_id, "  my first\nLoRA <i>r4</i> ")
    assert outside(store, "SELECT name FROM runs") == [("my first LoRA <i>r4</i>",)]
    with pytest.raises(SettingError):
        store.create(RunConfig(), name="\x07")


def test_a_run_still_training_cannot_be_deleted(store):
    run_id = store.create(RunConfig())  # "running", owned by this (live) process
    with pytest.raises(StoreError, match="stop it first"):
        store.delete(run_id)
    assert store.get_summary(run_id).status == "running"
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    # as if that process had trained it and died
    outside(store, "UPDATE runs SET pid = :pid WHERE id = :run", pid=gone.pid, run=run_id)
    store.delete(run_id)  # found unfinished, so it goes
    assert store.list() == []


@pytest.mark.parametrize("when", ["start", "done"])
def test_a_run_deleted_while_training_fails_clearly_and_leaves_no_files(store, when):
    """Its row vanished (another process, an older version): a clear StoreError, no
    orphan runs/<id>/ folder, whether it was deleted early (progress) or late (outcome)."""

    def delete_behind_its_back(event):
        if event.kind == when:
            outside(store, "DELETE FROM runs")

    with pytest.raises(StoreError, match="deleted while it was training"):
        train_and_save(RunConfig(**SMALL), store, on_event=delete_behind_its_back)
    assert store.list() == []
    assert stored_weights(store) == 0
    assert store.weights_dir is None or not any(store.weights_dir.glob("*"))


def test_export_is_a_peft_adapter_that_loads_back(store, tmp_path):
    run_id, result = train_and_save(RunConfig(**SMALL), store)
    path = export.export_peft(store, run_id, tmp_path / "adapter.zip")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE]
        archive.extractall(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / peft_io.CONFIG_FILE).read_text())["r"] == 4
    reloaded = peft_io.import_peft(result.base, tmp_path / "adapter")
    assert torch.equal(outputs(reloaded), outputs(result.model))


def test_only_lora_runs_export(store):
    run_id, _ = train_and_save(RunConfig(method="head", steps=2), store)
    with pytest.raises(StoreError, match="only LoRA runs"):
        export.export_peft(store, run_id)


def test_a_diverged_run_is_kept_as_failed_without_weights(store):
    run_id, result = train_and_save(RunConfig(lr=100.0, optimizer="sgd", steps=30), store)
    record = store.get(run_id)
    assert record.status == "failed" and "learning rate" in record.reason
    assert record.history == result.history
    with pytest.raises(StoreError, match="no saved weights"):
        rebuild(store.read_weights(run_id))


def test_a_config_the_model_rejects_leaves_no_run(store):
    with pytest.raises(ValueError, match="min"):
        train_and_save(RunConfig(rank=300), store)
    assert store.list() == []


CRASHING_RUN = """
import torch
from core.store.runs import RunStore
from core.common.config import RunConfig, SettingError
from core.training.record import train_and_save

def progress(event):
    if event.kind == "eval" and event.step == 20:
        print("saved", flush=True)

torch.set_num_threads(1)
train_and_save(RunConfig(steps=100_000, eval_interval=10), RunStore(), "alice", progress)
"""


def test_a_killed_run_is_marked_unfinished_and_finished_runs_survive(store):
    finished, _ = train_and_save(RunConfig(steps=3), store)
    before = store.get(finished)
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "saved"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with RunStore() as reopened:
        killed = next(r for r in reopened.list() if r.id != finished)
        assert killed.status == "unfinished"
        assert "ended without finishing" in killed.reason
        assert len(reopened.get(killed.id).history) >= 11  # steps 0..10 at least were saved
        assert reopened.get(finished) == before


def test_a_run_of_a_live_process_is_not_marked_unfinished(store):
    run_id = store.create(RunConfig())
    with RunStore() as other:
        assert other.get(run_id).status == "running"


def test_another_store_reads_a_run_step_by_step_as_it_trains(store):
    """A page on another app server: its own RunStore on the same database finds the run among
    its owner's latest and polls steps_since with the last step it has. It sees the run grow
    while it trains (each evaluated step by the next evaluation), and reads every step and
    snapshot once, in order."""
    run_ids, history, snaps, statuses = [], [], [], []

    def read(viewer: RunStore) -> None:
        progress = viewer.steps_since(run_ids[0], history[-1]["step"] if history else -1)
        history.extend(progress.history)
        snaps.extend(progress.snapshots)
        statuses.append(progress.status)

    config = RunConfig(steps=12, eval_interval=3, snapshot_interval=3)
    with RunStore() as viewer:

        def watch(event: Event) -> None:
            if event.kind == "start":  # its row was made just before
                run_ids.extend(r.id for r in viewer.list(owner="student-7", limit=1))
            elif event.kind == "eval":
                read(viewer)
                saved = history[-1]["step"] if history else -1
                assert saved >= event.step - config.eval_interval

        run_id, result = train_and_save(config, store, owner="student-7", on_event=watch)
        read(viewer)
        for missing in (run_id + 1, 0, 2**64):
            with pytest.raises(StoreError, match=f"there is no run {missing}$"):
                viewer.steps_since(missing, -1)
    assert run_ids == [run_id]
    assert history == result.history and snaps == result.snapshots
    assert set(statuses[:-1]) == {"running"} and statuses[-1] == "finished"
    assert len(statuses) == 5 + 1  # at the evaluations of steps 0, 3, 6, 9, 12; at the end
    assert store.steps_since(run_id, 12).history == []


def test_the_latest_runs_of_an_owner_newest_first(store):
    made = [(owner, store.create(RunConfig(), owner=owner)) for _ in range(3) for owner in "ab"]
    alice = [run_id for owner, run_id in made if owner == "a"]
    assert [r.id for r in store.list(owner="a", limit=2)] == alice[:0:-1]
    assert [r.id for r in store.list(owner="a")] == alice[::-1]
    assert [r.id for r in store.list(limit=1)] == [made[-1][1]]
    assert store.list(owner="c", limit=5) == []


def test_a_run_training_on_another_machine_is_not_judged_by_this_one(store):
    """Process ids mean something only on their own machine: a run whose row names another
    host stays "running" here, whatever its pid; the same row on this host is repaired."""
    run_id = store.create(RunConfig())
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    moved = "UPDATE runs SET pid = :pid, host = :host WHERE id = :run"
    outside(store, moved, pid=gone.pid, host="another-machine", run=run_id)
    with RunStore() as other:
        assert other.recover() == [] and other.get_summary(run_id).status == "running"
    outside(store, moved, pid=gone.pid, host=socket.gethostname(), run=run_id)
    with RunStore() as other:
        assert other.get_summary(run_id).status == "unfinished"


def unchanged(path: Path):
    """A check that `path` still has exactly the bytes and timestamp it had now."""
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    return lambda: path.read_bytes() == content and path.stat().st_mtime_ns == mtime


def damaged_copy(path: Path, home: Path) -> Path:
    """A LoRA Lab database whose pages after the first are overwritten."""
    with RunStore(path) as store:
        train_and_save(RunConfig(steps=2), store)
    raw = bytearray(path.read_bytes())
    page = 4096
    raw[page:] = b"\xa5" * (len(raw) - page)
    (home / "damaged.db").write_bytes(bytes(raw))
    return home / "damaged.db"


@pytest.mark.parametrize("kind", ["not sqlite", "another program's", "damaged"])
def test_a_foreign_or_damaged_file_gets_a_clear_error_and_is_left_alone(home, kind):
    path = home / "runs.db"
    if kind == "not sqlite":
        path.write_bytes(b"these are my holiday photos\n" * 100)
    elif kind == "another program's":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE contacts (name TEXT)")
        db.commit()
        db.close()
    else:
        path = damaged_copy(home / "good.db", home)
    time.sleep(0.01)
    is_unchanged = unchanged(path)
    with pytest.raises(StoreError) as error:
        RunStore(path)
    message = str(error.value)
    assert str(path) in message and "left untouched" in message and "\n" not in message
    assert is_unchanged()
    if kind != "damaged":  # (confirming damage takes a read-only look, which adds lock files)
        assert [p.name for p in home.iterdir() if p.name.startswith(path.name)] == [path.name]


def record_of(run_id: int, model: str) -> RunRecord:
    """A run as the store lists it (no training needed to decide what compares)."""
    return RunRecord(
        id=run_id,
        name=f"run {run_id}",
        owner="alice",
        config=RunConfig(model=model),
        status="finished",
        reason="",
        created=0.0,
        seconds=1.0,
        test_acc_before=0.5,
        test_acc_after=0.9,
        source_acc_before=None,
        source_acc_after=None,
        trainable_params=10,
        total_params=100,
        num_classes=10,
        torch_threads=1,
        has_weights=True,
    )


def test_runs_compare_on_a_layer_when_the_model_is_the_same_and_they_changed_it():
    changed = {1: ["fc1", "fc2"], 2: ["fc1"], 3: ["fc2"], 4: ["fc1"], 5: ["fc1"]}
    models = {1: "mlp", 2: "mlp", 3: "mlp", 4: "cnn", 5: "mlp"}
    records = [record_of(run_id, model) for run_id, model in models.items()]

    def changed_layers(run_id: int) -> list[str]:
        if run_id == 5:
            raise StoreError("run 5's weights are gone")
        return changed[run_id]

    # not itself, not the run that left fc1 alone, not another model's fc1, not a broken run
    assert comparable_runs(records[0], "fc1", records, changed_layers) == [2]
    assert comparable_runs(records[0], "fc2", records, changed_layers) == [3]
    assert comparable_runs(records[3], "fc1", records, changed_layers) == []
