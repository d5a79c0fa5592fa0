"""Published findings and remarks about LoRA, measured again on the shipped `mlp` (784-256-256-10)
and, where the LoRA paper made them, on the attention of the shipped language model `gpt`.

Each experiment trains short runs over three seeds, on one CPU thread, in one Setting: on `mlp`
(MLP) 200 steps, batch 64, AdamW, alpha 8, LoRA on fc1 and fc2 with the head trained in full,
each method at its own default learning rate (core.common.config.DEFAULT_LR); on `gpt` (GPT) the
model's own first run (core.common.config.for_model: 100 steps of 8 windows, LoRA on every
block's W_q and W_v) on reversed words, its lm_head frozen so that only the adapters train, as in
the paper. The runs are measured with core.analyses.layer_reports. The outcome is computed from
the numbers against the thresholds written next to each experiment, never typed in, and says so
plainly when a finding does not show here.

    rank-effect          (LoRA paper, arXiv 2106.09685, §7.2: a remark, not a measurement)
                         How much rank a task needs depends on how far it is from pretraining.
    subspace-similarity  (LoRA paper §7.2, Fig. 3) The top direction learned at r = 8 and at
                         r = 64 is shared; the subspaces overlap far more than random ones.
    amplification        (LoRA paper §7.3, Table 7) delta_W amplifies directions that W0 does
                         not emphasise, and more so at a small rank.
    intruders            (arXiv 2410.21228) LoRA at low rank creates new top singular
                         directions ("intruder dimensions"); full fine-tuning few or none.
    forgetting           (Biderman et al. 2024, "LoRA Learns Less and Forgets Less") At the
                         same target accuracy LoRA keeps more of the source task.
    gpt-weight-types     (LoRA paper §7.1, Table 5) At one budget of trainable parameters,
                         W_q and W_v at rank 4 (or all four at rank 2) beat W_q alone at rank 8.
    gpt-rank             (LoRA paper §7.2, Table 6) On W_q and W_v, rank 1 comes close to 64.
    gpt-subspace-similarity, gpt-amplification   the two above, on gpt's W_q and W_v (Fig. 3)
                         and on its W_q (Table 7).

A published finding's outcome is "reproduced", "partly reproduced", "not reproduced" (or "not
measured" when the runs cannot answer the question); a remark's is "holds here", "partly holds"
or "does not hold here".

For the command line (core/__main__.py):

    python -m core experiment NAME [--json]
        finding = experiments.run(NAME)      # Finding; ValueError for an unknown NAME
        print(finding.report())              # claim, table, verdict, CPU seconds
        json.dumps(finding.to_dict())        # name, claim, rows, verdict, outcome, ...
        experiments.EXPERIMENTS              # {NAME: Experiment(title, claim, measure)}
    python -m core spectra RUN_ID [--json]
        report = reports.analyse_run(RUN_ID)  # {layer: layer_reports.LayerReport}
        print(reports.report_table(report))   # one line per layer

`trainer` (every measure function takes one, default core.training.train.train) is what turns a
config into a run: the claim tests pass one that remembers runs, so experiments that need the same
run train it once. Every measure function is measure(setting, steps, trainer).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from core.analyses import layer_reports, reports
from core.common.config import DEFAULT_LR, RunConfig, for_model
from core.lowrank import similarity
from core.lowrank.lora import adapted_layers
from core.training.train import (
    RunResult,
    parameter_count,
    source_accuracy,
    source_split,
    train,
    with_base_head,
)

SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Setting:
    """Where an experiment measures: a model and its task, the layers LoRA adapts (`targets`)
    and those whose updates are measured (`layers`: names or globs), the run's length, and any
    other RunConfig fields that differ from the model's own first run (config.for_model)."""

    model: str
    shift: str
    targets: str
    layers: tuple[str, ...]
    steps: int
    fields: dict = field(default_factory=dict)

    def measured(self, names: Sequence[str]) -> list[str]:
        """The names among `names` that `layers` picks, in their order."""
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.layers)]


# Rotated digits (45°): the task is the same whatever the seed, so runs compare.
MLP = Setting("mlp", "rotate", "fc1,fc2", ("fc1", "fc2"), steps=200)
GPT_QV = "blocks.*.attn.q,blocks.*.attn.v"  # the LoRA paper's choice, and gpt's first run's
# Reversed words: a new use of attention, on which LoRA gains far more over training the head
# alone than on code, where the head does most of the work (the README's gpt table).
GPT = Setting(
    "gpt",
    "reverse-words",
    GPT_QV,
    ("blocks.*.attn.q", "blocks.*.attn.v"),
    for_model("gpt").steps,
    {"train_head": False},
)
GPT_Q = dataclasses.replace(GPT, layers=("blocks.*.attn.q",))  # Table 7 measures W_q alone
STEPS = MLP.steps  # the mlp experiments' run length: their measure functions' default

