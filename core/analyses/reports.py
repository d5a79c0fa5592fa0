"""A saved run through core.analyses.layer_reports, and the plain-text tables of the command
line.

The low-rank math (core.lowrank) and the layer reports made of it know nothing of runs: they take
models and tensors. This module sits above them and above the run store: it rebuilds a run's
models from the store, rebuilds a planted-rank task from the run's config (as training built
it), and hands both to layer_reports. Keeping runs out of the math is what lets the training
loop record its snapshots with core.lowrank while the analyses read runs back from the store.

    report = analyse_run(run_id)      # {layer: layer_reports.LayerReport}, with .planted if any
    moment(history, snapshots, step)  # Moment: the snapshot nearest a step picked on the curves
    print(report_table(report))       # one line per layer
    print(format_table(rows))         # any list of dicts: the one text-table formatter
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from torch import nn

from core.analyses import layer_reports
from core.common import text
from core.common.config import RunConfig
from core.lowrank import against_w0, spectrum, updates
from core.store.runs import RunStore
from core.training.data import Planted
from core.training.rebuild import rebuild
from core.training.train import load_task


# -- a stored run ---------------------------------------------------------------------------------
def analyse_run(
    run_id: int,
    store: RunStore | None = None,
    k: int = spectrum.DEFAULT_TOP_K,
    eps: float = against_w0.DEFAULT_EPSILON,
) -> dict[str, layer_reports.LayerReport]:
    """analyse_models of a saved run, rebuilt from the run store: {layer: report}.

    Without a store, the default one is opened and closed again.
    """
    if store is None:
        with RunStore() as own_store:
            return analyse_run(run_id, own_store, k, eps)
    saved = store.read_weights(run_id)
    base_model, model = rebuild(saved)
    planted = planted_of(saved.record.config)
    return analyse_models(base_model, model, planted, k, eps)


def analyse_models(
    base_model: nn.Module,
    model: nn.Module,
    planted: Planted | None,
    k: int = spectrum.DEFAULT_TOP_K,
    eps: float = against_w0.DEFAULT_EPSILON,
) -> dict[str, layer_reports.LayerReport]:
    """layer_reports.model_report of a run's models: {layer: report}. For a planted-rank run
    (`planted` = planted_of its config), the planted layer's report also holds `planted`
    (planted_report)."""
    report = layer_reports.model_report(base_model, model, k, eps)
    if planted is not None and planted.layer in report:
        comparison = planted_report(base_model, model, planted)
        report[planted.layer] = replace(report[planted.layer], planted=comparison)
    return report


def planted_of(config: RunConfig) -> Planted | None:
    """The planted update of a planted-rank run (None for any other shift, whose task is not
    built): the task is rebuilt exactly as train() built it, so the same seed gives the same
    secret delta_W*."""
    return load_task(config).planted if config.shift == "planted-rank" else None


def planted_report(
    base_model: nn.Module, model: nn.Module, planted: Planted
) -> layer_reports.PlantedComparison:
    """layer_reports.planted_comparison for the layer that holds the planted update."""
    changed = updates.layer_updates(base_model, model)
    if planted.layer not in changed:
        raise ValueError(
            f"the planted update sits in layer {planted.layer!r}, which this run did not train "
            f"(it trained: {', '.join(changed) or 'no layer'}); adapt that layer to compare."
        )
    return layer_reports.planted_comparison(
        changed[planted.layer].delta_W, planted.delta_W, planted.rank
    )


@dataclass(frozen=True)
class Moment:
    """A run at one of its snapshots, as a student picked it on its curves.

    step, index           the snapshot's step and its position in the run's snapshots
    train_loss            the training loss logged at that step (None at step 0)
    eval_step, val_loss   the last evaluation at or before it (None if none yet)
    validation            what that evaluation measured, by history key: {"val_acc": 0.91}, on
                          text {"val_bpc": 2.31, "val_acc": 0.52} (empty if none yet)
    """

    step: int
    index: int
    train_loss: float | None
    eval_step: int | None
    val_loss: float | None
    validation: dict[str, float]


def moment(history: list[dict], snapshots: list[dict], step: float) -> Moment:
    """The Moment a student picked at `step` on a run's curves (RunStore.get's history and
    snapshots): the snapshot nearest to it, which holds the spectrum of that moment, and the
    metrics the run had logged by then.

    A curve has a point at every step, a snapshot comes every few steps, so a click between
    two snapshots opens the nearer one (the earlier on a tie). ValueError if the run recorded
    no snapshot.
    """
    if not snapshots:
        raise ValueError("this run recorded no snapshot: there is no moment to open")
    steps = [snapshot["step"] for snapshot in snapshots]
    index = min(range(len(steps)), key=lambda i: (abs(steps[i] - step), steps[i]))
    at = steps[index]
    logged = {row["step"]: row for row in history}
    evals = [row for row in history if row["step"] <= at and row.get("val_loss") is not None]
    last_eval = evals[-1] if evals else {}
    measured = {
        name: value
        for name, value in last_eval.items()
        if name.startswith("val_") and name != "val_loss" and value is not None
    }
    return Moment(
        step=at,
        index=index,
        train_loss=logged.get(at, {}).get("train_loss"),
        eval_step=last_eval.get("step"),
        val_loss=last_eval.get("val_loss"),
        validation=measured,
    )


# -- text tables ----------------------------------------------------------------------------------
REPORT_COLUMNS = {  # LayerReport field → column title, for the command line's table
    "effective_rank": "erank",
    "stable_rank": "stable",
    "energy_top_k": "energy@k",
    "numerical_rank": "rank",
    "amplification": "amplif.",
    "amplification_w0": "amp. W0",
    "amplification_random": "amp. rnd",
    "intruders": "intruders",
}
MISSING = "—"  # a cell with no value (None): a run that failed has no accuracy


def report_table(report: dict[str, layer_reports.LayerReport]) -> str:
    """A model report ({layer: layer_reports.LayerReport}) as a text table, one line per layer."""
    rows = [
        {
            "layer": name,
            "d×k": "×".join(map(str, layer.shape)),
            **{title: getattr(layer, field) for field, title in REPORT_COLUMNS.items()},
        }
        for name, layer in report.items()
    ]
    return format_table(rows)


def format_table(rows: list[dict], formats: Mapping[str, str] | None = None) -> str:
    """Rows with the same keys as aligned text columns, titled by the keys.

    Every table the command line prints goes through here, so they all read alike: numbers to
    the right (their digits line up), everything else to the left, two spaces between columns,
    None as "—". `formats` gives a column's numbers a format spec (",", ".3f", ".1%"); floats
    without one get 3 significant digits (".3g"), other values str() as one line
    (core.common.text.for_terminal: a stored name moves no cursor, and no line break forges a row).
    """
    if not rows:
        return "(nothing to show)"
    formats = formats or {}
    columns = list(rows[0])
    cells = [[_cell(row[column], formats.get(column)) for column in columns] for row in rows]
    numeric = [any(_is_number(row[column]) for row in rows) for column in columns]
    widths = [max(len(line[i]) for line in [columns, *cells]) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        ).rstrip()
        for line in [columns, *cells]
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object, spec: str | None) -> str:
    if value is None:
        return MISSING
    if _is_number(value) and spec is not None:
        return format(value, spec)
    return format(value, ".3g") if isinstance(value, float) else text.for_terminal(str(value))
