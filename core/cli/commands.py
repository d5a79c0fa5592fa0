"""What each `python -m core` command does, once core/__main__.py has parsed its arguments.

Kept apart from the parser because everything here needs torch (about a second to import):
`python -m core --help`, or a mistyped flag, answers without loading it. `run(args)` is the
one entry: it calls the command's function and turns an expected error (bad input, a missing
run, weights that need a download) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from core.analyses import experiments, reports, whatif
from core.analyses.tensorboard_export import export_tensorboard, run_folder
from core.common import paths
from core.common.config import DEFAULT_MODEL, RunConfig, for_model, sweep_configs
from core.common.limits import COMMAND_LINE, Limits
from core.common.paths import OfflineError
from core.common.text import for_terminal
from core.jobs import executors
from core.jobs.pool import default_executor
from core.jobs.scheduler import Pool
from core.lowrank import inspection
from core.store.runs import RunStore, StoreError
from core.training import export, train, zoo
from core.training.adapters import import_adapter, opened_adapter, read_zip
from core.training.data import kind_of
from core.training.kinds import DataKind, Metric
from core.training.measure import open_run
from core.training.record import train_and_save

OWNER = "cli"
CLOSED_PIPE = 141  # 128 + SIGPIPE: the status a shell shows for a tool whose reader went away


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; expected errors become one line on stderr, never a traceback."""
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not at exit
        return status
    except (ValueError, StoreError, OfflineError) as error:
        print(f"error: {for_terminal(' '.join(str(error).split()))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Python's advice: point stdout at devnull, so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE


def to_json(value: Any) -> str:
    """One line of strict JSON. JSON has no Infinity or NaN (Python would write them anyway, and
    other tools could not read the line), so a non-finite number, such as the amplification of
    an update along directions W0 does not use at all, is written as null."""
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# -- train ----------------------------------------------------------------------------------------
def config_from(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the flags describe, checked against its base model (ValueError if bad).

    A run starts from its model's own settings (config.for_model: gpt reads prose, adapts q
    and v, …) and each flag given replaces one of them. The flags' values are still strings:
    RunConfig.from_dict reads them, as it reads a link's.
    """
    names = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    start = for_model(given.get("model", DEFAULT_MODEL)).to_dict()
    config = RunConfig.from_dict({**start, **given})
    config.validate()  # a bad setting is named before any weights load
    train.check_config(config, zoo.load(config.model))
    return config


def use_job_threads() -> None:
    """Use the thread count of a pool worker, so the command line computes the same numbers,
    bit for bit, as the app does for the same config."""
    torch.set_num_threads(executors.threads_per_job(executors.default_workers()))


def check_limits(config: RunConfig) -> Limits:
    """The command line's limits (core.common.limits.COMMAND_LINE, changed by the environment):
    wider than a server's, never none. ValueError naming the limit; returns the limits."""
    limits = Limits.from_env(COMMAND_LINE, known_models=zoo.names())
    limits.check(config)
    executors.check_planned(config, limits)
    return limits


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from(args)
    check_limits(config)
    use_job_threads()
    stop = threading.Event()
    interrupt = signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: stop, save
    try:
        with RunStore() as store, tqdm(desc="training", unit="step", disable=None) as bar:
            run_id, result = train_and_save(config, store, OWNER, _progress(bar), stop)
    finally:
        signal.signal(signal.SIGINT, interrupt)
    summary = {"run_id": run_id, **result.summary()}
    if args.json:
        print(to_json(summary))
    else:
        print(_describe(summary, kind_of(config.dataset), result.history))
    return 0 if result.status != "failed" else 1


def _progress(bar: Any) -> Callable:
    def on_event(event: Any) -> None:
        if event.kind == "start":
            bar.reset(total=event.data["steps"])
        elif event.kind == "step" and event.step > 0:
            bar.update(1)
            bar.set_postfix(loss=f"{event.data['train_loss']:.3f}", refresh=False)

    return on_event


METRIC_NAMES = {"acc": "accuracy", "bpc": "bits per character"}  # Metric.field → its name


def _describe(summary: dict, kind: DataKind, history: list[dict]) -> str:
    """A finished run in one line, its kind's headline metric before → after on the target and
    on the source task; a text run's final sample after it, as text."""
    metric = kind.metric
    line = (
        f"run {summary['run_id']} {summary['status']} after {summary['steps']} steps in "
        f"{summary['seconds']:.1f} s at lr {summary['lr']:g}: "
        f"test {_change(summary, 'test', metric)}"
    )
    if summary[f"source_{metric.field}_before"] is not None:
        line += f", source task {_change(summary, 'source', metric)}"
    line += f", {summary['trainable_params']:,} of {summary['total_params']:,} parameters trained"
    line += f" ({for_terminal(summary['reason'])})" if summary["reason"] else ""
    sample = last_sample(history)
    return line if sample is None else f"{line}\n{_sample_lines(sample)}"


def _change(summary: dict, split: str, metric: Metric) -> str:
    """ "accuracy 0.376 → 0.902", "bits per character 3.104 → 2.311 (lower is better)"."""
    before, after = (summary[f"{split}_{metric.field}_{when}"] for when in ("before", "after"))
    better = " (lower is better)" if metric.lower_is_better else ""
    return f"{METRIC_NAMES[metric.field]} {_number(before)} → {_number(after)}{better}"


def _number(value: float | None) -> str:
    return reports.MISSING if value is None else f"{value:.3f}"


def last_sample(history: list[dict]) -> dict | None:
    """The newest step of a run's history with a sample of its writing (a text run's), or
    None."""
    return next((step for step in reversed(history) if step.get("sample") is not None), None)


def _sample_lines(step: dict) -> str:
    """A sample as the terminal shows it: a heading, then the text, each of its lines indented
    and made safe (for_terminal) as any stored text is."""
    lines = [for_terminal(line) for line in step["sample"].split("\n")]
    return f"sample at step {step['step']}:\n" + "\n".join(f"  {line}" for line in lines)


# -- sweep ----------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    if args.workers != 0:  # (0: the default, executors.default_workers)
        executors.check_workers("--workers", args.workers)
    base = config_from(args)
    limits = check_limits(base)  # the sweep's runs differ from it in method and rank only
    configs = sweep_configs(base, _ranks(args.ranks), baselines=not args.no_baselines)
    model = zoo.load(base.model)
    for config in configs:
        train.check_config(config, model)
    workers = args.workers or None
    rows = []
    pool = Pool(workers, limits=limits, executor=default_executor())
    try:
        submitted = pool.submit_all(configs, OWNER)
        for job in tqdm(submitted, desc="sweep", unit="run", disable=None):
            job.wait()
            rows.append(_sweep_row(job))
    finally:
        pool.shutdown()
    if args.json:
        print(to_json(rows))
    else:
        print(_sweep_table(rows, kind_of(base.dataset)))
    return 0 if all(row["status"] != "failed" for row in rows) else 1


def _ranks(text: str) -> list[int]:
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--ranks must be whole numbers separated by commas (got {text!r})"
        ) from None
    if not ranks:
        raise ValueError("--ranks needs at least one rank")
    return ranks


