"""`python -m core`: results as one JSON line, and every mistake as one line, never a traceback."""

import dataclasses
import datetime
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.__main__ import main, parser
from core.analyses import layer_reports, whatif
from core.cli import commands
from core.common.config import RunConfig, for_model
from core.store.runs import RunStore
from core.training import export, kinds
from core.training.data import kind_of
from core.training.record import train_and_save

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("home")  # each test has its own LORA_LAB_HOME


@pytest.fixture
def restore_threads():
    """Commands that train use a pool worker's thread count: leave other tests theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def head_run(home) -> int:
    """A saved run of method "head" (it has no adapter to export)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with RunStore() as store:
            return train_and_save(RunConfig(method="head", steps=2), store)[0]
    finally:
        torch.set_num_threads(threads)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_train_json_is_one_line_with_the_results_and_the_run_is_saved(home):
    done = cli("train", "--steps", "5", "--shift", "rotate", "--rank", "2", "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    keys = ("run_id", "test_acc_before", "test_acc_after", "trainable_params", "total_params")
    assert set(keys) | {"seconds", "status"} <= set(result)
    assert result["status"] == "finished" and result["steps"] == 5
    assert result["lr"] == 0.01  # no --lr: LoRA's own default rate
    assert result["source_acc_before"] == pytest.approx(0.93)  # the upright digits, as pretrained
    assert 0 <= result["source_acc_after"] <= 1
    with RunStore() as store:
        record = store.get(result["run_id"])
    assert record.config == RunConfig(steps=5, shift="rotate", rank=2)
    assert record.owner == "cli" and record.test_acc_after == result["test_acc_after"]
    assert record.source_acc_after == result["source_acc_after"]


def test_each_method_trains_at_its_own_rate_unless_lr_is_given(capsys, restore_threads):
    assert main(["train", "--method", "full", "--steps", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lr"] == 0.001
    assert main(["train", "--method", "full", "--lr", "0.02", "--steps", "2"]) == 0
    line = capsys.readouterr().out
    assert "at lr 0.02" in line and "source task accuracy 0.930 →" in line


def test_a_diverging_run_exits_1_with_its_reason(capsys, restore_threads):
    assert main(["train", "--lr", "100", "--optimizer", "sgd", "--steps", "30", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "failed" and "learning rate" in result["reason"]


def test_runs_list_show_export_rename_delete(home, capsys, tmp_path):
    with RunStore() as store:
        run_id, _ = train_and_save(RunConfig(steps=3), store, owner="cli")
    assert main(["runs", "list", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [run_id]
    assert main(["runs", "show", str(run_id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [h["step"] for h in shown["history"]] == [0, 1, 2, 3] and shown["snapshots"]
    assert main(["runs", "export", str(run_id), "--out", str(tmp_path / "a.zip")]) == 0
    assert zipfile.ZipFile(capsys.readouterr().out.strip()).namelist()
    assert main(["runs", "rename", str(run_id), "keep this one"]) == 0
    assert main(["runs", "list"]) == 0
    assert "keep this one" in capsys.readouterr().out
    assert main(["runs", "delete", str(run_id)]) == 0
    with RunStore() as store:
        assert store.list() == []


def test_runs_import_saves_an_adapter_zip_as_a_run(capsys, tmp_path, restore_threads):
    torch.set_num_threads(1)
    with RunStore() as store:
        run_id, _ = train_and_save(RunConfig(steps=3), store)
        adapter = str(export.export_peft(store, run_id, tmp_path / "adapter.zip"))
    assert main(["runs", "import", adapter, "--model", "mlp", "--shift", "invert", "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["run_id"] != run_id and imported["status"] == "imported"
    assert imported["owner"] == "cli" and imported["config"]["shift"] == "invert"
    assert main(["runs", "import", adapter, "--model", "mlp"]) == 0
    assert capsys.readouterr().out.startswith(f"run {imported['run_id'] + 1} imported: test acc")


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_spectra_json_is_strict_json_when_an_amplification_is_infinite(capsys, monkeypatch):
    """‖ΔW‖ / ‖UᵀW0V‖ is infinite when W0 has nothing along ΔW's directions; JSON has no
    Infinity, so it is printed as null (as NaN is)."""
    from core.analyses import reports

    layer = layer_reports.layer_report(torch.eye(3), torch.ones(3, 3))
    layer = dataclasses.replace(layer, amplification=math.inf, sigma_W=[2.0, math.nan])
    monkeypatch.setattr(reports, "analyse_run", lambda run_id: {"fc1": layer})
    assert main(["spectra", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=_no_constants)
    expected = layer.to_dict() | {"amplification": None, "sigma_W": [2.0, None]}
    assert printed == {"fc1": expected} and "planted" not in printed["fc1"]


def test_spectra_truncate_json_gives_the_truncation_table(capsys, restore_threads):
    """k = 0, 1, 2, 4 for a rank-4 run; at k = 4 the run itself, whose accuracy the store
    holds; rank_used follows whatif.rank_used's rule on the same numbers."""
    torch.set_num_threads(1)
    with RunStore() as store:
        run_id, result = train_and_save(RunConfig(steps=5, rank=4), store)
    assert main(["spectra", str(run_id), "--truncate", "--json"]) == 0
    curve = json.loads(capsys.readouterr().out)
    assert [point["k"] for point in curve["truncation"]] == [0, 1, 2, 4]
    assert all(set(point) == {"k", "score"} for point in curve["truncation"])
    assert curve["truncation"][-1]["score"] == curve["run_score"] == result.test_acc_after
    assert curve["base_score"] == result.test_acc_before and curve["metric"] == "acc"
    assert curve["max_rank"] == 4
    within = [p["score"] >= curve["run_score"] - 0.01 - 1e-12 for p in curve["truncation"]]
    from_on = [p["k"] for i, p in enumerate(curve["truncation"]) if all(within[i:])]
    assert curve["rank_used"] == (from_on[0] if from_on else None)  # whatif.rank_used's rule
    assert set(curve) == {  # the keys scripts read
        "metric", "truncation", "run_score", "base_score", "max_rank", "layers", "dora", "kept",
        "chance", "rank_used",
    }  # fmt: skip
    assert set(curve["layers"]["fc1"]) == {"rank", "numerical_rank", "dora"}
    assert set(curve["layers"]) == {"fc1", "fc2"}


def test_spectra_truncate_prints_a_table_for_a_run_without_adapters(head_run, capsys):
    """A head-only run changed one dense matrix (10 × 256, rank 10): its cut is measured too."""
    assert main(["spectra", str(head_run), "--truncate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["k", "accuracy"]
    assert [int(line.split()[0]) for line in lines[1:7]] == [0, 1, 2, 4, 8, 10]
    with RunStore() as store:
        record = store.get_summary(head_run)
    at_full_rank = float(lines[6].split()[1])
    assert at_full_rank == pytest.approx(record.test_acc_after, abs=5e-4)
    assert lines[7] == (
        f"untouched run: {record.test_acc_after:.3f}, base model: {record.test_acc_before:.3f}"
    )
    assert lines[8].startswith("this update used about ") and "of its 10 directions" in lines[8]


@pytest.mark.parametrize(
    "rank_used, says",
    [
        (2, "this update used about 2 of its 4 directions: from k = 2 on"),
        (4, "this update needed all 4 of its directions"),
        (0, "with every update removed (k = 0) the accuracy stays within 1 point"),
        (None, "no cut kept the run's accuracy to within 1 point"),
    ],
)
def test_the_truncation_reading_says_each_case_in_its_own_words(rank_used, says):
    accuracies = {k: 0.5 for k in (0, 1, 2, 4)}
    curve = truncation_curve(accuracies, run_accuracy=0.9, rank_used=rank_used, kept=[])
    lines = commands._truncation_table(curve)
    assert lines.splitlines()[-1].startswith(says)


def truncation_curve(
    accuracies: dict[int, float], run_accuracy: float, rank_used: int | None, kept: list[str]
) -> whatif.TruncationCurve:
    """A rank-4 truncation curve with these numbers (base model 0.4, chance 0.1)."""
    points = [whatif.TruncationPoint(k, accuracy) for k, accuracy in accuracies.items()]
    return whatif.TruncationCurve(
        kinds.ACCURACY,
        points,
        run_accuracy,
        0.4,
        4,
        {},
        dora=False,
        kept=kept,
        chance=0.1,
        rank_used=rank_used,
    )


@pytest.mark.parametrize(
    "run_accuracy, says",
    [
        (0.1, "the run itself is within 1 point of always answering the commonest class (0.100)"),
        (0.3, "the cut to k = 0 scores more than 1 point better than the run"),
    ],
)
def test_the_truncation_reading_tells_a_failed_or_hurt_run(run_accuracy, says):
    curve = truncation_curve({0: 0.5, 4: run_accuracy}, run_accuracy, rank_used=0, kept=["head"])
    lines = commands._truncation_table(curve).splitlines()
    assert lines[-2] == "k = 0 keeps these trained layers uncut: head"
    assert lines[-1].startswith(says)


def test_runs_export_tensorboard_writes_a_run_without_adapter(head_run, capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["runs", "export", str(head_run), "--tensorboard", str(tmp_path / "tb")]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "tb" / f"run-{head_run}"
    events = EventAccumulator(str(folder))
    events.Reload()
    with RunStore() as store:
        history = store.get(head_run).history
    trained = [row["step"] for row in history if row["train_loss"] is not None]
    assert [event.step for event in events.Scalars("loss/train")] == trained
    files = {path: path.read_bytes() for path in folder.iterdir()}
    # A second export into the same folder, or one with --force, writes nothing.
    assert main(["runs", "export", str(head_run), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["runs", "export", str(head_run), "--tensorboard", "tb2", "--force"]) == 2
    assert "--force replaces the zip of --out" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in folder.iterdir()} == files
    assert not (REPO / "tb2").exists()


def test_train_has_a_flag_for_every_config_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text


def test_train_help_lists_the_values_of_every_choice(capsys):
    from core.common.config import OPTIMIZERS
    from core.lowrank import lora, methods
    from core.training import data, zoo

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    choices = {
        "model": zoo.names(),
        "dataset": data.DATASETS,
        "shift": data.SHIFTS,
        "method": methods.METHODS,
        "init": lora.INITS,
        "scaling": lora.SCALINGS,
        "optimizer": OPTIMIZERS,
    }
    for flag, values in choices.items():
        assert f"--{flag} {{{','.join(values)}}}" in text


def test_help_answers_without_importing_torch():
    """The parser needs only core.common.config; the commands (and torch, ~1 s) load after
    parsing."""
    for args in (["--help"], ["train", "--help"], ["experiment", "--help"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "core", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and "usage: python -m core" in done.stdout
        imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines()]
        assert "core.common.config" in imported  # -X importtime did list the imports
        assert not [name for name in imported if name.split(".")[0] == "torch"], args


def test_experiment_help_names_every_experiment(capsys):
    """The parser lists the experiments without importing core.analyses.experiments (torch)."""
    from core import __main__
    from core.analyses import experiments

    assert tuple(experiments.EXPERIMENTS) == __main__.EXPERIMENTS
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert ", ".join(experiments.EXPERIMENTS) in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_model_starts_from_its_own_settings_and_a_flag_given_replaces_one(command):
    args = parser().parse_args([command, "--model", "gpt", "--rank", "2", "--shift", "none"])
    assert commands.config_from(args) == dataclasses.replace(for_model("gpt"), rank=2, shift="none")
    assert commands.config_from(parser().parse_args([command])) == RunConfig()


def test_a_gpt_run_says_bits_per_character_and_its_sample_and_runs_keep_them(
    home, capsys, restore_threads, tmp_path
):
    assert main(["train", "--model", "gpt", "--steps", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    with RunStore() as store:
        record = store.get(result["run_id"])
    assert record.config == dataclasses.replace(for_model("gpt"), steps=4)
    for field in ("test_bpc_before", "test_bpc_after", "source_bpc_before", "source_bpc_after"):
        assert result[field] == getattr(record, field) and 0 < result[field] < 8
    sample = record.history[-1]["sample"]
    assert record.history[-1]["step"] == 4 and sample

    assert main(["runs", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["test_bpc_after"] == result["test_bpc_after"]
    assert main(["runs", "list"]) == 0
    assert "bpc after" in capsys.readouterr().out
    assert main(["runs", "show", str(record.id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["source_bpc_after"] == result["source_bpc_after"]
    assert shown["history"][-1]["sample"] == sample
    assert main(["runs", "show", str(record.id)]) == 0
    out = capsys.readouterr().out
    assert f"test_bpc_after: {result['test_bpc_after']}" in out
    assert "val bits per character" in out and _indented(sample) in out

    # The text line: before → after in bits per character, on the code and on the prose, then
    # the final sample as text (each line indented).
    line = commands._describe(result, kind_of("prose"), record.history)
    before, after = result["test_bpc_before"], result["test_bpc_after"]
    assert f"test bits per character {before:.3f} → {after:.3f} (lower is better)" in line
    assert f"source task bits per character {result['source_bpc_before']:.3f} →" in line
    assert line.endswith(f"sample at step 4:\n{_indented(sample)}")

    # Its adapter out and back in: measured again on the model's own task, in bits.
    zip_path = tmp_path / "gpt.zip"
    assert main(["runs", "export", str(record.id), "--out", str(zip_path)]) == 0
    capsys.readouterr()
    assert main(["runs", "import", str(zip_path), "--model", "gpt", "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["config"]["dataset"] == "prose" and imported["config"]["shift"] == "code"
    assert imported["test_bpc_after"] == result["test_bpc_after"]
    assert main(["runs", "import", str(zip_path), "--model", "gpt"]) == 0
    assert f"test bits per character {before:.3f} → {after:.3f}" in capsys.readouterr().out


def test_a_gpt_sweeps_table_is_in_bits_per_character():
    outcome = {"test_bpc_before": 3.5, "test_bpc_after": 2.25, "source_bpc_after": 2.75}
    outcome |= {"test_acc_after": 0.5, "seconds": 1.0, "trainable_params": 5, "total_params": 10}
    job = SimpleNamespace(
        run_id=1, config=for_model("gpt"), status="finished", reason="", result=outcome
    )
    row = commands._sweep_row(job)
    assert row["test_bpc_after"] == 2.25 and row["test_acc_after"] == 0.5
    header, line = commands._sweep_table([row], kind_of("prose")).splitlines()
    assert header.split()[5:8] == ["bpc", "before", "bpc"]
    assert "3.500" in line and "2.250" in line and "2.750" in line


def _indented(sample: str) -> str:
    return "\n".join(f"  {line}" for line in sample.split("\n"))


def test_runs_show_prints_when_a_run_was_created_as_a_local_date_time(head_run, capsys):
    with RunStore() as store:
        created = store.get(head_run).created
    assert main(["runs", "show", str(head_run)]) == 0
    shown = datetime.datetime.fromtimestamp(created).astimezone()
    expected = shown.isoformat(sep=" ", timespec="seconds")
    assert f"created: {expected}\n" in capsys.readouterr().out
    assert main(["runs", "show", str(head_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == created  # seconds since the epoch


ONE_LINE_ERRORS = {
    "rank below 1": (["train", "--rank", "0"], "rank must be"),
    "rank above min(d, k)": (["train", "--rank", "300"], "min(d, k)"),
    "no such layer": (["train", "--targets", "nope"], "matches no layer"),
    "lr not > 0": (["train", "--lr", "-1"], "lr must be"),
    "unknown model": (["train", "--model", "nope"], "unknown model"),
    "not a number": (["train", "--rank", "four"], "rank must be a whole number (got 'four')"),
    "lr not a number": (
        ["train", "--lr", "fast"],
        "lr must be a number, or empty for the default (got 'fast')",
    ),
    "bad JSON": (["train", "--shift-params", "{bad"], "shift_params must be a JSON object"),
    "JSON but no object": (["train", "--shift-params", "[[1, 2]]"], "shift_params must be"),
    "shift parameter not a number": (
        ["train", "--shift-params", '{"angle": "x"}'],
        "shift parameter 'angle' must be a number (got 'x')",
    ),
    "shift seed not whole": (
        ["train", "--shift", "permute", "--shift-params", '{"seed": 2.5}'],
        "shift parameter 'seed' must be a whole number (got 2.5)",
    ),
    "unknown shift parameter": (["train", "--shift-params", '{"x": 1}'], "no parameter"),
    "steps above the limit": (
        ["train", "--steps", "1000000000"],
        "steps 1000000000 is above the command line's limit of 100000 "
        "(set LORA_LAB_MAX_STEPS to change it)",
    ),
    "epochs above the limit": (  # 55 batches of 64 in an epoch of the default data
        ["train", "--epochs", "2000"],
        "epochs 2000 at batch_size 64 (110000 steps) is above the command line's limit",
    ),
    "batch size above the limit": (
        ["train", "--batch-size", "10000"],  # within config's sanity bound, above the limit
        "batch_size 10000 is above the command line's limit of 4096",
    ),
    "sweep above the limit": (["sweep", "--steps", "1000000000"], "LORA_LAB_MAX_STEPS"),
    "bad ranks": (["sweep", "--ranks", "1,x"], "--ranks"),
    "sweep rank too large": (["sweep", "--ranks", "4,300"], "min(d, k)"),
    "missing run": (["runs", "show", "999"], "no run 999"),
    "rename missing run": (["runs", "rename", "999", "x"], "no run 999"),
    "delete missing run": (["runs", "delete", "999"], "no run 999"),
    "export missing run": (["runs", "export", "999"], "no run 999"),
    "spectra of a missing run": (["spectra", "999"], "no run 999"),
    "truncate a missing run": (["spectra", "999", "--truncate"], "no run 999"),
    "tensorboard export of a missing run": (
        ["runs", "export", "999", "--tensorboard", "/nonexistent/tb"],
        "no run 999",
    ),
    "unknown experiment": (["experiment", "nope"], "unknown experiment"),
    "a text model on images": (
        ["train", "--model", "gpt", "--dataset", "mnist-5k"],
        "model gpt reads text but dataset mnist-5k holds images",
    ),
    "an image shift on text": (["train", "--model", "gpt", "--shift", "rotate"], "shift rotate"),
    "a sweep of a text model on images": (
        ["sweep", "--model", "gpt", "--dataset", "digits"],
        "model gpt reads text",
    ),
    "unknown zoo model": (["pretrain", "nope"], "nope"),
    "import a missing file": (["runs", "import", "nope.zip", "--model", "mlp"], "cannot read"),
    "import onto no such model": (["runs", "import", "a.zip", "--model", "nope"], "unknown model"),
    "import a file that is not a zip": (
        ["runs", "import", str(REPO / "pyproject.toml"), "--model", "mlp"],
        "is not a zip",
    ),
    "inspect a file of neither adapter format": (
        ["inspect", str(REPO / "pyproject.toml")],
        "is neither adapter format",
    ),
}


@pytest.mark.parametrize("case", ONE_LINE_ERRORS)
def test_every_bad_command_exits_2_with_one_line(case, capsys, restore_threads):
    """In-process, so every error path stays fast; an uncaught exception would fail it."""
    args, message = ONE_LINE_ERRORS[case]
    assert main(args) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr


def test_the_environment_changes_the_command_lines_limits(capsys, monkeypatch, restore_threads):
    monkeypatch.setenv("LORA_LAB_MAX_STEPS", "3")
    assert main(["train", "--steps", "4"]) == 2
    assert "steps 4 is above the command line's limit of 3" in capsys.readouterr().err
    monkeypatch.setenv("LORA_LAB_MAX_STEPS", "many")
    assert main(["train", "--steps", "2"]) == 2
    stderr = capsys.readouterr().err
    assert stderr == "error: LORA_LAB_MAX_STEPS must be a whole number ≥ 1 (got 'many')\n"


@pytest.mark.parametrize(
    "case",
    [
        "rank above min(d, k)",
        "missing run",
        "import a file that is not a zip",
        "steps above the limit",
        "inspect a file of neither adapter format",
    ],
)
def test_the_real_command_line_exits_2_with_one_line_and_no_traceback(case):
    args, message = ONE_LINE_ERRORS[case]
    done = cli(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert message in done.stderr and "Traceback" not in done.stderr


def test_exporting_a_run_without_adapter_is_one_line(head_run, capsys):
    assert main(["runs", "export", str(head_run)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "only LoRA runs" in stderr


def test_a_tensorboard_export_into_the_store_is_refused(head_run, capsys, home):
    assert main(["runs", "export", str(head_run), "--tensorboard", str(home / "runs")]) == 2
    assert "weights folder" in capsys.readouterr().err
    assert not (home / "runs" / f"run-{head_run}").exists()


def test_a_foreign_database_is_one_line_and_left_alone(home):
    (home / "runs.db").write_bytes(b"not a database" * 100)
    done = cli("runs", "list")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "left untouched" in done.stderr and "Traceback" not in done.stderr
    assert (home / "runs.db").read_bytes() == b"not a database" * 100


@pytest.mark.parametrize(
    "args", [["train", "--no-such-flag"], ["frobnicate"], ["runs", "show", "abc"]]
)
def test_argparse_errors_are_usage_plus_one_line(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m core")


def test_a_real_argparse_error_has_no_traceback():
    done = cli("train", "--no-such-flag")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("python -m core")


def test_a_text_runs_truncation_table_is_in_bits_and_says_lower_is_better():
    points = [whatif.TruncationPoint(k, bits) for k, bits in {0: 2.6, 1: 2.3, 4: 2.0}.items()]
    curve = whatif.TruncationCurve(kinds.BITS, points, 2.0, 2.6, 4, {}, False, [], 6.6, 4)
    lines = commands._truncation_table(curve).splitlines()
    assert lines[0].split() == ["k", "bits", "per", "character"]
    assert "bits per character: lower is better" in lines
    assert lines[-1].startswith("this update needed all 4 of its directions: every cut below")
    assert "0.01 bits" in lines[-1]