Trainer = Callable[[RunConfig], RunResult]
FINDING, REMARK = "finding", "remark"


@dataclass
class Finding:
    """What one experiment measured and what the numbers say."""

    name: str
    claim: str  # the published finding (or remark)
    rows: list[dict]  # the measurements, one table line each
    verdict: str  # what our numbers show, in one or two sentences
    outcome: str  # see OUTCOMES
    kind: str = FINDING  # FINDING or REMARK: a remark is not a measurement of the paper's
    cpu_seconds: float = 0.0

    def report(self) -> str:
        return "\n".join(
            [
                f"{self.name}: {self.claim}",
                "",
                reports.format_table(self.rows),
                "",
                f"{self.outcome.upper()}: {self.verdict}",
                f"({self.cpu_seconds:.1f} s of CPU)",
            ]
        )

    def to_dict(self) -> dict:
        return asdict(self)


OUTCOMES = {  # kind → the words for: every criterion met, some, none
    FINDING: ("reproduced", "partly reproduced", "not reproduced"),
    REMARK: ("holds here", "partly holds", "does not hold here"),
}
NOT_MEASURED = "not measured"  # the runs cannot answer the question (the verdict says why)


def _outcome(kind: str, criteria: Sequence[bool], partly: bool | None = None) -> str:
    """All criteria met: the first word; none: the last; otherwise (or when `partly` is given
    and true, with not all met) the middle one."""
    every, some, none = OUTCOMES[kind]
    if all(criteria):
        return every
    if partly is None:
        partly = any(criteria)
    return some if partly else none


def config(setting: Setting = MLP, **changes: object) -> RunConfig:
    """A setting's run (see the module docstring) with `changes`. Always on the CPU, even where
    a GPU is: on one machine and torch build, the same config then gives the same numbers, bit
    for bit (another CPU or torch build may differ in the last digits)."""
    settings = {"shift": setting.shift, "targets": setting.targets, "steps": setting.steps}
    settings |= {"device": "cpu"} | setting.fields | changes
    steps = int(settings["steps"])
    return dataclasses.replace(
        for_model(setting.model), **settings, eval_interval=steps, snapshot_interval=steps
    )


def lora_run(
    setting: Setting, rank: int, seed: int = 0, trainer: Trainer = train, **changes: object
) -> RunResult:
    return trainer(config(setting, method="lora", rank=rank, seed=seed, **changes))


def _intruders(setting: Setting, run: RunResult) -> int:
    """Intruder dimensions (k = 10, ε = 0.5) summed over the measured layers."""
    report = layer_reports.model_report(run.base, run.model)
    return sum(report[layer].intruders for layer in setting.measured(list(report)))


def _mean_range(values: Sequence[float], spec: str = ".3f") -> str:
    """'0.052 (0.035–0.061)': the mean over seeds and their range, for verdict sentences."""
    return f"{statistics.mean(values):{spec}} ({min(values):{spec}}–{max(values):{spec}})"


# -- 1. rank effect (a remark) --------------------------------------------------------------------
RANK_EFFECT_SHIFTS = ("label-permute", "rotate", "permute")  # near to far from pretraining
RANK_EFFECT_RANKS = (1, 4, 32)
RANK_EFFECT_BIG_GAIN = 0.10  # shuffled pixels: r = 32 beats r = 1 by at least this much
RANK_EFFECT_NO_GAIN = 0.02  # renamed classes: |gain| at most this (only the head must change)


