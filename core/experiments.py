"""Four published findings about LoRA, measured again on the shipped `mlp` (784-256-256-10).

Each experiment trains short runs (200 steps, batch 64, AdamW, lr 1e-2, alpha 8, LoRA on fc1
and fc2 with the head trained in full; 3 to 27 runs) on one CPU thread and measures them with
core.spectra, in under 30 s of CPU. The verdict is computed from the numbers and says so
plainly when a finding does not show (outcome "partly reproduced" or "not reproduced").

    rank-effect          (LoRA paper, arXiv 2106.09685, §7.2 and the zoo's task shifts)
                         How much rank a task needs depends on how far it is from pretraining.
    subspace-similarity  (LoRA paper §7.2, Fig. 3) The top directions learned at r = 8 and at
                         r = 64 overlap far more than random subspaces would.
    amplification        (LoRA paper §7.3, Table 7) delta_W amplifies directions that W0 does
                         not emphasise, and more so at a small rank.
    intruders            (arXiv 2410.21228) LoRA at low rank creates new top singular
                         directions ("intruder dimensions"); full fine-tuning few or none.

For the command line (core/__main__.py):

    python -m core experiment NAME [--json]
        finding = core.experiments.run(NAME)      # Finding; ValueError for an unknown NAME
        print(finding.report())                   # claim, table, verdict, CPU seconds
        json.dumps(finding.to_dict())             # name, claim, rows, verdict, outcome, ...
        core.experiments.EXPERIMENTS              # {NAME: Experiment(title, claim, measure)}
    python -m core spectra RUN_ID [--json]
        report = core.reports.analyse_run(RUN_ID)  # {layer: core.spectra.layer_report(...)}
        print(core.reports.report_table(report))   # one line per layer
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from core import reports, spectra
from core.config import RunConfig
from core.train import RunResult, train

MODEL = "mlp"
SHIFT = "rotate"  # a 45° rotation: the task is the same whatever the seed, so runs compare
STEPS = 200
LR = 1e-2
LAYERS = ("fc1", "fc2")


@dataclass
class Finding:
    """What one experiment measured and what the numbers say."""

    name: str
    claim: str  # the published finding
    rows: list[dict]  # the measurements, one table line each
    verdict: str  # what our numbers show, in one sentence
    outcome: str  # "reproduced", "partly reproduced" or "not reproduced"
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


def lora_run(rank: int, seed: int = 0, shift: str = SHIFT, steps: int = STEPS) -> RunResult:
    return train(config(method="lora", rank=rank, seed=seed, shift=shift, steps=steps))


def config(**changes: object) -> RunConfig:
    """The experiments' common settings (see the module docstring) with `changes`. Always on
    the CPU, even where a GPU is: the claim is the same numbers on every machine."""
    settings = {"model": MODEL, "shift": SHIFT, "targets": list(LAYERS), "lr": LR, "steps": STEPS}
    settings |= {"device": "cpu"}
    settings |= changes
    steps = int(settings["steps"])
    return RunConfig(**settings, eval_interval=steps, snapshot_interval=steps)


# -- 1. rank effect -------------------------------------------------------------------------------
RANK_EFFECT_SHIFTS = ("label-permute", "rotate", "permute")
RANK_EFFECT_RANKS = (1, 4, 32)


def rank_effect(steps: int = STEPS) -> Finding:
    rows = []
    for shift in RANK_EFFECT_SHIFTS:
        accuracy = {
            r: lora_run(r, shift=shift, steps=steps).test_acc_after for r in RANK_EFFECT_RANKS
        }
        low, high = accuracy[RANK_EFFECT_RANKS[0]], accuracy[RANK_EFFECT_RANKS[-1]]
        rows.append(
            {"shift": shift, **{f"r={r}": a for r, a in accuracy.items()}, "gain": high - low}
        )
    gains = {row["shift"]: row["gain"] for row in rows}
    spread = max(gains.values()) - min(gains.values())
    gain_text = ", ".join(f"{shift} {gain:+.3f}" for shift, gain in gains.items())
    return Finding(
        "rank-effect",
        EXPERIMENTS["rank-effect"].claim,
        rows,
        f"test accuracy gained from rank {RANK_EFFECT_RANKS[0]} to {RANK_EFFECT_RANKS[-1]}: "
        f"{gain_text} (spread {spread:.3f} between shifts).",
        outcome=_outcome(spread > 0.05),
    )


# -- 2. subspace similarity -----------------------------------------------------------------------
SMALL, LARGE = 8, 64


def subspace_similarity(steps: int = STEPS) -> Finding:
    small = lora_run(SMALL, seed=0, steps=steps)
    large = {"same seed": lora_run(LARGE, seed=0, steps=steps)}
    large["other seed"] = lora_run(LARGE, seed=1, steps=steps)
    rows = []
    for layer in LAYERS:
        for pair, run in large.items():
            report = spectra.compare_adapters(small.model, run.model, layer)
            phi, chance = torch.tensor(report["phi"]), torch.tensor(report["random_expected"])
            rows.append(
                {
                    "layer": f"{layer} (k={report['dim']})",
                    "seeds": pair,
                    "φ(1,1)": phi[0, 0].item(),
                    "φ(8,8)": phi[SMALL - 1, SMALL - 1].item(),
                    "φ(8,64)": phi[SMALL - 1, LARGE - 1].item(),
                    "mean φ": phi.mean().item(),
                    "random E φ": chance.mean().item(),
                    "random sampled": torch.tensor(report["random_sampled"]).mean().item(),
                    "ratio": phi.mean().item() / chance.mean().item(),
                }
            )
    other_seed = [row["ratio"] for row in rows if row["seeds"] == "other seed"]
    same_seed = [row["ratio"] for row in rows if row["seeds"] == "same seed"]
    return Finding(
        "subspace-similarity",
        EXPERIMENTS["subspace-similarity"].claim,
        rows,
        f"mean φ over the {SMALL}×{LARGE} grid of A's top right singular vectors is "
        f"{min(other_seed):.1f}–{max(other_seed):.1f}× the random baseline for runs with "
        f"different seeds (A starts from different random values), "
        f"{min(same_seed):.1f}–{max(same_seed):.1f}× with the same seed.",
        outcome=_outcome(min(other_seed) > 2),
    )


# -- 3. amplification -----------------------------------------------------------------------------
AMPLIFICATION_RANKS = (4, 16, 64)


def amplification(steps: int = STEPS) -> Finding:
    reports = {r: lora_run(r, steps=steps) for r in AMPLIFICATION_RANKS}
    rows = []
    for layer in LAYERS:
        for rank, run in reports.items():
            report = spectra.model_report(run.base, run.model)[layer]
            rows.append(
                {
                    "layer": layer,
                    "r": rank,
                    "‖ΔW‖_F": report["delta_norm"],
                    "‖UᵀW0V‖ ΔW dirs": report["projection_delta"],
                    "W0 dirs": report["projection_w0"],
                    "random dirs": report["projection_random"],
                    "amplification": report["amplification"],
                }
            )
    by_layer = [[row for row in rows if row["layer"] == layer] for layer in LAYERS]
    falling = all(
        all(a["amplification"] > b["amplification"] for a, b in itertools.pairwise(rs))
        for rs in by_layer
    )
    share = max(row["‖UᵀW0V‖ ΔW dirs"] / row["W0 dirs"] for row in rows)
    factors = "; ".join(
        f"{rs[0]['layer']}: " + ", ".join(f"{row['amplification']:.1f}" for row in rs)
        for rs in by_layer
    )
    return Finding(
        "amplification",
        EXPERIMENTS["amplification"].claim,
        rows,
        f"amplification at r = {', '.join(map(str, AMPLIFICATION_RANKS))}: {factors} "
        f"({'falling' if falling else 'not falling'} with rank); W0 has at most {share:.0%} as "
        "much weight in delta_W's top directions as in its own.",
        outcome=_outcome(falling, share < 0.5),
    )


# -- 4. intruder dimensions -----------------------------------------------------------------------
INTRUDER_METHODS = {"LoRA r=4": {"rank": 4}, "LoRA r=64": {"rank": 64}, "full": {"method": "full"}}
INTRUDER_LRS = (1e-3, 3e-3, 1e-2)
INTRUDER_SEEDS = (0, 1, 2)


def intruders(steps: int = STEPS) -> Finding:
    """LoRA and full fine-tuning at three learning rates and three seeds. Intruders grow with
    the learning rate, so the methods are compared at equal rates, and each at its best rate
    (by validation accuracy: the paper tunes each method)."""
    rows = [
        _intruder_row(method, lr, settings, steps)
        for lr in INTRUDER_LRS
        for method, settings in INTRUDER_METHODS.items()
    ]
    best = {
        m: max((r for r in rows if r["method"] == m), key=lambda r: r["val acc"])
        for m in INTRUDER_METHODS
    }
    low_rank = {r["lr"]: r["mean count"] for r in rows if r["method"] == "LoRA r=4"}
    at_best_lr = best["LoRA r=4"]["mean count"] > best["full"]["mean count"]
    at_every_lr = all(r["mean count"] <= low_rank[r["lr"]] for r in rows if r["method"] == "full")
    equal = "; ".join(
        f"lr {lr:g}: " + " / ".join(f"{r['mean count']:.1f}" for r in rows if r["lr"] == lr)
        for lr in INTRUDER_LRS
    )
    at_best = ", ".join(f"{m} {r['mean count']:.1f} (lr {r['lr']:g})" for m, r in best.items())
    return Finding(
        "intruders",
        EXPERIMENTS["intruders"].claim,
        rows,
        f"mean intruders in the top 10 of fc1 + fc2 (ε = 0.5), {' / '.join(INTRUDER_METHODS)} "
        f"at equal learning rates: {equal}. Each at its best learning rate: {at_best}.",
        outcome=_outcome(at_best_lr, at_every_lr),
    )


def _intruder_row(method: str, lr: float, settings: dict, steps: int) -> dict:
    """One method at one learning rate over INTRUDER_SEEDS: accuracies and intruder counts."""
    val_acc, test_acc, counts = [], [], []
    for seed in INTRUDER_SEEDS:
        run = train(config(lr=lr, seed=seed, steps=steps, **settings))
        report = spectra.model_report(run.base, run.model)
        val_acc.append(run.history[-1]["val_acc"])
        test_acc.append(run.test_acc_after)
        counts.append(sum(report[layer]["intruders"] for layer in LAYERS))
    return {
        "method": method,
        "lr": lr,
        "val acc": statistics.mean(val_acc),
        "test acc": statistics.mean(test_acc),
        "intruders by seed": counts,
        "mean count": statistics.mean(counts),
    }


def _outcome(*criteria: bool) -> str:
    """All criteria met: reproduced; some: partly; none: not reproduced."""
    if all(criteria):
        return "reproduced"
    return "partly reproduced" if any(criteria) else "not reproduced"


# -- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    title: str
    claim: str
    measure: Callable[..., Finding]  # measure(steps=STEPS) -> Finding


EXPERIMENTS: dict[str, Experiment] = {
    "rank-effect": Experiment(
        "Rank effect",
        "the rank a task needs depends on how far it is from pretraining: renaming classes "
        "needs none, a rotation some, shuffled pixels much more.",
        rank_effect,
    ),
    "subspace-similarity": Experiment(
        "Subspace similarity",
        f"the top directions of A learned at r = {SMALL} and r = {LARGE} overlap far above "
        "the random baseline.",
        subspace_similarity,
    ),
    "amplification": Experiment(
        "Amplification",
        "delta_W amplifies directions that W0 does not emphasise, and the factor "
        "‖ΔW‖_F / ‖UᵀW0V‖_F is larger at a small rank.",
        amplification,
    ),
    "intruders": Experiment(
        "Intruder dimensions",
        "LoRA at low rank creates new top singular directions in W0 + ΔW (intruder "
        "dimensions); full fine-tuning has few or none.",
        intruders,
    ),
}


def run(name: str, steps: int = STEPS) -> Finding:
    """Run one experiment by name, on one CPU thread, and time it in CPU seconds.

    One thread makes the numbers the same on every machine (threads split sums, which changes
    their last bits) and costs little: these models are too small to gain from more.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.process_time()
        finding = EXPERIMENTS[name].measure(steps=steps)
        finding.cpu_seconds = time.process_time() - started
    finally:
        torch.set_num_threads(threads)
    return finding
