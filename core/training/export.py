"""Exporting a LoRA run's adapter: the PEFT-format zip (adapter_config.json +
adapter_model.safetensors) that Hugging Face PEFT loads, for a download or a file.

The adapter is written from the run's rebuilt model (core.training.rebuild). A file is never
written over the store (RunStore.check_export_target), nor over an existing file unless asked:
then it is replaced whole, at once, never left half-written.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from core.common import paths
from core.lowrank import peft_io
from core.store.runs import RunStore, StoreError
from core.training.rebuild import rebuild


def adapter_zip(store: RunStore, run_id: int) -> bytes:
    """A LoRA run's adapter as the bytes of a PEFT-format zip (adapter_config.json +
    adapter_model.safetensors), for a download or export_peft."""
    record = store.get_summary(run_id)
    if record.config.method != "lora":
        raise StoreError(
            f"run {run_id} used method {record.config.method!r}: only LoRA runs have an "
            "adapter to export"
        )
    _, model = rebuild(store.read_weights(run_id))
    buffer = io.BytesIO()
    try:
        with tempfile.TemporaryDirectory() as folder:
            peft_io.export_peft(model, folder)
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(Path(folder).iterdir()):
                    archive.write(file, file.name)
    except OSError as error:  # $TMPDIR full, say
        where = tempfile.gettempdir()
        raise StoreError(
            f"cannot write the adapter of run {run_id} into the temporary folder {where} "
            f"({paths.why(error, where)}): make room there, or set TMPDIR to another folder"
        ) from None
    return buffer.getvalue()


def adapters_zip(store: RunStore, run_ids: Iterable[int]) -> bytes:
    """The finished LoRA runs among `run_ids` as one zip of their PEFT zips (adapter_zip),
    each named run-<id>-peft.zip: a class's adapters, each to import elsewhere (the Compare
    page's upload, `runs import`). Runs of other methods have no adapter and are left out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # zips inside: stored
        for run_id in sorted(run_ids):
            record = store.get_summary(run_id)
            if record.config.method == "lora" and record.status == "finished":
                archive.writestr(f"run-{run_id}-peft.zip", adapter_zip(store, run_id))
    return buffer.getvalue()


def export_peft(
    store: RunStore, run_id: int, zip_path: str | Path | None = None, force: bool = False
) -> Path:
    """Write a LoRA run's adapter as a PEFT-format zip; returns where.

    Never over the store (its database or weights), and never over an existing file
    unless `force`: then the file is replaced whole, at once. Without `zip_path`, a new
    file in <home>/exports/ (run-<id>-peft.zip, or -2, -3, … if that exists)."""
    content = adapter_zip(store, run_id)
    if zip_path:
        target = Path(zip_path)
        store.check_export_target(target)
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


def _write_new(target: Path, content: bytes, force: bool) -> None:
    """Write `content` as `target`: a new file (FileExistsError if there is one), or with
    `force` a replacement renamed into place whole. StoreError if it cannot be written."""
    if target.is_dir():
        raise StoreError(f"{target} is a folder: name the .zip file to write")
    if target.exists() and not target.is_file():  # /dev/null, a pipe: never replaced, forced or not
        raise StoreError(f"{target} is not a regular file: name a .zip file to write")
    try:
        paths.make_folder(target.parent)
    except paths.PathError as error:
        raise StoreError(f"cannot write {target}: {error.why}") from None
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
    """Write a temporary file next to `target` and rename it over `target`; if it cannot be
    written whole (a full disk), it is removed again."""
    partial = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False
        ) as file:
            partial = Path(file.name)
            file.write(content)
    except OSError as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {target}: {error.strerror}") from None
    try:
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {target}: {error.strerror}") from None
