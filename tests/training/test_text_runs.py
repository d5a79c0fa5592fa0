"""A run on the language model: the text task it trains on, the settings it refuses, what it
measures (bits per character, next-character accuracy, a sample at every evaluation) and what the
store keeps of it. The metric itself is checked against an independent computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from core.common import config
from core.common.config import RunConfig, SettingError
from core.lowrank import lora
from core.store.runs import RunStore
from core.training import data, record, text, zoo
from core.training.train import evaluate, load_task, sampler, train

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"steps": 4, "eval_interval": 2, "snapshot_interval": 2}


def _with(settings: dict) -> RunConfig:
    values = {**config.for_model("gpt").to_dict(), **settings}
    return RunConfig.from_dict(values)


@pytest.fixture(scope="module")
def tiny_run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_thread, which a module's fixture cannot use
    try:
        return train(_with(TINY))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("shift", ["none", "code", "substitute", "reverse-words"])
def test_a_text_task_is_windows_and_the_character_after_each(shift):
    task = data.load_task("prose", shift, seed=2)
    target = text.target_text(shift, task.shift_params)
    assert task.x_train.shape[1] == data.TEXT_CONTEXT and task.x_train.dtype == torch.int64
    assert len(task.x_val) == data.TEXT_WINDOWS["val"]
    assert len(task.x_test) == data.TEXT_WINDOWS["test"]
    # y is x one character on: the window and its next characters come from the same passage
    assert torch.equal(task.x_train[:, 1:], task.y_train[:, :-1])
    first = text.decode(task.x_train[0]) + text.decode(task.y_train[0, -1:])
    assert first in text.decode(target.split("train")[0])
    assert task.num_classes == text.VOCAB_SIZE and task.planted is None


def test_held_out_windows_cover_their_whole_split():
    assert data.spread(10, 4).tolist() == [0, 2, 5, 7]
    assert data.spread(3, 8).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"model": "gpt"}, "errors.kind_mismatch"),  # the digits' dataset
        ({"model": "mlp", "dataset": "prose", "shift": "none"}, "errors.kind_mismatch"),
        ({"model": "gpt", "dataset": "prose", "shift": "rotate"}, "errors.shift_kind"),
        ({"model": "mlp", "shift": "substitute"}, "errors.shift_kind"),
    ],
)
def test_a_model_and_a_task_of_different_kinds_are_refused_in_one_line(settings, key):
    with pytest.raises(SettingError) as caught:
        RunConfig(**settings).validate()
    assert caught.value.key == key and "\n" not in str(caught.value)


def test_the_language_models_own_defaults_are_a_valid_text_run():
    settings = config.for_model("gpt")
    settings.validate()
    assert (settings.dataset, settings.shift) == ("prose", "code")
    assert config.for_model("mlp") == RunConfig()
    text_shifts = ["none", "code", "substitute", "reverse-words", "planted-rank"]
    assert config.shifts_for("text") == text_shifts


def test_bits_per_character_is_the_cross_entropy_in_bits():
    """evaluate() against a direct computation on the same windows."""
    model = zoo.load("gpt", num_classes=text.VOCAB_SIZE)
    split = data.load_task("prose", "none").split("val")
    with torch.no_grad():
        logits = model(split.x)
    nats = F.cross_entropy(logits.reshape(-1, text.VOCAB_SIZE), split.y.reshape(-1)).item()
    measured = evaluate(model, split)
    assert measured.bpc == pytest.approx(nats / math.log(2), rel=1e-5)
    assert measured.acc == pytest.approx((logits.argmax(-1) == split.y).float().mean().item())
    assert 0 < measured.bpc < math.log2(text.VOCAB_SIZE)  # better than a uniform guess


def test_a_text_run_records_bits_and_a_sample_at_each_evaluation(tiny_run):
    evaluated = [step for step in tiny_run.history if step["val_loss"] is not None]
    assert [step["step"] for step in evaluated] == [0, 2, 4]
    for step in evaluated:
        assert step["val_bpc"] == pytest.approx(step["val_loss"] / math.log(2))
        assert len(step["sample"]) == text.SAMPLE_LENGTH
    assert all(step["sample"] is None for step in tiny_run.history if step["val_loss"] is None)
    for split in ("test", "source"):
        assert getattr(tiny_run, f"{split}_bpc_before") > 0
        assert getattr(tiny_run, f"{split}_bpc_after") > 0
        assert 0 <= getattr(tiny_run, f"{split}_acc_after") <= 1


def test_the_same_weights_write_the_same_sample(tiny_run):
    """A fixed sampling seed: every student watching a run sees the same text."""
    write = sampler(tiny_run.task, torch.device("cpu"))
    assert write(tiny_run.model) == write(tiny_run.model) == tiny_run.history[-1]["sample"]
    assert write(tiny_run.base) == tiny_run.history[0]["sample"]


def test_the_store_keeps_a_text_runs_bits_and_samples(tmp_path, tiny_run):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create(tiny_run.config, "me")
    record.finish(store, run_id, tiny_run)
    saved = store.get(run_id)
    assert saved.test_bpc_after == tiny_run.test_bpc_after
    assert saved.source_bpc_before == tiny_run.source_bpc_before
    assert [step["sample"] for step in saved.history] == [
        step["sample"] for step in tiny_run.history
    ]
    assert [step["val_bpc"] for step in saved.history] == [
        step["val_bpc"] for step in tiny_run.history
    ]


def test_a_planted_text_task_is_made_by_the_language_models_own_head():
    """The teacher is gpt with ΔW* added: its logits are over the 97 characters its pretrained
    head writes (not a new, untrained head of ten classes)."""
    task = load_task(_with({"shift": "planted-rank"}))
    assert task.planted.layer == "blocks.0.attn.q"
    assert task.z_test.shape[-1] == text.VOCAB_SIZE == task.num_classes
    base = zoo.load("gpt", text.VOCAB_SIZE)
    with torch.no_grad():
        teacher = base(task.x_test) + 0  # the base model's own logits, for comparison
        base.get_submodule(task.planted.layer).weight += task.planted.delta_W
        assert torch.allclose(base(task.x_test), task.z_test, atol=1e-5)
    assert not torch.allclose(teacher, task.z_test)  # ΔW* changed what it writes


@pytest.mark.parametrize("settings", [{"dora": True}, {"init": "pissa"}])
def test_dora_and_pissa_train_the_language_models_attention(settings):
    """DoRA and PiSSA on gpt's W_q and W_v: the run trains, and its adapted model writes the
    same logits as the same model with every adapter merged into a plain weight W0 + ΔW."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(_with({**TINY, "steps": 2, **settings}))
    finally:
        torch.set_num_threads(threads)
    assert result.status == "finished" and result.test_bpc_after is not None
    layers = lora.adapted_layers(result.model)
    assert sorted(layers) == [f"blocks.{i}.attn.{w}" for i in range(4) for w in "qv"]
    assert all(layer.delta_W().abs().max() > 0 for layer in layers.values())
    x = result.task.x_test[:4]
    with torch.no_grad():
        merged = lora.merge(result.model)
        assert torch.allclose(result.model(x), merged(x), atol=1e-4)
