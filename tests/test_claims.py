"""Every claim the app makes to students, held to its numbers.

Each lesson (core.classroom.lessons) is run at its preset, built as its page builds it, over three
seeds, and its words (core/i18n: lessons.<id>.look_for, the shift explanations they rely on) are
checked in the direction they state. Each experiment (core.analyses.experiments) is run and its
outcome, computed there from thresholds in code, must be the one the README and the texts report.
The runs are shared: a module-wide cache trains each config once (many lessons and experiments
need the same runs), on one thread, evaluating only at the end (evaluation changes no weight).

The language model's claims (its text tasks, its lesson, its four experiments) cost the most: a
gpt run takes about 12 s of CPU, 20 times an mlp run, so its tasks and lesson use two seeds and
share their runs (about 20 runs, 4 min of CPU), and its experiments, at the README's three seeds,
share theirs (24 runs, about 5 min).

A claim that stops holding fails here: test_a_claim_fails_when_its_preset_no_longer_makes_it
runs one lesson's check on a preset for which the claim is false.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterator

import pytest
import torch

from core.analyses import experiments, layer_reports
from core.analyses.reports import planted_report
from core.classroom import lessons, links
from core.classroom.goals import parse_goal
from core.common.config import DEFAULT_LR, RunConfig, for_model
from core.lowrank.targets import check_targets
from core.training import data, text, zoo
from core.training.train import (
    RunResult,
    parameter_count,
    source_accuracy,
    source_split,
    train,
    with_base_head,
)
from core.training.zoo import default_targets

SEEDS = (0, 1, 2)
HEAD_SEEDS = range(10)  # what the head does to forgetting is a few points; seeds vary by ±6
TEXT_SEEDS = (0, 1)  # a gpt run costs about 12 s of CPU, 20 times the mlp's: two seeds
LESSONS = {lesson.id: lesson for lesson in lessons.LESSONS}


class Runs:
    """train(config), remembered: equal runs (whatever their evaluation schedule, a LoRA
    target written as "all-linear" or as its layers, an lr left to the method's default or
    written out) train once. A run keeps its models and its planted update, not its data."""

    def __init__(self) -> None:
        self._done: dict[str, RunResult] = {}
        self._bases: dict[tuple[str, int], torch.nn.Module] = {}

    def __call__(self, config: RunConfig) -> RunResult:
        key = self._key(config)
        if key not in self._done:
            self._done[key] = self._slim(train(self._fast(config)))
        return self._done[key]

    @staticmethod
    def _fast(config: RunConfig) -> RunConfig:
        steps = config.steps or 1
        return dataclasses.replace(config, eval_interval=steps, snapshot_interval=steps)

    def _key(self, config: RunConfig) -> str:
        fast = self._fast(dataclasses.replace(config, lr=config.learning_rate, device="cpu"))
        if fast.method == "lora":
            fast.targets = check_targets(zoo.load(fast.model), fast.targets, fast.rank)
        else:  # the LoRA settings mean nothing to the other methods
            fast = dataclasses.replace(fast, rank=4, targets="all-linear")
        return str(sorted(fast.to_dict().items()))

    def _slim(self, result: RunResult) -> RunResult:
        """Without the task's images and labels (15 MB a run), one base model per model."""
        empty = torch.empty(0)
        splits = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        task = dataclasses.replace(result.task, **dict.fromkeys(splits, empty))
        task = dataclasses.replace(task, z_train=None, z_val=None, z_test=None)
        key = (result.config.model, task.num_classes)
        base = self._bases.setdefault(key, result.base)
        return dataclasses.replace(result, task=task, base=base)


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Runs()
    torch.set_num_threads(threads)


def seeds(config: RunConfig) -> list[RunConfig]:
    return [dataclasses.replace(config, seed=seed) for seed in SEEDS]


def seeds_of(config: RunConfig) -> list[RunConfig]:
    """The config at each of HEAD_SEEDS: an effect of a few points needs more than three."""
    return [dataclasses.replace(config, seed=seed) for seed in HEAD_SEEDS]