def _sweep_row(job: Any) -> dict:
    result = job.result or {}
    return {
        "run_id": job.run_id,
        "method": job.config.method,
        "rank": job.config.rank if job.config.method == "lora" else None,
        "lr": job.config.learning_rate,
        "status": job.status,
        "reason": job.reason,
        **{k: result.get(k) for k in metric_fields(kind_of(job.config.dataset))},
        **{k: result.get(k) for k in ("seconds", "trainable_params", "total_params")},
    }


def metric_fields(kind: DataKind) -> list[str]:
    """The outcome fields of a kind's metrics, the headline first: test_acc_before,
    test_acc_after, source_acc_before, source_acc_after (text: test_bpc_before, …)."""
    return [
        f"{split}_{metric.field}_{when}"
        for metric in kind.metrics
        for split in ("test", "source")
        for when in ("before", "after")
    ]


SWEEP_FORMATS = {"lr": "g", "trainable": ",", "share": ".1%", "s": ".1f"}


def _sweep_table(rows: list[dict], kind: DataKind) -> str:
    """The sweep's rows (_sweep_row) as a text table: what a student compares, one run a line,
    judged by the kind's headline metric (accuracy; bits per character on text)."""
    field = kind.metric.field
    titles = {f"test_{field}_before": f"{field} before", f"test_{field}_after": f"{field} after"}
    titles[f"source_{field}_after"] = f"source {field}"
    lines = [
        {
            "method": row["method"],
            "rank": row["rank"],
            "lr": row["lr"],
            "trainable": row["trainable_params"],
            "share": _share(row["trainable_params"], row["total_params"]),
            **{title: row[name] for name, title in titles.items()},
            "s": row["seconds"],
            "status": f"{row['status']} {row['reason']}".strip(),
        }
        for row in rows
    ]
    return reports.format_table(lines, SWEEP_FORMATS | dict.fromkeys(titles.values(), ".3f"))


