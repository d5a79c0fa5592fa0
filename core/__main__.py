"""LoRA Lab without the browser: `python -m core --help`.

    python -m core train --rank 8 --shift rotate --json     one run, saved like the app's
    python -m core sweep --ranks 1,2,4,8,16,32              ranks side by side, + head and full
    python -m core runs list | show ID | export ID | rename ID NAME | delete ID
    python -m core runs import adapter.zip --model mlp      a PEFT adapter, saved as a run
    python -m core pretrain mlp                             rebuild a zoo model's weights
    python -m core spectra ID                               what a saved run's ΔW looks like
    python -m core experiment amplification                 re-measure a LoRA paper finding

Every `train` flag is a RunConfig field, with the app's defaults. Runs are saved in the same
store as the app's ($LORA_LAB_HOME/runs.db), owned by "cli". Bad input gives a one-line
message and exit status 2; a run that fails (a diverging loss) exits with status 1. Runs are
bounded by core.limits.COMMAND_LINE, wider bounds than a classroom server's but never none
(LORA_LAB_MAX_STEPS and the other variables listed there change them).

Times: `runs show` prints when a run was created as a local date and time (ISO 8601, to the
second, with the UTC offset); with --json, "created" stays a number, seconds since the Unix
epoch (UTC), as the store keeps it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

OWNER = "cli"
TASK_FIELDS = ("dataset", "shift", "shift_params", "seed")  # what an imported adapter is tested on


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
def add_config_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] = ()) -> None:
    """A flag per RunConfig field (or per field in `names`): --rank, --dora/--no-dora, …

    Values stay strings here and go through RunConfig.from_dict, the same conversion a URL's
    query gets; unset flags are left out, so RunConfig's defaults apply. A field with a fixed
    set of values shows them as the flag's metavar, {a,b,c}, as argparse's choices would.
    """
    from core.train import RunConfig, config_choices

    choices = config_choices()
    for f in dataclasses.fields(RunConfig):
        if names and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f"{f.metadata.get('help', '')} (default: {json.dumps(default)})"
        if f.type in ("bool", bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(
                flag, dest=f.name, action=action, default=argparse.SUPPRESS, help=text
            )
        else:
            metavar = "{" + ",".join(choices[f.name]) + "}" if f.name in choices else None
            parser.add_argument(
                flag, dest=f.name, default=argparse.SUPPRESS, metavar=metavar, help=text
            )


def config_from(args: argparse.Namespace) -> Any:
    """The RunConfig the flags describe, checked against its base model (ValueError if bad)."""
    from core import zoo
    from core.train import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig.from_dict({k: v for k, v in vars(args).items() if k in names})
    config.validate()
    config.validate(zoo.load(config.model))
    return config


def check_limits(config: Any) -> Any:
    """The command line's limits (core.limits.COMMAND_LINE, changed by the environment): wider
    than a server's, never none. ValueError naming the limit; returns the limits."""
    from core import zoo
    from core.jobs import check_planned
    from core.limits import COMMAND_LINE, Limits

    limits = Limits.from_env(COMMAND_LINE, known_models=zoo.names())
    limits.check(config)
    check_planned(config, limits)
    return limits


def use_job_threads() -> None:
    """Use the thread count of a pool worker, so the command line computes the same numbers,
    bit for bit, as the app does for the same config."""
    import torch

    from core.jobs import default_workers, threads_per_job

    torch.set_num_threads(threads_per_job(default_workers()))


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.runs import RunStore, train_and_save

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
        print(_describe(summary))
    return 0 if result.status != "failed" else 1


def _progress(bar: Any) -> Callable:
    def on_event(event: Any) -> None:
        if event.kind == "start":
            bar.reset(total=event.data["steps"])
        elif event.kind == "step" and event.step > 0:
            bar.update(1)
            bar.set_postfix(loss=f"{event.data['train_loss']:.3f}", refresh=False)

    return on_event


