"""The training loop: adapt a copy of a pretrained model to a task, and say what happens.

Read top to bottom: what a run reports, how a run is built (device, task, models, optimizer),
the loop, and how a model is evaluated. The settings themselves (RunConfig, their choices and
checks) live in core/common/config.py.

`train(config)` loads the base model and the task, measures the base model first, then trains
the parameters the method chooses and reports as it goes through `on_event`:

    Event("start", 0, {...})       steps planned, parameter counts, classes
    Event("step", s, record)       one per step (step 0 = the base model before training):
                                   train_loss, elapsed, steps_per_s, and at eval steps
                                   val_loss and val_acc too (a text task: val_bpc, and the
                                   text the model writes from its prompt, sample)
    Event("eval", s, {...})        val_loss, val_acc, elapsed: every eval_interval steps
    Event("snapshot", s, {...})    the top singular values of each layer's delta_W
    Event("done", s, summary)      status, reason, test accuracy before and after, parameters,
                                   seconds, the learning rate used, the accuracy on the source task
                                   before and after (what the run forgot; None where the base
                                   model was not pretrained on it)

The same config and seed give the same numbers, bit for bit, on one machine's CPU with the
same number of torch threads (the order of a sum changes its last bits, and threads split sums).
GPU runs ask for deterministic kernels but are not guaranteed bit-exact. A run leaves the
caller's torch state as it found it: the global random generators and the
deterministic-algorithms setting are restored when train() returns.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.common.config import RENAMES_CLASSES, RunConfig, SettingError
from core.lowrank import lora, methods
from core.lowrank.snapshot import model_snapshot
from core.lowrank.svd import weights_key
from core.lowrank.targets import check_targets, head_name
from core.store.outcome import RunOutcome, Step
from core.training import data, gpt, text, zoo
from core.training.kinds import DataKind

SNAPSHOT_TOP = 16  # singular values recorded per layer at each snapshot
EVAL_BATCH = 1024  # evaluation runs in chunks of this many images to bound memory


# -- what a run reports ----------------------------------------------------------------------------
class StopFlag(Protocol):
    """What `train` polls to stop early: a threading.Event, or a multiprocessing one."""

    def is_set(self) -> bool: ...


@dataclass
class Event:
    """Something that happened during training; `data` holds plain JSON values."""

    kind: str  # "start" | "step" | "eval" | "snapshot" | "done"
    step: int
    data: dict[str, Any]


@dataclass(kw_only=True)
class RunResult(RunOutcome):
    """How a run ended and what it measured (its RunOutcome: test_acc_after is None when the
    run failed, source_acc_* where there is no source task), what it logged, and the models
    (the trained one and its base)."""

    config: RunConfig
    history: list[dict]  # one record per step, step 0 = the base model
    snapshots: list[dict]  # [{"step": s, "layers": {layer: {"sigma": [...], ...}}}]
    model: nn.Module
    base: nn.Module
    task: data.Task

    @property
    def steps_done(self) -> int:
        return self.history[-1]["step"]

    def summary(self) -> dict[str, Any]:
        """The outcome as plain JSON values, with the steps done and the learning rate used
        (no models, no history)."""
        return {**self.as_json(), "steps": self.steps_done, "lr": self.config.learning_rate}


# -- building a run --------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """`auto` takes a GPU when there is one (CUDA, then Apple's MPS), else the CPU."""
    available = {"cpu": True, "cuda": torch.cuda.is_available()}
    available["mps"] = torch.backends.mps.is_available()
    if device != "auto":
        if not available[device]:
            raise ValueError(f"device {device!r} is not available on this machine; use auto")
        return torch.device(device)
    if available["cuda"]:
        return torch.device("cuda")
    if available["mps"]:
        return torch.device("mps")
    return torch.device("cpu")


def load_task(config: RunConfig) -> data.Task:
    """The task a config names, built the same way for training and for measuring an imported
    adapter (a planted-rank task needs the base model, whose update makes its labels: with
    its own head over the dataset's classes, 97 characters for text, not a new one)."""
    classes = data.DATASETS[config.dataset].num_classes
    planted = config.shift == "planted-rank"
    return data.load_task(
        config.dataset,
        config.shift,
        config.shift_params,
        seed=config.seed,
        base_model=zoo.load(config.model, classes) if planted else None,
    )


def source_split(model_name: str, num_classes: int) -> data.Split | None:
    """The test split of the task the zoo model was pretrained on
    (data.source_task), or None where that question has no answer here: a model pretrained on
    ImageNet, or a run whose classes are not the source task's ten digits (its head answers
    another question)."""
    entry = zoo.ZOO[model_name]
    if entry.pretraining is None:
        return None
    task = data.source_task(entry.source)
    if task.num_classes != num_classes:
        return None
    return task.split("test")


def source_evaluation(model: nn.Module, source: data.Split | None) -> Evaluation | None:
    """The model measured on the source split (source_split), None where there is none."""
    if source is None:
        return None
    return evaluate(model, source.to(next(model.parameters()).device))


def source_accuracy(model: nn.Module, source: data.Split | None) -> float | None:
    """The model's accuracy on the source split (source_split), None where there is none."""
    measured = source_evaluation(model, source)
    return None if measured is None else measured.acc


def with_base_head(model: nn.Module, base: nn.Module) -> nn.Module:
    """A copy of `model` with the base model's head put back: what its body alone kept."""
    copied = copy.deepcopy(model)
    head = head_name(base)
    copied.get_submodule(head).load_state_dict(base.get_submodule(head).state_dict())
    return copied


FORGETTING_NOTABLE = 0.01  # source accuracy lost: less than a point is not worth a sentence


@dataclass(frozen=True)
class Forgetting:
    """What a run forgot of its source task, and how much of that is its head's: the source
    accuracy of the base model, of the trained model, and of the trained model with the
    pretrained head put back (equal to `after` where the head did not train)."""

    method: str
    head_trained: bool
    renamed: bool  # the task renames the classes (config.RENAMES_CLASSES): no forgetting at all
    learning_rate: float
    before: float
    after: float
    head_back: float

    @property
    def lost(self) -> float:
        return self.before - self.after

    @property
    def head_part(self) -> float:
        """The share of `lost` that putting the pretrained head back would win back."""
        return self.head_back - self.after

    def note(self) -> tuple[str, dict[str, float]] | None:
        """The sentence that says where the forgetting comes from (a catalog key under
        "forgetting." and its values: points lost, the head's points, accuracies), or None when
        the run forgot less than FORGETTING_NOTABLE."""
        if self.lost < FORGETTING_NOTABLE:
            return None
        values = {"lost": 100 * self.lost, "head": 100 * self.head_part, "back": self.head_back}
        values["lr"] = self.learning_rate
        if self.renamed:  # the old names of the same images: a low score is by design
            return "forgetting.renamed", values
        if self.method == "head":
            return "forgetting.head_only", values
        if not self.head_trained:
            return "forgetting.head_frozen", values
        if self.head_part < FORGETTING_NOTABLE:  # the head's read-out is not what was lost
            return "forgetting.head_not_it", values
        return "forgetting.head_trained", values


def forgetting(
    config: RunConfig, base: nn.Module, model: nn.Module, num_classes: int
) -> Forgetting | None:
    """What the trained `model` forgot of the source task (source_split) and how much of it
    putting `base`'s head back undoes; None where there is no source task (an ImageNet model,
    other classes)."""
    source = source_split(config.model, num_classes)
    if source is None:
        return None
    trained = head_trains(config)
    after = source_accuracy(model, source)
    return Forgetting(
        method=config.method,
        head_trained=trained,
        renamed=config.shift in RENAMES_CLASSES,
        learning_rate=config.learning_rate,
        before=source_accuracy(base, source),
        after=after,
        head_back=source_accuracy(with_base_head(model, base), source) if trained else after,
    )


def build_models(config: RunConfig, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(base, model): a fresh base model and the copy that will train, its parameters chosen.
    The head trains unless head_trains(config) says it stays frozen (check_head: it must be a
    pretrained one).

    Deterministic (the adapters' initialisation is seeded with config.seed, a new head by the
    zoo), so the runs store rebuilds a saved run's model with this same function.
    """
    base = zoo.load(config.model, num_classes=num_classes)  # ValueError for an unknown model
    check_head(config)
    if config.method == "lora":
        model = lora.inject(
            base,
            check_targets(base, config.targets, config.rank),
            rank=config.rank,
            alpha=config.alpha,
            dropout=config.dropout,
            init=config.init,
            scaling=config.scaling,
            dora=config.dora,
            seed=config.seed,
        )
    else:
        model = copy.deepcopy(base)
    methods.trainable_parameters(model, config.method, config.top_k, head_trains(config))
    return base, model


def head_trains(config: RunConfig) -> bool:
    """Whether the run trains its head: head-only training always does; the others unless
    the config keeps the pretrained head frozen (train_head false) or the task reads out through
    the base model's own head (data.ShiftInfo.keeps_head)."""
    if config.method == "head":
        return True
    return config.train_head and not data.SHIFTS[config.shift].keeps_head


def check_head(config: RunConfig) -> None:
    """A frozen head must be a pretrained read-out of the task's classes: an ImageNet model's
    head is new (random) for these ten classes, so it must train (SettingError). Renamed classes
    are refused by config.validate already."""
    if not config.train_head and zoo.ZOO[config.model].pretraining is None:
        raise SettingError(
            f"model {config.model}'s head is new (its pretraining had ImageNet's classes), so "
            "it must train (train_head true)",
            "errors.frozen_head_new",
            {"model": config.model},
        )


def check_config(config: RunConfig, model: nn.Module) -> None:
    """config.validate(), the head (check_head), the shift's parameters, then what depends on
    the base model: for LoRA, the target layers must exist and the rank must not exceed
    min(d, k) of any of them (ValueError, one line)."""
    config.validate()
    check_head(config)
    data.check_request(config.dataset, config.shift, config.shift_params)
    if config.method == "lora":
        check_targets(model, config.targets, config.rank)


def parameter_count(config: RunConfig) -> methods.ParamCount:
    """Trainable, total and head parameters of a config's model, as training will build it,
    counted from its layers' shapes (zoo.architecture, methods.planned_count): no weights load
    and nothing is copied or adapted, so a page may ask on every redraw. ValueError for what
    the model rejects (rank above a layer's min(d, k), unknown layer)."""
    check_head(config)
    base = zoo.architecture(config.model, data.DATASETS[config.dataset].num_classes)
    targets = check_targets(base, config.targets, config.rank) if config.method == "lora" else []
    return methods.planned_count(
        base, config.method, config.top_k, head_trains(config), targets, config.rank, config.dora
    )


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters, at config.learning_rate (the method's own
    rate unless the config sets one). LoRA+ (arXiv 2402.12354) gives B its own parameter group
    with ratio × the learning rate of everything else."""
    lr = config.learning_rate
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    B_names = {f"{name}.B" for name in lora.adapted_layers(model)}
    groups = [
        {"params": [p for n, p in trainable if n not in B_names], "lr": lr},
        {"params": [p for n, p in trainable if n in B_names], "lr": lr * config.lora_plus_ratio},
    ]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=lr, weight_decay=config.weight_decay)


# -- the loop --------------------------------------------------------------------------------------
def train(
    config: RunConfig,
    on_event: Callable[[Event], None] | None = None,
    stop: StopFlag | None = None,
) -> RunResult:
    """Train one run; see the module docstring for the events. Stops early on `stop`
    (status "stopped") or a non-finite loss (status "failed"); both keep the history."""
    config.validate()
    log = _Log(
        on_event or (lambda event: None),
        started=time.perf_counter(),
        kind=data.kind_of(config.dataset),
    )
    device = resolve_device(config.device)
    with _run_scope(device):
        return _train(config, device, log, stop)


@contextlib.contextmanager
def _run_scope(device: torch.device) -> Iterator[None]:
    """What a run changes in torch's global state is undone when it ends: the random
    generators (the CPU's, and the run's GPU's if it has one) and the deterministic-algorithms
    setting."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    gpus = []  # no CUDA device is touched (or initialised) for a CPU run
    if device.type == "cuda":
        gpus = [device.index if device.index is not None else torch.cuda.current_device()]
    mps_state = torch.mps.get_rng_state() if device.type == "mps" else None
    with torch.random.fork_rng(devices=gpus, device_type="cuda"):
        # On the CPU every op used here is deterministic already. On a GPU this asks for
        # deterministic kernels where torch has them (an op without one only warns), but GPU
        # runs are not guaranteed bit-exact: cuBLAS would also need CUBLAS_WORKSPACE_CONFIG
        # set before CUDA starts, and kernels differ between GPUs and library versions.
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            if mps_state is not None:
                torch.mps.set_rng_state(mps_state)


def _seed(seed: int, device: torch.device) -> None:
    """Seed the global generator the run's dropout draws from, and no other: torch.manual_seed
    would also (lazily) reseed every GPU, outside what _run_scope restores."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


def _train(config: RunConfig, device: torch.device, log: _Log, stop: StopFlag | None) -> RunResult:
    task = load_task(config)
    base, model = build_models(config, task.num_classes)
    model.to(device)
    log.sampler = sampler(task, device)
    training, val, test = (task.split(name).to(device) for name in ("train", "val", "test"))
    source = source_split(config.model, task.num_classes)
    count = methods.count_parameters(model)
    steps = planned_steps(config, len(task.y_train))
    start = {"steps": steps, "trainable_params": count.trainable, "total_params": count.total}
    log.emit(Event("start", 0, start | {"num_classes": task.num_classes}))
    measured = base_measures(base, task, source, device, log.sampler)
    log.record(0, None, measured.val, measured.sample)
    before, source_before = measured.test, measured.source
    _fit(config, base, model, training, val, steps, log, stop)
    # A diverged run: its loss became inf or nan (checked before that step's update, so the
    # weights are those of the step before, which may or may not be finite): nothing to test.
    failed = log.status == "failed"
    after = None if failed else evaluate(model, test)
    source_after = None if failed else source_evaluation(model, source)
    result = RunResult(
        config=config,
        status=log.status,
        reason=log.reason,
        history=log.history,
        snapshots=log.snapshots,
        **scores(log.kind, "test", before, after),
        **scores(log.kind, "source", source_before, source_after),
        trainable_params=count.trainable,
        total_params=count.total,
        num_classes=task.num_classes,
        seconds=time.perf_counter() - log.started,
        model=model.cpu().eval(),
        base=base,
        task=task,
    )
    log.emit(Event("done", result.steps_done, result.summary()))
    return result


@dataclass(frozen=True)
class BaseMeasures:
    """The base model on a task, before any training: step 0 of every run's curve (its
    validation score and sample) and the "before" of its test and source scores. Every method
    starts from a model that computes what the base computes (B = 0; PiSSA's residual plus its
    principal part; DoRA's magnitudes the base's own norms), so step 0 is the base's."""

    val: Evaluation
    sample: str | None
    test: Evaluation
    source: Evaluation | None


BASE_MEASURES_KEPT = 64  # tasks whose base measures a process keeps (a few floats each)
_base_measures: OrderedDict[tuple, BaseMeasures] = OrderedDict()
_base_measures_lock = threading.Lock()


def base_measures(
    base: nn.Module,
    task: data.Task,
    source: data.Split | None,
    device: torch.device,
    sampler: Sampler | None,
) -> BaseMeasures:
    """The base model measured on the task (BaseMeasures), once per process for each base
    model and task: a class whose students all train on one task pays for it once, not once a
    run (on gpt, a tenth of a run's time). Kept by the content of the base's weights, the task
    (dataset, shift and its parameters), the device and the torch threads, so a cached measure
    is the very number a fresh one would be."""
    key = (
        tuple(weights_key(tensor) for tensor in base.state_dict().values()),
        task.dataset,
        task.shift,
        json.dumps(task.shift_params, sort_keys=True, default=str),
        str(device),
        torch.get_num_threads(),
    )
    with _base_measures_lock:
        measured = _base_measures.get(key)
    if measured is None:
        measured = _measure_base(base, task, source, device, sampler)
    with _base_measures_lock:  # the least recently used leave first
        _base_measures[key] = measured
        _base_measures.move_to_end(key)
        while len(_base_measures) > BASE_MEASURES_KEPT:
            _base_measures.popitem(last=False)
    return measured


def _measure_base(
    base: nn.Module,
    task: data.Task,
    source: data.Split | None,
    device: torch.device,
    sampler: Sampler | None,
) -> BaseMeasures:
    measured = base if device.type == "cpu" else copy.deepcopy(base).to(device)
    return BaseMeasures(
        val=evaluate(measured, task.split("val").to(device)),
        sample=None if sampler is None else sampler(measured),
        test=evaluate(measured, task.split("test").to(device)),
        source=source_evaluation(measured, source),
    )


def scores(
    kind: DataKind, split: str, before: Evaluation | None, after: Evaluation | None
) -> dict[str, float | None]:
    """A run's outcome fields for one split ("test" or "source"): each of the kind's metrics
    before and after, {"test_acc_before": 0.38, "test_acc_after": 0.9}; None where not
    measured."""
    return {
        f"{split}_{metric.field}_{when}": None if measured is None else measured[metric.field]
        for metric in kind.metrics
        for when, measured in (("before", before), ("after", after))
    }


def _fit(
    config: RunConfig,
    base: nn.Module,
    model: nn.Module,
    training: data.Split,
    val: data.Split,
    steps: int,
    log: _Log,
    stop: StopFlag | None,
) -> None:
    """The training steps. The data is already in memory as tensors, so a batch is one
    indexing operation: no DataLoader, no worker processes, nothing between the steps."""
    _seed(config.seed, training.x.device)  # the dropout masks
    optimizer = make_optimizer(model, config)
    x, y, z = training.x, training.y, training.z
    order = batches(len(y), config.batch_size, torch.Generator().manual_seed(config.seed))
    train_mode(model)
    log.training_started = time.perf_counter()
    for step in range(1, steps + 1):
        if stop is not None and stop.is_set():
            log.end("stopped", f"stopped at step {step - 1} of {steps}")
            return
        batch = next(order)
        loss = task_loss(model(x[batch]), y[batch], None if z is None else z[batch])
        if not torch.isfinite(loss):
            log.end("failed", diverged(f"the training loss became {loss.item()}", step, config))
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        evaluation, sample = None, None
        if step % config.eval_interval == 0 or step == steps:
            evaluation, sample = evaluate(model, val), log.sample(model)
            train_mode(model)
        log.record(step, loss.item(), evaluation, sample)
        if step % config.snapshot_interval == 0 or step == steps:
            if not _finite(model):  # no spectrum of inf, and no such weights saved
                log.end("failed", diverged("the weights became inf or nan", step, config))
                return
            log.snapshot(step, snapshot(base, model))


def task_loss(logits: Tensor, y: Tensor, z: Tensor | None, reduction: str = "mean") -> Tensor:
    """What training minimises: the cross-entropy with the labels y, or, on a task that gives
    a teacher's logits z (planted-rank), their mean squared error (per logit). Logits of any
    shape (n, classes) or, for text, (n, t, characters): every position is one prediction."""
    if z is None:
        return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction=reduction)
    return F.mse_loss(logits, z, reduction=reduction)


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches forever: a fresh seeded shuffle each epoch, the last batch may be short."""
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def planned_steps(config: RunConfig, n_train: int) -> int:
    return config.steps or config.epochs * math.ceil(n_train / config.batch_size)


def train_mode(model: nn.Module) -> None:
    """Training mode (dropout on), except BatchNorm: it keeps the pretrained statistics, which
    small batches of a shifted task would otherwise overwrite in the 'frozen' base."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def step_record(
    kind: DataKind,
    step: int,
    train_loss: float | None,
    evaluation: Evaluation | None,
    elapsed: float,
    steps_per_s: float,
    sample: str | None = None,
) -> dict:
    """One step of a run's history as the store keeps it (core.store.outcome.Step): the kind's
    metrics on the validation split at an evaluation (val_acc; val_bpc too on text), else
    None."""
    measured = {f"val_{metric.field}": None for metric in kind.metrics}
    if evaluation is not None:
        measured = {name: evaluation[name.removeprefix("val_")] for name in measured}
    val_loss = None if evaluation is None else evaluation.loss
    return Step(
        step,
        train_loss,
        val_loss,
        elapsed=elapsed,
        steps_per_s=steps_per_s,
        sample=sample,
        **measured,
    ).as_json()


