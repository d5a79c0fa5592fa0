"""Which settings of a shown run differ from the form's: named one by one, only where they act."""

from dataclasses import replace

from core.classroom.run_differences import SettingDifference, differing_settings
from core.common.config import DEFAULT_LR, RunConfig

FORM = RunConfig(steps=200)  # the Train page's defaults


def names(form: RunConfig, run: RunConfig) -> list[str]:
    return [difference.name for difference in differing_settings(form, run)]


def test_the_run_the_form_would_train_differs_in_nothing():
    assert differing_settings(FORM, replace(FORM)) == []


def test_a_lesson_form_beside_a_full_fine_tuning_run_names_each_difference_with_both_values():
    # issue 18: the form says vit with LoRA, the result shown is an mlp fully fine-tuned on
    # renamed classes
    form = replace(FORM, model="vit", targets="blocks.*.attn.qkv")
    run = replace(FORM, model="mlp", method="full", shift="label-permute")
    assert differing_settings(form, run) == [
        SettingDifference("model", "mlp", "vit"),
        SettingDifference("shift", "label-permute", "rotate"),
        SettingDifference("method", "full", "lora"),
        # full fine-tuning's rate beside LoRA's: neither was typed, both act
        SettingDifference("lr", str(DEFAULT_LR["full"]), str(DEFAULT_LR["lora"])),
    ]  # not targets: full fine-tuning reads no LoRA setting


def test_lora_settings_count_only_between_two_lora_runs():
    run = replace(FORM, rank=16, alpha=32.0, dora=True)
    assert names(FORM, run) == ["rank", "alpha", "dora"]
    assert "rank" not in names(replace(FORM, method="full"), replace(FORM, method="full", rank=16))
    top_k = replace(FORM, method="top-k", top_k=1)
    assert names(top_k, replace(top_k, top_k=3)) == ["top_k"]
    assert "top_k" not in names(FORM, replace(FORM, top_k=3))


def test_the_learning_rate_compares_as_the_run_trains_at_it():
    assert names(FORM, replace(FORM, lr=DEFAULT_LR["lora"])) == []  # typed, but the default
    assert differing_settings(FORM, replace(FORM, lr=0.3)) == [
        SettingDifference("lr", "0.3", str(DEFAULT_LR["lora"]))
    ]


def test_shift_parameters_compare_with_the_shifts_defaults_filled_in_and_only_on_one_shift():
    assert names(FORM, replace(FORM, shift_params={"angle": 45.0})) == []  # rotate's default
    assert differing_settings(FORM, replace(FORM, shift_params={"angle": 30.0})) == [
        SettingDifference("shift_params", '{"angle":30.0}', '{"angle":45.0}')
    ]
    assert names(FORM, replace(FORM, shift="permute", shift_params={"seed": 5})) == ["shift"]


def test_settings_the_form_does_not_show_still_count_but_the_device_does_not():
    run = replace(FORM, weight_decay=0.01, device="cpu")
    assert names(FORM, run) == ["weight_decay"]
