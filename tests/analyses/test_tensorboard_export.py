"""core.analyses.tensorboard_export: what TensorBoard's own reader finds in the files is what the
run store holds, and nothing already in the export folder is written over."""

from __future__ import annotations

import io
import tempfile
import zipfile

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.analyses.tensorboard_export import export_tensorboard, tensorboard_zip
from core.common import config
from core.common.config import RunConfig
from core.training.record import train_and_save


@pytest.fixture
def record(store, one_thread):
    config = RunConfig(steps=12, eval_interval=4, snapshot_interval=4, dora=True)
    run_id, _ = train_and_save(config, store)
    return store.get(run_id)


def read(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_curves_and_spectra_read_back_as_stored(record, tmp_path):
    folder = export_tensorboard(record, tmp_path / "tb")
    assert folder == tmp_path / "tb" / f"run-{record.id}"
    events = read(folder)

    curves = {"train_loss": "loss/train", "val_loss": "loss/val", "val_acc": "accuracy/val"}
    for key, tag in curves.items():
        expected = [(row["step"], row[key]) for row in record.history if row[key] is not None]
        got = series(events, tag)
        assert [step for step, _ in got] == [step for step, _ in expected]
        assert [value for _, value in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert len(series(events, "loss/val")) == 4  # steps 0, 4, 8, 12

    (before_step, before), (after_step, after) = series(events, "accuracy/test")
    assert (before_step, after_step) == (0, 12)
    assert (before, after) == pytest.approx((record.test_acc_before, record.test_acc_after))

    snapshots = record.snapshots
    assert [s["step"] for s in snapshots] == [4, 8, 12]
    for layer in ("fc1", "fc2"):
        sigma = [snap["layers"][layer]["sigma"] for snap in snapshots]
        for i in range(len(sigma[0])):
            got = series(events, f"sigma/{layer}/{i + 1:02d}")
            assert [step for step, _ in got] == [4, 8, 12]
            assert [v for _, v in got] == pytest.approx([s[i] for s in sigma], rel=1e-6)
        magnitudes = [snap["layers"][layer]["delta_M"] for snap in snapshots]
        assert [v for _, v in series(events, f"dora/{layer}/delta_M")] == pytest.approx(magnitudes)
    config_text = events.Tensors("run/config/text_summary")[0].tensor_proto.string_val[0]
    assert '"dora": true' in config_text.decode()


def test_an_existing_run_folder_is_refused_and_left_alone(record, tmp_path):
    logdir = tmp_path / "tb"
    logdir.mkdir()
    (logdir / "notes.txt").write_text("mine")
    folder = export_tensorboard(record, logdir)
    files = {path: path.read_bytes() for path in folder.iterdir()}

    with pytest.raises(ValueError, match="already exists"):
        export_tensorboard(record, logdir)
    assert {path: path.read_bytes() for path in folder.iterdir()} == files
    assert (logdir / "notes.txt").read_text() == "mine"

    with pytest.raises(ValueError, match="is a file"):
        export_tensorboard(record, logdir / "notes.txt")


def test_the_zip_holds_the_run_folder_with_the_same_curves(record, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # where its temporary folder goes
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None  # read TMPDIR again
    try:
        content = tensorboard_zip(record)
    finally:
        tempfile.tempdir = None
    assert not any((tmp_path / "tmp").iterdir())  # the temporary folder is gone
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
        assert names and all(name.startswith(f"run-{record.id}/") for name in names)
        archive.extractall(tmp_path / "logs")
    events = read(tmp_path / "logs" / f"run-{record.id}")
    expected = [(r["step"], r["val_acc"]) for r in record.history if r["val_acc"] is not None]
    got = series(events, "accuracy/val")
    assert [step for step, _ in got] == [step for step, _ in expected]
    assert [value for _, value in got] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_a_text_run_exports_its_bits_per_character_and_its_samples(store, one_thread, tmp_path):
    settings = config.for_model("gpt").to_dict() | {
        "steps": 4,
        "eval_interval": 2,
        "snapshot_interval": 2,
    }
    run_id, _ = train_and_save(RunConfig.from_dict(settings), store)
    record = store.get(run_id)
    events = read(export_tensorboard(record, tmp_path / "tb"))
    evaluated = [row for row in record.history if row["val_bpc"] is not None]
    assert [row["step"] for row in evaluated] == [0, 2, 4]
    got = series(events, "bits_per_character/val")
    assert [step for step, _ in got] == [0, 2, 4]
    assert [v for _, v in got] == pytest.approx([row["val_bpc"] for row in evaluated], rel=1e-6)
    test = series(events, "bits_per_character/test")
    assert test == [
        (0, pytest.approx(record.test_bpc_before)),
        (4, pytest.approx(record.test_bpc_after)),
    ]
    samples = events.Tensors("sample/text_summary")
    assert [event.step for event in samples] == [0, 2, 4]
    for event, row in zip(samples, evaluated, strict=True):
        shown = event.tensor_proto.string_val[0].decode()
        lines = shown.split("\n")
        assert all(line.startswith("    ") for line in lines)  # a code block: shown as written
        assert "\n".join(line[4:] for line in lines) == row["sample"]