def accuracies(runs: Runs, config: RunConfig) -> list[float]:
    return [runs(c).test_acc_after for c in seeds(config)]


def mean(values) -> float:
    return statistics.mean(values)


def intruders(run: RunResult) -> int:
    """Intruder dimensions over every layer the run changed, as `spectra RUN` counts them."""
    return sum(
        layer.intruders for layer in layer_reports.model_report(run.base, run.model).values()
    )


def train_lesson(lesson_id: str, **changes) -> RunConfig:
    """A Train lesson's run as the page builds it from the link, with what the student then
    changes (the lesson's goal says what)."""
    settings = links.train_defaults() | LESSONS[lesson_id].settings | changes
    return RunConfig.from_dict(settings)


def compare_lesson(lesson_id: str, **changes) -> dict[str, RunConfig]:
    """A Compare lesson's sweep as the page builds it: {"r=1": …, "head": …, "full": …}."""
    settings = links.COMPARE_DEFAULTS | LESSONS[lesson_id].settings | changes
    sweep = links.compare_configs(settings, default_targets(settings["model"]))
    return {(f"r={c.rank}" if c.method == "lora" else c.method): c for c in sweep}


# -- lessons --------------------------------------------------------------------------------------
def test_every_lesson_has_a_claim_test_here():
    checked = {"rank", "layers", "intruders", "planted", "language-model"}
    assert set(LESSONS) == checked, "a new lesson needs its claim checked in this module"


def test_lesson_rank(runs):
    """look_for: with shuffled pixels accuracy rises up to about rank 8, then levels off below
    full fine-tuning; with renamed classes rank 1 does as well as rank 64 and the head alone."""
    permute = compare_lesson("rank")
    r1, r8, r64, full = (accuracies(runs, permute[k]) for k in ("r=1", "r=8", "r=64", "full"))
    assert all(b - a >= 0.10 for a, b in zip(r1, r8, strict=True)), (r1, r8)
    assert abs(mean(r64) - mean(r8)) <= 0.03, (r8, r64)
    assert all(f >= r + 0.015 for r, f in zip(r64, full, strict=True)), (r64, full)
    renamed = compare_lesson("rank", shift="label-permute")
    r1, r64, head = (accuracies(runs, renamed[k]) for k in ("r=1", "r=64", "head"))
    assert abs(mean(r64) - mean(r1)) <= 0.02, (r1, r64)
    assert mean(head) >= mean(r64) - 0.01, (head, r64)


def test_lesson_layers(runs):
    """look_for: W_q and W_v alone train about a third of the parameters of all linear layers
    and reach about the same accuracy."""
    qv = train_lesson("layers")
    every = dataclasses.replace(qv, targets="all-linear")
    trained_qv, trained_all = (parameter_count(c).trainable for c in (qv, every))
    assert trained_qv <= 0.5 * trained_all, (trained_qv, trained_all)
    acc_qv, acc_all = accuracies(runs, qv), accuracies(runs, every)
    assert abs(mean(acc_all) - mean(acc_qv)) <= 0.03, (acc_qv, acc_all)


def check_intruders_lesson(runs: Runs, full: RunConfig) -> None:
    """look_for: LoRA (rank 4) grows several intruders (about 4 in fc1, 2 or 3 in fc2), full
    fine-tuning keeps W0's own directions (none or one), both at about 90 % accuracy."""
    lora = dataclasses.replace(full, method="lora", rank=4)
    counts_full = [intruders(runs(c)) for c in seeds(full)]
    counts_lora = [intruders(runs(c)) for c in seeds(lora)]
    by_layer = [layer_reports.model_report(runs(c).base, runs(c).model) for c in seeds(lora)]
    assert all(3 <= r["fc1"].intruders <= 5 and 1 <= r["fc2"].intruders <= 4 for r in by_layer)
    assert all(c <= 1 for c in counts_full), counts_full
    assert all(a >= b + 3 for a, b in zip(counts_lora, counts_full, strict=True)), (
        counts_lora,
        counts_full,
    )
    acc_full, acc_lora = mean(accuracies(runs, full)), mean(accuracies(runs, lora))
    assert abs(acc_full - acc_lora) <= 0.05 and min(acc_full, acc_lora) >= 0.85


