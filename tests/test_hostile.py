"""Hostile input, row by row: adapter zips built here, faults in the run store, command lines,
and links (read by core.classroom.links, and opened on each page in Streamlit's AppTest).

Each row is one bad input or fault and what must come of it: exit status 2 and one line that
names the problem (never a traceback), or, where the command can still do its job, the job done
and the problem named; on a page, a message and no exception; and where nothing should change,
the LoRA Lab home byte for byte as it was (a sha256 of every file in it, before and after).
Commands run in-process through core.__main__.main, and in a subprocess only where the process
itself matters (a closed pipe, a user who cannot write the store).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from streamlit.testing.v1 import AppTest
from tensorboard.compat.tensorflow_stub.io import gfile as tb_gfile

from core.__main__ import main
from core.classroom import i18n, links
from core.common.config import BOUNDS, DEFAULT_LR, RunConfig, parse
from core.jobs import executors
from core.lowrank import peft_io
from core.store import rundb, runs
from core.store.names import RUN_NAME_CHARS
from core.store.runs import RunStore, StoreError
from core.training import data, export, record
from core.training import train as train_module
from core.training.rebuild import rebuild
from core.training.record import train_and_save
from core.training.train import diverged, train
from tests.support.app_session import open_page, shown
from tests.support.store import outside, zipped

REPO = Path(__file__).resolve().parent.parent
CONFIG, WEIGHTS, P = peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE, peft_io.PREFIX
SMALL = {"steps": 4, "eval_interval": 2, "snapshot_interval": 2}

pytestmark = pytest.mark.usefixtures("one_thread", "keep_threads")


# -- a LoRA Lab home to spoil ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA Lab home with one finished LoRA run: id 1, rank 4 on fc1 and fc2 of the MLP."""
    home = tmp_path_factory.mktemp("template")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with RunStore(home / "runs.db") as store:
            train_and_save(RunConfig(**SMALL), store)
    finally:
        torch.set_num_threads(threads)
    return home


@pytest.fixture(scope="module")
def adapter(template: Path) -> dict[str, bytes]:
    """The files of run 1's PEFT zip: {name: content}."""
    with RunStore(template / "runs.db") as store:
        content = export.adapter_zip(store, 1)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture
