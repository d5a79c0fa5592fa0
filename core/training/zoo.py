"""The model zoo: small pretrained base models to adapt, with a model card each.

Four models are pretrained by this project and ship as safetensors in `assets/models/`. Three
read images and were pretrained on the source task (MNIST-5k training split, all ten digits,
upright):

* `mlp`  - 784-256-256-10, every layer a Linear: the clearest place to watch ΔW.
* `cnn`  - two 3×3 convolutions and two Linear layers, so LoRA on Conv2d can be seen.
* `vit`  - a tiny vision transformer whose attention has separate `q`, `k`, `v`, `o` Linear
  layers, LoRA's canonical targets.

One reads text and was pretrained on English prose (core.training.text.prose):

* `gpt`  - a tiny character-level GPT (core.training.gpt): where LoRA is used, on the attention
  weights of a language model.

Two torchvision ImageNet models (`resnet18`, `mobilenet_v3_small`) come with their real
pretrained weights, downloaded once, and a new head for the task's classes.

`load(name)` always returns a fresh, frozen copy: the cached master is never handed out, so two
students adapting the same model never see each other's weights.
"""

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from core.common import paths
from core.common.config import DEFAULT_DATASET, DEFAULT_MODEL, Bound
from core.lowrank import targets
from core.training import data, gpt, text

MODELS_DIR = paths.ASSETS / "models"
IMAGE_PIXELS = data.IMAGE_SIZE * data.IMAGE_SIZE
# ImageNet's 1000 at most: a head of more (a run's row edited by hand) is no task here.
CLASSES = Bound(2, 1000, whole=True)


# ------------------------------------------------------------------------- architectures ---