def test_lesson_intruders(runs):
    """goal: full fine-tuning at its usual rate, ten times lower than LoRA's."""
    assert DEFAULT_LR["lora"] / DEFAULT_LR["full"] == pytest.approx(10)
    check_intruders_lesson(runs, train_lesson("intruders"))


def test_train_lr_help_whole_network_methods_train_ten_times_slower():
    """train.lr_help: full fine-tuning and top-k train about ten times slower than LoRA, the
    head or BitFit (the rates it lists are DEFAULT_LR's, filled in by the page)."""
    for slow in ("full", "top-k"):
        for fast in ("lora", "head", "bitfit"):
            assert DEFAULT_LR[fast] / DEFAULT_LR[slow] == pytest.approx(10), (fast, slow)


def test_a_claim_fails_when_its_preset_no_longer_makes_it(runs):
    """The intruders lesson with one shared learning rate (LoRA's 1e-2) for both methods:
    full fine-tuning then grows as many intruders as LoRA, and the check says so."""
    with pytest.raises(AssertionError):
        check_intruders_lesson(runs, train_lesson("intruders", lr=1e-2))


def test_lesson_planted(runs):
    """look_for: the loss starts high (70 to 110); at rank 2 < r* = 4 it levels off at about
    10 and the overlap with ΔW* stays about 0.1; at rank 4 the loss falls almost to 0, the
    accuracy jumps and the overlap is about 0.8."""
    small = train_lesson("planted")
    found = dataclasses.replace(small, rank=data.SHIFTS["planted-rank"].params["rank"])  # r*
    assert small.rank < found.rank == 4
    for low, high in zip(seeds(small), seeds(found), strict=True):
        low_run, high_run = runs(low), runs(high)
        cover_low = planted_report(low_run.base, low_run.model, low_run.task.planted)
        cover_high = planted_report(high_run.base, high_run.model, high_run.task.planted)
        overlaps = {
            "left": (cover_high.overlap_left, cover_low.overlap_left),
            "right": (cover_high.overlap_right, cover_low.overlap_right),
        }
        for side, (high, low_cover) in overlaps.items():
            assert high >= 0.6 and low_cover <= 0.3, (side, low.seed)
        loss_low, loss_high = (r.history[-1]["val_loss"] for r in (low_run, high_run))
        start = low_run.history[0]["val_loss"]  # the base model's
        assert 60 <= start <= 120 and 5 <= loss_low <= 20 and loss_high <= 0.5, (
            start,
            loss_low,
            loss_high,
        )
        assert high_run.test_acc_after - low_run.test_acc_after >= 0.08


def test_lesson_planted_exercise_is_reachable(runs):
    """The lesson's exercise (its goal, shown on the Train page and ranked on the Class page):
    missed at the preset's rank 2, met at rank r* = 4, on every seed (the runs above)."""
    goal = parse_goal(LESSONS["planted"].exercise)
    small = train_lesson("planted")
    found = dataclasses.replace(small, rank=data.SHIFTS["planted-rank"].params["rank"])
    for low, high in zip(seeds(small), seeds(found), strict=True):
        assert goal.check(runs(high)).met and not goal.check(runs(low)).met, low.seed


def units_firing(model: torch.nn.Module, images: torch.Tensor) -> float:
    """The share of the MLP's first-layer units that at least one of the images switches on."""
    with torch.no_grad():
        return (model.fc1(images.flatten(1)) > 0).any(0).float().mean().item()