def rank_effect(setting: Setting = MLP, steps: int = STEPS, trainer: Trainer = train) -> Finding:
    """LoRA at r = 1, 4, 32 on three shifts, three seeds. Holds here if for every seed the
    gain from r = 1 to r = 32 is ≥ RANK_EFFECT_BIG_GAIN on permute, within
    ±RANK_EFFECT_NO_GAIN on label-permute, and ordered label-permute < rotate < permute;
    partly if only the means over seeds satisfy it."""
    gains: dict[str, list[float]] = {}
    rows = []
    for shift in RANK_EFFECT_SHIFTS:
        accuracy = {
            r: [
                lora_run(setting, r, seed, trainer, shift=shift, steps=steps).test_acc_after or 0.0
                for seed in SEEDS
            ]
            for r in RANK_EFFECT_RANKS
        }
        low, high = accuracy[RANK_EFFECT_RANKS[0]], accuracy[RANK_EFFECT_RANKS[-1]]
        gains[shift] = [b - a for a, b in zip(low, high, strict=True)]
        rows.append(
            {
                "shift": shift,
                **{f"r={r}": statistics.mean(a) for r, a in accuracy.items()},
                "gain by seed": [round(g, 3) for g in gains[shift]],
                "mean gain": statistics.mean(gains[shift]),
            }
        )

    def holds(gain: dict[str, float]) -> bool:
        near, middle, far = (gain[shift] for shift in RANK_EFFECT_SHIFTS)
        return (
            far >= RANK_EFFECT_BIG_GAIN and abs(near) <= RANK_EFFECT_NO_GAIN and near < middle < far
        )

    every_seed = all(holds({s: g[i] for s, g in gains.items()}) for i in range(len(SEEDS)))
    on_average = holds({s: statistics.mean(g) for s, g in gains.items()})
    gain_text = "; ".join(f"{shift} {_mean_range(g, '+.3f')}" for shift, g in gains.items())
    low, high = RANK_EFFECT_RANKS[0], RANK_EFFECT_RANKS[-1]
    return Finding(
        "rank-effect",
        EXPERIMENTS["rank-effect"].claim,
        rows,
        f"test accuracy gained from r = {low} to r = {high}, mean (range) over {len(SEEDS)} "
        f"seeds: {gain_text}.",
        outcome=_outcome(EXPERIMENTS["rank-effect"].kind, [every_seed], partly=on_average),
        kind=EXPERIMENTS["rank-effect"].kind,
    )


# -- 2. subspace similarity -----------------------------------------------------------------------
SMALL, LARGE = 8, 64
SUBSPACE_MIN_RATIO = 2.0  # mean φ over the grid must be at least this × the random baseline
SUBSPACE_TOP_SHARED = 0.5  # the paper: φ(1, 1) above this, the top direction is shared


def subspace_similarity(
    setting: Setting = MLP,
    steps: int = STEPS,
    trainer: Trainer = train,
    name: str = "subspace-similarity",
) -> Finding:
    """φ between A's top right singular vectors at r = 8 and r = 64 (paper eq. 4), for pairs
    of runs with different seeds (seed s against s + 1) and, as context, the same seed.
    Criteria, for every layer and different-seed pair: (a) mean φ ≥ SUBSPACE_MIN_RATIO × the
    random baseline, (b) φ(1, 1) > SUBSPACE_TOP_SHARED. The verdict gives the ratios of each
    of the setting's `layers` (a glob: over the layers it picks)."""
    rows = []
    for seed in SEEDS:
        small = lora_run(setting, SMALL, seed, trainer, steps=steps)
        pairs = {"other seed": (seed + 1) % len(SEEDS), "same seed": seed}
        for pair, other in pairs.items():
            large = lora_run(setting, LARGE, other, trainer, steps=steps)
            for layer in setting.measured(list(adapted_layers(small.model))):
                report = similarity.compare_adapters(small.model, large.model, layer)
                phi, chance = torch.tensor(report.phi), torch.tensor(report.random_expected)
                rows.append(
                    {
                        "layer": layer,
                        "k": report.dim,
                        "seeds": f"{seed} vs {other}",
                        "pair": pair,
                        "φ(1,1)": phi[0, 0].item(),
                        "φ(8,8)": phi[SMALL - 1, SMALL - 1].item(),
                        "φ(8,64)": phi[SMALL - 1, LARGE - 1].item(),
                        "mean φ": phi.mean().item(),
                        "random E φ": chance.mean().item(),
                        "ratio": phi.mean().item() / chance.mean().item(),
                    }
                )
    other_seed = [row for row in rows if row["pair"] == "other seed"]
    overlap = all(row["ratio"] >= SUBSPACE_MIN_RATIO for row in other_seed)
    top_shared = all(row["φ(1,1)"] > SUBSPACE_TOP_SHARED for row in other_seed)

    def ratio_range(pattern: str) -> str:
        ratios = [r["ratio"] for r in other_seed if fnmatch.fnmatchcase(r["layer"], pattern)]
        return f"{pattern} {min(ratios):.1f}–{max(ratios):.1f}×"

    ratios = "; ".join(map(ratio_range, setting.layers))
    top = [row["φ(1,1)"] for row in other_seed]
    shared = sum(phi > SUBSPACE_TOP_SHARED for phi in top)
    if shared in (0, len(top)):
        top_text = "shared" if shared else "not the shared one"
    else:
        top_text = f"shared in only {shared} of {len(top)} pairs of layer and seeds"
    return Finding(
        name,
        EXPERIMENTS[name].claim,
        rows,
        f"with different seeds the r = {SMALL} and r = {LARGE} subspaces overlap "
        f"{'far above' if overlap else 'not clearly above'} chance (mean φ {ratios} the random "
        f"baseline), {'and' if overlap == top_shared else 'but'} the top direction is "
        f"{top_text}: φ(1,1) = {min(top):.2f}–{max(top):.2f} (the paper: > "
        f"{SUBSPACE_TOP_SHARED}).",
        outcome=_outcome(FINDING, [overlap, top_shared]),
    )