def _describe(summary: dict) -> str:
    after = summary["test_acc_after"]
    after_text = "—" if after is None else f"{after:.3f}"
    line = (
        f"run {summary['run_id']} {summary['status']} after {summary['steps']} steps in "
        f"{summary['seconds']:.1f} s: test accuracy {summary['test_acc_before']:.3f} → "
        f"{after_text}, {summary['trainable_params']:,} of {summary['total_params']:,} "
        "parameters trained"
    )
    return line + (f" ({summary['reason']})" if summary["reason"] else "")


# -- sweep ----------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core import zoo
    from core.jobs import Pool
    from core.train import sweep_configs

    base = config_from(args)
    limits = check_limits(base)  # the sweep's runs differ from it in method and rank only
    configs = sweep_configs(base, _ranks(args.ranks), baselines=not args.no_baselines)
    model = zoo.load(base.model)
    for config in configs:
        config.validate(model)
    workers = args.workers or None
    rows = []
    pool = Pool(workers, limits=limits)
    try:
        jobs = pool.submit_all(configs, OWNER)
        for job in tqdm(jobs, desc="sweep", unit="run", disable=None):
            job.wait()
            rows.append(_sweep_row(job))
    finally:
        pool.shutdown()
    if args.json:
        print(to_json(rows))
    else:
        print(_sweep_table(rows))
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
        "status": job.status,
        "reason": job.reason,
        **{k: result.get(k) for k in ("test_acc_before", "test_acc_after", "seconds")},
        **{k: result.get(k) for k in ("trainable_params", "total_params")},
    }


SWEEP_FORMATS = {"trainable": ",", "share": ".1%", "before": ".3f", "after": ".3f", "s": ".1f"}


def _sweep_table(rows: list[dict]) -> str:
    """The sweep's rows (_sweep_row) as a text table: what a student compares, one run a line."""
    from core.reports import format_table

    shown = [
        {
            "method": row["method"],
            "rank": row["rank"],
            "trainable": row["trainable_params"],
            "share": _share(row["trainable_params"], row["total_params"]),
            "before": row["test_acc_before"],
            "after": row["test_acc_after"],
            "s": row["seconds"],
            "status": f"{row['status']} {row['reason']}".strip(),
        }
        for row in rows
    ]
    return format_table(shown, SWEEP_FORMATS)


def _share(trainable: int | None, total: int | None) -> float | None:
    return trainable / total if trainable is not None and total else None


# -- runs -----------------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    from core.runs import RunStore

    with RunStore() as store:
        if args.action == "list":
            records = [r.summary() for r in store.list(owner=args.owner)]
            print(to_json(records) if args.json else _runs_table(records))
        elif args.action == "show":
            record = store.get(args.run_id)
            if args.json:
                full = {**record.summary(), "history": record.history}
                print(to_json({**full, "snapshots": record.snapshots}))
            else:
                print(_show(record))
        elif args.action == "export":
            print(store.export_peft(args.run_id, args.out))
        elif args.action == "import":
            print(_import(args, store))
        elif args.action == "rename":
            store.rename(args.run_id, args.name)
        elif args.action == "delete":
            store.delete(args.run_id)
    return 0


def _import(args: argparse.Namespace, store: Any) -> str:
    """Import a PEFT adapter zip as a run; what to print about it."""
    from core.adapters import import_adapter, read_zip

    task = config_from(args)
    run_id = import_adapter(read_zip(args.file), task, store, OWNER, Path(args.file).name)
    summary = store.get_summary(run_id).summary()
    if args.json:
        return to_json(summary)
    return (
        f"run {run_id} imported: test accuracy {summary['test_acc_before']:.3f} → "
        f"{summary['test_acc_after']:.3f} on {task.dataset}/{task.shift}"
    )


def _runs_table(records: list[dict]) -> str:
    """Saved runs (RunRecord.summary()) as a text table: id, status, test accuracy, name."""
    from core.reports import format_table

    shown = [
        {"id": r["run_id"], "status": r["status"], "after": r["test_acc_after"], "name": r["name"]}
        for r in records
    ]
    return format_table(shown, {"after": ".3f"})


def _show(record: Any) -> str:
    summary = record.summary()
    summary["created"] = local_time(summary["created"])
    lines = [f"{key}: {value}" for key, value in summary.items() if key != "config"]
    lines += [f"config.{key}: {json.dumps(value)}" for key, value in summary["config"].items()]
    evals = [h for h in record.history if h["val_acc"] is not None]
    if evals:
        last = evals[-1]
        lines.append(f"last eval: step {last['step']}, val acc {last['val_acc']:.3f}")
    return "\n".join(lines)