class MLP(nn.Module):
    """784 → 256 → 256 → classes with ReLU: the default model."""

    def __init__(self, num_classes: int = 10, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IMAGE_PIXELS, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.head(x)


class CNN(nn.Module):
    """Two 3×3 convolutions (16 and 32 channels, each followed by 2×2 max-pooling), then two
    Linear layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.head(x)


class Attention(nn.Module):
    """Multi-head self-attention with separate query, key, value and output projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, tokens, dim = x.shape

        def split_heads(t: Tensor) -> Tensor:  # (n, tokens, dim) → (n, heads, tokens, dim/heads)
            return t.view(n, tokens, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split_heads(self.q(x)), split_heads(self.k(x)), split_heads(self.v(x))
        mixed = F.scaled_dot_product_attention(q, k, v)
        return self.o(mixed.transpose(1, 2).reshape(n, tokens, dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A tiny vision transformer: 7×7 patches (16 tokens) plus a class token, two blocks."""

    def __init__(
        self, num_classes: int = 10, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 7
    ) -> None:
        super().__init__()
        tokens = (data.IMAGE_SIZE // patch) ** 2
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, 2 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (n, tokens, dim)
        cls = self.cls_token.expand(len(x), -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


# ------------------------------------------------------------------------------ registry ---


@dataclass(frozen=True)
class Pretraining:
    """How a built-in model is pretrained on its source (AdamW with a one-cycle schedule).

    A text model reads random windows of `context` characters (core.training.text.batch) and
    trains with `dropout`; an image model reads whole images."""

    steps: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 0.01
    seed: int = 0
    context: int | None = None  # text only: characters per training window
    dropout: float = 0.0  # text only: the GPT's dropout while it pretrains (0 when adapted)


@dataclass(frozen=True)
class ZooEntry:
    """Everything the zoo knows about a model before loading it."""

    name: str
    title: str
    summary: str  # one sentence for students
    architecture: str
    build: Callable[[], nn.Module]  # the architecture with 10 output classes
    head_name: str  # module path of the output Linear
    block_names: tuple[str, ...]  # module paths of the blocks below the head, input → output
    recommended_targets: tuple[str, ...]  # LoRA target patterns worth trying first
    pretraining: Pretraining | None = None  # None: torchvision ImageNet weights
    source: str = DEFAULT_DATASET  # the dataset it was pretrained on, of the kind it reads
    # Named choices of targets a page offers in one click: (name, targets as RunConfig.targets
    # reads them); the name's words are the catalog's (train.presets.<name>).
    target_presets: tuple[tuple[str, str], ...] = ()


GPT_PRESETS = (  # the LoRA paper's choices of weights to adapt (its Tables 5 and 6, and after)
    ("q_v", "blocks.*.attn.q,blocks.*.attn.v"),
    ("attention", "blocks.*.attn.*"),
    ("all_linear", "all-linear"),
    ("mlp", "blocks.*.mlp.*"),
)


def _gpt(dropout: float = 0.0) -> nn.Module:
    return gpt.GPT(gpt.GPTConfig(dropout=dropout))


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(num_classes=10)


def _mobilenet_v3_small() -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    return mobilenet_v3_small(num_classes=10)


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            "mlp",
            "MLP 784-256-256-10",
            "Three Linear layers: every weight is a plain matrix, the clearest place to watch ΔW.",
            "flatten → fc1 Linear(784, 256) → ReLU → fc2 Linear(256, 256) → ReLU → "
            "head Linear(256, 10)",
            MLP,
            "head",
            ("fc1", "fc2"),
            ("fc1", "fc2"),
            Pretraining(steps=1500, lr=2e-3),
        ),
        ZooEntry(
            "cnn",
            "Small CNN",
            "Two convolutions then two Linear layers: shows LoRA on Conv2d kernels.",
            "conv1 Conv2d(1, 16, 3×3) → ReLU → maxpool 2 → conv2 Conv2d(16, 32, 3×3) → ReLU → "
            "maxpool 2 → fc1 Linear(1568, 64) → ReLU → head Linear(64, 10)",
            CNN,
            "head",
            ("conv1", "conv2", "fc1"),
            ("conv1", "conv2", "fc1"),
            Pretraining(steps=1500, lr=3e-3),
        ),
        ZooEntry(
            "vit",
            "Tiny ViT",
            "A two-block vision transformer: adapt the attention's q and v, as the LoRA paper did.",
            "patch_embed Conv2d(1, 64, 7×7, stride 7) → 16 patch tokens + class token + position "
            "embedding → 2 pre-norm blocks (attention with 4 heads and Linear q, k, v, o of 64×64; "
            "MLP fc1 Linear(64, 128) → GELU → fc2 Linear(128, 64)) → LayerNorm → "
            "head Linear(64, 10)",
            ViT,
            "head",
            ("patch_embed", "blocks.0", "blocks.1"),
            ("blocks.*.attn.q", "blocks.*.attn.v"),
            Pretraining(steps=2000, lr=3e-3),
        ),
        ZooEntry(
            "gpt",
            "Tiny GPT (characters)",
            "A four-block language model that writes English one character at a time: adapt "
            "its attention's q and v, where the LoRA paper measured.",
            "97 characters → tok_emb Embedding(97, 128) + pos_emb Embedding(128, 128) → 4 "
            "pre-norm blocks (causal attention with 4 heads and Linear q, k, v, o of 128×128; "
            "MLP fc Linear(128, 512) → GELU → proj Linear(512, 128)) → LayerNorm → "
            "lm_head Linear(128, 97)",
            _gpt,
            gpt.HEAD_NAME,
            tuple(f"blocks.{i}" for i in range(gpt.GPTConfig().n_layer)),
            ("blocks.*.attn.q", "blocks.*.attn.v"),
            Pretraining(
                steps=5000, lr=3e-3, batch_size=16, weight_decay=0.1, context=128, dropout=0.1
            ),
            source="prose",
            target_presets=GPT_PRESETS,
        ),
        ZooEntry(
            "resnet18",
            "ResNet-18 (ImageNet)",
            "A real ImageNet network (11 M parameters) with a new head: big, slow on a CPU, "
            "and pretrained on photos rather than digits.",
            "torchvision resnet18, ImageNet-1k weights (IMAGENET1K_V1), new head fc Linear(512, "
            "classes); input gray 28×28 → 3 channels, 64×64, ImageNet normalisation",
            _resnet18,
            "fc",
            ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
            ("layer4.*.conv1", "layer4.*.conv2"),
        ),
        ZooEntry(
            "mobilenet_v3_small",
            "MobileNetV3-Small (ImageNet)",
            "A light ImageNet network for phones (1.5 M parameters) with a new head.",
            "torchvision mobilenet_v3_small, ImageNet-1k weights (IMAGENET1K_V1), new head "
            "classifier.3 Linear(1024, classes); input gray 28×28 → 3 channels, 64×64, "
            "ImageNet normalisation",
            _mobilenet_v3_small,
            "classifier.3",
            (*(f"features.{i}" for i in range(13)), "classifier.0"),
            ("classifier.0",),
        ),
    ]
}


def names() -> list[str]:
    """Model names, built-in ones first."""
    return list(ZOO)


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(ZOO)}")
    return ZOO[name]


@cache
def _parameter_count(name: str) -> int:
    return sum(p.numel() for p in _entry(name).build().parameters())


def card(name: str) -> dict[str, Any]:
    """The model card: what the model is, what it was trained on, how well it does.

    Built-in models read theirs from `assets/models/<name>.json` (written by `pretrain`);
    torchvision models describe their ImageNet weights.
    """
    entry = _entry(name)
    if entry.pretraining is not None:
        return json.loads((MODELS_DIR / f"{name}.json").read_text())
    return {
        "name": name,
        "title": entry.title,
        "summary": entry.summary,
        "architecture": entry.architecture,
        "source_task": "ImageNet-1k (torchvision IMAGENET1K_V1 weights); the head is new",
        "split": None,
        "seed": None,
        "steps": None,
        "test_acc": None,
        "params": _parameter_count(name),
        "train_seconds": None,
        "recommended_targets": list(entry.recommended_targets),
        "head_name": entry.head_name,
        "block_names": list(entry.block_names),
        "offline": False,
        "input_size": IMAGENET_INPUT_SIZE,
    }


# ---------------------------------------------------------------------------- pretraining ---


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of images the model classifies correctly."""
    return (data.predict(model, x) == y).float().mean().item()


def _fit(model: nn.Module, task: data.Task, config: Pretraining) -> None:
    """Plain supervised training on random mini-batches of the training split.

    A dedicated generator draws the batches, so a seed fixes every step of the run.
    """
    optimizer = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    batches = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.steps):
        index = torch.randint(len(task.y_train), (config.batch_size,), generator=batches)
        loss = F.cross_entropy(model(task.x_train[index]), task.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain(name: str, out_dir: Path = MODELS_DIR, steps: int | None = None) -> dict[str, Any]:
    """Pretrain a built-in model on its source; write `<name>.safetensors` and its card.

    Runs on one CPU thread: slower than it could be, but the same seed then gives the same
    weights bit for bit (multi-threaded sums round differently). `steps` shortens the run
    (tests); the shipped models use the card's steps.
    """
    entry = _entry(name)
    if entry.pretraining is None:
        raise ValueError(
            f"'{name}' uses torchvision's ImageNet weights; only built-in models pretrain"
        )
    config = (
        entry.pretraining
        if steps is None
        else Pretraining(**{**vars(entry.pretraining), "steps": steps})
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        if config.context is None:
            model, about = _pretrain_on_images(entry, config)
        else:
            model, about = _pretrain_on_text(entry, config)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{name}.safetensors"
    save_file(model.state_dict(), weights, metadata={"model": name})
    model_card = {
        "name": name,
        "title": entry.title,
        "summary": entry.summary,
        "architecture": entry.architecture,
        **about,
        "seed": config.seed,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "optimizer": f"AdamW (lr {config.lr}, weight decay {config.weight_decay}), one-cycle",
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "recommended_targets": list(entry.recommended_targets),
        "head_name": entry.head_name,
        "block_names": list(entry.block_names),
        "offline": True,
        "weights": weights.name,
        "weights_sha256": _sha256(weights),
        "torch": torch.__version__,
    }
    (out_dir / f"{name}.json").write_text(
        json.dumps(model_card, indent=2, ensure_ascii=False) + "\n"
    )
    return model_card


def _pretrain_on_images(entry: ZooEntry, config: Pretraining) -> tuple[nn.Module, dict]:
    """The model trained on the source task, and what its card says of the task and its score."""
    task = data.source_task()
    model = entry.build()
    _fit(model, task, config)
    about = {
        "source_task": "mnist-5k, all 10 digits, upright (shift none), training split",
        "split": {
            "dataset": "mnist-5k",
            "seed": data.SPLIT_SEED,
            "fractions": list(data.SPLIT_FRACTIONS),
            "sizes": {"train": len(task.y_train), "val": len(task.y_val), "test": len(task.y_test)},
        },
        "test_acc": round(accuracy(model, task.x_test, task.y_test), 4),
        "val_acc": round(accuracy(model, task.x_val, task.y_val), 4),
    }
    return model, about


SAMPLE_PROMPT = "The "  # what a text model's card shows it writing from
SAMPLE_SEED = 0
SAMPLE_LENGTH = 300


def _pretrain_on_text(entry: ZooEntry, config: Pretraining) -> tuple[nn.Module, dict]:
    """The language model trained on random windows of the prose's training chunks, with
    dropout; then measured with none, in bits per character on every held-out window."""
    prose = text.source_text()
    chunks = prose.split("train")
    model = _gpt(config.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    batches = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.steps):
        x, y = text.batch(chunks, config.batch_size, config.context, batches)
        loss = gpt.next_char_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    scores = {}
    for split in ("test", "val"):
        x, y = text.windows(prose.split(split), config.context)
        loss, correct = held_out(model, x, y)
        scores[f"{split}_bpc"] = round(text.bits_per_character(loss), 4)
        scores[f"{split}_acc"] = round(correct, 4)
    sample = gpt.generate(
        model,
        text.encode(SAMPLE_PROMPT),
        SAMPLE_LENGTH,
        torch.Generator().manual_seed(SAMPLE_SEED),
    )
    about = {
        "source_task": f"English prose: Python's documentation topics ({text.PROSE_MODULE}), "
        f"random windows of {config.context} characters from the training chunks",
        "split": {
            "dataset": prose.name,
            "seed": prose.seed,
            "fractions": list(prose.fractions),
            "chunk_length": prose.chunk_length,
            "fingerprint": prose.fingerprint,
            "sizes": prose.sizes,
        },
        **scores,
        "context": config.context,
        "dropout": config.dropout,
        "sample": {"prompt": SAMPLE_PROMPT, "seed": SAMPLE_SEED, "text": text.decode(sample)},
    }
    return model, about


@torch.no_grad()
def held_out(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 64) -> tuple[float, float]:
    """(mean cross-entropy in nats, next-character accuracy) of a text model over windows."""
    loss, correct = 0.0, 0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        logits = model(xb)
        loss += F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum").item()
        correct += (logits.argmax(-1) == yb).sum().item()
    return loss / y.numel(), correct / y.numel()


# ------------------------------------------------------------------- torchvision weights ---

IMAGENET_INPUT_SIZE = 64
"""Side of the image the ImageNet models see: 28×28 digits upscaled. Small enough for a CPU."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, per RGB channel
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageNetInput:
    """Forward pre-hook that turns our (N, 1, 28, 28) images in [0, 1] into ImageNet input.

    A hook, rather than a wrapper module, keeps torchvision's module names (`fc`, `layer4.1.conv2`)
    so LoRA targets and exported adapters are named as everywhere else.
    """

    size: int = IMAGENET_INPUT_SIZE

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor]:
        # Made where the images are (cuda, mps, cpu) and in their precision: the model may
        # have been moved to any device after the hook was registered.
        x = args[0]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return ((x.expand(-1, 3, -1, -1) - mean) / std,)


def _imagenet_weights(name: str):  # -> torchvision.models.WeightsEnum member
    from torchvision.models import MobileNet_V3_Small_Weights, ResNet18_Weights

    return {"resnet18": ResNet18_Weights, "mobilenet_v3_small": MobileNet_V3_Small_Weights}[
        name
    ].IMAGENET1K_V1


def weights_dirs() -> list[Path]:
    """Where ImageNet weight files are looked for: torch's own cache (reuse an earlier
    download), then LoRA Lab's data folder (where new downloads go)."""
    return [Path(torch.hub.get_dir()) / "checkpoints", paths.data_dir() / "weights"]


def weights_offline_message(name: str) -> str:
    url = _imagenet_weights(name).url
    filename = url.rsplit("/", 1)[-1]
    looked = " and ".join(str(d) for d in weights_dirs())
    return (
        f"The ImageNet weights of '{name}' ({filename}) are not on this computer and could not "
        f"be downloaded (no network?). LoRA Lab looks for them in {looked}. To fix: run LoRA Lab "
        f"once with network access, or download {url} elsewhere and copy the file into "
        f"{weights_dirs()[-1]}. Offline, the models 'mlp', 'cnn' and 'vit' always work."
    )


def _imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """The ImageNet weights from the cache, else downloaded once (hash-checked) into data_dir().

    torchvision publishes these weights only as `.pth` files; torch reads them with
    `weights_only=True`, which loads tensors and refuses arbitrary pickled objects.
    """
    url = _imagenet_weights(name).url
    filename = url.rsplit("/", 1)[-1]
    cached = [d for d in weights_dirs() if (d / filename).is_file()]
    if not cached:
        paths.require_network(url, weights_offline_message(name))
    model_dir = cached[0] if cached else weights_dirs()[-1]
    try:
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(model_dir),
            map_location="cpu",
            progress=False,
            check_hash=True,
            weights_only=True,
        )
    except OSError as error:  # URLError is an OSError
        raise paths.OfflineError(weights_offline_message(name)) from error


# ---------------------------------------------------------------------------------- load ---


def _new_head(old: nn.Linear, num_classes: int) -> nn.Linear:
    """A freshly initialised output layer, the same for every call (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(old.in_features, num_classes)


@cache
def _master(name: str) -> nn.Module:
    """The pretrained model, built once per process. Never handed out: `load` copies it."""
    entry = _entry(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = entry.build()
    if entry.pretraining is not None:
        model.load_state_dict(load_file(MODELS_DIR / f"{name}.safetensors"))
    else:
        # Everything but the 1000-class ImageNet head; the seeded 10-class head stays.
        head = f"{entry.head_name}."
        state = {k: v for k, v in _imagenet_state_dict(name).items() if not k.startswith(head)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(head) for k in missing):
            raise RuntimeError(f"the ImageNet weights of '{name}' do not fit its architecture")
        model.register_forward_pre_hook(ImageNetInput())
    model.head_name = entry.head_name
    model.block_names = list(entry.block_names)
    return model.eval().requires_grad_(False)


def load(name: str = DEFAULT_MODEL, num_classes: int | None = None) -> nn.Module:
    """A fresh, frozen (eval mode, no gradients) copy of the pretrained model.

    If the task has a different number of classes than its source (None: the source's own, 10
    digits or gpt's 97 characters), the copy gets a new, untrained head.
    `model.head_name` and `model.block_names` tell the fine-tuning methods where things are.
    """
    if num_classes is None:
        num_classes = data.DATASETS[_entry(name).source].num_classes
    _check_classes(num_classes)
    model = copy.deepcopy(_master(name))
    head = model.get_submodule(model.head_name)
    if head.out_features != num_classes:
        model.set_submodule(model.head_name, _new_head(head, num_classes).requires_grad_(False))
    return model


def _check_classes(num_classes: int) -> None:
    if num_classes not in CLASSES:
        raise ValueError(f"a classifier needs from 2 to {CLASSES.high} classes, got {num_classes}")


@lru_cache(maxsize=16)
def architecture(name: str, num_classes: int = 10) -> nn.Module:
    """The model's layers without their weights (on torch's meta device: shapes only, no
    memory, no download), built once per model and class count: all that counting its
    parameters needs (core.training.train.parameter_count). Only read, never trained."""
    entry = _entry(name)
    _check_classes(num_classes)
    with torch.device("meta"):
        model = entry.build()
        head = model.get_submodule(entry.head_name)
        if head.out_features != num_classes:
            model.set_submodule(entry.head_name, nn.Linear(head.in_features, num_classes))
    model.head_name = entry.head_name
    model.block_names = list(entry.block_names)
    return model.requires_grad_(False)


def default_targets(model_name: str) -> str | list[str]:
    """The LoRA targets to offer first for a zoo model: "all-linear" when it picks a layer, else
    the model card's recommended targets (resnet18's only Linear is its head, which
    "all-linear" leaves out, so there it would pick nothing). ValueError for an unknown model.
    """
    return copy.copy(_default_targets(model_name))


@cache
def _default_targets(model_name: str) -> str | list[str]:
    model_card = card(model_name)  # ValueError for an unknown model
    with torch.random.fork_rng(devices=[]):  # the architecture only: no weights, no download
        architecture = ZOO[model_name].build()
    architecture.head_name = model_card["head_name"]
    if targets.resolve_targets(architecture, "all-linear"):
        return "all-linear"
    return list(model_card["recommended_targets"])