# -- 3. amplification -----------------------------------------------------------------------------
AMPLIFICATION_RANKS = (4, 16, 64)
AMPLIFICATION_W0_SHARE = 0.2  # at r = 4: W0 in ΔW's top directions ≤ this × in its own


def amplification(
    setting: Setting = MLP,
    steps: int = STEPS,
    trainer: Trainer = train,
    name: str = "amplification",
) -> Finding:
    """‖ΔW‖_F / ‖UᵀW0V‖_F at r = 4, 16, 64, three seeds. Reproduced if for every seed and
    layer it falls with rank, and at r = 4 W0 has more weight in ΔW's top directions than in
    random ones but at most AMPLIFICATION_W0_SHARE of what it has in its own top directions."""
    rows = []
    for seed, rank in itertools.product(SEEDS, AMPLIFICATION_RANKS):
        run = lora_run(setting, rank, seed, trainer, steps=steps)
        report = layer_reports.model_report(run.base, run.model)
        for layer in setting.measured(list(report)):
            layer_report = report[layer]
            rows.append(
                {
                    "layer": layer,
                    "r": rank,
                    "seed": seed,
                    "‖ΔW‖_F": layer_report.delta_norm,
                    "‖UᵀW0V‖ ΔW dirs": layer_report.projection_delta,
                    "W0 dirs": layer_report.projection_w0,
                    "random dirs": layer_report.projection_random,
                    "amplification": layer_report.amplification,
                }
            )
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    curves = [
        [r for r in rows if r["layer"] == layer and r["seed"] == seed]
        for layer, seed in itertools.product(layers, SEEDS)
    ]
    falling = all(
        all(a["amplification"] > b["amplification"] for a, b in itertools.pairwise(curve))
        for curve in curves
    )
    smallest = [r for r in rows if r["r"] == AMPLIFICATION_RANKS[0]]
    between = all(
        r["random dirs"] < r["‖UᵀW0V‖ ΔW dirs"] <= AMPLIFICATION_W0_SHARE * r["W0 dirs"]
        for r in smallest
    )
    share = max(r["‖UᵀW0V‖ ΔW dirs"] / r["W0 dirs"] for r in smallest)

    def mean_at(pattern: str, rank: int) -> float:
        return statistics.mean(
            r["amplification"]
            for r in rows
            if fnmatch.fnmatchcase(r["layer"], pattern) and r["r"] == rank
        )

    factors = "; ".join(
        f"{pattern}: " + " / ".join(f"{mean_at(pattern, rank):.2g}" for rank in AMPLIFICATION_RANKS)
        for pattern in setting.layers
    )
    return Finding(
        name,
        EXPERIMENTS[name].claim,
        rows,
        f"mean amplification at r = {' / '.join(map(str, AMPLIFICATION_RANKS))}: {factors} "
        f"({'falling' if falling else 'not falling'} with rank for every seed and layer); at "
        f"r = {AMPLIFICATION_RANKS[0]} W0 has at most {share:.0%} as much weight in ΔW's top "
        "directions as in its own.",
        outcome=_outcome(FINDING, [falling, between]),
    )


# -- 4. intruder dimensions -----------------------------------------------------------------------
INTRUDER_METHODS = {"LoRA r=4": {"rank": 4}, "LoRA r=64": {"rank": 64}, "full": {"method": "full"}}
INTRUDER_LRS = (
    1e-3,
    3e-3,
    1e-2,
)  # holds each method's default rate (core.common.config.DEFAULT_LR)
INTRUDER_MARGIN = 3  # at default rates, LoRA r=4 has at least this many more, every seed
INTRUDER_SAME_ACCURACY = 0.05  # ... while the mean accuracies differ by at most this


