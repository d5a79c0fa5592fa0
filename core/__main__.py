"""LoRA Lab without the browser: `python -m core --help`.

    python -m core train --rank 8 --shift rotate --json     one run, saved like the app's
    python -m core train --model gpt --shift substitute     a language model on text
    python -m core sweep --ranks 1,2,4,8,16,32              ranks side by side, + head and full
    python -m core runs list | show ID | export ID | rename ID NAME | delete ID
    python -m core runs import adapter.zip --model mlp      a PEFT adapter, saved as a run
    python -m core pretrain mlp                             rebuild a zoo model's weights
    python -m core pretrain gpt                             … the GPT's, on prose (~20 min)
    python -m core spectra ID                               what a saved run's ΔW looks like
    python -m core spectra ID --truncate                    accuracy with ΔW cut to rank k
    python -m core runs export ID --tensorboard DIR         curves and σ for TensorBoard
    python -m core experiment amplification                 re-measure a LoRA paper finding
    python -m core inspect adapter/ --resize energy=0.9 --out small/   any model's adapter file

Every `train` flag is a RunConfig field, with the app's defaults; a model may have its own
(core.common.config.MODEL_DEFAULTS: `--model gpt` reads prose, learns the shift code, adapts
q and v, 100 steps), and a flag given replaces only its own setting. A text run reports bits
per character (lower is better) and prints what the model writes after training. Runs are
saved in the same store as the app's ($LORA_LAB_HOME/runs.db, or the PostgreSQL database
$LORA_LAB_DB names), owned by "cli". Bad input gives a one-line message and exit status 2; a
run that fails (a diverging loss) exits with status 1. Runs are bounded by
core.common.limits.COMMAND_LINE, wider bounds than a classroom server's but never none
(LORA_LAB_MAX_STEPS and the other variables listed there change them).

Times: `runs show` prints when a run was created as a local date and time (ISO 8601, to the
second, with the UTC offset); with --json, "created" stays a number, seconds since the Unix
epoch (UTC), as the store keeps it.

The parser is here and the commands are in core/cli/commands.py, which main() imports only once the
arguments are parsed: the commands need torch, about a second to import, and --help or a
mistyped flag should answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys

from core.common.config import MODEL_DEFAULTS, MODELS, RunConfig, config_choices

TASK_FIELDS = ("dataset", "shift", "shift_params", "seed")  # what an imported adapter is tested on
# The names of core.analyses.experiments.EXPERIMENTS (tests/cli/test_cli.py checks they agree):
# listed here, because that module needs torch.
EXPERIMENTS = (
    "rank-effect",
    "subspace-similarity",
    "amplification",
    "intruders",
    "forgetting",
    "gpt-weight-types",
    "gpt-rank",
    "gpt-subspace-similarity",
    "gpt-amplification",
)


def add_config_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] = ()) -> None:
    """A flag per RunConfig field (or per field in `names`): --rank, --dora/--no-dora, …

    Values stay strings here and go through RunConfig.from_dict, the same conversion a URL's
    query gets; unset flags are left out, so RunConfig's defaults apply. A field with a fixed
    set of values shows them as the flag's metavar, {a,b,c}, as argparse's choices would.
    """
    choices = config_choices()
    for f in dataclasses.fields(RunConfig):
        if names and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f.metadata.get("help", "")
        if default is not None:  # None: the help says what an unset setting means
            text += f" (default: {json.dumps(default)})"
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


def model_defaults() -> str:
    """What --help says of the models whose run starts from settings of their own."""
    return "\n".join(
        f"--model {model} starts from: "
        + ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in settings.items())
        + "; a flag given replaces its setting."
        for model, settings in MODEL_DEFAULTS.items()
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n")[0])
    commands = main.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run and save it", epilog=model_defaults())
    add_config_flags(train)
    train.add_argument("--json", action="store_true", help="print the result as one JSON line")

    sweep = commands.add_parser(
        "sweep", help="LoRA at several ranks, plus head and full", epilog=model_defaults()
    )
    add_config_flags(sweep)
    sweep.add_argument("--ranks", default="1,2,4,8,16,32", help="comma-separated ranks")
    sweep.add_argument("--no-baselines", action="store_true", help="skip head and full")
    sweep.add_argument(
        "--workers",
        type=int,
        default=0,
        help="parallel runs, at most one per core (default 0: $LORA_LAB_WORKERS, or one per core)",
    )
    sweep.add_argument("--json", action="store_true", help="print the table as JSON")

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
    export = actions.add_parser(
        "export", help="a LoRA run's adapter as a PEFT zip, or any run as TensorBoard events"
    )
    export.add_argument("run_id", type=int)
    where = export.add_mutually_exclusive_group()
    where.add_argument("--out", help="zip file to write (default: $LORA_LAB_HOME/exports/)")
    where.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="instead of the adapter: the run's curves and per-layer σ as TensorBoard event "
        "files, in a new folder DIR/run-ID (any method; `tensorboard --logdir DIR`)",
    )
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    imports = actions.add_parser("import", help="a PEFT adapter zip as a new run")
    imports.add_argument("file", help="the zip: from `runs export`, or a PEFT folder zipped")
    imports.add_argument(
        "--model",
        required=True,
        metavar="{" + ",".join(MODELS) + "}",
        help="the zoo model it was trained on",
    )
    add_config_flags(imports, TASK_FIELDS)
    imports.add_argument("--json", action="store_true", help="print the run as one JSON line")
    rename = actions.add_parser("rename", help="give a run a new name")
    rename.add_argument("run_id", type=int)
    rename.add_argument("name")
    delete = actions.add_parser("delete", help="delete a run and its weights")
    delete.add_argument("run_id", type=int)

    pretrain = commands.add_parser(
        "pretrain",
        help="pretrain a zoo model on its source and write its weights and model card",
    )
    pretrain.add_argument(
        "name",
        help="mlp, cnn or vit (on the digits) or gpt (on English prose, about 20 "
        "minutes on 2 cores); the same name gives the same weights, bit for bit",
    )

    spectra = commands.add_parser("spectra", help="what a saved run learned, layer by layer")
    spectra.add_argument("run_id", type=int)
    spectra.add_argument(
        "--truncate",
        action="store_true",
        help="instead of the report: cut every layer's ΔW to its top k singular directions "
        "(k = 0, 1, 2, 4, … up to the update's rank) and measure the test score (accuracy, or "
        "bits per character on text); with "
        '--json, {"metric", "truncation": [{"k", "score"}], "run_score", "base_score", '
        '"rank_used", "max_rank", "layers", "dora"}',
    )
    spectra.add_argument("--json", action="store_true", help="the full report as JSON")

    inspect = commands.add_parser(
        "inspect",
        help="any LoRA adapter file, without its model: each layer's ΔW spectrum; a resize",
        description="Read an adapter one layer at a time and print, per layer, ΔW's shape, "
        "rank, scaling, Frobenius norm, singular values (exact, from the factors), effective and "
        "stable rank, the energy of the top k, σ1/σ2, and the rank each resize criterion keeps.",
    )
    inspect.add_argument(
        "path",
        help="a PEFT adapter folder or zip (adapter_config.json + adapter_model.safetensors), "
        "or a kohya / diffusers LoRA .safetensors file",
    )
    inspect.add_argument(
        "--top", type=int, metavar="K", help="energy in the top K directions (default: 4)"
    )
    inspect.add_argument(
        "--resize",
        metavar="CRITERION",
        help="rank=K (the top K), energy=F (the fewest holding the share F of Σσ²), ratio=R "
        "(σ ≥ σ1/R), fro=F (the fewest keeping the share F of ‖ΔW‖_F); needs --out",
    )
    inspect.add_argument("--out", metavar="DIR", help="the new PEFT adapter folder a resize writes")
    inspect.add_argument("--json", action="store_true", help="the report (and resize) as JSON")

    experiment = commands.add_parser("experiment", help="re-measure a published LoRA finding")
    experiment.add_argument("name", help=", ".join(EXPERIMENTS))
    experiment.add_argument("--json", action="store_true", help="the finding as JSON")
    return main


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, then run the command (core.cli.commands: exit status 2 and one line for
    an expected error, never a traceback)."""
    args = parser().parse_args(argv)
    return importlib.import_module("core.cli.commands").run(args)


if __name__ == "__main__":
    sys.exit(main())