Sampler = Callable[[nn.Module], str]


def sampler(task: data.Task, device: torch.device) -> Sampler | None:
    """For a text task: what the model writes from the task's prompt (text.prompt_for), drawn
    with a fixed seed so that the same weights always write the same sample, and a class sees
    the same text for the same run. None for an image task."""
    if data.kind_of(task.dataset).name != "text":
        return None
    prompt = text.prompt_for(task.shift, task.shift_params)
    return lambda model: write(model, prompt, device)


def write(model: nn.Module, prompt: str, device: torch.device | None = None) -> str:
    """What a language model writes after `prompt`: text.SAMPLE_LENGTH characters drawn with
    the fixed text.SAMPLE_SEED, so the same weights and prompt always give the same text (a
    run's samples, a student's own prompt). A character outside the alphabet is read as
    text.UNKNOWN (a page names such characters: text.unknown_characters)."""
    device = device or next(model.parameters()).device
    ids = text.encode(prompt).to(device)
    generator = torch.Generator(device).manual_seed(text.SAMPLE_SEED)
    written = gpt.generate(model, ids, text.SAMPLE_LENGTH, generator, text.SAMPLE_TEMPERATURE)
    return text.decode(written[len(ids) :])


@dataclass
class _Log:
    """The run's history and snapshots, announced as they are written."""

    emit: Callable[[Event], None]
    started: float  # when train() was called
    kind: DataKind  # what the task's metrics are
    sampler: Sampler | None = None  # a text task's: what the model writes, at each evaluation
    training_started: float = 0.0  # when the first step began
    history: list[dict] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)
    status: str = "finished"
    reason: str = ""

    def sample(self, model: nn.Module) -> str | None:
        return None if self.sampler is None else self.sampler(model)

    def record(
        self,
        step: int,
        train_loss: float | None,
        evaluation: Evaluation | None,
        sample: str | None = None,
    ) -> None:
        """One history record (val_* only at eval steps), as a "step" event and an "eval"."""
        now = time.perf_counter()
        speed = step / (now - self.training_started) if step else 0.0
        record = step_record(
            self.kind, step, train_loss, evaluation, now - self.started, speed, sample
        )
        self.history.append(record)
        if evaluation is not None:
            measured = {k: v for k, v in record.items() if k.startswith("val_")}
            self.emit(Event("eval", step, {**measured, "elapsed": record["elapsed"]}))
        self.emit(Event("step", step, record))

    def snapshot(self, step: int, layers: dict) -> None:
        self.snapshots.append({"step": step, "layers": layers})
        self.emit(Event("snapshot", step, self.snapshots[-1]))

    def end(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


def _finite(model: nn.Module) -> bool:
    return all(bool(p.isfinite().all()) for p in model.parameters() if p.requires_grad)


# Past these, a factor of a step's size is unusual enough to be named when a run diverges.
UNUSUAL_LR = 1.0  # the default is 0.01
UNUSUAL_SCALING = 100.0  # alpha / r: the default is 8 / 4 = 2
UNUSUAL_LORA_PLUS_RATIO = 100.0  # the LoRA+ paper's is 16
UNUSUAL_DECAY = 1.0  # lr × weight_decay: past 1, each step's decay overshoots zero


def diverged(what: str, step: int, config: RunConfig) -> str:
    """Why a run diverged, for the student: every setting that makes its steps unusually large
    (the learning rate, LoRA's scaling, LoRA+'s ratio, the weight decay), or else the learning
    rate, the usual culprit."""
    suspects = []
    if config.learning_rate > UNUSUAL_LR:
        suspects.append(f"the learning rate ({config.learning_rate:g})")
    if config.method == "lora":
        s = lora.scale(config.alpha, config.rank, config.scaling)
        if s > UNUSUAL_SCALING:
            over = "√r" if config.scaling == "rslora" else "r"
            suspects.append(f"alpha ({config.alpha:g}: the scaling alpha/{over} is {s:g})")
        if config.lora_plus_ratio > UNUSUAL_LORA_PLUS_RATIO:
            suspects.append(f"the LoRA+ ratio ({config.lora_plus_ratio:g})")
    decay = config.learning_rate * config.weight_decay
    if decay > UNUSUAL_DECAY:
        suspects.append(f"the weight decay ({config.weight_decay:g}, × lr = {decay:g})")
    if not suspects:
        suspects.append(f"the learning rate ({config.learning_rate:g})")
    return f"{what} at step {step}: {' or '.join(suspects)} is probably too high; try a smaller one"


# -- evaluating ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """A model measured on one split: its task loss (the cross-entropy, or with a teacher's
    logits their squared error), its accuracy (classes, or next characters) and its
    cross-entropy with the labels in bits per label (bits per character on text)."""

    loss: float
    acc: float
    bpc: float

    def __getitem__(self, name: str) -> float:
        """A metric by its field name (core.training.kinds.Metric.field): "acc", "bpc"."""
        return getattr(self, name)


@torch.no_grad()
def evaluate(model: nn.Module, split: data.Split) -> Evaluation:
    """The model measured over a whole split, in eval mode, in chunks of EVAL_BATCH."""
    model.eval()
    loss, cross_entropy, correct = 0.0, 0.0, 0
    for start in range(0, len(split.y), EVAL_BATCH):
        part = slice(start, start + EVAL_BATCH)
        logits, y = model(split.x[part]), split.y[part]
        z = None if split.z is None else split.z[part]
        loss += task_loss(logits, y, z, "sum").item()
        cross_entropy += task_loss(logits, y, None, "sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
    labels = split.y.numel()
    per_item = labels if split.z is None else split.z.numel()  # the MSE: a mean per logit
    bits = text.bits_per_character(cross_entropy / labels)
    return Evaluation(loss / per_item, correct / labels, bits)


def snapshot(base: nn.Module, model: nn.Module) -> dict:
    """Top singular values of every changed layer's delta_W (cheap for LoRA: no d×k SVD)."""
    return model_snapshot(base, model, n=SNAPSHOT_TOP)