# -- what the shift explanations claim -------------------------------------------------------------
def test_shift_invert(runs):
    """shifts.invert (and the README): the base model is confidently wrong (2 % accuracy); at
    the defaults LoRA's first large steps switch off almost every first-layer unit (after 10
    steps at most 15 % of fc1's units fire for any test image, measured 4 to 10 %, against 80 %
    in the base model) and it falls to chance or learns little, full fine-tuning reaches about
    65 %, the head or the biases alone do best, about 80 %."""
    base = RunConfig.from_dict(links.train_defaults() | {"shift": "invert"})
    head = accuracies(runs, dataclasses.replace(base, method="head"))
    lora = accuracies(runs, base)
    assert all(runs(c).test_acc_before <= 0.05 for c in seeds(base))
    images = data.load_task(shift="invert").x_test
    first_steps = [runs(dataclasses.replace(c, steps=10)) for c in seeds(base)]
    assert units_firing(first_steps[0].base, images) >= 0.7
    assert all(units_firing(run.model, images) <= 0.15 for run in first_steps)
    full = accuracies(runs, dataclasses.replace(base, method="full"))
    assert min(head) >= 0.75 and mean(lora) <= 0.40, (head, lora)
    assert mean(full) >= mean(lora) + 0.2 and mean(head) >= mean(full) + 0.05, (full, head)


def test_shift_rotate_more_rank_helps_more_as_the_angle_grows(runs):
    """shifts.rotate: a small rank already helps (rank 1 at the Train page's angle: about 38 %
    before, 86 % after), more rank helps more as the angle grows."""
    rank_1 = RunConfig.from_dict(links.train_defaults() | {"shift": "rotate", "rank": 1})
    assert all(runs(c).test_acc_after >= runs(c).test_acc_before + 0.3 for c in seeds(rank_1))

    def gain(angle: float) -> float:
        base = experiments.config(shift_params={"angle": angle})
        low = accuracies(runs, dataclasses.replace(base, rank=1))
        high = accuracies(runs, dataclasses.replace(base, rank=32))
        return mean(b - a for a, b in zip(low, high, strict=True))

    assert gain(90.0) >= gain(15.0) + 0.03


def test_shift_domain_a_small_rank_is_enough(runs):
    """shifts.domain: the features mostly still fit, so a small rank is enough."""
    base = experiments.config(shift="domain")
    small = accuracies(runs, dataclasses.replace(base, rank=4))
    large = accuracies(runs, dataclasses.replace(base, rank=32))
    assert mean(small) >= mean(large) - 0.02, (small, large)


def test_the_default_learning_rates_make_the_intruder_finding_show(runs):
    """Issue 11's done-when, as `train --shift rotate --steps 600 --method M --rank 4` then
    `spectra RUN --json` see it: with no learning rate given, LoRA r = 4 has more intruders
    than full fine-tuning for seeds 0, 1, 2 (measured 8 against 0), both accurate."""
    lora = RunConfig(shift="rotate", steps=600, method="lora", rank=4)
    for seed in SEEDS:
        with_lora = runs(dataclasses.replace(lora, seed=seed))
        with_full = runs(dataclasses.replace(lora, method="full", seed=seed))
        assert intruders(with_lora) >= intruders(with_full) + 4, seed
        assert with_full.test_acc_after >= 0.90 and with_lora.test_acc_after >= 0.85, seed


# -- what the Learn and Compare pages and the README claim -----------------------------------------
def test_learn_intro_the_default_update_is_low_rank_but_not_small(runs):
    """learn.intro: on this app's tiny models the change is about as strong as the weights
    themselves: in the Train page's default run ‖ΔW‖_F / ‖W₀‖_F is 0.5 to 2 in every adapted
    layer (measured 0.8 to 1.3), and fc1's strongest direction outdoes W₀'s (measured 2.3 to
    2.6 times), so the Spectra page says the update is not small."""
    for config in seeds(RunConfig.from_dict(links.train_defaults())):
        run = runs(config)
        report = layer_reports.model_report(run.base, run.model)
        assert all(0.5 <= layer.relative_norm_fro <= 2 for layer in report.values()), report
        assert report["fc1"].relative_norm_spectral >= 1, report