def intruders(setting: Setting = MLP, steps: int = STEPS, trainer: Trainer = train) -> Finding:
    """LoRA and full fine-tuning at three learning rates and three seeds. Reproduced if, each
    method at its own default rate, LoRA r = 4 has ≥ INTRUDER_MARGIN more intruders than full
    fine-tuning for every seed, at mean accuracies within INTRUDER_SAME_ACCURACY. The grid of
    equal rates is the context: intruders grow with the rate, whatever the method."""
    rows = [
        _intruder_row(setting, method, lr, settings, steps, trainer)
        for lr in INTRUDER_LRS
        for method, settings in INTRUDER_METHODS.items()
    ]
    default = {row["method"]: row for row in rows if row["its default"]}
    lora, full = default["LoRA r=4"], default["full"]
    more = all(
        a >= b + INTRUDER_MARGIN
        for a, b in zip(lora["intruders by seed"], full["intruders by seed"], strict=True)
    )
    gap = lora["test acc"] - full["test acc"]
    equal = "; ".join(
        f"lr {lr:g}: " + " / ".join(f"{r['mean count']:.1f}" for r in rows if r["lr"] == lr)
        for lr in INTRUDER_LRS
    )
    return Finding(
        "intruders",
        EXPERIMENTS["intruders"].claim,
        rows,
        f"each at its default rate, LoRA r=4 (lr {lora['lr']:g}) has "
        f"{lora['intruders by seed']} intruders in the top 10 of fc1 + fc2 by seed, full "
        f"fine-tuning (lr {full['lr']:g}) {full['intruders by seed']}, at test accuracy "
        f"{lora['test acc']:.3f} vs {full['test acc']:.3f}. At one shared rate the count "
        f"follows the rate more than the method ({' / '.join(INTRUDER_METHODS)}: {equal}).",
        outcome=_outcome(FINDING, [more, abs(gap) <= INTRUDER_SAME_ACCURACY]),
    )


def _intruder_row(
    setting: Setting, method: str, lr: float, settings: dict, steps: int, trainer: Trainer
) -> dict:
    """One method at one learning rate over SEEDS: accuracies and intruder counts."""
    runs = [trainer(config(setting, lr=lr, seed=seed, steps=steps, **settings)) for seed in SEEDS]
    counts = [_intruders(setting, run) for run in runs]
    return {
        "method": method,
        "lr": lr,
        "its default": lr == DEFAULT_LR[runs[0].config.method],
        "test acc": statistics.mean(run.test_acc_after or 0.0 for run in runs),
        "intruders by seed": counts,
        "mean count": statistics.mean(counts),
    }


# -- 5. forgetting --------------------------------------------------------------------------------
FORGETTING_SHIFTS = ("rotate", "permute")
FORGETTING_RANK = 16
FORGETTING_STEPS = (0.25, 0.5, 1, 2)  # × steps: points along each method's learning curve
FORGETTING_GAP = 0.03  # source accuracy, LoRA − full at matched target accuracy: a real gap


