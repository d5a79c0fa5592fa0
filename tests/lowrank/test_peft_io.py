"""Adapters travel both ways between LoRA Lab and Hugging Face PEFT with the same outputs."""

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from core.lowrank import lora, methods
from core.lowrank.peft_io import export_peft, import_peft
from tests.support.toy_models import TARGETS, adapted, toy_models, train_a_little

VARIANTS = [
    {},
    {"dora": True},
    {"scaling": "rslora"},
    {"init": "pissa"},
]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v) or "plain")
def test_export_loads_in_peft_with_the_same_logits(tmp_path, name, variant):
    base, model, x = adapted(name, **variant)
    methods.trainable_parameters(model, "lora")  # the head trains too
    train_a_little(model, x)
    export_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["head"]
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    torch.testing.assert_close(peft_model(x), model(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(x), base(x), atol=1e-3)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("dora", [False, True])
def test_peft_save_pretrained_imports_with_the_same_logits(tmp_path, name, dora):
    base, x = toy_models()[name]
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=TARGETS[name], use_dora=dora, modules_to_save=["head"]
    )
    peft_model = get_peft_model(copy.deepcopy(base), config)
    train_a_little(peft_model, x)
    peft_model.save_pretrained(tmp_path)
    model = import_peft(base, tmp_path)
    torch.testing.assert_close(model(x), peft_model(x), atol=1e-5, rtol=1e-5)
    assert set(lora.adapted_layers(model)) == set(TARGETS[name])


def test_import_leaves_the_base_model_unchanged(tmp_path):
    base, model, x = adapted("mlp")
    methods.trainable_parameters(model, "lora")
    train_a_little(model, x)
    export_peft(model, tmp_path)
    before = copy.deepcopy(base.state_dict())
    import_peft(base, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    _, model, _ = adapted("mlp")
    export_peft(model, tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x80\x04 a pickle, not safetensors")
    with pytest.raises(ValueError, match="not a safetensors file"):
        import_peft(toy_models()["mlp"][0], tmp_path)


def test_an_adapter_for_another_model_does_not_fit(tmp_path):
    _, model, _ = adapted("mlp")
    export_peft(model, tmp_path)
    other = toy_models()["mlp"][0]
    other.fc1 = torch.nn.Linear(12, 20)
    with pytest.raises(ValueError, match="does not fit"):
        import_peft(other, tmp_path)


def test_missing_or_broken_config_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"adapter_config\.json is missing"):
        import_peft(toy_models()["mlp"][0], tmp_path)
    _, model, _ = adapted("mlp")
    export_peft(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        import_peft(toy_models()["mlp"][0], tmp_path)


def test_a_dora_magnitude_without_use_dora_is_refused(tmp_path):
    _, model, _ = adapted("mlp", dora=True)
    export_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(config | {"use_dora": False}))
    with pytest.raises(ValueError, match="DoRA magnitude but the config has no use_dora"):
        import_peft(toy_models()["mlp"][0], tmp_path)


def test_export_without_adapters_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no LoRA adapters"):
        export_peft(toy_models()["mlp"][0], tmp_path)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_dora_with_dropout_trains_like_peft(tmp_path, name):
    """In training mode dropout hits only the adapter's input; DoRA's rescaling must see the
    same dropped-out input as PEFT's, or the two would learn differently."""
    base, model, x = adapted(name, dora=True, dropout=0.3)
    methods.trainable_parameters(model, "lora")
    train_a_little(model, x)
    export_peft(model, tmp_path)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    model.train(), peft_model.train()
    torch.manual_seed(1)
    ours = model(x)
    torch.manual_seed(1)
    theirs = peft_model(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    model.eval()
    assert not torch.allclose(ours, model(x), atol=1e-4), "dropout should have been on"