def test_learn_idea_rslora_makes_no_difference_here(runs):
    """learn.idea.scaling: on rotated or shuffled digits, in the Train page's 200 steps, rank 64
    does about as well as rank 8 with either scaling (α/r or rsLoRA's α/√r); measured within
    2 points."""
    for shift in ("rotate", "permute"):
        for scaling in ("standard", "rslora"):
            base = RunConfig.from_dict(links.train_defaults() | {"shift": shift})
            base = dataclasses.replace(base, scaling=scaling)
            r8, r64 = (accuracies(runs, dataclasses.replace(base, rank=r)) for r in (8, 64))
            assert abs(mean(r64) - mean(r8)) <= 0.04, (shift, scaling, r8, r64)


def test_compare_renamed_classes_score_near_zero_on_the_source_task(runs):
    """compare.forgetting_renamed: runs on renamed classes score near 0 on the source task
    (the same images under their old names), whatever the method, though the model before
    training scored 93 % there."""
    for config in compare_lesson("rank", shift="label-permute").values():
        for run in map(runs, seeds(config)):
            assert run.source_acc_before >= 0.9 and run.source_acc_after <= 0.05, config


def test_train_head_help_a_frozen_head_forgets_a_few_points_less_not_all_the_heads_share(runs):
    """train.train_head_help and the README: in the Train page's default run (LoRA r = 4 on
    rotated digits), keeping the head frozen makes LoRA forget a few points less of the source
    task (measured 38.3 against 44.2 of its 93 points, seeds 0–9) at the same target accuracy
    (89.5 against 89.2 %), far from all that the trained head accounts for (with the pretrained
    head put back, the trained runs lose 15.0: forgetting there is largely the head's): the
    adapters then do the head's work."""
    trained = RunConfig.from_dict(links.train_defaults())
    with_head = [runs(c) for c in seeds_of(trained)]
    without = [runs(c) for c in seeds_of(dataclasses.replace(trained, train_head=False))]
    source = source_split(trained.model, 10)
    lost, lost_frozen = (
        mean(r.source_acc_before - r.source_acc_after for r in done)
        for done in (with_head, without)
    )
    lost_head_back = mean(
        r.source_acc_before - source_accuracy(with_base_head(r.model, r.base), source)
        for r in with_head
    )
    assert lost - lost_head_back >= 0.20, (lost, lost_head_back)  # largely the head's: 29.2
    assert 0.03 <= lost - lost_frozen <= 0.12, (lost, lost_frozen)  # measured 5.9 points
    assert lost_frozen >= lost_head_back + 0.15, (lost_frozen, lost_head_back)  # measured 23.3
    target, target_frozen = (mean(r.test_acc_after for r in done) for done in (with_head, without))
    assert abs(target - target_frozen) <= 0.02, (target, target_frozen)


def test_readme_planted_row_every_layer_against_fc1_alone(runs):
    """README, below the rank table: adapting every Linear layer, rank 2 (below r* = 4) comes
    within a few points of rank 4; adapting fc1 alone (the lesson's layer), rank 2 stays far
    below rank 4 (measured 92.5 against 95.1 %, and 80.9 against 95.0 %)."""
    base = RunConfig.from_dict(links.train_defaults() | {"shift": "planted-rank"})

    def gap(targets: str) -> float:
        low, high = (
            accuracies(runs, dataclasses.replace(base, targets=targets, rank=rank))
            for rank in (2, 4)
        )
        return mean(high) - mean(low)

    assert gap("all-linear") <= 0.05 and gap("fc1") >= 0.08, (gap("all-linear"), gap("fc1"))


# -- the language model: its text tasks and its lesson ------------------------------------------
def text_seeds(config: RunConfig) -> list[RunConfig]:
    return [dataclasses.replace(config, seed=seed) for seed in TEXT_SEEDS]


def gpt_run(**changes) -> RunConfig:
    """A run on gpt as the Train page starts it (its own first run, config.for_model)."""
    return dataclasses.replace(for_model("gpt"), **changes)


