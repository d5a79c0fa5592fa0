"""Datasets, splits and task shifts (core/training/data.py). Everything here runs offline."""

import hashlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.classroom.i18n import catalog
from core.common import paths
from core.training import data

# sha256 of the train, val and test indices (int64 little-endian, in that order). If this test
# fails, the split changed: every model card's accuracy and every saved run are then off.
PINNED_SPLITS = {
    "mnist-5k": "0c67e8efc79cab688f3a91f08eba5cc13899bb41f0ae448fc3f4c14833055cd7",
    "digits": "01e0ff7e15c9aced3da93c38e3038ca66ebe273475670baff3eb4ec9c7e28336",
}


def split_checksum(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> str:
    parts = (np.ascontiguousarray(a, dtype="<i8").tobytes() for a in (train, val, test))
    return hashlib.sha256(b"".join(parts)).hexdigest()


@pytest.fixture(scope="module")
def source() -> data.Task:
    return data.load_task()


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data folder and a fresh in-process cache, as on a new laptop."""
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path))
    data._raw.cache_clear()
    yield tmp_path
    data._raw.cache_clear()


# -------------------------------------------------------------------------------- datasets ---


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
def test_offline_datasets_load_as_28x28_images_in_0_1(name):
    task = data.load_task(name)
    for x, y in [
        (task.x_train, task.y_train),
        (task.x_val, task.y_val),
        (task.x_test, task.y_test),
    ]:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.int64 and len(y) == len(x)
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
        assert set(y.tolist()) == set(range(10))
    assert task.num_classes == 10


def test_mnist_5k_is_the_default_and_split_3500_500_1000(source):
    assert (source.dataset, source.shift) == ("mnist-5k", "none")
    assert (len(source.y_train), len(source.y_val), len(source.y_test)) == (3500, 500, 1000)
    # stratified: every digit equally often in every part
    for y, per_class in [(source.y_train, 350), (source.y_val, 50), (source.y_test, 100)]:
        assert torch.bincount(y).tolist() == [per_class] * 10


def test_loading_again_is_fast_and_gives_fresh_tensors(source):
    started = time.perf_counter()
    task = data.load_task()
    assert time.perf_counter() - started < 0.5
    task.x_train.zero_()
    task.y_test.fill_(3)
    again = data.load_task()
    assert torch.equal(again.x_train, source.x_train) and torch.equal(again.y_test, source.y_test)


def test_a_split_is_its_tasks_images_labels_and_teacher_logits(source):
    test = source.split("test")
    assert test.x is source.x_test and test.y is source.y_test and test.z is None
    x, y, z = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 1, 0]), torch.randn(4, 2)
    taught = data.Task(x, y, x, y, x, y, 2, "mnist-5k", "planted-rank", {}, z_train=z)
    assert taught.split("train").z is z and taught.split("val").z is None
    moved = taught.split("train").to(torch.device("meta"))
    assert {moved.x.device.type, moved.y.device.type, moved.z.device.type} == {"meta"}


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
def test_splits_are_disjoint_fixed_and_pinned(name):
    raw = data._raw(name)
    parts = [raw.train, raw.val, raw.test]
    together = np.concatenate(parts)
    assert len(np.unique(together)) == len(together) == len(raw.labels)
    again = data.stratified_split(raw.labels)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert split_checksum(*parts) == PINNED_SPLITS[name]


def test_digits_are_scaled_up_and_framed_like_mnist():
    x = data.load_task("digits").x_train
    border = torch.cat([x[..., :4, :].flatten(), x[..., -4:, :].flatten()])
    assert border.abs().max() == 0  # 20×20 digit centred in a 28×28 frame
    assert x[..., 4:24, 4:24].mean() > 0.1


def test_unknown_names_and_parameters_are_clear_value_errors():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        data.load_task("nope")
    with pytest.raises(ValueError, match="unknown shift 'tilt'"):
        data.load_task(shift="tilt")
    with pytest.raises(ValueError, match="no parameter"):
        data.load_task(shift="rotate", shift_params={"degrees": 3})
    with pytest.raises(ValueError, match="another dataset"):
        data.load_task(shift="domain", shift_params={"to": "mnist-5k"})
    with pytest.raises(ValueError, match="needs the base model"):
        data.load_task(shift="planted-rank")


# --------------------------------------------------------------- torchvision, offline-safe ---


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an array in MNIST's IDX format (the files torchvision unpacks into raw/)."""
    magic = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(magic + array.astype(np.uint8).tobytes())


def write_fake_mnist(root: Path, n_train: int = 120, n_test: int = 30) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_cached_torchvision_files_load_without_network(empty_data_dir, monkeypatch):
    write_fake_mnist(empty_data_dir)
    monkeypatch.setenv("LORA_LAB_OFFLINE", "1")  # any download attempt would raise
    task = data.load_task("mnist")
    assert len(task.y_test) == 30  # the official test set is the test set
    assert len(task.y_train) + len(task.y_val) == 120
    assert (
        task.x_train.shape[1:] == (1, 28, 28) and 0 <= task.x_train.min() <= task.x_train.max() <= 1
    )


MARKS = {"en": ("(offline)", "(download)"), "zh": ("（离线）", "（需下载）")}


def test_a_dataset_is_marked_offline_exactly_when_it_loads_without_a_network(
    empty_data_dir, monkeypatch
):
    """The Train page tells a student without a network to pick a dataset marked (offline):
    those load with no network and an empty data folder, the others say they need one."""
    monkeypatch.setenv("LORA_LAB_OFFLINE", "1")  # any download attempt raises OfflineError
    for name, info in data.DATASETS.items():
        for language, (offline, download) in MARKS.items():
            title = catalog(language).t(f"datasets.{name}.title")
            assert title.endswith(offline if info.offline else download), title
        if info.offline:
            assert len(data.load_task(name).y_test) > 0
        else:
            with pytest.raises(paths.OfflineError, match="network"):
                data.load_task(name)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_download_fails_fast_with_what_to_do(empty_data_dir, monkeypatch, name):
    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    started = time.perf_counter()
    with pytest.raises(paths.OfflineError) as caught:
        data.load_task(name)
    assert time.perf_counter() - started < 2
    message = str(caught.value)
    assert f"'{name}'" in message and str(empty_data_dir) in message
    assert "network" in message and "copy" in message and "mnist-5k" in message


def test_a_failing_download_becomes_an_offline_error(empty_data_dir, monkeypatch):
    """Even when the server answers the connection test, a broken download is explained."""
    import torchvision.datasets.mnist

    def broken_download(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: socket.socket())
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", broken_download)
    with pytest.raises(paths.OfflineError, match="'mnist'"):
        data.load_task("mnist")


# ---------------------------------------------------------------------------------- shifts ---


@pytest.mark.parametrize("language, rank", [("en", "rank"), ("zh", "秩")])
def test_every_shift_explains_itself(language, rank):
    for name in data.SHIFTS:
        explanation = catalog(language).t(f"shifts.{name}.explanation")
        assert len(explanation) > (60 if language == "en" else 20), name
        assert rank in explanation or name == "none", name


def test_rotate_turns_the_images(source):
    task = data.load_task(shift="rotate", shift_params={"angle": 90})
    assert torch.allclose(task.x_test, torch.rot90(source.x_test, 1, dims=(2, 3)), atol=1e-6)
    assert torch.equal(task.y_test, source.y_test)
    assert data.load_task(shift="rotate").shift_params == {"angle": 45.0}


def test_invert_is_one_minus_x(source):
    task = data.load_task(shift="invert")
    assert torch.equal(task.x_val, 1 - source.x_val) and torch.equal(task.y_val, source.y_val)


def test_permute_is_a_seeded_bijection_of_pixels(source):
    permutation = data.pixel_permutation(0)
    assert sorted(permutation.tolist()) == list(range(784))
    assert torch.equal(permutation, data.pixel_permutation(0))
    assert not torch.equal(permutation, data.pixel_permutation(1))
    task = data.load_task(shift="permute")
    assert torch.equal(task.x_train.flatten(1), source.x_train.flatten(1)[:, permutation])
    assert torch.equal(task.y_train, source.y_train)


def test_the_shifts_seed_is_the_runs_seed_unless_set_explicitly(source):
    """The app shows no seed box for shifts: what it runs must follow the run's seed."""
    pixels = source.x_train.flatten(1)
    task = data.load_task(shift="permute", seed=5)
    assert torch.equal(task.x_train.flatten(1), pixels[:, data.pixel_permutation(5)])
    assert task.shift_params == {"seed": 5}
    task = data.load_task(shift="permute", shift_params={"seed": 1}, seed=5)
    assert torch.equal(task.x_train.flatten(1), pixels[:, data.pixel_permutation(1)])


def test_label_permute_renames_every_class_consistently(source):
    task = data.load_task(shift="label-permute", seed=3)
    assert torch.equal(task.x_test, source.x_test)
    renaming = {}
    for old, new in zip(source.y_train.tolist(), task.y_train.tolist(), strict=True):
        assert renaming.setdefault(old, new) == new  # a function of the old class
    assert sorted(renaming.values()) == list(range(10))  # a bijection
    assert all(old != new for old, new in renaming.items())  # no class keeps its name
    assert torch.equal(data.class_permutation(10, 3), data.class_permutation(10, 3))
    assert task.shift_params == {"seed": 3}


def test_domain_shift_brings_the_digits(source):
    task = data.load_task(shift="domain")
    digits = data.load_task("digits")
    assert torch.equal(task.x_train, digits.x_train) and task.dataset == "mnist-5k"


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(784, 32)
        self.head = nn.Linear(32, 10)
        self.head_name = "head"

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_planted_direction_has_exactly_the_rank_asked_for(rank):
    W0 = torch.randn(64, 100)
    direction = data.planted_direction(W0, rank, seed=0)
    assert direction.shape == W0.shape
    assert np.linalg.matrix_rank(direction.numpy()) == rank
    singular_values = np.linalg.svd(direction.numpy(), compute_uv=False)[:rank]
    assert np.allclose(singular_values, 1.0, atol=1e-5)
    assert torch.equal(direction, data.planted_direction(W0, rank, seed=0))
    assert not torch.equal(direction, data.planted_direction(W0, rank, seed=1))


def test_planted_direction_flattens_conv_kernels():
    W0 = torch.randn(16, 8, 3, 3)
    direction = data.planted_direction(W0, 2, seed=1)
    assert direction.shape == W0.shape
    assert np.linalg.matrix_rank(direction.flatten(1).numpy()) == 2
    with pytest.raises(ValueError, match="between 1 and 16"):
        data.planted_direction(W0, 17, seed=0)


@pytest.mark.parametrize("rank", [1, 4])
def test_planted_rank_labels_come_from_the_changed_model_which_is_a_copy(rank, source):
    base = TinyNet()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    task = data.load_task(shift="planted-rank", shift_params={"rank": rank}, base_model=base)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # untouched
    assert base.training  # not even switched to eval mode
    planted = task.planted
    assert planted.layer == "fc1" and planted.rank == rank  # the first layer
    assert np.linalg.matrix_rank(planted.delta_W.numpy()) == rank
    teacher = data.with_update(base, planted.layer, planted.delta_W)
    assert torch.equal(task.y_test, data.predict(teacher, task.x_test))
    with torch.no_grad():  # the logits to fit are the teacher's; the labels their argmax
        assert torch.allclose(task.z_test, teacher.eval()(task.x_test))
    assert torch.equal(task.z_train.argmax(1), task.y_train) and len(task.z_val) == len(task.y_val)
    assert torch.equal(task.x_test, source.x_test)
    changed = (data.predict(base, task.x_test) != task.y_test).float().mean()
    assert 0.4 < changed < 0.6  # about the 50 % asked for


def test_only_the_planted_rank_task_has_logits_to_fit_and_keeps_its_head(source):
    assert source.z_train is None and source.z_test is None
    assert [name for name, info in data.SHIFTS.items() if info.keeps_head] == ["planted-rank"]


def test_planted_layer_default_prefers_linear_and_skips_tiny_convolutions():
    convs = nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3), nn.Flatten(), nn.LazyLinear(10)
    )
    convs.head_name = "3"
    assert data.default_planted_layer(convs) == "1"  # conv "0" allows rank ≤ 9 only
    assert data.default_planted_layer(TinyNet()) == "fc1"


def test_planted_rank_checks_its_layer():
    with pytest.raises(ValueError, match="no Linear or Conv2d layer 'fc9'"):
        data.load_task(shift="planted-rank", shift_params={"layer": "fc9"}, base_model=TinyNet())


def test_a_page_can_tell_which_tasks_load_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_LAB_DATA", str(tmp_path))
    assert data.on_this_computer("mnist-5k", "rotate") and data.on_this_computer("digits")
    assert not data.on_this_computer("mnist")
    assert not data.on_this_computer("mnist-5k", "domain", {"to": "fashion-mnist"})
    assert data.on_this_computer("mnist-5k", "domain")  # to digits, the default
    (tmp_path / "FashionMNIST").mkdir()  # where torchvision keeps it once downloaded
    assert data.on_this_computer("mnist-5k", "domain", {"to": "fashion-mnist"})
    assert data.on_this_computer("fashion-mnist") and not data.on_this_computer("cifar10")
    assert data.on_this_computer("nosuch")  # loading it will say what is wrong