def forgetting(setting: Setting = MLP, steps: int = STEPS, trainer: Trainer = train) -> Finding:
    """LoRA (r = 16) and full fine-tuning, each at its default rate, trained for 50 to 400
    steps (three seeds) on rotate and permute: target accuracy and source accuracy (the upright
    digits the model was pretrained on). The gap is LoRA's source accuracy minus full
    fine-tuning's at the same target accuracy (matched_gap). Reproduced if it is at least
    +FORGETTING_GAP on both shifts (LoRA forgets less), not reproduced if at most
    −FORGETTING_GAP on both, partly otherwise; not measured if the curves never meet."""
    rows = []
    for shift, method, fraction in itertools.product(
        FORGETTING_SHIFTS, ("lora", "full"), FORGETTING_STEPS
    ):
        settings = {"method": method, "shift": shift}
        settings |= {"rank": FORGETTING_RANK} if method == "lora" else {}
        rows.append(_forgetting_row(setting, settings, max(1, int(fraction * steps)), trainer))
    same_rate = {"method": "lora", "rank": FORGETTING_RANK, "lr": DEFAULT_LR["full"]}
    rows.append(_forgetting_row(setting, same_rate | {"shift": setting.shift}, steps, trainer))

    as_trained = {shift: _gap(rows, shift, "source acc") for shift in FORGETTING_SHIFTS}
    body = {shift: _gap(rows, shift, "source, base head") for shift in FORGETTING_SHIFTS}
    shared = rows[-1]
    full_at = next(
        r
        for r in rows
        if r["shift"] == setting.shift and r["method"] == "full" and r["steps"] == steps
    )
    context = (
        f" At one shared rate ({shared['lr']:g}, {setting.shift}, {steps} steps) LoRA reaches "
        f"{shared['target acc']:.3f} on the target and keeps {shared['source acc']:.3f} of the "
        f"source; full fine-tuning {full_at['target acc']:.3f} and {full_at['source acc']:.3f}."
    )
    if any(g is None for g in as_trained.values()):
        missing = ", ".join(s for s, g in as_trained.items() if g is None)
        return Finding(
            "forgetting",
            EXPERIMENTS["forgetting"].claim,
            rows,
            f"on {missing} no LoRA point lies within full fine-tuning's range of target "
            "accuracy, so the two cannot be compared at matched accuracy." + context,
            outcome=NOT_MEASURED,
        )
    less = all(g >= FORGETTING_GAP for g in as_trained.values())
    more = all(g <= -FORGETTING_GAP for g in as_trained.values())
    said = {True: "less", False: "more"}

    def gaps(values: dict[str, float | None]) -> str:
        return " and ".join(
            f"{'—' if g is None else f'{g:+.2f}'} ({shift})" for shift, g in values.items()
        )

    lead = (
        f"LoRA forgets {said[less]} here"
        if less or more
        else "LoRA forgets neither clearly less nor clearly more here"
    )
    return Finding(
        "forgetting",
        EXPERIMENTS["forgetting"].claim,
        rows,
        f"{lead}: at matched target accuracy its source accuracy minus full fine-tuning's is "
        f"{gaps(as_trained)}. With the pretrained head put back (the body only) the gap is "
        f"{gaps(body)}: the difference is the head's, which LoRA trains in full at its own "
        f"learning rate, {DEFAULT_LR['lora'] / DEFAULT_LR['full']:.0f}× full fine-tuning's."
        + context,
        outcome=_outcome(FINDING, [less], partly=not more),
    )


def _forgetting_row(setting: Setting, settings: dict, steps: int, trainer: Trainer) -> dict:
    """One method, shift and length of training over SEEDS: mean target and source accuracy,
    also with the pretrained head put back (what the body alone kept)."""
    runs = [trainer(config(setting, seed=seed, steps=steps, **settings)) for seed in SEEDS]
    source = source_split(setting.model, runs[0].task.num_classes)
    first = runs[0].config
    return {
        "shift": first.shift,
        "method": first.method,
        "rank": first.rank if first.method == "lora" else None,
        "lr": first.learning_rate,
        "steps": steps,
        "target acc": statistics.mean(run.test_acc_after or 0.0 for run in runs),
        "source acc": statistics.mean(run.source_acc_after or 0.0 for run in runs),
        "source, base head": statistics.mean(
            source_accuracy(with_base_head(run.model, run.base), source) or 0.0 for run in runs
        ),
    }


def _gap(rows: list[dict], shift: str, key: str) -> float | None:
    """matched_gap of LoRA's and full fine-tuning's curves on one shift (each at its default
    learning rate), for the source accuracy in column `key`."""
    curves = {
        method: [
            (row["target acc"], row[key])
            for row in rows
            if row["shift"] == shift and row["method"] == method and row["lr"] == DEFAULT_LR[method]
        ]
        for method in ("lora", "full")
    }
    return matched_gap(curves["lora"], curves["full"])


def matched_gap(
    lora: Sequence[tuple[float, float]], full: Sequence[tuple[float, float]]
) -> float | None:
    """Source accuracy of LoRA minus that of full fine-tuning at the same target accuracy.

    Both curves are (target accuracy, source accuracy) points. Full fine-tuning's curve,
    sorted by target accuracy, is interpolated linearly at each LoRA point that lies within
    its range of target accuracy; the gap is the mean difference over those points. None when
    no LoRA point lies within that range (the two cannot be matched)."""
    points = sorted(full)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    gaps = [
        source - float(np.interp(target, xs, ys))
        for target, source in lora
        if xs and xs[0] <= target <= xs[-1]
    ]
    return statistics.mean(gaps) if gaps else None


# -- 6. which weight types, at one budget (gpt) ----------------------------------------------------
WEIGHT_TYPES = {  # the LoRA paper's Table 5: r·(d + k) per block the same in each
    "W_q": ("blocks.*.attn.q", 8),
    "W_q, W_v": (GPT_QV, 4),
    "W_q, W_k, W_v, W_o": ("blocks.*.attn.q,blocks.*.attn.k,blocks.*.attn.v,blocks.*.attn.o", 2),
}