def bits_fallen(runs: Runs, config: RunConfig) -> list[float]:
    """By how many bits per character the held-out target text fell, seed by seed."""
    return [runs(c).test_bpc_before - runs(c).test_bpc_after for c in text_seeds(config)]


def rank_gain(runs: Runs, shift: str, low: int = 1, high: int = 16) -> list[float]:
    """Bits per character that rank `high` saves over rank `low`, seed by seed, at the preset."""
    return [
        b - a
        for a, b in zip(
            bits_fallen(runs, gpt_run(shift=shift, rank=low)),
            bits_fallen(runs, gpt_run(shift=shift, rank=high)),
            strict=True,
        )
    ]


def test_shift_code_a_small_rank_learns_most_of_it(runs):
    """shifts.code: rank 1 already gets about nine tenths of what rank 16 gets (measured 90 %
    of the fall in bits), and the head alone most of it."""
    low, high = (bits_fallen(runs, gpt_run(rank=r)) for r in (1, 16))
    head = bits_fallen(runs, gpt_run(method="head"))
    assert all(a >= 0.8 * b for a, b in zip(low, high, strict=True)), (low, high)
    assert all(h >= 0.75 * b for h, b in zip(head, high, strict=True)), (head, high)


def test_shift_substitute_and_reverse_words_need_more_rank_than_code(runs):
    """shifts.substitute, shifts.reverse-words: rank 16 ends about a sixth of a bit per
    character lower than rank 1 (measured 0.17 and 0.16, 0.19 and 0.14 bits, seeds 0 and 1), on
    code less than a tenth (0.05 and 0.03)."""
    code = rank_gain(runs, "code")
    assert all(0 < g < 0.1 for g in code), code
    for shift in ("substitute", "reverse-words"):
        gain = rank_gain(runs, shift)
        assert all(0.1 <= g <= 0.3 for g in gain), (shift, gain)