def _share(trainable: int | None, total: int | None) -> float | None:
    return trainable / total if trainable is not None and total else None


# -- runs -----------------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    with RunStore() as store:
        if args.action == "list":
            readable, unreadable = store.listing(owner=args.owner)
            records = [r.summary() for r in readable]
            print(to_json(records) if args.json else _runs_table(records))
            for message in unreadable.values():  # listed around, named, left as they are
                print(f"warning: {for_terminal(message)}", file=sys.stderr)
        elif args.action == "show":
            record = store.get(args.run_id)
            if args.json:
                full = {**record.summary(), "history": record.history}
                print(to_json({**full, "snapshots": record.snapshots}))
            else:
                print(_show(record))
        elif args.action == "export":
            print(_export(args, store))
        elif args.action == "import":
            print(_import(args, store))
        elif args.action == "rename":
            store.rename(args.run_id, args.name)
        elif args.action == "delete":
            store.delete(args.run_id)
    return 0


def _export(args: argparse.Namespace, store: RunStore) -> Path:
    """Export a run: its PEFT adapter zip, or with --tensorboard its TensorBoard events (any
    method: a run without adapter still has curves). Returns where it went."""
    if args.tensorboard is None:
        return export.export_peft(store, args.run_id, _zip_named(args.out), force=args.force)
    if args.force:
        raise ValueError(
            "--force replaces the zip of --out; a TensorBoard export never writes over anything "
            "(it makes a new folder DIR/run-ID)"
        )
    directory = _path_named("--tensorboard", args.tensorboard)
    record = store.get(args.run_id)
    store.check_export_target(run_folder(record, directory))
    return export_tensorboard(record, directory)


def _path_named(flag: str, text: str) -> Path:
    """The path a flag names, checked before the file system is asked about it: an empty one
    names nothing (it is not "here"), and a name too long is refused (PathError)."""
    if not text:
        raise ValueError(f"{flag} is empty: name a path (nothing was written)")
    return paths.check_names(text)


def _zip_named(text: str | None) -> Path | None:
    """--out: None when it is not given (a new file in the exports folder), else the file it
    names. A path ending in a slash names a folder, never a file of that name."""
    if text is None:
        return None
    if text.endswith(("/", os.sep)):
        raise ValueError(
            f"--out {text} names a folder: name the .zip file to write, such as "
            f"{text}adapter.zip (nothing was written)"
        )
    return _path_named("--out", text)


def _import(args: argparse.Namespace, store: RunStore) -> str:
    """Import a PEFT adapter zip as a run; what to print about it."""
    task = config_from(args)
    run_id = import_adapter(read_zip(args.file), task, store, OWNER, Path(args.file).name)
    summary = store.get_summary(run_id).summary()
    if args.json:
        return to_json(summary)
    measured = _change(summary, "test", kind_of(task.dataset).metric)
    return f"run {run_id} imported: test {measured} on {task.dataset}/{task.shift}"