def weight_types(
    setting: Setting = GPT, steps: int = GPT.steps, trainer: Trainer = train
) -> Finding:
    """The same budget of trainable parameters (WEIGHT_TYPES: the adapters only, the head
    frozen) put into W_q alone at rank 8, W_q and W_v at rank 4, or all four at rank 2, three
    seeds; held-out bits per character on the setting's task. Reproduced if, for every seed,
    W_q and W_v and all four each end lower than W_q alone (the paper: putting the whole budget
    into W_q is worst; W_q and W_v do about as well as all four); partly if one of the two."""
    rows, bits = [], {}
    for choice, (targets, rank) in WEIGHT_TYPES.items():
        runs = [
            lora_run(setting, rank, seed, trainer, targets=targets, steps=steps) for seed in SEEDS
        ]
        bits[choice] = [run.test_bpc_after or float("inf") for run in runs]
        rows.append(
            {
                "weights": choice,
                "r": rank,
                "trainable": parameter_count(runs[0].config).trainable,
                "bpc before": runs[0].test_bpc_before,
                "bpc by seed": [round(b, 3) for b in bits[choice]],
                "mean bpc": statistics.mean(bits[choice]),
            }
        )
    alone, *spread = WEIGHT_TYPES
    beats = {
        choice: all(b < a for a, b in zip(bits[alone], bits[choice], strict=True))
        for choice in spread
    }
    best = min(bits, key=lambda choice: statistics.mean(bits[choice]))
    said = "; ".join(
        f"{choice} (r = {WEIGHT_TYPES[choice][1]}) {_mean_range(b)}" for choice, b in bits.items()
    )
    lower = [choice for choice, won in beats.items() if won]
    return Finding(
        "gpt-weight-types",
        EXPERIMENTS["gpt-weight-types"].claim,
        rows,
        f"held-out bits per character on {setting.shift} after {steps} steps, mean (range) over "
        f"{len(SEEDS)} seeds, {rows[0]['trainable']} trainable parameters each: {said}. "
        + (
            f"{' and '.join(lower)} end lower than W_q alone for every seed"
            if lower
            else "Neither ends lower than W_q alone for every seed"
        )
        + f"; lowest on average: {best}.",
        outcome=_outcome(FINDING, list(beats.values())),
    )


# -- 7. rank sufficiency (gpt) --------------------------------------------------------------------
RANK_SUFFICIENCY_RANKS = (1, 2, 8, 64)
RANK_SUFFICIENT_SHARE = 0.9  # r = 1 gains at least this share of r = 64's fall in bits


def rank_sufficiency(
    setting: Setting = GPT, steps: int = GPT.steps, trainer: Trainer = train
) -> Finding:
    """LoRA on the setting's targets (W_q and W_v) at RANK_SUFFICIENCY_RANKS, three seeds:
    how far the held-out bits per character fall from the base model's. Reproduced if for
    every seed r = 1's fall is at least RANK_SUFFICIENT_SHARE of r = 64's (the paper: r = 1 is
    within a fraction of a point of r = 64 on W_q and W_v); partly if only on average."""
    before = None
    bits: dict[int, list[float]] = {}
    for rank in RANK_SUFFICIENCY_RANKS:
        runs = [lora_run(setting, rank, seed, trainer, steps=steps) for seed in SEEDS]
        before = runs[0].test_bpc_before
        bits[rank] = [run.test_bpc_after or float("inf") for run in runs]
    rows = [
        {
            "r": rank,
            "bpc by seed": [round(b, 3) for b in values],
            "mean bpc": statistics.mean(values),
            "fall from base": before - statistics.mean(values),
        }
        for rank, values in bits.items()
    ]
    low, high = RANK_SUFFICIENCY_RANKS[0], RANK_SUFFICIENCY_RANKS[-1]
    shares = [(before - a) / (before - b) for a, b in zip(bits[low], bits[high], strict=True)]
    every_seed = all(share >= RANK_SUFFICIENT_SHARE for share in shares)
    on_average = statistics.mean(shares) >= RANK_SUFFICIENT_SHARE
    said = "; ".join(f"r = {rank} {_mean_range(values)}" for rank, values in bits.items())
    return Finding(
        "gpt-rank",
        EXPERIMENTS["gpt-rank"].claim,
        rows,
        f"held-out bits per character on {setting.shift} (base model {before:.3f}), mean "
        f"(range) over {len(SEEDS)} seeds: {said}. r = {low} gets {_mean_range(shares, '.0%')} "
        f"of r = {high}'s fall (the criterion: ≥ {RANK_SUFFICIENT_SHARE:.0%} for every seed).",
        outcome=_outcome(FINDING, [every_seed], partly=on_average),
    )


