"""`python -m core inspect`: any adapter file, its report as text or JSON, a resize written as a
new PEFT folder; each kind of bad input one line and exit status 2, with nothing written."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core.__main__ import main
from core.lowrank.adapter_files import open_adapter
from core.lowrank.inspection import TOP_K, inspect_adapter
from tests.support.adapter_files import train_peft, write_kohya

KOHYA = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj": ((6, 2), (2, 5), 1.0)}


@pytest.fixture(scope="module")
def peft_zip(tmp_path_factory) -> tuple[Path, Path]:
    """(a PEFT adapter folder of the tiny Llama, the same zipped inside a folder)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("peft")
    folder = train_peft(root / "adapter", r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    archive = root / "adapter.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in folder.iterdir():
            zipped.write(file, f"my-adapter/{file.name}")
    return folder, archive


def test_a_zip_s_report_and_resize_as_json(peft_zip, tmp_path, capsys):
    folder, archive = peft_zip
    out = tmp_path / "small"
    assert main(["inspect", str(archive), "--json", "--resize", "rank=1", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = inspect_adapter(open_adapter(folder), "x", extra=None)
    assert [layer["name"] for layer in printed["layers"]] == [x.name for x in expected.layers]
    for layer, same in zip(printed["layers"], expected.layers, strict=True):
        np.testing.assert_allclose(layer["sigma"], same.sigma, rtol=1e-12)
        assert layer["kept"]["rank=1"] == 1
    assert printed["top_k"] == TOP_K and printed["format"] == "peft"
    assert {layer["rank_after"] for layer in printed["resize"]["layers"]} == {1}
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_the_text_report_names_each_layer_and_what_a_resize_kept(tmp_path, capsys):
    path = tmp_path / "style.safetensors"
    write_kohya(path, KOHYA, torch.float16)
    out = tmp_path / "out"
    assert (
        main(["inspect", str(path), "--top", "1", "--resize", "energy=0.5", "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("kohya adapter, 1 layers")
    assert "top-1 energy" in text and "energy=0.5" in text
    assert f"wrote {out}: ranks 2 → 1 in all" in text
    name = next(iter(KOHYA))
    assert sum(line.startswith(name) for line in text.splitlines()) == 3  # table, σ, resize


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """{case: (a path to inspect, what its one line says)}."""
    kohya = folder / "ok.safetensors"
    write_kohya(kohya, KOHYA, torch.float32)
    data = kohya.read_bytes()
    cases = {
        "neither": ("notes.txt", "is neither adapter format"),
        "no lora keys": ("weights.safetensors", "holds no LoRA factors"),
        "no config": ("folder", "adapter_config.json is missing"),
        "not chained": ("chain.safetensors", "its factors do not chain"),
        "header too long": ("claim.safetensors", "not a readable safetensors file"),
        "cut short": ("short.safetensors", "not a readable safetensors file"),
        "nan": ("nan.safetensors", "NaN or infinite weights"),
        "rank too high": ("rank.safetensors", "rank 5 is above min(d, k) = 3"),
        "int weights": ("int.safetensors", "holds int32 numbers"),
    }
    (folder / "notes.txt").write_text("not an adapter")
    save_file({"model.weight": torch.ones(2, 2)}, folder / "weights.safetensors")
    (folder / "folder").mkdir()
    (folder / "folder" / "adapter_model.safetensors").write_bytes(data)
    unchained = {
        "x_0_q.lora_up.weight": torch.ones(6, 3),
        "x_0_q.lora_down.weight": torch.ones(2, 5),
    }
    save_file(unchained, folder / "chain.safetensors")
    (folder / "claim.safetensors").write_bytes(struct.pack("<Q", len(data) + 100) + data[8:])
    (folder / "short.safetensors").write_bytes(data[:-8])
    nan = {"x_0_q.lora_up.weight": torch.full((4, 2), torch.nan)}
    save_file({**nan, "x_0_q.lora_down.weight": torch.ones(2, 4)}, folder / "nan.safetensors")
    write_kohya(folder / "rank.safetensors", {"x_0_q": ((3, 5), (5, 4), None)}, torch.float32)
    ints = {"x_0_q.lora_up.weight": torch.ones(4, 2, dtype=torch.int32)}
    save_file({**ints, "x_0_q.lora_down.weight": torch.ones(2, 4)}, folder / "int.safetensors")
    return {case: (folder / name, said) for case, (name, said) in cases.items()}


def test_each_bad_input_is_one_line_and_exit_2_and_nothing_is_written(tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for case, (path, said) in bad_files(inputs).items():
        out = tmp_path / f"out-{case}"
        status = main(["inspect", str(path), "--resize", "rank=1", "--out", str(out)])
        captured = capsys.readouterr()
        assert status == 2, case
        assert captured.out == "", case
        assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), case
        assert said in captured.err, (case, captured.err)
        assert not out.exists(), case
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # no scratch left either


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--resize", "rank=1"], "--resize and --out go together"),
        (["--resize", "half", "--out", "new"], "'half' is not a criterion"),
        (["--resize", "rank=1", "--out", "existing"], "exists: name a new folder"),
        (["--top", "0"], "--top must be a whole number ≥ 1"),
    ],
)
def test_a_bad_flag_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, said):
    monkeypatch.chdir(tmp_path)
    write_kohya(tmp_path / "a.safetensors", KOHYA, torch.float32)
    (tmp_path / "existing").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["inspect", "a.safetensors", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not any((tmp_path / "existing").iterdir())


def test_a_zip_over_the_command_line_s_upload_limit_is_refused(peft_zip, monkeypatch, capsys):
    monkeypatch.setenv("LORA_LAB_MAX_UPLOAD_MB", "1")
    folder, _ = peft_zip
    big = folder.parent / "big.zip"
    with zipfile.ZipFile(big, "w") as zipped:  # stored: the random bytes make it over 1 MiB
        zipped.writestr("filler.bin", np.random.default_rng(0).bytes(2**20 + 1))
    assert main(["inspect", str(big)]) == 2
    assert "over 1 MB" in capsys.readouterr().err
