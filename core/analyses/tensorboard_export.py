"""Take a saved run elsewhere: its curves and per-layer singular values as TensorBoard events.

TensorBoard is the tracking tool most LoRA tutorials use, so a run exported here sits next to
a student's other experiments there (`tensorboard --logdir DIR`). The files are written by
TensorBoard's own writer (torch.utils.tensorboard.SummaryWriter), so any TensorBoard reads them.

Each run goes into a new folder DIR/run-<id>: TensorBoard shows each folder under a log
directory as one run, and nothing already in DIR is ever written over. Tags:

    loss/train, loss/val, accuracy/val, speed/steps_per_s    per step, as the run logged them
    bits_per_character/val         a text run's, at each evaluation (accuracy/val is then its
                                   next-character accuracy)
    accuracy/test, bits_per_character/test    before training (step 0) and after (the last
                                   step); bits for a text run only
    sample                         a text run's: what the model wrote from its prompt at each
                                   evaluation, as text (a code block: shown as written)
    sigma/<layer>/<i>              σ_i of the layer's delta_W at each snapshot (i = 01, 02, …)
    dora/<layer>/delta_M, dora/<layer>/delta_D    DoRA's magnitude and direction change
    run/config, run/summary        the config and the outcome, as JSON text

For a download (the Compare page), tensorboard_zip writes the same files in a temporary folder
and returns them as a zip: nothing is written into the user's folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

# The writer's thread class: only its exceptions are TensorBoard's to report (see below).
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch.utils.tensorboard import SummaryWriter

from core.common import paths
from core.store.records import RunRecord

CURVES = {  # history key → tag
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_acc": "accuracy/val",
    "val_bpc": "bits_per_character/val",
    "steps_per_s": "speed/steps_per_s",
}
TESTS = {"acc": "accuracy/test", "bpc": "bits_per_character/test"}  # a metric's field → tag


def run_folder(record: RunRecord, directory: str | Path) -> Path:
    """Where export_tensorboard writes a run: DIR/run-<id>."""
    return Path(directory) / f"run-{record.id}"


def export_tensorboard(record: RunRecord, directory: str | Path) -> Path:
    """Write a run's curves and per-layer σ (RunStore.get(run_id): with its history and
    snapshots) as TensorBoard event files into the new folder run_folder(record, directory),
    and return that folder. `directory` is made if missing; a run folder already there is a
    ValueError (export to another directory, or remove it first), and so is a `directory`
    that cannot be one (a file, a name too long, a read-only file system).

    All or nothing: if the files cannot be written whole (a full disk), the run folder, and
    the folders made for it, are removed again and the ValueError says why."""
    folder = run_folder(record, paths.check_names(directory))
    made = _missing_folders(folder)
    try:
        paths.make_folder(directory)
        folder.mkdir()
    except FileExistsError:
        raise ValueError(
            f"{folder} already exists: nothing was written. Export into another folder, or "
            "remove that one first."
        ) from None
    except (OSError, paths.PathError) as error:
        _remove(made)
        why = error.why if isinstance(error, paths.PathError) else paths.why(error, folder)
        raise ValueError(f"cannot export into {directory}: {why}") from None
    try:
        with _writer_thread_quiet(), SummaryWriter(log_dir=str(folder)) as writer:
            _write(writer, record)
            writer.flush()  # raises what the writer's thread met: else close() would hide it
    except OSError as error:
        _remove(made)
        raise ValueError(
            f"cannot write the TensorBoard files into {folder}: {paths.why(error, folder)}. "
            "Nothing was left there"
        ) from None
    return folder


@contextlib.contextmanager
def _writer_thread_quiet() -> Iterator[None]:
    """TensorBoard's writer writes in a thread of its own; what it meets (a full disk) ends
    that thread, whose exception Python prints as a traceback, and flush() raises it again
    here, where it becomes one line. Meanwhile the traceback of that thread only is kept
    quiet; any other thread's goes on to Python's hook as before."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.thread, _AsyncWriterThread):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, the outermost first."""
    missing = []
    for path in [folder, *folder.parents]:
        if os.path.lexists(path):
            break
        missing.append(path)
    return missing[::-1]


def _remove(made: list[Path]) -> None:
    """Remove the folders an export made (_missing_folders, the outermost first) with what it
    wrote in them: they did not exist a moment ago, so nothing else is in them."""
    if made:
        shutil.rmtree(made[0], ignore_errors=True)


def tensorboard_zip(record: RunRecord) -> bytes:
    """The files export_tensorboard writes, as the bytes of a zip holding the folder
    run-<id>/ (unzipped into a log directory, it is one run there). They are written into a
    temporary folder, removed again: nothing lands in the user's folders."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as directory:
        folder = export_tensorboard(record, directory)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.rglob("*")):
                archive.write(file, file.relative_to(directory).as_posix())
    return buffer.getvalue()


def _write(writer: SummaryWriter, record: RunRecord) -> None:
    elapsed = {row["step"]: row.get("elapsed") or 0.0 for row in record.history}

    def walltime(step: int) -> float:  # when the run logged that step
        return record.created + elapsed.get(step, 0.0)

    for row in record.history:
        for key, tag in CURVES.items():
            if row.get(key) is not None:
                writer.add_scalar(tag, row[key], row["step"], walltime(row["step"]))
        if row.get("sample") is not None:
            writer.add_text("sample", _verbatim(row["sample"]), row["step"], walltime(row["step"]))
    last = record.history[-1]["step"] if record.history else 0
    for field, tag in TESTS.items():
        before, after = (getattr(record, f"test_{field}_{when}") for when in ("before", "after"))
        for step, value in ((0, before), (last, after)):
            if value is not None:
                writer.add_scalar(tag, value, step, walltime(step))
    for snapshot in record.snapshots:
        step = snapshot["step"]
        for layer, values in snapshot["layers"].items():
            for i, sigma in enumerate(values["sigma"], start=1):
                writer.add_scalar(f"sigma/{layer}/{i:02d}", sigma, step, walltime(step))
            for key in ("delta_M", "delta_D"):
                writer.add_scalar(f"dora/{layer}/{key}", values[key], step, walltime(step))
    writer.add_text("run/config", _json(record.config.to_dict()), 0, record.created)
    writer.add_text("run/summary", _json(record.summary()), last, walltime(last))


def _verbatim(text: str) -> str:
    """Text shown as it is written, not as Markdown (TensorBoard renders text as Markdown): an
    indented code block, which no character of the text can end."""
    return "\n".join("    " + line for line in text.split("\n"))


def _json(values: dict) -> str:
    """Indented JSON as a Markdown code block (TensorBoard renders text as Markdown)."""
    return "```\n" + json.dumps(values, indent=2, ensure_ascii=False) + "\n```"
