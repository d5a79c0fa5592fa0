"""Importing an adapter zip: it comes back as a run that computes exactly what it computed
before, and a bad or unsafe file is refused with one line while the store stays as it was."""

import copy
import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model

from core.analyses import reports
from core.common.config import RunConfig, for_model
from core.lowrank import lora, peft_io
from core.store.runs import RunStore
from core.training import adapters, export, zoo
from core.training.adapters import import_adapter
from core.training.rebuild import rebuild
from core.training.record import train_and_save
from core.training.train import load_task
from tests.support.store import SMALL, outputs, outside, text_outputs, zipped

CONFIG, WEIGHTS = peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE

pytestmark = pytest.mark.usefixtures("one_thread", "home")  # each test has its own home


@pytest.fixture
def exported(store, tmp_path) -> tuple[int, dict[str, bytes]]:
    """A trained LoRA run and the files of its exported zip: (run id, {name: content})."""
    run_id, _ = train_and_save(RunConfig(**SMALL), store)
    with zipfile.ZipFile(export.export_peft(store, run_id, tmp_path / "run.zip")) as archive:
        return run_id, {name: archive.read(name) for name in archive.namelist()}


def saved_state(store: RunStore) -> tuple[list, list]:
    """Everything the store holds: its runs, and its weights (every file under its folder of
    weights; with PostgreSQL, every row of its weights table)."""
    if store.weights_dir is None:
        weights = outside(store, "SELECT run_id, md5(data) FROM weights ORDER BY run_id")
    else:
        weights = sorted(store.weights_dir.rglob("*")) if store.weights_dir.exists() else []
    return [r.summary() for r in store.list()], weights


@pytest.mark.parametrize(
    "settings",
    [{}, {"dora": True, "scaling": "rslora"}, {"model": "cnn", "targets": "conv1,fc1", "rank": 2}],
    ids=["plain", "dora-rslora", "cnn-conv"],
)
def test_an_exported_run_comes_back_with_the_same_logits_and_delta_W(store, tmp_path, settings):
    config = RunConfig(**SMALL, **settings)
    run_id, result = train_and_save(config, store)
    zip_bytes = export.export_peft(store, run_id, tmp_path / "run.zip").read_bytes()
    new_id = import_adapter(zip_bytes, RunConfig(model=config.model), store, "bob", "run.zip")
    record = store.get(new_id)
    assert (record.status, record.owner, record.reason) == ("imported", "bob", "from run.zip")
    assert record.config.rank == config.rank and record.config.alpha == config.alpha
    assert record.config.dora == config.dora and record.config.scaling == config.scaling
    assert record.config.targets == sorted(lora.adapted_layers(result.model))
    assert record.test_acc_before == result.test_acc_before  # the same task, measured again
    assert record.test_acc_after == result.test_acc_after
    assert record.trainable_params == result.trainable_params
    _, model = rebuild(store.read_weights(new_id))
    assert torch.equal(outputs(model), outputs(result.model))
    original, imported = lora.delta_weights(result.model), lora.delta_weights(model)
    assert original.keys() == imported.keys()
    assert all(torch.equal(original[name], imported[name]) for name in original)
    assert reports.analyse_run(new_id, store).keys() == original.keys()  # the Spectra page


def test_a_peft_save_pretrained_folder_zipped_imports(store, tmp_path):
    base = zoo.load("mlp")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["fc1"], modules_to_save=["head"])
    peft_model = get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():  # as if trained: B ≠ 0, and a head of its own
        for param in (p for p in peft_model.parameters() if p.requires_grad):
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))
    peft_model.save_pretrained(tmp_path / "my-adapter")
    files = {f"my-adapter/{p.name}": p.read_bytes() for p in (tmp_path / "my-adapter").iterdir()}
    assert set(files) >= {f"my-adapter/{CONFIG}", f"my-adapter/{WEIGHTS}", "my-adapter/README.md"}
    new_id = import_adapter(zipped(files), RunConfig(model="mlp"), store)
    record = store.get_summary(new_id)
    assert record.config.targets == ["fc1"] and record.config.rank == 2
    _, model = rebuild(store.read_weights(new_id))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), peft_model.eval()(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x), base(x), atol=1e-3)  # the head came along too


GPT_TASK = RunConfig(model="gpt", dataset="prose", shift="code")  # what the imports measure on