def lab(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own copy of the template home, as LORA_LAB_HOME."""
    home = tmp_path / "home"
    shutil.copytree(template, home)
    monkeypatch.setenv("LORA_LAB_HOME", str(home))
    return home


@pytest.fixture
def keep_threads():
    """Commands set a pool worker's thread count: give the next test its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def fingerprint(home: Path) -> dict[str, str]:
    """What is in `home`: a sha256 per file, and what every other entry is. SQLite's lock
    files are left out when they hold no data: the shared-memory index (-shm) that any reader
    of a WAL database may create, and an empty write-ahead log (-wal)."""
    if not home.is_dir():
        return {".": _kind(home)}
    return {
        str(path.relative_to(home)): _kind(path)
        for path in sorted(home.rglob("*"))
        if not (path.name.endswith("-shm") or (path.name.endswith("-wal") and not _size(path)))
    }


def _size(path: Path) -> int:
    return path.lstat().st_size


def _kind(path: Path) -> str:
    if path.is_symlink():
        return f"link to {os.readlink(path)}"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return "folder" if path.is_dir() else f"special {stat.S_IFMT(path.lstat().st_mode)}"


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    """`python -m core <argv>` in this process: (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(err: str, says: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert says in err, err


def weights_of(home: Path, run_id: int = 1) -> Path:
    with RunStore(home / "runs.db") as store:
        return store.weights_path(run_id)


# -- adapter zips ---------------------------------------------------------------------------------
def config(files: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    """The adapter with its config's keys changed (a value of `...` removes the key)."""
    settings = json.loads(files[CONFIG]) | changes
    settings = {key: value for key, value in settings.items() if value is not ...}
    return files | {CONFIG: json.dumps(settings).encode()}


def raw_config(text: bytes) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    return lambda files: files | {CONFIG: text}


def tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable:
    """A spoiler that edits the adapter's tensors in place."""

    def spoil(files: dict[str, bytes]) -> dict[str, bytes]:
        weights = safetensors.torch.load(files[WEIGHTS])
        change(weights)
        return files | {WEIGHTS: safetensors.torch.save(weights)}

    return spoil


def drop(*keys: str) -> Callable:
    return tensors(lambda weights: [weights.pop(P + key) for key in keys])


def add(key: str, value: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> Callable:
    return tensors(lambda weights: weights.__setitem__(P + key, value(weights)))


def renamed(old: str, new: str) -> Callable:
    return tensors(lambda weights: weights.__setitem__(P + new, weights.pop(P + old)))


def as_dtype(key: str, dtype: torch.dtype) -> Callable:
    return tensors(lambda weights: weights.__setitem__(P + key, weights[P + key].to(dtype)))


def entries(names: dict[str, str]) -> Callable:
    """The adapter's two files under other entry names: {CONFIG: name, WEIGHTS: name}."""
    return lambda files: {names.get(name, name): content for name, content in files.items()}


class Trap:
    """Unpickling this creates the file `marker`: the proof that a pickle was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


MARKER = Path(tempfile.gettempdir()) / f"lora-lab-unpickled-{os.getpid()}"
A1, B1, M1 = "fc1.lora_A.weight", "fc1.lora_B.weight", "fc1.lora_magnitude_vector"
nested = b"[" * 100_000 + b"]" * 100_000


def dora_magnitudes(fc1: torch.Tensor) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    """The adapter made DoRA: fc2's magnitude right (256 units), fc1's `fc1`."""

    def spoil(files: dict[str, bytes]) -> dict[str, bytes]:
        files = add(M1, lambda w: fc1)(config(files, use_dora=True))
        return add("fc2.lora_magnitude_vector", lambda w: torch.ones(256))(files)

    return spoil


def symlink_entry(files: dict[str, bytes]) -> bytes:
    """A zip whose weights entry is a symbolic link to /etc/passwd (unzip would follow it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(CONFIG, files[CONFIG])
        link = zipfile.ZipInfo(WEIGHTS)
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def encrypted_entry(files: dict[str, bytes]) -> bytes:
    """The zip with its weights entry flagged as encrypted (zipfile cannot write one, so the
    flag is set in the local header and the central directory by hand)."""
    content = bytearray(zipped(files))
    for signature, flags, name_length, name in (
        (b"PK\x03\x04", 6, 26, 30),
        (b"PK\x01\x02", 8, 28, 46),
    ):
        start = 0
        while (start := content.find(signature, start)) >= 0:
            size = int.from_bytes(content[start + name_length : start + name_length + 2], "little")
            if content[start + name : start + name + size] == WEIGHTS.encode():
                content[start + flags] |= 0x1
            start += 4
    return bytes(content)


def bomb_config(files: dict[str, bytes]) -> bytes:
    """A 64 MB adapter_config.json that packs to a few dozen KB."""
    padded = json.loads(files[CONFIG]) | {"padding": " " * 64 * 2**20}
    return zipped(files | {CONFIG: json.dumps(padded).encode()})


# (spoiler: files → files, or → zip bytes; what the one line must say)
ADAPTER_ROWS = [
    # F6: a weights key is a layer's name, never a pattern
    pytest.param(renamed(A1, "*.lora_A.weight"), "'*', which is not a layer", id="glob-star"),
    pytest.param(renamed(A1, "fc?.lora_A.weight"), "'fc?', which is not a layer", id="glob-mark"),
    pytest.param(renamed(A1, "fc[12].lora_A.weight"), "'fc[12]'", id="glob-brackets"),
    pytest.param(renamed(A1, "nope.lora_A.weight"), "'nope', which is not a layer", id="no-layer"),
    pytest.param(renamed(A1, ".lora_A.weight"), "'', which is not a layer", id="empty-layer"),
    pytest.param(renamed(A1, "fc1.base.lora_A.weight"), "'fc1.base'", id="inside-layer"),
    # F7: an adapter is complete
    pytest.param(drop(B1), "fc1 has no lora_B", id="only-A"),
    pytest.param(drop(A1), "fc1 has no lora_A", id="only-B"),
    pytest.param(lambda f: config(f, use_dora=True), "no lora_magnitude_vector", id="dora-no-m"),
    pytest.param(
        add(M1, lambda w: torch.ones(256)), "holds a DoRA magnitude", id="magnitude-not-dora"
    ),
    # F8: nothing of the base model but modules_to_save
    pytest.param(
        add("fc1.base.weight", lambda w: torch.zeros(256, 784)), "never replaces", id="base-W0"
    ),
    pytest.param(add("fc1.weight", lambda w: torch.zeros(256, 784)), "never replaces", id="fc1-W0"),
    pytest.param(add("fc2.bias", lambda w: torch.zeros(256)), "never replaces", id="unlisted-bias"),
    pytest.param(
        lambda f: config(f, modules_to_save=None), "'head.bias', which is neither", id="no-mts"
    ),
    pytest.param(lambda f: config(f, modules_to_save=["fc1"]), "'head.bias'", id="mts-is-a-target"),
    pytest.param(lambda f: config(f, modules_to_save="head"), "must be a list", id="mts-string"),
    pytest.param(
        add("head.scale", lambda w: torch.ones(1)),
        "'head.scale', which this model lacks",
        id="mts-extra",
    ),
    pytest.param(
        add("head.weight", lambda w: torch.zeros(3, 3)),
        "does not fit this model: head",
        id="mts-shape",
    ),
    pytest.param(
        add("fc1.lora_A.default.weight", lambda w: w[P + A1].clone()),
        "'fc1.lora_A.default.weight', which is neither",
        id="peft-memory-key",
    ),
    pytest.param(
        add("fc1.lora_embedding_A", lambda w: torch.zeros(4, 784)), "neither", id="embedding-key"
    ),
    # F9: floating point only
    pytest.param(as_dtype(A1, torch.int64), "holds int64 numbers", id="int64-A"),
    pytest.param(as_dtype(A1, torch.int32), "holds int32 numbers", id="int32-A"),
    pytest.param(as_dtype(B1, torch.bool), "holds bool numbers", id="bool-B"),
    pytest.param(as_dtype("head.weight", torch.uint8), "holds uint8", id="uint8-head"),
    # F5: the rank and the other settings
    pytest.param(
        raw_config(b'{"peft_type": "LORA", "r": 1e999, "lora_alpha": 8}'),
        "r must be a whole number ≥ 1 (got inf)",
        id="r-1e999",
    ),
    pytest.param(lambda f: config(f, r=4.7), "r must be a whole number ≥ 1 (got 4.7)", id="r-4.7"),
    pytest.param(lambda f: config(f, r=0), "r must be a whole number", id="r-0"),
    pytest.param(lambda f: config(f, r=-4), "r must be a whole number", id="r-negative"),
    pytest.param(lambda f: config(f, r=True), "needs the numbers r and lora_alpha", id="r-true"),
    pytest.param(lambda f: config(f, r="4"), "needs the numbers r and lora_alpha", id="r-string"),
    pytest.param(lambda f: config(f, r=...), "needs the numbers r and lora_alpha", id="r-missing"),
    pytest.param(lambda f: config(f, r=8), "r = 8: A must have r rows", id="r-not-A-rows"),
    pytest.param(lambda f: config(f, r=10**400), "A must have r rows", id="r-400-digits"),
    pytest.param(lambda f: config(f, r=4.0e300), "A must have r rows", id="r-1e300"),
    pytest.param(
        raw_config(b'{"peft_type": "LORA", "r": 1' + b"0" * 5000 + b', "lora_alpha": 8}'),
        "is not valid JSON",
        id="r-5000-digits",
    ),
    pytest.param(
        raw_config(b'{"peft_type": "LORA", "r": 4, "lora_alpha": 1e999}'),
        "lora_alpha must be a finite number > 0 (got inf)",
        id="alpha-1e999",
    ),
    pytest.param(
        raw_config(b'{"peft_type": "LORA", "r": 4, "lora_alpha": NaN}'),
        "lora_alpha must be a finite number > 0 (got nan)",
        id="alpha-NaN",
    ),
    pytest.param(lambda f: config(f, lora_alpha=-8), "lora_alpha must be", id="alpha-negative"),
    pytest.param(lambda f: config(f, lora_alpha=10**400), "lora_alpha must be", id="alpha-huge"),
    pytest.param(lambda f: config(f, lora_dropout=1.5), "lora_dropout must be", id="dropout-1.5"),
    pytest.param(lambda f: config(f, lora_dropout="x"), "lora_dropout must be", id="dropout-text"),
    pytest.param(lambda f: config(f, use_dora="yes"), "use_dora must be true or", id="dora-yes"),
    pytest.param(lambda f: config(f, use_rslora=1), "use_rslora must be true or", id="rslora-1"),
    pytest.param(lambda f: config(f, peft_type="IA3"), "only LoRA adapters", id="peft-type"),
    pytest.param(lambda f: config(f, init_lora_weights="pissa"), "default or gaussian", id="pissa"),
    pytest.param(
        lambda f: config(f, rank_pattern={"fc1": 2}), "per-layer ranks", id="rank-pattern"
    ),
    # the config file itself
    pytest.param(bomb_config, "adapter_config.json unpacks to more than 1 MB", id="config-bomb"),
    pytest.param(
        lambda f: config(f, padding="x" * 2**20), "unpacks to more than 1 MB", id="config-2MB"
    ),
    pytest.param(raw_config(nested), "nests too deeply", id="config-nested-100k"),
    pytest.param(raw_config(b"[1, 2]"), "not a JSON object", id="config-array"),
    pytest.param(raw_config(b"null"), "not a JSON object", id="config-null"),
    pytest.param(raw_config(b"\xff\xfe{}"), "is not valid JSON", id="config-not-utf8"),
    pytest.param(raw_config(pickle.dumps(Trap(MARKER))), "is not valid JSON", id="config-pickle"),
    # the weights file
    pytest.param(
        lambda f: f | {WEIGHTS: pickle.dumps(Trap(MARKER))},
        "not a safetensors",
        id="weights-pickle",
    ),
    pytest.param(
        lambda f: {CONFIG: f[CONFIG], "adapter_model.bin": pickle.dumps(Trap(MARKER))},
        "a pickle, which LoRA Lab never opens",
        id="pytorch-bin",
    ),
    pytest.param(lambda f: f | {WEIGHTS: f[WEIGHTS][:100]}, "not a safetensors", id="truncated"),
    pytest.param(lambda f: f | {WEIGHTS: b""}, "not a safetensors", id="weights-empty"),
    pytest.param(
        tensors(lambda w: w.__setitem__("fc1.lora_A.weight", w.pop(P + A1))),
        "does not hold PEFT keys",
        id="no-prefix",
    ),
    pytest.param(tensors(lambda w: w.clear()), "holds no LoRA weights", id="no-tensors"),
    pytest.param(
        tensors(lambda w: w[P + A1].__setitem__((0, 0), float("nan"))), "NaN or inf", id="NaN-A"
    ),
    pytest.param(
        tensors(lambda w: w[P + "head.bias"].fill_(float("inf"))), "NaN or inf", id="inf-head"
    ),
    pytest.param(
        add(A1, lambda w: torch.tensor(1.0)), "shape (), but adapter_config.json", id="A-0-dim"
    ),
    pytest.param(
        add(A1, lambda w: torch.zeros(4, 100)), "does not fit this model: fc1", id="A-columns"
    ),
    pytest.param(lambda f: config(f, r=300), "A must have r rows", id="r-above-min-d-k"),
    # issue 18 (18): finite factors whose product is not, and a magnitude of the wrong shape
    pytest.param(
        tensors(lambda w: [w[P + key].fill_(1e30) for key in (A1, B1)]),
        "the adapter's update of fc1 is not a finite number",
        id="factors-1e30",
    ),
    pytest.param(
        dora_magnitudes(torch.ones(2, 128)),
        "fc1.lora_magnitude_vector is (2, 128) in the file but (256,) in the model",
        id="dora-magnitude-2x128",
    ),
    # the zip
    pytest.param(lambda f: b"PK\x03\x04 but not a zip" * 10, "is not a zip", id="not-a-zip"),
    pytest.param(lambda f: zipped({}), "has no adapter_config.json", id="empty-zip"),
    pytest.param(entries({CONFIG: f"../../{CONFIG}"}), "points outside", id="zip-slip"),
    pytest.param(entries({CONFIG: f"..\\..\\{CONFIG}"}), "points outside", id="zip-slip-windows"),
    pytest.param(
        entries({CONFIG: f"/etc/{CONFIG}", WEIGHTS: f"/etc/{WEIGHTS}"}), "points outside", id="abs"
    ),
    pytest.param(entries({CONFIG: f"C:\\temp\\{CONFIG}"}), "points outside", id="drive-letter"),
    pytest.param(
        entries({CONFIG: f"a/{CONFIG}", WEIGHTS: f"b/{WEIGHTS}"}), "same folder", id="split"
    ),
    pytest.param(
        lambda f: f | {f"copy/{CONFIG}": f[CONFIG], f"copy/{WEIGHTS}": f[WEIGHTS]},
        "one adapter only",
        id="two-adapters",
    ),
    pytest.param(
        lambda f: f | {f"x{i}": b"" for i in range(150)}, "holds 152 entries", id="many-entries"
    ),
    pytest.param(symlink_entry, "not a safetensors", id="symlink-entry"),
    pytest.param(encrypted_entry, "password-protected", id="encrypted-entry"),
]


@pytest.mark.parametrize(("spoil", "says"), ADAPTER_ROWS)
def test_a_hostile_adapter_zip_is_one_line_and_the_store_is_unchanged(
    lab, adapter, tmp_path, capsys, spoil, says
):
    spoiled = spoil(dict(adapter))
    path = tmp_path / "adapter.zip"
    path.write_bytes(spoiled if isinstance(spoiled, bytes) else zipped(spoiled))
    before = fingerprint(lab)
    status, out, err = run(capsys, "runs", "import", path, "--model", "mlp", "--shift", "none")
    assert status == 2 and out == ""
    assert_one_line(err, says)
    assert fingerprint(lab) == before
    assert not MARKER.exists()  # no pickle was opened


def test_the_unspoiled_adapter_imports(lab, adapter, tmp_path, capsys):
    """The rows above fail for their spoiling alone: the zip they start from imports."""
    path = tmp_path / "adapter.zip"
    path.write_bytes(zipped(adapter))
    status, out, err = run(capsys, "runs", "import", path, "--model", "mlp", "--json")
    assert (status, err) == (0, "")
    imported = json.loads(out)  # r·(d + k) per adapted layer, and the whole head
    assert imported["status"] == "imported"
    assert imported["trainable_params"] == 4 * (256 + 784) + 4 * (256 + 256) + 10 * 256 + 10


LET_GO = """
import os, sys, time
from pathlib import Path
while True:
    time.sleep(20)
    for path in Path(sys.argv[1]).rglob("*"):
        if path.is_fifo():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting (ENXIO), or it went
                pass
"""


@pytest.fixture
def no_hang(tmp_path: Path):
    """A reader that waits on a named pipe under tmp_path (the bug these rows are about) is let
    go every 20 s: another process opens the pipe for writing and closes it again, so the
    reader reads nothing and the test fails rather than hangs. (Not a signal, nor a thread of
    this process: safetensors waits holding the GIL, and retries its open when interrupted.)"""
    process = subprocess.Popen([sys.executable, "-c", LET_GO, str(tmp_path)])
    yield
    process.kill()
    process.wait()


TMPDIR_FULL = "No space left on device): make room there, or set TMPDIR"


def tmpdir_full(owner: object, name: str) -> Callable:
    """A `put` that writes the zip, then makes `owner.name` fail as a full TMPDIR does."""

    def put(path: Path, content: bytes, mp: pytest.MonkeyPatch) -> None:
        path.write_bytes(content)
        mp.setattr(owner, name, no_space_oserror)

    return put


# issue 18 (15, 17): (put(path, the zip's bytes, monkeypatch): the file to import and the
# fault; what the one line says)
IMPORT_FILE_ROWS = [
    pytest.param(lambda path, content, mp: os.mkfifo(path), "not a regular file", id="fifo"),
    pytest.param(
        lambda path, content, mp: path.symlink_to("/dev/zero"), "not a regular file", id="dev-zero"
    ),
    pytest.param(tmpdir_full(Path, "write_bytes"), TMPDIR_FULL, id="tmpdir-full"),
    pytest.param(tmpdir_full(tempfile, "mkdtemp"), TMPDIR_FULL, id="tmpdir-full-no-folder"),
]


@pytest.mark.parametrize(("put", "says"), IMPORT_FILE_ROWS)
def test_an_adapter_file_that_cannot_be_read_or_unpacked_is_one_line_at_once(
    lab, adapter, tmp_path, capsys, monkeypatch, no_hang, put, says
):
    path = tmp_path / "adapter.zip"
    before = fingerprint(lab)
    put(path, zipped(adapter), monkeypatch)
    status, out, err = run(capsys, "runs", "import", path, "--model", "mlp")
    monkeypatch.undo()
    assert (status, out) == (2, "")
    assert_one_line(err, says)
    assert fingerprint(lab) == before


# -- the store: faults that must leave it as it is -----------------------------------------------
def db_run(home: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(home / "runs.db") as db:
        db.execute(sql, args)
    db.close()


def second_run(**columns: object) -> Callable[[Path], None]:
    """A fault: a copy of run 1 as run 2, with `columns` changed ("layers": the spectrum
    snapshots, copied too)."""

    def fault(home: Path) -> None:
        with sqlite3.connect(home / "runs.db") as db:
            names = [row[1] for row in db.execute("PRAGMA table_info(runs)") if row[1] != "id"]
            db.execute(
                f"INSERT INTO runs (id, {', '.join(names)}) SELECT 2, {', '.join(names)} "
                "FROM runs WHERE id = 1"
            )
            for column, value in columns.items():
                if column == "layers":
                    db.execute(
                        "INSERT INTO snapshots SELECT 2, step, ? FROM snapshots WHERE run_id=1",
                        (value,),
                    )
                else:
                    db.execute(f"UPDATE runs SET {column} = ? WHERE id = 2", (value,))
        db.close()

    return fault


def weights_replaced(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable:
    """A fault: run 1's weights file rewritten with `change` made to its tensors."""

    def fault(home: Path) -> None:
        path = weights_of(home)
        saved = safetensors.torch.load_file(path)
        change(saved)
        safetensors.torch.save_file(saved, path)

    return fault


def transposed_A(saved: dict[str, torch.Tensor]) -> None:
    saved["fc2.A"] = saved["fc2.A"].T.contiguous()  # 256×4 for 4×256: same keys, wrong shape


def replace_path(make: Callable[[Path], None], name: str = "runs.db") -> Callable:
    """A fault: `home/name` removed, and `make(path)` put in its place."""

    def fault(home: Path) -> None:
        path = home / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        make(path)

    return fault


def weights_fifo(home: Path) -> None:
    """Run 1's weights file replaced by a named pipe (FIFO)."""
    path = weights_of(home)
    path.unlink()
    os.mkfifo(path)


def foreign_runs_table(home: Path) -> None:
    """A database that says it is LoRA Lab's (its meta table) but whose runs table is another
    program's: the store must not alter it (adding its columns) to read it."""
    (home / "runs.db").unlink()
    with sqlite3.connect(home / "runs.db") as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        version = rundb.SCHEMA_VERSION
        db.execute(f"INSERT INTO meta VALUES ('app', 'lora-lab'), ('schema_version', '{version}')")
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, title TEXT)")
        db.execute("INSERT INTO runs (title) VALUES ('my thesis chapter 1')")
    db.close()


def home_is_a_file(home: Path) -> None:
    shutil.rmtree(home)
    home.write_text("I am a file, not a folder\n")


def no_fault(home: Path) -> None:
    """The home as the template made it."""


NEW_RUN = ["train", "--steps", "2", "--eval-interval", "1"]
# (fault, command, what the one line says)
STORE_ROWS = [
    # F11
    pytest.param(
        replace_path(Path.mkdir), ["runs", "list"], "it is not a file", id="db-is-a-folder"
    ),
    pytest.param(replace_path(Path.mkdir), NEW_RUN, "it is not a file", id="db-folder-train"),
    pytest.param(replace_path(os.mkfifo), ["runs", "list"], "it is not a file", id="db-is-a-fifo"),
    pytest.param(
        replace_path(lambda p: p.symlink_to("/dev/null")),
        ["runs", "show", 1],
        "not a file",
        id="db-devnull",
    ),
    pytest.param(
        home_is_a_file,
        ["runs", "list"],
        "is a file, not a folder): set LORA_LAB_HOME",
        id="home-file",
    ),
    pytest.param(home_is_a_file, NEW_RUN, "set LORA_LAB_HOME", id="home-file-train"),
    pytest.param(
        replace_path(lambda p: p.write_bytes(b"my thesis\n" * 99)),
        ["runs", "list"],
        "not an SQLite",
        id="db-foreign",
    ),
    # issue 18 (19)
    pytest.param(
        replace_path(lambda p: p.symlink_to(p)),
        ["runs", "list"],
        "it is a symbolic link that leads back to itself",
        id="db-symlink-loop",
    ),
    pytest.param(
        replace_path(lambda p: p.symlink_to(p)), NEW_RUN, "leads back to itself", id="loop-train"
    ),
    pytest.param(
        foreign_runs_table,
        ["runs", "list"],
        "belongs to another program: its table runs has columns title LoRA Lab never made",
        id="db-foreign-runs-table",
    ),
    pytest.param(
        foreign_runs_table, NEW_RUN, "its table runs has columns title", id="foreign-runs-train"
    ),
    pytest.param(
        lambda home: db_run(home, "UPDATE meta SET value='x' WHERE key='schema_version'"),
        ["runs", "list"],
        "its schema version is 'x'",
        id="schema-version-text",
    ),
    pytest.param(
        lambda home: db_run(home, "UPDATE meta SET value='99' WHERE key='schema_version'"),
        ["runs", "show", 1],
        "made by a newer LoRA Lab",
        id="schema-version-newer",
    ),
    # F12: right keys, wrong shapes (or kinds, or names) in a run's weights
    pytest.param(
        weights_replaced(transposed_A),
        ["spectra", 1],
        "fc2.A is (256, 4) float32",
        id="shape-spectra",
    ),
    pytest.param(
        weights_replaced(transposed_A),
        ["runs", "export", 1],
        "do not fit its model: fc2.A",
        id="shape-export",
    ),
    pytest.param(
        weights_replaced(lambda t: t.__setitem__("fc1.A", t["fc1.A"].to(torch.int64))),
        ["spectra", 1],
        "fc1.A is (4, 784) int64",
        id="dtype-spectra",
    ),
    pytest.param(
        weights_replaced(lambda t: t.__setitem__("fc1.base.weight", torch.zeros(2))),
        ["spectra", 1],
        "(2,) float32 in",
        id="extra-base-key",
    ),
    pytest.param(
        weights_replaced(lambda t: t.__setitem__("evil", torch.zeros(1))),
        ["spectra", 1],
        "do not fit its model: ['evil']",
        id="unknown-key",
    ),
    pytest.param(
        lambda home: weights_of(home).write_bytes(pickle.dumps(Trap(MARKER))),
        ["spectra", 1],
        "cannot be read",
        id="weights-pickle",
    ),
    pytest.param(
        lambda home: weights_of(home).unlink(), ["spectra", 1], "cannot be read", id="weights-gone"
    ),
    # issue 18 (17): a named pipe waits for a writer forever: it is refused at once
    pytest.param(weights_fifo, ["spectra", 1], "not a regular file", id="weights-fifo-spectra"),
    pytest.param(
        weights_fifo, ["runs", "export", 1], "not a regular file", id="weights-fifo-export"
    ),
    # F13: one unreadable run is named when asked for, and never hides the others
    pytest.param(
        second_run(config="{"), ["runs", "show", 2], "run 2 cannot be read", id="config-bad-json"
    ),
    pytest.param(
        second_run(config='{"rank": "four"}'),
        ["spectra", 2],
        "rank must be a whole number",
        id="config-type",
    ),
    pytest.param(
        second_run(config='{"wings": 2}'),
        ["runs", "export", 2],
        "unknown setting(s) ['wings']",
        id="config-key",
    ),
    pytest.param(
        second_run(config="[" * 100_000 + "]" * 100_000),
        ["runs", "show", 2],
        "run 2 cannot be read",
        id="config-deep",
    ),
    pytest.param(
        second_run(layers="{not json"),
        ["runs", "show", 2],
        "snapshot is not JSON",
        id="snapshot-bad",
    ),
    pytest.param(
        second_run(folder="../../.."),
        ["runs", "show", 2],
        "its folder '../../..' is not valid",
        id="folder-escapes",
    ),
    pytest.param(
        second_run(folder="../../.."), ["spectra", 2], "is not valid", id="folder-escapes-spectra"
    ),
    # F15: a live process, started when the row says, is training it: it stays, and is not deleted
    pytest.param(
        lambda home: db_run(
            home,
            "UPDATE runs SET status='running', pid=?, pid_started=? WHERE id=1",
            os.getpid(),
            psutil.Process().create_time(),
        ),
        ["runs", "delete", 1],
        "run 1 is still running: stop it first",
        id="running-delete",
    ),
    # missing runs
    pytest.param(lambda home: None, ["runs", "show", 7], "there is no run 7", id="show-missing"),
    pytest.param(
        lambda home: None, ["runs", "delete", 7], "there is no run 7", id="delete-missing"
    ),
    pytest.param(
        lambda home: None, ["runs", "rename", 7, "x"], "there is no run 7", id="rename-missing"
    ),
    # a run's name is checked as a student's is (issue 18): no control codes, no 100 kB
    pytest.param(
        no_fault,
        ["runs", "rename", 1, "\x1b]0;owned\x07\x1b[2J\x1b[31mred"],
        "a name cannot hold control characters (U+001B)",
        id="rename-escape",
    ),
    pytest.param(
        no_fault, ["runs", "rename", 1, "left\u202ereversed"], "(U+202E)", id="rename-bidi"
    ),
    pytest.param(
        no_fault,
        ["runs", "rename", 1, "x" * 100_000],
        "a name has at most 100 characters, this one has 100000",
        id="rename-100kB",
    ),
    pytest.param(
        no_fault, ["runs", "rename", 1, " \t "], "a run's name cannot be empty", id="rename-blank"
    ),
    # F1: ids past SQLite's 64 bits, zero and negative ids name no run
    pytest.param(no_fault, ["runs", "show", 2**63], f"there is no run {2**63}", id="show-2**63"),
    pytest.param(
        no_fault, ["runs", "delete", 2**64], f"there is no run {2**64}", id="delete-2**64"
    ),
    pytest.param(
        no_fault, ["runs", "rename", 2**63, "x"], f"there is no run {2**63}", id="rename-2**63"
    ),
    pytest.param(
        no_fault, ["runs", "export", 2**63], f"there is no run {2**63}", id="export-2**63"
    ),
    pytest.param(no_fault, ["spectra", 2**64], f"there is no run {2**64}", id="spectra-2**64"),
    pytest.param(no_fault, ["spectra", 10**23], f"there is no run {10**23}", id="spectra-10**23"),
    pytest.param(no_fault, ["runs", "show", 0], "there is no run 0", id="show-0"),
    pytest.param(no_fault, ["runs", "delete", -1], "there is no run -1", id="delete-negative"),
    pytest.param(no_fault, ["spectra", -(2**63) - 1], "there is no run -9223", id="spectra-min"),
    pytest.param(
        lambda home: db_run(home, "UPDATE runs SET id=? WHERE id=1", 2**63 - 1),
        ["runs", "show", 2**63 - 1 + 1],
        f"there is no run {2**63}",
        id="show-past-the-last-id",
    ),
    pytest.param(
        lambda home: db_run(home, "UPDATE runs SET id=? WHERE id=1", 2**63 - 1),
        NEW_RUN,
        "a run already has the last id a run can have",
        id="train-after-the-last-id",
    ),
    # a row edited by hand: named, never a traceback
    pytest.param(
        weights_replaced(lambda t: t["fc1.A"].fill_(float("nan"))),
        ["spectra", 1],
        "the weights of run 1 hold NaN or inf: fc1.A",
        id="nan-weights-spectra",
    ),
    pytest.param(
        weights_replaced(lambda t: t["fc2.B"].fill_(float("-inf"))),
        ["runs", "export", 1],
        "hold NaN or inf: fc2.B",
        id="inf-weights-export",
    ),
    pytest.param(
        second_run(config="[]"), ["runs", "show", 2], "settings must be a JSON object", id="cfg-[]"
    ),
    pytest.param(
        second_run(config="null"), ["spectra", 2], "settings must be a JSON object", id="cfg-null"
    ),
    pytest.param(
        second_run(config='{"shift_params": {"angle": [[[30]]]}}'),
        ["runs", "show", 2],
        "shift_params must be a JSON object of numbers and text",
        id="cfg-nested-shift-params",
    ),
    pytest.param(
        second_run(config='{"model": 5}'),
        ["runs", "show", 2],
        "model must be text",
        id="cfg-model-5",
    ),
    pytest.param(
        second_run(config='{"seed": 18446744073709551616}'),
        ["spectra", 2],
        "run 2 cannot be rebuilt from its config",
        id="cfg-seed-2**64",
    ),
    pytest.param(
        second_run(created="yesterday"),
        ["runs", "show", 2],
        "run 2 cannot be read: its created is 'yesterday'",
        id="created-text",
    ),
    pytest.param(
        second_run(test_acc_after="high"),
        ["runs", "show", 2],
        "its test_acc_after is 'high'",
        id="accuracy-text",
    ),
    pytest.param(
        lambda home: db_run(home, "UPDATE metrics SET val_acc = 'high' WHERE step = 2"),
        ["runs", "show", 1],
        "run 1 cannot be read: step 2's val_acc is 'high'",
        id="metric-text",
    ),
    pytest.param(
        second_run(has_weights="yes"), ["spectra", 2], "its has_weights is 'yes'", id="flag-text"
    ),
    pytest.param(
        second_run(num_classes=10**12),
        ["spectra", 2],
        "a classifier needs from 2 to 1000 classes, got 1000000000000",
        id="classes-10**12",
    ),
    pytest.param(
        second_run(layers='{"fc1": {"sigma": "abc", "delta_M": 0, "delta_D": 0}}'),
        ["runs", "show", 2],
        "snapshot is not JSON of its layers' singular values",
        id="snapshot-sigma-text",
    ),
    pytest.param(
        second_run(layers="[1, 2]"),
        ["runs", "show", 2, "--json"],
        "snapshot is not JSON of its layers' singular values",
        id="snapshot-list",
    ),
]


@pytest.mark.parametrize(("fault", "argv", "says"), STORE_ROWS)
def test_a_store_fault_is_one_line_and_changes_nothing(lab, capsys, no_hang, fault, argv, says):
    fault(lab)
    before = fingerprint(lab)
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert_one_line(err, says)
    assert fingerprint(lab) == before
    assert not MARKER.exists()


# A name as a row edited by hand (or a store of an older version) may hold it: it clears the
# screen, retitles the terminal, and its line break would forge a row of `runs list`.
FORGED = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\n2  finished  0.999  forged"


@pytest.mark.parametrize(
    ("argv", "lines"),
    [(["runs", "list"], 2), (["runs", "show", 1], None), (["runs", "list", "--json"], 1)],
    ids=["list", "show", "json"],
)
def test_stored_text_with_control_codes_prints_as_text_on_its_own_line(lab, capsys, argv, lines):
    db_run(lab, "UPDATE runs SET name=?, reason=? WHERE id=1", FORGED, "\x1b[2Jwhy\nnot")
    status, out, err = run(capsys, *argv)
    assert (status, err) == (0, "")
    assert all(c.isprintable() for line in out.splitlines() for c in line), out
    if lines is not None:
        assert len(out.splitlines()) == lines  # (a header and run 1 as text: no forged row)
    else:
        assert "name: \\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\n2  finished" in out
        assert "reason: \\x1b[2Jwhy\\nnot" in out


def test_an_imported_files_name_is_kept_as_one_line_of_text(lab, adapter, tmp_path, capsys):
    path = tmp_path / ("\x1b[2J\nfrom evil " + "x" * 200 + ".zip")
    path.write_bytes(zipped(adapter))
    status, out, err = run(capsys, "runs", "import", path, "--model", "mlp", "--json")
    assert (status, err) == (0, "")
    reason = json.loads(out)["reason"]
    assert reason.startswith("from \\x1b[2J\\nfrom evil xxx") and reason.endswith("…")
    assert len(reason) == len("from ") + RUN_NAME_CHARS and reason.isprintable()


UNREADABLE = {
    "config-not-json": second_run(config="{"),
    "config-unknown-key": second_run(config='{"wings": 2}'),
    "config-wrong-type": second_run(config='{"rank": "four"}'),
    "folder-escapes": second_run(folder="../../.."),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_runs_list_lists_the_readable_runs_and_names_the_unreadable_one(lab, capsys, case):
    UNREADABLE[case](lab)
    before = fingerprint(lab)
    status, out, err = run(capsys, "runs", "list", "--json")
    assert status == 0
    assert [r["run_id"] for r in json.loads(out)] == [1]
    assert err.startswith("warning: run 2 cannot be read") and err.count("\n") == 1
    assert fingerprint(lab) == before


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_run_can_be_deleted_and_nothing_outside_runs_goes(lab, capsys, case):
    sentinel = lab.parent / "keep-me"
    sentinel.write_text("outside the store")
    UNREADABLE[case](lab)
    weights = fingerprint(lab / "runs")
    assert run(capsys, "runs", "delete", 2)[0] == 0
    status, out, err = run(capsys, "runs", "list", "--json")
    assert (status, err) == (0, "") and [r["run_id"] for r in json.loads(out)] == [1]
    assert fingerprint(lab / "runs") == weights  # run 2 shared run 1's folder: left alone
    assert sentinel.read_text() == "outside the store"


# -- rows edited by hand, on both back ends (an SQLite file and a PostgreSQL database) ----------
@pytest.fixture(scope="module")
def trained() -> tuple[RunConfig, object]:
    """One small LoRA run's config and result, trained once and saved by each test's store."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = RunConfig(**SMALL)
        return config, train(config)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def saved(store: RunStore, trained) -> RunStore:
    """The store (`store`: each back end) with run 1 in it, finished, with its weights."""
    config, result = trained
    record.finish(store, store.create(config), result)
    return store


def edit(store: RunStore, statement: str, **values: object) -> None:
    """A hand's edit of the store's database, from outside it."""
    outside(store, statement, **values)


def copy_of_run_1(run_id: int = 2, **columns: object) -> Callable[[RunStore], None]:
    """A fault: a copy of run 1 as run `run_id` (its snapshots and stored weights too), with
    `columns` changed ("layers": every snapshot's)."""

    def fault(store: RunStore) -> None:
        names = [c.name for c in runs.runs.columns if c.name != "id"]
        edit(
            store,
            f"INSERT INTO runs (id, {', '.join(names)}) SELECT :id, {', '.join(names)} "
            "FROM runs WHERE id = 1",
            id=run_id,
        )
        changes = dict(columns)  # (each back end's test makes its own)
        layers = changes.pop("layers", None)
        edit(
            store,
            "INSERT INTO snapshots SELECT :id, step, COALESCE(CAST(:layers AS TEXT), layers) "
            "FROM snapshots "
            "WHERE run_id = 1",
            id=run_id,
            layers=layers,
        )
        if store.weights_dir is None:
            edit(
                store,
                "INSERT INTO weights SELECT :id, data FROM weights WHERE run_id = 1",
                id=run_id,
            )
        for column, value in changes.items():
            edit(store, f"UPDATE runs SET {column} = :value WHERE id = :id", value=value, id=run_id)

    return fault


def stored_weights_changed(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable:
    """A fault: run 1's stored weights (its file, or its row) rewritten with `change` made."""

    def fault(store: RunStore) -> None:
        if store.weights_dir is not None:
            weights_replaced(change)(store.path.parent)
            return
        [(data,)] = outside(store, "SELECT data FROM weights WHERE run_id = 1")
        tensors = safetensors.torch.load(bytes(data))
        change(tensors)
        edit(
            store,
            "UPDATE weights SET data = :data WHERE run_id = 1",
            data=safetensors.torch.save(tensors),
        )

    return fault


def stored_weights_gone(store: RunStore) -> None:
    if store.weights_dir is not None:
        store.weights_path(1).unlink()
    else:
        edit(store, "DELETE FROM weights WHERE run_id = 1")


def contents(store: RunStore) -> dict[str, object]:
    """Every row of every table (ordered by its key) and every file of the home."""
    dialect = "sqlite" if store.path is not None else "postgresql"
    tables = {
        table.name: outside(
            store,
            f"SELECT * FROM {table.name} ORDER BY {', '.join(table.primary_key.columns.keys())}",
        )
        for table in rundb.TABLES[dialect]
    }
    return {"tables": tables, "files": fingerprint(Path(os.environ["LORA_LAB_HOME"]))}


UNREAD = "cannot be read"
# (fault, command, what its one line says, the runs `runs list` lists: a run left out is named
# in one warning line). Then run 1 reads as it did, and nothing in the store has changed.
HAND_ROWS = [
    pytest.param(
        copy_of_run_1(config="{"), ["runs", "show", 2], f"run 2 {UNREAD}", [1], id="config-not-json"
    ),
    pytest.param(
        copy_of_run_1(config="[]"),
        ["spectra", 2],
        "settings must be a JSON object",
        [1],
        id="config-list",
    ),
    pytest.param(
        copy_of_run_1(config='{"wings": 2}'),
        ["runs", "export", 2],
        "unknown setting(s) ['wings']",
        [1],
        id="config-key",
    ),
    pytest.param(
        copy_of_run_1(config='{"seed": 18446744073709551616}'),
        ["spectra", 2],
        f"run 2 cannot be rebuilt from its config (seed must be {BOUNDS['seed']}",
        [2, 1],
        id="config-seed-2**64",
    ),
    pytest.param(
        copy_of_run_1(num_classes=5000),
        ["spectra", 2],
        "a classifier needs from 2 to 1000 classes, got 5000",
        [2, 1],
        id="classes-5000",
    ),
    pytest.param(
        copy_of_run_1(layers='{"fc1": {"sigma": "abc", "delta_M": 0, "delta_D": 0}}'),
        ["runs", "show", 2],
        "a spectrum snapshot is not JSON of its layers' singular values",
        [2, 1],
        id="snapshot-sigma-text",
    ),
    pytest.param(
        copy_of_run_1(
            layers='{"fc1": {"sigma": [1.0], "delta_M": 0, "delta_D": 0, "shape": [0, true]}}'
        ),
        ["runs", "show", 2],
        "a spectrum snapshot is not JSON of its layers' singular values",
        [2, 1],
        id="snapshot-shape-not-a-size",
    ),
    pytest.param(
        copy_of_run_1(folder="../../.."),
        ["spectra", 2],
        "its folder '../../..' is not valid",
        [1],
        id="folder",
    ),
    pytest.param(
        copy_of_run_1(run_id=-5),
        ["runs", "show", -5],
        "there is no run -5",
        [1],  # named: "run -5 cannot be read: no run is given that id"
        id="id-negative",
    ),
    pytest.param(
        copy_of_run_1(run_id=0), ["runs", "delete", 0], "there is no run 0", [1], id="id-0"
    ),
    pytest.param(
        copy_of_run_1(run_id=2**63 - 1),
        ["runs", "show", 2**63],
        f"there is no run {2**63}",
        [2**63 - 1, 1],
        id="id-last",
    ),
    pytest.param(
        stored_weights_changed(lambda t: t["fc2.B"].fill_(float("-inf"))),
        ["runs", "export", 1],
        "the weights of run 1 hold NaN or inf: fc2.B",
        [1],
        id="inf-weights",
    ),
    pytest.param(
        stored_weights_changed(transposed_A),
        ["spectra", 1],
        "do not fit its model: fc2.A",
        [1],
        id="shape",
    ),
    pytest.param(
        stored_weights_gone,
        ["spectra", 1],
        f"the weights of run 1 {UNREAD}",
        [1],
        id="weights-gone",
    ),
]


@pytest.mark.parametrize(("fault", "argv", "says", "listed"), HAND_ROWS)
def test_a_row_edited_by_hand_is_one_line_on_either_back_end_and_harms_no_other_run(
    saved, capsys, fault, argv, says, listed
):
    first = saved.get(1)
    fault(saved)
    before = contents(saved)
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert_one_line(err, says)
    status, out, err = run(capsys, "runs", "list", "--json")
    assert status == 0
    assert [record["run_id"] for record in json.loads(out)] == listed
    rows = [row[0] for row in outside(saved, "SELECT id FROM runs ORDER BY id DESC")]
    named = [run_id for run_id in rows if run_id not in listed]
    lines = err.splitlines()  # one per run left out, newest first
    assert [line.split(":")[1] for line in lines] == [f" run {i} {UNREAD}" for i in named], err
    assert contents(saved) == before
    with RunStore() as store:
        assert store.get(1) == first


@pytest.mark.parametrize("pid", [-1, 0, 2**31 - 1], ids=["negative", "zero", "2**31-1"])
def test_a_running_row_whose_pid_is_no_process_is_repaired_on_either_back_end(saved, capsys, pid):
    """A pid edited by hand (psutil refuses the negative ones): the run is unfinished, and the
    store opens as before; it was a traceback at every command."""
    copy_of_run_1(status="running", pid=pid, pid_started=None)(saved)
    status, out, err = run(capsys, "runs", "list", "--json")
    assert (status, err) == (0, "")
    assert {r["run_id"]: r["status"] for r in json.loads(out)} == {2: "unfinished", 1: "finished"}
    assert run(capsys, "runs", "delete", 2)[0] == 0


def test_a_row_set_to_queued_by_hand_can_be_deleted_on_either_back_end(saved, capsys):
    """No job waits in the store (a pool's queue is in its process): a "queued" row was written
    by a hand, no job will ever run it, and it was "still queued: stop it first" forever."""
    copy_of_run_1(status="queued", pid=None, pid_started=None)(saved)
    status, _, err = run(capsys, "runs", "delete", 2)
    assert (status, err) == (0, "")
    status, out, _ = run(capsys, "runs", "list", "--json")
    assert [record["run_id"] for record in json.loads(out)] == [1]


# -- F10: export never writes over the store, its weights, or (without --force) any file ----------
def weights_file(home: Path, tmp: Path) -> Path:
    return weights_of(home)


def linked(to: str, hard: bool = False) -> Callable[[Path, Path], Path]:
    def make(home: Path, tmp: Path) -> Path:
        link = tmp / "link.zip"
        (os.link if hard else os.symlink)(home / to, link)
        return link

    return make


def existing(home: Path, tmp: Path) -> Path:
    (tmp / "mine.zip").write_bytes(b"the student's own file")
    return tmp / "mine.zip"


def fifo(home: Path, tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.zip")
    return tmp / "pipe.zip"


# (where --out points, --force?, what the one line says)
EXPORT_ROWS = [
    pytest.param(lambda h, t: h / "runs.db", False, "is the run database", id="db"),
    pytest.param(lambda h, t: h / "runs.db", True, "is the run database", id="db-force"),
    pytest.param(lambda h, t: h / "runs.db-wal", True, "is the run database", id="db-wal"),
    pytest.param(lambda h, t: h / "runs.db-shm", False, "is the run database", id="db-shm"),
    pytest.param(
        lambda h, t: h / "x" / ".." / "runs.db", True, "is the run database", id="db-dots"
    ),
    pytest.param(linked("runs.db"), True, "is the run database", id="db-symlink"),
    pytest.param(linked("runs.db", hard=True), True, "is the run database", id="db-hard-link"),
    pytest.param(weights_file, True, "inside the run store's weights folder", id="weights"),
    pytest.param(lambda h, t: h / "runs" / "new.zip", True, "weights folder", id="in-runs"),
    pytest.param(lambda h, t: h / "runs", True, "weights folder", id="runs-folder"),
    pytest.param(lambda h, t: h, True, "is a folder", id="home-folder"),
    pytest.param(existing, False, "already exists: choose another file", id="existing-file"),
    pytest.param(lambda h, t: Path("/dev/null"), True, "not a regular file", id="dev-null-force"),
    pytest.param(lambda h, t: Path("/dev/null"), False, "not a regular file", id="dev-null"),
    pytest.param(fifo, True, "not a regular file", id="fifo-force"),
    pytest.param(
        lambda h, t: Path("/dev/null/x.zip"),
        False,
        "cannot write /dev/null/x.zip",
        id="under-dev-null",
    ),
    pytest.param(lambda h, t: Path("/proc/x.zip"), False, "cannot write /proc/x.zip", id="proc"),
    pytest.param(
        lambda h, t: Path("/proc/x.zip"), True, "cannot write /proc/x.zip", id="proc-force"
    ),
    # issue 18 (15, 16): a path that cannot be, or names nothing
    pytest.param(
        lambda h, t: existing(h, t) / "x.zip",
        False,
        "mine.zip is a file, not a folder",
        id="under-a-file",
    ),
    pytest.param(lambda h, t: t / f"{'x' * 300}.zip", False, "more than the 255", id="name-300"),
    pytest.param(lambda h, t: f"{t}/NEWDIR/", False, "NEWDIR/ names a folder", id="slash-new-dir"),
    pytest.param(lambda h, t: "", False, "--out is empty", id="empty"),
]


@pytest.mark.parametrize(("where", "force", "says"), EXPORT_ROWS)
def test_export_never_writes_over_the_store_or_an_existing_file(
    lab, tmp_path, capsys, where, force, says
):
    out = where(lab, tmp_path)
    before = fingerprint(tmp_path)  # the home, and any file the row made next to it
    status, _, err = run(capsys, "runs", "export", 1, "--out", out, *(["--force"] * force))
    assert status == 2
    assert_one_line(err, says)
    assert fingerprint(tmp_path) == before


# issue 18 (15, 16): where --tensorboard DIR points, and what the one line says
TENSORBOARD_ROWS = [
    pytest.param(
        lambda h, t: existing(h, t) / "tb", "mine.zip is a file, not a folder", id="under-a-file"
    ),
    pytest.param(lambda h, t: Path("/proc/tb"), "cannot export into /proc/tb", id="proc"),
    pytest.param(lambda h, t: Path("/sys/tb"), "cannot export into /sys/tb", id="sys"),
    pytest.param(lambda h, t: t / ("x" * 300) / "tb", "more than the 255", id="name-300"),
    pytest.param(lambda h, t: "", "--tensorboard is empty", id="empty"),
]


@pytest.mark.parametrize(("where", "says"), TENSORBOARD_ROWS)
def test_a_tensorboard_export_that_cannot_be_made_is_one_line(
    lab, tmp_path, capsys, monkeypatch, where, says
):
    directory = where(lab, tmp_path)
    monkeypatch.chdir(tmp_path)  # (an empty path is not the working folder)
    before = fingerprint(tmp_path)
    status, _, err = run(capsys, "runs", "export", 1, "--tensorboard", directory)
    assert status == 2
    assert_one_line(err, says)
    assert fingerprint(tmp_path) == before


def test_export_replaces_a_file_only_with_force_and_never_reuses_its_own_name(
    lab, tmp_path, capsys
):
    mine = existing(lab, tmp_path)
    status, out, _ = run(capsys, "runs", "export", 1, "--out", mine, "--force")
    assert status == 0 and out.strip() == str(mine)
    assert zipfile.ZipFile(mine).namelist() == [CONFIG, WEIGHTS]
    first = Path(run(capsys, "runs", "export", 1)[1].strip())
    content = first.read_bytes()
    second = Path(run(capsys, "runs", "export", 1)[1].strip())
    assert first.name == "run-1-peft.zip" and second.name == "run-1-peft-2.zip"
    assert first.read_bytes() == content  # the first export stays as it was


# -- F14: a full disk ------------------------------------------------------------------------------
def no_space_oserror(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_space_safetensors(*args, **kwargs):
    raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        pytest.param(
            lambda mp, home: mp.setattr(runs, "save_file", no_space_oserror),
            "No space left",
            id="oserror",
        ),
        pytest.param(
            lambda mp, home: mp.setattr(runs, "save_file", no_space_safetensors),
            "No space left",
            id="safetensors",
        ),
        pytest.param(
            lambda mp, home: replace_path(Path.touch, "runs")(home),
            "Not a directory",
            id="runs-is-a-file",
        ),
    ],
)
def test_weights_that_cannot_be_written_fail_the_run_clearly_and_lose_nothing(
    lab, capsys, monkeypatch, fault, says
):
    fault(monkeypatch, lab)
    before = fingerprint(lab / "runs") if (lab / "runs").is_dir() else None
    with RunStore() as store:
        first = store.get(1)
    status, _, err = run(capsys, *NEW_RUN)
    assert status == 2
    assert_one_line(err, says)
    assert "Nothing was saved of it, and every other run is as it was" in err
    with RunStore() as store:
        assert store.get(1) == first
        failed = store.get_summary(2)
        assert failed.status == "failed" and says in failed.reason and not failed.has_weights
    assert before is None or fingerprint(lab / "runs") == before  # no partial file left
    assert integrity(lab) == "ok"


def integrity(home: Path) -> str:
    with sqlite3.connect(home / "runs.db") as db:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    return verdict


def no_space_in_temporary_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk under a temporary file: it is made, and writing it fails."""
    named = tempfile.NamedTemporaryFile

    def full(*args, **kwargs):
        file = named(*args, **kwargs)
        file.write = no_space_oserror
        return file

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", full)


def read_only_mount(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`folder` as on a file system mounted read-only: nothing can be made in it."""
    mkdir = Path.mkdir

    def refuse(path: Path, *args, **kwargs) -> None:
        if path.is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)


# (fault(monkeypatch, folder), the export's flags given that folder, what the one line says):
# nothing is left in the folder written to
EXPORT_FAULT_ROWS = [
    pytest.param(
        lambda mp, out: mp.setattr(tb_gfile.LocalFileSystem, "append", no_space_oserror),
        lambda tmp: ["--tensorboard", tmp / "tb"],
        "No space left on device. Nothing was left there",
        id="tensorboard-full-disk",
    ),
    pytest.param(
        lambda mp, out: mp.setattr(tb_gfile.LocalFileSystem, "append", no_space_oserror),
        lambda tmp: ["--tensorboard", tmp],
        "No space left on device. Nothing was left there",
        id="tensorboard-full-disk-existing-dir",
    ),
    pytest.param(
        read_only_mount,
        lambda tmp: ["--tensorboard", tmp / "tb"],
        "it is on a read-only file system",
        id="tensorboard-read-only-mount",
    ),
    pytest.param(
        lambda mp, out: mp.setattr(tempfile, "mkdtemp", no_space_oserror),
        lambda tmp: ["--out", tmp / "adapter.zip"],
        "No space left on device): make room there, or set TMPDIR to another folder",
        id="tmpdir-full",
    ),
    pytest.param(
        lambda mp, out: no_space_in_temporary_files(mp),
        lambda tmp: ["--out", existing(tmp, tmp), "--force"],
        "mine.zip: No space left on device",
        id="force-full-disk",
    ),
]


@pytest.mark.parametrize(("fault", "flags", "says"), EXPORT_FAULT_ROWS)
def test_an_export_that_cannot_be_written_whole_leaves_nothing(
    lab, tmp_path, capsys, monkeypatch, fault, flags, says
):
    out = tmp_path / "out"
    out.mkdir()
    argv = flags(out)
    before = fingerprint(tmp_path)
    tracebacks = []  # what a thread would print (TensorBoard's writer writes in one)
    monkeypatch.setattr(threading, "excepthook", tracebacks.append)
    fault(monkeypatch, out)
    status, _, err = run(capsys, "runs", "export", 1, *argv)
    monkeypatch.undo()
    assert status == 2
    assert_one_line(err, says)
    assert tracebacks == []
    assert fingerprint(tmp_path) == before


# -- issue 18 (19): a database that cannot be reached as a run ends ------------------------------
UNREACHABLE = rundb.Unreachable("postgresql://lab:***@db:5432/lab", "connection refused")


@pytest.fixture
def restarting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Saving a finished run (record.finish) as while a PostgreSQL server restarts: not
    reachable for its first two calls, then back. Returns the calls, one run id each."""
    finish, calls = record.finish, []

    def after_a_restart(store: RunStore, run_id: int, result: object) -> None:
        calls.append(run_id)
        if len(calls) <= 2:
            raise UNREACHABLE
        finish(store, run_id, result)

    monkeypatch.setattr(record, "finish", after_a_restart)
    monkeypatch.setattr(record, "RETRY_EVERY_S", 0.01, raising=False)  # (not in the unfixed code)
    return calls


def test_a_run_ending_while_its_database_restarts_is_saved_once_it_is_back(lab, restarting):
    """It said "retrying", and nothing retried: the run was left unfinished."""
    with RunStore() as store:
        run_id, result = train_and_save(RunConfig(**SMALL), store)
        assert restarting == [run_id] * 3
        saved = store.get(run_id)
    assert saved.status == "finished" and saved.history == result.history


def test_a_run_whose_database_stays_away_says_what_became_of_it(lab, capsys, monkeypatch):
    def away(*args: object) -> None:
        raise UNREACHABLE

    monkeypatch.setattr(RunStore, "finish", away)
    monkeypatch.setattr(record, "SAVE_WAIT_S", 0.05)
    monkeypatch.setattr(record, "RETRY_EVERY_S", 0.01)
    status, out, err = run(capsys, *NEW_RUN)
    assert (status, out) == (2, "")
    assert_one_line(err, "run 2 could not be saved: the run database at postgresql://lab:***@")
    assert "was not back within 0.05 s" in err and "Train it again then" in err


def test_a_database_that_cannot_grow_fails_the_run_clearly_and_loses_nothing(
    lab, capsys, monkeypatch
):
    """SQLite's own "disk is full": the store may not grow by a page. Saving the run fails, and
    so does marking it failed; neither is a traceback, and the store stays sound."""
    connect = rundb._connect

    def full(path: Path) -> sqlite3.Connection:
        db = connect(path)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    with sqlite3.connect(lab / "runs.db") as db:
        db.execute("VACUUM")  # no free pages left: any new row needs a new page
    db.close()
    monkeypatch.setattr(rundb, "_connect", full)
    with RunStore() as store:
        first = store.get(1)
    weights = fingerprint(lab / "runs")
    status, _, err = run(capsys, *NEW_RUN, "--steps", 30, "--snapshot-interval", 1)
    assert status == 2
    assert_one_line(err, "database or disk is full). Nothing was changed in it")
    monkeypatch.setattr(rundb, "_connect", connect)  # room again
    assert integrity(lab) == "ok"
    with RunStore() as store:
        assert store.get(1) == first
        assert all(r.status != "finished" for r in store.list() if r.id != 1)
    assert fingerprint(lab / "runs") == weights


# -- F15 and issue 9: a run's process, and a store replaced under a running process --------------
@pytest.fixture
def other_process():
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def row_started(home: Path, pid: int, started: float | None) -> None:
    db_run(home, "UPDATE runs SET status='running', pid=?, pid_started=? WHERE id=1", pid, started)


# (whose pid the row holds, and when the row says that process started; repaired?)
PROCESS_ROWS = [
    pytest.param(
        lambda p: (p.pid, psutil.Process(p.pid).create_time() - 60), True, id="pid-reused"
    ),
    pytest.param(
        lambda p: (os.getpid(), psutil.Process().create_time() - 3600), True, id="own-pid-reused"
    ),
    pytest.param(lambda p: (p.pid, psutil.Process(p.pid).create_time()), False, id="same-process"),
    pytest.param(lambda p: (p.pid, None), False, id="schema-1-live-pid"),
    pytest.param(lambda p: (2**22 + 12345, None), True, id="schema-1-dead-pid"),
    pytest.param(lambda p: (None, None), True, id="no-pid"),
    # edited by hand (SQLite keeps text in a number's column): no process of theirs runs
    pytest.param(lambda p: ("abc", None), True, id="pid-text"),
    pytest.param(lambda p: (p.pid, "yesterday"), True, id="started-text"),
    pytest.param(lambda p: (-1, None), True, id="pid-negative"),
]


@pytest.mark.parametrize(("whose", "repaired"), PROCESS_ROWS)
def test_a_running_row_is_repaired_unless_its_own_process_still_runs(
    lab, capsys, other_process, whose, repaired
):
    row_started(lab, *whose(other_process))
    status, out, _ = run(capsys, "runs", "list", "--json")
    assert status == 0
    [record] = json.loads(out)
    assert record["status"] == ("unfinished" if repaired else "running")
    status, _, err = run(capsys, "runs", "delete", 1)
    assert status == (0 if repaired else 2)
    assert repaired or "still running" in err


def test_a_process_that_outlives_its_store_writes_nothing_into_a_new_one(lab, template):
    """A training process whose store was deleted, and a new store made in its place with a run
    of the same number: its progress, outcome and failure all go nowhere, and say why."""
    config = RunConfig(**SMALL)
    result = train(config)
    old = RunStore()
    run_id = old.create(config)
    assert run_id == 2
    for path in [lab / "runs", *lab.glob("runs.db*")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.copytree(template, lab, dirs_exist_ok=True)
    with RunStore() as new:
        assert new.create(config) == 2  # another run 2
        record.finish(new, 2, result)
        folders = sorted(p.name for p in (lab / "runs").iterdir())
        assert len(folders) == 2 and all(re.fullmatch("[0-9a-f]{32}", f) for f in folders)
    before = fingerprint(lab)
    with pytest.raises(StoreError, match="moved or replaced while run 2 trained"):
        old.append(run_id, result.history, result.snapshots)
    with pytest.raises(StoreError, match="moved or replaced while run 2 trained"):
        record.finish(old, run_id, result)
    old.fail(run_id, "it never gets here")  # never raises, writes nothing
    old.close()
    assert fingerprint(lab) == before


def test_a_schema_1_store_is_upgraded_and_its_runs_keep_their_weights(lab):
    """Stores made before each run had a uuid folder keep runs/<id>/ and open as before."""
    weights = weights_of(lab)
    weights.parent.rename(lab / "runs" / "1")
    with sqlite3.connect(lab / "runs.db") as db:
        db.execute("ALTER TABLE runs DROP COLUMN folder")
        db.execute("ALTER TABLE runs DROP COLUMN pid_started")
        db.execute("ALTER TABLE runs DROP COLUMN source_acc_before")
        db.execute("ALTER TABLE runs DROP COLUMN source_acc_after")
        db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.close()
    with RunStore() as store:
        assert store.weights_path(1) == lab / "runs" / "1" / runs.WEIGHTS_FILE
        rebuild(store.read_weights(1))
    with sqlite3.connect(lab / "runs.db") as db:
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert version == (str(rundb.SCHEMA_VERSION),)
    db.close()


# -- the command line: nothing created by a refusal, a closed pipe, a planted dataset -------------
@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "fresh"
    monkeypatch.setenv("LORA_LAB_HOME", str(home))
    return home


NO_STORE_ROWS = [
    pytest.param(["runs", "show", 1], "there is no run 1", id="show"),
    pytest.param(["runs", "export", 1], "there is no run 1", id="export"),
    pytest.param(["runs", "rename", 1, "x"], "there is no run 1", id="rename"),
    pytest.param(["runs", "delete", 1], "there is no run 1", id="delete"),
    pytest.param(["spectra", 1], "there is no run 1", id="spectra"),
    pytest.param(["train", "--method", "top-k", "--top-k", "1000"], "top-k needs", id="top-k-1000"),
    pytest.param(["train", "--device", "mps"], "'mps' is not available", id="device-mps"),
    pytest.param(
        ["train", "--device", "cuda"],
        "'cuda' is not available",
        id="device-cuda",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
]


@pytest.mark.parametrize(("argv", "says"), NO_STORE_ROWS)
def test_a_refused_command_creates_no_run_database(fresh, capsys, argv, says):
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert_one_line(err, says)
    assert not (fresh / "runs.db").exists()


def test_listing_a_store_that_does_not_exist_yet_creates_none(fresh, capsys):
    assert run(capsys, "runs", "list", "--json")[:2] == (0, "[]\n")
    assert not (fresh / "runs.db").exists()


# -- the command line: numbers past their bounds, deep nesting (F2, F3) -------------------------
DEEP = "[" * 1000 + "]" * 1000
SEED_BOUND = "seed must be a whole number ≥ 0 and ≤ 4294967295"
TRAIN = ["train", "--steps", "2"]
# (command line, what its one line says): each bound is named with the setting
FLAG_ROWS = [
    # F2: nesting
    pytest.param(
        [*TRAIN, "--shift-params", DEEP],
        "shift_params must be a JSON object of numbers and text",
        id="shift-params-1000-deep",
    ),
    pytest.param(
        [*TRAIN, "--shift-params", "{" * 1000],
        "shift_params must be a JSON object",
        id="shift-params-1000-open",
    ),
    pytest.param(
        [*TRAIN, "--shift-params", '{"angle": ' + DEEP + "}"],
        "shift_params must be a JSON object of numbers and text",
        id="shift-param-1000-deep",
    ),
    pytest.param(
        [*TRAIN, "--shift-params", '{"angle": {"a": 1}}'],
        "shift_params must be a JSON object of numbers and text",
        id="shift-param-object",
    ),
    # F3: numbers past float32, and past what makes sense
    pytest.param(
        [*TRAIN, "--lr", "1e39"], "lr must be a number > 0 and ≤ 1e+06 (got 1e+39)", id="lr-1e39"
    ),
    pytest.param(
        [*TRAIN, "--optimizer", "sgd", "--lr", "1e300"], "lr must be a number > 0", id="sgd-1e300"
    ),
    pytest.param(
        [*TRAIN, "--lr", "1e400"],
        "lr must be a number, or empty for the default (got '1e400')",
        id="lr-1e400",
    ),
    pytest.param([*TRAIN, "--lr", "-0.0"], "lr must be a number > 0", id="lr-minus-0"),
    pytest.param(
        [*TRAIN, "--lora-plus-ratio", "1e300"],
        "lora_plus_ratio must be a number ≥ 0.01 and ≤ 1000 (got 1e+300)",
        id="ratio-1e300",
    ),
    pytest.param(
        [*TRAIN, "--lora-plus-ratio", "0.001"], "lora_plus_ratio must be", id="ratio-0.001"
    ),
    pytest.param(
        [*TRAIN, "--alpha", "1e300"],
        "alpha must be a number > 0 and ≤ 10000 (got 1e+300)",
        id="alpha-1e300",
    ),
    pytest.param([*TRAIN, "--alpha", "0"], "alpha must be a number > 0", id="alpha-0"),
    pytest.param(
        [*TRAIN, "--weight-decay", "1e300"],
        "weight_decay must be a number ≥ 0 and ≤ 100 (got 1e+300)",
        id="weight-decay-1e300",
    ),
    pytest.param(
        [*TRAIN, "--dropout", "1"], "dropout must be a number ≥ 0 and < 1 (got 1.0)", id="dropout-1"
    ),
    # whole numbers past int64, or past sense
    pytest.param([*TRAIN, "--seed", 2**64], f"{SEED_BOUND} (got {2**64})", id="seed-2**64"),
    pytest.param([*TRAIN, "--seed", 2**32], f"{SEED_BOUND} (got {2**32})", id="seed-2**32"),
    pytest.param([*TRAIN, "--seed", -1], f"{SEED_BOUND} (got -1)", id="seed-negative"),
    pytest.param(
        [*TRAIN, "--seed", "1e3"], "seed must be a whole number (got '1e3')", id="seed-1e3"
    ),
    pytest.param(
        [*TRAIN, "--rank", 10**30],
        f"rank must be a whole number ≥ 1 and ≤ 4096 (got {10**30})",
        id="rank-10**30",
    ),
    pytest.param(
        [*TRAIN, "--batch-size", 10**21],
        f"batch_size must be a whole number ≥ 1 and ≤ 65536 (got {10**21})",
        id="batch-10**21",
    ),
    pytest.param(
        ["train", "--steps", 10**21],
        "steps must be a whole number ≥ 1 and ≤ 1000000000",
        id="steps",
    ),
    pytest.param(["train", "--epochs", 10**23], "epochs must be a whole number ≥ 1", id="epochs"),
    pytest.param(
        [*TRAIN, "--method", "top-k", "--top-k", 10**23],
        "top_k must be a whole number ≥ 1 and ≤ 1000",
        id="top-k-10**23",
    ),
    pytest.param(
        [*TRAIN, "--eval-interval", 10**23], "eval_interval must be a whole", id="eval-interval"
    ),
    pytest.param(
        [*TRAIN, "--snapshot-interval", 10**23], "snapshot_interval must be", id="snapshot-interval"
    ),
    pytest.param(
        [*TRAIN, "--rank", "1" * 5000],
        "rank must be a whole number (got '1111",
        id="rank-5000-digits",
    ),
    # shift parameters: bounds, kinds
    pytest.param(
        [*TRAIN, "--shift-params", '{"angle": 1e300}'],
        "shift parameter 'angle' must be a number ≥ -360 and ≤ 360 (got 1e+300)",
        id="angle-1e300",
    ),
    pytest.param(
        [*TRAIN, "--shift", "permute", "--shift-params", '{"seed": 18446744073709551616}'],
        "shift parameter 'seed' must be a whole number ≥ 0 and ≤ 4294967295",
        id="permute-seed-2**64",
    ),
    pytest.param(
        [*TRAIN, "--shift", "label-permute", "--shift-params", '{"seed": -1}'],
        "shift parameter 'seed' must be a whole number ≥ 0",
        id="label-permute-seed-negative",
    ),
    pytest.param(
        [*TRAIN, "--shift", "planted-rank", "--shift-params", '{"rank": 1e20}'],
        "shift parameter 'rank' must be a whole number ≥ 1 and ≤ 4096",
        id="planted-rank-1e20",
    ),
    pytest.param(
        [*TRAIN, "--shift", "planted-rank", "--shift-params", '{"fraction_changed": 1e300}'],
        "shift parameter 'fraction_changed' must be a number ≥ 0 and ≤ 1",
        id="planted-fraction-1e300",
    ),
    pytest.param(
        [*TRAIN, "--shift", "planted-rank", "--shift-params", '{"layer": 5}'],
        "shift parameter 'layer' must be text (got 5)",
        id="planted-layer-5",
    ),
    pytest.param(
        [*TRAIN, "--shift", "domain", "--shift-params", '{"to": ["digits"]}'],
        "shift_params must be a JSON object of numbers and text",
        id="domain-to-list",
    ),
    pytest.param(
        [*TRAIN, "--shift", "rotate", "--shift-params", '{"angle": "x"}'],
        "shift parameter 'angle' must be a number (got 'x')",
        id="angle-text",
    ),
    # the other commands that take settings
    pytest.param(
        ["sweep", "--steps", 1, "--ranks", 10**23],
        f"rank must be a whole number ≥ 1 and ≤ 4096 (got {10**23})",
        id="sweep-rank-10**23",
    ),
    pytest.param(["sweep", "--steps", 1, "--seed", 2**64], SEED_BOUND, id="sweep-seed-2**64"),
    pytest.param(
        ["sweep", "--steps", 1, "--workers", 10**20],
        "--workers must be a whole number ≥ 1 and ≤",
        id="sweep-workers-10**20",
    ),
    pytest.param(
        ["sweep", "--steps", 1, "--workers", -1], "--workers must be", id="sweep-workers-negative"
    ),
    pytest.param(
        ["runs", "import", "adapter.zip", "--model", "mlp", "--seed", 2**64],
        SEED_BOUND,
        id="import-seed-2**64",
    ),
    pytest.param(
        ["runs", "import", "adapter.zip", "--model", "mlp", "--shift-params", DEEP],
        "shift_params must be a JSON object",
        id="import-shift-params-deep",
    ),
]


@pytest.mark.parametrize(("argv", "says"), FLAG_ROWS)
def test_a_setting_past_its_bound_is_one_line_naming_it_and_nothing_changes(
    lab, capsys, argv, says
):
    before = fingerprint(lab)
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert_one_line(err, says)
    assert len(err) < 400  # a megabyte of brackets is shown cut short
    assert fingerprint(lab) == before


# -- the environment (issue 18: 15, 19) ----------------------------------------------------------
LONG_NAME = "x" * 300
CORES = executors.cores()
SWEEP = ["sweep", "--steps", 1, "--ranks", 1, "--no-baselines"]
# (variable, its value (or value(home)), command line, what the one line says)
ENV_ROWS = [
    pytest.param(
        "LORA_LAB_WORKERS",
        "²",
        ["train", "--steps", 1],
        "LORA_LAB_WORKERS must be a whole number ≥ 1 (got '²')",
        id="workers-superscript-2",
    ),
    pytest.param(
        "LORA_LAB_WORKERS", "²", SWEEP, "LORA_LAB_WORKERS must be", id="workers-superscript-sweep"
    ),
    pytest.param(
        "LORA_LAB_WORKERS",
        str(CORES + 1),
        SWEEP,
        f"LORA_LAB_WORKERS must be a whole number ≥ 1 and ≤ {CORES} (got {CORES + 1})",
        id="workers-above-cores",
    ),
    pytest.param(
        "LORA_LAB_HOME",
        lambda home: home / LONG_NAME,
        ["runs", "list"],
        "is 300 bytes long, more than the 255 a file system allows): set LORA_LAB_HOME",
        id="home-name-300",
    ),
    pytest.param(
        "LORA_LAB_DATA",
        lambda home: home / LONG_NAME / "data",
        ["train", "--steps", 1, "--dataset", "mnist"],
        "is 300 bytes long, more than the 255 a file system allows): set LORA_LAB_DATA",
        id="data-name-300",
    ),
]


@pytest.mark.parametrize(("variable", "value", "argv", "says"), ENV_ROWS)
def test_a_bad_environment_variable_is_one_line_naming_it_and_nothing_changes(
    lab, capsys, monkeypatch, variable, value, argv, says
):
    monkeypatch.setenv("LORA_LAB_OFFLINE", "1")  # (nothing is ever downloaded here)
    monkeypatch.setenv(variable, str(value(lab) if callable(value) else value))
    before = fingerprint(lab)
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert_one_line(err, says)
    assert fingerprint(lab) == before


# -- F3: a run that diverges names what made its steps too large ---------------------------------
# (settings, what the reason must name, what it must not: the learning rate is not blamed for an
# absurd alpha). Each of these diverges within 30 steps of the MLP.
DIVERGING_ROWS = [
    pytest.param(
        {"alpha": 10_000.0, "rank": 1, "optimizer": "sgd", "lr": 0.1},
        "alpha (10000: the scaling alpha/r is 10000)",
        "learning rate",
        id="alpha",
    ),
    pytest.param(
        {"weight_decay": 100.0, "lr": 0.1},
        "the weight decay (100, × lr = 10)",
        "learning rate",
        id="weight-decay",
    ),
    pytest.param(
        {"lr": 100.0, "optimizer": "sgd"}, "the learning rate (100)", "alpha", id="learning-rate"
    ),
]


@pytest.mark.parametrize(("settings", "names", "spares"), DIVERGING_ROWS)
def test_a_diverging_run_names_its_likely_cause(lab, capsys, settings, names, spares):
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    status, out, err = run(capsys, "train", "--steps", 30, "--json", *flags)
    assert status == 1 and err == ""
    summary = json.loads(out)
    assert summary["status"] == "failed"
    assert names in summary["reason"] and spares not in summary["reason"]


# (settings, the reason's suspects): the same naming, without training
CAUSE_ROWS = [
    pytest.param({}, f"the learning rate ({DEFAULT_LR['lora']:g}) is probably", id="default"),
    pytest.param({"lr": 2.0}, "the learning rate (2) is probably", id="lr"),
    pytest.param(
        {"alpha": 4096.0, "rank": 16, "scaling": "rslora"},
        "alpha (4096: the scaling alpha/√r is 1024) is probably",
        id="rslora",
    ),
    pytest.param(
        {"alpha": 4096.0, "method": "full"},
        f"the learning rate ({DEFAULT_LR['full']:g})",  # alpha is LoRA's: not blamed
        id="not-lora",
    ),
    pytest.param({"lora_plus_ratio": 1000.0}, "the LoRA+ ratio (1000) is", id="lora-plus"),
    pytest.param(
        {"lr": 1e6, "alpha": 1e4},
        "the learning rate (1e+06) or alpha (10000: the scaling alpha/r is 2500) is probably",
        id="both",
    ),
]


@pytest.mark.parametrize(("settings", "says"), CAUSE_ROWS)
def test_a_divergence_is_blamed_on_each_unusual_setting(settings, says):
    reason = diverged("the training loss became nan", 3, RunConfig(**settings))
    assert reason.startswith("the training loss became nan at step 3: ")
    assert says in reason


class Poison(torch.optim.SGD):
    """An optimizer whose step leaves every trainable weight inf: the loss of that step was
    finite, so only a look at the weights can tell."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.fill_(float("inf"))


def test_weights_that_become_inf_fail_the_run_before_a_spectrum_or_a_save(lab, capsys, monkeypatch):
    """SVD refuses inf (a traceback, before): the run fails at that step, and saves nothing."""
    monkeypatch.setattr(
        train_module,
        "make_optimizer",
        lambda model, config: Poison([p for p in model.parameters() if p.requires_grad], lr=0.1),
    )
    status, out, err = run(capsys, "train", "--steps", 5, "--snapshot-interval", 1, "--json")
    assert (status, err) == (1, "")
    summary = json.loads(out)
    assert summary["status"] == "failed" and summary["steps"] == 1
    assert summary["reason"].startswith("the weights became inf or nan at step 1: ")
    with RunStore() as store:
        assert not store.get_summary(summary["run_id"]).has_weights


# -- links: core.classroom.links.from_query, and each page opened with a hostile link (F1, F2, F17)
# --------
PAGE_DEFAULTS = {
    "train": (links.train_defaults(), links.TRAIN_CHOICES),
    "spectra": (links.SPECTRA_DEFAULTS, {}),
    "compare": (links.COMPARE_DEFAULTS, links.COMPARE_CHOICES),
}
# (page, query parameters, the keys it cannot read, what it reads of the others)
LINK_ROWS = [
    # F17: a value that is None or a list (a caller's repeated key) is unreadable, not a TypeError
    pytest.param("train", {"rank": None}, ["rank"], {}, id="rank-None"),
    pytest.param("train", {"rank": ["4", "8"]}, ["rank"], {}, id="rank-list"),
    pytest.param("train", {"lr": ["0.1"]}, ["lr"], {}, id="lr-list"),
    pytest.param("train", {"model": None}, ["model"], {}, id="model-None"),
    pytest.param("train", {"model": ["mlp"]}, ["model"], {}, id="model-list"),
    pytest.param("train", {"dora": None}, ["dora"], {}, id="dora-None"),
    pytest.param("train", {"shift_params": None}, ["shift_params"], {}, id="shift-params-None"),
    pytest.param("train", {"shift_params": [{}]}, ["shift_params"], {}, id="shift-params-list"),
    pytest.param("train", {"targets": None}, ["targets"], {}, id="targets-None"),
    pytest.param("spectra", {"run": None, "layer": 5}, ["layer", "run"], {}, id="spectra-None"),
    pytest.param("compare", {"runs": None, "ranks": None}, ["ranks", "runs"], {}, id="lists-None"),
    # F2: nesting
    pytest.param("train", {"shift_params": DEEP}, ["shift_params"], {}, id="shift-params-deep"),
    pytest.param(
        "train", {"shift_params": "[" * 100_000}, ["shift_params"], {}, id="shift-params-100k"
    ),
    pytest.param(
        "train",
        {"shift_params": '{"angle": ' + DEEP + "}"},
        ["shift_params"],
        {},
        id="shift-param-deep",
    ),
    pytest.param("compare", {"ranks": DEEP}, ["ranks"], {}, id="ranks-deep"),
    # F3 and the whole numbers: past their bounds (core.common.config.BOUNDS)
    pytest.param("train", {"lr": "1e39", "alpha": "1e300"}, ["alpha", "lr"], {}, id="floats"),
    pytest.param(
        "train",
        {"lora_plus_ratio": "1e300", "dropout": "1"},
        ["dropout", "lora_plus_ratio"],
        {},
        id="ratio-dropout",
    ),
    pytest.param(
        "train", {"rank": str(10**30), "seed": str(2**64)}, ["rank", "seed"], {}, id="ints"
    ),
    pytest.param(
        "train",
        {"steps": str(10**20), "batch_size": "0", "top_k": "-1"},
        ["batch_size", "steps", "top_k"],
        {},
        id="counts",
    ),
    pytest.param("train", {"rank": "1" * 5000}, ["rank"], {}, id="rank-5000-digits"),
    pytest.param("compare", {"seed": "-1", "steps": "1e3"}, ["seed", "steps"], {}, id="compare"),
    pytest.param(
        "compare", {"ranks": "1,99999999999999999999"}, ["ranks"], {}, id="compare-rank-huge"
    ),
    # F1: a run id past 64 bits is read; the store then says there is no such run
    pytest.param("spectra", {"run": str(10**23)}, [], {"run": 10**23}, id="run-10**23"),
    pytest.param("spectra", {"other": str(2**64)}, [], {"other": 2**64}, id="other-2**64"),
    pytest.param("compare", {"runs": str(10**23)}, [], {"runs": [str(10**23)]}, id="runs-10**23"),
    # text: empty, huge, unicode, control characters
    pytest.param("train", {"model": "", "rank": ""}, ["model", "rank"], {}, id="empty"),
    pytest.param("train", {"model": "x" * 100_000}, ["model"], {}, id="model-100k"),
    pytest.param("train", {"model": "mlp\x00"}, ["model"], {}, id="model-nul"),
    pytest.param("train", {"model": "ｍｌｐ"}, ["model"], {}, id="model-fullwidth"),
    pytest.param("train", {"rank": "٣"}, [], {"rank": 3}, id="rank-arabic-indic-3"),
    pytest.param("train", {"rank": " 8 "}, [], {"rank": 8}, id="rank-spaces"),
    pytest.param("train", {"targets": "fc1,\u202efc2"}, [], {"targets": "fc1,\u202efc2"}, id="rtl"),
    pytest.param("train", {"wings": "2", "lang": "zh", "": "x"}, [], {}, id="unknown-keys"),
    pytest.param(
        "spectra",
        {"normalised": "maybe", "everyone": "2"},
        ["everyone", "normalised"],
        {},
        id="booleans",
    ),
]


@pytest.mark.parametrize(("page", "params", "unreadable", "read"), LINK_ROWS)
def test_a_hostile_link_is_read_or_reported_never_an_error(page, params, unreadable, read):
    defaults, choices = PAGE_DEFAULTS[page]
    values, bad = links.from_query(params, defaults, choices)
    assert sorted(bad) == unreadable
    assert values == defaults | read


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, int),
        ([1], int),
        ({}, float),
        (10**400, float),
        (float("inf"), int),
        (float("nan"), float),
        ("1" * 5000, int),
        (None, str),
        ([None], list[int]),
        (DEEP, dict),
        ('{"a": ' + DEEP + "}", dict),
        (None, list[str] | str),
        (object(), bool),
    ],
    ids=repr,
)
def test_parse_refuses_anything_with_a_value_error(value, kind):
    """Every reader of settings (flags, links, the store) catches ValueError: nothing else."""
    with pytest.raises(ValueError):
        parse(value, kind)


TEXT = i18n.catalog()  # what the pages say, in English
BAD_LINK, NO_RUN = TEXT.t("common.bad_link"), TEXT.t("spectra.no_such_run")
# (page, query parameters, what the page says): a message, never an exception
PAGE_ROWS = [
    pytest.param(
        "train", {"shift_params": DEEP}, BAD_LINK.format(keys="shift_params"), id="train-deep"
    ),
    pytest.param(
        "train",
        {"shift": "rotate", "shift_params": '{"angle": "x"}'},
        BAD_LINK.format(keys="shift_params"),
        id="train-angle-text",
    ),
    pytest.param(
        "train",
        {"shift": "planted-rank", "shift_params": '{"rank": 1e300}'},
        BAD_LINK.format(keys="shift_params"),
        id="train-planted-rank-1e300",
    ),
    pytest.param(
        "train",
        {"shift": "domain", "shift_params": '{"to": 5}'},
        BAD_LINK.format(keys="shift_params"),
        id="train-domain-to-5",
    ),
    pytest.param(
        "train",
        {"shift": "rotate", "shift_params": '{"angle": 1000}'},
        BAD_LINK.format(keys="shift_params"),
        id="train-angle-1000",
    ),
    pytest.param(
        "train", {"rank": str(10**30)}, BAD_LINK.format(keys="rank"), id="train-rank-10**30"
    ),
    pytest.param(
        "train", {"seed": str(2**64)}, BAD_LINK.format(keys="seed"), id="train-seed-2**64"
    ),
    pytest.param(
        "train",
        {"lr": "1e39", "alpha": "1e300"},
        BAD_LINK.format(keys="alpha, lr"),
        id="train-floats",
    ),
    pytest.param(
        "train",
        {"steps": str(10**20), "batch_size": str(10**20)},
        BAD_LINK.format(keys="steps, batch_size"),
        id="train-counts",
    ),
    pytest.param(
        "train", {"model": "x" * 10_000}, BAD_LINK.format(keys="model"), id="train-model-10k"
    ),
    pytest.param(
        "train", {"targets": "\u202e"}, BAD_LINK.format(keys="targets"), id="train-targets-rtl"
    ),
    pytest.param(
        "spectra", {"run": str(10**23)}, NO_RUN.format(run=10**23), id="spectra-run-10**23"
    ),
    pytest.param(
        "spectra", {"other": str(2**64)}, NO_RUN.format(run=2**64), id="spectra-other-2**64"
    ),
    pytest.param("spectra", {"run": "-5"}, NO_RUN.format(run=-5), id="spectra-run-negative"),
    pytest.param(
        "spectra", {"run": "1" * 5000}, BAD_LINK.format(keys="run"), id="spectra-run-5000-digits"
    ),
    pytest.param(
        "compare",
        {"steps": str(10**20), "seed": "-1", "ranks": "1,99999999999999999999"},
        BAD_LINK.format(keys="ranks, steps, seed"),
        id="compare-numbers",
    ),
    pytest.param(
        "compare",
        {"runs": DEEP, "everyone": ""},
        BAD_LINK.format(keys="everyone"),
        id="compare-runs",
    ),
    pytest.param("learn", {"lang": "../../etc", "r": "x"}, TEXT.t("learn.title"), id="learn"),
]


def page_text(at: AppTest) -> str:
    """What a student reads in the page's titles and alerts (Markdown, its escapes undone) and
    in the plain text under an alert (common.said: what a link, a file or the store gave)."""
    said = [
        element.value for kind in ("title", "warning", "error", "info") for element in at.get(kind)
    ]
    return "\n".join([shown(value) for value in said] + [t.value for t in at.text])


@pytest.mark.parametrize(("page", "query", "says"), PAGE_ROWS)
def test_a_page_opened_with_a_hostile_link_says_so_and_raises_nothing(lab_home, page, query, says):
    assert says in page_text(open_page(page, query))  # (open_page: and raises nothing)


EVERY_RUN = {"everyone": "true"}
# (fault in the template home, page, its link, what it says, what it must not say)
PAGE_FAULT_ROWS = [
    pytest.param(
        weights_replaced(lambda t: t["fc1.A"].fill_(float("nan"))),
        "spectra",
        {"run": "1"},
        "the weights of run 1 hold NaN or inf: fc1.A",
        None,
        id="nan-weights",
    ),
    pytest.param(
        weights_replaced(transposed_A),
        "spectra",
        {"run": "1"},
        "do not fit its model: fc2.A",
        None,
        id="wrong-shape",
    ),
    pytest.param(
        no_fault, "spectra", {"run": "1", "other": str(2**63)}, f"no run #{2**63}", None, id="other"
    ),
    # a row edited by hand: the page names it and why, and shows the others (run 1)
    pytest.param(
        second_run(config="[]"),
        "spectra",
        {"run": "2"},
        "run 2 cannot be read: its config is not valid (settings must be a JSON object",
        NO_RUN.format(run=2),
        id="spectra-config-list",
    ),
    pytest.param(
        second_run(created="yesterday"),
        "spectra",
        {"run": "2"},
        "run 2 cannot be read: its created is 'yesterday'",
        NO_RUN.format(run=2),
        id="spectra-created-text",
    ),
    pytest.param(
        second_run(layers="[1, 2]"),
        "spectra",
        {"run": "2"},
        "run 2 cannot be read: a spectrum snapshot is not JSON of its layers' singular values",
        None,
        id="spectra-snapshot-list",
    ),
    pytest.param(
        second_run(config="{"),
        "compare",
        EVERY_RUN,
        "run 2 cannot be read: its config is not valid",
        None,
        id="compare-config",
    ),
    pytest.param(
        lambda home: db_run(home, "UPDATE metrics SET val_acc = 'high' WHERE step = 2"),
        "compare",
        EVERY_RUN | {"runs": "1"},
        "run 1 cannot be read: step 2's val_acc is 'high'",
        None,
        id="compare-metric-text",
    ),
]


@pytest.mark.parametrize(("fault", "page", "query", "says", "never"), PAGE_FAULT_ROWS)
def test_a_page_showing_a_damaged_run_says_why_and_shows_the_others(
    lab, teacher_key, fault, page, query, says, never
):
    fault(lab)
    before = fingerprint(lab)
    at = open_page(page, query, teacher=True)  # (and raises nothing): the class's runs
    text = page_text(at)
    assert says in text and (never is None or never not in text)
    if page == "compare":  # the runs it can read are drawn: run 1 in the runs table
        [table] = at.dataframe
        assert 1 in list(table.value["id"])
    assert fingerprint(lab) == before


def cli(*args: object, **kwargs: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "core", *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize(
    "argv", [["runs", "show", 1, "--json"], ["runs", "list", "--json"]], ids=["show", "list"]
)
def test_a_reader_that_goes_away_is_no_traceback(lab, argv):
    """`python -m core runs show 1 --json | head -c 10`, with head gone before the command
    writes (as it is when the output is larger than the pipe holds): no traceback."""
    process = cli(*argv, stdout=subprocess.PIPE)
    process.stdout.close()  # the reader is gone: every write fails with EPIPE
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == ""
    process.stderr.close()


@pytest.fixture
def no_dataset_cache():
    """The datasets a process has loaded are cached: this test's must be read from disk."""
    data._raw.cache_clear()
    yield
    data._raw.cache_clear()


@pytest.mark.parametrize(
    "planted",
    [pickle.dumps(Trap(MARKER)), b"", b"\x80\x04garbage"],
    ids=["pickle", "empty", "junk"],
)
def test_a_planted_file_in_the_mnist_cache_is_one_line(
    lab, capsys, monkeypatch, no_dataset_cache, planted
):
    processed = lab / "data" / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(planted)
    monkeypatch.setenv("LORA_LAB_OFFLINE", "1")
    before = fingerprint(lab)
    status, _, err = run(capsys, "train", "--dataset", "mnist", "--steps", "1")
    assert status == 2
    assert_one_line(err, "LoRA Lab never opens one. Delete that folder")
    assert not MARKER.exists() and fingerprint(lab) == before


# -- a store the user may read but not write ----------------------------------------------------
READER = """
import json, sys
from core.__main__ import main
for argv in json.loads(sys.argv[1]):
    print(json.dumps([argv, main(argv)]), flush=True)
"""
# Root may write anything: without these capabilities it is held to the permission bits.
NO_OVERRIDE = "-dac_override,-dac_read_search,-fowner"
AS_READER = (
    []
    if os.geteuid()
    else ["setpriv", f"--bounding-set={NO_OVERRIDE}", f"--inh-caps={NO_OVERRIDE}"]
)


@pytest.fixture
def read_only_home(template: Path, tmp_path: Path):
    """A copy of the template home with every folder r-x and every file r--."""
    if AS_READER and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: root cannot be kept from writing")
    home = tmp_path / "read-only"
    shutil.copytree(template, home)
    for path in [home, *home.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    yield home
    for path in [home, *home.rglob("*")]:
        path.chmod(0o755)


def test_a_read_only_store_can_be_read_and_refuses_writes_in_one_line(read_only_home):
    commands = [
        ["runs", "list", "--json"],
        ["runs", "show", "1", "--json"],
        ["spectra", "1", "--json"],
        ["runs", "rename", "1", "new name"],
        ["runs", "delete", "1"],
    ]
    before = fingerprint(read_only_home)
    done = subprocess.run(
        [*AS_READER, sys.executable, "-c", READER, json.dumps(commands)],
        cwd=REPO, env=os.environ | {"LORA_LAB_HOME": str(read_only_home)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    statuses = [json.loads(line)[1] for line in done.stdout.splitlines() if line.startswith("[[")]
    assert statuses == [0, 0, 0, 2, 2], done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in done.stderr
    assert all("cannot be written" in line for line in errors), errors
    assert fingerprint(read_only_home) == before