# -- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    title: str
    claim: str
    measure: Callable[..., Finding]  # measure(setting, steps, trainer) -> Finding
    kind: str = FINDING
    setting: Setting = MLP  # its model (the README groups findings by it), task and run length


EXPERIMENTS: dict[str, Experiment] = {
    "rank-effect": Experiment(
        "Rank effect",
        "the LoRA paper remarks (§7.2, a thought experiment, not a measurement) that the rank a "
        "task needs depends on how far it is from pretraining: renaming classes needs none, a "
        "rotation some, shuffled pixels much more.",
        rank_effect,
        REMARK,
    ),
    "subspace-similarity": Experiment(
        "Subspace similarity",
        f"the subspaces of A's top right singular vectors learned at r = {SMALL} and "
        f"r = {LARGE} overlap far above chance, and their top direction is shared (φ(1,1) > "
        f"{SUBSPACE_TOP_SHARED}) while the others mostly are not (LoRA paper §7.2, Fig. 3).",
        subspace_similarity,
    ),
    "amplification": Experiment(
        "Amplification",
        "delta_W amplifies directions that W0 does not emphasise, and the factor "
        "‖ΔW‖_F / ‖UᵀW0V‖_F is larger at a small rank (LoRA paper §7.3).",
        amplification,
    ),
    "intruders": Experiment(
        "Intruder dimensions",
        "LoRA at low rank creates new top singular directions in W0 + ΔW (intruder "
        "dimensions); full fine-tuning has few or none, at similar accuracy (arXiv 2410.21228).",
        intruders,
    ),
    "forgetting": Experiment(
        "Forgetting",
        "LoRA learns less and forgets less (Biderman et al. 2024): at the same target accuracy "
        "it keeps more of the source task than full fine-tuning.",
        forgetting,
    ),
    "gpt-weight-types": Experiment(
        "Which weights to adapt (gpt)",
        "at one budget of trainable parameters, adapting W_q and W_v at rank 4 (or W_q, W_k, "
        "W_v and W_o at rank 2) does better than W_q alone at rank 8: spread over more weight "
        "types, a lower rank is the better use of the budget (LoRA paper §7.1, Table 5).",
        weight_types,
        setting=GPT,
    ),
    "gpt-rank": Experiment(
        "Rank sufficiency (gpt)",
        "adapting W_q and W_v, a very small rank suffices: r = 1 comes close to r = 64 (LoRA "
        "paper §7.2, Table 6).",
        rank_sufficiency,
        setting=GPT,
    ),
    "gpt-subspace-similarity": Experiment(
        "Subspace similarity (gpt)",
        f"in W_q and W_v the subspaces of A's top right singular vectors learned at r = {SMALL} "
        f"and r = {LARGE} overlap far above chance, and their top direction is shared (φ(1,1) "
        f"> {SUBSPACE_TOP_SHARED}) (LoRA paper §7.2, Fig. 3).",
        functools.partial(subspace_similarity, name="gpt-subspace-similarity"),
        setting=GPT,
    ),
    "gpt-amplification": Experiment(
        "Amplification of W_q (gpt)",
        "ΔW_q amplifies directions that W_q does not emphasise, and the factor "
        "‖ΔW‖_F / ‖UᵀW0V‖_F is larger at a small rank (LoRA paper §7.3, Table 7).",
        functools.partial(amplification, name="gpt-amplification"),
        setting=GPT_Q,
    ),
}


def run(name: str, steps: int | None = None, trainer: Trainer = train) -> Finding:
    """Run one experiment by name (its runs `steps` long, by default its setting's), on one CPU
    thread, and time it in CPU seconds.

    One thread makes the numbers the same from run to run on one machine and torch build
    (threads split sums, which changes their last bits; another CPU or torch build may too)
    and costs little: these models are too small to gain from more.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.process_time()
        experiment = EXPERIMENTS[name]
        finding = experiment.measure(
            experiment.setting, steps or experiment.setting.steps, trainer=trainer
        )
        finding.cpu_seconds = time.process_time() - started
    finally:
        torch.set_num_threads(threads)
    return finding