def test_a_gpt_run_exported_loads_in_peft_and_comes_back_with_its_bits_per_character(
    store, tmp_path
):
    config = RunConfig.from_dict({**for_model("gpt").to_dict(), **SMALL})
    run_id, result = train_and_save(config, store)
    zip_path = export.export_peft(store, run_id, tmp_path / "gpt.zip")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "gpt")
    theirs = PeftModel.from_pretrained(zoo.load("gpt"), tmp_path / "gpt")
    torch.testing.assert_close(text_outputs(theirs), text_outputs(result.model))
    assert not torch.allclose(text_outputs(zoo.load("gpt")), text_outputs(result.model))

    new_id = import_adapter(zip_path.read_bytes(), GPT_TASK, store, "bob", "gpt.zip")
    record = store.get(new_id)
    assert record.config.targets == sorted(lora.adapted_layers(result.model))
    _, model = rebuild(store.read_weights(new_id))
    assert torch.equal(text_outputs(model), text_outputs(result.model))
    for field in ("test_bpc_before", "test_bpc_after", "source_bpc_before", "source_bpc_after"):
        assert getattr(record, field) == getattr(result, field)  # the same text, measured again
    assert record.test_acc_after == result.test_acc_after  # the next-character accuracy
    assert record.history[0]["val_bpc"] == result.history[0]["val_bpc"]


def test_a_gpt_adapter_from_peft_imports_with_the_same_logits_and_is_measured_in_bits(
    store, tmp_path
):
    base = zoo.load("gpt")
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q", "v"])
    peft_model = get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():  # as if trained: B ≠ 0
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(
                    0.2 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2))
                )
    peft_model.save_pretrained(tmp_path / "gpt-adapter")
    files = {p.name: p.read_bytes() for p in (tmp_path / "gpt-adapter").iterdir()}
    new_id = import_adapter(zipped(files), GPT_TASK, store)
    record = store.get_summary(new_id)
    assert record.config.rank == 2 and all(t.endswith((".q", ".v")) for t in record.config.targets)
    _, model = rebuild(store.read_weights(new_id))
    torch.testing.assert_close(text_outputs(model), text_outputs(peft_model), atol=1e-5, rtol=1e-5)
    test = load_task(GPT_TASK).split("test")  # the bits per character, computed here
    with torch.no_grad():
        logits = peft_model.eval()(test.x)
    nats = F.cross_entropy(logits.flatten(0, 1), test.y.flatten()).item()
    assert record.test_bpc_after == pytest.approx(nats / math.log(2), rel=1e-5)
    assert record.test_bpc_after != pytest.approx(record.test_bpc_before)