def _runs_table(records: list[dict]) -> str:
    """Saved runs (RunRecord.summary()) as a text table: id, status, test accuracy (next
    characters on text), bits per character (text runs only), name."""
    lines = [
        {
            "id": r["run_id"],
            "status": r["status"],
            "after": r["test_acc_after"],
            "bpc after": r["test_bpc_after"],
            "name": r["name"],
        }
        for r in records
    ]
    return reports.format_table(lines, {"after": ".3f", "bpc after": ".3f"})


def _show(record: Any) -> str:
    summary = record.summary()
    summary["created"] = local_time(summary["created"])
    lines = [
        f"{key}: {for_terminal(str(value))}" for key, value in summary.items() if key != "config"
    ]
    lines += [f"config.{key}: {json.dumps(value)}" for key, value in summary["config"].items()]
    evals = [h for h in record.history if h["val_acc"] is not None]
    if evals:
        last = evals[-1]
        line = f"last eval: step {last['step']}, val acc {last['val_acc']:.3f}"
        bpc = last.get("val_bpc")
        lines.append(line if bpc is None else f"{line}, val bits per character {bpc:.3f}")
    sample = last_sample(record.history)
    if sample is not None:
        lines.append(_sample_lines(sample))
    return "\n".join(lines)


def local_time(seconds: float) -> str:
    """Seconds since the epoch as a local date and time, e.g. 2026-11-28 23:19:10+01:00."""
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.isoformat(sep=" ", timespec="seconds")


# -- the zoo and the analyses ---------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    print(to_json(zoo.pretrain(args.name)))
    return 0


def cmd_spectra(args: argparse.Namespace) -> int:
    use_job_threads()
    if args.truncate:
        curve = truncation(args.run_id)
        print(to_json(curve.to_dict()) if args.json else _truncation_table(curve))
        return 0
    report = reports.analyse_run(args.run_id)
    if args.json:
        print(to_json({layer: numbers.to_dict() for layer, numbers in report.items()}))
    else:
        print(reports.report_table(report))
    return 0


def truncation(run_id: int) -> whatif.TruncationCurve:
    """whatif.truncation_curve of a saved run."""
    with RunStore() as store:
        run = open_run(run_id, store)
    return whatif.truncation_curve(run)


def _truncation_table(curve: whatif.TruncationCurve) -> str:
    """The truncation curve as a table (k, the run's metric: accuracy, or bits per character),
    then the run, the base model, and how many directions the update used."""
    metric = curve.metric
    name = METRIC_NAMES[metric.field]
    rows = [{"k": p.k, name: p.score} for p in curve.truncation]
    lines = [
        reports.format_table(rows, {name: ".3f"}),
        f"untouched run: {curve.run_score:.3f}, base model: {curve.base_score:.3f}",
    ]
    if metric.lower_is_better:
        lines.append(f"{name}: lower is better")
    if curve.kept:
        lines.append(f"k = 0 keeps these trained layers uncut: {', '.join(curve.kept)}")
    unit = "point" if metric.percent else "bits"
    within = f"{metric.difference(metric.tolerance)} {unit}"
    chance = "always answering the commonest class" if metric.percent else "a uniform guess"
    used, rank = curve.rank_used, curve.max_rank
    lines.append(
        {
            "some": f"this update used about {used} of its {rank} directions: "
            f"from k = {used} on, the {name} stays within {within} of the run's",
            "all": f"this update needed all {rank} of its directions: "
            f"every cut below that is more than {within} worse than the run",
            "none": f"with every update removed (k = 0) the {name} stays within "
            f"{within} of the run's: this update barely mattered",
            "short": f"no cut kept the run's {name} to within {within}",
            "chance": f"the run itself is within {within} of {chance} "
            f"({curve.chance:.3f}): it learned nothing, no cut can say what it used",
            "worse": f"the cut to k = 0 scores more than {within} better than the run: "
            "its update made it worse",
        }[whatif.reading(curve)]
    )
    if curve.dora:
        lines.append("DoRA: the cut keeps the learned magnitudes (k = 0 is magnitudes only)")
    return "\n".join(lines)