def test_shift_planted_rank_on_gpt_rank_r_star_lines_up_better(runs):
    """shifts.planted-rank on the language model (ΔW* in its first Linear layer, W_q of the
    first block; an adapter on that layer only), in its short first run (100 steps of 8
    windows): at rank r* = 4 the loss ends lower than at rank 2 (measured 0.33 against 1.13, and
    seed 1, still far from done, 1.15 against 1.38) and the update lines up with ΔW* about 0.45
    to 0.7 (measured 0.44 to 0.71); at rank 2 about 0.3 (measured 0.30 to 0.34)."""
    r_star = data.SHIFTS["planted-rank"].params["rank"]
    layer = data.default_planted_layer(zoo.load("gpt", text.VOCAB_SIZE))
    assert layer == "blocks.0.attn.q"
    low = gpt_run(shift="planted-rank", targets=layer, rank=r_star // 2)
    for low_config, high_config in zip(
        text_seeds(low), text_seeds(dataclasses.replace(low, rank=r_star)), strict=True
    ):
        low_run, high_run = runs(low_config), runs(high_config)
        cover_low = planted_report(low_run.base, low_run.model, low_run.task.planted)
        cover_high = planted_report(high_run.base, high_run.model, high_run.task.planted)
        high = min(cover_high.overlap_left, cover_high.overlap_right)
        low = max(cover_low.overlap_left, cover_low.overlap_right)
        assert 0.4 <= high <= 0.8 and 0.2 <= low <= 0.4, (low_config.seed, high, low)
        loss_low, loss_high = (r.history[-1]["val_loss"] for r in (low_run, high_run))
        assert loss_high < loss_low, (loss_low, loss_high)


def looks_like_code(sample: str) -> tuple[bool, bool]:
    """(an indented line, a bracket) in a sample: what code has and prose hardly."""
    return "\n    " in sample, any(mark in sample for mark in "()[]{}")


def test_lesson_language_model(runs):
    """look_for: bits per character on code fall from about 2.9 to 2.3 while those on the
    pretraining prose rise from 1.6 to about 2.0 (what it forgot); the sample after "def "
    turns from English sentences toward code (indented lines and brackets appear); rank 1
    ends within 0.05 bits of rank 4."""
    lesson = train_lesson("language-model")
    assert (lesson.model, lesson.shift, lesson.rank) == ("gpt", "code", 4)
    rank_1 = dataclasses.replace(lesson, rank=1)
    for config in text_seeds(lesson):
        run = runs(config)
        assert 2.7 <= run.test_bpc_before <= 3.1 and 2.1 <= run.test_bpc_after <= 2.35, config
        assert 1.5 <= run.source_bpc_before <= 1.7 <= run.source_bpc_after <= 2.3, config
        before, after = run.history[0]["sample"], run.history[-1]["sample"]
        assert looks_like_code(before) == (False, False), before
        assert looks_like_code(after) == (True, True), after
        other = runs(dataclasses.replace(rank_1, seed=config.seed))
        assert abs(other.test_bpc_after - run.test_bpc_after) <= 0.05, config.seed


# -- experiments ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def findings(runs) -> Callable[[str], experiments.Finding]:
    done: dict[str, experiments.Finding] = {}

    def finding(name: str) -> experiments.Finding:
        if name not in done:
            done[name] = experiments.run(name, trainer=runs)
        return done[name]

    return finding


def test_every_experiment_has_a_claim_test_here():
    checked = {"rank-effect", "subspace-similarity", "amplification", "intruders", "forgetting"}
    checked |= {"gpt-weight-types", "gpt-rank", "gpt-subspace-similarity", "gpt-amplification"}
    assert set(experiments.EXPERIMENTS) == checked


def test_experiment_rank_effect(findings):
    assert findings("rank-effect").outcome == "holds here"


def test_experiment_subspace_similarity(findings):
    finding = findings("subspace-similarity")
    assert finding.outcome == "partly reproduced"
    other_seed = [row for row in finding.rows if row["pair"] == "other seed"]
    assert min(row["ratio"] for row in other_seed) >= 3  # margin over the 2× threshold
    assert max(row["φ(1,1)"] for row in other_seed) <= 0.4  # margin under the paper's 0.5


def test_experiment_amplification(findings):
    assert findings("amplification").outcome == "reproduced"


def test_experiment_intruders(findings):
    assert findings("intruders").outcome == "reproduced"


def test_experiment_forgetting(findings):
    finding = findings("forgetting")
    assert finding.outcome == "not reproduced"
    for shift in experiments.FORGETTING_SHIFTS:
        assert experiments._gap(finding.rows, shift, "source acc") <= -0.10, shift


def test_matched_gap_compares_at_the_same_target_accuracy():
    full = [(0.80, 0.70), (0.90, 0.60)]
    assert experiments.matched_gap([(0.85, 0.75)], full) == pytest.approx(0.10)
    assert experiments.matched_gap([(0.85, 0.55), (0.90, 0.50)], full) == pytest.approx(-0.10)
    assert experiments.matched_gap([(0.95, 0.90), (0.70, 0.90)], full) is None  # never meet


def test_experiment_gpt_weight_types(findings):
    finding = findings("gpt-weight-types")
    assert finding.outcome == "reproduced"
    bits = {row["weights"]: row["mean bpc"] for row in finding.rows}
    assert len({row["trainable"] for row in finding.rows}) == 1  # one budget
    assert bits["W_q"] >= bits["W_q, W_v"] + 0.5  # a margin: measured 1.09 bits


def test_experiment_gpt_rank(findings):
    """Not reproduced on reversed words: r = 1 ends about half a bit above r = 64 (the README
    says why: a task far from the prose, where the paper expects more rank to be needed)."""
    finding = findings("gpt-rank")
    assert finding.outcome == "not reproduced"
    bits = {row["r"]: row["mean bpc"] for row in finding.rows}
    assert bits[1] >= bits[64] + 0.3  # measured 0.54


def test_experiment_gpt_subspace_similarity(findings):
    assert findings("gpt-subspace-similarity").outcome == "partly reproduced"


def test_experiment_gpt_amplification(findings):
    assert findings("gpt-amplification").outcome == "reproduced"
