"""A run's settings: RunConfig, the values each setting may take, and reading them from text.

Settings arrive as strings from the command line and from a shared link (a URL's query), as
JSON from the run store, and as Python values from code; all of them go through `parse`, so a
setting reads the same wherever it comes from, and `to_text` writes the spelling `parse` reads.
`RunConfig.validate` checks what needs no model. What depends on the base model (do the target
layers exist? is the rank ≤ min(d, k) of each?) is checked where the model is built:
core.training.train.check_config.

The names of the models, datasets, shifts, methods, inits and scalings are declared here, and
nowhere else as a list: core.lowrank.methods and core.lowrank.lora use these tuples;
core.training.zoo.ZOO and core.training.data.DATASETS / SHIFTS hold an entry for each name, in this
order (tests/common/test_config.py checks it). This module imports nothing of torch (nor any module
that does), so the command line's --help, which lists every choice, starts in a fraction of a
second: torch alone takes about one to import.
"""

from __future__ import annotations

import copy
import json
import math
import reprlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, get_args, get_origin, get_type_hints

MODELS = (
    "mlp",
    "cnn",
    "vit",
    "gpt",
    "resnet18",
    "mobilenet_v3_small",
)  # core.training.zoo: built-in first
# core.training.data
DATASETS = ("mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10", "prose")
SHIFTS = (
    "none",
    "rotate",
    "invert",
    "permute",
    "label-permute",
    "domain",
    "code",
    "substitute",
    "reverse-words",
    "planted-rank",
)
# What each model reads and each dataset holds (core.training.kinds): images unless listed
# here. A run's model and dataset are of one kind, and its shift is one made for that kind.
TEXT_MODELS = ("gpt",)
TEXT_DATASETS = ("prose",)
SHIFT_KINDS = {  # the kinds of data each shift changes; every other shift changes any kind
    "rotate": ("images",),
    "invert": ("images",),
    "permute": ("images",),
    "label-permute": ("images",),
    "domain": ("images",),
    "code": ("text",),
    "substitute": ("text",),
    "reverse-words": ("text",),
}
METHODS = (
    "full",
    "head",
    "top-k",
    "bitfit",
    "lora",
)  # core.lowrank.methods: which parameters train
INITS = ("default", "gaussian", "pissa")  # core.lowrank.lora: how A and B start
SCALINGS = ("standard", "rslora")  # core.lowrank.lora: s = alpha / r, or alpha / sqrt(r)
OPTIMIZERS = ("adamw", "adam", "sgd")
# Shifts whose classes are not the source task's (core.training.data): the pretrained head cannot
# read them out, so it cannot stay frozen (RunConfig.train_head).
RENAMES_CLASSES = ("label-permute",)
DEVICES = ("auto", "cpu", "cuda", "mps")

DEFAULT_MODEL = "mlp"
DEFAULT_DATASET = "mnist-5k"

MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt": {
        "dataset": "prose",
        "shift": "code",
        "targets": "blocks.*.attn.q,blocks.*.attn.v",
        "batch_size": 8,
        "steps": 100,
        "eval_interval": 25,
        "snapshot_interval": 25,
    },
}
"""A model's own starting settings where the defaults of RunConfig (made for the digit models)
do not fit it: a language model reads text, and its first run on one core must end in seconds
(the LoRA paper's choice of targets, W_q and W_v; 100 steps of 8 windows of 64 characters,
measured and sampled every 25: about 4.5 s of one core in all, so that a class of ten shares a
2-core server within a minute)"""


def kind_of_model(model: str) -> str:
    """What a zoo model reads: "text" or "images"."""
    return "text" if model in TEXT_MODELS else "images"


def kind_of_dataset(dataset: str) -> str:
    """What a dataset holds: "text" or "images"."""
    return "text" if dataset in TEXT_DATASETS else "images"


def shifts_for(kind: str) -> list[str]:
    """The shifts made for a kind of data, in SHIFTS' order."""
    return [shift for shift in SHIFTS if kind in SHIFT_KINDS.get(shift, (kind,))]