def cmd_experiment(args: argparse.Namespace) -> int:
    use_job_threads()
    finding = experiments.run(args.name)
    print(to_json(finding.to_dict()) if args.json else finding.report())
    return 0


# -- inspect --------------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    """Report an adapter file's layers; with --resize, write the cut adapter to --out. Every
    check (the criterion, --out, each layer's tensors) is done before anything is written."""
    if (args.resize is None) != (args.out is None):
        raise ValueError("--resize and --out go together: a resize writes the folder --out names")
    criterion = None if args.resize is None else inspection.Criterion.parse(args.resize)
    out = None if args.out is None else _path_named("--out", args.out)
    if out is not None:
        inspection.check_new_folder(out)
    top_k = inspection.TOP_K if args.top is None else args.top
    limits = Limits.from_env(COMMAND_LINE, known_models=zoo.names())
    with opened_adapter(_path_named("PATH", args.path), limits.max_upload_mb * 2**20) as adapter:
        report = inspection.inspect_adapter(adapter, args.path, top_k, criterion)
        resized = None if criterion is None else inspection.resize_adapter(adapter, criterion, out)
    if args.json:
        resize = None if resized is None else resized.to_dict()
        print(to_json({**report.to_dict(), "resize": resize}))
        return 0
    print(_inspection_text(report))
    if resized is not None:
        print(_resize_text(resized))
    return 0


def _inspection_text(report: inspection.AdapterInspection) -> str:
    """The report: what the file is, a table of layers, then each layer's σ."""
    extras = [("rsLoRA", report.rslora), ("DoRA (magnitudes not in ΔW's σ)", report.dora)]
    head = f"{report.format} adapter, {len(report.layers)} layers, {_bytes(report.bytes)}"
    head += "".join(f", {name}" for name, on in extras if on)
    if report.saved:
        head += f"; saved in full: {', '.join(report.saved)}"
    energy = f"top-{report.top_k} energy"
    rows = [
        {
            "layer": layer.name,
            "shape": "×".join(map(str, layer.shape)),
            "dtype": layer.dtype,
            "r": layer.rank,
            "scaling": layer.scaling,
            "‖ΔW‖_F": layer.frobenius,
            "σ1": layer.sigma[0],
            "σ1/σ2": layer.spike,
            "eff. rank": layer.effective_rank,
            "stable rank": layer.stable_rank,
            energy: layer.energy_top_k,
            **layer.kept,
        }
        for layer in report.layers
    ]
    table = reports.format_table(rows, {energy: ".1%"})
    sigma = "\n".join(
        f"{for_terminal(layer.name)}: " + " ".join(f"{s:.4g}" for s in layer.sigma)
        for layer in report.layers
    )
    return f"{for_terminal(head)}\n{table}\n\nσ of each ΔW (exact, from its factors):\n{sigma}"


def _resize_text(resized: inspection.ResizeResult) -> str:
    rows = [
        {"layer": x.name, "rank": x.rank_before, "kept": x.rank_after, "energy kept": x.energy}
        for x in resized.layers
    ]
    before = sum(x.rank_before for x in resized.layers)
    after = sum(x.rank_after for x in resized.layers)
    return (
        f"\nresized by {resized.criterion}:\n"
        + reports.format_table(rows, {"energy kept": ".1%"})
        + f"\nwrote {for_terminal(str(resized.out))}: ranks {before} → {after} in all, "
        f"{_bytes(resized.bytes_before)} → {_bytes(resized.bytes_after)}"
    )


def _bytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "sweep": cmd_sweep,
    "runs": cmd_runs,
    "pretrain": cmd_pretrain,
    "spectra": cmd_spectra,
    "experiment": cmd_experiment,
    "inspect": cmd_inspect,
}
