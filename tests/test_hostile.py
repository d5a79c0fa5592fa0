"""Hostile input, row by row: adapter zips built here, faults in the run store, and command lines.

Each row is one bad input or fault and what must come of it: exit status 2 and one line that
names the problem (never a traceback), or, where the command can still do its job, the job done
and the problem named; and where nothing should change, the LoRA Lab home byte for byte as it
was (a sha256 of every file in it, before and after). Commands run in-process through
core.__main__.main, and in a subprocess only where the process itself matters (a closed pipe, a
user who cannot write the store).
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
import zipfile
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from core import data, peft_io, rundb, runs
from core.__main__ import main
from core.config import RunConfig
from core.runs import RunStore, StoreError, train_and_save
from core.train import train

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
        content = store.adapter_zip(1)
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
def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


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


def home_is_a_file(home: Path) -> None:
    shutil.rmtree(home)
    home.write_text("I am a file, not a folder\n")


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
        home_is_a_file, ["runs", "list"], "(it is a file): set LORA_LAB_HOME", id="home-file"
    ),
    pytest.param(home_is_a_file, NEW_RUN, "set LORA_LAB_HOME", id="home-file-train"),
    pytest.param(
        replace_path(lambda p: p.write_bytes(b"my thesis\n" * 99)),
        ["runs", "list"],
        "not an SQLite",
        id="db-foreign",
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
]


@pytest.mark.parametrize(("fault", "argv", "says"), STORE_ROWS)
def test_a_store_fault_is_one_line_and_changes_nothing(lab, capsys, fault, argv, says):
    fault(lab)
    before = fingerprint(lab)
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert_one_line(err, says)
    assert fingerprint(lab) == before
    assert not MARKER.exists()


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
        new.finish(2, result)
        folders = sorted(p.name for p in (lab / "runs").iterdir())
        assert len(folders) == 2 and all(re.fullmatch("[0-9a-f]{32}", f) for f in folders)
    before = fingerprint(lab)
    with pytest.raises(StoreError, match="moved or replaced while run 2 trained"):
        old.append(run_id, result.history, result.snapshots)
    with pytest.raises(StoreError, match="moved or replaced while run 2 trained"):
        old.finish(run_id, result)
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
        store.load_run_model(1)
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