DEFAULT_LR = {"full": 1e-3, "head": 1e-2, "top-k": 1e-3, "bitfit": 1e-2, "lora": 1e-2}
"""Each method's learning rate when a run does not set one (RunConfig.learning_rate).

Practitioners train the whole network (or its top blocks) about ten times slower than an
adapter or a probe: the LoRA paper's GPT-2/RoBERTa runs use 1e-4 to 5e-4 for LoRA against
1e-5 to 5e-5 for full fine-tuning, BitFit's 1e-4 to 1e-3 against 2e-5. Measured on the
shipped mlp (rotate, 200 steps; issue 11): full fine-tuning at 1e-3 is within 2 points of its
best rate and grows no intruder dimensions, while at LoRA's 1e-2 it grows more than LoRA
does; LoRA, the head and BitFit are best at 3e-3 to 1e-2.
"""


class SettingError(ValueError):
    """A setting refused. Its text is the command line's one line (English); a page says it in
    the student's language from `key`, a catalog entry (core/i18n), and its `values`."""

    def __init__(self, line: str, key: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(line)
        self.key, self.values = key, dict(values or {})

    def __reduce__(self) -> tuple:
        """All its parts through pickle (a Ray actor raises it to an app server)."""
        return SettingError, (str(self), self.key, self.values)


def _help(text: str) -> dict:
    """Field metadata: the help text the command line (and the app) show for a setting."""
    return {"help": text}


@dataclass
class RunConfig:
    """Everything a run depends on. Two runs with equal configs compute the same numbers."""

    model: str = field(default=DEFAULT_MODEL, metadata=_help("base model from the zoo"))
    dataset: str = field(default=DEFAULT_DATASET, metadata=_help("dataset to adapt to"))
    # The default task is one the base model cannot do yet (rotated digits: 93 % → 38 %), so a
    # first run, in the app or on the command line, has something to learn.
    shift: str = field(default="rotate", metadata=_help("how the task differs"))
    shift_params: dict = field(
        default_factory=dict, metadata=_help('shift parameters as JSON, e.g. {"angle": 30}')
    )
    method: str = field(default="lora", metadata=_help("which parameters train"))
    rank: int = field(default=4, metadata=_help("LoRA rank r"))
    alpha: float = field(default=8.0, metadata=_help("LoRA alpha; scaling = alpha / r"))
    targets: list[str] | str = field(
        default="all-linear",
        metadata=_help('layers to adapt: "all-linear" or comma-separated names/globs'),
    )
    init: str = field(default="default", metadata=_help("how A and B start"))
    scaling: str = field(
        default="standard", metadata=_help("standard (alpha/r) or rslora (alpha/sqrt r)")
    )
    dora: bool = field(default=False, metadata=_help("DoRA: train a magnitude per unit too"))
    dropout: float = field(default=0.0, metadata=_help("dropout on the adapter's input"))
    top_k: int = field(default=1, metadata=_help("blocks that train for method top-k"))
    # The pretrained head (the output layer) trains in full in every method unless this is
    # false: then it stays as pretrained, and the run forgets only what the rest of it changed.
    train_head: bool = field(
        default=True, metadata=_help("train the output head in full (false: keep it pretrained)")
    )
    optimizer: str = field(default="adamw", metadata=_help("the optimizer"))
    # None: the method's own rate (DEFAULT_LR), so that changing the method (the Train page, a
    # sweep's baselines made with dataclasses.replace) changes the rate with it.
    lr: float | None = field(
        default=None,
        metadata=_help(
            "learning rate; if not set, the method's default: "
            + "; ".join(
                f"{rate:g} for {', '.join(m for m in METHODS if DEFAULT_LR[m] == rate)}"
                for rate in sorted(set(DEFAULT_LR.values()), reverse=True)
            )
        ),
    )
    lora_plus_ratio: float = field(
        default=1.0, metadata=_help("LoRA+: learning rate of B = ratio × learning rate of A")
    )
    weight_decay: float = field(default=0.0, metadata=_help("decoupled weight decay"))
    batch_size: int = field(default=64, metadata=_help("images per step"))
    epochs: int = field(default=1, metadata=_help("passes over the training set"))
    steps: int | None = field(default=None, metadata=_help("steps; overrides epochs if set"))
    eval_interval: int = field(default=10, metadata=_help("validate every this many steps"))
    snapshot_interval: int = field(
        default=10, metadata=_help("record delta_W's spectrum every this many steps")
    )
    seed: int = field(default=0, metadata=_help("seed of initialisation, shuffling, shift"))
    device: str = field(default="auto", metadata=_help("auto (cuda/mps if present), cpu, ..."))

    def __post_init__(self) -> None:
        # One spelling per choice of layers, so equal choices give equal configs.
        self.targets = _to_targets(self.targets)

    @property
    def learning_rate(self) -> float:
        """The rate this run trains at: `lr` if set, else the method's (DEFAULT_LR)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def validate(self) -> None:
        """Raise a ValueError with a one-line message for the first bad setting.

        The checks that need the base model are core.training.train.check_config's.
        """
        _check_choices(self)
        _check_numbers(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the database, the URL and the command line's --json."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """A config from a dict such as to_dict() gives; strings (a flag, a URL's query) are
        read by `parse`.

        Missing keys take their defaults; an unknown key or a value of the wrong kind is a
        ValueError naming it, and so is anything but a dict (a stored config that is a list).
        """
        if not isinstance(values, dict):
            raise ValueError(
                f"settings must be a JSON object of names and values (got {short_repr(values)})"
            )
        hints = setting_types()
        unknown = set(values) - set(hints)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {', '.join(hints)}")
        return cls(**{name: convert(name, hints[name], v) for name, v in values.items()})


def setting_types() -> dict[str, Any]:
    """Each RunConfig field's declared type, e.g. {"rank": int, "steps": int | None, ...}."""
    return get_type_hints(RunConfig)


def config_choices() -> dict[str, list[str]]:
    """The allowed values of each RunConfig field that is a choice (for checks and --help)."""
    return {
        "model": list(MODELS),
        "dataset": list(DATASETS),
        "shift": list(SHIFTS),
        "method": list(METHODS),
        "init": list(INITS),
        "scaling": list(SCALINGS),
        "optimizer": list(OPTIMIZERS),
        "device": list(DEVICES),
    }


def for_model(model: str) -> RunConfig:
    """The settings a run on `model` starts from: RunConfig's defaults with the model's own
    (MODEL_DEFAULTS) on top."""
    return RunConfig(model=model, **copy.deepcopy(MODEL_DEFAULTS.get(model, {})))


def sweep_configs(base: RunConfig, ranks: Iterable[int], baselines: bool = True) -> list[RunConfig]:
    """A rank sweep on one task: LoRA at each rank, then head-only and full fine-tuning.

    The baselines bracket LoRA: head-only is the least a method can train, full fine-tuning
    the most; where LoRA's accuracy lands between them shows what rank buys.
    """
    configs = [replace(base, method="lora", rank=rank) for rank in sorted(ranks)]
    if baselines:
        configs += [replace(base, method=method, dora=False) for method in ("head", "full")]
    return configs


# -- checks ---------------------------------------------------------------------------------------
def _check_choices(config: RunConfig) -> None:
    for name, allowed in config_choices().items():
        value = getattr(config, name)
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    # The LoRA settings (rank, targets, init, dora, …) are ignored by the other methods.
    if config.method == "lora" and not config.targets:
        raise SettingError(
            "no target layer: choose at least one layer to adapt", "errors.no_targets"
        )
    if config.method == "head" and not config.train_head:
        raise SettingError(
            "method head with the head frozen trains nothing: train the head, or pick another "
            "method",
            "errors.frozen_head_only",
        )
    _check_kinds(config)
    if config.shift in RENAMES_CLASSES and not config.train_head:
        raise SettingError(
            f"shift {config.shift} renames the classes, so the pretrained head answers with the "
            "old names: it must train (train_head true)",
            "errors.frozen_head_renamed",
            {"shift": config.shift},
        )


def _check_kinds(config: RunConfig) -> None:
    """The model reads what the dataset holds, and the shift is one made for it."""
    reads, holds = kind_of_model(config.model), kind_of_dataset(config.dataset)
    if reads != holds:
        raise SettingError(
            f"model {config.model} reads {reads} but dataset {config.dataset} holds {holds}: "
            f"choose a dataset of {reads} ({', '.join(_datasets_of(reads))})",
            "errors.kind_mismatch",
            {"model": config.model, "dataset": config.dataset, "kind": reads},
        )
    if config.shift not in shifts_for(holds):
        raise SettingError(
            f"shift {config.shift} does not change {holds}: choose one of "
            f"{', '.join(shifts_for(holds))}",
            "errors.shift_kind",
            {"shift": config.shift, "shifts": ", ".join(shifts_for(holds))},
        )


def _datasets_of(kind: str) -> list[str]:
    return [dataset for dataset in DATASETS if kind_of_dataset(dataset) == kind]


def _check_numbers(config: RunConfig) -> None:
    for name, bound in BOUNDS.items():
        value = getattr(config, name)
        if value is not None:  # steps: None = use epochs
            check_bound(name, value, bound)


# -- bounds ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """The numbers a setting may take: from `low` to `high`, each end included unless open,
    whole numbers only if `whole`.

    `value in bound` asks; str(bound) says it as a refusal does: "a number > 0 and ≤ 1e+06".
    """

    low: float
    high: float
    whole: bool = False
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        kinds = int if self.whole else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below  # NaN is neither

    def __str__(self) -> str:
        return (
            f"{'a whole number' if self.whole else 'a number'} "
            f"{'>' if self.low_open else '≥'} {_number(self.low)} and "
            f"{'<' if self.high_open else '≤'} {_number(self.high)}"
        )


def _number(value: float) -> str:
    """4294967295 as it is, 1e6 as 1e+06: each bound in its shortest exact form."""
    return str(value) if isinstance(value, int) else f"{value:g}"


# Every number a run takes, with the values that make sense. Past them the numbers stop meaning
# anything, and worse, overflow: torch computes in float32 (largest 3.4e38: an lr of 1e39 cannot
# even be stored) and indexes with int64, SQLite stores int64, numpy seeds with 32 bits, and the
# page's number boxes hold integers up to 2**53. Wide enough for every lesson and for a student
# who wants to see a run diverge (AdamW needs an lr near 1e6 for that), narrow enough that every
# product of them (lr × lora_plus_ratio, alpha / r × lr, lr × weight_decay) stays finite.
BOUNDS: dict[str, Bound] = {
    "rank": Bound(1, 4096, whole=True),  # the zoo's widest layer has 1024: check_targets says so
    "alpha": Bound(0.0, 10_000.0, low_open=True),  # usually 1 to 2 × the rank
    "dropout": Bound(0.0, 1.0, high_open=True),
    "top_k": Bound(1, 1000, whole=True),  # blocks; the zoo's models have at most a few dozen
    "lr": Bound(0.0, 1e6, low_open=True),
    "lora_plus_ratio": Bound(0.01, 1000.0),  # the LoRA+ paper's is 16; the Train page's box ≥ 0.01
    "weight_decay": Bound(0.0, 100.0),
    "batch_size": Bound(1, 65_536, whole=True),  # MNIST's 60,000 training images in one batch
    "epochs": Bound(1, 1_000_000, whole=True),
    "steps": Bound(1, 1_000_000_000, whole=True),  # or None: use epochs
    "eval_interval": Bound(1, 1_000_000_000, whole=True),
    "snapshot_interval": Bound(1, 1_000_000_000, whole=True),
    "seed": Bound(0, 2**32 - 1, whole=True),  # what numpy's generators and torch's all take
}
# The shift parameters (core.training.data.SHIFTS) that are numbers: a shift's rank and seed are a
# run's.
SHIFT_PARAM_BOUNDS: dict[str, Bound] = {
    "angle": Bound(-360.0, 360.0),  # degrees
    "fraction_changed": Bound(0.0, 1.0),
    "rank": BOUNDS["rank"],
    "seed": BOUNDS["seed"],
}


def check_bound(name: str, value: float, bound: Bound) -> None:
    """A one-line ValueError naming the setting and its bound, unless `value` is in it."""
    if value not in bound:
        raise ValueError(f"{name} must be {bound} (got {short_repr(value)})")


# -- from text and back ---------------------------------------------------------------------------
TRUE, FALSE = "true", "false"
# Links written before there was one spelling said 1 and 0; they still open.
_TRUE, _FALSE = {TRUE, "1"}, {FALSE, "0"}


def parse(value: Any, kind: Any) -> Any:
    """`value` as a setting of the declared type `kind`: a string is read, a value of the
    right type passes. ValueError (holding the value) when it is not one, whatever it is: None,
    a list where a number goes, JSON nested a thousand deep, a number past float's range.

    Kinds: bool (true/false), int, int | None ("" or "none" for none), float (finite),
    float | None (the same, or "" or "none"), str, dict (a JSON object of numbers and text),
    list[X] (comma-separated), and list[str] | str (a layer choice: "all-linear" or names/globs).
    """
    try:
        return _parse(value, kind)
    except (TypeError, OverflowError, RecursionError):
        raise ValueError(value) from None


def _parse(value: Any, kind: Any) -> Any:
    if kind is bool:
        return _to_bool(value)
    if kind is int or kind == int | None:
        return _to_int(value, optional=kind is not int)
    if kind is float or kind == float | None:
        return _to_float(value, optional=kind is not float)
    if kind is dict:
        return _to_dict(value)
    if kind == list[str] | str:
        return _to_targets(value)
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        items = value.split(",") if isinstance(value, str) else value
        return [_parse(part, item) for part in items if str(part).strip()]
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def to_text(value: Any) -> str:
    """A setting's value as text that `parse` reads back to the same value (a URL's query)."""
    if isinstance(value, bool):
        return TRUE if value else FALSE
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(to_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)  # str(0.001) == "0.001": floats print their shortest exact form


def convert(name: str, kind: Any, value: Any) -> Any:
    """`parse`, with a one-line ValueError naming the setting and what it expects, e.g.
    "rank must be a whole number (got 'abc')"."""
    try:
        return parse(value, kind)
    except ValueError:  # json.JSONDecodeError is one too
        raise ValueError(f"{name} must be {_expected(kind)} (got {short_repr(value)})") from None


def _expected(kind: Any) -> str:
    """What a setting of this declared type accepts, in words, for error messages."""
    if kind is bool:
        return f"{TRUE} or {FALSE}"
    if kind is int:
        return "a whole number"
    if kind == int | None:
        return "a whole number, or empty for none"
    if kind is float:
        return "a number"
    if kind == float | None:
        return "a number, or empty for the default"
    if kind is dict:
        return 'a JSON object of numbers and text, e.g. {"angle": 30}'
    if kind == list[str] | str:
        return '"all-linear" or a list of layer names'
    if get_origin(kind) is list:
        return f"a comma-separated list, each {_expected(get_args(kind)[0])}"
    return "text"


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60
_SHORT_REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """`value` as an error message shows it: its repr, cut to about 60 characters, so that a
    megabyte of brackets still gives one short line."""
    try:
        return _SHORT_REPR.repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr (CPython's limit)
        return f"a whole number of {value.bit_length()} bits"


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError(value)
    return text in _TRUE


def _is_none(value: Any) -> bool:
    return value is None or str(value).strip().lower() in ("", "none")


def _to_int(value: Any, optional: bool) -> int | None:
    if optional and _is_none(value):
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any, optional: bool = False) -> float | None:
    if optional and _is_none(value):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _to_dict(value: Any) -> dict:
    """A dict, or a string holding a JSON object (not a list of pairs, nor anything else), of
    numbers and text: no setting nests deeper (a shift's parameters are numbers and names)."""
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise ValueError(value)
    if not all(isinstance(item, str | int | float | None) for item in parsed.values()):
        raise ValueError(value)
    return dict(parsed)


def _to_targets(value: Any) -> list[str] | str:
    """ "all-linear" stays a word; anything else becomes a list of layer names or globs."""
    if isinstance(value, str):
        if value == "all-linear":
            return value
        value = value.split(",")
    return [str(name).strip() for name in value if str(name).strip()]
