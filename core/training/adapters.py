"""Open an adapter trained elsewhere: a PEFT zip in, a saved run out.

A student uploads a .zip as LoRA Lab exports it (Compare page, `python -m core runs export`) or
as Hugging Face PEFT writes it (`save_pretrained`'s folder, zipped: adapter_config.json and
adapter_model.safetensors, perhaps inside one folder), and says which zoo model it was trained
on. The adapter is loaded onto that model, measured on a task, and saved in the run store like a
trained run (status "imported"), so the Spectra and Compare pages open it as any other.

The file comes from outside, so it is read with care: the zip must be small, no entry may point
outside it, and only the two adapter files are read. The weights are safetensors and the config
is JSON: nothing is ever unpickled. Anything wrong is a ValueError with a one-line message,
raised before the store is written to, so what was saved before stays as it was.

An adapter of any other model is only inspected (core.lowrank.inspection): `opened_adapter`
and `uploaded_adapter` open a file, a folder, a zip or an upload for that, within a size the
caller gives (core.common.limits: LORA_LAB_MAX_UPLOAD_MB).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

from torch import nn

from core.common import paths, text
from core.common.config import RunConfig
from core.lowrank import adapter_files, methods, peft_io
from core.lowrank.adapter_files import AdapterFile
from core.lowrank.lora import adapted_layers
from core.store.names import RUN_NAME_CHARS
from core.store.runs import RunStore
from core.training import record, zoo
from core.training.data import kind_of
from core.training.train import (
    RunResult,
    check_config,
    evaluate,
    load_task,
    scores,
    source_evaluation,
    source_split,
    step_record,
)

STATUS = "imported"
MAX_ZIP_BYTES = 64 * 2**20  # an adapter for the zoo's models is a few MB at most
MAX_FILE_BYTES = 256 * 2**20  # the weights once unpacked: a "zip bomb" stops here
# A zip larger than MAX_ZIP_BYTES (one the inspector reads: its limit is a setting) may unpack
# to this many times its own size: weights barely compress, a "zip bomb" does.
UNPACKED_PER_ZIP = 4
MAX_ENTRIES = 100
ADAPTER_FILES = (peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE)
PICKLED_WEIGHTS = "adapter_model.bin"  # PEFT's old format: a pickle, never opened here
UPLOADED_WEIGHTS = "uploaded.safetensors"  # an uploaded kohya file's name in the scratch folder


def import_adapter(
    zip_bytes: bytes,
    task: RunConfig,
    store: RunStore,
    owner: str = "local",
    filename: str = "adapter.zip",
) -> int:
    """Save the adapter in `zip_bytes` as a new run of `owner`, and return its id.

    `task.model` is the zoo model the adapter was trained on; the adapter is measured on
    `task`'s dataset, shift and seed. Its LoRA settings (rank, alpha, targets, scaling, DoRA)
    come from the adapter itself.
    """
    started = time.perf_counter()
    task.validate()
    with _scratch_folder() as folder:
        unpack(zip_bytes, Path(folder))
        data = load_task(task)
        base = zoo.load(task.model, num_classes=data.num_classes)
        model = peft_io.import_peft(base, folder)
    config = run_config(task, model)
    check_config(config, base)
    kind = kind_of(data.dataset)
    count = methods.count_parameters(model)
    source = source_split(task.model, data.num_classes)
    test = data.split("test")
    result = RunResult(
        config=config,
        status=STATUS,
        reason=f"from {text.one_line(filename, RUN_NAME_CHARS)}",  # a name as it came
        # Step 0 is the base model, as in a trained run; nothing was trained here.
        history=[step_record(kind, 0, None, evaluate(base, data.split("val")), 0.0, 0.0)],
        snapshots=[],
        **scores(kind, "test", evaluate(base, test), evaluate(model, test)),
        **scores(kind, "source", source_evaluation(base, source), source_evaluation(model, source)),
        trainable_params=count.trainable,
        total_params=count.total,
        num_classes=data.num_classes,
        seconds=time.perf_counter() - started,
        model=model,
        base=base,
        task=data,
    )
    return _save(store, result, owner)


def read_zip(path: str | Path, max_zip_bytes: int | None = None) -> bytes:
    """The bytes of an adapter zip on disk; a file too large (over `max_zip_bytes`, by default
    MAX_ZIP_BYTES) is not read to its end, and anything but a regular file (a named pipe, a
    device) is refused at once."""
    most = MAX_ZIP_BYTES if max_zip_bytes is None else max_zip_bytes
    try:  # one byte more tells unpack it is too big
        return paths.read_regular(paths.check_names(path), most + 1)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {paths.why(error, path)}.") from None


def unpack(zip_bytes: bytes, folder: Path, max_zip_bytes: int | None = None) -> None:
    """Write the zip's adapter_config.json and adapter_model.safetensors into `folder`.

    Only those two entries are read, and they are written under their own fixed names, so no
    entry name can reach outside `folder`. A zip with such a name is refused all the same:
    no honest export makes one. The zip may hold `max_zip_bytes` (default MAX_ZIP_BYTES), its
    weights MAX_FILE_BYTES unpacked, or UNPACKED_PER_ZIP times a larger `max_zip_bytes`.
    """
    most = MAX_ZIP_BYTES if max_zip_bytes is None else max_zip_bytes
    unpacked = MAX_FILE_BYTES if max_zip_bytes is None else UNPACKED_PER_ZIP * most
    unpacked = max(unpacked, MAX_FILE_BYTES)
    if len(zip_bytes) > most:
        raise ValueError(f"the file is over {most // 2**20} MB: too large for an adapter.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile:
        raise ValueError(
            "the file is not a zip: upload the .zip LoRA Lab exports, or a PEFT adapter folder "
            "(adapter_config.json + adapter_model.safetensors) zipped."
        ) from None
    with archive:
        for name, entry in _adapter_entries(archive.infolist()).items():
            content = _read(archive, entry, unpacked)
            _write(folder / name, content)


@contextlib.contextmanager
def opened_adapter(path: str | Path, max_zip_bytes: int) -> Iterator[AdapterFile]:
    """Any adapter file of any model, opened to inspect (core.lowrank.inspection): a PEFT folder,
    a kohya / diffusers .safetensors file, or a PEFT zip (of at most `max_zip_bytes`, unpacked
    into a temporary folder for as long as the `with` lasts)."""
    path = paths.check_names(path)
    if not (path.is_file() and zipfile.is_zipfile(path)):  # (is_file: no FIFO is opened)
        yield adapter_files.open_adapter(path)
        return
    with _scratch_folder() as folder:
        unpack(read_zip(path, max_zip_bytes), Path(folder), max_zip_bytes)
        yield adapter_files.open_adapter(folder)


@contextlib.contextmanager
def uploaded_adapter(data: bytes, filename: str, max_bytes: int) -> Iterator[AdapterFile]:
    """An uploaded adapter opened to inspect: a PEFT zip, or a kohya / diffusers .safetensors
    file (`filename` says which; the bytes are written under a fixed name of our own)."""
    if len(data) > max_bytes:
        raise ValueError(f"the file is over {max_bytes // 2**20} MB: too large for an adapter.")
    with _scratch_folder() as folder:
        if filename.lower().endswith(".safetensors"):
            weights = Path(folder) / UPLOADED_WEIGHTS
            _write(weights, data)
            yield adapter_files.open_adapter(weights)
        else:
            unpack(data, Path(folder), max_bytes)
            yield adapter_files.open_adapter(folder)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as error:
        raise ValueError(_no_scratch(path.parent.parent, error)) from None


def _scratch_folder() -> tempfile.TemporaryDirectory:
    """A temporary folder to unpack the adapter into (in $TMPDIR, or the system's)."""
    try:
        return tempfile.TemporaryDirectory(prefix="lora-lab-import-")
    except OSError as error:
        raise ValueError(_no_scratch(Path(tempfile.gettempdir()), error)) from None


def _no_scratch(where: Path, error: OSError) -> str:
    return (
        f"cannot unpack the adapter into the temporary folder {where} "
        f"({paths.why(error, where)}): make room there, or set TMPDIR to another folder. "
        "Nothing was saved"
    )


def _adapter_entries(entries: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """The zip's two adapter files, by name; ValueError for a zip that is not one adapter."""
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"the zip holds {len(entries)} entries: an adapter zip holds a few.")
    for entry in entries:
        if _escapes(entry.filename):
            raise ValueError(f"the zip is refused: its entry {entry.filename!r} points outside it.")
    files = [entry for entry in entries if not entry.is_dir()]
    found = {}
    for name in ADAPTER_FILES:
        matches = [entry for entry in files if PurePosixPath(entry.filename).name == name]
        if not matches:
            raise ValueError(_missing(name, files))
        if len(matches) > 1:
            raise ValueError(f"the zip holds {len(matches)} files named {name}: one adapter only.")
        found[name] = matches[0]
    folders = {PurePosixPath(entry.filename).parent for entry in found.values()}
    if len(folders) > 1:
        raise ValueError(f"{' and '.join(ADAPTER_FILES)} must be in the same folder of the zip.")
    return found


def _escapes(name: str) -> bool:
    """Whether a zip entry's name is absolute or climbs out ("../"), with either slash."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]


def _missing(name: str, files: list[zipfile.ZipInfo]) -> str:
    if name == peft_io.WEIGHTS_FILE and any(
        PurePosixPath(entry.filename).name == PICKLED_WEIGHTS for entry in files
    ):
        return (
            f"the zip holds {PICKLED_WEIGHTS}, a pickle, which LoRA Lab never opens: save the "
            "adapter as safetensors (PEFT's default, safe_serialization=True)."
        )
    return f"the zip has no {name}: an adapter needs {' and '.join(ADAPTER_FILES)}."


def _read(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, weights_limit: int) -> bytes:
    name = PurePosixPath(entry.filename).name
    if entry.flag_bits & 0x1:
        raise ValueError(f"{name} is password-protected in the zip.")
    limit = peft_io.MAX_CONFIG_BYTES if name == peft_io.CONFIG_FILE else weights_limit
    if entry.file_size > limit:
        raise ValueError(f"{name} unpacks to more than {_size(limit)}: too large for an adapter.")
    try:
        return archive.read(entry)  # reads no more than file_size, and checks the CRC
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as error:
        raise ValueError(f"the zip is damaged: {name} cannot be unpacked ({error}).") from None


def _size(limit: int) -> str:
    return f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit // 2**10} KB"


def run_config(task: RunConfig, model: nn.Module) -> RunConfig:
    """The imported run's config: the task, with the LoRA settings the adapter was made with.

    With it, core.training.rebuild builds the same layers and loads the saved A
    and B into them; the initialisation is then overwritten, so it is the plain default.
    """
    layers = adapted_layers(model)
    first = next(iter(layers.values()))
    return replace(
        task,
        method="lora",
        rank=first.rank,
        alpha=first.alpha,
        targets=sorted(layers),
        init="default",
        scaling="rslora" if first.use_rslora else "standard",
        dora=first.dora,
        dropout=getattr(first.dropout, "p", 0.0),
    )


def _save(store: RunStore, result: RunResult, owner: str) -> int:
    """Save the run as training does: the row, then the weights file, then the results."""
    run_id = store.create(result.config, owner)
    try:
        record.finish(store, run_id, result)
    except Exception as error:
        store.fail(run_id, str(error))
        raise
    return run_id
