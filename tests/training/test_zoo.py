"""The model zoo (core/training/zoo.py): shipped weights, cards, fresh copies, ImageNet models
offline."""

import hashlib
import math
import socket

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from core.common import paths
from core.training import data, gpt, text, zoo

IMAGE_MODELS = ["mlp", "cnn", "vit"]  # pretrained here on the digits
BUILT_IN = [*IMAGE_MODELS, "gpt"]
IMAGENET = ["resnet18", "mobilenet_v3_small"]
CARD_KEYS = {
    "name", "title", "summary", "architecture", "source_task", "split", "seed", "steps",
    "test_acc", "params", "train_seconds", "recommended_targets", "offline",
}  # fmt: skip
TEXT_CARD_KEYS = {"test_bpc", "val_bpc", "context", "sample"}


@pytest.fixture(scope="module")
def source() -> data.Task:
    return data.load_task()


@pytest.fixture
def no_imagenet_cache(tmp_path, monkeypatch):
    """Empty weight caches, no network, and no master model left from another test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path / "data"))
    zoo._master.cache_clear()
    yield tmp_path
    zoo._master.cache_clear()


def test_names_and_cards():
    assert zoo.names() == [*BUILT_IN, *IMAGENET] and zoo.DEFAULT_MODEL == "mlp"
    for name in zoo.names():
        card = zoo.card(name)
        assert set(card) >= CARD_KEYS and card["name"] == name
        assert card["offline"] == (name in BUILT_IN)
        assert card["recommended_targets"]
    assert set(zoo.card("gpt")) >= TEXT_CARD_KEYS
    with pytest.raises(ValueError, match="unknown model 'gpt2'"):
        zoo.card("gpt2")


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_shipped_weights_reproduce_the_card(name, source):
    card = zoo.card(name)
    weights = zoo.MODELS_DIR / card["weights"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    assert weights.stat().st_size < 5_000_000
    model = zoo.load(name)
    assert abs(zoo.accuracy(model, source.x_test, source.y_test) - card["test_acc"]) <= 0.001
    assert card["test_acc"] >= 0.9
    assert sum(p.numel() for p in model.parameters()) == card["params"]


@pytest.mark.usefixtures("one_thread")
def test_the_shipped_language_model_reproduces_its_card():
    """Its held-out bits per character, recomputed here from the weights with a plain
    cross-entropy over every test window of the prose, and its sample, written again."""
    card = zoo.card("gpt")
    weights = zoo.MODELS_DIR / card["weights"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    assert weights.stat().st_size < 10_000_000  # the bound for the shipped weights
    model = zoo.load("gpt", num_classes=text.VOCAB_SIZE)
    assert sum(p.numel() for p in model.parameters()) == card["params"]
    prose = text.source_text()
    assert prose.fingerprint == card["split"]["fingerprint"]
    x, y = text.windows(prose.split("test"), card["context"])
    with torch.no_grad():
        nats = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert nats / math.log(2) == pytest.approx(card["test_bpc"], abs=0.001)
    assert card["test_bpc"] < 2.5  # far below a uniform guess over 97 characters (6.6 bits)
    sample = card["sample"]
    written = gpt.generate(
        model,
        text.encode(sample["prompt"]),
        len(sample["text"]) - len(sample["prompt"]),
        torch.Generator().manual_seed(sample["seed"]),
    )
    assert text.decode(written) == sample["text"]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_models_name_their_head_blocks_and_targets(name):
    model = zoo.load(name)
    head = model.get_submodule(model.head_name)
    assert isinstance(head, nn.Linear) and head.out_features == 10
    for block in model.block_names:
        model.get_submodule(block)  # raises if the path does not exist
    module_names = [n for n, _ in model.named_modules()]
    assert model.block_names == sorted(model.block_names, key=module_names.index)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "layer"), [("mlp", "fc1"), ("cnn", "fc1"), ("vit", "blocks.0.attn.q")]
)
def test_planted_rank_goes_into_a_layer_all_linear_adapts(name, layer):
    assert data.default_planted_layer(zoo.load(name)) == layer


def test_vit_attention_has_separate_q_k_v_o():
    model = zoo.load("vit")
    for part in "qkvo":
        assert isinstance(model.get_submodule(f"blocks.1.attn.{part}"), nn.Linear)


def test_cnn_convolutions_are_plain():
    convs = [m for m in zoo.load("cnn").modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(c.groups == 1 for c in convs)


def test_load_gives_independent_frozen_copies():
    first, second = zoo.load("mlp"), zoo.load("mlp")
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    pristine = second.fc1.weight.clone()
    with torch.no_grad():
        first.fc1.weight.add_(1.0)
    assert torch.equal(second.fc1.weight, pristine)
    assert torch.equal(zoo.load("mlp").fc1.weight, pristine)  # the master is untouched
    assert first.fc1.weight.data_ptr() != zoo._master("mlp").fc1.weight.data_ptr()


def test_another_number_of_classes_gets_a_fresh_head():
    pretrained = zoo.load("cnn")
    model = zoo.load("cnn", num_classes=3)
    assert model.head.out_features == 3 and not model.head.weight.requires_grad
    assert torch.equal(model.conv1.weight, pretrained.conv1.weight)
    assert torch.equal(model.head.weight, zoo.load("cnn", num_classes=3).head.weight)  # seeded
    with pytest.raises(ValueError, match="from 2 to 1000 classes"):
        zoo.load("cnn", num_classes=1)


@pytest.mark.parametrize(("name", "layer"), [("mlp", "fc1"), ("gpt", "blocks.0.attn.q")])
def test_pretraining_is_repeatable(tmp_path, name, layer):
    """Two short runs with the card's seed give the same weights and card bit for bit."""
    cards = [zoo.pretrain(name, tmp_path / run, steps=3) for run in ("a", "b")]
    first, second = (load_file(tmp_path / run / f"{name}.safetensors") for run in ("a", "b"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert {**cards[0], "train_seconds": 0} == {**cards[1], "train_seconds": 0}
    assert cards[0]["steps"] == 3
    shipped = load_file(zoo.MODELS_DIR / f"{name}.safetensors")
    weight = f"{layer}.weight"
    assert not torch.equal(first[weight], shipped[weight])  # 3 steps ≠ the real run


def test_only_built_in_models_pretrain(tmp_path):
    with pytest.raises(ValueError, match="ImageNet"):
        zoo.pretrain("resnet18", tmp_path)


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_weights_offline_and_uncached_explain_what_to_do(
    no_imagenet_cache, monkeypatch, name
):
    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(paths.OfflineError) as caught:
        zoo.load(name)
    message = str(caught.value)
    filename = zoo._imagenet_weights(name).url.rsplit("/", 1)[-1]
    assert f"'{name}'" in message and filename in message
    assert str(no_imagenet_cache / "data" / "weights") in message and "'mlp'" in message


def test_cached_imagenet_weights_load_without_network(no_imagenet_cache, monkeypatch):
    """A weights file already in torch's cache is used as-is: no download, real weights kept."""
    monkeypatch.setenv("LORA_LAB_OFFLINE", "1")
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(1)
    fake_imagenet = mobilenet_v3_small().state_dict()  # random, stands in for the real weights
    filename = zoo._imagenet_weights("mobilenet_v3_small").url.rsplit("/", 1)[-1]
    checkpoints = no_imagenet_cache / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(fake_imagenet, checkpoints / filename)

    model = zoo.load("mobilenet_v3_small", num_classes=4)
    assert torch.equal(model.features[0][0].weight, fake_imagenet["features.0.0.weight"])
    assert model.head_name == "classifier.3" and model.classifier[3].out_features == 4
    assert not any(p.requires_grad for p in model.parameters())
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4)  # gray 28×28 in, via the input hook


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_imagenet_input_is_made_on_the_images_device(dtype):
    """The normalisation follows the images to any device (cuda, mps): checked on "meta", a
    device with no data that every build of torch has, like cuda it is not the CPU."""
    images = torch.empty(2, 1, 28, 28, device="meta", dtype=dtype)
    (x,) = zoo.ImageNetInput()(nn.Identity(), (images,))
    assert x.device.type == "meta" and x.dtype == dtype
    assert x.shape == (2, 3, zoo.IMAGENET_INPUT_SIZE, zoo.IMAGENET_INPUT_SIZE)
    gray = torch.full((1, 1, 28, 28), 0.5, dtype=dtype)
    (x,) = zoo.ImageNetInput()(nn.Identity(), (gray,))
    expected = [(0.5 - m) / s for m, s in zip(zoo.IMAGENET_MEAN, zoo.IMAGENET_STD, strict=True)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected, dtype=dtype))