class _Trap:
    """Unpickling this creates a file: the proof that a pickle was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize(
    ("name", "message"),
    [(WEIGHTS, "is not a safetensors file"), ("adapter_model.bin", "a pickle, which")],
)
def test_a_pickle_is_never_opened_and_the_store_is_unchanged(
    exported, store, tmp_path, name, message
):
    marker = tmp_path / "unpickled"
    files = {CONFIG: exported[1][CONFIG], name: pickle.dumps(_Trap(marker))}
    before = saved_state(store)
    with pytest.raises(ValueError, match=message):
        import_adapter(zipped(files), RunConfig(), store)
    assert not marker.exists()
    assert saved_state(store) == before


def test_an_adapter_for_another_model_does_not_fit(store, tmp_path):
    """The CNN's fc1 takes 32·7·7 inputs, the MLP's 784: same name, other shape."""
    run_id, _ = train_and_save(RunConfig(model="cnn", targets="fc1", rank=2, **SMALL), store)
    zip_bytes = export.export_peft(store, run_id, tmp_path / "cnn.zip").read_bytes()
    before = saved_state(store)
    with pytest.raises(ValueError, match="does not fit this model: fc1"):
        import_adapter(zip_bytes, RunConfig(model="mlp"), store)
    assert saved_state(store) == before


def with_nan(weights: bytes) -> bytes:
    tensors = safetensors.torch.load(weights)
    next(iter(tensors.values()))[0] = float("nan")
    return safetensors.torch.save(tensors)


def broken(files: dict[str, bytes], case: str) -> bytes:
    """The exported zip, spoiled in one way."""
    config, weights = files[CONFIG], files[WEIGHTS]
    no_rank = {k: v for k, v in json.loads(config).items() if k != "r"}
    spoiled = {
        "path traversal": {f"../../{CONFIG}": config, WEIGHTS: weights},
        "absolute path": {f"/tmp/{CONFIG}": config, f"/tmp/{WEIGHTS}": weights},
        "windows path": {f"C:\\temp\\{CONFIG}": config, WEIGHTS: weights},
        "no weights": {CONFIG: config},
        "two adapters": {f"a/{CONFIG}": config, f"a/{WEIGHTS}": weights, f"b/{CONFIG}": config},
        "split folders": {f"a/{CONFIG}": config, f"b/{WEIGHTS}": weights},
        "too many entries": {CONFIG: config, WEIGHTS: weights} | {f"x{i}": b"" for i in range(200)},
        "config not an object": {CONFIG: b"[1, 2]", WEIGHTS: weights},
        "no rank": {CONFIG: json.dumps(no_rank).encode(), WEIGHTS: weights},
        "NaN weights": {CONFIG: config, WEIGHTS: with_nan(weights)},
    }
    return b"PK, but not a zip" * 10 if case == "not a zip" else zipped(spoiled[case])


BROKEN = {
    "not a zip": "is not a zip",
    "path traversal": "points outside",
    "absolute path": "points outside",
    "windows path": "points outside",
    "no weights": f"has no {WEIGHTS}",
    "two adapters": "one adapter only",
    "split folders": "same folder",
    "too many entries": "holds 202 entries",
    "config not an object": "not a JSON object",
    "no rank": "needs the numbers r and lora_alpha",
    "NaN weights": "NaN or infinite",
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_bad_or_unsafe_zip_is_one_line_and_the_store_is_unchanged(exported, store, case):
    before = saved_state(store)
    with pytest.raises(ValueError, match=BROKEN[case]) as error:
        import_adapter(broken(exported[1], case), RunConfig(), store)
    assert "\n" not in str(error.value)
    assert saved_state(store) == before


def test_a_zip_too_large_or_unpacking_too_large_is_refused(exported, store, monkeypatch):
    zip_bytes = zipped(exported[1])
    monkeypatch.setattr(adapters, "MAX_ZIP_BYTES", len(zip_bytes) - 1)
    with pytest.raises(ValueError, match="too large"):
        import_adapter(zip_bytes, RunConfig(), store)
    monkeypatch.undo()
    # A "zip bomb": small when packed, its weights file too large once unpacked.
    monkeypatch.setattr(adapters, "MAX_FILE_BYTES", len(exported[1][WEIGHTS]) - 1)
    with pytest.raises(ValueError, match=f"{WEIGHTS} unpacks to more than"):
        import_adapter(zip_bytes, RunConfig(), store)
    assert [r.id for r in store.list()] == [exported[0]]


def test_a_damaged_zip_is_one_line(exported, store):
    zip_bytes = bytearray(zipped(exported[1]))
    middle = zip_bytes.index(b"PK\x03\x04", 4) - 100  # inside the first entry's packed bytes
    zip_bytes[middle : middle + 50] = b"\xa5" * 50
    with pytest.raises(ValueError, match="damaged"):
        import_adapter(bytes(zip_bytes), RunConfig(), store)


def test_read_zip_explains_a_missing_file_and_stops_reading_a_huge_one(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"cannot read .*No such file"):
        adapters.read_zip(tmp_path / "nope.zip")
    monkeypatch.setattr(adapters, "MAX_ZIP_BYTES", 10)
    (tmp_path / "big.zip").write_bytes(b"x" * 1000)
    assert len(adapters.read_zip(tmp_path / "big.zip")) == 11


def test_a_class_exports_its_lora_runs_as_one_zip_of_adapters_that_import(store):
    lora = train_and_save(RunConfig(**SMALL), store, owner="ann")[0]
    full = train_and_save(RunConfig(method="full", **SMALL), store, owner="ben")[0]
    failed = store.create(RunConfig(), owner="cleo")
    store.fail(failed, "diverged")
    with zipfile.ZipFile(io.BytesIO(export.adapters_zip(store, [full, lora, failed]))) as archive:
        assert archive.namelist() == [f"run-{lora}-peft.zip"]  # full and failed: no adapter
        inner = archive.read(f"run-{lora}-peft.zip")
    assert inner == export.adapter_zip(store, lora)
    new_id = import_adapter(inner, RunConfig(), store, "teacher", "run.zip")
    assert store.get_summary(new_id).trainable_params == store.get_summary(lora).trainable_params