def local_time(seconds: float) -> str:
    """Seconds since the epoch as a local date and time, e.g. 2026-11-28 23:19:10+01:00."""
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.isoformat(sep=" ", timespec="seconds")


# -- the zoo and the analyses ---------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    from core import zoo

    print(to_json(zoo.pretrain(args.name)))
    return 0


def cmd_spectra(args: argparse.Namespace) -> int:
    from core import reports

    use_job_threads()
    report = reports.analyse_run(args.run_id)
    print(to_json(report) if args.json else reports.report_table(report))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from core import experiments

    use_job_threads()
    finding = experiments.run(args.name)
    print(to_json(finding.to_dict()) if args.json else finding.report())
    return 0


# -- the parser -----------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    from core import experiments, zoo

    main = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n")[0])
    commands = main.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run and save it")
    add_config_flags(train)
    train.add_argument("--json", action="store_true", help="print the result as one JSON line")
    train.set_defaults(handler=cmd_train)

    sweep = commands.add_parser("sweep", help="LoRA at several ranks, plus head and full")
    add_config_flags(sweep)
    sweep.add_argument("--ranks", default="1,2,4,8,16,32", help="comma-separated ranks")
    sweep.add_argument("--no-baselines", action="store_true", help="skip head and full")
    sweep.add_argument("--workers", type=int, default=0, help="parallel runs (default: cores)")
    sweep.add_argument("--json", action="store_true", help="print the table as JSON")
    sweep.set_defaults(handler=cmd_sweep)

    runs = commands.add_parser("runs", help="list, show, export, rename or delete saved runs")
    actions = runs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="saved runs, newest first")
    listing.add_argument("--owner", help="only this owner's runs (the CLI's are 'cli')")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one run's settings and results")
    show.add_argument("run_id", type=int)
    show.add_argument(
        "--json",
        action="store_true",
        help="everything, history included; created is seconds since the Unix epoch",
    )
    export = actions.add_parser("export", help="a LoRA run's adapter as a PEFT zip")
    export.add_argument("run_id", type=int)
    export.add_argument("--out", help="zip file to write (default: $LORA_LAB_HOME/exports/)")
    imports = actions.add_parser("import", help="a PEFT adapter zip as a new run")
    imports.add_argument("file", help="the zip: from `runs export`, or a PEFT folder zipped")
    imports.add_argument(
        "--model",
        required=True,
        metavar="{" + ",".join(zoo.names()) + "}",
        help="the zoo model it was trained on",
    )
    add_config_flags(imports, TASK_FIELDS)
    imports.add_argument("--json", action="store_true", help="print the run as one JSON line")
    rename = actions.add_parser("rename", help="give a run a new name")
    rename.add_argument("run_id", type=int)
    rename.add_argument("name")
    delete = actions.add_parser("delete", help="delete a run and its weights")
    delete.add_argument("run_id", type=int)
    runs.set_defaults(handler=cmd_runs)

    pretrain = commands.add_parser("pretrain", help="pretrain a zoo model on the source task")
    pretrain.add_argument("name")
    pretrain.set_defaults(handler=cmd_pretrain)

    spectra = commands.add_parser("spectra", help="what a saved run learned, layer by layer")
    spectra.add_argument("run_id", type=int)
    spectra.add_argument("--json", action="store_true", help="the full report as JSON")
    spectra.set_defaults(handler=cmd_spectra)

    experiment = commands.add_parser("experiment", help="re-measure a published LoRA finding")
    experiment.add_argument("name", help=", ".join(experiments.EXPERIMENTS))
    experiment.add_argument("--json", action="store_true", help="the finding as JSON")
    experiment.set_defaults(handler=cmd_experiment)
    return main


def main(argv: list[str] | None = None) -> int:
    """Run a command; expected errors become one line on stderr, never a traceback."""
    from core.paths import OfflineError
    from core.runs import StoreError

    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, StoreError, OfflineError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
